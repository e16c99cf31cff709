//! `botmeter reattribute`: restates unattributed usage once the control events it was missing have
//! arrived. The ownership state is rebuilt from the whole audit log; every unattributed row in the
//! window that is still current (its position's rows net to +1) is resolved again as of its time.
//! A row whose outcome changes is never rewritten: a copy with `sign = -1` cancels it and the new
//! row is written with `sign = +1`, both in one insert and one table partition, so reports (which
//! sum `metric * sign`) always equal the raw truth, a crash leaves either both or neither, and a
//! second run finds nothing left to do.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use enrich::OwnershipState;
use indicatif::{ProgressBar, ProgressStyle};
use query::rows::UsageRow;
use query::write::runs::month_of;
use query::{Reader, Writer};

use crate::pipeline::rebuild_state;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReattributeReport {
    /// Unattributed rows in the window that were still current.
    pub candidates: u64,
    /// Rows now attributed.
    pub attributed: u64,
    /// Rows still unattributed but for another reason (a later link is missing now).
    pub reason_changed: u64,
    /// Rows still unattributed, by reason.
    pub still_unattributed: BTreeMap<String, u64>,
}

impl ReattributeReport {
    /// Counts one row still unattributed for `reason`.
    fn count_still_unattributed(&mut self, reason: &str) {
        *self
            .still_unattributed
            .entry(reason.to_owned())
            .or_default() += 1;
    }
}

/// Rows to write per insert (each restatement is two rows).
const PAIRS_PER_INSERT: usize = 5_000;

/// Restates unattributed usage with `event_time` in `[from, to)`.
pub async fn reattribute(
    writer: &Writer,
    reader: &Reader,
    control_topic: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    progress: bool,
) -> anyhow::Result<ReattributeReport> {
    anyhow::ensure!(from < to, "--from ({from}) must be before --to ({to})");
    let seconds = |t: DateTime<Utc>| {
        u32::try_from(t.timestamp())
            .map_err(|_| anyhow::anyhow!("{t} is outside ClickHouse's DateTime range"))
    };
    let history = reader
        .control_history(control_topic)
        .await
        .context("failed to read the control-event history")?;
    let (state, _) = rebuild_state(&history);
    drop(history);
    let rows = reader
        .unattributed_rows(seconds(from)?, seconds(to)?)
        .await
        .context("failed to read unattributed usage")?;
    let current = current_rows(rows);

    let bar = progress_bar(progress, current.len() as u64);
    let mut report = ReattributeReport {
        candidates: current.len() as u64,
        ..ReattributeReport::default()
    };
    let now = u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX);
    // One insert per ClickHouse partition (month of event_time): an insert is atomic only
    // within one partition.
    let mut pending: BTreeMap<u32, Vec<UsageRow>> = BTreeMap::new();
    for original in current {
        bar.inc(1);
        let Some((cancel, restated)) = restate(&state, original, now, &mut report) else {
            continue;
        };
        let month = month_of(cancel.event_time);
        let batch = pending.entry(month).or_default();
        batch.push(cancel);
        batch.push(restated);
        if batch.len() >= 2 * PAIRS_PER_INSERT {
            write_restated(writer, batch).await?;
            batch.clear();
        }
    }
    for batch in pending.values().filter(|b| !b.is_empty()) {
        write_restated(writer, batch).await?;
    }
    bar.finish_and_clear();
    Ok(report)
}

/// The progress bar over `len` rows; hidden unless `progress`.
fn progress_bar(progress: bool, len: u64) -> ProgressBar {
    let bar = if progress {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} reattributing [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// Resolves an unattributed row again as of its time and counts the result in `report`. When the
/// outcome changed: the row that cancels `original` (`sign = -1`) and the restated row, both
/// ingested at `now`; otherwise `None`.
fn restate(
    state: &OwnershipState,
    original: UsageRow,
    now: u32,
    report: &mut ReattributeReport,
) -> Option<(UsageRow, UsageRow)> {
    let t = DateTime::from_timestamp_micros(original.event_time_us).unwrap_or_default();
    let endpoint_hint = (!original.endpoint_id.is_empty()).then_some(original.endpoint_id.as_str());
    let port = (original.port != 0).then_some(original.port);
    let resolution = state.resolve(&original.hostname, port, endpoint_hint, t);
    let mut restated = original.clone();
    restated.set_attribution(&resolution);
    if restated.status == original.status
        && restated.unattributed_reason == original.unattributed_reason
    {
        report.count_still_unattributed(&original.unattributed_reason);
        return None;
    }
    if resolution.unattributed.is_none() {
        report.attributed += 1;
    } else {
        report.reason_changed += 1;
        report.count_still_unattributed(&restated.unattributed_reason);
    }
    restated.ingested_at = now;
    let mut cancel = original;
    cancel.sign = -1;
    cancel.ingested_at = now;
    Some((cancel, restated))
}

/// Writes one batch of cancel and restated rows in one insert.
async fn write_restated(writer: &Writer, batch: &[UsageRow]) -> anyhow::Result<()> {
    writer
        .insert_usage(batch)
        .await
        .context("failed to write restated usage")
}

/// Of every row per Kafka position, the `+1` row when the position's rows net to `+1` (the row is
/// still current, not cancelled by an earlier restatement).
fn current_rows(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    let mut by_position: HashMap<(String, i32, i64), (i64, Option<UsageRow>)> = HashMap::new();
    for row in rows {
        let entry = by_position
            .entry((
                row.kafka_topic.clone(),
                row.kafka_partition,
                row.kafka_offset,
            ))
            .or_default();
        entry.0 += i64::from(row.sign);
        if row.sign > 0 {
            entry.1 = Some(row);
        }
    }
    let mut current: Vec<UsageRow> = by_position
        .into_values()
        .filter(|(net, _)| *net > 0)
        .filter_map(|(_, row)| row)
        .collect();
    current.sort_by(|a, b| {
        (&a.kafka_topic, a.kafka_partition, a.kafka_offset).cmp(&(
            &b.kafka_topic,
            b.kafka_partition,
            b.kafka_offset,
        ))
    });
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: i64, sign: i8) -> UsageRow {
        UsageRow {
            event_id: format!("ev_{offset}"),
            event_type: "tcp_connection_closed.v0".into(),
            event_time: 1_767_225_600,
            event_time_us: 1_767_225_600_000_000,
            account_id: String::new(),
            status: "unattributed".into(),
            unattributed_reason: "no_endpoint".into(),
            flags: Vec::new(),
            owner_id: String::new(),
            owner_kind: String::new(),
            credential_id: String::new(),
            credential_kind: String::new(),
            session_id: String::new(),
            endpoint_id: String::new(),
            hostname: "a.ngrok.app".into(),
            port: 0,
            bytes_in: 1,
            bytes_out: 2,
            http_requests: 0,
            tcp_connections: 1,
            status_code: 0,
            request_body_bytes: 0,
            response_body_bytes: 0,
            kafka_topic: "t".into(),
            kafka_partition: 0,
            kafka_offset: offset,
            ingested_at: 0,
            sign,
        }
    }

    #[test]
    fn cancelled_rows_are_not_candidates_again() {
        let current = current_rows(vec![row(1, 1), row(2, 1), row(2, -1), row(3, 1)]);
        let offsets: Vec<i64> = current.iter().map(|r| r.kafka_offset).collect();
        assert_eq!(offsets, [1, 3]);
        assert!(current.iter().all(|r| r.sign == 1));
    }
}
