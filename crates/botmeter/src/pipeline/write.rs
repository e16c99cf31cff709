//! Writing a traffic batch: its usage insert runs in the background while the next batch is
//! collected ([`TrafficLoop::start`]), and is awaited before the next one starts
//! ([`TrafficLoop::finish`]). A failed insert holds the partitions: they are paused (the consumer
//! keeps polling, so it stays in its group and memory stays bounded), the rest is retried with
//! backoff after dropping what had landed (a lost response must not double count), and the
//! partitions resume right after what is durable ([`TrafficLoop::write_holding`]). On a cluster
//! a batch's usage is inserted per shard, and a shard whose insert fails holds only its own
//! partitions while the loop goes on ([`super::held`]); its rows are sent again unchanged and
//! replication's block deduplication stores them once (see `query::Writer::deduplicates_retries`),
//! in place of the lost-response filter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use ingest::{Fence, Paused};
use query::rows::PendingUsage;
use query::write::retry::Backoff;
use query::write::runs::not_stored;
use query::write::verify::{self, RollupVerdict};
use tracing::{debug, error, info, warn};

use super::report::{record_traffic_metrics, BatchSummary};
use super::traffic::TrafficLoop;
use crate::ops::names;

/// How often ended sessions and endpoints are evicted from the state.
const EVICT_EVERY: Duration = Duration::from_secs(60);

/// What a batch's bookkeeping needs once its insert is durable.
pub(crate) struct Batch {
    pub(crate) fence: Fence,
    pub(crate) summary: BatchSummary,
    pub(crate) events: usize,
    pub(crate) letters: usize,
    pub(crate) attributed: u64,
    pub(crate) unattributed: u64,
    pub(crate) repeated: u64,
    /// The earliest usage time: a safe "now" for eviction (a backlog still needs what ended
    /// long ago, so eviction goes by traffic time, not the wall clock).
    pub(crate) t_min: Option<DateTime<Utc>>,
    pub(crate) topic: String,
    pub(crate) commit: HashMap<i32, i64>,
    pub(crate) started: Instant,
}

/// A batch's inserts: each run of [`query::write::runs::contiguous_runs`] cut by write shard
/// (see `query::Writer::shard_of`; one group on one server), as (shard, rows), in order.
pub(crate) type ShardRuns = Vec<(usize, Vec<PendingUsage>)>;

/// How a batch's inserts went.
struct InsertOutcome {
    runs: ShardRuns,
    /// Indexes of the runs not written: on one server, every run from the first that failed; on
    /// a cluster, every run of a shard from its first that failed (the other shards' go on).
    unwritten: Vec<usize>,
    /// The first failure per shard.
    failures: BTreeMap<usize, Failed>,
}

/// A failed insert: its error, and its `query_id` (which may still run on the server).
pub(crate) type Failed = (query::Error, String);

/// How long one attempt at fencing a failed insert may take (`Writer::fence`): short, since the
/// traffic thread does not poll Kafka meanwhile.
const FENCE_WITHIN: Duration = Duration::from_secs(1);

/// A batch whose usage insert runs in the background.
pub(crate) struct InFlight {
    batch: Batch,
    task: tokio::task::JoinHandle<InsertOutcome>,
}

/// How a batch's writes ended.
pub(crate) enum Written {
    /// Every insert is durable.
    All,
    /// Stopping before everything was written; the rest is re-read on the next start.
    Stopped,
    /// The partitions moved while ClickHouse was down; the new owner resumes from ClickHouse.
    Rebalanced,
}

/// How [`TrafficLoop::write_holding`] reads a row's Kafka position and time, for the
/// lost-response filter and the rollup check. Without it, rows must be idempotent (dead letters).
pub(crate) struct RowKeys<R> {
    /// (topic, partition, offset).
    position: fn(&R) -> (&str, i32, i64),
    /// `event_time`, Unix seconds.
    time: fn(&R) -> u32,
}

