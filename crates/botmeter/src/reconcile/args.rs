//! The command line of `botmeter reconcile`: its help text and flags, and the checks of the flags
//! that need no ClickHouse or Kafka (an invalid combination is refused before anything is read).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use crate::cli::ClickHouseArgs;
use ingest::KafkaArgs;

/// The long help of `botmeter reconcile`.
pub const LONG_ABOUT: &str = "\
Check that every Kafka message botmeter consumed ends in exactly one net row in ClickHouse.

For the traffic and the control topic, per partition, it compares Kafka's low watermark and true
end with the positions stored in ClickHouse, and prints a table: messages in Kafka, positions
stored, net rows by outcome (traffic: attributed, unattributed, dead letters, and repeats —
repeated deliveries of an event id already written, counted nowhere else — each the sum of
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

impl ReconcileArgs {
    /// Refuses invalid Kafka settings, an empty or reversed `--from`/`--to` window and a zero
    /// `--tail-quiet-ms`.
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        self.kafka
            .config()
            .validate()
            .context("invalid Kafka settings")?;
        if let (Some(from), Some(to)) = (self.from, self.to) {
            anyhow::ensure!(from < to, "--from ({from}) must be before --to ({to})");
        }
        anyhow::ensure!(
            self.tail_quiet_ms > 0,
            "--tail-quiet-ms must be at least 1, got 0"
        );
        Ok(())
    }
}
