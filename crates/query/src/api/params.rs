//! Query-string and path parameters shared by every report: parsed strictly, in a fixed order, so
//! that a bad request always answers the same 400 naming the parameter and quoting its value.
//!
//! - Unknown parameters and repeated ones are refused (a typo never silently means "default").
//! - `from` (inclusive) and `to` (exclusive) are RFC 3339 times (`2024-05-01T10:00:00Z`,
//!   `2024-05-01T12:00:00%2B02:00`: a `+` in a URL must be sent as `%2B`) or dates (`2024-05-01`,
//!   meaning 00:00 UTC that day). Both are taken to the whole second, the resolution of
//!   `event_time`; `from < to`, at most [`MAX_RANGE_DAYS`] days apart, within ClickHouse's
//!   `DateTime` (1970 to 2106).
//! - `timezone` is an IANA name from chrono-tz's copy of the tz database; what reaches SQL is that
//!   table's own spelling of the name, never the client's text.
//! - `month` is `YYYY-MM`, a UTC calendar month.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::ApiError;

/// Longest range one request may ask for.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Longest id accepted in a path or query parameter.
pub(super) const MAX_ID_LEN: usize = 128;

/// What [`check_id`] accepts, as an OpenAPI `pattern` (with `minLength` 1 and `maxLength`
/// [`MAX_ID_LEN`]).
pub(super) const ID_PATTERN: &str = "^[A-Za-z0-9_.-]+$";

/// What [`QueryParams::month`] accepts, as an OpenAPI `pattern`: 1970-01 to 2106-01.
pub(super) const MONTH_PATTERN: &str =
    "^((19[7-9][0-9]|20[0-9]{2}|210[0-5])-(0[1-9]|1[0-2])|2106-01)$";

/// `from` and `to` as an OpenAPI `pattern`: a date (1970 to 2105; February 29 is accepted but not
/// described), or an RFC 3339 time with `T`, whole seconds or up to 9 digits of fraction, and `Z`
/// or an offset (1971 to 2105, so that no offset takes it before 1970). A little narrower than what
/// [`parse_time`] accepts, never wider: a request matching it is never refused for its form (the
/// order of `from` and `to` and the range limit are checked on top).
pub(super) const TIME_PATTERN: &str = concat!(
    "^(",
    "(19[7-9][0-9]|20[0-9]{2}|210[0-5])",
    "-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)",
    "|",
    "(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-5])",
    "-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)",
    "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])",
    ")$"
);

/// A checked `[from, to)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeRange {
    /// Inclusive.
    pub(super) from: u32,
    /// Exclusive.
    pub(super) to: u32,
}

impl TimeRange {
    /// `from` in microseconds, as `event_time_us` counts.
    pub(super) fn start_us(self) -> i64 {
        i64::from(self.from) * 1_000_000
    }

    /// `to` in microseconds.
    pub(super) fn end_us(self) -> i64 {
        i64::from(self.to) * 1_000_000
    }

    /// Whether both ends are whole UTC days, so that the daily rollup (`usage_rollup_daily`)
    /// answers for exactly this range.
    pub(super) fn on_days(self) -> bool {
        self.from.is_multiple_of(86_400) && self.to.is_multiple_of(86_400)
    }

    /// Whether both ends are whole quarter hours (UTC), so that the rollup (`usage_rollup`,
    /// one row per quarter hour) answers for exactly this range.
    pub(super) fn on_quarter_hours(self) -> bool {
        self.from.is_multiple_of(ROLLUP_GRAIN_SECS) && self.to.is_multiple_of(ROLLUP_GRAIN_SECS)
    }

    /// The whole quarter hours inside the range, when there is at least one: the part the rollup
    /// answers for, leaving a ragged edge of under a quarter hour at either end.
    pub(super) fn aligned_middle(self) -> Option<TimeRange> {
        let from = self
            .from
            .div_ceil(ROLLUP_GRAIN_SECS)
            .checked_mul(ROLLUP_GRAIN_SECS)?;
        let to = self.to / ROLLUP_GRAIN_SECS * ROLLUP_GRAIN_SECS;
        (from < to).then_some(TimeRange { from, to })
    }
}

