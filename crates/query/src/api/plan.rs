//! The billing plan (`botmeter serve --plan plan.toml`): per metric, what a month includes and the
//! price of each unit over it.
//!
//! ```toml
//! name = "pro"
//! currency = "USD"
//!
//! [metrics.bytes_out]              # data transfer out
//! included = 1_000_000_000_000     # per month: 1 TB
//! unit = 1_000_000_000             # priced per GB (default 1)
//! price_per_unit = 0.10
//!
//! [metrics.active_endpoint_hours]
//! included = 720
//! price_per_unit = 0.02
//! ```
//!
//! Metrics: `bytes_in`, `bytes_out`, `http_requests`, `tcp_connections`, `active_endpoint_hours`,
//! `session_hours`. A metric the plan does not list is not billed. JSON works too (`plan.json`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::report::UsageMetrics;
use super::settings::{self, Format, SettingsError};

/// A metric a plan can price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Bytes into endpoints.
    BytesIn,
    /// Bytes out of endpoints.
    BytesOut,
    /// HTTP requests.
    HttpRequests,
    /// TCP connections.
    TcpConnections,
    /// Endpoint-hours with outgoing traffic (UTC hours).
    ActiveEndpointHours,
    /// Agent session hours.
    SessionHours,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Self; 6] = [
        Self::BytesIn,
        Self::BytesOut,
        Self::HttpRequests,
        Self::TcpConnections,
        Self::ActiveEndpointHours,
        Self::SessionHours,
    ];

    /// The name in the plan file and the reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::BytesIn => "bytes_in",
            Self::BytesOut => "bytes_out",
            Self::HttpRequests => "http_requests",
            Self::TcpConnections => "tcp_connections",
            Self::ActiveEndpointHours => "active_endpoint_hours",
            Self::SessionHours => "session_hours",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// This metric's value in `usage` (0 where absent).
    pub(super) fn of(self, usage: &UsageMetrics) -> f64 {
        match self {
            Self::BytesIn => usage.bytes_in as f64,
            Self::BytesOut => usage.bytes_out as f64,
            Self::HttpRequests => usage.http_requests as f64,
            Self::TcpConnections => usage.tcp_connections as f64,
            Self::ActiveEndpointHours => usage.active_endpoint_hours as f64,
            Self::SessionHours => usage.session_hours.unwrap_or(0.0),
        }
    }
}

/// The plan file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    /// The plan's name, shown in reports.
    pub name: String,
    /// Currency of the prices, shown in reports (e.g. `USD`).
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Quota and price per metric.
    pub metrics: BTreeMap<String, MetricPlanFile>,
}

fn default_currency() -> String {
    "USD".to_owned()
}

/// One metric of the plan file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricPlanFile {
    /// Amount included per calendar month (UTC), in the metric's own unit (bytes, requests,
    /// connections, hours).
    pub included: f64,
    /// How many of the metric's own units one priced unit is (e.g. 1000000000 to price per GB);
    /// default 1.
    #[serde(default = "one")]
    pub unit: f64,
    /// Price of one priced unit over the included amount.
    pub price_per_unit: f64,
}

fn one() -> f64 {
    1.0
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Name.
    pub name: String,
    /// Currency.
    pub currency: String,
    /// Priced metrics, in [`Metric::ALL`] order.
    pub metrics: Vec<(Metric, MetricPlan)>,
}

/// A validated metric of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricPlan {
    /// Included per month.
    pub included: f64,
    /// Metric units per priced unit.
    pub unit: f64,
    /// Price per priced unit over the included amount.
    pub price_per_unit: f64,
}

