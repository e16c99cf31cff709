//! `GET /v1/overage?month=YYYY-MM[&owner_id=…]`: the account's usage in a UTC calendar month
//! against the plan's quotas (`--plan`), the price of what goes over, and each owner's share of it.
//!
//! - Usage per metric is the account's attributed usage (summed times `sign`; active endpoint
//!   hours in UTC hours; session-hours of sessions within the month).
//! - Each priced metric: `overage = max(0, usage - included)`, `units = overage / unit`,
//!   `amount = units * price_per_unit`.
//! - An owner's share of a metric's amount is its fraction of that metric's usage; its `amount` is
//!   the sum over metrics. Shares add up to the whole (to rounding).
//! - With `owner_id`: that owner only, drilled down per credential and, inside each, per endpoint,
//!   with the same rule (an endpoint has no session-hours: a session serves several endpoints).
//! - While the month runs (or with `as_of=` inside it), `forecast` projects it to its end
//!   ([`super::overage_forecast`]).

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::overage_forecast::{forecast, OverageForecast};
use super::params::{quote, rfc3339, QueryParams, TimeRange};
use super::plan::{round_money, Metric, Plan};
use super::report::{self, Scope, SessionScope, UsageMetrics, GROUP_CREDENTIAL_ENDPOINT};
use super::top::{owner_totals, OwnerTotalsRow, RankMetric};
use super::{ApiError, AppState};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/overage", get(overage))
}

/// The response of `/v1/overage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverageReport {
    /// `YYYY-MM`.
    pub month: String,
    /// Start of the month, RFC 3339 UTC.
    pub from: String,
    /// Start of the next month.
    pub to: String,
    /// The plan's name.
    pub plan: String,
    /// The prices' currency.
    pub currency: String,
    /// Usage against quota, per priced metric.
    pub metrics: Vec<MetricOverage>,
    /// Sum of the metrics' amounts.
    pub total_amount: f64,
    /// Each owner's share, largest amount first (only the owner asked for, with `owner_id`).
    pub owners: Vec<OwnerShare>,
    /// The month-end projection, while the month runs (as of now) or as of `as_of`; absent for
    /// a month that is over or not begun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<OverageForecast>,
}

/// One priced metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricOverage {
    /// The metric.
    pub metric: String,
    /// The account's usage.
    pub usage: f64,
    /// Included in the plan.
    pub included: f64,
    /// Usage over the included amount.
    pub overage: f64,
    /// Metric units per priced unit.
    pub unit: f64,
    /// Priced units over the included amount.
    pub overage_units: f64,
    /// Price per priced unit.
    pub price_per_unit: f64,
    /// What the overage costs.
    pub amount: f64,
}

/// A share of the overage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Share {
    /// Its usage per metric (priced metrics).
    pub usage: BTreeMap<String, f64>,
    /// Its fraction of the account's usage, per priced metric.
    pub share: BTreeMap<String, f64>,
    /// Its part of the overage amount.
    pub amount: f64,
}

/// One owner's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OwnerShare {
    /// The owner.
    pub owner_id: String,
    /// `user` or `bot_user`.
    pub owner_kind: String,
    /// Usage, fraction and amount.
    #[serde(flatten)]
    pub share: Share,
    /// Per credential, with `owner_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<CredentialShare>>,
}

/// One credential's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialShare {
    /// The credential.
    pub credential_id: String,
    /// Usage, fraction and amount.
    #[serde(flatten)]
    pub share: Share,
    /// Per endpoint.
    pub endpoints: Vec<EndpointShare>,
}

/// One endpoint's share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointShare {
    /// The endpoint.
    pub endpoint_id: String,
    /// Usage, fraction and amount.
    #[serde(flatten)]
    pub share: Share,
}

