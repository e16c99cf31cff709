//! The traffic reader's loop, in the order of the data flow: **collect** a batch (poll, skip what
//! is durable, decode or dead-letter), wait until the control plane is read past its time,
//! **attribute** each event as of its time, then **write** it (see [`super::write`]) while the
//! next batch is collected.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use enrich::UnattributedReason;
use ingest::{DeadLetter, Fence, RepeatWindow, Seen, TrafficSource};
use query::rows::{PendingUsage, TrafficRecord};
use query::write::runs::contiguous_runs;
use rdkafka::message::Message;
use tracing::{debug, info, warn};

use super::control::ControlWait;
use super::held::HeldShard;
use super::report::{dead_letter_rows, publish_dead_letters, record_lag, summarize};
use super::write::{Batch, InFlight, ShardRuns, Written};
use super::{RunSettings, Shared};
use crate::ops::names;

/// While messages keep coming, the collector reads the clock once per this many.
const CLOCK_EVERY: u32 = 64;
/// How often the consumer lag is published.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// The traffic reader and what it carries from one batch to the next.
pub(crate) struct TrafficLoop {
    pub(super) source: TrafficSource,
    control: ControlWait,
    pub(super) shared: Shared,
    pub(super) settings: RunSettings,
    pub(super) last_eviction: Instant,
    last_lag: Instant,
    /// At most one batch's insert runs while the next batch is polled, decoded and attributed,
    /// so ClickHouse's work overlaps the pipeline's (two cores, two halves of the work).
    in_flight: Option<InFlight>,
    /// The event ids seen lately, to tell a repeated delivery from a new event.
    repeats: RepeatWindow,
    /// Early evictions of the repeat window already published.
    repeats_evicted_published: u64,
    /// On a cluster, the write shards whose inserts fail, by shard (see [`super::held`]).
    pub(super) held: BTreeMap<usize, HeldShard>,
}

/// A batch as polled, before attribution.
struct Collected {
    /// The assignment it was polled under.
    fence: Fence,
    events: Vec<TrafficRecord>,
    letters: Vec<DeadLetter>,
    topic: String,
    /// Next offset per partition, for the informative commit.
    commit: HashMap<i32, i64>,
    started: Instant,
}

impl Collected {
    fn len(&self) -> usize {
        self.events.len() + self.letters.len()
    }

    /// Forgets what was collected under an assignment that has since moved: the new assignment
    /// re-reads it from ClickHouse's positions, so it is dropped here, not lost.
    fn drop_before(&mut self, fence: Fence) {
        if self.len() > 0 {
            info!(dropped = self.len(), "batch dropped after a rebalance");
        }
        self.events.clear();
        self.letters.clear();
        self.commit.clear();
        self.fence = fence;
    }
}

/// How waiting for the control plane ended.
enum ControlWaited {
    /// The control plane is read past the batch's time.
    Covered,
    /// The bound ran out; the control plane is read past `covered_us` only.
    Bounded { covered_us: i64 },
    /// Stopping.
    Stopped,
    /// A rebalance ran while the partitions were paused.
    Rebalanced,
}

/// After this long, waiting traffic pauses its partitions and polls between slices.
const PAUSE_WAITING_AFTER: Duration = Duration::from_millis(500);
/// After this long, waiting traffic says so.
const CONTROL_WAIT_WARN: Duration = Duration::from_secs(5);

/// What the loop does after a batch.
enum Step {
    /// Collect the next batch.
    Next,
    /// Stop after finishing the insert in flight.
    Finish,
    /// Stop now (the insert in flight is re-read on the next start).
    Stop,
}

