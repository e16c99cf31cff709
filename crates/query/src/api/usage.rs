//! `GET /v1/owners/{owner_id}/usage?from=…&to=…`: one owner's attributed usage per hour.
//!
//! - `from` (inclusive) and `to` (exclusive) are RFC 3339 times (`2024-05-01T10:00:00Z`,
//!   `2024-05-01T12:00:00%2B02:00`: a `+` in a URL must be sent as `%2B`) or dates (`2024-05-01`,
//!   meaning 00:00 UTC that day, so `from=2024-05-01&to=2024-05-02` is that whole day). Both are taken
//!   to the whole second, the resolution of `event_time`; `from < to`, at most [`MAX_RANGE_DAYS`] days
//!   apart, within ClickHouse's `DateTime` (1970 to 2106).
//! - Only rows with `status = 'attributed'` for that `owner_id` count. Buckets are the hours
//!   (`toStartOfHour(event_time)`, UTC) holding at least one such row, in order; hours without usage
//!   are omitted. `totals` is the sum of the buckets.
//! - The SQL is `crates/query/sql/owner_usage_hourly.sql`, shared with the Python test that runs it on
//!   current ClickHouse; every value is bound, never spliced into the text.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::error::with_deadline;
use crate::rows::status;

/// Longest range one request may ask for.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Four placeholders: owner_id, status, from and to (Unix seconds).
const OWNER_USAGE_HOURLY_SQL: &str = include_str!("../../sql/owner_usage_hourly.sql");

const GRANULARITY: &str = "hour";
const MAX_OWNER_ID_LEN: usize = 128;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/owners/{owner_id}/usage", get(owner_usage))
}

/// The response of the usage endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The owner asked for.
    pub owner_id: String,
    /// Start of the range (inclusive), RFC 3339 UTC.
    pub from: String,
    /// End of the range (exclusive), RFC 3339 UTC.
    pub to: String,
    /// Always `hour`.
    pub granularity: String,
    /// One per hour with usage, in order.
    pub buckets: Vec<UsageBucket>,
    /// Sum of the buckets.
    pub totals: UsageMetrics,
}

/// One hour of usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBucket {
    /// Start of the hour, RFC 3339 UTC.
    pub start: String,
    /// Bytes that arrived at the owner's endpoints (connection events).
    pub bytes_in: u64,
    /// Bytes that left the owner's endpoints (connection events).
    pub bytes_out: u64,
    /// HTTP requests.
    pub http_requests: u64,
    /// TCP connections.
    pub tcp_connections: u64,
}

/// Sums over a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageMetrics {
    /// Bytes that arrived at the owner's endpoints (connection events).
    pub bytes_in: u64,
    /// Bytes that left the owner's endpoints (connection events).
    pub bytes_out: u64,
    /// HTTP requests.
    pub http_requests: u64,
    /// TCP connections.
    pub tcp_connections: u64,
}

