//! `botmeter run`: the pipeline that joins the crates. Two threads poll Kafka:
//!
//! - the **control** reader applies every control-plane event to the shared
//!   [`OwnershipState`] and writes it to the audit log (`control_events`);
//! - the **traffic** reader cuts batches, waits until the control plane has been read up to the
//!   high watermark seen *after* the batch was polled (so a credential or session published before
//!   its traffic is always known), resolves each event as of its time, and writes the batch with its
//!   Kafka positions in one insert. Only then are offsets committed to Kafka (for lag tools; the
//!   resume point is ClickHouse's).
//!
//! ClickHouse writes are retried with backoff; nothing is acknowledged before it is durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use enrich::OwnershipState;
use ingest::{DeadLetter, DeadLetterProducer, KafkaConfig};
use model::{Event, EventBody};
use query::rows::{status, AsUsageRow, ControlRow, DeadLetterRow, StrList, UsageRow};
use query::Writer;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{debug, error, info, warn};

use crate::usage::{PendingUsage, TrafficRecord};

/// While messages keep coming, the traffic loop reads the clock once per this many.
const CLOCK_EVERY: u32 = 64;

/// Largest traffic batch by default, in messages: one insert each. Larger batches mean fewer,
/// larger parts for ClickHouse to create and merge (its cost per row falls) and fewer per-batch
/// costs here; 20k → 50k took the pipeline from ~185k to ~250k–275k events/s on the bench box
/// with peak RSS still under 280 MB (BENCHMARKS.md). A batch is cut earlier by
/// `batch_max_wait_ms`, so a slow stream does not wait for it to fill.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 50_000;

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
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            batch_max_rows: DEFAULT_BATCH_MAX_ROWS,
            batch_max_wait_ms: 250,
            max_backoff_ms: 10_000,
            control_lateness_ms: 1_000,
            eviction_grace_ms: 3_600_000,
        }
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
}

/// How far the control reader got, per control partition: the next offset to read and the
/// latest event time applied (microseconds).
#[derive(Debug, Default)]
pub(crate) struct ControlWatermark {
    next: HashMap<i32, i64>,
    max_time_us: HashMap<i32, i64>,
}

impl ControlWatermark {
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

#[derive(Debug, Default)]
struct ControlProgress {
    watermark: Mutex<ControlWatermark>,
    changed: Condvar,
}

/// Runs until `stop` is set, then flushes and returns.
pub fn run(
    kafka: KafkaConfig,
    writer: Writer,
    settings: RunSettings,
    stop: Arc<AtomicBool>,
    stats: Arc<RunStats>,
) -> anyhow::Result<()> {
    let handle = Handle::current();
    let dead_letters = Arc::new(DeadLetterProducer::new(&kafka)?);

    // The state is rebuilt from the audit log in ClickHouse, not by replaying the topic; the
    // control reader resumes after the stored positions.
    let stored_control = retry_blocking(&handle, &stop, "read control positions", || {
        writer.positions(&kafka.control_topic)
    })?
    .unwrap_or_default();
    let history = retry_blocking(&handle, &stop, "read the control-event history", || {
        writer.control_history(&kafka.control_topic)
    })?
    .unwrap_or_default();
    let (state, watermark) = rebuild_state(&history);
    info!(events = history.len(), stats = ?state.stats(), "ownership state rebuilt from ClickHouse");
    drop(history);
    let state = Arc::new(RwLock::new(state));
    let progress = Arc::new(ControlProgress {
        watermark: Mutex::new(watermark),
        changed: Condvar::new(),
    });
    let start: HashMap<i32, i64> = stored_control
        .iter()
        .map(|(&partition, &last)| (partition, (last + 1 - kafka.resume_rewind_messages).max(0)))
        .collect();
    let (control_consumer, control_partitions) = ingest::control_consumer(&kafka, &start)?;
    info!(partitions = ?control_partitions, stored = ?stored_control, "control reader assigned");

    let shared = Shared {
        state,
        progress,
        writer: writer.clone(),
        dead_letters,
        stop: stop.clone(),
        stats: stats.clone(),
        handle: handle.clone(),
    };
    let control_thread = {
        let (shared, topic) = (shared.clone(), kafka.control_topic.clone());
        let max_backoff = Duration::from_millis(settings.max_backoff_ms);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                control_loop(ControlLoop {
                    consumer: control_consumer,
                    topic,
                    stored: stored_control,
                    shared,
                    max_backoff,
                })
            })?
    };

    let positions: ingest::PositionsFn = {
        let (writer, handle, stop) = (writer.clone(), handle.clone(), stop.clone());
        Arc::new(move |topic: &str| {
            retry_blocking(&handle, &stop, "read traffic positions", || {
                writer.positions(topic)
            })
            .ok()
            .flatten()
            .unwrap_or_default()
        })
    };
    let traffic_consumer = ingest::traffic_consumer(&kafka, positions)?;
    stats.started.store(true, Ordering::SeqCst);
    let result = traffic_loop(TrafficLoop {
        consumer: traffic_consumer,
        control_topic: kafka.control_topic.clone(),
        control_partitions,
        shared,
        settings,
    });
    stop.store(true, Ordering::SeqCst);
    let control_result = control_thread
        .join()
        .map_err(|_| anyhow::anyhow!("control reader panicked"))?;
    result.and(control_result)
}

/// Rebuilds the ownership state from the audit log, in the order the events were consumed, and
/// the latest event time per control partition.
pub(crate) fn rebuild_state(history: &[ControlRow]) -> (OwnershipState, ControlWatermark) {
    let mut state = OwnershipState::new();
    let mut watermark = ControlWatermark::default();
    for row in history {
        match query::rows::decode_control_row(row) {
            Ok(event) => {
                state.apply(&event);
                let max = watermark
                    .max_time_us
                    .entry(row.kafka_partition)
                    .or_insert(row.event_time_us);
                *max = (*max).max(row.event_time_us);
            }
            Err(e) => {
                warn!(event_id = %row.event_id, error = %e, "stored control event no longer decodes; skipped")
            }
        }
    }
    (state, watermark)
}

/// What both readers share.
#[derive(Clone)]
struct Shared {
    state: Arc<RwLock<OwnershipState>>,
    progress: Arc<ControlProgress>,
    writer: Writer,
    dead_letters: Arc<DeadLetterProducer>,
    stop: Arc<AtomicBool>,
    stats: Arc<RunStats>,
    handle: Handle,
}

