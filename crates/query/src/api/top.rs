//! `GET /v1/usage/top?metric=…&from=…&to=…&limit=…[&group_by=metadata.<key>]`: the owners that
//! used the most of one metric (`bytes_out` by default; `bytes_in`, `http_requests`,
//! `tcp_connections`, `active_endpoint_hours`), `limit` of them (1 to 1000, default 10), ties by
//! owner id. Active endpoint hours here are UTC hours. SQL: `crates/query/sql/owner_totals.sql`.
//! With `group_by=metadata.<key>`, the values of a key of the credentials' metadata (as of each
//! event's time, `(none)` without it) are ranked instead, in `groups` (see
//! [`super::metadata_groups`]); `owners` is then empty.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::metadata_groups::{self, MetadataKey};
use super::params::{rfc3339, Choice, QueryParams, TimeRange};
use super::report::UsageMetrics;
use super::{ApiError, AppState};
use crate::rows::status;

/// Placeholders: metric, status, from, to, limit.
pub(super) const OWNER_TOTALS_SQL: &str = include_str!("../../sql/owner_totals.sql");
/// The same query over the rollup, for ranges on whole quarter hours; the same placeholders.
pub(super) const OWNER_TOTALS_ROLLUP_SQL: &str = include_str!("../../sql/owner_totals_rollup.sql");
/// Ranked from the daily rollup, for ranges on whole UTC days; see the file for its placeholders.
pub(super) const OWNER_TOTALS_TOP_SQL: &str = include_str!("../../sql/owner_totals_top.sql");

/// Most owners one request may ask for.
pub const MAX_TOP_LIMIT: u32 = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/usage/top", get(top))
}

/// A metric owners can be ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RankMetric {
    BytesIn,
    BytesOut,
    HttpRequests,
    TcpConnections,
    ActiveEndpointHours,
}

impl RankMetric {
    /// This metric of `usage`.
    pub(super) fn of(self, usage: &UsageMetrics) -> u64 {
        match self {
            Self::BytesIn => usage.bytes_in,
            Self::BytesOut => usage.bytes_out,
            Self::HttpRequests => usage.http_requests,
            Self::TcpConnections => usage.tcp_connections,
            Self::ActiveEndpointHours => usage.active_endpoint_hours,
        }
    }
}

impl Choice for RankMetric {
    const ALL: &'static [(&'static str, Self)] = &[
        ("bytes_out", Self::BytesOut),
        ("bytes_in", Self::BytesIn),
        ("http_requests", Self::HttpRequests),
        ("tcp_connections", Self::TcpConnections),
        ("active_endpoint_hours", Self::ActiveEndpointHours),
    ];
}

/// One row of `owner_totals.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct OwnerTotalsRow {
    pub(super) owner_id: String,
    pub(super) owner_kind: String,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) http_requests: u64,
    pub(super) tcp_connections: u64,
    pub(super) endpoints: u64,
    pub(super) active_endpoint_hours: u64,
}

impl OwnerTotalsRow {
    pub(super) fn metrics(&self) -> UsageMetrics {
        UsageMetrics {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            http_requests: self.http_requests,
            tcp_connections: self.tcp_connections,
            endpoints: self.endpoints,
            active_endpoint_hours: self.active_endpoint_hours,
            agent_sessions: None,
            session_hours: None,
        }
    }
}

/// Usage per owner over `range`, ranked. The same answer from the cheapest source that has it:
/// on whole UTC days, ranked by a summed metric, the owners are ranked from the daily rollup and
/// only the top ones read from the quarter-hour rollup (`owner_totals_top.sql`); on quarter hours,
/// everything from the quarter-hour rollup; otherwise from the raw rows.
pub(super) async fn owner_totals(
    state: &AppState,
    range: TimeRange,
    metric: RankMetric,
    limit: u32,
) -> Result<Vec<OwnerTotalsRow>, ApiError> {
    let top = range.on_days() && metric != RankMetric::ActiveEndpointHours;
    let sql = if range.on_quarter_hours() {
        OWNER_TOTALS_ROLLUP_SQL
    } else {
        OWNER_TOTALS_SQL
    };
    let query = |client: clickhouse::Client| {
        if top {
            client
                .query(OWNER_TOTALS_TOP_SQL)
                .bind(metric.name())
                .bind(status::ATTRIBUTED)
                .bind(range.from)
                .bind(range.to)
                .bind(status::ATTRIBUTED)
                .bind(range.from)
                .bind(range.to)
                .bind(metric.name())
                .bind(metric.name())
                .bind(metric.name())
                .bind(limit)
                .bind(limit)
        } else {
            client
                .query(sql)
                .bind(metric.name())
                .bind(status::ATTRIBUTED)
                .bind(range.from)
                .bind(range.to)
                .bind(limit)
        }
    };
    Ok(state
        .read("read usage per owner", |client| {
            query(client).fetch_all::<OwnerTotalsRow>()
        })
        .await?)
}