/// Usage against the plan, and who used it.
#[utoipa::path(
    get,
    path = "/v1/overage",
    tag = "overage",
    params(
        ("month" = String, Query, description = "YYYY-MM, a UTC calendar month"),
        ("owner_id" = Option<String>, Query, description = "Drill down into one owner: per credential, per endpoint"),
        ("as_of" = Option<String>, Query, description = "Project the month to its end as of this time inside it (RFC 3339 or YYYY-MM-DD; default now, while the month runs): month to date plus the trailing 7-day daily rate times the days left"),
    ),
    responses(
        (status = 200, body = OverageReport),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "No plan configured (--plan)", body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn overage(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<OverageReport>, ApiError> {
    access.require_reader()?;
    let params = QueryParams::parse(query.as_deref(), &["month", "owner_id", "as_of"])?;
    let month = params.month("month")?;
    let owner_id = params.id("owner_id")?;
    let as_of = params.time("as_of")?;
    let range = month.checked_range()?;
    let as_of = forecast_instant(range, as_of, params.get("as_of").unwrap_or_default())?;
    let plan = state.plan.clone().ok_or_else(|| ApiError::NotConfigured {
        message: "no plan is configured: start botmeter serve with --plan <plan.toml>".to_owned(),
    })?;

    let (usage, sessions) = usage_and_sessions(&state, range).await?;
    let lines = metric_lines(&plan, &account_usage(&usage));
    let total_amount = round_money(lines.iter().map(|l| l.amount).sum());

    let mut shares = owner_shares(&plan, &lines, &usage, owner_id.as_deref());
    if let Some(owner_id) = &owner_id {
        shares[0].credentials =
            Some(drill_down(&state, &plan, &lines, owner_id, range, &sessions).await?);
    }
    shares.sort_by(|a, b| {
        b.share
            .amount
            .total_cmp(&a.share.amount)
            .then_with(|| a.owner_id.cmp(&b.owner_id))
    });
    Ok(Json(OverageReport {
        month: month.to_string(),
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        plan: plan.name.clone(),
        currency: plan.currency.clone(),
        metrics: lines,
        total_amount,
        owners: shares,
        forecast: match as_of {
            Some(as_of) => Some(forecast(&state, &plan, range, as_of, owner_id.as_deref()).await?),
            None => None,
        },
    }))
}

/// The instant to project the month from: `as_of` when given (it must lie inside the month),
/// else now while the month runs; `None` for a month that is over or not begun.
fn forecast_instant(
    month: TimeRange,
    as_of: Option<u32>,
    raw: &str,
) -> Result<Option<u32>, ApiError> {
    let inside = |t: u32| month.from < t && t <= month.to;
    match as_of {
        Some(t) if inside(t) => Ok(Some(t)),
        Some(_) => Err(ApiError::bad(
            "invalid_parameter",
            "as_of",
            format!(
                "query parameter as_of: expected a time after the month's start and at most its end ({} to {}), found {}",
                rfc3339(month.from),
                rfc3339(month.to),
                quote(raw)
            ),
        )),
        None => {
            let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX);
            Ok(inside(now).then_some(now))
        }
    }
}

/// Each owner's usage over `range` (traffic and session-hours), and the sessions read for it.
async fn usage_and_sessions(
    state: &AppState,
    range: TimeRange,
) -> Result<(OwnerUsage, Vec<report::Session>), ApiError> {
    let (owners, sessions) = tokio::try_join!(
        owner_totals(state, range, RankMetric::BytesOut, u32::MAX),
        report::fetch_sessions(state, SessionScope::All, range),
    )?;
    Ok((usage_per_owner(&owners, &sessions), sessions))
}

/// Each owner's usage over `range`, as the report counts it.
pub(super) async fn usage_in(state: &AppState, range: TimeRange) -> Result<OwnerUsage, ApiError> {
    Ok(usage_and_sessions(state, range).await?.0)
}

/// Per owner id: its kind (`user`, `bot_user`) and its usage in the month.
pub(super) type OwnerUsage = BTreeMap<String, (String, UsageMetrics)>;

/// Each owner's traffic from SQL plus its session-hours from the audit log.
fn usage_per_owner(owners: &[OwnerTotalsRow], sessions: &[report::Session]) -> OwnerUsage {
    let mut usage: OwnerUsage = owners
        .iter()
        .map(|row| {
            (
                row.owner_id.clone(),
                (row.owner_kind.clone(), row.metrics()),
            )
        })
        .collect();
    for session in sessions {
        let slot = usage.entry(session.owner_id.clone()).or_insert_with(|| {
            (
                owner_kind(&session.owner_id).to_owned(),
                UsageMetrics::default(),
            )
        });
        *slot.1.session_hours.get_or_insert(0.0) += session.hours();
    }
    usage
}

/// The account's usage: every owner's, summed per metric.
fn account_usage(usage: &OwnerUsage) -> UsageMetrics {
    let mut account = UsageMetrics::default();
    for (_, metrics) in usage.values() {
        for metric in Metric::ALL {
            add(&mut account, metric, metric.of(metrics));
        }
    }
    account
}

/// Each owner's share, or only `wanted`'s (with zero usage when it used nothing), unsorted.
fn owner_shares(
    plan: &Plan,
    lines: &[MetricOverage],
    usage: &OwnerUsage,
    wanted: Option<&str>,
) -> Vec<OwnerShare> {
    let mut shares: Vec<OwnerShare> = usage
        .iter()
        .filter(|(id, _)| wanted.is_none_or(|wanted| wanted == id.as_str()))
        .map(|(id, (kind, metrics))| OwnerShare {
            owner_id: id.clone(),
            owner_kind: kind.clone(),
            share: share(plan, lines, metrics),
            credentials: None,
        })
        .collect();
    if let Some(owner_id) = wanted {
        if shares.is_empty() {
            shares.push(OwnerShare {
                owner_id: owner_id.to_owned(),
                owner_kind: owner_kind(owner_id).to_owned(),
                share: share(plan, lines, &UsageMetrics::default()),
                credentials: None,
            });
        }
    }
    shares
}

/// `user` or `bot_user` by the id's prefix; empty for anything else.
fn owner_kind(owner_id: &str) -> &'static str {
    model::OwnerKind::of(owner_id).map_or("", |k| k.as_str())
}

