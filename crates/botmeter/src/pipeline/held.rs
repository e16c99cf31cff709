//! On a cluster, a shard whose inserts fail holds only its own Kafka partitions: they are paused,
//! the shard's unwritten runs wait here in order ([`HeldShard`]), and the loop goes on collecting
//! and writing the other shards' partitions. Between batches the held runs are sent again, each
//! unchanged (replication's block deduplication stores a run that had landed once), with backoff;
//! once a shard's runs are all durable its partitions resume right after what was handed out.
//!
//! A later batch's rows of a held shard (polled before the pause took effect) join the end of its
//! queue, so each partition's rows are still written in offset order. A rebalance drops every
//! held run (the partitions' owners resume from ClickHouse's positions, once the failed attempts
//! are known over on the shard's replicas). An attempt blocks the loop for at most the insert
//! timeout (`--clickhouse-insert-timeout-ms`; a shard that is down refuses at once).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context as _;
use ingest::{Fence, Paused};
use query::rows::PendingUsage;
use query::write::retry::Backoff;
use tracing::{info, warn};

use super::traffic::TrafficLoop;
use super::write::Failed;
use crate::ops::names;

/// A shard whose inserts failed: its paused partitions and the runs not written yet.
pub(crate) struct HeldShard {
    /// The assignment the runs were polled under.
    fence: Fence,
    /// The shard's partitions paused when it was held.
    paused: Paused,
    /// Runs not written yet, in the order they must land.
    runs: VecDeque<Vec<PendingUsage>>,
    backoff: Backoff,
    next_attempt: Instant,
    /// Failed attempts, which may still run on a replica: known over before positions are read
    /// after a rebalance.
    attempts: Vec<String>,
    /// The time range (Unix seconds) of runs whose attempt failed: any may have landed in part
    /// (the table's part before a materialized view's), so the rollups are checked once the
    /// shard recovers.
    landed: Option<(u32, u32)>,
    since: Instant,
}

impl HeldShard {
    /// Widens the time range whose rollups are checked on recovery to `run`'s rows.
    fn may_have_landed(&mut self, run: &[PendingUsage]) {
        let (first, last) = time_range(run);
        self.landed = Some(
            self.landed
                .map_or((first, last), |(a, b)| (a.min(first), b.max(last))),
        );
    }
}

/// The earliest and latest `event_time` (Unix seconds) of a non-empty run.
fn time_range(run: &[PendingUsage]) -> (u32, u32) {
    run.iter()
        .map(PendingUsage::event_time)
        .fold((u32::MAX, 0), |(a, b), t| (a.min(t), b.max(t)))
}

impl TrafficLoop {
    /// Whether traffic partition `partition` is held (its shard's inserts fail).
    pub(super) fn is_held(&self, partition: i32) -> bool {
        self.held
            .contains_key(&self.shared.writer.shard_of(partition))
    }