struct ControlLoop {
    consumer: BaseConsumer,
    topic: String,
    stored: HashMap<i32, i64>,
    shared: Shared,
    max_backoff: Duration,
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

fn control_loop(ctx: ControlLoop) -> anyhow::Result<()> {
    // Highest offset applied per partition: starts at what the audit log holds.
    let mut seen = ctx.stored.clone();
    while !ctx.shared.stop.load(Ordering::SeqCst) {
        let mut max_time: HashMap<i32, i64> = HashMap::new();
        let mut rows = Vec::new();
        let mut letters = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(100);
        while rows.len() + letters.len() < 5_000 {
            let timeout = deadline.saturating_duration_since(Instant::now());
            let Some(message) = ctx.consumer.poll(timeout) else {
                break;
            };
            let message = message.with_context(|| format!("poll {}", ctx.topic))?;
            let (partition, offset) = (message.partition(), message.offset());
            if seen.get(&partition).is_some_and(|&last| offset <= last) {
                continue; // in the audit log and the rebuilt state already (resume rewind), or redelivered
            }
            seen.insert(partition, offset);
            ctx.shared.stats.control_in.fetch_add(1, Ordering::Relaxed);
            match decode(&message) {
                Ok(event) if event.kind().is_traffic() => {
                    letters.push(wrong_topic(
                        &message,
                        &event,
                        "a traffic event on the control topic",
                    ));
                }
                Ok(event) => {
                    metrics::counter!(crate::ops::names::EVENTS, "topic" => "control", "kind" => control_kind(&event)).increment(1);
                    let anomalies = apply_control(&ctx.shared.state, &event, &ctx.shared.stats);
                    rows.push(control_row(&event, &message, anomalies));
                    let time = event.event_timestamp.timestamp_micros();
                    let max = max_time.entry(partition).or_insert(time);
                    *max = (*max).max(time);
                }
                Err(letter) => letters.push(letter),
            }
        }
        if !letters.is_empty() {
            publish_dead_letters(&ctx.shared.dead_letters, &letters)?;
            let dead_rows = dead_letter_rows(&letters);
            let written = retry_blocking_with(
                &ctx.shared.handle,
                &ctx.shared.stop,
                "write dead letters",
                ctx.max_backoff,
                &ctx.shared.stats,
                || ctx.shared.writer.insert_dead_letters(&dead_rows),
            )?;
            if written.is_none() {
                break;
            }
            ctx.shared
                .stats
                .dead_letters
                .fetch_add(letters.len() as u64, Ordering::Relaxed);
        }
        for run in contiguous_runs(rows, |row| {
            (row.kafka_partition, row.kafka_offset, row.event_time)
        }) {
            let written = retry_blocking_with(
                &ctx.shared.handle,
                &ctx.shared.stop,
                "write control events",
                ctx.max_backoff,
                &ctx.shared.stats,
                || ctx.shared.writer.insert_control(&run),
            )?;
            if written.is_none() {
                return Ok(()); // stopping before the write landed: it is re-read on the next start
            }
        }
        // The application position is one past the last message poll returned, for every
        // partition (whether or not it had messages): that is how far the state is applied.
        if let Ok(assignment) = ctx.consumer.position() {
            let mut watermark = ctx.shared.progress.watermark.lock().expect("progress lock");
            for element in assignment.elements_for_topic(&ctx.topic) {
                if let Offset::Offset(offset) = element.offset() {
                    watermark.next.insert(element.partition(), offset);
                }
            }
            for (partition, time) in max_time {
                let max = watermark.max_time_us.entry(partition).or_insert(time);
                *max = (*max).max(time);
            }
            ctx.shared.progress.changed.notify_all();
        }
    }
    Ok(())
}

struct TrafficLoop {
    consumer: BaseConsumer<ingest::TrafficContext>,
    control_topic: String,
    control_partitions: Vec<i32>,
    shared: Shared,
    settings: RunSettings,
}

/// Publishes `botmeter_consumer_lag{partition}`: messages between each assigned partition's
/// position and its end (the broker's high watermark; approximate on tansu, whose high watermark
/// is the start of the last record batch).
fn record_lag(consumer: &BaseConsumer<ingest::TrafficContext>) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for element in positions.elements() {
        let Offset::Offset(position) = element.offset() else {
            continue;
        };
        if let Ok((_, high)) = consumer.fetch_watermarks(
            element.topic(),
            element.partition(),
            Duration::from_millis(500),
        ) {
            metrics::gauge!(crate::ops::names::LAG, "partition" => element.partition().to_string())
                .set((high - position).max(0) as f64);
        }
    }
}