async fn drill_down(
    state: &AppState,
    plan: &Plan,
    lines: &[MetricOverage],
    owner_id: &str,
    range: super::params::TimeRange,
    sessions: &[report::Session],
) -> Result<Vec<CredentialShare>, ApiError> {
    let scope = Scope::owner(owner_id);
    let (per_credential, per_endpoint) = tokio::try_join!(
        report::fetch_buckets(state, &scope, range, Tz::UTC, None, Some("credential")),
        report::fetch_buckets(
            state,
            &scope,
            range,
            Tz::UTC,
            None,
            Some(GROUP_CREDENTIAL_ENDPOINT)
        ),
    )?;
    let mut credentials: BTreeMap<String, UsageMetrics> = per_credential
        .iter()
        .map(|row| (row.group_key.clone(), row.metrics()))
        .collect();
    for session in sessions.iter().filter(|s| s.owner_id == owner_id) {
        let slot = credentials
            .entry(session.credential_id.clone())
            .or_default();
        *slot.session_hours.get_or_insert(0.0) += session.hours();
    }
    let mut endpoints: BTreeMap<&str, Vec<EndpointShare>> = BTreeMap::new();
    let keys: BTreeSet<&str> = credentials.keys().map(String::as_str).collect();
    for row in &per_endpoint {
        let (credential, endpoint) = row
            .group_key
            .split_once(' ')
            .unwrap_or((row.group_key.as_str(), ""));
        let Some(credential) = keys.get(credential) else {
            continue;
        };
        endpoints
            .entry(credential)
            .or_default()
            .push(EndpointShare {
                endpoint_id: endpoint.to_owned(),
                share: share(plan, lines, &row.metrics()),
            });
    }
    Ok(credentials
        .iter()
        .map(|(id, metrics)| CredentialShare {
            credential_id: id.clone(),
            share: share(plan, lines, metrics),
            endpoints: endpoints.remove(id.as_str()).unwrap_or_default(),
        })
        .collect())
}

