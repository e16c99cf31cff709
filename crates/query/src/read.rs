//! The read side of botmeter's own bookkeeping (the reports are in [`crate::api`]): where each
//! Kafka partition is durable (the resume point), the control-event history the ownership state
//! is rebuilt from, unattributed rows for `reattribute`, the event ids written lately (the repeat window), the rollup check, and the per-partition
//! figures `reconcile` compares with Kafka.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use clickhouse::{Client, Row};
use serde::Deserialize;

use crate::config::ValidClickHouseConfig;
use crate::error::{with_deadline, Result};
use crate::rows::{ControlRow, UsageRow};
#[cfg(test)]
use crate::write::{CONTROL_TABLE, DEAD_LETTER_TABLE, USAGE_TABLE};

/// Max offset per partition of one topic over the three tables; the topic bound three times.
pub(crate) const POSITIONS_SQL: &str = include_str!("../sql/topic_positions.sql");

/// The newest written event ids of a topic; see the file's header.
const RECENT_EVENT_IDS_SQL: &str = include_str!("../sql/recent_event_ids.sql");

/// An event written to `usage_events`, for the pipeline's repeat window.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct WrittenEvent {
    /// The event id.
    pub event_id: String,
    /// Its event time, microseconds since the epoch.
    pub event_time_us: i64,
    /// The partition it was written from.
    pub partition: i32,
    /// The offset it was written from.
    pub offset: i64,
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct PositionRow {
    pub(crate) kafka_partition: i32,
    pub(crate) max_offset: i64,
}

