//! `GET /v1/owners/{owner_id}/usage?from=…&to=…[&granularity=hour|day|month][&timezone=…]
//! [&group_by=credential|endpoint|metadata.<key>]`: one owner's attributed usage per bucket.
//!
//! - `from` (inclusive) and `to` (exclusive): see [`super::params`]; at most
//!   [`MAX_RANGE_DAYS`](super::MAX_RANGE_DAYS) days.
//! - Buckets are the local hours (default), days or months of `timezone` (an IANA name, default
//!   UTC) holding attributed traffic, in order; others are omitted (as before sessions were
//!   reported, so existing clients see the same list). Buckets with agent sessions but no traffic
//!   are in `session_only_buckets`: the two lists together cover every bucket with usage, and
//!   `totals` covers both. Each bucket has the four traffic
//!   metrics (`bytes_in`, `bytes_out`, `http_requests`, `tcp_connections`, summed times `sign`),
//!   `endpoints` (distinct endpoints with usage), `active_endpoint_hours` (endpoint-hours with
//!   outgoing bytes, hours of `timezone`), `agent_sessions` (sessions running in the bucket) and
//!   `session_hours` (their time within the bucket and the range). `totals` covers the range:
//!   endpoints and sessions are counted once however many buckets they span.
//! - `group_by` adds `groups`: the same per credential (with its sessions, description and
//!   metadata), per endpoint (without sessions, which serve several endpoints), or per value of a
//!   key of the credentials' metadata as of each event's time (`metadata.<key>`, without
//!   sessions; see [`super::metadata_groups`]).
//! - The SQL is `crates/query/sql/usage_buckets.sql` and `agent_sessions.sql` (see
//!   [`super::report`]), every value bound.
//! - A `customer:<id>` key reads an owner that is one of that customer's bot users at some time in
//!   the range, and only its usage while it is ([`super::tenancy`]); 404 otherwise.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::metadata_groups::{self, MetadataKey};
use super::params::{check_id, path_param, rfc3339, Choice, QueryParams, TimeRange};
use super::report::{self, Granularity, GroupBy, SeriesSpec};
use super::{ApiError, AppState};

pub use super::report::{UsageBucket, UsageGroup, UsageMetrics};

const PARAMETERS: &[&str] = &["from", "to", "granularity", "timezone", "group_by"];

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/owners/{owner_id}/usage", get(owner_usage))
}

/// The response of the usage endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// The owner asked for.
    pub owner_id: String,
    /// Start of the range (inclusive), RFC 3339 UTC.
    pub from: String,
    /// End of the range (exclusive), RFC 3339 UTC.
    pub to: String,
    /// `hour`, `day` or `month`.
    pub granularity: String,
    /// The IANA time zone of the buckets.
    #[serde(default = "utc")]
    pub timezone: String,
    /// `credential`, `endpoint` or `metadata.<key>` when grouped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// One per bucket with attributed traffic, in order (with that bucket's sessions too).
    pub buckets: Vec<UsageBucket>,
    /// One per bucket with agent sessions but no traffic, in order.
    #[serde(default)]
    pub session_only_buckets: Vec<UsageBucket>,
    /// Over the whole range.
    pub totals: UsageMetrics,
    /// Per credential, endpoint or metadata value, when `group_by` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<UsageGroup>>,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// A checked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UsageRequest {
    pub(super) owner_id: String,
    pub(super) range: TimeRange,
    pub(super) granularity: Granularity,
    pub(super) tz: Tz,
    pub(super) group_by: Option<GroupBy>,
    /// `group_by=metadata.<key>` (then `group_by` is `None`).
    pub(super) metadata_key: Option<MetadataKey>,
}