fn traffic_loop(ctx: TrafficLoop) -> anyhow::Result<()> {
    let mut last_eviction = Instant::now();
    let mut last_lag = Instant::now();
    // At most one batch's insert runs while the next batch is polled, decoded and attributed, so
    // ClickHouse's work overlaps the pipeline's (two cores, two halves of the work).
    let mut in_flight: Option<InFlight> = None;
    let mut control_ends: Option<ControlEnds> = None;
    while !ctx.shared.stop.load(Ordering::SeqCst) {
        let mut generation = ctx.consumer.context().generation();
        let mut events: Vec<TrafficRecord> = Vec::with_capacity(ctx.settings.batch_max_rows);
        let mut letters = Vec::new();
        let mut topic = String::new();
        let mut commit: HashMap<i32, i64> = HashMap::new();
        let collect_started = Instant::now();
        let deadline = collect_started + Duration::from_millis(ctx.settings.batch_max_wait_ms);
        // The clock is read once per CLOCK_EVERY messages while messages are waiting (a poll that
        // returns at once needs no timeout), and on every poll that came back empty.
        let mut timeout = deadline.saturating_duration_since(collect_started);
        let mut since_clock = 0;
        while events.len() + letters.len() < ctx.settings.batch_max_rows
            && !ctx.shared.stop.load(Ordering::SeqCst)
        {
            since_clock += 1;
            if since_clock >= CLOCK_EVERY {
                since_clock = 0;
                timeout = deadline.saturating_duration_since(Instant::now());
            }
            if timeout.is_zero() && (events.len() + letters.len()) > 0 {
                break;
            }
            // A zero-timeout poll first: while messages are waiting it returns one without
            // librdkafka reading the clock for a deadline.
            let polled = match ctx.consumer.poll(Duration::ZERO) {
                Some(message) => Some(message),
                None => ctx.consumer.poll(timeout.max(Duration::from_millis(1))),
            };
            let Some(message) = polled else {
                timeout = deadline.saturating_duration_since(Instant::now());
                since_clock = 0;
                if timeout.is_zero() {
                    break;
                }
                continue;
            };
            let message = message.context("poll the traffic topic")?;
            let now_generation = ctx.consumer.context().generation();
            if now_generation != generation {
                // A rebalance ran inside this poll. Messages collected before it may belong to
                // partitions now elsewhere; the new assignment re-reads from ClickHouse's
                // positions, so they are dropped here, not lost.
                if !events.is_empty() || !letters.is_empty() {
                    info!(
                        dropped = events.len() + letters.len(),
                        "batch dropped after a rebalance"
                    );
                }
                events.clear();
                letters.clear();
                commit.clear();
                generation = now_generation;
            }
            if ctx
                .consumer
                .context()
                .already_stored(message.partition(), message.offset())
            {
                continue; // re-read by the resume rewind, or redelivered: already handled
            }
            // tansu may deliver offsets again after a seek into a record batch: remember the
            // highest offset handed to a batch so a repeat is never written twice. (A dropped
            // batch is re-read after the rebalance, which resets this from ClickHouse.)
            ctx.consumer
                .context()
                .mark_stored(message.partition(), message.offset());
            if topic.is_empty() {
                topic = message.topic().to_owned();
            }
            commit.insert(message.partition(), message.offset() + 1);
            match decode_traffic(&message) {
                Ok(record) => events.push(record),
                Err(letter) => letters.push(letter),
            }
        }
        if events.is_empty() && letters.is_empty() {
            // Idle: nothing to overlap the insert in flight with, so finish it now.
            if let Some(previous) = in_flight.take() {
                if let Written::Stopped = finish_batch(&ctx, previous, &mut last_eviction)? {
                    return Ok(());
                }
            }
            continue;
        }
        if ctx.consumer.context().generation() != generation {
            // A rebalance ran in the last (empty) poll: same as above.
            info!(
                dropped = events.len() + letters.len(),
                "batch dropped after a rebalance"
            );
            continue;
        }
        let t_max = events
            .iter()
            .map(|record| record.usage_time_us)
            .max()
            .unwrap_or(i64::MIN);
        let t_min = events.iter().map(|record| record.usage_time_us).min();
        let control_started = Instant::now();
        if !wait_for_control(&ctx, t_max, &mut control_ends) {
            break; // stopping: the batch was not written and will be re-read
        }
        let attribute_started = Instant::now();
        let now = Utc::now().timestamp() as u32;
        let topic_name: Arc<str> = Arc::from(topic.as_str());
        let event_count = events.len();
        let mut rows = Vec::with_capacity(events.len() + letters.len());
        {
            let state = ctx.shared.state.read().expect("state lock");
            rows.extend(
                events
                    .drain(..)
                    .map(|record| record.attribute(&state, &topic_name, now)),
            );
        }
        rows.extend(letters.iter().map(|letter| {
            PendingUsage::dead_letter(
                &letter.reason_kind,
                &topic_name,
                letter.partition,
                letter.offset,
                now,
            )
        }));
        let summary = summarize(&rows);
        if !letters.is_empty() {
            publish_dead_letters(&ctx.shared.dead_letters, &letters)?;
            let dead_rows = dead_letter_rows(&letters);
            match write_holding(
                &ctx,
                generation,
                std::slice::from_ref(&dead_rows),
                None,
                None,
                |rows| ctx.shared.writer.insert_dead_letters(rows),
            )? {
                Written::All => {}
                Written::Stopped => break,
                Written::Rebalanced => continue,
            }
        }
        let batch = Batch {
            generation,
            events: event_count,
            letters: letters.len(),
            attributed: summary.attributed,
            unattributed: summary.unattributed,
            summary,
            t_min: t_min.and_then(DateTime::from_timestamp_micros),
            topic,
            commit,
            started: Instant::now(),
        };
        drop(events);
        let finish_started = Instant::now();
        // Where a batch's time goes (debug level): polling and decoding, waiting for the control
        // plane, attributing, waiting for the previous batch's insert.
        let timings = BatchTimings {
            collect: control_started - collect_started,
            control_wait: attribute_started - control_started,
            attribute: finish_started - attribute_started,
        };
        // The previous batch's insert ran while this one was polled, decoded and attributed:
        // it must be durable before this one is written (positions only grow).
        if let Some(previous) = in_flight.take() {
            match finish_batch(&ctx, previous, &mut last_eviction)? {
                Written::All => {}
                Written::Stopped => return Ok(()),
                // The partitions moved: what this batch holds from before the move was dropped
                // above (generation check); the new assignment re-reads from ClickHouse.
                Written::Rebalanced => {
                    info!("batch partly written when its partitions moved; the new owner resumes from ClickHouse");
                    if ctx.consumer.context().generation() != batch.generation {
                        continue;
                    }
                }
            }
        }
        debug!(
            rows = batch.events + batch.letters,
            collect_ms = timings.collect.as_millis() as u64,
            control_wait_ms = timings.control_wait.as_millis() as u64,
            attribute_ms = timings.attribute.as_millis() as u64,
            previous_insert_wait_ms = finish_started.elapsed().as_millis() as u64,
            "traffic batch attributed"
        );
        let runs = contiguous_runs(rows, |row| {
            let (_, partition, offset) = row.position();
            (partition, offset, row.event_time())
        });
        in_flight = Some(start_batch(&ctx, batch, runs));
        if last_lag.elapsed() >= Duration::from_secs(5) {
            record_lag(&ctx.consumer);
            last_lag = Instant::now();
        }
    }
    // Stopping: the batch in flight is finished (or, if a second signal came, re-read next time).
    if let Some(previous) = in_flight.take() {
        finish_batch(&ctx, previous, &mut last_eviction)?;
    }
    Ok(())
}

/// How long the phases of a batch took on the traffic thread.
struct BatchTimings {
    collect: Duration,
    control_wait: Duration,
    attribute: Duration,
}

