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
//!
//! Layout: `args` the flags, `clickhouse` and `kafka` read the two sides, `compare` finds
//! what disagrees, `render` prints the report; this module runs them in that order.

mod args;
mod clickhouse;
mod compare;
mod kafka;
mod render;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use query::read::TopicRole;
use query::Reader;

pub use args::{ReconcileArgs, LONG_ABOUT};
pub use compare::{
    compare, topic_report, Findings, GapFinder, KafkaPartition, PartitionReport, TopicReport,
};

use render::{render, Window};

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

/// Reads both sides, prints the report and returns the exit code: 1 on a mismatch, 0 otherwise.
async fn check(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let clickhouse = args.clickhouse.config()?;
    args.validate()?;
    let from_secs = args.from.map_or(0, |t| t.timestamp());
    let to_secs = args.to.map_or(i64::MAX, |t| t.timestamp());
    let reader = Reader::new(&clickhouse).context("failed to build the ClickHouse client")?;
    let topics = [
        (args.kafka.traffic_topic.clone(), TopicRole::Traffic),
        (args.kafka.control_topic.clone(), TopicRole::Control),
    ];

    // ClickHouse before Kafka: rows written meanwhile then show as lag, not as offsets past the end.
    let stored = clickhouse::read_stored(&reader, &topics, from_secs, to_secs).await?;
    let names: Vec<String> = topics.iter().map(|(topic, _)| topic.clone()).collect();
    let quiet = Duration::from_millis(args.tail_quiet_ms);
    let mut kafka = kafka::read_kafka_off_async(args.kafka.brokers.clone(), names, quiet).await?;

    let mut reports = Vec::new();
    for ((topic, role), stored) in topics.iter().zip(stored) {
        let kafka = kafka.remove(topic).unwrap_or_default();
        let mut report = topic_report(topic, *role, &kafka, stored);
        clickhouse::find_gap_ranges(&reader, &mut report).await?;
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