/// The rollup's time grain: a quarter hour (schemas/clickhouse/0006_usage_rollup.sql).
const ROLLUP_GRAIN_SECS: u32 = 900;

/// A value of a parameter with a fixed set of spellings.
pub(super) trait Choice: Sized + Copy + 'static {
    /// Every spelling and its value, in the order listed in error messages.
    const ALL: &'static [(&'static str, Self)];

    /// The spelling of `self`.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL
            .iter()
            .find(|(_, value)| *value == self)
            .map_or("", |(name, _)| name)
    }
}

/// The query string of one request, checked against the names a route accepts.
#[derive(Debug, Default)]
pub(super) struct QueryParams {
    values: BTreeMap<&'static str, String>,
}

impl QueryParams {
    /// Parses `query`, accepting only `allowed` names, each at most once.
    pub(super) fn parse(query: Option<&str>, allowed: &[&'static str]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let Some(known) = allowed.iter().copied().find(|a| *a == name.as_ref()) else {
                let expected = if allowed.is_empty() {
                    "no query parameters".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::bad(
                    "unknown_parameter",
                    name.as_ref(),
                    format!(
                        "unknown query parameter {} (expected {expected})",
                        quote(&name)
                    ),
                ));
            };
            if values.contains_key(known) {
                return Err(ApiError::bad(
                    "invalid_parameter",
                    known,
                    format!(
                        "query parameter {known} given more than once (again as {})",
                        quote(&value)
                    ),
                ));
            }
            values.insert(known, value.into_owned());
        }
        Ok(Self { values })
    }

    /// The raw value of `name`, if given.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `from` and `to`, both required.
    pub(super) fn range(&self) -> Result<TimeRange, ApiError> {
        let from_raw = self.get("from").ok_or_else(|| missing_time("from"))?;
        let to_raw = self.get("to").ok_or_else(|| missing_time("to"))?;
        check_range(from_raw, to_raw)
    }

    /// `from` and `to`, both or neither.
    pub(super) fn optional_range(&self) -> Result<Option<TimeRange>, ApiError> {
        match (self.get("from"), self.get("to")) {
            (None, None) => Ok(None),
            _ => self.range().map(Some),
        }
    }

    /// `timezone`, UTC when absent.
    pub(super) fn timezone(&self) -> Result<Tz, ApiError> {
        match self.get("timezone") {
            None => Ok(Tz::UTC),
            Some(value) => parse_timezone(value),
        }
    }

    /// A [`Choice`] parameter, `None` when absent.
    pub(super) fn choice<T: Choice>(&self, name: &'static str) -> Result<Option<T>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        T::ALL
            .iter()
            .find(|(spelling, _)| *spelling == value)
            .map(|(_, choice)| Some(*choice))
            .ok_or_else(|| {
                let expected: Vec<&str> = T::ALL.iter().map(|(spelling, _)| *spelling).collect();
                ApiError::bad(
                    "invalid_parameter",
                    name,
                    format!(
                        "query parameter {name}: expected one of {}, found {}",
                        expected.join(", "),
                        quote(value)
                    ),
                )
            })
    }

    /// An integer in `min..=max`, `default` when absent.
    pub(super) fn integer(
        &self,
        name: &'static str,
        min: u32,
        max: u32,
        default: u32,
    ) -> Result<u32, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        value
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n) && value.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid_parameter",
                    name,
                    format!(
                        "query parameter {name}: expected an integer from {min} to {max}, found {}",
                        quote(value)
                    ),
                )
            })
    }

    /// `true` or `false`, `None` when absent.
    pub(super) fn boolean(&self, name: &'static str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(value) => Err(ApiError::bad(
                "invalid_parameter",
                name,
                format!(
                    "query parameter {name}: expected true or false, found {}",
                    quote(value)
                ),
            )),
        }
    }

    /// A time (RFC 3339 or `YYYY-MM-DD`, as `from` and `to`) in Unix seconds, `None` when absent.
    pub(super) fn time(&self, name: &'static str) -> Result<Option<u32>, ApiError> {
        self.get(name)
            .map(|value| parse_bound(name, value))
            .transpose()
    }

    /// A required `YYYY-MM` month.
    pub(super) fn month(&self, name: &'static str) -> Result<Month, ApiError> {
        let value = self.get(name).ok_or_else(|| {
            ApiError::bad(
                "missing_parameter",
                name,
                format!("missing query parameter {name} (a month, YYYY-MM)"),
            )
        })?;
        Month::parse(value).ok_or_else(|| {
            ApiError::bad(
                "invalid_parameter",
                name,
                format!(
                    "query parameter {name}: expected a month YYYY-MM between 1970-01 and 2106-01, \
                     found {}",
                    quote(value)
                ),
            )
        })
    }

    /// An optional id (owner, credential, customer) in the query string.
    pub(super) fn id(&self, name: &'static str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => {
                check_id("query parameter", name, value).map(|()| Some(value.to_owned()))
            }
        }
    }
}

