//! Rendering the report of `botmeter reconcile`: one table per topic, each mismatch spelled out
//! with its topic, partition and offsets, then a one-line verdict that starts with `OK` or
//! `MISMATCH`. Pure: it formats what the other modules found.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use query::read::{StoredPartition, TopicRole};

use super::compare::{PartitionReport, TopicReport, GAP_RANGES_SHOWN};

/// The window of the outcome counts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) from: Option<DateTime<Utc>>,
    pub(super) to: Option<DateTime<Utc>>,
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
pub(super) fn render(
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
        render_topic(&mut out, report, expect_caught_up);
        for p in &report.partitions {
            lag += p.findings.not_consumed;
            problems.extend(describe(&report.topic, p, expect_caught_up));
        }
    }
    out.push('\n');
    render_verdict(&mut out, &problems, lag);
    out
}

/// One topic's table: a row per partition, then the totals.
fn render_topic(out: &mut String, report: &TopicReport, expect_caught_up: bool) {
    let role = match report.role {
        TopicRole::Traffic => "traffic",
        TopicRole::Control => "control",
    };
    let _ = writeln!(out, "\n{role} topic {}", report.topic);
    let outcomes: &[&str] = match report.role {
        TopicRole::Traffic => &["attributed", "unattributed", "dead letters", "repeats"],
        TopicRole::Control => &["control events", "dead letters"],
    };
    let mut header = vec!["partition", "kafka offsets", "messages", "stored"];
    header.extend_from_slice(outcomes);
    header.extend_from_slice(&["duplicates", "lost", "gaps", "not consumed", "status"]);
    let mut rows = Vec::new();
    let mut totals = vec![0_i64; 6 + outcomes.len()];
    for p in &report.partitions {
        let f = &p.findings;
        let values = partition_values(report.role, p);
        for (total, value) in totals.iter_mut().zip(&values) {
            *total += value;
        }
        let mut row = vec![
            p.partition.to_string(),
            p.kafka
                .map_or_else(|| "-".to_owned(), |k| format!("{}..{}", k.low, k.end)),
        ];
        row.extend(values.iter().map(i64::to_string));
        row.push(status(f.is_mismatch(expect_caught_up), f.not_consumed > 0).to_owned());
        rows.push(row);
    }
    let mismatch = report
        .partitions
        .iter()
        .any(|p| p.findings.is_mismatch(expect_caught_up));
    let behind = report
        .partitions
        .iter()
        .any(|p| p.findings.not_consumed > 0);
    let mut total = vec!["total".to_owned(), "-".to_owned()];
    total.extend(totals.iter().map(i64::to_string));
    total.push(status(mismatch, behind).to_owned());
    rows.push(total);
    out.push_str(&table(&header, &rows));
}

/// The numbers of a partition's row, after its offsets: messages, stored, the outcomes of its
/// role, duplicates, lost, gaps, not consumed.
fn partition_values(role: TopicRole, p: &PartitionReport) -> Vec<i64> {
    let f = &p.findings;
    let messages = p.kafka.map_or(0, |k| k.end - k.low);
    let stored = p.stored.as_ref();
    let mut values = vec![messages, stored.map_or(0, |s| s.stored_positions as i64)];
    values.extend(outcome_values(role, stored));
    values.push(f.duplicates as i64);
    values.push(f.lost as i64);
    values.push(f.gaps as i64);
    values.push(f.not_consumed as i64);
    values
}

/// The status cell of a partition or a topic's total.
fn status(mismatch: bool, behind: bool) -> &'static str {
    if mismatch {
        "MISMATCH"
    } else if behind {
        "behind"
    } else {
        "ok"
    }
}

/// The last lines: every mismatch, then the verdict.
fn render_verdict(out: &mut String, problems: &[String], lag: u64) {
    if problems.is_empty() {
        let _ = writeln!(out, "OK: every stored position nets to exactly one row, no gaps; {lag} messages not consumed yet.");
    } else {
        let _ = writeln!(out, "Mismatches:");
        for problem in problems {
            let _ = writeln!(out, "  {problem}");
        }
        let _ = writeln!(
            out,
            "MISMATCH: {} problem(s) above; {lag} messages not consumed yet.",
            problems.len()
        );
    }
}

fn outcome_values(role: TopicRole, stored: Option<&StoredPartition>) -> Vec<i64> {
    let s = |f: fn(&StoredPartition) -> i64| stored.map_or(0, f);
    match role {
        TopicRole::Traffic => vec![
            s(|s| s.window_attributed),
            s(|s| s.window_unattributed),
            s(|s| s.window_dead_letters),
            s(|s| s.window_repeated),
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
        lines.push(format!(
            "{at}: {} offset(s) missing (gaps, no row at all): {}",
            f.gaps,
            gap_ranges_text(&p.gap_ranges)
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

/// The gap ranges found, as offsets, saying when they are only the first ones.
fn gap_ranges_text(gap_ranges: &[(i64, i64)]) -> String {
    let ranges: Vec<String> = gap_ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                format!("offset {first}")
            } else {
                format!("offsets {first}..={last}")
            }
        })
        .collect();
    let more = if gap_ranges.len() >= GAP_RANGES_SHOWN {
        ", … (the first ranges only)"
    } else {
        ""
    };
    format!("{}{more}", ranges.join(", "))
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::reconcile::compare::tests::stored;
    use crate::reconcile::compare::{topic_report, KafkaPartition};

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
        // total, offsets, messages, stored, attributed, unattributed, dead letters, repeats,
        // duplicates, lost, gaps, not consumed, status
        assert_eq!(
            cells,
            ["total", "-", "20", "18", "18", "0", "0", "0", "1", "0", "2", "0", "MISMATCH"],
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