/// The response of `/v1/usage/top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopReport {
    /// The ranking metric.
    pub metric: String,
    /// Start of the range (inclusive), RFC 3339 UTC.
    pub from: String,
    /// End of the range (exclusive), RFC 3339 UTC.
    pub to: String,
    /// The owners, largest first (empty with `group_by`).
    pub owners: Vec<TopOwner>,
    /// `metadata.<key>` when the metadata values are ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// The metadata values, largest first, with `group_by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<TopGroup>>,
}

/// One ranked metadata value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopGroup {
    /// 1 for the largest.
    pub rank: u32,
    /// The value (`(none)` for credentials without the key).
    pub key: String,
    /// Its usage over the range.
    pub usage: UsageMetrics,
}

/// One ranked owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopOwner {
    /// 1 for the largest.
    pub rank: u32,
    /// `usr_…` or `bot_…`.
    pub owner_id: String,
    /// `user` or `bot_user`.
    pub owner_kind: String,
    /// Its usage over the range.
    pub usage: UsageMetrics,
}

/// The owners that used the most.
#[utoipa::path(
    get,
    path = "/v1/usage/top",
    tag = "usage",
    params(
        ("metric" = Option<String>, Query, description = "bytes_out (default), bytes_in, http_requests, tcp_connections or active_endpoint_hours"),
        ("from" = String, Query, description = "Start, inclusive: RFC 3339 or YYYY-MM-DD"),
        ("to" = String, Query, description = "End, exclusive; at most 366 days after from"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 10"),
        ("group_by" = Option<String>, Query, description = "`metadata.<key>`: rank the values of a key of the credentials' JSON metadata (as of each event's time) instead of owners"),
    ),
    responses(
        (status = 200, body = TopReport),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn top(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<TopReport>, ApiError> {
    access.require_reader()?;
    let params = QueryParams::parse(
        query.as_deref(),
        &["metric", "from", "to", "limit", "group_by"],
    )?;
    let metric = params.choice("metric")?.unwrap_or(RankMetric::BytesOut);
    let range = params.range()?;
    let limit = params.integer("limit", 1, MAX_TOP_LIMIT, 10)?;
    if let Some(group_by) = params.get("group_by") {
        let key = MetadataKey::parse(group_by).unwrap_or_else(|| {
            Err(ApiError::bad(
                "invalid_parameter",
                "group_by",
                format!("query parameter group_by: expected metadata.<key>, found {group_by:?}"),
            ))
        })?;
        let ranked = metadata_groups::ranked(&state, range, &key, |m| metric.of(m), limit).await?;
        return Ok(Json(TopReport {
            metric: metric.name().to_owned(),
            from: rfc3339(range.from),
            to: rfc3339(range.to),
            owners: Vec::new(),
            group_by: Some(format!("{}{}", metadata_groups::PREFIX, key.0)),
            groups: Some(
                ranked
                    .into_iter()
                    .zip(1..)
                    .map(|((key, usage), rank)| TopGroup { rank, key, usage })
                    .collect(),
            ),
        }));
    }
    let rows = owner_totals(&state, range, metric, limit).await?;
    Ok(Json(TopReport {
        metric: metric.name().to_owned(),
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        owners: rows
            .into_iter()
            .zip(1..)
            .map(|(row, rank)| TopOwner {
                rank,
                usage: row.metrics(),
                owner_id: row.owner_id,
                owner_kind: row.owner_kind,
            })
            .collect(),
        group_by: None,
        groups: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn bad_parameters_are_400() {
        for (uri, parameter) in [
            (
                "/v1/usage/top?from=2024-05-01&to=2024-05-02&limit=0",
                "limit",
            ),
            (
                "/v1/usage/top?from=2024-05-01&to=2024-05-02&limit=1001",
                "limit",
            ),
            (
                "/v1/usage/top?from=2024-05-01&to=2024-05-02&limit=abc",
                "limit",
            ),
            (
                "/v1/usage/top?from=2024-05-01&to=2024-05-02&metric=bytes",
                "metric",
            ),
            ("/v1/usage/top?to=2024-05-02", "from"),
            ("/v1/usage/top?from=2024-05-01&to=2024-05-02&top=3", "top"),
        ] {
            let (status, _, body) = call(unreachable_state(), "GET", uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(parameter),
                "{uri}: {body}"
            );
        }
    }
}
