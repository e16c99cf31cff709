//! The usage rollup (`usage_rollup`, migrations 0006/0007): rebuilding it from the raw rows and
//! checking that it equals them (ARCHITECTURE.md, invariant 6).
//!
//! The materialized view keeps the rollup exact while every write goes through `usage_events`
//! inserts. Two things can still leave it behind the raw rows: rows written before the view
//! existed (an upgrade; [`crate::migrate`] rebuilds right after creating the view), and a ClickHouse
//! crash between storing an insert's part and the view's part (18.16 writes them one after the
//! other). [`check`] finds any difference, key by key; [`rebuild`] recomputes whole months from
//! the raw rows and swaps each in with `REPLACE PARTITION`, so running it twice, or from two
//! processes at once, gives the same rollup. A month still being written while it is rebuilt can
//! lose the inserts that land between the recomputation and the swap: rebuild closed months, or
//! check again afterwards.

use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::sql::Identifier;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::ClickHouseConfig;
use crate::error::{with_deadline, Result};

/// The rollup table.
pub const ROLLUP_TABLE: &str = "usage_rollup";

/// Raw rows minus rollup rows per rollup key, keeping the keys that differ.
const CHECK_SQL: &str = include_str!("../sql/rollup_check.sql");
/// One month of the rollup computed from the raw rows, into a table named by the first bind.
const REBUILD_SQL: &str = include_str!("../sql/rollup_rebuild.sql");

/// A rollup key whose rollup row does not equal the raw rows it summarises (raw − rollup).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct RollupDifference {
    /// Start of the quarter hour, Unix seconds.
    pub quarter: u32,
    /// `attributed`, `unattributed` or `dead_letter`.
    pub status: String,
    /// The owner (empty for unattributed usage).
    pub owner_id: String,
    /// The credential.
    pub credential_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Raw − rollup, bytes in.
    pub bytes_in: i64,
    /// Raw − rollup, bytes out.
    pub bytes_out: i64,
    /// Raw − rollup, HTTP requests.
    pub http_requests: i64,
    /// Raw − rollup, TCP connections.
    pub tcp_connections: i64,
    /// Raw − rollup, net rows.
    pub rows: i64,
}

/// Every rollup key over `[from, to)` (Unix seconds, by quarter hour) whose rollup differs from the
/// raw rows, at most `limit` of them. Empty when the rollup is exact.
pub async fn check(
    config: &ClickHouseConfig,
    from: u32,
    to: u32,
    limit: u64,
) -> Result<Vec<RollupDifference>> {
    config.validate()?;
    with_deadline(
        format!("compare {ROLLUP_TABLE} with usage_events in [{from}, {to})"),
        config
            .query_timeout()
            .max(std::time::Duration::from_secs(600)),
        config
            .client()?
            .query(CHECK_SQL)
            .bind(from)
            .bind(to)
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all::<RollupDifference>(),
    )
    .await
}

/// What [`rebuild`] did to one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuiltMonth {
    /// `YYYYMM`, the partition.
    pub month: u32,
    /// Rollup rows written for it (0: the month has no raw rows; its partition was dropped).
    pub rollup_rows: u64,
}

#[derive(Debug, Row, Deserialize)]
struct MonthRow {
    month: u32,
}

