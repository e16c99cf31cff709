//! The usage rollups — `usage_rollup` by quarter hour (migrations 0006/0007),
//! `usage_rollup_daily` by owner and day (0008/0009) and `usage_rollup_hourly` by owner, endpoint
//! and hour (0010/0011) —: rebuilding them from the raw rows and checking that they equal them
//! (ARCHITECTURE.md, invariant 6).
//!
//! The materialized view keeps the rollup exact while every write goes through `usage_events`
//! inserts. Two things can still leave it behind the raw rows: rows written before the view
//! existed (an upgrade; [`fn@crate::migrate`] rebuilds right after creating the view), and a ClickHouse
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

use crate::config::ValidClickHouseConfig;
use crate::error::{with_deadline, Result};

/// The coarsest rollup's grain, in seconds: a range checked in whole UTC days compares every
/// rollup (quarter hours, hours, days) exactly.
pub const DAY_SECS: i64 = 86_400;

/// `[from, to)` (Unix seconds) widened to whole UTC days: `from` down, `to` up.
pub fn whole_days(from: i64, to: i64) -> (i64, i64) {
    (
        from.div_euclid(DAY_SECS) * DAY_SECS,
        (to + DAY_SECS - 1).div_euclid(DAY_SECS) * DAY_SECS,
    )
}

/// A rollup table and the SQL that checks and rebuilds it.
#[derive(Debug, Clone, Copy)]
struct Rollup {
    table: &'static str,
    /// Its time column (partitioned by month of it).
    time_column: &'static str,
    /// Raw rows minus rollup rows per rollup key, keeping the keys that differ.
    check_sql: &'static str,
    /// The migration creating the rollup's materialized view: its SELECT, filtered to one month,
    /// is how [`rebuild`] recomputes the rollup (see [`Rollup::rebuild_sql`]).
    view_migration: &'static str,
}

impl Rollup {
    /// One month of the rollup computed from the raw rows exactly as the view computes it, into a
    /// table named by the first bind: `INSERT INTO ?` + the view's SELECT + `WHERE
    /// toYYYYMM(event_time) = ?` before its GROUP BY. Placeholders: the scratch table (an
    /// identifier), the month (UInt32, YYYYMM).
    fn rebuild_sql(&self) -> String {
        let select =
            &self.view_migration[self.view_migration.find("\nSELECT").map_or(0, |i| i + 1)..];
        let group_by = select.find("\nGROUP BY").unwrap_or(select.len());
        format!(
            "INSERT INTO ?\n{}\nWHERE toYYYYMM(event_time) = ?{}",
            &select[..group_by],
            &select[group_by..]
        )
    }
}

/// Every rollup of `usage_events`.
const ROLLUPS: [Rollup; 3] = [
    Rollup {
        table: "usage_rollup",
        time_column: "quarter",
        check_sql: include_str!("../sql/rollup_check.sql"),
        view_migration: include_str!("../../../schemas/clickhouse/0007_usage_rollup_view.sql"),
    },
    Rollup {
        table: "usage_rollup_daily",
        time_column: "day",
        check_sql: include_str!("../sql/rollup_daily_check.sql"),
        view_migration: include_str!(
            "../../../schemas/clickhouse/0009_usage_rollup_daily_view.sql"
        ),
    },
    Rollup {
        table: "usage_rollup_hourly",
        time_column: "hour",
        check_sql: include_str!("../sql/rollup_hourly_check.sql"),
        view_migration: include_str!(
            "../../../schemas/clickhouse/0011_usage_rollup_hourly_view.sql"
        ),
    },
];

/// The rollup tables, in the order [`RebuiltMonth::rollup_rows`] lists them.
pub const ROLLUP_TABLES: [&str; 3] = [ROLLUPS[0].table, ROLLUPS[1].table, ROLLUPS[2].table];

/// A rollup key whose rollup row does not equal the raw rows it summarises (raw − rollup).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct RollupDifference {
    /// The rollup table (not read from ClickHouse: set by [`check`]).
    #[serde(skip)]
    pub table: &'static str,
    /// Start of the quarter hour (`usage_rollup`), day (`usage_rollup_daily`) or hour
    /// (`usage_rollup_hourly`), Unix seconds.
    pub quarter: u32,
    /// `attributed`, `unattributed` or `dead_letter`.
    pub status: String,
    /// The owner (empty for unattributed usage).
    pub owner_id: String,
    /// The credential (empty in `usage_rollup_daily` and `usage_rollup_hourly`).
    pub credential_id: String,
    /// The endpoint (empty in `usage_rollup_daily`).
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

