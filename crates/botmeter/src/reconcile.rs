//! `botmeter reconcile`: checks invariant 1 (every consumed message ends in exactly one net row)
//! against the real topics, partition by partition. For the traffic and the control topic it puts
//! Kafka's side (low watermark, true end) beside botmeter's (the positions ClickHouse stores and
//! what their rows net to) and reports:
//!
//! - **duplicates**: positions whose rows net to more than one (a message counted twice);
//! - **lost**: positions stored but netting to less than one (a cancelled row without its
//!   replacement, a traffic dead letter without its usage row);
//! - **gaps**: offsets from the low watermark (or the lowest stored offset, if lower) to the highest
//!   stored offset that have no row at all (a message skipped);
//! - **expired**: messages that left Kafka (retention) before botmeter stored them;
//! - **beyond the end**: stored offsets Kafka never assigned (a recreated topic);
//! - **not consumed**: messages after the highest stored offset (lag), a mismatch only when the
//!   caller expects the pipeline to have caught up.
//!
//! It only reads: ClickHouse first, then Kafka, so a pipeline running meanwhile can only make the
//! lag look larger, never make stored offsets look past Kafka's end. Offsets are assumed
//! contiguous (no transactional producers, no compaction), which is how botmeter's topics are used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;
use query::read::{StoredPartition, TopicRole};
use query::Reader;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::cli::{ClickHouseArgs, KafkaArgs};

/// The long help of `botmeter reconcile`.
pub const LONG_ABOUT: &str = "\
Check that every Kafka message botmeter consumed ends in exactly one net row in ClickHouse.

For the traffic and the control topic, per partition, it compares Kafka's low watermark and true
end with the positions stored in ClickHouse, and prints a table: messages in Kafka, positions
stored, net rows by outcome (traffic: attributed, unattributed, dead letters, each the sum of
`sign`; control: control events, dead letters), duplicates (positions netting to more than one
row), lost (positions netting to less than one), gaps (offsets missing below the highest stored
one) and messages not consumed yet.

Columns: `kafka offsets` is low watermark..end (the end exclusive: the offset the next message
will get), `messages` how many Kafka holds, `stored` the distinct offsets ClickHouse holds rows for.

Exits 0 when everything agrees, 1 on any mismatch: duplicates, lost positions, gaps, messages that
expired from Kafka before they were stored, or stored offsets beyond Kafka's end. Lag (messages not
consumed yet) is reported but is a mismatch only with --expect-caught-up. Exits 2 when it cannot
check (ClickHouse or Kafka unreachable, a missing topic or database, bad flags).

--from/--to restrict only the outcome counts, to rows with event_time in [from, to) (dead letters,
which have no readable event time, by the time botmeter received them). The duplicate, lost and gap
checks always cover every stored position of the topics: a position has no time of its own, and a
row counted twice or lost is wrong in every window.

Read-only; safe to run beside `botmeter run` (run it after the pipeline has caught up to check
for lag). Assumes contiguous offsets: no transactional producers and no compacted topics.";

/// Flags of `botmeter reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Count outcomes only of rows with event_time at or after this instant (RFC 3339, whole
    /// seconds). Duplicate, lost and gap checks still cover every stored position.
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// Count outcomes only of rows with event_time before this instant (RFC 3339, exclusive).
    /// Duplicate, lost and gap checks still cover every stored position.
    #[arg(long)]
    pub to: Option<DateTime<Utc>>,
    /// Treat messages not consumed yet (lag) as a mismatch too: for use once the pipeline has had
    /// time to catch up (after a drain, in tests).
    #[arg(long, env = "BOTMETER_RECONCILE_EXPECT_CAUGHT_UP")]
    pub expect_caught_up: bool,
    /// How long to keep reading the last record batch of each partition after the last message
    /// arrived, to find the partition's true end (some brokers' high watermark is the start of
    /// the last batch), in milliseconds.
    #[arg(
        long,
        env = "BOTMETER_RECONCILE_TAIL_QUIET_MS",
        default_value_t = 1_000
    )]
    pub tail_quiet_ms: u64,
}

