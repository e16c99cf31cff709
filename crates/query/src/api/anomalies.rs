//! `GET /v1/anomalies?from=…&to=…`: what should not have happened, over a range.
//!
//! - `flagged`: attributed usage with flags (`credential_deleted`, `owner_inactive`,
//!   `owner_deleted`, `acl_violation`, `principal_mismatch`), per flag and owner;
//! - `unattributed`: usage no owner could be found for, per reason (the missing link), and per
//!   hostname and port for `no_endpoint`;
//! - `dead_letters`: messages that could not be decoded, per reason class;
//! - `duplicates`: repeated deliveries of events already written (status `duplicate`, reason
//!   `repeated_event_id`), with what they would have added had they been counted;
//! - `control`: control-plane events with anomalies (rejected owner changes, API keys used by a
//!   principal that does not own them), newest first, at most [`MAX_CONTROL_ANOMALIES`].
//!
//! Every count is the net row count and every metric is summed times `sign`, so usage restated
//! by `botmeter reattribute` is counted where it ended up, once.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::params::{rfc3339, rfc3339_us, QueryParams, TimeRange};
use super::{ApiError, AppState};
use crate::error::Error;
use crate::rows::status;

/// Placeholders: status, from, to.
pub(super) const FLAGGED_SQL: &str = include_str!("../../sql/flagged_usage.sql");
/// Placeholders: status, from, to.
pub(super) const UNRESOLVED_SQL: &str = include_str!("../../sql/unresolved_usage.sql");
/// Placeholders: from, to, limit.
pub(super) const CONTROL_ANOMALIES_SQL: &str = include_str!("../../sql/control_anomalies.sql");

/// Most control-plane anomalies listed.
pub const MAX_CONTROL_ANOMALIES: u32 = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/anomalies", get(anomalies))
}

/// The response of `/v1/anomalies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AnomalyReport {
    /// Start (inclusive), RFC 3339 UTC.
    pub from: String,
    /// End (exclusive), RFC 3339 UTC.
    pub to: String,
    /// Flagged attributed usage, per flag and owner.
    pub flagged: Vec<FlaggedUsage>,
    /// Unattributed usage, per reason (and hostname and port for no_endpoint).
    pub unattributed: Vec<UnattributedUsage>,
    /// Dead letters, per reason class.
    pub dead_letters: Vec<UnattributedUsage>,
    /// Repeated deliveries of events already written (counted nowhere else), per reason
    /// (`repeated_event_id`).
    pub duplicates: Vec<UnattributedUsage>,
    /// Control-plane events with anomalies, newest first.
    pub control: Vec<ControlAnomaly>,
    /// Whether `control` was cut at its limit.
    pub control_truncated: bool,
}

/// Traffic sums of a group of usage rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrafficSums {
    /// Net events.
    pub events: i64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// HTTP requests.
    pub http_requests: u64,
    /// TCP connections.
    pub tcp_connections: u64,
}

/// Flagged usage of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FlaggedUsage {
    /// The flag.
    pub flag: String,
    /// The owner.
    pub owner_id: String,
    /// Its sums.
    #[serde(flatten)]
    pub sums: TrafficSums,
}

/// Usage without an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UnattributedUsage {
    /// `no_endpoint`, `unknown_session`, `unknown_credential`, `unknown_owner`; for dead
    /// letters, the reason class.
    pub reason: String,
    /// The hostname, for `no_endpoint`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// The port, for `no_endpoint` TCP traffic.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    /// Its sums.
    #[serde(flatten)]
    pub sums: TrafficSums,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

/// A control-plane event with an anomaly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ControlAnomaly {
    /// `owner_change_rejected` or `api_key_owner_mismatch`.
    pub anomaly: String,
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Its time, RFC 3339 UTC.
    pub time: String,
    /// Who acted.
    pub principal_id: String,
    /// The API key used.
    pub principal_credential_id: String,
    /// The object (credential, …).
    pub object_id: String,
    /// The owner the event named (for a rejected owner change, the owner it tried to set).
    pub owner_id: String,
}

#[derive(Debug, Row, Deserialize)]
struct FlaggedRow {
    flag: String,
    owner_id: String,
    events: i64,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
}

#[derive(Debug, Row, Deserialize)]
struct UnresolvedRow {
    reason: String,
    hostname: String,
    port: u16,
    events: i64,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
}

#[derive(Debug, Row, Deserialize)]
struct ControlAnomalyRow {
    event_id: String,
    event_type: String,
    time_us: i64,
    anomaly: String,
    principal_id: String,
    principal_credential_id: String,
    object_id: String,
    owner_id: String,
}