/// What a batch's bookkeeping needs once its insert is durable.
struct Batch {
    generation: u64,
    summary: BatchSummary,
    events: usize,
    letters: usize,
    attributed: u64,
    unattributed: u64,
    /// The earliest usage time: a safe "now" for eviction (a backlog still needs what ended
    /// long ago, so eviction goes by traffic time, not the wall clock).
    t_min: Option<DateTime<Utc>>,
    topic: String,
    commit: HashMap<i32, i64>,
    started: Instant,
}

/// A batch whose usage insert runs in the background.
struct InFlight {
    batch: Batch,
    /// The runs (see [`contiguous_runs`]), how many of them are durable, and the error that
    /// stopped the next one, if any.
    task: tokio::task::JoinHandle<(Vec<Vec<PendingUsage>>, usize, Option<query::Error>)>,
}

fn usage_position(row: &PendingUsage) -> (&str, i32, i64) {
    row.position()
}

/// Starts inserting a batch's runs, in order, on the runtime. The consumer's context knows an
/// insert is running until it ends (a rebalance waits for it; see `ingest::WriteInFlight`).
fn start_batch(ctx: &TrafficLoop, batch: Batch, runs: Vec<Vec<PendingUsage>>) -> InFlight {
    let guard = ctx.consumer.context().write_started();
    let writer = ctx.shared.writer.clone();
    let task = ctx.shared.handle.spawn(async move {
        let _guard = guard;
        for (index, run) in runs.iter().enumerate() {
            if let Err(e) = writer.insert_usage(run).await {
                return (runs, index, Some(e));
            }
        }
        let done = runs.len();
        (runs, done, None)
    });
    InFlight { batch, task }
}

/// Waits for a batch's insert; if it failed, holds the partitions and retries the rest (see
/// [`write_holding`]). Then does the batch's bookkeeping: metrics, counters, eviction and the
/// informative Kafka commit.
fn finish_batch(
    ctx: &TrafficLoop,
    in_flight: InFlight,
    last_eviction: &mut Instant,
) -> anyhow::Result<Written> {
    let InFlight { batch, task } = in_flight;
    let (runs, done, error) = ctx
        .shared
        .handle
        .block_on(task)
        .context("the insert task panicked")?;
    if let Some(error) = error {
        match write_holding(
            ctx,
            batch.generation,
            &runs[done..],
            Some(&RowKeys {
                position: &usage_position,
                time: &PendingUsage::event_time,
            }),
            Some(error),
            |rows| ctx.shared.writer.insert_usage(rows),
        )? {
            Written::All => {}
            other => return Ok(other),
        }
    }
    metrics::histogram!(crate::ops::names::BATCH_SECONDS)
        .record(batch.started.elapsed().as_secs_f64());
    metrics::histogram!(crate::ops::names::BATCH_ROWS)
        .record((batch.events + batch.letters) as f64);
    record_traffic_metrics(&batch.summary);
    let stats = &ctx.shared.stats;
    stats
        .traffic_in
        .fetch_add((batch.events + batch.letters) as u64, Ordering::Relaxed);
    stats
        .attributed
        .fetch_add(batch.attributed, Ordering::Relaxed);
    stats
        .unattributed
        .fetch_add(batch.unattributed, Ordering::Relaxed);
    stats
        .dead_letters
        .fetch_add(batch.letters as u64, Ordering::Relaxed);
    debug!(
        rows = batch.events + batch.letters,
        inserts = runs.len(),
        "traffic batch written"
    );
    if last_eviction.elapsed() >= Duration::from_secs(60) {
        if let Some(t_min) = batch.t_min {
            let grace = Duration::from_millis(ctx.settings.eviction_grace_ms);
            let mut state = ctx.shared.state.write().expect("state lock");
            let evicted = state.evict_ended(t_min, grace);
            let state_stats = state.stats();
            drop(state);
            metrics::counter!(crate::ops::names::EVICTED).increment(evicted.total() as u64);
            metrics::gauge!(crate::ops::names::STATE_ENTRIES, "kind" => "sessions")
                .set(state_stats.sessions as f64);
            metrics::gauge!(crate::ops::names::STATE_ENTRIES, "kind" => "endpoints")
                .set(state_stats.endpoints as f64);
            debug!(
                evicted = evicted.total(),
                "ended sessions and endpoints evicted"
            );
        }
        *last_eviction = Instant::now();
    }
    // Informative only (lag tools): the resume point is what ClickHouse holds.
    let mut tpl = TopicPartitionList::new();
    for (partition, next) in batch.commit {
        let _ = tpl.add_partition_offset(&batch.topic, partition, Offset::Offset(next));
    }
    if let Err(e) = ctx.consumer.commit(&tpl, CommitMode::Async) {
        debug!(error = %e, "offset commit failed (informative only)");
    }
    Ok(Written::All)
}

/// How a batch's writes ended.
enum Written {
    /// Every insert is durable.
    All,
    /// Stopping before everything was written; the rest is re-read on the next start.
    Stopped,
    /// The partitions moved while ClickHouse was down; the new owner resumes from ClickHouse.
    Rebalanced,
}

/// Splits rows into the inserts that keep the stored positions exact. An insert is atomic when
/// its rows fall in one table partition (one month of `event_time`), so a batch within one month
/// — nearly every batch — is one insert of all its rows, sorted by (Kafka partition, offset).
/// A batch across months is split per Kafka partition, in offset order, into maximal runs within
/// one month; runs are written in order, so a crash between two of them leaves every stored offset
/// of a partition below its stored maximum durable: no gap to skip on resume.
pub(crate) fn contiguous_runs<R>(
    mut rows: Vec<R>,
    key: impl Fn(&R) -> (i32, i64, u32),
) -> Vec<Vec<R>> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let first_month = month_of(key(first).2);
    if rows.iter().all(|row| month_of(key(row).2) == first_month) {
        rows.sort_by_key(|row| {
            let (partition, offset, _) = key(row);
            (partition, offset)
        });
        return vec![rows];
    }
    let mut by_partition: std::collections::BTreeMap<i32, Vec<R>> =
        std::collections::BTreeMap::new();
    for row in rows {
        by_partition.entry(key(&row).0).or_default().push(row);
    }
    let mut runs = Vec::new();
    for (_, mut rows) in by_partition {
        rows.sort_by_key(|row| key(row).1);
        let mut run: Vec<R> = Vec::new();
        let mut month = None;
        for row in rows {
            let row_month = month_of(key(&row).2);
            if month.is_some_and(|m| m != row_month) {
                runs.push(std::mem::take(&mut run));
            }
            month = Some(row_month);
            run.push(row);
        }
        if !run.is_empty() {
            runs.push(run);
        }
    }
    runs
}

