//! Writes botmeter's rows to ClickHouse and reads back the Kafka positions they carry.
//!
//! Each `insert_*` call is exactly one `INSERT` (one block, so atomic for one partition of the
//! table): either all its rows are stored or, on error, none are, and the caller may retry the same
//! rows. Every call starts a fresh insert, so a failed one is never reused (the client's `write()`
//! panics after a failure).
//!
//! Because every row carries its source topic, partition and offset, the rows themselves are the
//! consumer's position: [`Writer::positions`] is where a restarted or rebalanced instance resumes.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::Deserialize;
use tracing::debug;

use crate::config::ClickHouseConfig;
use crate::error::{with_deadline, Result};
use crate::rows::{ControlRow, DeadLetterRow, UsageRow};

/// Table of [`UsageRow`].
pub const USAGE_TABLE: &str = "usage_events";
/// Table of [`ControlRow`].
pub const CONTROL_TABLE: &str = "control_events";
/// Table of [`DeadLetterRow`].
pub const DEAD_LETTER_TABLE: &str = "dead_letters";

/// Max offset per partition of one topic over the three tables; the topic bound three times.
const POSITIONS_SQL: &str = include_str!("../sql/topic_positions.sql");

#[derive(Debug, Row, Deserialize)]
struct PositionRow {
    kafka_partition: i32,
    max_offset: i64,
}

/// Inserts rows; cheap to clone (shares the clients' connection pools).
#[derive(Clone)]
pub struct Writer {
    /// LZ4 request bodies, for inserts.
    insert_client: Client,
    /// Plain responses, for reads (ClickHouse 18.16 cannot send compressed ones).
    client: Client,
    insert_timeout: Duration,
    query_timeout: Duration,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("insert_timeout", &self.insert_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer for the configured database (validates the config; no IO).
    pub fn new(config: &ClickHouseConfig) -> Result<Self> {
        Ok(Self {
            insert_client: config.insert_client()?,
            client: config.client()?,
            insert_timeout: config.insert_timeout(),
            query_timeout: config.query_timeout(),
        })
    }

    /// Inserts attributed and unattributed usage in one `INSERT`.
    pub async fn insert_usage(&self, rows: &[UsageRow]) -> Result<()> {
        self.insert(USAGE_TABLE, rows).await
    }

    /// Inserts control-plane events in one `INSERT`.
    pub async fn insert_control(&self, rows: &[ControlRow]) -> Result<()> {
        self.insert(CONTROL_TABLE, rows).await
    }

    /// Inserts dead letters in one `INSERT`.
    pub async fn insert_dead_letters(&self, rows: &[DeadLetterRow]) -> Result<()> {
        self.insert(DEAD_LETTER_TABLE, rows).await
    }

    /// Every stored control event of `topic`, in the order it was consumed (partition, offset):
    /// what the ownership state is rebuilt from at start-up.
    pub async fn control_history(&self, topic: &str) -> Result<Vec<ControlRow>> {
        with_deadline(
            format!("read the control-event history of topic {topic:?}"),
            self.query_timeout.max(Duration::from_secs(300)),
            self.client
                .query("SELECT ?fields FROM control_events WHERE kafka_topic = ? ORDER BY kafka_partition, kafka_offset")
                .bind(topic)
                .fetch_all::<ControlRow>(),
        )
        .await
    }

    /// Every `unattributed` usage row (both signs: originals and the copies cancelling restated
    /// ones) with `event_time` in `[from, to)` (Unix seconds), for `botmeter reattribute`.
    pub async fn unattributed_rows(&self, from: u32, to: u32) -> Result<Vec<UsageRow>> {
        with_deadline(
            format!("read unattributed usage in [{from}, {to})"),
            self.query_timeout.max(Duration::from_secs(300)),
            self.client
                .query(
                    "SELECT ?fields FROM usage_events WHERE status = 'unattributed' \
                     AND event_time >= toDateTime(?) AND event_time < toDateTime(?) \
                     ORDER BY kafka_topic, kafka_partition, kafka_offset",
                )
                .bind(from)
                .bind(to)
                .fetch_all::<UsageRow>(),
        )
        .await
    }

    /// The highest offset stored per partition of `topic`, across usage, control events and dead
    /// letters. Offsets are inclusive: the last message that is durable. Resume at `offset + 1`; a
    /// partition absent from the map has nothing stored.
    pub async fn positions(&self, topic: &str) -> Result<HashMap<i32, i64>> {
        let rows = with_deadline(
            format!("read positions of topic {topic:?}"),
            self.query_timeout,
            self.client
                .query(POSITIONS_SQL)
                .bind(topic)
                .bind(topic)
                .bind(topic)
                .fetch_all::<PositionRow>(),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.kafka_partition, row.max_offset))
            .collect())
    }

    async fn insert<T>(&self, table: &'static str, rows: &[T]) -> Result<()>
    where
        T: RowOwned + RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let client = &self.insert_client;
        let insert_timeout = self.insert_timeout;
        // The deadline covers the whole insert, sending included: a stalled server must not hold a
        // batch (and its partition's memory) forever.
        with_deadline(
            format!("insert {} rows into {table}", rows.len()),
            insert_timeout,
            async move {
                let mut insert = client.insert::<T>(table).await?;
                for row in rows {
                    insert.write(row).await?;
                }
                insert.end().await
            },
        )
        .await?;
        debug!(table, rows = rows.len(), "rows inserted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sql_binds_the_topic_once_per_table() {
        assert_eq!(POSITIONS_SQL.matches('?').count(), 3);
        for table in [USAGE_TABLE, CONTROL_TABLE, DEAD_LETTER_TABLE] {
            assert!(
                POSITIONS_SQL.contains(&format!("FROM {table} WHERE kafka_topic = ?")),
                "{table}"
            );
        }
    }

    #[test]
    fn debug_shows_no_client_internals() {
        let writer = Writer::new(&ClickHouseConfig::default()).unwrap();
        assert!(format!("{writer:?}").starts_with("Writer {"));
    }
}