/// Flagged, unattributed, dead-lettered and repeated usage, and control-plane anomalies.
#[utoipa::path(
    get,
    path = "/v1/anomalies",
    tag = "anomalies",
    params(
        ("from" = String, Query, description = "Start, inclusive: RFC 3339 or YYYY-MM-DD"),
        ("to" = String, Query, description = "End, exclusive; at most 366 days after from"),
    ),
    responses(
        (status = 200, body = AnomalyReport),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn anomalies(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<AnomalyReport>, ApiError> {
    access.require_reader()?;
    let range = QueryParams::parse(query.as_deref(), &["from", "to"])?.range()?;
    let (flagged, unattributed, dead_letters, duplicates, control) = tokio::try_join!(
        fetch_flagged(&state, range),
        fetch_unresolved(&state, status::UNATTRIBUTED, range),
        fetch_unresolved(&state, status::DEAD_LETTER, range),
        fetch_unresolved(&state, status::DUPLICATE, range),
        fetch_control(&state, range),
    )?;
    let control_truncated = control.len() > MAX_CONTROL_ANOMALIES as usize;
    Ok(Json(AnomalyReport {
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        flagged: flagged.into_iter().map(FlaggedUsage::from).collect(),
        unattributed: unattributed
            .into_iter()
            .map(UnattributedUsage::from)
            .collect(),
        dead_letters: dead_letters
            .into_iter()
            .map(UnattributedUsage::from)
            .collect(),
        duplicates: duplicates
            .into_iter()
            .map(UnattributedUsage::from)
            .collect(),
        control: control
            .into_iter()
            .take(MAX_CONTROL_ANOMALIES as usize)
            .map(ControlAnomaly::from)
            .collect(),
        control_truncated,
    }))
}

async fn fetch_flagged(state: &AppState, range: TimeRange) -> Result<Vec<FlaggedRow>, Error> {
    state
        .read("read flagged usage", |client| {
            client
                .query(FLAGGED_SQL)
                .bind(status::ATTRIBUTED)
                .bind(range.from)
                .bind(range.to)
                .fetch_all::<FlaggedRow>()
        })
        .await
}

/// Usage rows of `status` (unattributed, dead letters or duplicates), per reason.
async fn fetch_unresolved(
    state: &AppState,
    status: &'static str,
    range: TimeRange,
) -> Result<Vec<UnresolvedRow>, Error> {
    state
        .read(format!("read {status} usage"), |client| {
            client
                .query(UNRESOLVED_SQL)
                .bind(status)
                .bind(range.from)
                .bind(range.to)
                .fetch_all::<UnresolvedRow>()
        })
        .await
}

/// Newest first, one more than [`MAX_CONTROL_ANOMALIES`] to tell truncation.
async fn fetch_control(
    state: &AppState,
    range: TimeRange,
) -> Result<Vec<ControlAnomalyRow>, Error> {
    state
        .read("read control-plane anomalies", |client| {
            client
                .query(CONTROL_ANOMALIES_SQL)
                .bind(range.from)
                .bind(range.to)
                .bind(MAX_CONTROL_ANOMALIES + 1)
                .fetch_all::<ControlAnomalyRow>()
        })
        .await
}

impl From<FlaggedRow> for FlaggedUsage {
    fn from(row: FlaggedRow) -> Self {
        Self {
            flag: row.flag,
            owner_id: row.owner_id,
            sums: TrafficSums {
                events: row.events,
                bytes_in: row.bytes_in,
                bytes_out: row.bytes_out,
                http_requests: row.http_requests,
                tcp_connections: row.tcp_connections,
            },
        }
    }
}

impl From<UnresolvedRow> for UnattributedUsage {
    fn from(row: UnresolvedRow) -> Self {
        Self {
            reason: row.reason,
            hostname: row.hostname,
            port: row.port,
            sums: TrafficSums {
                events: row.events,
                bytes_in: row.bytes_in,
                bytes_out: row.bytes_out,
                http_requests: row.http_requests,
                tcp_connections: row.tcp_connections,
            },
        }
    }
}

impl From<ControlAnomalyRow> for ControlAnomaly {
    fn from(row: ControlAnomalyRow) -> Self {
        Self {
            anomaly: row.anomaly,
            event_id: row.event_id,
            event_type: row.event_type,
            time: rfc3339_us(row.time_us),
            principal_id: row.principal_id,
            principal_credential_id: row.principal_credential_id,
            object_id: row.object_id,
            owner_id: row.owner_id,
        }
    }
}