/// Every rollup key over `[from, to)` (Unix seconds; whole days compare both rollups exactly,
/// whole quarter hours the quarter-hour one) whose rollup differs from the raw rows, at most
/// `limit` per rollup. Empty when the rollups are exact.
pub async fn check(
    config: &ValidClickHouseConfig,
    from: u32,
    to: u32,
    limit: u64,
) -> Result<Vec<RollupDifference>> {
    let timeout = config
        .query_timeout()
        .max(std::time::Duration::from_secs(600));
    check_with(&config.client(), timeout, from, to, limit).await
}

/// [`check`] on an existing client.
pub(crate) async fn check_with(
    client: &clickhouse::Client,
    timeout: std::time::Duration,
    from: u32,
    to: u32,
    limit: u64,
) -> Result<Vec<RollupDifference>> {
    let mut differences = Vec::new();
    for rollup in ROLLUPS {
        let found = with_deadline(
            format!(
                "compare {} with usage_events in [{from}, {to})",
                rollup.table
            ),
            timeout,
            client
                .query(rollup.check_sql)
                .bind(from)
                .bind(to)
                .bind(from)
                .bind(to)
                .bind(limit)
                .fetch_all::<RollupDifference>(),
        )
        .await?;
        differences.extend(found.into_iter().map(|d| RollupDifference {
            table: rollup.table,
            ..d
        }));
    }
    Ok(differences)
}

/// What [`rebuild`] did to one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RebuiltMonth {
    /// `YYYYMM`, the partition.
    pub month: u32,
    /// Rows written for it per rollup, in the order of [`ROLLUP_TABLES`]; 0: the month has no raw
    /// rows, its partition was dropped.
    pub rollup_rows: Vec<u64>,
}

#[derive(Debug, Row, Deserialize)]
struct MonthRow {
    month: u32,
}

