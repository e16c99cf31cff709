//! The control plane: the reader that applies control events to the ownership state and writes
//! them to the audit log, and the watermark traffic waits on — a traffic event at time *t* is
//! attributed only once every control partition has been read past *t* (or to its end, allowing
//! for the configured lateness), so a credential or session created just before its first use is
//! known.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use enrich::OwnershipState;
use ingest::{ControlSource, DeadLetter, TrafficSource};
use model::{Event, EventBody};
use query::rows::ControlRow;
use query::write::retry::Backoff;
use query::write::runs::contiguous_runs;
use tracing::warn;

use super::report::write_dead_letters;
use super::{retry_blocking_with, RunSettings, RunStats, Shared};

/// Most control messages written in one round.
const ROUND_MAX_MESSAGES: usize = 5_000;
/// Longest a round of the control reader polls before writing what it has.
const ROUND_MAX_WAIT: Duration = Duration::from_millis(100);

/// How far the control reader got, per control partition: the next offset to read and the
/// latest event time applied (microseconds).
#[derive(Debug, Default)]
pub(crate) struct ControlWatermark {
    next: HashMap<i32, i64>,
    max_time_us: HashMap<i32, i64>,
}

impl ControlWatermark {
    /// Records an event of `partition` at `time_us` as applied.
    pub(crate) fn applied(&mut self, partition: i32, time_us: i64) {
        let max = self.max_time_us.entry(partition).or_insert(time_us);
        *max = (*max).max(time_us);
    }

    /// Whether control partition `partition` has been read past `t_us`: it applied an event at or
    /// after `t_us`, or — when its end may count (`ends_count`: the ends were fetched late enough
    /// that no control event allowed to matter was still unpublished) — it is read to `highs`.
    fn read_past(
        &self,
        partition: i32,
        t_us: i64,
        highs: &HashMap<i32, i64>,
        ends_count: bool,
    ) -> bool {
        self.max_time_us
            .get(&partition)
            .is_some_and(|&max| max >= t_us)
            || (ends_count
                && highs
                    .get(&partition)
                    .is_some_and(|&high| self.next.get(&partition).copied().unwrap_or(0) >= high))
    }
}

/// The watermark, and a signal for traffic waiting on it.
#[derive(Debug, Default)]
pub(crate) struct ControlProgress {
    watermark: Mutex<ControlWatermark>,
    changed: Condvar,
}

impl ControlProgress {
    pub(crate) fn new(watermark: ControlWatermark) -> Self {
        Self {
            watermark: Mutex::new(watermark),
            changed: Condvar::new(),
        }
    }

    /// Publishes a round's progress: each partition's next offset and latest event time.
    fn advance(&self, next: HashMap<i32, i64>, max_time: HashMap<i32, i64>) {
        let mut watermark = self.watermark.lock().expect("progress lock");
        watermark.next.extend(next);
        for (partition, time) in max_time {
            watermark.applied(partition, time);
        }
        self.changed.notify_all();
    }
}

/// The control reader's loop.
pub(crate) struct ControlLoop {
    source: ControlSource,
    /// Highest offset applied per partition: starts at what the audit log holds.
    seen: HashMap<i32, i64>,
    shared: Shared,
    max_backoff: Duration,
    hold: Duration,
}

/// What one round of the control reader polled.
#[derive(Default)]
struct Round {
    rows: Vec<ControlRow>,
    letters: Vec<DeadLetter>,
    max_time: HashMap<i32, i64>,
}

impl ControlLoop {
    pub(crate) fn new(
        source: ControlSource,
        stored: HashMap<i32, i64>,
        shared: Shared,
        settings: &RunSettings,
    ) -> Self {
        Self {
            source,
            seen: stored,
            shared,
            max_backoff: settings.max_backoff(),
            hold: Duration::from_millis(settings.hold_control_reader_ms),
        }
    }

    /// Polls, applies and writes rounds until stopped.
    pub(crate) fn run(mut self) -> anyhow::Result<()> {
        let held_until = Instant::now() + self.hold;
        while Instant::now() < held_until && !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        while !self.shared.stop.load(Ordering::SeqCst) {
            let round = self.poll_round()?;
            if !round.letters.is_empty() {
                let written = write_dead_letters(&self.shared, &round.letters, self.max_backoff)?;
                if !written {
                    break;
                }
            }
            for run in contiguous_runs(round.rows, |row| {
                (row.kafka_partition, row.kafka_offset, row.event_time)
            }) {
                if !self.write(&run)? {
                    return Ok(()); // stopping before the write landed: re-read on the next start
                }
            }
            // How far the state is applied: one past the last message poll returned, for every
            // partition (whether or not it had messages).
            if let Some(next) = self.source.next_offsets() {
                self.shared.progress.advance(next, round.max_time);
            }
        }
        Ok(())
    }