/// A UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Month {
    pub(super) year: i32,
    pub(super) month: u32,
}

impl Month {
    /// `YYYY-MM`, within ClickHouse's `DateTime`.
    pub(super) fn parse(value: &str) -> Option<Self> {
        if value.len() != 7 || value.as_bytes()[4] != b'-' {
            return None;
        }
        let (year, month) = (&value[..4], &value[5..]);
        if !year
            .bytes()
            .chain(month.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let month = Self {
            year: year.parse().ok()?,
            month: month.parse().ok()?,
        };
        // The month must start and end inside ClickHouse's DateTime.
        let range = month.range()?;
        (range.from < range.to).then_some(month)
    }

    /// `[first day 00:00 UTC, next month's first day 00:00 UTC)`.
    pub(super) fn range(self) -> Option<TimeRange> {
        let start = NaiveDate::from_ymd_opt(self.year, self.month, 1)?;
        let next = if self.month == 12 {
            NaiveDate::from_ymd_opt(self.year + 1, 1, 1)?
        } else {
            NaiveDate::from_ymd_opt(self.year, self.month + 1, 1)?
        };
        let secs = |d: NaiveDate| u32::try_from(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp()).ok();
        Some(TimeRange {
            from: secs(start)?,
            to: secs(next)?,
        })
    }

    /// [`Month::range`] for a month taken from the query parameter `month`; a month that
    /// [`QueryParams::month`] accepted always has one.
    pub(super) fn checked_range(self) -> Result<TimeRange, ApiError> {
        self.range().ok_or_else(|| {
            ApiError::bad(
                "invalid_parameter",
                "month",
                format!("query parameter month: {self} is out of range"),
            )
        })
    }

    /// Days in the month.
    pub(super) fn days(self) -> u32 {
        self.range().map_or(0, |r| (r.to - r.from) / 86_400)
    }

    /// The first day.
    pub(super) fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).unwrap_or_default()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Checks an id given in the path or the query: `usr_…`, `bot_…`, `cr_…`, a customer key…
pub(super) fn check_id(kind: &str, name: &str, value: &str) -> Result<(), ApiError> {
    let valid = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_parameter",
            name,
            format!(
                "{kind} {name}: expected an id (letters, digits, _, - and ., at most \
                 {MAX_ID_LEN} characters), found {}",
                quote(value)
            ),
        ))
    }
}

/// A path parameter `name` as axum extracted it, or a 400 naming it.
pub(super) fn path_param(
    name: &'static str,
    extracted: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    extracted.map(|Path(value)| value).map_err(|rejection| {
        ApiError::bad(
            "invalid_parameter",
            name,
            format!("path parameter {name}: {}", rejection.body_text()),
        )
    })
}