/// Kafka's side of one partition. Offsets: `low` is the first message still held (inclusive),
/// `end` the offset the next message will get (exclusive), so it holds `end - low` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaPartition {
    /// Low watermark.
    pub low: i64,
    /// True end: last offset + 1.
    pub end: i64,
}

/// What is wrong (or pending) in one partition. All counts are messages (positions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    /// Positions whose rows net to more than one.
    pub duplicates: u64,
    /// Positions stored but netting to less than one.
    pub lost: u64,
    /// Offsets without any row, from `min(low, lowest stored)` to the highest stored offset.
    pub gaps: u64,
    /// Messages after the highest stored offset that Kafka still holds.
    pub not_consumed: u64,
    /// Messages that left Kafka before botmeter stored them.
    pub expired: u64,
    /// Stored offsets at or past Kafka's end.
    pub beyond_end: u64,
    /// ClickHouse holds rows of a partition Kafka does not have.
    pub unknown_partition: bool,
}

impl Findings {
    /// Whether this partition fails the check. Lag alone fails only when `expect_caught_up`.
    pub fn is_mismatch(&self, expect_caught_up: bool) -> bool {
        self.duplicates > 0
            || self.lost > 0
            || self.gaps > 0
            || self.expired > 0
            || self.beyond_end > 0
            || self.unknown_partition
            || (expect_caught_up && self.not_consumed > 0)
    }
}

/// Compares Kafka's side of a partition with what botmeter stores for it (either may be absent).
pub fn compare(kafka: Option<KafkaPartition>, stored: Option<&StoredPartition>) -> Findings {
    let mut findings = Findings::default();
    let Some(stored) = stored else {
        if let Some(kafka) = kafka {
            // Nothing stored: what Kafka holds is lag; what it no longer holds (offsets start at 0)
            // was never counted.
            findings.not_consumed = non_negative(kafka.end - kafka.low);
            findings.expired = non_negative(kafka.low);
        }
        return findings;
    };
    findings.duplicates = stored.duplicate_positions;
    findings.lost = stored.lost_positions;
    // Stored offsets are distinct and inclusive, so `positions` of them span at least
    // `max - min + 1` offsets; the difference, plus the offsets from the low watermark to the
    // first stored one, are the gaps.
    let lowest = kafka.map_or(stored.min_offset, |k| k.low.min(stored.min_offset));
    findings.gaps =
        non_negative(stored.max_offset - lowest + 1).saturating_sub(stored.stored_positions);
    match kafka {
        None => findings.unknown_partition = true,
        Some(kafka) => {
            let next = stored.max_offset + 1;
            findings.expired = non_negative(kafka.low - next);
            findings.not_consumed = non_negative(kafka.end - next.max(kafka.low));
            findings.beyond_end = non_negative(next - kafka.end);
        }
    }
    findings
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Finds the missing ranges in an ascending stream of distinct stored offsets, starting from
/// the low watermark (or the first stored offset, if lower), the way [`compare`] counts gaps.
#[derive(Debug, Clone)]
pub struct GapFinder {
    low: Option<i64>,
    next: Option<i64>,
    limit: usize,
    ranges: Vec<(i64, i64)>,
}

impl GapFinder {
    /// Collects at most `limit` ranges; `low` is Kafka's low watermark, when Kafka has the partition.
    pub fn new(low: Option<i64>, limit: usize) -> Self {
        Self {
            low,
            next: None,
            limit,
            ranges: Vec::new(),
        }
    }

    /// Takes the next stored offset; breaks once `limit` ranges are found.
    pub fn push(&mut self, offset: i64) -> ControlFlow<()> {
        let next = *self
            .next
            .get_or_insert(self.low.map_or(offset, |low| low.min(offset)));
        if offset > next {
            self.ranges.push((next, offset - 1));
        }
        self.next = Some(next.max(offset + 1));
        if self.ranges.len() >= self.limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// The missing ranges found, inclusive on both ends, ascending.
    pub fn into_ranges(self) -> Vec<(i64, i64)> {
        self.ranges
    }
}

/// One partition's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// The partition.
    pub partition: i32,
    /// Kafka's side; `None` when Kafka does not have this partition.
    pub kafka: Option<KafkaPartition>,
    /// botmeter's side; `None` when nothing is stored.
    pub stored: Option<StoredPartition>,
    /// What [`compare`] found.
    pub findings: Findings,
    /// Some of the gaps, when there are any (inclusive ranges).
    pub gap_ranges: Vec<(i64, i64)>,
}

/// One topic's part of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    /// The topic.
    pub topic: String,
    /// Traffic or control: which tables hold its rows.
    pub role: TopicRole,
    /// Every partition Kafka or ClickHouse knows, ascending.
    pub partitions: Vec<PartitionReport>,
}