fn add(total: &mut UsageMetrics, metric: Metric, value: f64) {
    match metric {
        Metric::BytesIn => total.bytes_in += value as u64,
        Metric::BytesOut => total.bytes_out += value as u64,
        Metric::HttpRequests => total.http_requests += value as u64,
        Metric::TcpConnections => total.tcp_connections += value as u64,
        Metric::ActiveEndpointHours => total.active_endpoint_hours += value as u64,
        Metric::SessionHours => *total.session_hours.get_or_insert(0.0) += value,
    }
}

/// The plan applied to the account's usage.
fn metric_lines(plan: &Plan, account: &UsageMetrics) -> Vec<MetricOverage> {
    plan.metrics
        .iter()
        .map(|(metric, priced)| {
            let usage = metric.of(account);
            let (overage, overage_units, amount) = priced.charge(usage);
            MetricOverage {
                metric: metric.name().to_owned(),
                usage,
                included: priced.included,
                overage,
                unit: priced.unit,
                overage_units,
                price_per_unit: priced.price_per_unit,
                amount,
            }
        })
        .collect()
}

/// A part's usage, its fraction of the account's per metric, and its part of the amount.
fn share(plan: &Plan, lines: &[MetricOverage], usage: &UsageMetrics) -> Share {
    let mut out = Share {
        usage: BTreeMap::new(),
        share: BTreeMap::new(),
        amount: 0.0,
    };
    for ((metric, _), line) in plan.metrics.iter().zip(lines) {
        let mine = metric.of(usage);
        let fraction = if line.usage > 0.0 {
            mine / line.usage
        } else {
            0.0
        };
        out.usage.insert(metric.name().to_owned(), mine);
        out.share.insert(metric.name().to_owned(), fraction);
        out.amount += fraction * line.amount;
    }
    out.amount = round_money(out.amount);
    out
}

#[cfg(test)]
mod tests {
    use super::super::plan::MetricPlan;
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn shares_add_up() {
        let plan = Plan {
            name: "p".to_owned(),
            currency: "USD".to_owned(),
            metrics: vec![
                (
                    Metric::BytesOut,
                    MetricPlan {
                        included: 1_000.0,
                        unit: 100.0,
                        price_per_unit: 2.0,
                    },
                ),
                (
                    Metric::SessionHours,
                    MetricPlan {
                        included: 1.0,
                        unit: 1.0,
                        price_per_unit: 0.5,
                    },
                ),
            ],
        };
        let a = UsageMetrics {
            bytes_out: 1_500,
            session_hours: Some(2.0),
            ..UsageMetrics::default()
        };
        let b = UsageMetrics {
            bytes_out: 500,
            session_hours: Some(1.0),
            ..UsageMetrics::default()
        };
        let account = UsageMetrics {
            bytes_out: 2_000,
            session_hours: Some(3.0),
            ..UsageMetrics::default()
        };
        let lines = metric_lines(&plan, &account);
        // 1000 bytes over = 10 units of 100 at 2.0; 2 hours over at 0.5.
        assert_eq!(
            (lines[0].overage, lines[0].overage_units, lines[0].amount),
            (1_000.0, 10.0, 20.0)
        );
        assert_eq!(lines[1].amount, 1.0);
        let (sa, sb) = (share(&plan, &lines, &a), share(&plan, &lines, &b));
        assert_eq!(sa.share["bytes_out"], 0.75);
        assert!((sa.amount - 15.666_667).abs() < 1e-9, "{}", sa.amount);
        assert!(
            (sa.amount + sb.amount - 21.0).abs() < 1e-5,
            "{} + {}",
            sa.amount,
            sb.amount
        );
    }

    #[tokio::test]
    async fn needs_a_plan_and_a_month() {
        let (status, _, body) = call(unreachable_state(), "GET", "/v1/overage?month=2024-05").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_configured");
        for (uri, parameter) in [
            ("/v1/overage", "month"),
            ("/v1/overage?month=2024-13", "month"),
            ("/v1/overage?month=2024-05&owner_id=a%20b", "owner_id"),
            ("/v1/overage?month=2024-05&as_of=2024-06-02", "as_of"),
            (
                "/v1/overage?month=2024-05&as_of=2024-05-01T00:00:00Z",
                "as_of",
            ),
            ("/v1/overage?month=2024-05&as_of=soon", "as_of"),
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