    /// Polls up to a round's worth of messages, applying each event to the state.
    fn poll_round(&mut self) -> anyhow::Result<Round> {
        let mut round = Round::default();
        let deadline = Instant::now() + ROUND_MAX_WAIT;
        while round.rows.len() + round.letters.len() < ROUND_MAX_MESSAGES {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let Some(message) = self.source.poll(timeout) else {
                break;
            };
            let message = message.map_err(|e| {
                anyhow::Error::new(e).context(format!("poll {}", self.source.topic()))
            })?;
            let source = ingest::decode::position(&message);
            if self
                .seen
                .get(&source.partition)
                .is_some_and(|&last| source.offset <= last)
            {
                continue; // in the audit log and the rebuilt state already (resume rewind), or redelivered
            }
            self.seen.insert(source.partition, source.offset);
            self.shared.stats.control_in.fetch_add(1, Ordering::Relaxed);
            match ingest::decode_control(&message) {
                Ok(event) => {
                    metrics::counter!(crate::ops::names::EVENTS, "topic" => "control", "kind" => control_kind(&event)).increment(1);
                    let anomalies = apply_control(&self.shared.state, &event, &self.shared.stats);
                    let now = Utc::now().timestamp() as u32;
                    round
                        .rows
                        .push(ControlRow::new(&event, source, anomalies, now));
                    // A control event stamped in the future must not count as the control plane
                    // being read past every later time: its time counts up to when it was read.
                    let time = event
                        .event_timestamp
                        .timestamp_micros()
                        .min(Utc::now().timestamp_micros());
                    let max = round.max_time.entry(source.partition).or_insert(time);
                    *max = (*max).max(time);
                }
                Err(letter) => round.letters.push(letter),
            }
        }
        Ok(round)
    }

    /// Writes one run of audit-log rows; `false` when stopping before it landed.
    fn write(&self, run: &[ControlRow]) -> anyhow::Result<bool> {
        let written = retry_blocking_with(
            &self.shared.handle,
            &self.shared.stop,
            "write control events",
            Backoff::new(self.max_backoff),
            &self.shared.stats,
            || self.shared.writer.insert_control(run),
        )?;
        Ok(written.is_some())
    }
}

fn control_kind(event: &Event) -> &'static str {
    match &event.body {
        EventBody::Credential { .. } => "credential",
        EventBody::BotUser { .. } => "bot_user",
        EventBody::Endpoint { .. } => "endpoint",
        EventBody::AgentSession { .. } => "agent_session",
        EventBody::Http(_) | EventBody::Tcp(_) => "traffic",
        EventBody::Audit => "audit",
    }
}

/// Applies a control event to the state; returns its anomalies (for the audit log).
fn apply_control(state: &RwLock<OwnershipState>, event: &Event, stats: &RunStats) -> Vec<String> {
    let mut state = state.write().expect("state lock");
    let mut anomalies = Vec::new();
    if let enrich::ApplyOutcome::OwnerChangeRejected {
        credential_id,
        owner_id,
        attempted_owner_id,
    } = state.apply(event)
    {
        stats.owner_change_attempts.fetch_add(1, Ordering::Relaxed);
        warn!(event_id = %event.event_id, credential_id, owner_id, attempted_owner_id, "credential owner change ignored");
        anomalies.push("owner_change_rejected".to_owned());
    }
    // An audit event's principal must own the API key it acted with.
    if let Some(principal) = &event.principal {
        if let Some(key) = principal.credential.as_ref().filter(|k| !k.id.is_empty()) {
            if let Some((owner, _)) = state.credential_owner(&key.id) {
                if owner != principal.id {
                    warn!(event_id = %event.event_id, api_key = %key.id, owner, principal = %principal.id, "principal acted with an API key it does not own");
                    anomalies.push("api_key_owner_mismatch".to_owned());
                }
            }
        }
    }
    anomalies
}

/// The control topic's high watermarks, and when (wall clock, µs) they were fetched.
pub(crate) struct ControlEnds {
    highs: HashMap<i32, i64>,
    fetched_us: i64,
}

/// What traffic waits on: the control partitions, the allowed lateness, and the last ends
/// fetched.
pub(crate) struct ControlWait {
    topic: String,
    partitions: Vec<i32>,
    lateness_us: i64,
    cache: Option<ControlEnds>,
    /// The ends of the last fetch that answered for every partition (for [`Self::covered_us`]).
    last_highs: HashMap<i32, i64>,
}