const USAGE_KEYS: RowKeys<PendingUsage> = RowKeys {
    position: PendingUsage::position,
    time: PendingUsage::event_time,
};

/// Retrying state of [`TrafficLoop::write_holding`].
struct Hold {
    fence: Fence,
    backoff: Backoff,
    paused: Option<Paused>,
    /// The time range (Unix seconds) of runs that had landed before their insert failed.
    landed: Option<(u32, u32)>,
    /// The failed insert not yet known to be over on the server: until it is, its rows are
    /// neither sent again nor looked for in the positions.
    unfenced: Option<String>,
}

impl Hold {
    /// Widens the time range whose rollups are checked once writes recover to `run`'s rows.
    fn may_have_landed<R>(&mut self, run: &[R], keys: &RowKeys<R>) {
        for row in run {
            let t = (keys.time)(row);
            self.landed = Some(self.landed.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
        }
    }
}

/// What a failed attempt leads to.
enum Retry<'a, R> {
    /// Try the same rows again.
    Again,
    /// Part had landed: write these remaining parts instead.
    Remaining(Vec<&'a [R]>),
    /// The failed insert may still run on the server: wait again, sending nothing.
    Unfenced(query::Error),
    /// Give up on the batch.
    Done(Written),
}

impl TrafficLoop {
    /// Starts inserting a batch's runs, in order, on the runtime. The reader knows an insert is
    /// running until it ends (a rebalance waits for it; see [`ingest::WriteInFlight`]). On one
    /// server the first failure stops the batch; on a cluster a shard's failure stops only that
    /// shard's runs (see [`super::held`]).
    pub(super) fn start(&self, batch: Batch, runs: ShardRuns) -> InFlight {
        let guard = self.source.write_started();
        let writer = self.shared.writer.clone();
        let per_shard = writer.deduplicates_retries();
        let task = self.shared.handle.spawn(async move {
            let _guard = guard;
            let mut outcome = InsertOutcome {
                runs,
                unwritten: Vec::new(),
                failures: BTreeMap::new(),
            };
            for (index, (shard, run)) in outcome.runs.iter().enumerate() {
                if outcome.failures.contains_key(shard) {
                    outcome.unwritten.push(index);
                    continue;
                }
                let query_id = query::query_id::new_query_id();
                if let Err(e) = writer.insert_usage_into_shard(*shard, run, &query_id).await {
                    outcome.failures.insert(*shard, (e, query_id));
                    outcome.unwritten.push(index);
                    if !per_shard {
                        outcome.unwritten.extend(index + 1..outcome.runs.len());
                        break;
                    }
                }
            }
            outcome
        });
        InFlight { batch, task }
    }

    /// Waits for a batch's insert; if it failed, holds the partitions and retries the rest (on a
    /// cluster, holds only the failed shards' partitions and goes on: see [`super::held`]). Then
    /// does the batch's bookkeeping: metrics, counters, eviction and the informative commit.
    pub(super) fn finish(&mut self, in_flight: InFlight) -> anyhow::Result<Written> {
        let InFlight { mut batch, task } = in_flight;
        let InsertOutcome {
            runs,
            unwritten,
            mut failures,
        } = self
            .shared
            .handle
            .block_on(task)
            .context("the insert task panicked")?;
        let inserts = runs.len();
        if self.shared.writer.deduplicates_retries() {
            let mut runs: Vec<Option<(usize, Vec<PendingUsage>)>> =
                runs.into_iter().map(Some).collect();
            for index in unwritten {
                if let Some((shard, rows)) = runs[index].take() {
                    let failed = failures.remove(&shard);
                    self.hold_shard(batch.fence, shard, rows, failed)?;
                }
            }
            let writer = &self.shared.writer;
            let held = &self.held;
            batch
                .commit
                .retain(|partition, _| !held.contains_key(&writer.shard_of(*partition)));
        } else if let Some(error) = failures.into_values().next() {
            let rest: Vec<Vec<PendingUsage>> = runs
                .into_iter()
                .skip(unwritten.first().copied().unwrap_or(inserts))
                .map(|(_, rows)| rows)
                .collect();
            match self.write_holding(
                batch.fence,
                &rest,
                Some(&USAGE_KEYS),
                Some(error),
                |rows, query_id| {
                    let writer = &self.shared.writer;
                    async move { writer.insert_usage_as(rows, &query_id).await }
                },
            )? {
                Written::All => {}
                other => return Ok(other),
            }
        }
        self.count_written(&batch, inserts);
        if self.last_eviction.elapsed() >= EVICT_EVERY {
            if let Some(t_min) = batch.t_min {
                self.evict(t_min);
            }
            self.last_eviction = Instant::now();
        }
        self.source.commit_informative(&batch.topic, &batch.commit);
        Ok(Written::All)
    }