/// One row of `owner_usage_hourly.sql`, positional.
#[derive(Debug, Row, Deserialize)]
struct HourRow {
    hour_start: u32,
    sum_bytes_in: u64,
    sum_bytes_out: u64,
    sum_http_requests: u64,
    sum_tcp_connections: u64,
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsageRequest {
    owner_id: String,
    /// Unix seconds, inclusive.
    from: u32,
    /// Unix seconds, exclusive.
    to: u32,
}

async fn owner_usage(
    State(state): State<AppState>,
    owner_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageReport>, ApiError> {
    let owner_id = owner_id.map_err(|rejection| {
        ApiError::bad(
            "invalid_parameter",
            "owner_id",
            format!("path parameter owner_id: {}", rejection.body_text()),
        )
    })?;
    let request = parse_request(&owner_id, query.as_deref())?;
    let rows = with_deadline(
        format!("read hourly usage of owner {:?}", request.owner_id),
        state.query_timeout,
        state
            .client
            .query(OWNER_USAGE_HOURLY_SQL)
            .bind(request.owner_id.as_str())
            .bind(status::ATTRIBUTED)
            .bind(request.from)
            .bind(request.to)
            .fetch_all::<HourRow>(),
    )
    .await?;
    Ok(Json(report(request, rows)))
}

fn report(request: UsageRequest, rows: Vec<HourRow>) -> UsageReport {
    let mut totals = UsageMetrics::default();
    let buckets = rows
        .into_iter()
        .map(|row| {
            totals.bytes_in = totals.bytes_in.saturating_add(row.sum_bytes_in);
            totals.bytes_out = totals.bytes_out.saturating_add(row.sum_bytes_out);
            totals.http_requests = totals.http_requests.saturating_add(row.sum_http_requests);
            totals.tcp_connections = totals
                .tcp_connections
                .saturating_add(row.sum_tcp_connections);
            UsageBucket {
                start: rfc3339(row.hour_start),
                bytes_in: row.sum_bytes_in,
                bytes_out: row.sum_bytes_out,
                http_requests: row.sum_http_requests,
                tcp_connections: row.sum_tcp_connections,
            }
        })
        .collect();
    UsageReport {
        owner_id: request.owner_id,
        from: rfc3339(request.from),
        to: rfc3339(request.to),
        granularity: GRANULARITY.to_owned(),
        buckets,
        totals,
    }
}

fn rfc3339(secs: u32) -> String {
    DateTime::<Utc>::from_timestamp(i64::from(secs), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Checks the path and query parameters, in a fixed order so that the error is predictable.
fn parse_request(owner_id: &str, query: Option<&str>) -> Result<UsageRequest, ApiError> {
    check_owner_id(owner_id)?;

    let mut from = None;
    let mut to = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "from" => &mut from,
            "to" => &mut to,
            other => {
                return Err(ApiError::bad(
                    "unknown_parameter",
                    other,
                    format!(
                        "unknown query parameter {} (expected from and to)",
                        quote(other)
                    ),
                ))
            }
        };
        if slot.is_some() {
            return Err(ApiError::bad(
                "invalid_parameter",
                name.as_ref(),
                format!(
                    "query parameter {name} given more than once (again as {})",
                    quote(&value)
                ),
            ));
        }
        *slot = Some(value.into_owned());
    }
    let from_raw = from.ok_or_else(|| missing("from"))?;
    let to_raw = to.ok_or_else(|| missing("to"))?;
    let from = parse_bound("from", &from_raw)?;
    let to = parse_bound("to", &to_raw)?;

    if from >= to {
        return Err(ApiError::bad(
            "invalid_range",
            "to",
            format!(
                "query parameter to must be after from ({}), found {}",
                quote(&from_raw),
                quote(&to_raw)
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
                quote(&from_raw),
                quote(&to_raw)
            ),
        ));
    }
    Ok(UsageRequest {
        owner_id: owner_id.to_owned(),
        from,
        to,
    })
}

fn check_owner_id(owner_id: &str) -> Result<(), ApiError> {
    let valid = !owner_id.is_empty()
        && owner_id.len() <= MAX_OWNER_ID_LEN
        && owner_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_parameter",
            "owner_id",
            format!(
                "path parameter owner_id: expected an owner id such as usr_… or bot_… \
                 (letters, digits, _ and -, at most {MAX_OWNER_ID_LEN} characters), found {}",
                quote(owner_id)
            ),
        ))
    }
}