/// Recomputes every rollup of each month in `months` (`YYYYMM`; every month that the raw rows or
/// the rollups hold when `None`) from the raw rows, swapping each month in whole. `progress` is
/// called after each month.
pub async fn rebuild(
    config: &ValidClickHouseConfig,
    months: Option<&[u32]>,
    mut progress: impl FnMut(&RebuiltMonth, usize, usize),
) -> Result<Vec<RebuiltMonth>> {
    if let Some(cluster) = config.cluster() {
        // REPLACE PARTITION works on one server's table, not through a Distributed one.
        return Err(crate::Error::Config {
            field: "cluster",
            message: format!(
                "rebuilding rollups is supported on one server only, found cluster {cluster:?} \
                 (README, Limits)"
            ),
        });
    }
    let client = config.client();
    let long = config
        .query_timeout()
        .max(std::time::Duration::from_secs(3600));
    let months: Vec<u32> = match months {
        Some(months) => months.to_vec(),
        None => with_deadline(
            "list the months of usage_events and usage_rollup",
            long,
            client.query(&months_sql()).fetch_all::<MonthRow>(),
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
        let mut rollup_rows = Vec::with_capacity(ROLLUPS.len());
        for rollup in ROLLUPS {
            rollup_rows.push(rebuild_month(config, &client, rollup, month, nonce).await?);
        }
        let rebuilt = RebuiltMonth { month, rollup_rows };
        info!(month, rollup_rows = ?rebuilt.rollup_rows, "rollup month rebuilt from usage_events");
        progress(&rebuilt, index + 1, months.len());
        done.push(rebuilt);
    }
    Ok(done)
}

/// Every month (`YYYYMM`) that the raw rows or any rollup hold, ascending.
fn months_sql() -> String {
    let mut sql = String::from("SELECT toUInt32(m) AS month FROM (SELECT DISTINCT toYYYYMM(event_time) AS m FROM usage_events");
    for rollup in ROLLUPS {
        sql.push_str(&format!(
            " UNION ALL SELECT DISTINCT toYYYYMM({}) AS m FROM {}",
            rollup.time_column, rollup.table
        ));
    }
    sql.push_str(") GROUP BY m ORDER BY m");
    sql
}

/// Rebuilds one month of one rollup; returns its rows.
async fn rebuild_month(
    config: &ValidClickHouseConfig,
    client: &clickhouse::Client,
    rollup: Rollup,
    month: u32,
    nonce: u128,
) -> Result<u64> {
    let (table, ddl_timeout) = (rollup.table, config.ddl_timeout());
    let long = config
        .query_timeout()
        .max(std::time::Duration::from_secs(3600));
    // Unique per process and month: concurrent rebuilds never share a scratch table.
    let scratch = format!("{table}_rebuild_{month}_{}_{nonce}", std::process::id());
    let action = |what: &str| format!("{what} (rebuilding month {month} of {table})");
    with_deadline(
        action("create the scratch table"),
        ddl_timeout,
        client
            .query("CREATE TABLE ? AS ?")
            .bind(Identifier(&scratch))
            .bind(Identifier(table))
            .execute(),
    )
    .await?;
    let result = async {
        with_deadline(
            action("compute the month from usage_events"),
            long,
            client
                .query(&rollup.rebuild_sql())
                .bind(Identifier(&scratch))
                .bind(month)
                .execute(),
        )
        .await?;
        let rows = with_deadline(
            action("count the scratch rows"),
            config.query_timeout(),
            client
                .query("SELECT count() FROM ?")
                .bind(Identifier(&scratch))
                .fetch_one::<u64>(),
        )
        .await?;
        // REPLACE PARTITION from a table without that partition would leave the old one: a month
        // with no raw rows left is dropped instead.
        let swap = if rows == 0 {
            format!("ALTER TABLE {table} DROP PARTITION {month}")
        } else {
            format!("ALTER TABLE {table} REPLACE PARTITION {month} FROM `{scratch}`")
        };
        with_deadline(
            action("swap the month in"),
            ddl_timeout,
            client.query(&swap).execute(),
        )
        .await?;
        Ok::<_, crate::Error>(rows)
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
    let rows = result?;
    dropped?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_widen_to_whole_utc_days() {
        let day = 1_767_225_600; // 2026-01-01T00:00:00Z
        assert_eq!(whole_days(day + 899, day + 3601), (day, day + DAY_SECS));
        assert_eq!(whole_days(day, day + DAY_SECS), (day, day + DAY_SECS));
        assert_eq!(
            whole_days(day - 1, day + 1),
            (day - DAY_SECS, day + DAY_SECS)
        );
    }

    #[test]
    fn months_are_listed_from_the_raw_rows_and_every_rollup() {
        let sql = months_sql();
        assert!(
            sql.contains("toYYYYMM(event_time) AS m FROM usage_events"),
            "{sql}"
        );
        assert!(
            sql.contains("toYYYYMM(quarter) AS m FROM usage_rollup "),
            "{sql}"
        );
        assert!(
            sql.contains("toYYYYMM(day) AS m FROM usage_rollup_daily "),
            "{sql}"
        );
        assert!(
            sql.contains("toYYYYMM(hour) AS m FROM usage_rollup_hourly)"),
            "{sql}"
        );
    }

    #[test]
    fn sql_placeholders_match_the_binds() {
        for rollup in ROLLUPS {
            assert_eq!(rollup.check_sql.matches('?').count(), 5, "{}", rollup.table);
            assert_eq!(
                rollup.rebuild_sql().matches('?').count(),
                2,
                "{}",
                rollup.table
            );
            assert!(
                rollup.check_sql.contains(&format!("FROM {}", rollup.table)),
                "{}",
                rollup.table
            );
        }
    }

    #[test]
    fn rebuild_computes_what_the_views_compute() {
        // Each rebuild's SELECT is its view's, plus the month filter: the same expressions.
        let views = [
            include_str!("../../../schemas/clickhouse/0007_usage_rollup_view.sql"),
            include_str!("../../../schemas/clickhouse/0009_usage_rollup_daily_view.sql"),
        ];
        for (rollup, view) in ROLLUPS.iter().zip(views) {
            for expression in [
                "sum(toInt64(bytes_in) * sign)",
                "sum(toInt64(bytes_out) * sign)",
                "sum(toInt64(http_requests) * sign)",
                "sum(toInt64(tcp_connections) * sign)",
                "sum(toInt64(sign))",
                "FROM usage_events",
            ] {
                assert!(
                    view.contains(expression),
                    "{} view: {expression}",
                    rollup.table
                );
                assert!(
                    rollup.rebuild_sql().contains(expression),
                    "{} rebuild: {expression}",
                    rollup.table
                );
            }
            let group_by = view.lines().find(|l| l.starts_with("GROUP BY")).unwrap();
            assert!(
                rollup.rebuild_sql().contains(group_by),
                "{}: {group_by}",
                rollup.table
            );
            assert!(
                view.contains(&format!("AS {}", rollup.time_column))
                    && rollup
                        .rebuild_sql()
                        .contains(&format!("AS {}", rollup.time_column))
            );
            // The shape: the insert, the view's SELECT, the month filter right before GROUP BY.
            let sql = rollup.rebuild_sql();
            assert!(sql.starts_with("INSERT INTO ?\nSELECT\n"), "{sql}");
            assert!(
                sql.contains("FROM usage_events\nWHERE toYYYYMM(event_time) = ?\nGROUP BY "),
                "{sql}"
            );
            assert!(
                !sql.contains("--") && !sql.contains("MATERIALIZED VIEW"),
                "{sql}"
            );
        }
    }
}
