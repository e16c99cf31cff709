//! `GET /v1/alerts?state=firing|resolved&from=…&to=…&alert_id=…`: the alerts `botmeter run
//! --alert-rules` fired (crate::alerts), newest state of each, oldest first. Account-wide, like
//! `/v1/anomalies`: admin and reader keys; a customer key is refused (403).

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::ToSchema;

use super::auth::Access;
use super::params::{rfc3339, Choice, QueryParams};
use super::{ApiError, AppState};
use crate::alerts::{Alert, AlertRow, FIRING, LIST_SQL, RESOLVED};

/// Most alerts listed.
pub const MAX_ALERTS: u32 = 10_000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/alerts", get(alerts))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateFilter {
    Firing,
    Resolved,
}

impl Choice for StateFilter {
    const ALL: &'static [(&'static str, Self)] =
        &[(FIRING, Self::Firing), (RESOLVED, Self::Resolved)];
}

/// The schema of `/v1/alerts`'s own parameters (`state`, `alert_id`); `from` and `to` are the
/// shared ones.
pub(super) fn parameter_schema(name: &str) -> Option<Schema> {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let schema = match name {
        "state" => string().enum_values(Some(StateFilter::ALL.iter().map(|(name, _)| *name))),
        "alert_id" => string()
            .pattern(Some(super::params::ID_PATTERN))
            .min_length(Some(1))
            .max_length(Some(super::params::MAX_ID_LEN)),
        _ => return None,
    };
    Some(Schema::Object(schema.build()))
}

/// The response of `/v1/alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    /// Start of the range (inclusive), RFC 3339 UTC; absent when none was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The alerts whose episode overlaps the range, oldest first.
    pub alerts: Vec<Alert>,
    /// Whether the list was cut at its limit.
    pub truncated: bool,
}

/// Alerts, firing and resolved.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "alerts",
    params(
        ("state" = Option<String>, Query, description = "firing or resolved (default: both)"),
        ("from" = Option<String>, Query, description = "Start, inclusive: RFC 3339 or YYYY-MM-DD; with to, alerts firing at some time in [from, to)"),
        ("to" = Option<String>, Query, description = "End, exclusive; at most 366 days after from"),
        ("alert_id" = Option<String>, Query, description = "One alert"),
    ),
    responses(
        (status = 200, body = AlertList),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn alerts(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<AlertList>, ApiError> {
    access.require_reader()?;
    let params = QueryParams::parse(query.as_deref(), &["state", "from", "to", "alert_id"])?;
    let filter = match params.choice::<StateFilter>("state")? {
        None => "",
        Some(StateFilter::Firing) => FIRING,
        Some(StateFilter::Resolved) => RESOLVED,
    };
    let range = params.optional_range()?;
    let alert_id = params.id("alert_id")?.unwrap_or_default();
    let (from, to) = range.map_or((0, u32::MAX), |r| (r.from, r.to));
    let rows: Vec<AlertRow> = state
        .read("read alerts", |client| {
            client
                .query(LIST_SQL)
                .bind(to)
                .bind(from)
                .bind(filter)
                .bind(filter)
                .bind(alert_id.as_str())
                .bind(alert_id.as_str())
                .bind(MAX_ALERTS + 1)
                .fetch_all::<AlertRow>()
        })
        .await?;
    let truncated = rows.len() > MAX_ALERTS as usize;
    Ok(Json(AlertList {
        from: range.map(|r| rfc3339(r.from)),
        to: range.map(|r| rfc3339(r.to)),
        alerts: rows
            .iter()
            .take(MAX_ALERTS as usize)
            .map(|row| Alert::from_row(row, ""))
            .collect(),
        truncated,
    }))
}