/// `from` and `to` as given, checked.
fn check_range(from_raw: &str, to_raw: &str) -> Result<TimeRange, ApiError> {
    let from = parse_bound("from", from_raw)?;
    let to = parse_bound("to", to_raw)?;
    if from >= to {
        return Err(ApiError::bad(
            "invalid_range",
            "to",
            format!(
                "query parameter to must be after from ({}), found {}",
                quote(from_raw),
                quote(to_raw)
            ),
        ));
    }
    if i64::from(to - from) > MAX_RANGE_DAYS * 86_400 {
        return Err(ApiError::bad(
            "invalid_range",
            "to",
            format!(
                "query parameter to must be at most {MAX_RANGE_DAYS} days after from ({}), \
                 found {}",
                quote(from_raw),
                quote(to_raw)
            ),
        ));
    }
    Ok(TimeRange { from, to })
}

/// An IANA timezone name, exactly as the tz database spells it.
pub(super) fn parse_timezone(value: &str) -> Result<Tz, ApiError> {
    value.parse::<Tz>().map_err(|_| {
        ApiError::bad(
            "invalid_parameter",
            "timezone",
            format!(
                "query parameter timezone: expected an IANA time zone such as UTC, \
                 Europe/Berlin or America/New_York, found {}",
                quote(value)
            ),
        )
    })
}

fn missing_time(parameter: &'static str) -> ApiError {
    ApiError::bad(
        "missing_parameter",
        parameter,
        format!("missing query parameter {parameter} (an RFC 3339 time or a YYYY-MM-DD date)"),
    )
}

/// A range bound as Unix seconds within ClickHouse's `DateTime`.
fn parse_bound(parameter: &'static str, value: &str) -> Result<u32, ApiError> {
    let Some(time) = parse_time(value) else {
        let hint = if value.contains(' ') {
            " (a + in a URL means a space: send it as %2B)"
        } else {
            ""
        };
        return Err(ApiError::bad(
            "invalid_parameter",
            parameter,
            format!(
                "query parameter {parameter}: expected an RFC 3339 time or a YYYY-MM-DD date, \
                 found {}{hint}",
                quote(value)
            ),
        ));
    };
    u32::try_from(time.timestamp()).map_err(|_| {
        ApiError::bad(
            "invalid_parameter",
            parameter,
            format!(
                "query parameter {parameter}: expected a time between 1970-01-01T00:00:00Z and \
                 2106-02-07T06:28:15Z, found {}",
                quote(value)
            ),
        )
    })
}

/// An RFC 3339 time, or a `YYYY-MM-DD` date meaning 00:00 UTC that day. Fractions of a second are
/// kept here and dropped by the caller.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    if value.len() == 10 {
        let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
        // `%m`/`%d` also accept one digit; the length check plus this keeps the form exact.
        if date.format("%Y-%m-%d").to_string() != value {
            return None;
        }
        return Some(date.and_hms_opt(0, 0, 0)?.and_utc());
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