impl TrafficLoop {
    pub(crate) fn new(
        source: TrafficSource,
        control_topic: String,
        control_partitions: Vec<i32>,
        shared: Shared,
        settings: RunSettings,
        repeats: RepeatWindow,
    ) -> Self {
        let control = ControlWait::new(
            control_topic,
            control_partitions,
            settings.control_lateness_ms,
        );
        Self {
            source,
            control,
            shared,
            settings,
            last_eviction: Instant::now(),
            last_lag: Instant::now(),
            in_flight: None,
            repeats,
            repeats_evicted_published: 0,
            held: BTreeMap::new(),
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    /// Collects, attributes and writes batches until stopped.
    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        while !self.stopping() {
            self.drive_held()?;
            let collected = self.collect()?;
            // Also while idle, so that the gauge reaches 0 once the backlog is written.
            self.record_lag_now_and_then();
            if collected.len() == 0 {
                // Idle: nothing to overlap the insert in flight with, so finish it now.
                if let Some(previous) = self.in_flight.take() {
                    if let Written::Stopped = self.finish(previous)? {
                        return Ok(());
                    }
                }
                continue;
            }
            if !self.source.holds(collected.fence) {
                // A rebalance ran in the last (empty) poll.
                info!(dropped = collected.len(), "batch dropped after a rebalance");
                continue;
            }
            match self.process(collected)? {
                Step::Next => {}
                Step::Finish => break,
                Step::Stop => return Ok(()),
            }
        }
        // Stopping: the batch in flight is finished (or, if a second signal came, re-read next
        // time).
        if let Some(previous) = self.in_flight.take() {
            self.finish(previous)?;
        }
        Ok(())
    }

    /// Polls up to a batch of messages, or until the batch's wait is over.
    fn collect(&self) -> anyhow::Result<Collected> {
        let started = Instant::now();
        let mut batch = Collected {
            fence: self.source.fence(),
            events: Vec::with_capacity(self.settings.batch_max_rows),
            letters: Vec::new(),
            topic: String::new(),
            commit: HashMap::new(),
            started,
        };
        let deadline = started + Duration::from_millis(self.settings.batch_max_wait_ms);
        let window = self.settings.event_time_window();
        // The clock is read once per CLOCK_EVERY messages while messages are waiting (a poll that
        // returns at once needs no timeout), and on every poll that came back empty.
        let mut timeout = deadline.saturating_duration_since(started);
        let mut since_clock = 0;
        while batch.len() < self.settings.batch_max_rows && !self.stopping() {
            since_clock += 1;
            if since_clock >= CLOCK_EVERY {
                since_clock = 0;
                timeout = deadline.saturating_duration_since(Instant::now());
            }
            if timeout.is_zero() && batch.len() > 0 {
                break;
            }
            // A zero-timeout poll first: while messages are waiting it returns one without
            // librdkafka reading the clock for a deadline.
            let polled = match self.source.poll(Duration::ZERO) {
                Some(message) => Some(message),
                None => self.source.poll(timeout.max(Duration::from_millis(1))),
            };
            let Some(message) = polled else {
                timeout = deadline.saturating_duration_since(Instant::now());
                since_clock = 0;
                if timeout.is_zero() {
                    break;
                }
                continue;
            };
            let message = match message {
                // The group dropped this member: a rebalance callback waited longer than
                // max.poll.interval.ms for its positions (ClickHouse, or a whole shard of a
                // cluster, down). Its partitions are revoked (the fence moves) and the next poll
                // joins the group again: not an error of the run.
                Err(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::PollExceeded,
                )) => {
                    warn!("left the consumer group while waiting for positions; joining again");
                    continue;
                }
                other => other.context("poll the traffic topic")?,
            };
            if !self.source.holds(batch.fence) {
                // A rebalance ran inside this poll: messages collected before it may belong to
                // partitions now elsewhere.
                batch.drop_before(self.source.fence());
            }
            if !self.source.claim(message.partition(), message.offset()) {
                continue; // re-read by the resume rewind, or redelivered: already handled
            }
            if batch.topic.is_empty() {
                batch.topic = message.topic().to_owned();
            }
            batch
                .commit
                .insert(message.partition(), message.offset() + 1);
            match ingest::decode_traffic(&message, &window, TrafficRecord::new) {
                Ok(record) => batch.events.push(record),
                Err(letter) => batch.letters.push(letter),
            }
        }
        Ok(batch)
    }