/// Recomputes the rollup of each month in `months` (`YYYYMM`; every month that the raw rows or the
/// rollup hold when `None`) from the raw rows, swapping each month in whole. `progress` is called
/// after each month.
pub async fn rebuild(
    config: &ClickHouseConfig,
    months: Option<&[u32]>,
    mut progress: impl FnMut(&RebuiltMonth, usize, usize),
) -> Result<Vec<RebuiltMonth>> {
    config.validate()?;
    let client = config.client()?;
    let ddl_timeout = config.ddl_timeout();
    let long = config
        .query_timeout()
        .max(std::time::Duration::from_secs(3600));
    let months: Vec<u32> = match months {
        Some(months) => months.to_vec(),
        None => with_deadline(
            "list the months of usage_events and usage_rollup",
            long,
            client
                .query(
                    "SELECT toUInt32(m) AS month FROM (SELECT DISTINCT toYYYYMM(event_time) AS m FROM usage_events \
                     UNION ALL SELECT DISTINCT toYYYYMM(quarter) AS m FROM usage_rollup) GROUP BY m ORDER BY m",
                )
                .fetch_all::<MonthRow>(),
        )
        .await?
        .into_iter()
        .map(|row| row.month)
        .collect(),
    };
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    let mut done = Vec::with_capacity(months.len());
    for (index, &month) in months.iter().enumerate() {
        // Unique per process and month: concurrent rebuilds never share a scratch table.
        let scratch = format!(
            "usage_rollup_rebuild_{month}_{}_{nonce}",
            std::process::id()
        );
        let action = |what: &str| format!("{what} (rebuilding month {month} of {ROLLUP_TABLE})");
        with_deadline(
            action("create the scratch table"),
            ddl_timeout,
            client
                .query("CREATE TABLE ? AS usage_rollup")
                .bind(Identifier(&scratch))
                .execute(),
        )
        .await?;
        let result = async {
            with_deadline(
                action("compute the month from usage_events"),
                long,
                client
                    .query(REBUILD_SQL)
                    .bind(Identifier(&scratch))
                    .bind(month)
                    .execute(),
            )
            .await?;
            let rollup_rows = with_deadline(
                action("count the scratch rows"),
                config.query_timeout(),
                client
                    .query("SELECT count() FROM ?")
                    .bind(Identifier(&scratch))
                    .fetch_one::<u64>(),
            )
            .await?;
            // REPLACE PARTITION from a table without that partition would leave the old one:
            // a month with no raw rows left is dropped instead.
            let swap = if rollup_rows == 0 {
                format!("ALTER TABLE usage_rollup DROP PARTITION {month}")
            } else {
                format!("ALTER TABLE usage_rollup REPLACE PARTITION {month} FROM `{scratch}`")
            };
            with_deadline(
                action("swap the month in"),
                ddl_timeout,
                client.query(&swap).execute(),
            )
            .await?;
            Ok::<_, crate::Error>(rollup_rows)
        }
        .await;
        let dropped = with_deadline(
            action("drop the scratch table"),
            ddl_timeout,
            client
                .query("DROP TABLE IF EXISTS ?")
                .bind(Identifier(&scratch))
                .execute(),
        )
        .await;
        let rebuilt = RebuiltMonth {
            month,
            rollup_rows: result?,
        };
        dropped?;
        info!(
            month,
            rollup_rows = rebuilt.rollup_rows,
            "rollup month rebuilt from usage_events"
        );
        progress(&rebuilt, index + 1, months.len());
        done.push(rebuilt);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_placeholders_match_the_binds() {
        assert_eq!(CHECK_SQL.matches('?').count(), 5);
        assert_eq!(REBUILD_SQL.matches('?').count(), 2);
    }

    #[test]
    fn rebuild_computes_what_the_view_computes() {
        // The rebuild's SELECT is the view's, plus the month filter: the same expressions.
        let view = include_str!("../../../schemas/clickhouse/0007_usage_rollup_view.sql");
        for expression in [
            "toStartOfFifteenMinutes(event_time)",
            "sum(toInt64(bytes_in) * sign)",
            "sum(toInt64(bytes_out) * sign)",
            "sum(toInt64(http_requests) * sign)",
            "sum(toInt64(tcp_connections) * sign)",
            "sum(toInt64(sign))",
            "GROUP BY quarter, status, owner_id, owner_kind, credential_id, endpoint_id",
        ] {
            assert!(view.contains(expression), "view: {expression}");
            assert!(REBUILD_SQL.contains(expression), "rebuild: {expression}");
        }
    }
}