/// `YYYYMM` (UTC) of a Unix time: the tables' partition key.
pub(crate) fn month_of(unix_seconds: u32) -> u32 {
    use chrono::Datelike as _;
    let t = DateTime::from_timestamp(i64::from(unix_seconds), 0).unwrap_or_default();
    t.year().unsigned_abs() * 100 + t.month()
}

/// Writes `runs` in order, retrying each with backoff while ClickHouse fails. Meanwhile the
/// traffic partitions are paused and the consumer keeps polling, so it stays in its group and
/// fetches nothing (memory stays bounded by the batch); when the writes land it resumes each
/// partition right after what is durable. If a rebalance moves the partitions during the outage,
/// the batch is abandoned.
/// `keys`, when given, name a row's (topic, partition, offset) and time: before retrying a failed
/// insert, the rows ClickHouse already holds are dropped from it, in case the failure came after
/// the insert landed (a lost response), and once everything is written the rollups are compared
/// with the raw rows over the days those rows touched (see [`verify_rollups`]). Without it the rows
/// must be idempotent (dead letters).
/// `failed` is the error of a first attempt at `runs[0]` made elsewhere (the background insert):
/// the retry starts at once, dropping what landed.
fn write_holding<'a, R, F, Fut>(
    ctx: &TrafficLoop,
    generation: u64,
    runs: &'a [Vec<R>],
    keys: Option<&RowKeys<'_, R>>,
    mut failed: Option<query::Error>,
    insert: F,
) -> anyhow::Result<Written>
where
    F: Fn(&'a [R]) -> Fut,
    Fut: std::future::Future<Output = query::Result<()>>,
{
    let max_backoff = Duration::from_millis(ctx.settings.max_backoff_ms);
    let mut paused: Option<TopicPartitionList> = None;
    let mut backoff = Duration::from_millis(100);
    // The time range (Unix seconds) of runs that had landed before their insert failed.
    let mut landed: Option<(u32, u32)> = None;
    let mut queue: std::collections::VecDeque<&'a [R]> = runs
        .iter()
        .filter(|run| !run.is_empty())
        .map(Vec::as_slice)
        .collect();
    while let Some(run) = queue.pop_front() {
        loop {
            let error = match failed.take() {
                Some(e) => e,
                None => match ctx.shared.handle.block_on(insert(run)) {
                    Ok(()) => break,
                    Err(e) => e,
                },
            };
            ctx.shared
                .stats
                .write_errors
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::ops::names::CLICKHOUSE_ERRORS).increment(1);
            if ctx.consumer.context().generation() != generation {
                // The partitions moved since the batch was polled (the background insert failed
                // before a rebalance): the new assignment resumes from ClickHouse without it.
                return Ok(Written::Rebalanced);
            }
            ctx.shared.stats.degraded.store(true, Ordering::SeqCst);
            warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "clickhouse write failed; partitions paused, retrying");
            if paused.is_none() {
                let assignment = ctx.consumer.assignment().context("read the assignment")?;
                ctx.consumer
                    .pause(&assignment)
                    .context("pause the traffic partitions")?;
                paused = Some(assignment);
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if ctx.shared.stop.load(Ordering::SeqCst) {
                    return Ok(Written::Stopped);
                }
                // Paused: serves heartbeats and rebalances, returns no messages of ours.
                if let Some(Ok(message)) = ctx.consumer.poll(Duration::from_millis(100)) {
                    debug!(
                        partition = message.partition(),
                        offset = message.offset(),
                        "message while paused; it is re-read on resume"
                    );
                }
            }
            if ctx.consumer.context().generation() != generation {
                // A rebalance ran in a paused poll. An application pause survives a new
                // assignment, and a partition assigned in it was not paused, so messages of it may
                // have been polled and dropped above: resume the whole assignment and start every
                // partition again from what ClickHouse holds.
                let partitions = ctx
                    .consumer
                    .context()
                    .resume_from_stored(&ctx.consumer)
                    .context("resume the traffic partitions from ClickHouse's positions")?;
                info!(
                    partitions,
                    "traffic partitions resumed from ClickHouse's positions after a rebalance"
                );
                ctx.shared.stats.degraded.store(false, Ordering::SeqCst);
                return Ok(Written::Rebalanced);
            }
            if let (Some(keys), Some(first)) = (keys, run.first()) {
                let position = keys.position;
                let (topic, _, _) = position(first);
                if let Ok(stored) = ctx
                    .shared
                    .handle
                    .block_on(ctx.shared.writer.positions(topic))
                {
                    let pending = not_stored(run, position, &stored);
                    let pending_rows: usize = pending.iter().map(|part| part.len()).sum();
                    if pending_rows < run.len() {
                        // ClickHouse 18.16 stores an insert's part before its views' parts: when
                        // the error came from a view, the rollups lack these rows.
                        warn!(
                            rows = run.len() - pending_rows,
                            "part of a failed insert had landed; not written again (the rollups are checked once writes recover)"
                        );
                        for row in run {
                            let t = (keys.time)(row);
                            landed = Some(landed.map_or((t, t), |(a, b)| (a.min(t), b.max(t))));
                        }
                        // Each remaining part is one Kafka partition's rows after its stored
                        // position, in offset order: written one insert each, in order.
                        for part in pending.into_iter().rev() {
                            queue.push_front(part);
                        }
                        break;
                    }
                }
            }
            backoff = (backoff * 2).min(max_backoff);
        }
    }
    if let Some(assignment) = paused {
        resume_after_pause(ctx, &assignment)?;
        ctx.shared.stats.degraded.store(false, Ordering::SeqCst);
        info!("clickhouse writes recovered; partitions resumed");
    }
    if let Some((first, last)) = landed {
        verify_rollups(ctx, first, last);
    }
    Ok(Written::All)
}

/// How [`write_holding`] reads a row's Kafka position and time.
struct RowKeys<'f, R> {
    /// (topic, partition, offset).
    position: &'f dyn Fn(&R) -> (&str, i32, i64),
    /// `event_time`, Unix seconds.
    time: &'f dyn Fn(&R) -> u32,
}

