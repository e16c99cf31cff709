//! `GET /v1/customers/{customer_id}/report?month=YYYY-MM[&format=json|csv|html]`: one customer's
//! month, as JSON (default), CSV (`format=csv` or `Accept: text/csv`) or a readable HTML page
//! (`format=html` or `Accept: text/html`) with a daily usage chart.
//!
//! A customer is its bot users: the one whose id is `customer_id` and, when `botmeter serve
//! --customer-metadata-key KEY` is set, those whose metadata has `KEY` = `customer_id` at its top
//! level at some time in the month. Its credentials are the ones they own, its usage theirs while
//! the metadata in force at each event's time names the customer (see [`super::tenancy`]); a
//! credential of anyone else never counts, whatever its metadata says. An id that matches no bot
//! user in the month answers 404.
//!
//! Days and the month are UTC; metrics as in the owner usage report (summed times `sign`, active
//! endpoint hours per UTC hour, session-hours within the month).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::catalog::CredentialRow;
use super::customer_render;
use super::params::{
    check_id, date_of, date_of_us, days_between, path_param, rfc3339, rfc3339_us,
    rfc3339_us_if_set, Choice, Month, QueryParams, TimeRange,
};
use super::report::{
    self, Granularity, GroupBy, Series, SeriesSpec, UsageBucket, UsageGroup, UsageMetrics,
};
use super::tenancy::{self, Resolved};
use super::{ApiError, AppState};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/customers/{customer_id}/report", get(customer_report))
}

/// How to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Json,
    Csv,
    Html,
}

impl Choice for Format {
    const ALL: &'static [(&'static str, Self)] = &[
        ("json", Self::Json),
        ("csv", Self::Csv),
        ("html", Self::Html),
    ];
}

/// `format` wins; else the first of text/csv, text/html named in `Accept`; else JSON.
pub(super) fn negotiate(format: Option<Format>, headers: &HeaderMap) -> Format {
    if let Some(format) = format {
        return format;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let csv = accept.find("text/csv");
    let html = accept.find("text/html");
    match (csv, html) {
        (Some(c), Some(h)) if c < h => Format::Csv,
        (Some(_), None) => Format::Csv,
        (_, Some(_)) => Format::Html,
        _ => Format::Json,
    }
}

/// The JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomerReport {
    /// The customer.
    pub customer_id: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Start of the month, RFC 3339 UTC.
    pub from: String,
    /// Start of the next month.
    pub to: String,
    /// The customer's bot users: the one whose id is the customer id, and those whose metadata
    /// names the customer at the top level at some time in the month (their usage counts while it
    /// does).
    pub bot_users: Vec<CustomerBotUser>,
    /// The credentials the customer's bot users own (and no other), with their usage in the month
    /// while their owner is the customer's.
    pub credentials: Vec<CustomerCredential>,
    /// The month's totals.
    pub totals: UsageMetrics,
    /// Days with traffic or agent sessions, in order.
    pub days: Vec<UsageBucket>,
}

/// A bot user of the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CustomerBotUser {
    /// `bot_…`
    pub id: String,
    /// Its latest name.
    pub name: String,
    /// Whether it is active.
    pub active: bool,
    /// Whether it was deleted.
    pub deleted: bool,
}

/// A credential of the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CustomerCredential {
    /// The credential.
    pub credential_id: String,
    /// `authtoken`, `ssh_key` or `api_key`.
    pub kind: String,
    /// Its owner.
    pub owner_id: String,
    /// Its description.
    pub description: String,
    /// When it first appeared, RFC 3339.
    pub created_at: String,
    /// When it was deleted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Whole days from creation to its deletion, the end of the month or now, whichever is first.
    pub age_days: i64,
    /// Its usage in the month.
    pub usage: UsageMetrics,
}

