//! A batch's rows as the inserts that keep stored positions exact, and, after a failed insert,
//! what of it ClickHouse does not hold yet (the lost-response filter: a failure may come after
//! the insert landed, and writing it again would count it twice).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike as _};

/// Splits rows into the inserts that keep the stored positions exact. An insert is atomic when
/// its rows fall in one table partition (one month of `event_time`), so a batch within one month
/// — nearly every batch — is one insert of all its rows, sorted by (Kafka partition, offset).
/// A batch across months is split per Kafka partition, in offset order, into maximal runs within
/// one month; runs are written in order, so a crash between two of them leaves every stored offset
/// of a partition below its stored maximum durable: no gap to skip on resume.
pub fn contiguous_runs<R>(mut rows: Vec<R>, key: impl Fn(&R) -> (i32, i64, u32)) -> Vec<Vec<R>> {
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
    let mut by_partition: BTreeMap<i32, Vec<R>> = BTreeMap::new();
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
pub fn month_of(unix_seconds: u32) -> u32 {
    let t = DateTime::from_timestamp(i64::from(unix_seconds), 0).unwrap_or_default();
    t.year().unsigned_abs() * 100 + t.month()
}

/// The parts of `run` (rows sorted by Kafka partition, then offset) that ClickHouse does not hold
/// yet, given the stored position of each partition: per partition, the rows after its position
/// (a suffix of that partition's rows). One slice per partition with rows left, in run order.
pub fn not_stored<'a, R>(
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