/// After an insert failed but its rows had landed: ClickHouse 18.16 stores an insert's part, then
/// each materialized view's part, so a crash in between leaves the rollups short of the raw rows
/// (the rows are not written again: that would count them twice in the raw table). Compares
/// every rollup with the raw rows over the UTC days `[first, last]` touched, twice a second apart
/// (another instance's insert may be between its part and its views' parts at the first look),
/// and reports a difference that stays as an error naming the months to rebuild, and in
/// `botmeter_rollup_damage_total`. Repairing is left to `botmeter rollups rebuild`: rebuilding a
/// month other instances are writing could drop their inserts from the rollups.
fn verify_rollups(ctx: &TrafficLoop, first: u32, last: u32) {
    const DAY: u32 = 86_400;
    let from = first - first % DAY;
    let to = last.saturating_add(DAY - last % DAY);
    let mut differences = Vec::new();
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        match ctx
            .shared
            .handle
            .block_on(ctx.shared.writer.rollup_differences(from, to, 20))
        {
            Ok(found) if found.is_empty() => {
                info!(from, to, "rollups equal the raw rows after the landed insert");
                return;
            }
            Ok(found) => differences = found,
            Err(e) => {
                warn!(error = %e, from, to, "could not compare the rollups with the raw rows; run `botmeter rollups check`");
                return;
            }
        }
    }
    let months: std::collections::BTreeSet<String> = differences
        .iter()
        .filter_map(|d| DateTime::from_timestamp(i64::from(d.quarter), 0))
        .map(|t| t.format("%Y-%m").to_string())
        .collect();
    let months: Vec<String> = months.into_iter().collect();
    metrics::counter!(crate::ops::names::ROLLUP_DAMAGE).increment(1);
    error!(
        keys = differences.len(),
        tables = ?differences.iter().map(|d| d.table).collect::<std::collections::BTreeSet<_>>(),
        months = ?months,
        "a failed insert left the rollups short of the raw rows; reports read from them undercount until `botmeter rollups rebuild --month {}` is run",
        months.join(" --month ")
    );
}

/// The parts of `run` (rows sorted by Kafka partition, then offset) that ClickHouse does not hold
/// yet, given the stored position of each partition: per partition, the rows after its position
/// (a suffix of that partition's rows). One slice per partition with rows left, in run order.
fn not_stored<'a, R>(
    run: &'a [R],
    position: &dyn Fn(&R) -> (&str, i32, i64),
    stored: &HashMap<i32, i64>,
) -> Vec<&'a [R]> {
    let mut parts = Vec::new();
    let mut rest = run;
    while let Some(first) = rest.first() {
        let partition = position(first).1;
        let end = rest
            .iter()
            .position(|row| position(row).1 != partition)
            .unwrap_or(rest.len());
        let (rows, after) = rest.split_at(end);
        let durable = stored.get(&partition).map_or(0, |&last| {
            rows.partition_point(|row| position(row).2 <= last)
        });
        if durable < rows.len() {
            parts.push(&rows[durable..]);
        }
        rest = after;
    }
    parts
}

/// Resumes paused partitions from what is durable: one past the last message handed to the
/// batch, rewound and filtered like a fresh assignment (see `ingest::TrafficContext`).
fn resume_after_pause(ctx: &TrafficLoop, assignment: &TopicPartitionList) -> anyhow::Result<()> {
    let positions = ctx.consumer.position().context("read positions")?;
    ctx.consumer
        .resume(assignment)
        .context("resume the traffic partitions")?;
    for element in positions.elements() {
        if let Offset::Offset(next) = element.offset() {
            let context = ctx.consumer.context();
            context.mark_stored(element.partition(), next - 1);
            let start = ingest::start_offset(Some(next - 1), context.rewind());
            if let Err(e) = ctx.consumer.seek(
                element.topic(),
                element.partition(),
                start,
                Duration::from_secs(10),
            ) {
                warn!(partition = element.partition(), error = %e, "seek after resume failed");
            }
        }
    }
    Ok(())
}

/// Blocks until the control plane has been read past `t_us` (the latest usage time in the batch):
/// each control partition has applied an event at or after `t_us`, or it is read to the end (its
/// high watermark, fetched after the batch was polled) and `t_us` is older than the allowed
/// lateness, so a control event published a little after its traffic is still waited for.
/// Returns `false` when stopping.
///
/// The high watermarks are cached with the wall-clock time they were fetched: when that fetch
/// came after `t_us` plus the lateness, every control event allowed to matter was already
/// published then, so the cached ends are ends enough and no round trip to the broker is made
/// (a backlog of older traffic never fetches; live traffic fetches about once per batch).
fn wait_for_control(ctx: &TrafficLoop, t_us: i64, cache: &mut Option<ControlEnds>) -> bool {
    let lateness_us = i64::try_from(ctx.settings.control_lateness_ms)
        .unwrap_or(i64::MAX / 2)
        .saturating_mul(1000);
    if let Some(ends) = cache
        .as_ref()
        .filter(|ends| ends.fetched_us.saturating_sub(lateness_us) >= t_us)
    {
        let watermark = ctx.shared.progress.watermark.lock().expect("progress lock");
        if ctx
            .control_partitions
            .iter()
            .all(|&p| watermark.read_past(p, t_us, &ends.highs, true))
        {
            return true;
        }
    }
    let started = Instant::now();
    let mut warned = false;
    loop {
        let fetched_us = Utc::now().timestamp_micros();
        let highs = match ingest::high_watermarks(
            &ctx.consumer,
            &ctx.control_topic,
            &ctx.control_partitions,
        ) {
            Ok(highs) => highs,
            Err(e) => {
                warn!(error = %e, "cannot read control high watermarks; retrying");
                HashMap::new()
            }
        };
        let fetched = Instant::now();
        if highs.len() == ctx.control_partitions.len() {
            *cache = Some(ControlEnds {
                highs: highs.clone(),
                fetched_us,
            });
        }
        let mut watermark = ctx.shared.progress.watermark.lock().expect("progress lock");
        while fetched.elapsed() < Duration::from_millis(200) {
            let now_us = Utc::now().timestamp_micros();
            let behind: Vec<i32> = ctx
                .control_partitions
                .iter()
                .copied()
                .filter(|&p| {
                    !watermark.read_past(
                        p,
                        t_us,
                        &highs,
                        now_us.saturating_sub(lateness_us) >= t_us,
                    )
                })
                .collect();
            if behind.is_empty() {
                return true;
            }
            if ctx.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            if !warned && started.elapsed() > Duration::from_secs(5) {
                warn!(
                    ?behind,
                    "traffic waits for the control plane to be read past its time"
                );
                warned = true;
            }
            watermark = ctx
                .shared
                .progress
                .changed
                .wait_timeout(watermark, Duration::from_millis(20))
                .expect("progress lock")
                .0;
        }
    }
}

