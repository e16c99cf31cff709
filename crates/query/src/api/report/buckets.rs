//! Bucket boundaries in a time zone, computed the way ClickHouse computes them (`toStartOfHour`,
//! `toStartOfDay`, `toStartOfMonth` of `toTimeZone(event_time, tz)`), and sessions spread over
//! those buckets: what lets session figures line up with the SQL's traffic buckets.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Granularity, Session};

/// Start (Unix seconds) of the bucket holding `t`, as ClickHouse computes it for `tz`.
pub(super) fn bucket_start(t: i64, granularity: Granularity, tz: Tz) -> i64 {
    let utc = DateTime::<Utc>::from_timestamp(t, 0).unwrap_or_default();
    match granularity {
        Granularity::Hour => {
            let offset = i64::from(
                tz.offset_from_utc_datetime(&utc.naive_utc())
                    .fix()
                    .local_minus_utc(),
            );
            t - (t + offset).rem_euclid(3600)
        }
        Granularity::Day => local_midnight(utc.with_timezone(&tz).date_naive(), tz),
        Granularity::Month => {
            let date = utc.with_timezone(&tz).date_naive();
            local_midnight(date.with_day(1).unwrap_or(date), tz)
        }
    }
}

/// Start of the bucket after the one starting at `start`.
pub(super) fn next_bucket(start: i64, granularity: Granularity, tz: Tz) -> i64 {
    let next = match granularity {
        Granularity::Hour => start + 3600,
        Granularity::Day => {
            let local = DateTime::<Utc>::from_timestamp(start, 0)
                .unwrap_or_default()
                .with_timezone(&tz)
                .date_naive();
            local_midnight(local.succ_opt().unwrap_or(local), tz)
        }
        Granularity::Month => {
            let local = DateTime::<Utc>::from_timestamp(start, 0)
                .unwrap_or_default()
                .with_timezone(&tz)
                .date_naive();
            let (year, month) = if local.month() == 12 {
                (local.year() + 1, 1)
            } else {
                (local.year(), local.month() + 1)
            };
            local_midnight(NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(local), tz)
        }
    };
    // Never stall, whatever a zone's rules do.
    next.max(start + 1)
}

/// 00:00 local on `date`, or the first local time that exists that day (a DST jump at midnight).
fn local_midnight(date: NaiveDate, tz: Tz) -> i64 {
    let midnight: NaiveDateTime = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..=3)
        .find_map(|hours| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(hours)))
                .earliest()
        })
        .map_or_else(|| midnight.and_utc().timestamp(), |t| t.timestamp())
}

/// Per bucket start: the sessions overlapping it and their microseconds within it. A session cut
/// into pieces (a bot user that changed customer while it ran) counts once per bucket.
pub(super) fn session_buckets<'a>(
    sessions: impl IntoIterator<Item = &'a Session>,
    granularity: Granularity,
    tz: Tz,
) -> BTreeMap<u32, (u64, i64)> {
    let mut out: BTreeMap<u32, (u64, i64)> = BTreeMap::new();
    let mut counted: BTreeSet<(u32, &str)> = BTreeSet::new();
    for session in sessions {
        let end = session.end_us.div_euclid(1_000_000)
            + i64::from(session.end_us.rem_euclid(1_000_000) > 0);
        let mut start = bucket_start(session.start_us.div_euclid(1_000_000), granularity, tz);
        while start < end {
            let next = next_bucket(start, granularity, tz);
            let overlap =
                session.end_us.min(next * 1_000_000) - session.start_us.max(start * 1_000_000);
            if overlap > 0 {
                let bucket = u32::try_from(start).unwrap_or(0);
                let slot = out.entry(bucket).or_default();
                if counted.insert((bucket, session.id.as_str())) {
                    slot.0 += 1;
                }
                slot.1 += overlap;
            }
            start = next;
        }
    }
    out
}