/// Attributed usage of one owner per bucket.
#[utoipa::path(
    get,
    path = "/v1/owners/{owner_id}/usage",
    tag = "usage",
    params(
        ("owner_id" = String, Path, description = "The owner: `usr_…` or `bot_…`"),
        ("from" = String, Query, description = "Start, inclusive: RFC 3339 or YYYY-MM-DD (00:00 UTC)"),
        ("to" = String, Query, description = "End, exclusive: RFC 3339 or YYYY-MM-DD; at most 366 days after from"),
        ("granularity" = Option<String>, Query, description = "`hour` (default), `day` or `month`"),
        ("timezone" = Option<String>, Query, description = "IANA time zone of the buckets, default UTC"),
        ("group_by" = Option<String>, Query, description = "`credential`, `endpoint` or `metadata.<key>` (a key of the credentials' JSON metadata, as of each event's time; `(none)` groups credentials without it)"),
    ),
    responses(
        (status = 200, description = "Usage per bucket", body = UsageReport),
        (status = 400, description = "A bad parameter, named in the message", body = super::openapi::ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = super::openapi::ErrorBody),
        (status = 404, description = "Not visible to this customer key: the owner is not one of its customer's bot users at any time in the range (the rule of the customer report; a customer key sees an owner's usage while it is its customer's only)", body = super::openapi::ErrorBody),
        (status = 503, description = "ClickHouse is unavailable", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn owner_usage(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    owner_id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<UsageReport>, ApiError> {
    let owner_id = path_param("owner_id", owner_id)?;
    let request = parse_request(&owner_id, query.as_deref())?;
    let scope = access
        .owner_scope(&state, &request.owner_id, request.range)
        .await?;
    let spec = SeriesSpec {
        scope,
        range: request.range,
        tz: request.tz,
        granularity: request.granularity,
        group_by: request.group_by,
    };
    let series = report::series(&state, &spec).await?;
    let mut groups = series.groups;
    if let Some(key) = &request.metadata_key {
        groups = Some(metadata_groups::groups(&state, &spec, key).await?);
    }
    if let (Some(GroupBy::Credential), Some(groups)) = (request.group_by, groups.as_mut()) {
        let ids: Vec<String> = groups.iter().map(|g| g.key.clone()).collect();
        let latest = metadata_groups::latest_versions(&state, &ids, request.range).await?;
        for group in groups {
            if let Some((description, metadata)) = latest.get(&group.key) {
                group.description = Some(description.clone());
                group.metadata = Some(metadata.clone());
            }
        }
    }
    let group_by = match &request.metadata_key {
        Some(key) => Some(format!("{}{}", metadata_groups::PREFIX, key.0)),
        None => request.group_by.map(|g| g.name().to_owned()),
    };
    Ok(Json(UsageReport {
        owner_id: request.owner_id,
        from: rfc3339(request.range.from),
        to: rfc3339(request.range.to),
        granularity: request.granularity.name().to_owned(),
        timezone: request.tz.name().to_owned(),
        group_by,
        buckets: series.buckets,
        session_only_buckets: series.session_only,
        totals: series.totals,
        groups,
    }))
}

/// Checks the path and query parameters, in a fixed order so that the error is predictable.
pub(super) fn parse_request(owner_id: &str, query: Option<&str>) -> Result<UsageRequest, ApiError> {
    check_id("path parameter", "owner_id", owner_id)?;
    let params = QueryParams::parse(query, PARAMETERS)?;
    let range = params.range()?;
    let granularity = params.choice("granularity")?.unwrap_or(Granularity::Hour);
    let tz = params.timezone()?;
    let (group_by, metadata_key) = match params.get("group_by").and_then(MetadataKey::parse) {
        Some(key) => (None, Some(key?)),
        None => (params.choice("group_by")?, None),
    };
    Ok(UsageRequest {
        owner_id: owner_id.to_owned(),
        range,
        granularity,
        tz,
        group_by,
        metadata_key,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::api::params::parse_time;
    use axum::http::StatusCode;
    use chrono::DateTime;

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
                range: TimeRange {
                    from: secs("2024-05-01T00:00:00Z"),
                    to: secs("2024-05-01T10:30:00Z"),
                },
                granularity: Granularity::Hour,
                tz: Tz::UTC,
                group_by: None,
                metadata_key: None,
            }
        );
        // Fractions are dropped: event_time has whole seconds.
        let request = parse_request(
            "usr_1",
            Some("to=2024-05-02T00:00:00.999Z&from=2024-05-01T00:00:00.5Z"),
        )
        .unwrap();
        assert_eq!(
            (request.range.from, request.range.to),
            (secs("2024-05-01T00:00:00Z"), secs("2024-05-02T00:00:00Z"))
        );
        let request = parse_request(
            "usr_1",
            Some("from=2024-05-01&to=2024-06-01&granularity=day&timezone=Europe/Berlin&group_by=endpoint"),
        )
        .unwrap();
        assert_eq!(
            (request.granularity, request.tz, request.group_by),
            (
                Granularity::Day,
                Tz::Europe__Berlin,
                Some(GroupBy::Endpoint)
            )
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

        for (query, parameter, value) in [
            ("granularity=week", "granularity", "\"week\""),
            ("timezone=Mars/Olympus", "timezone", "\"Mars/Olympus\""),
            ("timezone=utc", "timezone", "\"utc\""),
            ("group_by=owner", "group_by", "\"owner\""),
        ] {
            let (code, got, message) =
                bad("bot_1", &format!("from=2024-05-01&to=2024-05-02&{query}"));
            assert_eq!(
                (code.as_str(), got.as_str()),
                ("invalid_parameter", parameter)
            );
            assert!(message.contains(value), "{message}");
        }
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
    fn report_json_keeps_the_old_fields() {
        let report = UsageReport {
            owner_id: "bot_1".to_owned(),
            from: "2024-05-01T00:00:00Z".to_owned(),
            to: "2024-05-02T00:00:00Z".to_owned(),
            granularity: "hour".to_owned(),
            timezone: "UTC".to_owned(),
            group_by: None,
            buckets: vec![UsageBucket {
                start: "2024-05-01T10:00:00Z".to_owned(),
                metrics: UsageMetrics {
                    bytes_out: 2,
                    agent_sessions: Some(1),
                    session_hours: Some(0.5),
                    ..UsageMetrics::default()
                },
            }],
            session_only_buckets: Vec::new(),
            totals: UsageMetrics::default(),
            groups: None,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["granularity"], "hour");
        assert_eq!(json["buckets"][0]["start"], "2024-05-01T10:00:00Z");
        assert_eq!(json["buckets"][0]["bytes_out"], 2);
        assert_eq!(json["buckets"][0]["session_hours"], 0.5);
        for field in ["bytes_in", "bytes_out", "http_requests", "tcp_connections"] {
            assert_eq!(json["totals"][field], 0, "{field}");
        }
        assert!(json.get("groups").is_none());
        // An old client's body (four metrics per bucket) still reads.
        let old: UsageReport = serde_json::from_str(
            r#"{"owner_id":"b","from":"f","to":"t","granularity":"hour","buckets":[{"start":"s",
            "bytes_in":1,"bytes_out":2,"http_requests":3,"tcp_connections":4}],
            "totals":{"bytes_in":1,"bytes_out":2,"http_requests":3,"tcp_connections":4}}"#,
        )
        .unwrap();
        assert_eq!(old.buckets[0].metrics.tcp_connections, 4);
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
            (
                "/v1/owners/bot_1/usage?from=2024-05-01&to=2024-05-02&timezone=Europe%2FAtlantis",
                "\"Europe/Atlantis\"",
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