impl Plan {
    /// Reads and validates a plan file (TOML, or JSON for `*.json`).
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let file: PlanFile = settings::read(path)?;
        Self::validate(path, file)
    }

    /// Parses and validates a plan from text (no IO).
    pub fn parse(path: &Path, text: &str, format: Format) -> Result<Self, SettingsError> {
        let file: PlanFile = settings::parse(path, text, format)?;
        Self::validate(path, file)
    }

    /// Checks every field.
    pub fn validate(path: &Path, file: PlanFile) -> Result<Self, SettingsError> {
        let invalid = |field: String, message: String| SettingsError::Invalid {
            path: path.to_owned(),
            field,
            message,
        };
        if file.name.trim().is_empty() {
            return Err(invalid("name".to_owned(), "must not be empty".to_owned()));
        }
        let mut metrics = Vec::new();
        for (name, entry) in &file.metrics {
            let metric = Metric::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                invalid(
                    format!("metrics.{name}"),
                    format!(
                        "unknown metric {name:?} (expected one of {})",
                        known.join(", ")
                    ),
                )
            })?;
            for (field, value, positive) in [
                ("included", entry.included, false),
                ("unit", entry.unit, true),
                ("price_per_unit", entry.price_per_unit, false),
            ] {
                let ok = value.is_finite() && value >= 0.0 && (!positive || value > 0.0);
                if !ok {
                    let bound = if positive {
                        "greater than 0"
                    } else {
                        "0 or more"
                    };
                    return Err(invalid(
                        format!("metrics.{name}.{field}"),
                        format!("must be a finite number {bound}, found {value}"),
                    ));
                }
            }
            metrics.push((
                metric,
                MetricPlan {
                    included: entry.included,
                    unit: entry.unit,
                    price_per_unit: entry.price_per_unit,
                },
            ));
        }
        if metrics.is_empty() {
            return Err(invalid(
                "metrics".to_owned(),
                "must price at least one metric".to_owned(),
            ));
        }
        metrics.sort_by_key(|(m, _)| *m);
        Ok(Self {
            name: file.name,
            currency: file.currency,
            metrics,
        })
    }
}

impl MetricPlan {
    /// Usage over the included amount, the priced units it makes, and their price.
    pub fn charge(&self, usage: f64) -> (f64, f64, f64) {
        let over = (usage - self.included).max(0.0);
        let units = over / self.unit;
        (over, units, round_money(units * self.price_per_unit))
    }
}

/// Amounts to a millionth of the currency unit, so that sums read cleanly.
pub(super) fn round_money(amount: f64) -> f64 {
    (amount * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, SettingsError> {
        Plan::parse(Path::new("plan.toml"), text, Format::Toml)
    }

    #[test]
    fn plan_file_is_validated() {
        let p = plan(
            "name = \"pro\"\n[metrics.bytes_out]\nincluded = 1_000\nunit = 100\nprice_per_unit = 0.5\n\
             [metrics.active_endpoint_hours]\nincluded = 2\nprice_per_unit = 1.25\n",
        )
        .unwrap();
        assert_eq!(p.currency, "USD");
        assert_eq!(p.metrics[0].0, Metric::BytesOut);
        assert_eq!(p.metrics[1].0, Metric::ActiveEndpointHours);
        assert_eq!(p.metrics[0].1.charge(1_250.0), (250.0, 2.5, 1.25));
        assert_eq!(p.metrics[0].1.charge(10.0), (0.0, 0.0, 0.0));

        for (text, field) in [
            (
                "name = \"\"\n[metrics.bytes_out]\nincluded = 1\nprice_per_unit = 1",
                "name",
            ),
            (
                "name = \"p\"\n[metrics.bytes]\nincluded = 1\nprice_per_unit = 1",
                "metrics.bytes",
            ),
            (
                "name = \"p\"\n[metrics.bytes_in]\nincluded = -1\nprice_per_unit = 1",
                "metrics.bytes_in.included",
            ),
            (
                "name = \"p\"\n[metrics.bytes_in]\nincluded = 1\nunit = 0\nprice_per_unit = 1",
                "metrics.bytes_in.unit",
            ),
            ("name = \"p\"\nmetrics = {}", "metrics"),
        ] {
            match plan(text) {
                Err(SettingsError::Invalid { field: got, .. }) => assert_eq!(got, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            plan("name = \"p\"\n[metrics.bytes_in]\nincluded = 1\nprice = 1"),
            Err(SettingsError::Parse { .. })
        ));
        let json = Plan::parse(
            Path::new("plan.json"),
            r#"{"name":"p","metrics":{"session_hours":{"included":10.5,"price_per_unit":0.01}}}"#,
            Format::Json,
        )
        .unwrap();
        assert_eq!(json.metrics[0].0, Metric::SessionHours);
    }
}
