//! The write side: inserting botmeter's rows ([`Writer`]), the insert retry policy
//! ([`retry`]), the split of a batch into atomic inserts and the lost-response filter ([`runs`]),
//! and the rollup check after an insert that landed but failed ([`verify`]).
//!
//! Each `insert_*` call is exactly one `INSERT` (one block, so atomic for one partition of the
//! table): either all its rows are stored or, on error, none are, and the caller may retry the same
//! rows. Every call starts a fresh insert, so a failed one is never reused (the client's `write()`
//! panics after a failure).
//!
//! Because every row carries its source topic, partition and offset, the rows themselves are the
//! consumer's position: [`crate::Reader::positions`] is where a restarted or rebalanced instance
//! resumes.
//!
//! On a cluster ([`crate::ClickHouseConfig::cluster`]) with shard URLs
//! ([`crate::ClickHouseConfig::shard_urls`]), usage is inserted per shard ([`shards`]): the rows of
//! the Kafka partitions shard `partition % shards` owns go straight into that shard's
//! `usage_events_local` through one of its replicas, so a shard that is down fails only its own
//! inserts. Without shard URLs, and for control events and dead letters, the tables written are
//! the `Distributed` ones, with `insert_distributed_sync = 1`: one insert sends each shard its rows
//! and returns once every shard stored them. Either way a retried insert is deduplicated by the
//! shard ([`Writer::deduplicates_retries`]).

pub mod retry;
pub mod runs;
pub mod shards;
pub mod verify;

use std::fmt;
use std::time::Duration;

use clickhouse::{Client, RowOwned, RowWrite};
use tracing::debug;

use crate::config::{ReplicaClients, ValidClickHouseConfig};
use crate::error::{with_deadline, Result};
use crate::query_id::{self, new_query_id};
use crate::rows::{AsUsageRow, ControlRow, DeadLetterRow, UsageRowRef};

/// Table of [`UsageRow`].
pub const USAGE_TABLE: &str = "usage_events";
/// Table of [`ControlRow`]: the audit log, deduplicated by Kafka position (a ReplacingMergeTree;
/// migration 0004). Readers use the view `control_events`, which shows each message once.
pub const CONTROL_TABLE: &str = "control_events_log";
/// Table of [`DeadLetterRow`].
pub const DEAD_LETTER_TABLE: &str = "dead_letters";

/// Inserts rows; cheap to clone (shares the clients' connection pools).
#[derive(Clone)]
pub struct Writer {
    /// LZ4 request bodies, for inserts.
    insert_client: Client,
    /// Plain responses, for [`Writer::fence`].
    client: Client,
    insert_timeout: Duration,
    /// On a cluster: inserts go to replicated tables, which store an identical block once.
    deduplicates: bool,
    /// On a cluster with shard URLs: each shard's replicas, in the cluster's shard order.
    shards: Vec<Vec<ReplicaClients>>,
    /// On a cluster: its name and the database (for [`Writer::verify_shards`]).
    cluster: Option<(String, String)>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("insert_timeout", &self.insert_timeout)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer for the configured database (validates the config; no IO).
    pub fn new(config: &ValidClickHouseConfig) -> Result<Self> {
        Ok(Self {
            insert_client: config.insert_client(),
            client: config.client(),
            insert_timeout: config.insert_timeout(),
            deduplicates: config.cluster().is_some(),
            shards: config.shard_replicas(),
            cluster: config
                .cluster()
                .map(|cluster| (cluster.to_owned(), config.database.clone())),
        })
    }

    /// Whether sending a failed insert's rows again, unchanged, stores them once whether or not
    /// the failed one landed: true on a cluster, where every table is a Replicated*MergeTree and
    /// ZooKeeper keeps the hash of each recent block per shard (`replicated_deduplication_window`,
    /// 100 blocks by default), so a repeated block is dropped. Then the lost-response filter
    /// (reading positions after a failure) is not needed; on one server it is.
    pub fn deduplicates_retries(&self) -> bool {
        self.deduplicates
    }

    /// Inserts attributed and unattributed usage in one `INSERT`.
    pub async fn insert_usage<R: AsUsageRow + Sync>(&self, rows: &[R]) -> Result<()> {
        self.insert_usage_as(rows, &new_query_id()).await
    }

    /// [`Self::insert_usage`] as ClickHouse query `query_id` (see [`new_query_id`]): a failed one
    /// can then be fenced ([`Self::fence`]).
    pub async fn insert_usage_as<R: AsUsageRow + Sync>(
        &self,
        rows: &[R],
        query_id: &str,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.insert_usage_via(&self.insert_client, USAGE_TABLE, rows, query_id)
            .await
    }

    /// One `INSERT` of usage rows into `table` through `client`, within the insert deadline.
    async fn insert_usage_via<R: AsUsageRow + Sync>(
        &self,
        client: &Client,
        table: &str,
        rows: &[R],
        query_id: &str,
    ) -> Result<()> {
        with_deadline(
            format!("insert {} rows into {table} (query {query_id})", rows.len()),
            self.insert_timeout,
            async move {
                let mut insert = client
                    .insert::<UsageRowRef<'_>>(table)
                    .await?
                    .with_option("query_id", query_id);
                for row in rows {
                    insert.write(&row.usage_row()).await?;
                }
                insert.end().await
            },
        )
        .await?;
        debug!(table, rows = rows.len(), "rows inserted");
        Ok(())
    }

    /// Whether the insert `query_id` is over on the server — finished or killed — so that its
    /// rows are either durable or never will be: an insert the client gave up on (a timeout, a
    /// lost connection) may still be running there and commit later. Kills it (`KILL QUERY …
    /// SYNC`) and checks `system.processes`. `Ok(false)` while it still runs; an error when
    /// ClickHouse does not answer within `within`: then nothing is known, and the caller must not
    /// read positions or send those rows again.
    pub async fn fence(&self, query_id: &str, within: Duration) -> Result<bool> {
        fence_on(&self.client, query_id, within).await
    }

    /// Inserts control-plane events in one `INSERT`.
    pub async fn insert_control(&self, rows: &[ControlRow]) -> Result<()> {
        self.insert(CONTROL_TABLE, rows).await
    }

    /// Inserts dead letters in one `INSERT`.
    pub async fn insert_dead_letters(&self, rows: &[DeadLetterRow]) -> Result<()> {
        self.insert(DEAD_LETTER_TABLE, rows).await
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

/// [`Writer::fence`] on the server of `client`.
pub(crate) async fn fence_on(client: &Client, query_id: &str, within: Duration) -> Result<bool> {
    with_deadline(
        format!("kill query {query_id}"),
        within,
        query_id::kill(client, query_id, query_id::Wait::Sync),
    )
    .await?;
    let running = with_deadline(
        format!("look for query {query_id} in system.processes"),
        within,
        client
            .query("SELECT count() FROM system.processes WHERE query_id = ?")
            .bind(query_id)
            .fetch_one::<u64>(),
    )
    .await?;
    Ok(running == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_client_internals() {
        let writer = Writer::new(&crate::ClickHouseConfig::default().validate().unwrap()).unwrap();
        assert!(format!("{writer:?}").starts_with("Writer {"));
    }
}
