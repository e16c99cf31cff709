//! Reading botmeter's side from ClickHouse: the positions stored for each topic and what their rows
//! net to, and, for partitions with gaps, the first missing offset ranges. Read-only.

use anyhow::Context as _;
use query::read::{StoredPartition, TopicRole};
use query::Reader;

use super::compare::{GapFinder, TopicReport, GAP_RANGES_SHOWN};

/// What ClickHouse stores for each of `topics`, in order; outcomes counted only of rows with
/// event_time in `[from_secs, to_secs)`.
pub(super) async fn read_stored(
    reader: &Reader,
    topics: &[(String, TopicRole)],
    from_secs: i64,
    to_secs: i64,
) -> anyhow::Result<Vec<Vec<StoredPartition>>> {
    let mut stored = Vec::new();
    for (topic, role) in topics {
        let rows = reader
            .reconcile_positions(topic, *role, from_secs, to_secs)
            .await
            .with_context(|| format!("failed to read what ClickHouse stores for topic {topic}"))?;
        stored.push(rows);
    }
    Ok(stored)
}

/// Names the first [`GAP_RANGES_SHOWN`] missing ranges of every partition of `report` that has
/// gaps, reading its stored offsets in order.
pub(super) async fn find_gap_ranges(
    reader: &Reader,
    report: &mut TopicReport,
) -> anyhow::Result<()> {
    let topic = &report.topic;
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
    Ok(())
}