    fn count_written(&self, batch: &Batch, inserts: usize) {
        let rows = batch.events + batch.letters;
        metrics::histogram!(names::BATCH_SECONDS).record(batch.started.elapsed().as_secs_f64());
        metrics::histogram!(names::BATCH_ROWS).record(rows as f64);
        record_traffic_metrics(&batch.summary);
        let stats = &self.shared.stats;
        stats.traffic_in.fetch_add(rows as u64, Ordering::Relaxed);
        stats
            .attributed
            .fetch_add(batch.attributed, Ordering::Relaxed);
        stats
            .unattributed
            .fetch_add(batch.unattributed, Ordering::Relaxed);
        stats
            .dead_letters
            .fetch_add(batch.letters as u64, Ordering::Relaxed);
        stats.repeated.fetch_add(batch.repeated, Ordering::Relaxed);
        debug!(rows, inserts, "traffic batch written");
    }

    /// Evicts sessions and endpoints that ended more than the grace before `t_min`.
    fn evict(&self, t_min: DateTime<Utc>) {
        let grace = Duration::from_millis(self.settings.eviction_grace_ms);
        let mut state = self.shared.state.write().expect("state lock");
        let evicted = state.evict_ended(t_min, grace);
        let state_stats = state.stats();
        drop(state);
        metrics::counter!(names::EVICTED).increment(evicted.total() as u64);
        metrics::gauge!(names::STATE_ENTRIES, "kind" => "sessions")
            .set(state_stats.sessions as f64);
        metrics::gauge!(names::STATE_ENTRIES, "kind" => "endpoints")
            .set(state_stats.endpoints as f64);
        debug!(
            evicted = evicted.total(),
            "ended sessions and endpoints evicted"
        );
    }

