//! `botmeter run`: wires the crates into the data flow. Two threads poll Kafka:
//!
//! - the **control** reader (`control`) applies every control-plane event to the shared
//!   [`OwnershipState`] and writes it to the audit log (`control_events`);
//! - the **traffic** reader (`traffic`) collects a batch, waits until the control plane has been
//!   read past the batch's time, attributes each event as of its time, and writes the batch with
//!   its Kafka positions in one insert ([`write`]), overlapping that insert with the next batch.
//!
//! Nothing is acknowledged before it is durable: the resume point is what ClickHouse holds.

mod control;
mod held;
mod report;
#[cfg(test)]
mod tests;
mod traffic;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use enrich::OwnershipState;
use ingest::{ControlSource, DeadLetterProducer, RepeatWindow, TrafficSource, ValidKafkaConfig};
use query::rows::ControlRow;
use query::write::retry::Backoff;
use query::{Reader, Writer};
use tokio::runtime::Handle;
use tracing::{info, warn};

use self::control::{ControlLoop, ControlProgress, ControlWatermark};
use self::traffic::TrafficLoop;

/// Largest traffic batch by default, in messages: one insert each. Larger batches mean fewer,
/// larger parts for ClickHouse to create and merge (its cost per row falls) and fewer per-batch
/// costs here; 20k → 50k took the pipeline from ~185k to ~250k–275k events/s on the bench box
/// with peak RSS still under 280 MB (BENCHMARKS.md). A batch is cut earlier by
/// `batch_max_wait_ms`, so a slow stream does not wait for it to fill.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 50_000;
/// Default longest wait for a batch to fill, in milliseconds.
pub const DEFAULT_BATCH_MAX_WAIT_MS: u64 = 250;
/// Default allowed lateness of a control event behind the traffic that needs it, in milliseconds.
pub const DEFAULT_CONTROL_LATENESS_MS: u64 = 1_000;
/// Default longest traffic waits for the control plane before it is written unattributed
/// (`control_plane_behind`), in milliseconds.
pub const DEFAULT_MAX_CONTROL_WAIT_MS: u64 = 30_000;
/// Default largest clock skew of an event producer ahead of this instance, in milliseconds.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 300_000;
/// Default earliest plausible event time (RFC 3339).
pub const DEFAULT_MIN_EVENT_TIME: &str = "2000-01-01T00:00:00Z";

/// Tuning of `botmeter run`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Largest traffic batch, in messages.
    pub batch_max_rows: usize,
    /// Longest a batch waits to fill, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// Longest pause between ClickHouse retries, in milliseconds.
    pub max_backoff_ms: u64,
    /// How long after a traffic event's time a control event it depends on may still be
    /// published: once the control topic is read to its end, traffic younger than this waits.
    pub control_lateness_ms: u64,
    /// Ended sessions and endpoints are evicted from memory this long (by traffic time) after
    /// their end; later traffic on them is unattributed. Must exceed how late traffic arrives.
    pub eviction_grace_ms: u64,
    /// Longest a batch waits for the control plane; then what it still lacks is written
    /// unattributed (`control_plane_behind`), for `botmeter reattribute` to restate.
    pub max_control_wait_ms: u64,
    /// How far ahead of this instance's clock a traffic event's time may be: traffic beyond it
    /// is dead-lettered (`event_time_out_of_range`) instead of waited on. (Any control event
    /// counts for the control watermark only up to when it was read.)
    pub max_clock_skew_ms: u64,
    /// Traffic stamped before this is dead-lettered (`event_time_out_of_range`).
    pub min_event_time: DateTime<Utc>,
    /// Testing only: the control reader starts this long after the pipeline, in milliseconds.
    pub hold_control_reader_ms: u64,
    /// A traffic event whose id was already written at another position within this much event
    /// time (ms) of the newest event is a repeated delivery: status `duplicate`, counted nowhere.
    pub repeat_window_ms: u64,
    /// Most event ids the repeat window remembers (0: repeats are not looked for).
    pub repeat_window_max_ids: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_wait_ms: DEFAULT_BATCH_MAX_WAIT_MS,
            max_backoff_ms: query::write::retry::DEFAULT_MAX_BACKOFF_MS,
            control_lateness_ms: DEFAULT_CONTROL_LATENESS_MS,
            eviction_grace_ms: enrich::DEFAULT_EVICTION_GRACE_MS,
            max_control_wait_ms: DEFAULT_MAX_CONTROL_WAIT_MS,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            min_event_time: DEFAULT_MIN_EVENT_TIME
                .parse()
                .expect("the default floor is RFC 3339"),
            hold_control_reader_ms: 0,
            repeat_window_ms: ingest::repeats::DEFAULT_WINDOW_MS,
            repeat_window_max_ids: ingest::repeats::DEFAULT_MAX_IDS,
        }
    }
}

