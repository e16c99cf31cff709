//! The bounds of what botmeter stores and sums, checked by the decoders so that nothing outside
//! them reaches a table: event times within ClickHouse's `DateTime` (Unix seconds as `UInt32`:
//! 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z; outside it a time would be stored as 0), and
//! byte counts no larger than an `Int64` sum can hold.

use chrono::{DateTime, Utc};

/// The largest byte count (or body length) accepted in one event: `i64::MAX`.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// The words the decoders' reasons use, so that [`crate::DecodeError::kind`] can class them.
pub(crate) const TIME_OUT_OF_RANGE: &str = "outside the storable time range";
pub(crate) const COUNT_OUT_OF_RANGE: &str = "the largest count a sum can hold";

/// Whether `t` can be stored as a `DateTime` (whole seconds).
pub fn storable_time(t: DateTime<Utc>) -> bool {
    (0..=i64::from(u32::MAX)).contains(&t.timestamp())
}

/// Why `t` cannot be stored, naming the range.
pub(crate) fn time_out_of_range(t: DateTime<Utc>) -> String {
    format!(
        "{} is {TIME_OUT_OF_RANGE} 1970-01-01T00:00:00Z..=2106-02-07T06:28:15Z",
        t.to_rfc3339()
    )
}

/// Why a count is refused.
pub(crate) fn count_out_of_range(n: impl std::fmt::Display) -> String {
    format!("{n} exceeds {MAX_COUNT}, {COUNT_OUT_OF_RANGE}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_storable_range_is_datetimes() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        assert!(storable_time(at(0)));
        assert!(storable_time(at(i64::from(u32::MAX))));
        assert!(!storable_time(at(-1)));
        assert!(!storable_time(at(i64::from(u32::MAX) + 1)));
        assert!(time_out_of_range(at(-1)).contains("1969-12-31T23:59:59"));
        assert!(count_out_of_range(u64::MAX).contains(&MAX_COUNT.to_string()));
    }
}
