//! Per-shard usage inserts on a cluster ([`crate::ClickHouseConfig::shard_urls`]).
//!
//! Each Kafka partition belongs to shard `partition % shards` (0-based, in the cluster's shard
//! order): the shard the `Distributed` table's sharding key `kafka_partition` sends its rows to
//! (every shard has weight 1), so rows written either way live in the same place. A batch's rows
//! are grouped by shard ([`Writer::shard_of`]) and each group is one `INSERT` straight into the
//! shard's `usage_events_local`, through its first replica that takes it
//! ([`Writer::insert_usage_into_shard`]). A shard that is down fails only its own group: the
//! pipeline holds that shard's partitions and keeps writing the others'.
//!
//! A group sent again unchanged (a retry, through either replica) is stored once: the shard's
//! replicated table keeps the hash of each recent block in ZooKeeper and drops a repeat. That is
//! what replaces the single-node lost-response filter here.

use std::time::Duration;

use tracing::{debug, warn};

use super::{fence_on, Writer, USAGE_TABLE};
use crate::cluster::{ReplicaAddress, LOCAL_SUFFIX};
use crate::error::{Error, Result};
use crate::rows::AsUsageRow;
use crate::write::retry::is_permanent;

impl Writer {
    /// How many groups a batch's usage is written in: the cluster's shards when inserts go per
    /// shard, else 1 (one server, or a cluster written through its `Distributed` tables).
    pub fn write_shards(&self) -> usize {
        self.shards.len().max(1)
    }

    /// The write group of Kafka partition `partition` (see [`Self::write_shards`]): its shard,
    /// `partition % shards`, as the `Distributed` tables' sharding key places it.
    pub fn shard_of(&self, partition: i32) -> usize {
        partition.rem_euclid(self.write_shards() as i32) as usize
    }

    /// Inserts usage rows of shard `shard`'s partitions in one `INSERT`: into the shard's
    /// `usage_events_local` through its first replica that takes it (a replica that fails is
    /// passed over; ZooKeeper deduplicates a block both received), or, without shard URLs,
    /// [`Self::insert_usage_as`]. The error is the last replica's.
    pub async fn insert_usage_into_shard<R: AsUsageRow + Sync>(
        &self,
        shard: usize,
        rows: &[R],
        query_id: &str,
    ) -> Result<()> {
        let Some(replicas) = self.shards.get(shard) else {
            return self.insert_usage_as(rows, query_id).await;
        };
        if rows.is_empty() {
            return Ok(());
        }
        let table = format!("{USAGE_TABLE}{LOCAL_SUFFIX}");
        let mut last = None;
        for replica in replicas {
            match self
                .insert_usage_via(&replica.insert, &table, rows, query_id)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    debug!(shard = shard + 1, replica = %replica.url, error = %e, "shard replica failed the insert; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("a shard has at least one replica (validated)"))
    }

    /// [`Self::fence`] for an insert sent to shard `shard`'s replicas: over on every replica that
    /// answers. A replica that cannot be reached runs nothing of ours (a server that comes back
    /// has no query of before); any other failure leaves it unknown (an error).
    pub async fn fence_shard(
        &self,
        shard: usize,
        query_id: &str,
        within: Duration,
    ) -> Result<bool> {
        let Some(replicas) = self.shards.get(shard) else {
            return self.fence(query_id, within).await;
        };
        for replica in replicas {
            match fence_on(&replica.plain, query_id, within).await {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(Error::ClickHouse {
                    source: clickhouse::error::Error::Network(_),
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Checks the shard URLs against the cluster before anything is written: as many shards as
    /// `system.clusters` lists, and each URL answering as a replica of the shard at its place
    /// (its `{shard}` macro equal to the one of that shard's servers). A replica that does not
    /// answer now is passed over with a warning (it is checked by its inserts failing over).
    pub async fn verify_shards(&self) -> Result<()> {
        let (Some((cluster, _)), false) = (&self.cluster, self.shards.is_empty()) else {
            return Ok(());
        };
        let invalid = |message: String| Error::Config {
            field: "shard_urls",
            message,
        };
        let addresses = self
            .client
            .query(
                "SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = ? \
                 ORDER BY shard_num, replica_num",
            )
            .bind(cluster)
            .fetch_all::<ReplicaAddress>()
            .await
            .map_err(|e| Error::clickhouse("read the cluster's shards", e))?;
        let shards: std::collections::BTreeSet<u32> =
            addresses.iter().map(|a| a.shard_num).collect();
        if shards.len() != self.shards.len() {
            return Err(invalid(format!(
                "cluster {cluster} has {} shards, {} given",
                shards.len(),
                self.shards.len()
            )));
        }
        for (index, (shard_num, replicas)) in shards.iter().zip(&self.shards).enumerate() {
            // The shard's macro as its servers in system.clusters know it.
            let mut expected = None;
            for address in addresses.iter().filter(|a| a.shard_num == *shard_num) {
                let remote = format!("{}:{}", address.host_address, address.port);
                if let Ok(value) = shard_macro(&self.client, Some(&remote)).await {
                    expected = Some(value);
                    break;
                }
            }
            let Some(expected) = expected else {
                warn!(
                    shard = shard_num,
                    "no server of the shard answers; its URLs are not checked"
                );
                continue;
            };
            for replica in replicas {
                match shard_macro(&replica.plain, None).await {
                    Ok(found) if found == expected => {}
                    Ok(found) => {
                        return Err(invalid(format!(
                            "{} answers as shard {found:?}, but is listed as shard {} of cluster {cluster} (whose servers are shard {expected:?}); list the shards in the cluster's order",
                            replica.url,
                            index + 1
                        )))
                    }
                    Err(e) => {
                        warn!(url = %replica.url, error = %e, "shard replica does not answer; not checked")
                    }
                }
            }
        }
        Ok(())
    }
}

/// The `{shard}` macro of the server `client` talks to, or of `remote` through it.
async fn shard_macro(
    client: &clickhouse::Client,
    remote: Option<&str>,
) -> clickhouse::error::Result<String> {
    let query = match remote {
        Some(address) => client
            .query("SELECT substitution FROM remote(?, system.macros) WHERE macro = 'shard'")
            .bind(address),
        None => client.query("SELECT substitution FROM system.macros WHERE macro = 'shard'"),
    };
    query.fetch_one::<String>().await
}

#[cfg(test)]
mod tests {
    use crate::ClickHouseConfig;

    fn writer(shard_urls: &str) -> super::Writer {
        let config = ClickHouseConfig {
            cluster: "c".into(),
            shard_urls: crate::parse_shard_urls(shard_urls),
            ..ClickHouseConfig::default()
        };
        super::Writer::new(&config.validate().unwrap()).unwrap()
    }

    #[test]
    fn a_partition_belongs_to_shard_partition_mod_shards() {
        let two = writer("http://a:1,http://b:1;http://c:1,http://d:1");
        assert_eq!(two.write_shards(), 2);
        let shards: Vec<usize> = (0..6).map(|p| two.shard_of(p)).collect();
        assert_eq!(shards, [0, 1, 0, 1, 0, 1]);
        let distributed = writer("");
        assert_eq!(distributed.write_shards(), 1);
        assert_eq!(distributed.shard_of(3), 0);
    }
}
