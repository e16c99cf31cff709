//! The `botmeter_alerts_firing{rule, kind}` gauge `botmeter serve` exports on its `/metrics`: how
//! many alerts of each rule are firing now, read from the `alerts` table in ClickHouse (migration
//! 0015; `botmeter run --alert-rules` writes it), never from one instance's memory, so every
//! instance of `serve` exports the same numbers whichever `run` instance evaluated the rules. One
//! series per rule (and its kind) that has any alert in the table: a handful, however many owners
//! and credentials fire. Refreshed every [`ALERT_GAUGES_INTERVAL`] by [`run_alert_gauges`], as
//! the fleet gauges are.

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use serde::Deserialize;

use super::{ApiError, AppState};

/// No placeholders.
const ALERTS_FIRING_SQL: &str = include_str!("../../sql/alerts_firing.sql");

/// The gauge's name.
pub const ALERTS_FIRING: &str = "botmeter_alerts_firing";

/// How often [`run_alert_gauges`] reads the alerts.
pub const ALERT_GAUGES_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// One rule's count, positional row of `alerts_firing.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct FiringRow {
    rule: String,
    kind: String,
    firing: u64,
}

/// Alerts firing now by (rule, kind): every rule with an alert in the table, 0 when none fires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertGauges {
    /// Firing alerts, by (rule, kind).
    pub firing: BTreeMap<(String, String), u64>,
}

impl AlertGauges {
    /// Sets the gauge to these figures, and to 0 for the (rule, kind) pairs of `previous` that are
    /// not here any more (their alerts were deleted), so no series keeps a stale count.
    pub fn set(&self, previous: &AlertGauges) {
        let now: BTreeSet<&(String, String)> = self.firing.keys().collect();
        for (rule, kind) in previous.firing.keys().filter(|k| !now.contains(k)) {
            set_firing(rule, kind, 0);
        }
        for ((rule, kind), firing) in &self.firing {
            set_firing(rule, kind, *firing);
        }
    }
}

/// Sets one series of the gauge.
fn set_firing(rule: &str, kind: &str, firing: u64) {
    let (rule, kind) = (rule.to_owned(), kind.to_owned());
    metrics::gauge!(ALERTS_FIRING, "rule" => rule, "kind" => kind).set(firing as f64);
}

/// `HELP` text of the gauge.
pub(super) fn describe_gauges() {
    metrics::describe_gauge!(
        ALERTS_FIRING,
        metrics::Unit::Count,
        "Alerts firing now by rule and kind (botmeter run --alert-rules), read from ClickHouse"
    );
}

/// Reads the alerts firing now from ClickHouse.
pub async fn refresh_alert_gauges(state: &AppState) -> Result<AlertGauges, ApiError> {
    let rows = state
        .read("read the alerts firing", |client| {
            client.query(ALERTS_FIRING_SQL).fetch_all::<FiringRow>()
        })
        .await?;
    Ok(AlertGauges {
        firing: rows
            .into_iter()
            .map(|row| ((row.rule, row.kind), row.firing))
            .collect(),
    })
}

/// Refreshes the gauge every [`ALERT_GAUGES_INTERVAL`] until the task is dropped; a read that
/// fails leaves it as it was and is logged.
pub async fn run_alert_gauges(state: AppState) {
    let mut ticks = tokio::time::interval(ALERT_GAUGES_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous = AlertGauges::default();
    loop {
        ticks.tick().await;
        match refresh_alert_gauges(&state).await {
            Ok(gauges) => {
                gauges.set(&previous);
                previous = gauges;
            }
            Err(error) => tracing::warn!(?error, "could not read the alerts for their gauge"),
        }
    }
}