impl RunSettings {
    fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }

    /// The plausible event times of traffic polled now.
    fn event_time_window(&self) -> ingest::EventTimeWindow {
        ingest::EventTimeWindow::at(
            Utc::now(),
            Duration::from_millis(self.max_clock_skew_ms),
            self.min_event_time,
        )
    }
}

/// Counters of a run, shared with the HTTP side and the final report.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Traffic messages consumed and written (rows, dead letters included).
    pub traffic_in: AtomicU64,
    /// Control messages consumed.
    pub control_in: AtomicU64,
    /// Traffic rows attributed.
    pub attributed: AtomicU64,
    /// Traffic rows unattributed.
    pub unattributed: AtomicU64,
    /// Traffic rows that repeat an event already written (status `duplicate`).
    pub repeated: AtomicU64,
    /// Messages dead-lettered (both topics).
    pub dead_letters: AtomicU64,
    /// Credential events that tried to change an owner.
    pub owner_change_attempts: AtomicU64,
    /// Failed ClickHouse writes (each retried).
    pub write_errors: AtomicU64,
    /// ClickHouse writes are failing now: traffic partitions are paused (readiness reports it).
    pub degraded: AtomicBool,
    /// The state is rebuilt and the readers run.
    pub started: AtomicBool,
    /// This instance holds the traffic topic's partition 0 now: it is the one instance of the
    /// consumer group that evaluates alerts (crate::alerts).
    pub holds_partition_zero: Arc<AtomicBool>,
}

/// What both readers share.
#[derive(Clone)]
struct Shared {
    state: Arc<RwLock<OwnershipState>>,
    progress: Arc<ControlProgress>,
    writer: Writer,
    reader: Reader,
    dead_letters: Arc<DeadLetterProducer>,
    stop: Arc<AtomicBool>,
    stats: Arc<RunStats>,
    handle: Handle,
}

/// Runs until `stop` is set, then flushes and returns.
pub fn run(
    kafka: ValidKafkaConfig,
    writer: Writer,
    reader: Reader,
    settings: RunSettings,
    stop: Arc<AtomicBool>,
    stats: Arc<RunStats>,
) -> anyhow::Result<()> {
    let handle = Handle::current();
    let (state, watermark, stored_control) = restore(&kafka, &reader, &handle, &stop)?;
    let shared = Shared {
        state: Arc::new(RwLock::new(state)),
        progress: Arc::new(ControlProgress::new(watermark)),
        writer,
        reader,
        dead_letters: Arc::new(DeadLetterProducer::new(&kafka)?),
        stop: stop.clone(),
        stats: stats.clone(),
        handle,
    };
    let start: HashMap<i32, i64> = stored_control
        .iter()
        .map(|(&partition, &last)| (partition, (last + 1 - kafka.resume_rewind_messages).max(0)))
        .collect();
    let source = ControlSource::new(&kafka, &start)?;
    info!(partitions = ?source.partitions(), stored = ?stored_control, "control reader assigned");
    let control_partitions = source.partitions().to_vec();
    let control = ControlLoop::new(source, stored_control, shared.clone(), &settings);
    let control_thread = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || control.run())?;

    let Some(repeats) = restore_repeats(&shared, &kafka.traffic_topic, &settings)? else {
        stop.store(true, Ordering::SeqCst);
        return control_thread
            .join()
            .map_err(|_| anyhow::anyhow!("control reader panicked"))?;
    };
    let traffic = TrafficSource::with_partition_zero_flag(
        &kafka,
        positions_fn(&shared),
        stats.holds_partition_zero.clone(),
    )?;
    stats.started.store(true, Ordering::SeqCst);
    let result = TrafficLoop::new(
        traffic,
        kafka.control_topic.clone(),
        control_partitions,
        shared,
        settings,
        repeats,
    )
    .run();
    stop.store(true, Ordering::SeqCst);
    let control_result = control_thread
        .join()
        .map_err(|_| anyhow::anyhow!("control reader panicked"))?;
    result.and(control_result)
}

/// The ownership state rebuilt from the audit log in ClickHouse (not by replaying the topic),
/// the control watermark it reaches, and the stored control positions the reader resumes after.
fn restore(
    kafka: &ValidKafkaConfig,
    reader: &Reader,
    handle: &Handle,
    stop: &AtomicBool,
) -> anyhow::Result<(OwnershipState, ControlWatermark, HashMap<i32, i64>)> {
    let stored = retry_blocking(handle, stop, "read control positions", || {
        reader.positions(&kafka.control_topic)
    })?
    .unwrap_or_default();
    let history = retry_blocking(handle, stop, "read the control-event history", || {
        reader.control_history(&kafka.control_topic)
    })?
    .unwrap_or_default();
    let (state, watermark) = rebuild_state(&history);
    info!(events = history.len(), stats = ?state.stats(), "ownership state rebuilt from ClickHouse");
    Ok((state, watermark, stored))
}