    /// Holds write shard `shard` with `rows` as its next run (after any it holds already):
    /// pauses its partitions the first time. `failed` is the attempt that failed, if any.
    pub(super) fn hold_shard(
        &mut self,
        fence: Fence,
        shard: usize,
        rows: Vec<PendingUsage>,
        failed: Option<Failed>,
    ) -> anyhow::Result<()> {
        if !self.held.contains_key(&shard) {
            let writer = &self.shared.writer;
            let paused = self
                .source
                .pause_where(|partition| writer.shard_of(partition) == shard)?;
            let held = HeldShard {
                fence,
                paused,
                runs: VecDeque::new(),
                backoff: Backoff::new(self.settings.max_backoff()),
                next_attempt: Instant::now(),
                attempts: Vec::new(),
                landed: None,
                since: Instant::now(),
            };
            self.held.insert(shard, held);
            self.shared.stats.degraded.store(true, Ordering::SeqCst);
        }
        let held = self.held.get_mut(&shard).expect("held just now");
        if failed.is_some() {
            held.may_have_landed(&rows);
        }
        held.runs.push_back(rows);
        if let Some((error, query_id)) = failed {
            self.shared
                .stats
                .write_errors
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::CLICKHOUSE_ERRORS).increment(1);
            let error = held
                .backoff
                .failed(error)
                .context("clickhouse refused the batch; it is not written and will be read again on the next start")?;
            let pause = held.backoff.next_pause();
            held.next_attempt = Instant::now() + pause;
            held.attempts.push(query_id);
            warn!(
                shard = shard + 1,
                partitions = ?held.paused.partitions(),
                error = %error,
                retry_in_ms = pause.as_millis() as u64,
                "clickhouse write failed; the shard's partitions paused, the others go on, retrying"
            );
        }
        Ok(())
    }

    /// One step of every held shard: after a rebalance, drops them all; else sends each due
    /// shard's runs again, in order, until one fails, and resumes a shard's partitions once all
    /// its runs are durable.
    pub(super) fn drive_held(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        if self
            .held
            .values()
            .any(|held| !self.source.holds(held.fence))
        {
            return self.drop_held_after_rebalance();
        }
        let shards: Vec<usize> = self.held.keys().copied().collect();
        for shard in shards {
            let held = self.held.get_mut(&shard).expect("listed");
            if Instant::now() < held.next_attempt {
                continue;
            }
            while let Some(run) = held.runs.front() {
                let query_id = query::query_id::new_query_id();
                let writer = &self.shared.writer;
                match self
                    .shared
                    .handle
                    .block_on(writer.insert_usage_into_shard(shard, run, &query_id))
                {
                    Ok(()) => {
                        held.runs.pop_front();
                    }
                    Err(error) => {
                        let (first, last) = time_range(run);
                        held.landed = Some(
                            held.landed
                                .map_or((first, last), |(a, b)| (a.min(first), b.max(last))),
                        );
                        self.shared
                            .stats
                            .write_errors
                            .fetch_add(1, Ordering::Relaxed);
                        metrics::counter!(names::CLICKHOUSE_ERRORS).increment(1);
                        let error = held.backoff.failed(error).context(
                            "clickhouse refused the batch; it is not written and will be read again on the next start",
                        )?;
                        let pause = held.backoff.next_pause();
                        held.next_attempt = Instant::now() + pause;
                        held.attempts.push(query_id);
                        warn!(shard = shard + 1, error = %error, retry_in_ms = pause.as_millis() as u64, "clickhouse write failed; the shard's partitions stay paused, retrying");
                        break;
                    }
                }
            }
            if held.runs.is_empty() {
                let held = self.held.remove(&shard).expect("listed");
                let partitions = held.paused.partitions();
                self.source.resume(held.paused)?;
                info!(
                    shard = shard + 1,
                    ?partitions,
                    held_ms = held.since.elapsed().as_millis() as u64,
                    "clickhouse writes to the shard recovered; its partitions resumed"
                );
                if let Some((first, last)) = held.landed {
                    self.verify_rollups(first, last);
                }
            }
        }
        if self.held.is_empty() {
            self.shared.stats.degraded.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A rebalance ran while shards were held: their runs are dropped, and once every failed
    /// attempt is known over (it could land after the positions are read), the whole assignment
    /// resumes from ClickHouse's positions.
    fn drop_held_after_rebalance(&mut self) -> anyhow::Result<()> {
        let held = std::mem::take(&mut self.held);
        for (shard, held) in &held {
            for query_id in &held.attempts {
                self.fence_until_over(*shard, query_id);
            }
        }
        let dropped: usize = held
            .values()
            .flat_map(|held| held.runs.iter().map(Vec::len))
            .sum();
        let partitions = self.source.resume_from_stored()?;
        self.shared.stats.degraded.store(false, Ordering::SeqCst);
        info!(
            dropped,
            partitions,
            "partitions moved while shards were held; their rows dropped, partitions resumed from ClickHouse's positions"
        );
        Ok(())
    }
}