    /// Attributes a collected batch, writes its dead letters, and starts its insert once the
    /// previous one is durable.
    fn process(&mut self, collected: Collected) -> anyhow::Result<Step> {
        let Collected {
            fence,
            events,
            letters,
            topic,
            commit,
            started: collect_started,
        } = collected;
        // Waited on up to now at most: traffic stamped ahead of this clock (within the allowed
        // skew) needs the control plane as it is now, not as it will be.
        let t_max = events
            .iter()
            .map(|record| record.usage_time_us)
            .max()
            .unwrap_or(i64::MIN)
            .min(Utc::now().timestamp_micros());
        let t_min = events.iter().map(|record| record.usage_time_us).min();
        let control_started = Instant::now();
        let covered_us = match self.wait_for_control(fence, t_max)? {
            ControlWaited::Covered => None,
            ControlWaited::Bounded { covered_us } => Some(covered_us),
            // Stopping: the batch was not written and will be re-read.
            ControlWaited::Stopped => return Ok(Step::Finish),
            // The partitions moved while paused: the new owner resumes from ClickHouse.
            ControlWaited::Rebalanced => return Ok(Step::Next),
        };
        let attribute_started = Instant::now();
        let event_count = events.len();
        let rows = self.attribute(events, &letters, &topic, covered_us);
        let summary = summarize(&rows);
        if let Some(step) = self.write_letters(fence, &letters)? {
            return Ok(step);
        }
        let batch = Batch {
            fence,
            events: event_count,
            letters: letters.len(),
            attributed: summary.attributed,
            unattributed: summary.unattributed,
            repeated: summary.repeated,
            summary,
            t_min: t_min.and_then(DateTime::from_timestamp_micros),
            topic,
            commit,
            started: Instant::now(),
        };
        let finish_started = Instant::now();
        if let Some(step) = self.finish_previous(batch.fence)? {
            return Ok(step);
        }
        // Where a batch's time goes (debug level): polling and decoding, waiting for the control
        // plane, attributing, waiting for the previous batch's insert.
        debug!(
            rows = batch.events + batch.letters,
            collect_ms = (control_started - collect_started).as_millis() as u64,
            control_wait_ms = (attribute_started - control_started).as_millis() as u64,
            attribute_ms = (finish_started - attribute_started).as_millis() as u64,
            previous_insert_wait_ms = finish_started.elapsed().as_millis() as u64,
            "traffic batch attributed"
        );
        let runs = contiguous_runs(rows, |row| {
            let (_, partition, offset) = row.position();
            (partition, offset, row.event_time())
        });
        let runs = self.by_shard(batch.fence, runs)?;
        self.in_flight = Some(self.start(batch, runs));
        Ok(Step::Next)
    }

    /// Cuts each run by write shard (runs are sorted by partition, so each piece keeps its
    /// partitions' offset order); a held shard's pieces join its queue instead (after what it
    /// holds already), the rest are returned to be inserted.
    fn by_shard(
        &mut self,
        fence: Fence,
        runs: Vec<Vec<PendingUsage>>,
    ) -> anyhow::Result<ShardRuns> {
        let writer = self.shared.writer.clone();
        let mut out = ShardRuns::new();
        for run in runs {
            let mut pieces: BTreeMap<usize, Vec<PendingUsage>> = BTreeMap::new();
            for row in run {
                pieces
                    .entry(writer.shard_of(row.position().1))
                    .or_default()
                    .push(row);
            }
            for (shard, rows) in pieces {
                if self.held.contains_key(&shard) {
                    self.hold_shard(fence, shard, rows, None)?;
                } else {
                    out.push((shard, rows));
                }
            }
        }
        Ok(out)
    }

    /// Publishes the consumer lag at most every [`LAG_EVERY`].
    fn record_lag_now_and_then(&mut self) {
        if self.last_lag.elapsed() >= LAG_EVERY {
            record_lag(&self.source);
            self.last_lag = Instant::now();
        }
    }

    /// Publishes a batch's dead letters and records them (holding the partitions while
    /// ClickHouse fails); `Some` when the loop must not go on with the batch.
    fn write_letters(&self, fence: Fence, letters: &[DeadLetter]) -> anyhow::Result<Option<Step>> {
        if letters.is_empty() {
            return Ok(None);
        }
        publish_dead_letters(&self.shared.dead_letters, letters)?;
        let dead_rows = dead_letter_rows(letters);
        Ok(
            match self.write_holding(
                fence,
                std::slice::from_ref(&dead_rows),
                None,
                None,
                |rows, _query_id| self.shared.writer.insert_dead_letters(rows),
            )? {
                Written::All => None,
                Written::Stopped => Some(Step::Finish),
                Written::Rebalanced => Some(Step::Next),
            },
        )
    }

    /// The previous batch's insert ran while this one was polled, decoded and attributed: it
    /// must be durable before this one (polled under `fence`) is written, since positions only
    /// grow. `Some` when the loop must not go on with this batch.
    fn finish_previous(&mut self, fence: Fence) -> anyhow::Result<Option<Step>> {
        let Some(previous) = self.in_flight.take() else {
            return Ok(None);
        };
        Ok(match self.finish(previous)? {
            Written::All => None,
            Written::Stopped => Some(Step::Stop),
            // The partitions moved: what this batch holds from before the move was dropped
            // (fence check); the new assignment re-reads from ClickHouse.
            Written::Rebalanced => {
                info!("batch partly written when its partitions moved; the new owner resumes from ClickHouse");
                (!self.source.holds(fence)).then_some(Step::Next)
            }
        })
    }