/// The repeat window as the traffic written so far leaves it: the event ids written within the
/// window of the newest event time, so that a repeat arriving after a restart (or at another
/// instance after a rebalance) is still recognized. `None` when stopping meanwhile.
fn restore_repeats(
    shared: &Shared,
    traffic_topic: &str,
    settings: &RunSettings,
) -> anyhow::Result<Option<RepeatWindow>> {
    let window = Duration::from_millis(settings.repeat_window_ms);
    let mut repeats = RepeatWindow::new(window, settings.repeat_window_max_ids);
    if settings.repeat_window_max_ids == 0 {
        return Ok(Some(repeats));
    }
    let started = std::time::Instant::now();
    let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX);
    let Some(mut written) = retry_blocking(
        &shared.handle,
        &shared.stop,
        "read the event ids written lately (repeat window)",
        || {
            shared.reader.recent_events(
                traffic_topic,
                window_secs,
                settings.repeat_window_max_ids as u64,
            )
        },
    )?
    else {
        return Ok(None);
    };
    // Oldest first, as they were written.
    written.reverse();
    for event in &written {
        let position = ingest::repeats::Position {
            partition: event.partition,
            offset: event.offset,
        };
        repeats.check(&event.event_id, event.event_time_us, position);
    }
    info!(
        ids = repeats.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "repeat window rebuilt from ClickHouse"
    );
    Ok(Some(repeats))
}

/// Where each newly assigned traffic partition resumes: ClickHouse's positions, read on the
/// polling thread inside the rebalance (retried while ClickHouse is down).
fn positions_fn(shared: &Shared) -> ingest::PositionsFn {
    let (reader, handle, stop) = (
        shared.reader.clone(),
        shared.handle.clone(),
        shared.stop.clone(),
    );
    Arc::new(move |topic: &str| {
        // A rebalance callback cannot fail, and resuming without positions would re-read what is
        // durable: retried until it answers or the run stops, when nothing is written any more.
        retry_blocking_with(
            &handle,
            &stop,
            "read traffic positions",
            Backoff::forever(Duration::from_secs(5)),
            &RunStats::default(),
            || reader.positions(topic),
        )
        .ok()
        .flatten()
        .unwrap_or_default()
    })
}

/// Rebuilds the ownership state from the audit log, in the order the events were consumed, and
/// the latest event time per control partition — each event's time capped at when it was written,
/// so that one event stamped in the future does not count as the control plane being read past
/// every later time.
pub(crate) fn rebuild_state(history: &[ControlRow]) -> (OwnershipState, ControlWatermark) {
    let mut state = OwnershipState::new();
    let mut watermark = ControlWatermark::default();
    for row in history {
        match query::rows::decode_control_row(row) {
            Ok(event) => {
                state.apply(&event);
                let written_us = i64::from(row.ingested_at).saturating_mul(1_000_000);
                let time_us = row.event_time_us.min(written_us);
                watermark.applied(row.kafka_partition, time_us);
            }
            Err(e) => {
                warn!(event_id = %row.event_id, error = %e, "stored control event no longer decodes; skipped")
            }
        }
    }
    (state, watermark)
}

/// Runs an async ClickHouse read from a polling thread, retrying with backoff (capped at 5 s)
/// until it succeeds (`Some`), `stop` is set (`None`), or it fails permanently (`Err`).
fn retry_blocking<T, F, Fut>(
    handle: &Handle,
    stop: &AtomicBool,
    what: &str,
    f: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = query::Result<T>>,
{
    retry_blocking_with(
        handle,
        stop,
        what,
        Backoff::new(Duration::from_secs(5)),
        &RunStats::default(),
        f,
    )
}

/// Runs an async ClickHouse call from a polling thread, retrying with exponential backoff until
/// it succeeds (`Some`), `stop` is set (`None`), or it fails permanently (`Err`: see
/// [`query::write::retry`]).
fn retry_blocking_with<T, F, Fut>(
    handle: &Handle,
    stop: &AtomicBool,
    what: &str,
    mut backoff: Backoff,
    stats: &RunStats,
    mut f: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = query::Result<T>>,
{
    loop {
        match handle.block_on(f()) {
            Ok(value) => return Ok(Some(value)),
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                let e = backoff
                    .failed(e)
                    .map_err(|e| anyhow::Error::new(e).context(format!("failed to {what}")))?;
                let pause = backoff.next_pause();
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "failed to {what}; retrying");
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                std::thread::sleep(pause);
            }
        }
    }
}
