//! The month-end projection of `/v1/overage` (its `forecast`), per priced metric and per owner.
//!
//! Method, as of an instant `as_of` inside the month (default now; `as_of=` for another):
//! - `month_to_date`: usage from the month's start to `as_of` (as the report counts usage);
//! - `trailing_7_day_daily_rate`: usage over the 7 days before `as_of` (reaching into the previous
//!   month early in a month), divided by 7;
//! - `projected = month_to_date + trailing_7_day_daily_rate × days_left`, `days_left` the days
//!   (fractional) from `as_of` to the month's end;
//! - `projected_overage` and `projected_amount`: the plan applied to `projected`;
//! - `projected_crossing_date`: the UTC day on which `month_to_date` plus the daily rate reaches
//!   the quota, when it is not reached yet and would be before the month ends; `over_quota` when
//!   `month_to_date` is already over it.
//!
//! Owners get the same projection of their own usage (no quota of their own: the quota is the
//! account's).

use std::collections::BTreeMap;

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::overage::{usage_in, OwnerUsage};
use super::params::{rfc3339, TimeRange};
use super::plan::{Metric, Plan};
use super::report::UsageMetrics;
use super::{ApiError, AppState};

/// What `method` says, in the response.
pub const FORECAST_METHOD: &str =
    "month_to_date + trailing_7_day_daily_rate × days_left (the 7 days before as_of, ÷ 7)";

const DAY_SECS: f64 = 86_400.0;
const TRAILING_DAYS: u32 = 7;

/// The month-end projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OverageForecast {
    /// How the projection is made.
    pub method: String,
    /// The instant projected from, RFC 3339 UTC: usage before it counts.
    pub as_of: String,
    /// Days (fractional) from `as_of` to the month's end.
    pub days_left: f64,
    /// Per priced metric, in the plan's order.
    pub metrics: Vec<MetricForecast>,
    /// Per owner with usage in the month to date or the trailing 7 days (only the owner asked
    /// for, with `owner_id`), by owner id.
    pub owners: Vec<OwnerForecast>,
}

/// One priced metric's projection for the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricForecast {
    /// The metric.
    pub metric: String,
    /// Usage from the month's start to `as_of`.
    pub month_to_date: f64,
    /// Usage over the 7 days before `as_of`, ÷ 7.
    pub trailing_7_day_daily_rate: f64,
    /// `month_to_date + trailing_7_day_daily_rate × days_left`.
    pub projected: f64,
    /// Included in the plan.
    pub included: f64,
    /// `projected` over the included amount.
    pub projected_overage: f64,
    /// What `projected_overage` would cost.
    pub projected_amount: f64,
    /// `month_to_date` is already over the included amount.
    pub over_quota: bool,
    /// The UTC day (`YYYY-MM-DD`) the quota is projected to be crossed, when not yet crossed and
    /// crossed before the month ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_crossing_date: Option<String>,
}

/// One owner's projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OwnerForecast {
    /// The owner.
    pub owner_id: String,
    /// Per priced metric: usage from the month's start to `as_of`.
    pub month_to_date: BTreeMap<String, f64>,
    /// Per priced metric: the projected month's usage.
    pub projected: BTreeMap<String, f64>,
}

/// The projection of `month` as of `as_of` (Unix seconds, `month.from < as_of <= month.to`), for
/// every owner or only `owner_id`.
pub(super) async fn forecast(
    state: &AppState,
    plan: &Plan,
    month: TimeRange,
    as_of: u32,
    owner_id: Option<&str>,
) -> Result<OverageForecast, ApiError> {
    let to_date = TimeRange {
        from: month.from,
        to: as_of,
    };
    let trailing = TimeRange {
        from: as_of.saturating_sub(TRAILING_DAYS * 86_400),
        to: as_of,
    };
    let (to_date, trailing) =
        tokio::try_join!(usage_in(state, to_date), usage_in(state, trailing))?;
    Ok(project(plan, month, as_of, &to_date, &trailing, owner_id))
}

/// The account's projection of the month holding `now` (Unix seconds), as `/v1/overage` makes
/// it, and the month's start: what the `overage_forecast` alert rule reads (crate::alerts).
pub(crate) async fn forecast_now(
    state: &AppState,
    plan: &Plan,
    now: u32,
) -> Result<(u32, OverageForecast), ApiError> {
    use chrono::Datelike as _;
    let today = DateTime::from_timestamp(i64::from(now), 0)
        .unwrap_or_default()
        .date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    let secs = |day: chrono::NaiveDate| {
        u32::try_from(
            day.and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc()
                .timestamp(),
        )
        .unwrap_or(0)
    };
    let month = TimeRange {
        from: secs(first),
        to: secs(next),
    };
    let as_of = now.clamp(month.from + 1, month.to);
    Ok((month.from, forecast(state, plan, month, as_of, None).await?))
}