/// How long one [`ControlWait::wait_slice`] blocks at most.
const SLICE: Duration = Duration::from_millis(200);

impl ControlWait {
    pub(crate) fn new(topic: String, partitions: Vec<i32>, lateness_ms: u64) -> Self {
        Self {
            topic,
            partitions,
            lateness_us: i64::try_from(lateness_ms)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1000),
            cache: None,
            last_highs: HashMap::new(),
        }
    }

    /// Whether the control plane has been read past `t_us` (the latest usage time in the
    /// batch), waiting up to a slice of 200 ms for it: each control partition has applied an
    /// event at or after `t_us`, or it is read to the end (its high watermark, fetched after the
    /// batch was polled) and `t_us` is older than the allowed lateness, so a control event
    /// published a little after its traffic is still waited for. The caller repeats slices,
    /// polling its consumer in between, until its bound.
    ///
    /// The high watermarks are cached with the wall-clock time they were fetched: when that
    /// fetch came after `t_us` plus the lateness, every control event allowed to matter was
    /// already published then, so the cached ends are ends enough and no round trip to the
    /// broker is made (a backlog of older traffic never fetches; live traffic fetches about once
    /// per batch).
    pub(crate) fn wait_slice(
        &mut self,
        traffic: &TrafficSource,
        shared: &Shared,
        t_us: i64,
    ) -> bool {
        if self.cached_ends_suffice(shared, t_us) {
            return true;
        }
        let fetched_us = Utc::now().timestamp_micros();
        let highs = match traffic.high_watermarks(&self.topic, &self.partitions) {
            Ok(highs) => highs,
            Err(e) => {
                warn!(error = %e, "cannot read control high watermarks; retrying");
                HashMap::new()
            }
        };
        let fetched = Instant::now();
        if highs.len() == self.partitions.len() {
            self.cache = Some(ControlEnds {
                highs: highs.clone(),
                fetched_us,
            });
            self.last_highs.clone_from(&highs);
        }
        let mut watermark = shared.progress.watermark.lock().expect("progress lock");
        while fetched.elapsed() < SLICE {
            let now_us = Utc::now().timestamp_micros();
            let ends_count = now_us.saturating_sub(self.lateness_us) >= t_us;
            if self
                .partitions
                .iter()
                .all(|&p| watermark.read_past(p, t_us, &highs, ends_count))
            {
                return true;
            }
            if shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            watermark = shared
                .progress
                .changed
                .wait_timeout(watermark, Duration::from_millis(20))
                .expect("progress lock")
                .0;
        }
        false
    }

    /// The partitions not read past `t_us` yet (for the log).
    pub(crate) fn behind(&self, shared: &Shared, t_us: i64) -> Vec<i32> {
        let watermark = shared.progress.watermark.lock().expect("progress lock");
        self.partitions
            .iter()
            .copied()
            .filter(|&p| !watermark.read_past(p, t_us, &self.last_highs, false))
            .collect()
    }

    /// The latest time the control plane is read past now: per partition, the latest event time
    /// applied, or — read to its last fetched end — now less the allowed lateness; the earliest
    /// of those over the partitions. Traffic at or before it is resolved as usual.
    pub(crate) fn covered_us(&self, shared: &Shared) -> i64 {
        let watermark = shared.progress.watermark.lock().expect("progress lock");
        let read_to_end_us = Utc::now()
            .timestamp_micros()
            .saturating_sub(self.lateness_us);
        self.partitions
            .iter()
            .map(|&p| {
                let applied = watermark.max_time_us.get(&p).copied().unwrap_or(i64::MIN);
                let at_end = self
                    .last_highs
                    .get(&p)
                    .is_some_and(|&high| watermark.next.get(&p).copied().unwrap_or(0) >= high);
                if at_end {
                    applied.max(read_to_end_us)
                } else {
                    applied
                }
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Whether the cached ends were fetched late enough for `t_us` and every partition is read
    /// past it by them.
    fn cached_ends_suffice(&self, shared: &Shared, t_us: i64) -> bool {
        let Some(ends) = self
            .cache
            .as_ref()
            .filter(|ends| ends.fetched_us.saturating_sub(self.lateness_us) >= t_us)
        else {
            return false;
        };
        let watermark = shared.progress.watermark.lock().expect("progress lock");
        self.partitions
            .iter()
            .all(|&p| watermark.read_past(p, t_us, &ends.highs, true))
    }
}