fn missing(parameter: &'static str) -> ApiError {
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

/// A value for an error message: quoted, escaped, and cut when long.
fn quote(value: &str) -> String {
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
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;

    fn bad(owner: &str, query: &str) -> (String, String, String) {
        match parse_request(owner, Some(query)) {
            Err(ApiError::BadParameter {
                code,
                parameter,
                message,
            }) => (code.to_owned(), parameter, message),
            other => panic!("expected a bad parameter for {owner:?} {query:?}, found {other:?}"),
        }
    }

    fn secs(rfc3339: &str) -> u32 {
        u32::try_from(DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp()).unwrap()
    }

    #[test]
    fn parses_dates_and_rfc3339_times() {
        let request = parse_request(
            "bot_1",
            Some("from=2024-05-01&to=2024-05-01T12:30:00%2B02:00"),
        )
        .unwrap();
        assert_eq!(
            request,
            UsageRequest {
                owner_id: "bot_1".to_owned(),
                from: secs("2024-05-01T00:00:00Z"),
                to: secs("2024-05-01T10:30:00Z"),
            }
        );
        // Fractions are dropped: event_time has whole seconds.
        let request = parse_request(
            "usr_1",
            Some("to=2024-05-02T00:00:00.999Z&from=2024-05-01T00:00:00.5Z"),
        )
        .unwrap();
        assert_eq!(
            (request.from, request.to),
            (secs("2024-05-01T00:00:00Z"), secs("2024-05-02T00:00:00Z"))
        );
    }

    #[test]
    fn parse_time_is_strict() {
        for value in [
            "2024-5-01",
            "2024-05-1",
            "2024-02-30",
            "20240501",
            "2024-05-01T10:00:00",
            "now",
            "",
        ] {
            assert_eq!(parse_time(value), None, "{value:?}");
        }
        assert_eq!(
            parse_time("2024-05-01T10:00:00-01:00").unwrap().timestamp(),
            i64::from(secs("2024-05-01T11:00:00Z"))
        );
    }

    #[test]
    fn missing_and_unknown_parameters() {
        let (code, parameter, _) = bad("bot_1", "to=2024-05-02");
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("missing_parameter", "from")
        );
        let (code, parameter, _) = bad("bot_1", "from=2024-05-01");
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("missing_parameter", "to")
        );
        let (code, parameter, message) = bad("bot_1", "from=2024-05-01&to=2024-05-02&form=x");
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("unknown_parameter", "form")
        );
        assert!(message.contains("\"form\""), "{message}");
        let (code, parameter, message) =
            bad("bot_1", "from=2024-05-01&from=2024-05-02&to=2024-05-03");
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("invalid_parameter", "from")
        );
        assert!(message.contains("more than once"), "{message}");
        assert!(parse_request("bot_1", None).is_err());
    }

    #[test]
    fn invalid_values_name_parameter_and_value() {
        let (code, parameter, message) = bad("bot_1", "from=yesterday&to=2024-05-02");
        assert_eq!(
            (code.as_str(), parameter.as_str()),
            ("invalid_parameter", "from")
        );
        assert!(
            message.contains("query parameter from") && message.contains("\"yesterday\""),
            "{message}"
        );

        // An unencoded + arrives as a space.
        let (_, parameter, message) = bad("bot_1", "from=2024-05-01&to=2024-05-01T12:00:00+02:00");
        assert_eq!(parameter, "to");
        assert!(message.contains("%2B"), "{message}");

        let (_, parameter, message) = bad("bot_1", "from=1969-12-31&to=1970-01-02");
        assert_eq!(parameter, "from");
        assert!(message.contains("1970-01-01T00:00:00Z"), "{message}");
        let (_, parameter, _) = bad("bot_1", "from=2106-01-01&to=2106-12-31");
        assert_eq!(parameter, "to");
    }

    #[test]
    fn range_must_be_ordered_and_bounded() {
        let (code, parameter, message) = bad("bot_1", "from=2024-05-02&to=2024-05-01");
        assert_eq!((code.as_str(), parameter.as_str()), ("invalid_range", "to"));
        assert!(
            message.contains("\"2024-05-01\"") && message.contains("\"2024-05-02\""),
            "{message}"
        );
        let (code, _, _) = bad("bot_1", "from=2024-05-01&to=2024-05-01");
        assert_eq!(code, "invalid_range");

        // 2024 is a leap year: 366 days is the whole year, one second more is too much.
        parse_request("bot_1", Some("from=2024-01-01&to=2025-01-01")).unwrap();
        let (code, _, message) = bad("bot_1", "from=2024-01-01&to=2025-01-01T00:00:01Z");
        assert_eq!(code, "invalid_range");
        assert!(message.contains("366 days"), "{message}");
    }

    #[test]
    fn owner_id_is_checked() {
        for owner in [
            "",
            "usr 1",
            "usr_1'; DROP TABLE x",
            "usr_ü",
            &"a".repeat(129),
        ] {
            let (code, parameter, _) = bad(owner, "from=2024-05-01&to=2024-05-02");
            assert_eq!(
                (code.as_str(), parameter.as_str()),
                ("invalid_parameter", "owner_id"),
                "{owner:?}"
            );
        }
        parse_request("bot_2Mk-x_9", Some("from=2024-05-01&to=2024-05-02")).unwrap();
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(5000);
        let (_, _, message) = bad("bot_1", &format!("from={long}&to=2024-05-02"));
        assert!(message.len() < 400, "{}", message.len());
        assert!(message.contains("5000 bytes"), "{message}");
    }

    #[test]
    fn sql_has_four_placeholders() {
        assert_eq!(OWNER_USAGE_HOURLY_SQL.matches('?').count(), 4);
    }

    #[test]
    fn report_sums_buckets() {
        let request = UsageRequest {
            owner_id: "bot_1".to_owned(),
            from: secs("2024-05-01T00:00:00Z"),
            to: secs("2024-05-02T00:00:00Z"),
        };
        let row = |hour: &str, n: u64| HourRow {
            hour_start: secs(hour),
            sum_bytes_in: n,
            sum_bytes_out: 2 * n,
            sum_http_requests: 3 * n,
            sum_tcp_connections: 4 * n,
        };
        let report = report(
            request,
            vec![
                row("2024-05-01T10:00:00Z", 1),
                row("2024-05-01T11:00:00Z", 10),
            ],
        );
        assert_eq!(report.from, "2024-05-01T00:00:00Z");
        assert_eq!(report.to, "2024-05-02T00:00:00Z");
        assert_eq!(report.buckets[1].start, "2024-05-01T11:00:00Z");
        assert_eq!(
            report.totals,
            UsageMetrics {
                bytes_in: 11,
                bytes_out: 22,
                http_requests: 33,
                tcp_connections: 44
            }
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["granularity"], "hour");
        assert_eq!(json["buckets"][0]["bytes_out"], 2);
    }

    #[tokio::test]
    async fn router_answers_400_without_clickhouse() {
        let cases = [
            ("/v1/owners/bot_1/usage", "from"),
            ("/v1/owners/bot_1/usage?from=2024-05-01", "to"),
            ("/v1/owners/bot_1/usage?from=bad&to=2024-05-02", "\"bad\""),
            (
                "/v1/owners/bot_1/usage?from=2024-05-03&to=2024-05-02",
                "to must be after from",
            ),
            (
                "/v1/owners/bot%201/usage?from=2024-05-01&to=2024-05-02",
                "\"bot 1\"",
            ),
            (
                "/v1/owners/%FF/usage?from=2024-05-01&to=2024-05-02",
                "owner_id",
            ),
        ];
        for (uri, needle) in cases {
            let (status, content_type, body) = call(unreachable_state(), "GET", uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert!(content_type.starts_with("application/json"), "{uri}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{uri}: {message}");
            assert!(
                body["error"]["code"]
                    .as_str()
                    .unwrap()
                    .ends_with("_parameter")
                    || body["error"]["code"] == "invalid_range"
            );
        }
    }

    #[tokio::test]
    async fn router_answers_503_when_clickhouse_is_down() {
        let uri = "/v1/owners/bot_1/usage?from=2024-05-01&to=2024-05-02";
        let (status, _, body) = call(unreachable_state(), "GET", uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "unavailable");
    }
}