/// The projection from the usage per owner to date and over the trailing 7 days.
fn project(
    plan: &Plan,
    month: TimeRange,
    as_of: u32,
    to_date: &OwnerUsage,
    trailing: &OwnerUsage,
    owner_id: Option<&str>,
) -> OverageForecast {
    let days_left = f64::from(month.to.saturating_sub(as_of)) / DAY_SECS;
    let total = |usage: &OwnerUsage, metric: Metric| -> f64 {
        usage.values().map(|(_, m)| metric.of(m)).sum()
    };
    let metrics = plan
        .metrics
        .iter()
        .map(|(metric, priced)| {
            let month_to_date = total(to_date, *metric);
            let rate = total(trailing, *metric) / f64::from(TRAILING_DAYS);
            let projected = month_to_date + rate * days_left;
            let (projected_overage, _, projected_amount) = priced.charge(projected);
            let over_quota = month_to_date > priced.included;
            let crossing = (!over_quota && rate > 0.0)
                .then(|| f64::from(as_of) + (priced.included - month_to_date) / rate * DAY_SECS)
                .filter(|at| *at < f64::from(month.to))
                .and_then(|at| DateTime::from_timestamp(at.floor() as i64, 0))
                .map(|at| at.format("%Y-%m-%d").to_string());
            MetricForecast {
                metric: metric.name().to_owned(),
                month_to_date,
                trailing_7_day_daily_rate: rate,
                projected,
                included: priced.included,
                projected_overage,
                projected_amount,
                over_quota,
                projected_crossing_date: crossing,
            }
        })
        .collect();
    let none = UsageMetrics::default();
    let mut ids: Vec<&String> = to_date.keys().chain(trailing.keys()).collect();
    ids.sort();
    ids.dedup();
    let owners = ids
        .into_iter()
        .filter(|id| owner_id.is_none_or(|wanted| wanted == id.as_str()))
        .map(|id| {
            let mine = |usage: &OwnerUsage| *usage.get(id).map_or(&none, |(_, m)| m);
            let (so_far, recent) = (mine(to_date), mine(trailing));
            let mut month_to_date = BTreeMap::new();
            let mut projected = BTreeMap::new();
            for (metric, _) in &plan.metrics {
                let value = metric.of(&so_far);
                let rate = metric.of(&recent) / f64::from(TRAILING_DAYS);
                month_to_date.insert(metric.name().to_owned(), value);
                projected.insert(metric.name().to_owned(), value + rate * days_left);
            }
            OwnerForecast {
                owner_id: id.clone(),
                month_to_date,
                projected,
            }
        })
        .collect();
    OverageForecast {
        method: FORECAST_METHOD.to_owned(),
        as_of: rfc3339(as_of),
        days_left,
        metrics,
        owners,
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::MetricPlan;
    use super::*;

    fn usage(bytes_out: u64) -> (String, UsageMetrics) {
        (
            "bot_user".to_owned(),
            UsageMetrics {
                bytes_out,
                ..UsageMetrics::default()
            },
        )
    }

    #[test]
    fn month_to_date_plus_the_trailing_rate_for_the_days_left() {
        let plan = Plan {
            name: "p".to_owned(),
            currency: "USD".to_owned(),
            metrics: vec![(
                Metric::BytesOut,
                MetricPlan {
                    included: 1_000.0,
                    unit: 1.0,
                    price_per_unit: 0.01,
                },
            )],
        };
        // May 2024; as of May 11 00:00, 21 days left.
        let month = TimeRange {
            from: 1_714_521_600,
            to: 1_717_200_000,
        };
        let as_of = 1_715_385_600;
        let to_date = OwnerUsage::from([("bot_a".to_owned(), usage(700))]);
        let trailing = OwnerUsage::from([("bot_a".to_owned(), usage(700))]);
        let f = project(&plan, month, as_of, &to_date, &trailing, None);
        assert_eq!(f.days_left, 21.0);
        let m = &f.metrics[0];
        // 700 + 100/day × 21 = 2800; 1000 reached after 3 days: May 14.
        assert_eq!((m.trailing_7_day_daily_rate, m.projected), (100.0, 2_800.0));
        assert_eq!((m.projected_overage, m.projected_amount), (1_800.0, 18.0));
        assert_eq!(m.projected_crossing_date.as_deref(), Some("2024-05-14"));
        assert!(!m.over_quota);
        assert_eq!(f.owners[0].projected["bytes_out"], 2_800.0);
        // Over already: no crossing date. No usage lately: none either.
        let over = OwnerUsage::from([("bot_a".to_owned(), usage(1_500))]);
        let f = project(&plan, month, as_of, &over, &trailing, None);
        assert!(f.metrics[0].over_quota);
        assert_eq!(f.metrics[0].projected_crossing_date, None);
        let f = project(
            &plan,
            month,
            as_of,
            &to_date,
            &OwnerUsage::new(),
            Some("bot_x"),
        );
        assert_eq!(f.metrics[0].projected, 700.0);
        assert_eq!(f.metrics[0].projected_crossing_date, None);
        assert!(f.owners.is_empty());
        // Crossing after the month's end: none.
        let slow = OwnerUsage::from([("bot_a".to_owned(), usage(70))]);
        let f = project(&plan, month, as_of, &to_date, &slow, None);
        assert_eq!(f.metrics[0].projected, 910.0);
        assert_eq!(f.metrics[0].projected_crossing_date, None);
    }
}