/// One customer's month.
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/report",
    tag = "customers",
    params(
        ("customer_id" = String, Path, description = "A bot user id, or a value of the customer metadata key at the top level of bot users' metadata (read as of each event's time: a bot user counts while its metadata names the customer). The report covers those bot users, the credentials they own and their usage while they are the customer's only; a credential owned by anyone else never counts, whatever its metadata says"),
        ("month" = String, Query, description = "YYYY-MM, a UTC calendar month"),
        ("format" = Option<String>, Query, description = "json (default), csv or html; else chosen by Accept"),
    ),
    responses(
        (status = 200, description = "The report (JSON; text/csv and text/html by format or Accept)",
         content((CustomerReport = "application/json"), (String = "text/csv"), (String = "text/html"))),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, description = "No such customer (or not this key's)", body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn customer_report(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    customer_id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let customer_id = path_param("customer_id", customer_id)?;
    check_id("path parameter", "customer_id", &customer_id)?;
    access.check_customer(&customer_id)?;
    let params = QueryParams::parse(query.as_deref(), &["month", "format"])?;
    let month = params.month("month")?;
    let format = negotiate(params.choice("format")?, &headers);
    let range = month.checked_range()?;

    let resolved = tenancy::resolve(&state, &customer_id, range).await?;
    if resolved.is_empty() {
        return Err(ApiError::Missing {
            what: format!("customer {customer_id:?}"),
        });
    }
    let series = report::series(
        &state,
        &SeriesSpec {
            scope: resolved.scope(),
            range,
            tz: Tz::UTC,
            granularity: Granularity::Day,
            group_by: Some(GroupBy::Credential),
        },
    )
    .await?;
    let report = build_report(&customer_id, month, range, &resolved, series);
    Ok(render(report, format, &customer_id, month))
}

/// The JSON report of a resolved customer's month, from its daily series per credential.
fn build_report(
    customer_id: &str,
    month: Month,
    range: TimeRange,
    resolved: &Resolved,
    series: Series,
) -> CustomerReport {
    let age_until = date_of(
        range
            .to
            .min(u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX)),
    );
    let groups = series.groups.unwrap_or_default();
    CustomerReport {
        customer_id: customer_id.to_owned(),
        month: month.to_string(),
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        bot_users: resolved
            .bots
            .iter()
            .map(|b| CustomerBotUser {
                id: b.bot_id.clone(),
                name: b.name.clone(),
                active: b.active == 1,
                deleted: b.deleted == 1,
            })
            .collect(),
        credentials: resolved
            .credentials
            .iter()
            .map(|c| customer_credential(c, &groups, age_until))
            .collect(),
        totals: series.totals,
        days: {
            let mut days = series.buckets;
            days.extend(series.session_only);
            days.sort_by(|a, b| a.start.cmp(&b.start));
            days
        },
    }
}

/// One credential with its age (up to `age_until` at the latest) and its usage in the month.
fn customer_credential(
    c: &CredentialRow,
    groups: &[UsageGroup],
    age_until: NaiveDate,
) -> CustomerCredential {
    let created = date_of_us(c.created_us);
    let until = if c.deleted_us > 0 {
        age_until.min(date_of_us(c.deleted_us))
    } else {
        age_until
    };
    CustomerCredential {
        credential_id: c.credential_id.clone(),
        kind: c.kind.clone(),
        owner_id: c.owner_id.clone(),
        description: c.description.clone(),
        created_at: rfc3339_us(c.created_us),
        deleted_at: rfc3339_us_if_set(c.deleted_us),
        age_days: days_between(created, until),
        usage: groups
            .iter()
            .find(|g| g.key == c.credential_id)
            .map_or_else(
                || UsageMetrics {
                    agent_sessions: Some(0),
                    session_hours: Some(0.0),
                    ..UsageMetrics::default()
                },
                |g| g.totals,
            ),
    }
}

/// The report as JSON, CSV (an attachment) or HTML.
fn render(report: CustomerReport, format: Format, customer_id: &str, month: Month) -> Response {
    match format {
        Format::Json => Json(report).into_response(),
        Format::Csv => with_type(
            customer_render::csv(&report, month),
            "text/csv; charset=utf-8",
            Some(format!(
                "attachment; filename=\"{customer_id}-{month}.csv\""
            )),
        ),
        Format::Html => with_type(
            customer_render::html(&report, month),
            "text/html; charset=utf-8",
            None,
        ),
    }
}

fn with_type(body: String, content_type: &'static str, disposition: Option<String>) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    if let Some(value) = disposition.and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn format_by_parameter_then_accept() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(negotiate(None, &HeaderMap::new()), Format::Json);
        assert_eq!(negotiate(None, &accept("text/csv")), Format::Csv);
        assert_eq!(
            negotiate(
                None,
                &accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
            ),
            Format::Html
        );
        assert_eq!(negotiate(None, &accept("application/json")), Format::Json);
        assert_eq!(
            negotiate(Some(Format::Json), &accept("text/csv")),
            Format::Json
        );
    }

    #[tokio::test]
    async fn bad_parameters_are_400() {
        for (uri, parameter) in [
            ("/v1/customers/acme/report", "month"),
            (
                "/v1/customers/acme/report?month=2024-05&format=pdf",
                "format",
            ),
            ("/v1/customers/ac%20me/report?month=2024-05", "customer_id"),
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