/// Unix seconds as RFC 3339 UTC (`2024-05-01T10:00:00Z`).
pub(crate) fn rfc3339(secs: u32) -> String {
    DateTime::<Utc>::from_timestamp(i64::from(secs), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Unix seconds as RFC 3339 in `tz` (`Z` for UTC, else the offset then in force).
pub(super) fn rfc3339_in(secs: u32, tz: Tz) -> String {
    let utc = DateTime::<Utc>::from_timestamp(i64::from(secs), 0).unwrap_or_default();
    if tz == Tz::UTC {
        utc.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        utc.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

/// Microseconds as RFC 3339 UTC, to the microsecond when it has a fraction.
pub(super) fn rfc3339_us(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// [`rfc3339_us`] of a time the audit log may not have (a deletion): `None` unless positive.
pub(super) fn rfc3339_us_if_set(micros: i64) -> Option<String> {
    (micros > 0).then(|| rfc3339_us(micros))
}

/// The UTC date of microseconds (1970-01-01 for those outside ClickHouse's `DateTime`).
pub(super) fn date_of_us(micros: i64) -> NaiveDate {
    date_of(u32::try_from(micros / 1_000_000).unwrap_or(0))
}

/// The date (`YYYY-MM-DD`) of Unix seconds in UTC.
pub(super) fn date_of(secs: u32) -> NaiveDate {
    DateTime::<Utc>::from_timestamp(i64::from(secs), 0)
        .unwrap_or_default()
        .date_naive()
}

/// Whole days between two dates (0 when `later` is earlier).
pub(super) fn days_between(earlier: NaiveDate, later: NaiveDate) -> i64 {
    (later.num_days_from_ce() - earlier.num_days_from_ce())
        .max(0)
        .into()
}

/// A value for an error message: quoted, escaped, and cut when long.
pub(super) fn quote(value: &str) -> String {
    const MAX_CHARS: usize = 100;
    if value.chars().count() <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX_CHARS).collect();
        format!("{cut:?}… ({} bytes)", value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aligned_middle_is_the_whole_quarter_hours_inside() {
        let range = |from, to| TimeRange { from, to };
        assert_eq!(range(1, 2_699).aligned_middle(), Some(range(900, 1_800)));
        assert_eq!(range(900, 1_800).aligned_middle(), Some(range(900, 1_800)));
        // Less than one whole quarter hour inside: none.
        assert_eq!(range(1, 1_799).aligned_middle(), None);
        assert_eq!(range(901, 1_799).aligned_middle(), None);
        assert_eq!(range(u32::MAX - 10, u32::MAX).aligned_middle(), None);
    }

    fn bad(result: Result<impl std::fmt::Debug, ApiError>) -> (String, String, String) {
        match result {
            Err(ApiError::BadParameter {
                code,
                parameter,
                message,
            }) => (code.to_owned(), parameter, message),
            other => panic!("expected a bad parameter, found {other:?}"),
        }
    }

    fn secs(rfc3339: &str) -> u32 {
        u32::try_from(DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp()).unwrap()
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let (code, parameter, message) =
            bad(QueryParams::parse(Some("from=1&form=2"), &["from", "to"]));
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("unknown_parameter", "form")
        );
        assert!(message.contains("expected from, to"), "{message}");
        let (code, parameter, _) = bad(QueryParams::parse(Some("x=1"), &[]));
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("unknown_parameter", "x")
        );
        let (code, parameter, message) =
            bad(QueryParams::parse(Some("to=1&to=2"), &["from", "to"]));
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("invalid_parameter", "to")
        );
        assert!(message.contains("more than once"), "{message}");
    }

    #[test]
    fn timezone_is_an_iana_name() {
        let params = |q: &str| QueryParams::parse(Some(q), &["timezone"]).unwrap();
        assert_eq!(params("").timezone().unwrap(), Tz::UTC);
        assert_eq!(
            params("timezone=Asia/Kolkata").timezone().unwrap(),
            Tz::Asia__Kolkata
        );
        for value in ["Mars/Olympus", "utc%27%20OR%201", "", "+05:30"] {
            let (code, parameter, message) = bad(params(&format!("timezone={value}")).timezone());
            assert_eq!(
                (code.as_str(), parameter.as_str()),
                ("invalid_parameter", "timezone")
            );
            assert!(message.contains("IANA"), "{message}");
        }
        // What reaches SQL is the database's spelling, which holds no quote.
        assert!(chrono_tz::TZ_VARIANTS.iter().all(|tz| tz
            .name()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-+".contains(&b))));
    }

    #[test]
    fn months_and_limits() {
        let params = |q: &str| QueryParams::parse(Some(q), &["month", "limit"]).unwrap();
        let may = params("month=2024-05").month("month").unwrap();
        assert_eq!(may.to_string(), "2024-05");
        assert_eq!(
            may.range().unwrap(),
            TimeRange {
                from: secs("2024-05-01T00:00:00Z"),
                to: secs("2024-06-01T00:00:00Z")
            }
        );
        assert_eq!(may.days(), 31);
        assert_eq!(
            params("month=2024-12")
                .month("month")
                .unwrap()
                .range()
                .unwrap()
                .to,
            secs("2025-01-01T00:00:00Z")
        );
        for value in [
            "2024-13", "2024-5", "24-05", "1969-12", "2106-02", "2024-00", "2024_05",
        ] {
            let (_, parameter, message) = bad(params(&format!("month={value}")).month("month"));
            assert_eq!(parameter, "month");
            assert!(message.contains(value), "{message}");
        }
        let (code, _, _) = bad(params("").month("month"));
        assert_eq!(code, "missing_parameter");
        assert_eq!(params("").integer("limit", 1, 1000, 10).unwrap(), 10);
        assert_eq!(
            params("limit=1000").integer("limit", 1, 1000, 10).unwrap(),
            1000
        );
        for value in ["0", "1001", "-1", "+5", "ten", ""] {
            let (_, parameter, message) =
                bad(params(&format!("limit={value}")).integer("limit", 1, 1000, 10));
            assert_eq!(parameter, "limit");
            assert!(message.contains("from 1 to 1000"), "{message}");
        }
    }

    #[test]
    fn booleans_and_single_times() {
        let params = |q: &str| QueryParams::parse(Some(q), &["deleted", "at"]).unwrap();
        assert_eq!(params("").boolean("deleted").unwrap(), None);
        assert_eq!(
            params("deleted=true").boolean("deleted").unwrap(),
            Some(true)
        );
        assert_eq!(
            params("deleted=false").boolean("deleted").unwrap(),
            Some(false)
        );
        for value in ["1", "yes", "True", ""] {
            let (_, parameter, message) =
                bad(params(&format!("deleted={value}")).boolean("deleted"));
            assert_eq!(parameter, "deleted");
            assert!(message.contains("true or false"), "{message}");
        }
        assert_eq!(params("").time("at").unwrap(), None);
        assert_eq!(
            params("at=2024-05-01").time("at").unwrap(),
            Some(secs("2024-05-01T00:00:00Z"))
        );
        let (_, parameter, message) = bad(params("at=yesterday").time("at"));
        assert_eq!(parameter, "at");
        assert!(message.contains("\"yesterday\""), "{message}");
    }

    #[test]
    fn ranges_are_both_or_neither() {
        let params = |q: &str| QueryParams::parse(Some(q), &["from", "to"]).unwrap();
        assert_eq!(params("").optional_range().unwrap(), None);
        let (code, parameter, _) = bad(params("from=2024-05-01").optional_range());
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("missing_parameter", "to")
        );
        assert_eq!(
            params("from=2024-05-01&to=2024-05-02").range().unwrap().to,
            secs("2024-05-02T00:00:00Z")
        );
    }

    #[test]
    fn times_render_in_the_zone() {
        let t = secs("2024-05-01T09:30:00Z");
        assert_eq!(rfc3339_in(t, Tz::UTC), "2024-05-01T09:30:00Z");
        assert_eq!(
            rfc3339_in(t, Tz::Asia__Kolkata),
            "2024-05-01T15:00:00+05:30"
        );
        assert_eq!(
            rfc3339_us(1_714_555_800_000_001),
            "2024-05-01T09:30:00.000001Z"
        );
    }

    #[test]
    fn ids_are_checked() {
        for value in ["", "a b", "x'--", "ü", &"a".repeat(129)] {
            let (code, parameter, _) = bad(check_id("path parameter", "owner_id", value));
            assert_eq!(
                (code.as_str(), parameter.as_str()),
                ("invalid_parameter", "owner_id")
            );
        }
        check_id("path parameter", "id", "acme.corp-1_x").unwrap();
    }
}
