//! What the pipeline tells operators about the messages it handled: metrics and counters of a
//! written batch, consumer lag, and dead letters (published to their topic, logged, counted and
//! recorded in ClickHouse).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use ingest::{DeadLetter, DeadLetterProducer, TrafficSource};
use query::rows::{status, AsUsageRow, DeadLetterRow, StrList};
use query::write::retry::Backoff;
use tracing::warn;

use super::{retry_blocking_with, Shared};
use crate::ops::names;

/// Counts of one written batch, by metric label.
#[derive(Debug, Default)]
pub(crate) struct BatchSummary {
    http_requests: u64,
    tcp_connections: u64,
    dead_letters: u64,
    pub(crate) attributed: u64,
    pub(crate) unattributed: u64,
    pub(crate) repeated: u64,
    unattributed_by_reason: HashMap<String, u64>,
    flagged: HashMap<String, u64>,
}

fn count(counts: &mut HashMap<String, u64>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n += 1;
    } else {
        counts.insert(key.to_owned(), 1);
    }
}

/// Counts a batch's rows by kind, outcome, reason and flag.
pub(crate) fn summarize<R: AsUsageRow>(rows: &[R]) -> BatchSummary {
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
                count(&mut summary.unattributed_by_reason, row.unattributed_reason);
            }
            status::DUPLICATE => {
                summary.repeated += 1;
                continue; // a message like any other, but its flags count nowhere
            }
            _ => {}
        }
        let flags: &mut dyn Iterator<Item = &str> = match &row.flags {
            StrList::Owned(names) => &mut names.iter().map(String::as_str),
            StrList::Static(names) => &mut names.iter().copied(),
        };
        for flag in flags {
            count(&mut summary.flagged, flag);
        }
    }
    summary
}

/// Adds a written batch's counts to the metrics.
pub(crate) fn record_traffic_metrics(summary: &BatchSummary) {
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
    if summary.repeated > 0 {
        metrics::counter!(names::REPEATED_EVENTS).increment(summary.repeated);
    }
}

/// Publishes `botmeter_consumer_lag_messages{topic,partition}`: messages between each assigned
/// partition's position and its end.
pub(crate) fn record_lag(source: &TrafficSource) {
    for (topic, partition, lag) in source.lag() {
        metrics::gauge!(names::LAG, "topic" => topic, "partition" => partition.to_string())
            .set(lag as f64);
    }
}

/// Publishes dead letters to their topic (logged and counted) and waits until Kafka has them.
pub(crate) fn publish_dead_letters(
    producer: &DeadLetterProducer,
    letters: &[DeadLetter],
) -> anyhow::Result<()> {
    for letter in letters {
        metrics::counter!(names::DEAD_LETTERS, "reason" => letter.reason_kind.clone(), "topic" => letter.topic.clone()).increment(1);
        warn!(topic = %letter.topic, partition = letter.partition, offset = letter.offset, reason = %letter.reason, "dead letter");
        producer.send(letter)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// The `dead_letters` rows of `letters`, received now.
pub(crate) fn dead_letter_rows(letters: &[DeadLetter]) -> Vec<DeadLetterRow> {
    let now = Utc::now().timestamp() as u32;
    letters
        .iter()
        .map(|letter| DeadLetterRow::new(letter, now))
        .collect()
}

/// Publishes the control reader's dead letters and records them in ClickHouse, retrying while
/// it fails; `false` when stopping before they were recorded.
pub(crate) fn write_dead_letters(
    shared: &Shared,
    letters: &[DeadLetter],
    max_backoff: Duration,
) -> anyhow::Result<bool> {
    publish_dead_letters(&shared.dead_letters, letters)?;
    let rows = dead_letter_rows(letters);
    let written = retry_blocking_with(
        &shared.handle,
        &shared.stop,
        "write dead letters",
        Backoff::new(max_backoff),
        &shared.stats,
        || shared.writer.insert_dead_letters(&rows),
    )?;
    if written.is_none() {
        return Ok(false);
    }
    shared
        .stats
        .dead_letters
        .fetch_add(letters.len() as u64, Ordering::Relaxed);
    Ok(true)
}