    /// Waits until the control plane is read past `t_us`, at most `max_control_wait_ms`. After
    /// a moment the traffic partitions are paused and the consumer polled between slices of the
    /// wait, so the group never evicts it however long the control plane takes.
    fn wait_for_control(&mut self, fence: Fence, t_us: i64) -> anyhow::Result<ControlWaited> {
        let started = Instant::now();
        let bound = Duration::from_millis(self.settings.max_control_wait_ms);
        let mut paused = None;
        let mut warned = false;
        let waited = loop {
            if self.control.wait_slice(&self.source, &self.shared, t_us) {
                break ControlWaited::Covered;
            }
            if self.stopping() {
                break ControlWaited::Stopped;
            }
            if started.elapsed() >= bound {
                let covered_us = self.control.covered_us(&self.shared);
                metrics::counter!(names::CONTROL_WAIT_BOUNDED).increment(1);
                warn!(
                    behind = ?self.control.behind(&self.shared, t_us),
                    waited_ms = started.elapsed().as_millis() as u64,
                    covered_until = %DateTime::from_timestamp_micros(covered_us).unwrap_or_default(),
                    "the control plane is not read past the batch's time within --max-control-wait-ms; later traffic is written unattributed (control_plane_behind) for `botmeter reattribute`"
                );
                break ControlWaited::Bounded { covered_us };
            }
            if !warned && started.elapsed() > CONTROL_WAIT_WARN {
                warn!(
                    behind = ?self.control.behind(&self.shared, t_us),
                    "traffic waits for the control plane to be read past its time"
                );
                warned = true;
            }
            if started.elapsed() >= PAUSE_WAITING_AFTER {
                if paused.is_none() {
                    paused = Some(self.source.pause()?);
                }
                if let Some(Ok(message)) = self.source.poll(Duration::ZERO) {
                    debug!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "message while paused; it is re-read on resume"
                    );
                }
                if !self.source.holds(fence) {
                    let partitions = self.source.resume_from_stored()?;
                    info!(partitions, "partitions moved while traffic waited for the control plane; resumed from ClickHouse's positions");
                    return Ok(ControlWaited::Rebalanced);
                }
            }
        };
        if let Some(paused) = paused {
            self.source.resume(paused.except(|p| self.is_held(p)))?;
        }
        Ok(waited)
    }

    /// Resolves each event against the state as of its time (events after `covered_us`, when
    /// the wait for the control plane ran out, are left unresolved: `control_plane_behind`) and
    /// marks repeated deliveries (status `duplicate`); dead letters get a row of their own so
    /// that their positions are stored like any other.
    fn attribute(
        &mut self,
        mut events: Vec<TrafficRecord>,
        letters: &[DeadLetter],
        topic: &str,
        covered_us: Option<i64>,
    ) -> Vec<PendingUsage> {
        let now = Utc::now().timestamp() as u32;
        let topic_name: Arc<str> = Arc::from(topic);
        let mut rows = Vec::with_capacity(events.len() + letters.len());
        {
            let state = self.shared.state.read().expect("state lock");
            let repeats = &mut self.repeats;
            rows.extend(events.drain(..).map(|record| {
                let mut row = if covered_us.is_some_and(|covered| record.usage_time_us > covered) {
                    record.unresolved(UnattributedReason::ControlPlaneBehind, &topic_name, now)
                } else {
                    record.attribute(&state, &topic_name, now)
                };
                let (_, partition, offset) = row.position();
                let position = ingest::repeats::Position { partition, offset };
                if let Seen::Repeat { .. } =
                    repeats.check(row.event_id(), row.event_time_us(), position)
                {
                    row.mark_repeat();
                }
                row
            }));
        }
        self.publish_repeat_window();
        rows.extend(letters.iter().map(|letter| {
            PendingUsage::dead_letter(
                &letter.reason_kind,
                &topic_name,
                letter.partition,
                letter.offset,
                now,
            )
        }));
        rows
    }

    /// Publishes the repeat window's size and its early evictions.
    fn publish_repeat_window(&mut self) {
        metrics::gauge!(names::REPEAT_WINDOW_IDS).set(self.repeats.len() as f64);
        let evicted = self.repeats.evicted_early();
        if evicted > self.repeats_evicted_published {
            let new = evicted - self.repeats_evicted_published;
            metrics::counter!(names::REPEAT_WINDOW_EVICTED).increment(new);
            if self.repeats_evicted_published == 0 {
                warn!(
                    evicted = new,
                    "the repeat window is full (--repeat-window-max-ids): event ids are forgotten before --repeat-window-ms of event time, and a repeat of one of them would be counted"
                );
            }
            self.repeats_evicted_published = evicted;
        }
    }
}
