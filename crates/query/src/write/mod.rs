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
//! shard ([`Writer::deduplicates_retries`]). Control events and dead letters that a shard cannot
//! store now are handed to the `Distributed` table's own queue instead
//! ([`Writer::insert_control`]), so a shard that is down holds neither the control reader nor the
//! other shards' partitions.

pub mod retry;
pub mod runs;
pub mod shards;
pub mod verify;

use std::fmt;
use std::time::Duration;

use clickhouse::{Client, RowOwned, RowWrite};
use tracing::{debug, warn};

use crate::config::{ReplicaClients, ValidClickHouseConfig};
use crate::error::{with_deadline, Result};
use crate::query_id::{self, new_query_id};
use crate::rows::{AsUsageRow, ControlRow, DeadLetterRow, UsageRowRef};

/// Table of [`crate::rows::UsageRow`].
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
    /// On a cluster: inserts into a `Distributed` table that return once the server has queued
    /// the rows on its disk (`insert_distributed_sync = 0`), to forward them to their shards by
    /// itself, retrying until each takes them.
    forwarding_client: Option<Client>,
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
            forwarding_client: config.cluster().map(|_| {
                config
                    .insert_client()
                    .with_option("insert_distributed_sync", "0")
            }),
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
    ///
    /// On a cluster, rows that not every shard stores now (a shard down, ZooKeeper lost: the
    /// synchronous insert fails) are handed to the `Distributed` table's queue on the server
    /// botmeter writes to, which forwards them when their shard is back. The audit log is
    /// deduplicated by Kafka position (a ReplacingMergeTree) and the part of the failed insert a
    /// healthy shard stored is the same block again, which replication stores once; and the
    /// audit log's rows never move a traffic partition's position. So a down shard holds neither
    /// the control reader (nor, through it, traffic waiting for the control plane), at the cost
    /// of that shard's audit rows showing up in reads once it is back. The queue is on that
    /// server's disk: rows queued there are lost with the disk (the control topic still has
    /// them).
    pub async fn insert_control(&self, rows: &[ControlRow]) -> Result<()> {
        self.insert_or_forward(CONTROL_TABLE, rows).await
    }

    /// Inserts dead letters in one `INSERT`; on a cluster, queued for a shard that is down as
    /// [`Self::insert_control`] does (dead letters are deduplicated by Kafka position, never move
    /// a position, and are on the dead-letter topic too).
    pub async fn insert_dead_letters(&self, rows: &[DeadLetterRow]) -> Result<()> {
        self.insert_or_forward(DEAD_LETTER_TABLE, rows).await
    }

    async fn insert_or_forward<T>(&self, table: &'static str, rows: &[T]) -> Result<()>
    where
        T: RowOwned + RowWrite,
    {
        let error = match self.insert_with(&self.insert_client, table, rows).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        let Some(forwarding) = &self.forwarding_client else {
            return Err(error);
        };
        warn!(
            table,
            rows = rows.len(),
            %error,
            "not every shard stored the rows; queued on the server instead, to be forwarded when the shard is back"
        );
        self.insert_with(forwarding, table, rows).await
    }

    async fn insert_with<T>(&self, client: &Client, table: &'static str, rows: &[T]) -> Result<()>
    where
        T: RowOwned + RowWrite,
    {
        if rows.is_empty() {
            return Ok(());
        }
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