/// Reads botmeter's bookkeeping back; cheap to clone (shares the client's connection pool).
#[derive(Clone)]
pub struct Reader {
    /// Plain responses (ClickHouse 18.16 cannot send compressed ones).
    client: Client,
    query_timeout: Duration,
    /// The cluster and database, when the database lives on a cluster: positions are then read
    /// once every live replica has caught up.
    cluster: Option<(String, String)>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader of the configured database (validates the config; no IO).
    pub fn new(config: &ValidClickHouseConfig) -> Result<Self> {
        Ok(Self {
            client: config.client(),
            query_timeout: config.query_timeout(),
            cluster: config
                .cluster()
                .map(|name| (name.to_owned(), config.database.clone())),
        })
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

    /// The highest offset stored per partition of `topic`, across usage and control events (dead
    /// letters never move a position; see `sql/topic_positions.sql`). Offsets are inclusive: the last message that is durable. Resume at `offset + 1`; a
    /// partition absent from the map has nothing stored.
    ///
    /// On a cluster, the highest offset over every replica of every shard, each read directly
    /// ([`crate::cluster::replica_positions`]): no ZooKeeper needed, and no replica's lag can
    /// hide a row another replica holds.
    pub async fn positions(&self, topic: &str) -> Result<HashMap<i32, i64>> {
        let action = format!("read positions of topic {topic:?}");
        if let Some((cluster, database)) = &self.cluster {
            return with_deadline(
                action,
                self.query_timeout,
                crate::cluster::replica_positions(&self.client, cluster, database, topic),
            )
            .await;
        }
        let rows = with_deadline(
            action,
            self.query_timeout,
            self.client
                .query(POSITIONS_SQL)
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

    /// The event ids written for `topic` within `window_secs` of its newest event time, newest
    /// first, at most `limit`: what the pipeline's repeat window is rebuilt from at start-up.
    pub async fn recent_events(
        &self,
        topic: &str,
        window_secs: i64,
        limit: u64,
    ) -> Result<Vec<WrittenEvent>> {
        with_deadline(
            format!("read the event ids written for topic {topic:?} in the last {window_secs} s of event time"),
            self.query_timeout.max(Duration::from_secs(300)),
            self.client
                .query(RECENT_EVENT_IDS_SQL)
                .bind(topic)
                .bind(topic)
                .bind(window_secs)
                .bind(limit)
                .fetch_all::<WrittenEvent>(),
        )
        .await
    }

    /// Every rollup key over `[from, to)` (Unix seconds, whole UTC days) whose rollup differs
    /// from the raw rows, at most `limit` per rollup: [`crate::rollup::check`] on this reader's
    /// connection.
    pub async fn rollup_differences(
        &self,
        from: u32,
        to: u32,
        limit: u64,
    ) -> Result<Vec<crate::rollup::RollupDifference>> {
        crate::rollup::check_with(&self.client, self.query_timeout, from, to, limit).await
    }
}

/// Per-partition reconciliation of a traffic topic (see the file's header).
const RECONCILE_TRAFFIC_SQL: &str = include_str!("../sql/reconcile_traffic.sql");
/// Per-partition reconciliation of a control topic (see the file's header).
const RECONCILE_CONTROL_SQL: &str = include_str!("../sql/reconcile_control.sql");
/// Every stored offset of one partition, ascending.
const RECONCILE_OFFSETS_SQL: &str = include_str!("../sql/reconcile_offsets.sql");

/// Which tables hold the net rows of a topic's messages, for [`Reader::reconcile_positions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRole {
    /// One net row per message in `usage_events` (the sum of `sign` at its position); a dead
    /// letter also has a `dead_letters` row, which adds no net row.
    Traffic,
    /// One row per message: in `control_events`, or in `dead_letters` when it could not be decoded.
    Control,
}

/// What botmeter stores for one partition of a topic, from [`Reader::reconcile_positions`].
/// Offsets are inclusive (the stored messages themselves). Field order is the SQL's column order.
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct StoredPartition {
    /// The Kafka partition.
    pub partition_id: i32,
    /// Distinct offsets with at least one row in any of the topic's tables.
    pub stored_positions: u64,
    /// The lowest stored offset.
    pub min_offset: i64,
    /// The highest stored offset.
    pub max_offset: i64,
    /// Positions whose rows net to more than one (counted twice), over every row.
    pub duplicate_positions: u64,
    /// Positions stored but netting to less than one (a cancelled row without its replacement, a
    /// traffic dead letter without its usage row), over every row.
    pub lost_positions: u64,
    /// Up to 20 of those positions with their net row count, `(offset, net)`, ascending: an
    /// arbitrary sample when there are more.
    pub bad_sample: Vec<(i64, i64)>,
    /// Net `attributed` usage rows in the window (traffic only).
    pub window_attributed: i64,
    /// Net `unattributed` usage rows in the window (traffic only).
    pub window_unattributed: i64,
    /// `control_events` rows in the window (control only).
    pub window_control_events: i64,
    /// Dead letters in the window: net `dead_letter` usage rows (traffic, by `event_time`, the time
    /// botmeter received them) or `dead_letters` positions (control, by `received_at`).
    pub window_dead_letters: i64,
    /// Net `duplicate` usage rows in the window: repeated deliveries of events already written,
    /// counted nowhere else (traffic only).
    pub window_repeated: i64,
}

impl Reader {
    /// What botmeter stores for every partition of `topic` that has any row: positions, their
    /// net row counts (duplicates, lost) over every row, and net rows by outcome with `event_time`
    /// in `[from_secs, to_secs)` (Unix seconds; `0, i64::MAX` for every row). For
    /// `botmeter reconcile`; scans the topic's rows in full, so it gets a long deadline.
    pub async fn reconcile_positions(
        &self,
        topic: &str,
        role: TopicRole,
        from_secs: i64,
        to_secs: i64,
    ) -> Result<Vec<StoredPartition>> {
        let query = match role {
            TopicRole::Traffic => self
                .client
                .query(RECONCILE_TRAFFIC_SQL)
                .bind(from_secs)
                .bind(to_secs)
                .bind(topic)
                .bind(topic),
            TopicRole::Control => self
                .client
                .query(RECONCILE_CONTROL_SQL)
                .bind(from_secs)
                .bind(to_secs)
                .bind(topic)
                .bind(from_secs)
                .bind(to_secs)
                .bind(topic),
        };
        with_deadline(
            format!("reconcile the stored positions of topic {topic:?}"),
            self.query_timeout.max(Duration::from_secs(300)),
            query.fetch_all::<StoredPartition>(),
        )
        .await
    }

    /// Calls `visit` with every offset of `partition` of `topic` stored in any table, ascending,
    /// each once, until it returns [`std::ops::ControlFlow::Break`]. Streams: memory stays flat
    /// whatever the partition holds.
    pub async fn for_each_stored_offset(
        &self,
        topic: &str,
        partition: i32,
        mut visit: impl FnMut(i64) -> std::ops::ControlFlow<()> + Send,
    ) -> Result<()> {
        let client = &self.client;
        with_deadline(
            format!("read the stored offsets of {topic}/{partition}"),
            self.query_timeout.max(Duration::from_secs(300)),
            async move {
                let mut cursor = client
                    .query(RECONCILE_OFFSETS_SQL)
                    .bind(topic)
                    .bind(partition)
                    .bind(topic)
                    .bind(partition)
                    .bind(topic)
                    .bind(partition)
                    .fetch::<i64>()?;
                while let Some(offset) = cursor.next().await? {
                    if visit(offset).is_break() {
                        break;
                    }
                }
                Ok(())
            },
        )
        .await
    }
}

#[cfg(test)]
mod reconcile_sql_tests {
    use super::*;

    #[test]
    fn reconcile_sql_placeholders_match_the_binds() {
        // Comments must not hold a `?`: the client would take it for a placeholder.
        assert_eq!(RECONCILE_TRAFFIC_SQL.matches('?').count(), 4);
        assert_eq!(RECONCILE_CONTROL_SQL.matches('?').count(), 6);
        assert_eq!(RECONCILE_OFFSETS_SQL.matches('?').count(), 6);
        // The audit log through its deduplicating view: a copy of a message is not a second row.
        for table in [USAGE_TABLE, "control_events", DEAD_LETTER_TABLE] {
            assert!(
                RECONCILE_OFFSETS_SQL.contains(&format!("FROM {table} WHERE kafka_topic = ?")),
                "{table}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sql_binds_the_topic_once_per_table() {
        assert_eq!(POSITIONS_SQL.matches('?').count(), 2);
        assert!(
            !POSITIONS_SQL.contains(&format!("FROM {DEAD_LETTER_TABLE}")),
            "dead letters never move a position"
        );
        for table in [USAGE_TABLE, CONTROL_TABLE] {
            assert!(
                POSITIONS_SQL.contains(&format!("FROM {table} WHERE kafka_topic = ?")),
                "{table}"
            );
        }
    }
}
