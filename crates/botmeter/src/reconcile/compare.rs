//! Comparing Kafka's side of a topic with botmeter's, partition by partition: what is wrong (or
//! only pending) in each, and the missing offset ranges behind a gap count. Pure: no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use query::read::{StoredPartition, TopicRole};

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
pub(super) const GAP_RANGES_SHOWN: usize = 10;

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A partition stored contiguously from `min` to `max`, every row attributed.
    pub(in crate::reconcile) fn stored(min: i64, max: i64, positions: u64) -> StoredPartition {
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
            window_repeated: 0,
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
}