/// The control topic's high watermarks, and when (wall clock, µs) they were fetched.
pub(crate) struct ControlEnds {
    highs: HashMap<i32, i64>,
    fetched_us: i64,
}

/// Largest payload decoded; larger messages are dead-lettered unread (a poison pill must not
/// stall or bloat the pipeline).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

fn decode(message: &BorrowedMessage<'_>) -> Result<Event, DeadLetter> {
    let payload = message.payload().unwrap_or_default();
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(DeadLetter {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            reason_kind: "oversized".into(),
            reason: format!(
                "message of {} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
                payload.len()
            ),
            payload: payload.to_vec(),
        });
    }
    if payload.is_empty() {
        return Err(DeadLetter {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            reason_kind: "empty".into(),
            reason: "message has an empty or no payload (a tombstone?)".into(),
            payload: Vec::new(),
        });
    }
    model::decode(payload).map_err(|e| DeadLetter {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        reason_kind: e.kind().to_owned(),
        reason: e.to_string(),
        payload: payload.to_vec(),
    })
}

/// Decodes a traffic message: the one-pass borrowed decoder first, the full decoder (and its
/// verdict, for a dead letter) for anything it leaves.
fn decode_traffic(message: &BorrowedMessage<'_>) -> Result<TrafficRecord, DeadLetter> {
    let payload = message.payload().unwrap_or_default();
    if payload.len() <= MAX_MESSAGE_BYTES {
        if let Some(traffic) = model::decode_traffic(payload) {
            return Ok(TrafficRecord::new(
                &traffic,
                message.partition(),
                message.offset(),
            ));
        }
    }
    let event = decode(message)?;
    match event.traffic() {
        Some(traffic) => Ok(TrafficRecord::new(
            &traffic,
            message.partition(),
            message.offset(),
        )),
        None => Err(wrong_topic(
            message,
            &event,
            "a control-plane event on the traffic topic",
        )),
    }
}

fn wrong_topic(message: &BorrowedMessage<'_>, event: &Event, what: &str) -> DeadLetter {
    DeadLetter {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        reason_kind: "wrong_topic".into(),
        reason: format!("event {} ({}): {what}", event.event_id, event.event_type),
        payload: message.payload().unwrap_or_default().to_vec(),
    }
}