    /// Writes `runs` in order, retrying each with backoff while ClickHouse fails, the traffic
    /// partitions paused meanwhile; when the writes land it resumes each partition right after
    /// what is durable. If a rebalance moves the partitions during the outage, the batch is
    /// abandoned; a failure that cannot be cured by retrying ends the run with its error.
    /// `keys`, when given, enable the lost-response filter and the rollup check (see
    /// [`RowKeys`]), and then each failed insert is fenced first: known finished or killed on the
    /// server before its rows are looked for or sent again. `failed` is a first attempt at
    /// `runs[0]` made elsewhere (the background insert): the retry starts at once.
    pub(super) fn write_holding<'a, R, F, Fut>(
        &self,
        fence: Fence,
        runs: &'a [Vec<R>],
        keys: Option<&RowKeys<R>>,
        mut failed: Option<Failed>,
        insert: F,
    ) -> anyhow::Result<Written>
    where
        F: Fn(&'a [R], String) -> Fut,
        Fut: std::future::Future<Output = query::Result<()>>,
    {
        let mut hold = Hold {
            fence,
            backoff: Backoff::new(self.settings.max_backoff()),
            paused: None,
            landed: None,
            unfenced: None,
        };
        let mut queue: VecDeque<&'a [R]> = runs
            .iter()
            .filter(|run| !run.is_empty())
            .map(Vec::as_slice)
            .collect();
        while let Some(run) = queue.pop_front() {
            loop {
                let error = match failed.take() {
                    Some((e, query_id)) => {
                        hold.unfenced = keys.is_some().then_some(query_id);
                        e
                    }
                    None => {
                        let query_id = query::query_id::new_query_id();
                        match self.shared.handle.block_on(insert(run, query_id.clone())) {
                            Ok(()) => break,
                            Err(e) => {
                                hold.unfenced = keys.is_some().then_some(query_id);
                                e
                            }
                        }
                    }
                };
                match self.after_failure(&mut hold, run, keys, error)? {
                    Retry::Again => {}
                    Retry::Unfenced(error) => {
                        let query_id = hold.unfenced.take().unwrap_or_default();
                        failed = Some((error, query_id));
                    }
                    Retry::Remaining(parts) => {
                        // Each remaining part is one Kafka partition's rows after its stored
                        // position, in offset order: written one insert each, in order.
                        for part in parts.into_iter().rev() {
                            queue.push_front(part);
                        }
                        break;
                    }
                    Retry::Done(written) => return Ok(written),
                }
            }
        }
        if let Some(paused) = hold.paused {
            self.source.resume(paused.except(|p| self.is_held(p)))?;
            self.shared
                .stats
                .degraded
                .store(!self.held.is_empty(), Ordering::SeqCst);
            info!("clickhouse writes recovered; partitions resumed");
        }
        if let Some((first, last)) = hold.landed {
            self.verify_rollups(first, last);
        }
        Ok(Written::All)
    }

    /// Handles one failed insert of `run`: counts it, pauses the partitions, waits out the
    /// backoff, and decides what to try next.
    fn after_failure<'a, R>(
        &self,
        hold: &mut Hold,
        run: &'a [R],
        keys: Option<&RowKeys<R>>,
        error: query::Error,
    ) -> anyhow::Result<Retry<'a, R>> {
        self.shared
            .stats
            .write_errors
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::CLICKHOUSE_ERRORS).increment(1);
        let error = hold
            .backoff
            .failed(error)
            .context("clickhouse refused the batch; it is not written and will be read again on the next start")?;
        if !self.source.holds(hold.fence) {
            // The partitions moved since the batch was polled (the background insert failed
            // before a rebalance): the new assignment resumes from ClickHouse without it.
            return Ok(Retry::Done(Written::Rebalanced));
        }
        self.shared.stats.degraded.store(true, Ordering::SeqCst);
        let pause = hold.backoff.peek();
        warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "clickhouse write failed; partitions paused, retrying");
        if hold.paused.is_none() {
            hold.paused = Some(self.source.pause()?);
        }
        if !self.wait_paused(pause) {
            return Ok(Retry::Done(Written::Stopped));
        }
        if !self.source.holds(hold.fence) {
            // Positions are read again right below: an insert of ours may not land after that.
            if let Some(query_id) = hold.unfenced.take() {
                self.fence_until_over(0, &query_id);
            }
            let partitions = self.source.resume_from_stored()?;
            info!(
                partitions,
                "traffic partitions resumed from ClickHouse's positions after a rebalance"
            );
            self.shared.stats.degraded.store(false, Ordering::SeqCst);
            return Ok(Retry::Done(Written::Rebalanced));
        }
        if let Some(query_id) = &hold.unfenced {
            if !self.fenced(0, query_id) {
                hold.backoff.next_pause();
                return Ok(Retry::Unfenced(error));
            }
            hold.unfenced = None;
        }
        if let Some(parts) = keys.and_then(|keys| self.not_landed(hold, run, keys)) {
            return Ok(Retry::Remaining(parts));
        }
        hold.backoff.next_pause();
        Ok(Retry::Again)
    }

    /// One attempt at knowing the failed insert `query_id` over on the server (on a cluster, on
    /// every replica of write shard `shard`; see `query::Writer::fence_shard`).
    pub(super) fn fenced(&self, shard: usize, query_id: &str) -> bool {
        match self.shared.handle.block_on(self.shared.writer.fence_shard(
            shard,
            query_id,
            FENCE_WITHIN,
        )) {
            Ok(true) => {
                debug!(query_id, "the failed insert is over on the server");
                true
            }
            Ok(false) => {
                warn!(query_id, "the failed insert still runs on the server; its rows are not sent again until it is over");
                false
            }
            Err(e) => {
                warn!(query_id, error = %e, "cannot tell whether the failed insert is over on the server; its rows are not sent again until it is known");
                false
            }
        }
    }

    /// Fences `query_id` before positions are read after a rebalance, polling the paused consumer
    /// between attempts; gives up (saying so) when stopping.
    pub(super) fn fence_until_over(&self, shard: usize, query_id: &str) {
        let mut backoff = Backoff::new(self.settings.max_backoff());
        while !self.fenced(shard, query_id) {
            if !self.wait_paused(backoff.next_pause()) {
                warn!(query_id, "stopping before the failed insert was known over");
                return;
            }
        }
    }

    /// Polls the paused consumer for `pause` (heartbeats and rebalances; no messages of ours);
    /// `false` when stopping.
    pub(super) fn wait_paused(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            if let Some(Ok(message)) = self.source.poll(Duration::from_millis(100)) {
                use rdkafka::message::Message as _;
                debug!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "message while paused; it is re-read on resume"
                );
            }
        }
        true
    }

    /// The lost-response filter: when part of `run` is already in ClickHouse (the failure came
    /// after the insert landed), the parts it does not hold yet; `None` when nothing landed (or
    /// the positions cannot be read now).
    fn not_landed<'a, R>(
        &self,
        hold: &mut Hold,
        run: &'a [R],
        keys: &RowKeys<R>,
    ) -> Option<Vec<&'a [R]>> {
        let (topic, _, _) = (keys.position)(run.first()?);
        let stored = self
            .shared
            .handle
            .block_on(self.shared.reader.positions(topic))
            .ok()?;
        let pending = not_stored(run, &keys.position, &stored);
        let pending_rows: usize = pending.iter().map(|part| part.len()).sum();
        if pending_rows == run.len() {
            return None;
        }
        // ClickHouse 18.16 stores an insert's part before its views' parts: when the error came
        // from a view, the rollups lack these rows.
        warn!(
            rows = run.len() - pending_rows,
            "part of a failed insert had landed; not written again (the rollups are checked once writes recover)"
        );
        hold.may_have_landed(run, keys);
        Some(pending)
    }

    /// Compares the rollups with the raw rows after a landed insert (see
    /// [`query::write::verify`]) and reports lasting damage as an error naming the months to
    /// rebuild, and in `botmeter_rollup_damage_total`.
    pub(super) fn verify_rollups(&self, first: u32, last: u32) {
        match self
            .shared
            .handle
            .block_on(verify::rollups(&self.shared.reader, first, last))
        {
            RollupVerdict::Equal { from, to } => {
                info!(
                    from,
                    to, "rollups equal the raw rows after the landed insert"
                );
            }
            RollupVerdict::Unknown { from, to, error } => {
                warn!(error = %error, from, to, "could not compare the rollups with the raw rows; run `botmeter rollups check`");
            }
            RollupVerdict::Damaged {
                keys,
                tables,
                months,
            } => {
                metrics::counter!(names::ROLLUP_DAMAGE).increment(1);
                error!(
                    keys,
                    tables = ?tables,
                    months = ?months,
                    "a failed insert left the rollups short of the raw rows; reports read from them undercount until `botmeter rollups rebuild --month {}` is run",
                    months.join(" --month ")
                );
            }
        }
    }
}
