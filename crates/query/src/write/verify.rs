//! After an insert failed but its rows had landed: ClickHouse 18.16 stores an insert's part, then
//! each materialized view's part, so a crash in between leaves the rollups short of the raw rows
//! (the rows are not written again: that would count them twice in the raw table). [`rollups`]
//! compares every rollup with the raw rows over the UTC days the rows touched, twice a second
//! apart (another instance's insert may be between its part and its views' parts at the first
//! look). Repairing is left to `botmeter rollups rebuild`: rebuilding a month other instances are
//! writing could drop their inserts from the rollups.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::DateTime;

use crate::error::Error;
use crate::read::Reader;
use crate::rollup::whole_days;

/// Most differing keys read per rollup.
const DIFFERENCES_LIMIT: u64 = 20;

/// What the comparison found.
#[derive(Debug)]
pub enum RollupVerdict {
    /// Every rollup equals the raw rows over `[from, to)`.
    Equal {
        /// Start of the range compared, Unix seconds.
        from: u32,
        /// End of the range compared (exclusive).
        to: u32,
    },
    /// A difference stayed: reports read from the rollups undercount these months until they are
    /// rebuilt.
    Damaged {
        /// Keys that differ (at most 20 per rollup).
        keys: usize,
        /// The rollup tables that differ.
        tables: BTreeSet<&'static str>,
        /// The months to rebuild, `YYYY-MM`.
        months: Vec<String>,
    },
    /// The comparison itself failed.
    Unknown {
        /// Start of the range.
        from: u32,
        /// End of the range.
        to: u32,
        /// Why.
        error: Error,
    },
}

/// Compares the rollups with the raw rows over the whole UTC days holding `[first, last]` (Unix
/// seconds of the landed rows' `event_time`).
pub async fn rollups(reader: &Reader, first: u32, last: u32) -> RollupVerdict {
    let (from, to) = whole_days(i64::from(first), i64::from(last) + 1);
    let clamp = |secs: i64| u32::try_from(secs).unwrap_or(u32::MAX);
    let (from, to) = (clamp(from), clamp(to));
    let mut differences = Vec::new();
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        match reader.rollup_differences(from, to, DIFFERENCES_LIMIT).await {
            Ok(found) if found.is_empty() => return RollupVerdict::Equal { from, to },
            Ok(found) => differences = found,
            Err(error) => return RollupVerdict::Unknown { from, to, error },
        }
    }
    let months: BTreeSet<String> = differences
        .iter()
        .filter_map(|d| DateTime::from_timestamp(i64::from(d.quarter), 0))
        .map(|t| t.format("%Y-%m").to_string())
        .collect();
    RollupVerdict::Damaged {
        keys: differences.len(),
        tables: differences.iter().map(|d| d.table).collect(),
        months: months.into_iter().collect(),
    }
}