fn seconds(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

/// Writes a resolution's outcome into a usage row (status, reason, flags and the chain's ids).
pub(crate) fn set_attribution(row: &mut UsageRow, resolution: &enrich::Resolution) {
    row.status = if resolution.unattributed.is_some() {
        status::UNATTRIBUTED
    } else {
        status::ATTRIBUTED
    }
    .to_owned();
    row.unattributed_reason = resolution
        .unattributed
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default();
    row.flags = resolution
        .flags
        .iter()
        .map(|f| f.as_str().to_owned())
        .collect();
    row.owner_id = resolution.owner_id.clone().unwrap_or_default();
    row.owner_kind = resolution
        .owner_kind
        .map(|k| k.as_str().to_owned())
        .unwrap_or_default();
    row.credential_id = resolution.credential_id.clone().unwrap_or_default();
    row.credential_kind = resolution
        .credential_kind
        .map(|k| k.as_str().to_owned())
        .unwrap_or_default();
    row.session_id = resolution.session_id.clone().unwrap_or_default();
    if let Some(endpoint_id) = &resolution.endpoint_id {
        row.endpoint_id.clone_from(endpoint_id);
    }
}

fn control_row(event: &Event, message: &BorrowedMessage<'_>, anomalies: Vec<String>) -> ControlRow {
    let principal = event.principal.clone().unwrap_or_default();
    let object = event.object.as_ref();
    let object_id = match &event.body {
        EventBody::AgentSession { session, .. } => session.session.id.clone(),
        _ => object
            .and_then(|o| o.get("id"))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned(),
    };
    let owner_id = match &event.body {
        EventBody::Credential { credential, .. } => credential.owner_id.clone(),
        EventBody::BotUser { bot_user, .. } => bot_user.id.clone(),
        EventBody::Endpoint { endpoint, .. } => endpoint
            .principal
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    ControlRow {
        event_id: event.event_id.clone(),
        event_type: event.event_type.clone(),
        event_time: seconds(event.event_timestamp),
        event_time_us: event.event_timestamp.timestamp_micros(),
        account_id: event.account_id.clone(),
        principal_id: principal.id,
        principal_subject: principal.subject.unwrap_or_default(),
        principal_credential_id: principal.credential.map(|c| c.id).unwrap_or_default(),
        object_id,
        owner_id,
        object: object.map(|o| o.to_string()).unwrap_or_default(),
        kafka_topic: message.topic().to_owned(),
        kafka_partition: message.partition(),
        kafka_offset: message.offset(),
        ingested_at: Utc::now().timestamp() as u32,
        anomalies,
    }
}

/// Counts of one written batch, by metric label.
#[derive(Debug, Default)]
struct BatchSummary {
    http_requests: u64,
    tcp_connections: u64,
    dead_letters: u64,
    attributed: u64,
    unattributed: u64,
    unattributed_by_reason: HashMap<String, u64>,
    flagged: HashMap<String, u64>,
}

fn summarize<R: AsUsageRow>(rows: &[R]) -> BatchSummary {
    let mut summary = BatchSummary::default();
    for row in rows {
        let row = row.usage_row();
        match (row.http_requests, row.tcp_connections) {
            (0, 0) => summary.dead_letters += 1,
            (0, _) => summary.tcp_connections += 1,
            _ => summary.http_requests += 1,
        }
        match row.status {
            status::ATTRIBUTED => summary.attributed += 1,
            status::UNATTRIBUTED => {
                summary.unattributed += 1;
                if let Some(n) = summary
                    .unattributed_by_reason
                    .get_mut(row.unattributed_reason)
                {
                    *n += 1;
                } else {
                    summary
                        .unattributed_by_reason
                        .insert(row.unattributed_reason.to_owned(), 1);
                }
            }
            _ => {}
        }
        let flags: &mut dyn Iterator<Item = &str> = match &row.flags {
            StrList::Owned(names) => &mut names.iter().map(String::as_str),
            StrList::Static(names) => &mut names.iter().copied(),
        };
        for flag in flags {
            if let Some(n) = summary.flagged.get_mut(flag) {
                *n += 1;
            } else {
                summary.flagged.insert(flag.to_owned(), 1);
            }
        }
    }
    summary
}

fn record_traffic_metrics(summary: &BatchSummary) {
    use crate::ops::names;
    for (kind, n) in [
        ("http_request", summary.http_requests),
        ("tcp_connection", summary.tcp_connections),
        ("dead_letter", summary.dead_letters),
    ] {
        if n > 0 {
            metrics::counter!(names::EVENTS, "topic" => "traffic", "kind" => kind).increment(n);
        }
    }
    for (reason, &n) in &summary.unattributed_by_reason {
        metrics::counter!(names::UNATTRIBUTED, "reason" => reason.clone()).increment(n);
    }
    for (flag, &n) in &summary.flagged {
        metrics::counter!(names::FLAGGED, "flag" => flag.clone()).increment(n);
    }
}

fn publish_dead_letters(
    producer: &DeadLetterProducer,
    letters: &[DeadLetter],
) -> anyhow::Result<()> {
    for letter in letters {
        metrics::counter!(crate::ops::names::DEAD_LETTERS, "reason" => letter.reason_kind.clone(), "topic" => letter.topic.clone()).increment(1);
        warn!(topic = %letter.topic, partition = letter.partition, offset = letter.offset, reason = %letter.reason, "dead letter");
        producer.send(letter)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

fn dead_letter_rows(letters: &[DeadLetter]) -> Vec<DeadLetterRow> {
    let now = Utc::now().timestamp() as u32;
    letters
        .iter()
        .map(|l| DeadLetterRow {
            kafka_topic: l.topic.clone(),
            kafka_partition: l.partition,
            kafka_offset: l.offset,
            reason_kind: l.reason_kind.clone(),
            reason: l.reason.clone(),
            payload_bytes: l.payload.len() as u64,
            payload: l.payload.clone(),
            received_at: now,
        })
        .collect()
}

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
        Duration::from_secs(5),
        &RunStats::default(),
        f,
    )
}

/// Runs an async ClickHouse call from a polling thread, retrying with exponential backoff until
/// it succeeds (`Some`) or `stop` is set (`None`).
fn retry_blocking_with<T, F, Fut>(
    handle: &Handle,
    stop: &AtomicBool,
    what: &str,
    max_backoff: Duration,
    stats: &RunStats,
    mut f: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = query::Result<T>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match handle.block_on(f()) {
            Ok(value) => return Ok(Some(value)),
            Err(e) => {
                stats.write_errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "failed to {what}; retrying");
                if stop.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_is_the_partition_key() {
        assert_eq!(month_of(1_767_225_600), 202601);
        assert_eq!(month_of(1_767_225_599), 202512);
    }

    #[test]
    fn a_batch_within_one_month_is_one_insert_sorted_by_partition_and_offset() {
        let jan = 1_767_225_600; // 2026-01-01T00:00:00Z
        let rows = vec![
            (1, 11, jan),
            (0, 3, jan + 5),
            (2, 1, jan),
            (1, 10, jan + 9),
            (0, 2, jan),
        ];
        let runs = contiguous_runs(rows, |r| *r);
        assert_eq!(
            runs,
            vec![vec![
                (0, 2, jan),
                (0, 3, jan + 5),
                (1, 10, jan + 9),
                (1, 11, jan),
                (2, 1, jan)
            ]]
        );
        assert!(contiguous_runs(Vec::<(i32, i64, u32)>::new(), |r| *r).is_empty());
    }

    #[test]
    fn not_stored_keeps_each_partitions_rows_after_its_position() {
        let run: Vec<(String, i32, i64)> = [(0, 1), (0, 2), (0, 3), (1, 7), (1, 8), (3, 0)]
            .iter()
            .map(|&(p, o)| ("t".to_owned(), p, o))
            .collect();
        fn position(row: &(String, i32, i64)) -> (&str, i32, i64) {
            (row.0.as_str(), row.1, row.2)
        }
        let offsets = |parts: Vec<&[(String, i32, i64)]>| -> Vec<Vec<(i32, i64)>> {
            parts
                .iter()
                .map(|part| part.iter().map(|r| (r.1, r.2)).collect())
                .collect()
        };
        // Nothing stored: the whole run, one part per partition.
        assert_eq!(
            offsets(not_stored(&run, &position, &HashMap::new())),
            vec![
                vec![(0, 1), (0, 2), (0, 3)],
                vec![(1, 7), (1, 8)],
                vec![(3, 0)]
            ]
        );
        // The insert landed (its response was lost): nothing left.
        let all = HashMap::from([(0, 3), (1, 8), (3, 0)]);
        assert!(not_stored(&run, &position, &all).is_empty());
        // Another writer got part of it: only what is after each stored position.
        let some = HashMap::from([(0, 2), (1, 9), (2, 100)]);
        assert_eq!(
            offsets(not_stored(&run, &position, &some)),
            vec![vec![(0, 3)], vec![(3, 0)]]
        );
    }

    #[test]
    fn runs_are_per_partition_in_offset_order_and_split_at_month_changes() {
        let dec = 1_767_225_599; // 2025-12-31T23:59:59Z
        let jan = 1_767_225_600; // 2026-01-01T00:00:00Z
                                 // (partition, offset, time)
        let rows = vec![
            (1, 11, jan),
            (0, 3, dec),
            (0, 1, dec),
            (1, 10, jan),
            (0, 2, jan),
            (0, 4, dec),
        ];
        let runs = contiguous_runs(rows, |r| *r);
        let offsets: Vec<Vec<(i32, i64)>> = runs
            .iter()
            .map(|run| run.iter().map(|r| (r.0, r.1)).collect())
            .collect();
        assert_eq!(
            offsets,
            vec![
                vec![(0, 1)],
                vec![(0, 2)],
                vec![(0, 3), (0, 4)],
                vec![(1, 10), (1, 11)]
            ]
        );
    }
}