/// Joins both sides of one topic, partition by partition.
pub fn topic_report(
    topic: &str,
    role: TopicRole,
    kafka: &BTreeMap<i32, KafkaPartition>,
    stored: Vec<StoredPartition>,
) -> TopicReport {
    let mut stored: BTreeMap<i32, StoredPartition> =
        stored.into_iter().map(|s| (s.partition_id, s)).collect();
    let ids: BTreeSet<i32> = kafka.keys().chain(stored.keys()).copied().collect();
    let partitions = ids
        .into_iter()
        .map(|partition| {
            let kafka = kafka.get(&partition).copied();
            let stored = stored.remove(&partition);
            let findings = compare(kafka, stored.as_ref());
            PartitionReport {
                partition,
                kafka,
                stored,
                findings,
                gap_ranges: Vec::new(),
            }
        })
        .collect();
    TopicReport {
        topic: topic.to_owned(),
        role,
        partitions,
    }
}

/// How many gap ranges the report names per partition.
const GAP_RANGES_SHOWN: usize = 10;

/// Longest wait for a partition's last batch to start arriving.
const TAIL_FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(10);

/// Longest the tail read may take in all (a topic still being written keeps delivering).
const TAIL_MAX: Duration = Duration::from_secs(60);

/// Runs `botmeter reconcile`: prints the report; exits 1 on a mismatch and 2 when it cannot check,
/// so that a script can tell "wrong" from "unknown".
pub async fn execute(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    match check(args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn check(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let clickhouse = args.clickhouse.config()?;
    let kafka_config = args
        .kafka
        .config()
        .validate()
        .context("invalid Kafka settings")?;
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(from < to, "--from ({from}) must be before --to ({to})");
    }
    anyhow::ensure!(
        args.tail_quiet_ms > 0,
        "--tail-quiet-ms must be at least 1, got 0"
    );
    let from_secs = args.from.map_or(0, |t| t.timestamp());
    let to_secs = args.to.map_or(i64::MAX, |t| t.timestamp());
    let reader = Reader::new(&clickhouse).context("failed to build the ClickHouse client")?;
    let topics = [
        (args.kafka.traffic_topic.clone(), TopicRole::Traffic),
        (args.kafka.control_topic.clone(), TopicRole::Control),
    ];

    // ClickHouse before Kafka: rows written meanwhile then show as lag, not as offsets past the end.
    let mut stored = Vec::new();
    for (topic, role) in &topics {
        let rows = reader
            .reconcile_positions(topic, *role, from_secs, to_secs)
            .await
            .with_context(|| format!("failed to read what ClickHouse stores for topic {topic}"))?;
        stored.push(rows);
    }
    let brokers = kafka_config.brokers.clone();
    let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let quiet = Duration::from_millis(args.tail_quiet_ms);
    // rdkafka polls block: keep them off the async workers.
    let mut kafka = tokio::task::spawn_blocking(move || read_kafka(&brokers, &names, quiet))
        .await
        .context("the Kafka reader panicked")??;

    let mut reports = Vec::new();
    for ((topic, role), stored) in topics.iter().zip(stored) {
        let kafka = kafka.remove(topic).unwrap_or_default();
        let mut report = topic_report(topic, *role, &kafka, stored);
        for partition in &mut report.partitions {
            if partition.findings.gaps == 0 {
                continue;
            }
            let mut finder = GapFinder::new(partition.kafka.map(|k| k.low), GAP_RANGES_SHOWN);
            reader
                .for_each_stored_offset(topic, partition.partition, |offset| finder.push(offset))
                .await
                .with_context(|| {
                    format!(
                        "failed to read the stored offsets of {topic} partition {}",
                        partition.partition
                    )
                })?;
            partition.gap_ranges = finder.into_ranges();
        }
        reports.push(report);
    }

    let window = Window {
        from: args.from,
        to: args.to,
    };
    print!(
        "{}",
        render(
            &clickhouse.url,
            &clickhouse.database,
            &args.kafka.brokers,
            window,
            &reports,
            args.expect_caught_up
        )
    );
    let mismatch = reports
        .iter()
        .flat_map(|r| &r.partitions)
        .any(|p| p.findings.is_mismatch(args.expect_caught_up));
    Ok(if mismatch {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Low watermark and true end of every partition of `topics`.
///
/// The high watermark is not the end everywhere: tansu 0.6 reports the start of the last record
/// batch + 1. So each non-empty partition is read from `max(low, high - 1)` (the start of its last
/// batch there, the last message on Kafka) until nothing arrives for `quiet`, and the end is the
/// last offset seen + 1. Only the last batch is read. No group is joined and nothing is committed.
fn read_kafka(
    brokers: &str,
    topics: &[String],
    quiet: Duration,
) -> anyhow::Result<BTreeMap<String, BTreeMap<i32, KafkaPartition>>> {
    let consumer: BaseConsumer = ingest::client::reader_config(brokers)
        // Required by librdkafka even for assign(); never joined, nothing committed.
        .set("group.id", "botmeter-reconcile")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("failed to create the Kafka consumer")?;
    let mut out: BTreeMap<String, BTreeMap<i32, KafkaPartition>> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut pending = BTreeSet::new();
    for topic in topics {
        let partitions = ingest::partitions_of(&consumer, topic)
            .with_context(|| format!("failed to list the partitions of {topic}"))?;
        let sides = out.entry(topic.clone()).or_default();
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .with_context(|| {
                    format!("failed to read the watermarks of {topic} partition {partition}")
                })?;
            debug!(topic, partition, low, high, "watermarks");
            sides.insert(
                partition,
                KafkaPartition {
                    low,
                    end: high.max(low),
                },
            );
            if high > low {
                tpl.add_partition_offset(topic, partition, Offset::Offset((high - 1).max(low)))
                    .with_context(|| format!("failed to position {topic} partition {partition}"))?;
                pending.insert((topic.clone(), partition));
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .context("failed to assign the partitions' tails")?;
    let started = Instant::now();
    let mut last_arrival = started;
    loop {
        let waited = last_arrival.elapsed();
        if (pending.is_empty() && waited >= quiet)
            || waited >= TAIL_FIRST_MESSAGE_WAIT.max(quiet)
            || started.elapsed() >= TAIL_MAX
        {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let (topic, partition) = (message.topic(), message.partition());
                if let Some(side) = out
                    .get_mut(topic)
                    .and_then(|sides| sides.get_mut(&partition))
                {
                    side.end = side.end.max(message.offset() + 1);
                }
                pending.remove(&(topic.to_owned(), partition));
                last_arrival = Instant::now();
            }
            Some(Err(e)) => warn!(error = %e, "error while reading the partitions' tails"),
            None => {}
        }
    }
    for (topic, partition) in &pending {
        warn!(
            topic,
            partition, "no message arrived from the last batch; its end is the high watermark"
        );
    }
    debug!(elapsed_ms = started.elapsed().as_millis() as u64, ends = ?out, "kafka ends read");
    Ok(out)
}

/// The window of the outcome counts.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |t: Option<DateTime<Utc>>, open: &str| {
            t.map_or_else(
                || open.to_owned(),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            )
        };
        match (self.from, self.to) {
            (None, None) => f.write_str("every row (no --from/--to)"),
            (from, to) => write!(
                f,
                "rows with event_time in [{}, {})",
                at(from, "-inf"),
                at(to, "+inf")
            ),
        }
    }
}

/// The readable report: one table per topic, then each mismatch spelled out, then the verdict.
fn render(
    clickhouse_url: &str,
    database: &str,
    brokers: &str,
    window: Window,
    reports: &[TopicReport],
    expect_caught_up: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Reconciling Kafka {brokers} with ClickHouse {clickhouse_url} database {database}"
    );
    let _ = writeln!(
        out,
        "Outcome counts: {window}. Duplicates, lost and gaps: every stored position."
    );
    let mut problems = Vec::new();
    let mut lag = 0;
    for report in reports {
        let role = match report.role {
            TopicRole::Traffic => "traffic",
            TopicRole::Control => "control",
        };
        let _ = writeln!(out, "\n{role} topic {}", report.topic);
        let outcomes: &[&str] = match report.role {
            TopicRole::Traffic => &["attributed", "unattributed", "dead letters"],
            TopicRole::Control => &["control events", "dead letters"],
        };
        let mut header = vec!["partition", "kafka offsets", "messages", "stored"];
        header.extend_from_slice(outcomes);
        header.extend_from_slice(&["duplicates", "lost", "gaps", "not consumed", "status"]);
        let mut rows = Vec::new();
        let mut totals = vec![0_i64; 6 + outcomes.len()];
        for p in &report.partitions {
            let f = &p.findings;
            let messages = p.kafka.map_or(0, |k| k.end - k.low);
            let stored = p.stored.as_ref();
            let mut values = vec![messages, stored.map_or(0, |s| s.stored_positions as i64)];
            values.extend(outcome_values(report.role, stored));
            values.push(f.duplicates as i64);
            values.push(f.lost as i64);
            values.push(f.gaps as i64);
            values.push(f.not_consumed as i64);
            for (total, value) in totals.iter_mut().zip(&values) {
                *total += value;
            }
            let status = if f.is_mismatch(expect_caught_up) {
                "MISMATCH"
            } else if f.not_consumed > 0 {
                "behind"
            } else {
                "ok"
            };
            let mut row = vec![
                p.partition.to_string(),
                p.kafka
                    .map_or_else(|| "-".to_owned(), |k| format!("{}..{}", k.low, k.end)),
            ];
            row.extend(values.iter().map(i64::to_string));
            row.push(status.to_owned());
            rows.push(row);
            lag += f.not_consumed;
            problems.extend(describe(&report.topic, p, expect_caught_up));
        }
        let ok = report
            .partitions
            .iter()
            .all(|p| !p.findings.is_mismatch(expect_caught_up));
        let mut total = vec!["total".to_owned(), "-".to_owned()];
        total.extend(totals.iter().map(i64::to_string));
        let behind = report
            .partitions
            .iter()
            .any(|p| p.findings.not_consumed > 0);
        total.push(
            if !ok {
                "MISMATCH"
            } else if behind {
                "behind"
            } else {
                "ok"
            }
            .to_owned(),
        );
        rows.push(total);
        out.push_str(&table(&header, &rows));
    }
    out.push('\n');
    if problems.is_empty() {
        let _ = writeln!(out, "OK: every stored position nets to exactly one row, no gaps; {lag} messages not consumed yet.");
    } else {
        let _ = writeln!(out, "Mismatches:");
        for problem in &problems {
            let _ = writeln!(out, "  {problem}");
        }
        let _ = writeln!(
            out,
            "MISMATCH: {} problem(s) above; {lag} messages not consumed yet.",
            problems.len()
        );
    }
    out
}

fn outcome_values(role: TopicRole, stored: Option<&StoredPartition>) -> Vec<i64> {
    let s = |f: fn(&StoredPartition) -> i64| stored.map_or(0, f);
    match role {
        TopicRole::Traffic => vec![
            s(|s| s.window_attributed),
            s(|s| s.window_unattributed),
            s(|s| s.window_dead_letters),
        ],
        TopicRole::Control => vec![s(|s| s.window_control_events), s(|s| s.window_dead_letters)],
    }
}

/// One line per problem of a partition, naming the topic, the partition and the offsets.
fn describe(topic: &str, p: &PartitionReport, expect_caught_up: bool) -> Vec<String> {
    let f = &p.findings;
    let at = format!("{topic} partition {}", p.partition);
    let mut lines = Vec::new();
    let sample = |keep: fn(i64) -> bool| -> String {
        let shown: Vec<String> = p
            .stored
            .iter()
            .flat_map(|s| &s.bad_sample)
            .filter(|(_, net)| keep(*net))
            .map(|(offset, net)| format!("offset {offset} nets to {net} rows"))
            .collect();
        shown.join(", ")
    };
    if f.duplicates > 0 {
        lines.push(format!(
            "{at}: {} duplicate position(s) (rows netting to more than one): {}",
            f.duplicates,
            sample(|net| net > 1)
        ));
    }
    if f.lost > 0 {
        lines.push(format!(
            "{at}: {} lost position(s) (stored, but rows netting to less than one): {}",
            f.lost,
            sample(|net| net < 1)
        ));
    }
    if f.gaps > 0 {
        let ranges: Vec<String> = p
            .gap_ranges
            .iter()
            .map(|&(first, last)| {
                if first == last {
                    format!("offset {first}")
                } else {
                    format!("offsets {first}..={last}")
                }
            })
            .collect();
        let more = if p.gap_ranges.len() >= GAP_RANGES_SHOWN {
            ", … (the first ranges only)"
        } else {
            ""
        };
        lines.push(format!(
            "{at}: {} offset(s) missing (gaps, no row at all): {}{more}",
            f.gaps,
            ranges.join(", ")
        ));
    }
    if f.expired > 0 {
        lines.push(format!(
            "{at}: {} message(s) left Kafka (retention) before botmeter stored them",
            f.expired
        ));
    }
    if f.beyond_end > 0 {
        let end = p.kafka.map_or(0, |k| k.end);
        lines.push(format!(
            "{at}: {} stored offset(s) at or past Kafka's end {end} (was the topic recreated?)",
            f.beyond_end
        ));
    }
    if f.unknown_partition {
        lines.push(format!(
            "{at}: rows stored for a partition Kafka does not have"
        ));
    }
    if expect_caught_up && f.not_consumed > 0 {
        lines.push(format!(
            "{at}: {} message(s) not consumed yet (--expect-caught-up)",
            f.not_consumed
        ));
    }
    lines
}

/// Right-aligned numbers, left-aligned text; two spaces between columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let last = header.len() - 1;
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:>width$}", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(min: i64, max: i64, positions: u64) -> StoredPartition {
        StoredPartition {
            partition_id: 0,
            stored_positions: positions,
            min_offset: min,
            max_offset: max,
            duplicate_positions: 0,
            lost_positions: 0,
            bad_sample: Vec::new(),
            window_attributed: positions as i64,
            window_unattributed: 0,
            window_control_events: 0,
            window_dead_letters: 0,
        }
    }

    fn kafka(low: i64, end: i64) -> Option<KafkaPartition> {
        Some(KafkaPartition { low, end })
    }

    #[test]
    fn caught_up_and_contiguous_is_clean() {
        let f = compare(kafka(0, 100), Some(&stored(0, 99, 100)));
        assert_eq!(f, Findings::default());
        assert!(!f.is_mismatch(true));
    }

    #[test]
    fn lag_is_reported_and_fails_only_when_caught_up_is_expected() {
        let f = compare(kafka(0, 100), Some(&stored(0, 89, 90)));
        assert_eq!(
            f,
            Findings {
                not_consumed: 10,
                ..Findings::default()
            }
        );
        assert!(!f.is_mismatch(false));
        assert!(f.is_mismatch(true));
        // Nothing stored yet: the whole partition is lag.
        let f = compare(kafka(0, 7), None);
        assert_eq!(
            f,
            Findings {
                not_consumed: 7,
                ..Findings::default()
            }
        );
        // An empty partition with nothing stored is fine.
        assert_eq!(compare(kafka(0, 0), None), Findings::default());
        assert_eq!(compare(None, None), Findings::default());
    }

    #[test]
    fn holes_inside_the_stored_range_are_gaps() {
        // 0..=99 with 3 offsets missing.
        let f = compare(kafka(0, 100), Some(&stored(0, 99, 97)));
        assert_eq!(f.gaps, 3);
        assert!(f.is_mismatch(false));
    }

    #[test]
    fn offsets_skipped_from_the_low_watermark_are_gaps_not_lag() {
        // Kafka holds 0..100 but botmeter's first row is at 10: 0..=9 were skipped.
        let f = compare(kafka(0, 100), Some(&stored(10, 99, 90)));
        assert_eq!(f.gaps, 10);
        assert_eq!(f.not_consumed, 0);
    }

    #[test]
    fn retention_below_the_stored_range_is_not_a_gap() {
        // Kafka deleted 0..=49 after botmeter stored them.
        let f = compare(kafka(50, 100), Some(&stored(0, 99, 100)));
        assert_eq!(f, Findings::default());
        // A hole below the low watermark is still a hole in what botmeter stores.
        let f = compare(kafka(50, 100), Some(&stored(0, 99, 99)));
        assert_eq!(f.gaps, 1);
    }

    #[test]
    fn messages_expired_before_they_were_stored() {
        let f = compare(kafka(50, 60), Some(&stored(0, 19, 20)));
        assert_eq!(
            f,
            Findings {
                expired: 30,
                not_consumed: 10,
                ..Findings::default()
            }
        );
        assert!(f.is_mismatch(false));
        let f = compare(kafka(5, 8), None);
        assert_eq!(
            f,
            Findings {
                expired: 5,
                not_consumed: 3,
                ..Findings::default()
            }
        );
    }

    #[test]
    fn duplicates_and_lost_positions_come_from_the_stored_side() {
        let mut s = stored(0, 9, 10);
        s.duplicate_positions = 1;
        s.lost_positions = 2;
        let f = compare(kafka(0, 10), Some(&s));
        assert_eq!(
            f,
            Findings {
                duplicates: 1,
                lost: 2,
                ..Findings::default()
            }
        );
        assert!(f.is_mismatch(false));
    }

    #[test]
    fn stored_offsets_past_the_end_or_in_an_unknown_partition() {
        let f = compare(kafka(0, 5), Some(&stored(0, 9, 10)));
        assert_eq!(
            f,
            Findings {
                beyond_end: 5,
                ..Findings::default()
            }
        );
        assert!(f.is_mismatch(false));
        let f = compare(None, Some(&stored(0, 9, 9)));
        assert!(f.unknown_partition);
        assert_eq!(f.gaps, 1);
        assert!(f.is_mismatch(false));
    }

    #[test]
    fn gap_finder_names_the_ranges_compare_counts() {
        let offsets = [3, 4, 7, 8, 9, 12];
        let mut finder = GapFinder::new(Some(0), 10);
        for o in offsets {
            assert!(finder.push(o).is_continue());
        }
        let ranges = finder.into_ranges();
        assert_eq!(ranges, vec![(0, 2), (5, 6), (10, 11)]);
        let counted = compare(kafka(0, 13), Some(&stored(3, 12, offsets.len() as u64))).gaps;
        let named: i64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
        assert_eq!(counted, named as u64);
    }

    #[test]
    fn gap_finder_starts_below_the_low_watermark_when_rows_do_and_stops_at_the_limit() {
        let mut finder = GapFinder::new(Some(50), 10);
        for o in [0, 2, 60] {
            let _ = finder.push(o);
        }
        assert_eq!(finder.into_ranges(), vec![(1, 1), (3, 59)]);
        let mut finder = GapFinder::new(None, 2);
        assert!(finder.push(5).is_continue());
        assert!(finder.push(7).is_continue());
        assert!(finder.push(9).is_break());
        assert_eq!(finder.into_ranges(), vec![(6, 6), (8, 8)]);
    }

    #[test]
    fn report_joins_partitions_of_both_sides() {
        let sides: BTreeMap<i32, KafkaPartition> = [
            (0, KafkaPartition { low: 0, end: 10 }),
            (1, KafkaPartition { low: 0, end: 0 }),
        ]
        .into();
        let mut only_stored = stored(0, 4, 5);
        only_stored.partition_id = 2;
        let report = topic_report(
            "t",
            TopicRole::Traffic,
            &sides,
            vec![stored(0, 9, 10), only_stored],
        );
        let ids: Vec<i32> = report.partitions.iter().map(|p| p.partition).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert!(!report.partitions[0].findings.is_mismatch(true));
        assert!(!report.partitions[1].findings.is_mismatch(true));
        assert!(report.partitions[2].findings.unknown_partition);
    }

    #[test]
    fn render_names_partition_offset_and_verdict() {
        let sides: BTreeMap<i32, KafkaPartition> = [
            (0, KafkaPartition { low: 0, end: 10 }),
            (1, KafkaPartition { low: 0, end: 10 }),
        ]
        .into();
        let mut dup = stored(0, 9, 10);
        dup.partition_id = 1;
        dup.duplicate_positions = 1;
        dup.bad_sample = vec![(4, 2)];
        let mut report = topic_report(
            "it.traffic",
            TopicRole::Traffic,
            &sides,
            vec![stored(0, 9, 8), dup],
        );
        report.partitions[0].gap_ranges = vec![(3, 4)];
        let text = render(
            "http://ch",
            "db",
            "k:9092",
            Window {
                from: None,
                to: None,
            },
            &[report],
            false,
        );
        assert!(
            text.contains("it.traffic partition 1: 1 duplicate position(s)"),
            "{text}"
        );
        assert!(text.contains("offset 4 nets to 2 rows"), "{text}");
        assert!(
            text.contains(
                "it.traffic partition 0: 2 offset(s) missing (gaps, no row at all): offsets 3..=4"
            ),
            "{text}"
        );
        assert!(text.lines().any(|l| l.starts_with("MISMATCH")), "{text}");
        let total = text
            .lines()
            .find(|l| l.trim_start().starts_with("total"))
            .unwrap();
        let cells: Vec<&str> = total.split_whitespace().collect();
        // total, offsets, messages, stored, attributed, unattributed, dead letters, duplicates, lost, gaps, not consumed, status
        assert_eq!(
            cells,
            ["total", "-", "20", "18", "18", "0", "0", "1", "0", "2", "0", "MISMATCH"],
            "{text}"
        );
    }

    #[test]
    fn render_of_a_clean_run_says_ok() {
        let sides: BTreeMap<i32, KafkaPartition> = [(0, KafkaPartition { low: 0, end: 12 })].into();
        let report = topic_report("c", TopicRole::Control, &sides, vec![stored(0, 9, 10)]);
        let window = Window {
            from: Some(DateTime::from_timestamp(0, 0).unwrap()),
            to: None,
        };
        let text = render("http://ch", "db", "k:9092", window, &[report], false);
        assert!(
            text.contains("rows with event_time in [1970-01-01T00:00:00Z, +inf)"),
            "{text}"
        );
        assert!(text.contains("OK: every stored position nets to exactly one row, no gaps; 2 messages not consumed yet."), "{text}");
        assert!(text.lines().any(|l| l.ends_with("behind")), "{text}");
    }
}
