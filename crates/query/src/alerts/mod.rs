//! Alert evaluation (`botmeter run --alert-rules`): the rules ([`rules`]), the evidence each reads
//! from ClickHouse, and the alerts' state, kept in ClickHouse (`alerts`, migration 0015) so that
//! every instance, and an instance after a restart, sees the same alerts.
//!
//! Semantics, per rule and (owner, credential) (the owner and `''` for `usage_spike`, `''` and
//! `''` for `unattributed_spike` and `overage_forecast`):
//! - an **episode** starts with the first evidence (usage row) after the previous episode of the
//!   same key ended; its alert id is a hash of the rule's name, the owner, the credential and that
//!   first evidence's event time, so two instances (or one before and after a restart) evaluating
//!   the same rows compute the same id, and the table keeps one row per id;
//! - it is **firing** from then on, its evidence (net events, bytes in + out, first and last event
//!   time) updated as more arrives;
//! - it is **resolved** once its firing state was delivered and no new evidence has been ingested
//!   for the rule's `resolve_after_seconds`;
//! - each state is written `delivered = 0`, delivered to every sink, then written
//!   `delivered = 1`; an undelivered state is delivered again by the next evaluation, so a crash
//!   between the two repeats that delivery (at least once, same id and state) but never loses it.

pub mod rules;

use std::collections::BTreeMap;

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::api::params::rfc3339;
use crate::error::Error;
use crate::AppState;
pub use rules::{AlertRules, Delivery, Rule, RuleKind, RulesError};

const FLAG_EVIDENCE_SQL: &str = include_str!("../../sql/alert_flag_evidence.sql");
const UNATTRIBUTED_EVIDENCE_SQL: &str = include_str!("../../sql/alert_unattributed_evidence.sql");
const USAGE_SPIKE_EVIDENCE_SQL: &str = include_str!("../../sql/alert_usage_spike_evidence.sql");
const STATE_SQL: &str = include_str!("../../sql/alerts_state.sql");
/// Placeholders: to, from, state, state, alert_id, alert_id, limit.
pub(crate) const LIST_SQL: &str = include_str!("../../sql/alerts_list.sql");
/// Placeholders: owners, credentials, from, to, from, to, limit.
pub(crate) const AUDIT_SQL: &str = include_str!("../../sql/alerts_audit.sql");
/// The alerts table.
pub const ALERTS_TABLE: &str = "alerts";
/// `state` of an alert whose cause is ongoing.
pub const FIRING: &str = "firing";
/// `state` of an alert whose cause has ended.
pub const RESOLVED: &str = "resolved";

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// A ClickHouse query or insert failed.
    #[error(transparent)]
    ClickHouse(#[from] Error),
    /// The fleet (for `device_dropped`) could not be read.
    #[error("read the fleet for device_dropped: {0}")]
    Fleet(String),
}

/// A result whose error is an [`AlertError`].
pub type Result<T, E = AlertError> = std::result::Result<T, E>;

/// Evidence of one rule for one (owner, credential).
#[derive(Debug, Clone, PartialEq, Eq, Row, Deserialize)]
pub struct Evidence {
    /// The owner ('' for unattributed usage).
    pub owner_id: String,
    /// The credential ('' for unattributed usage).
    pub credential_id: String,
    /// Net usage rows.
    pub events: i64,
    /// Bytes in + out.
    pub bytes: i64,
    /// Event time of the first row (Unix seconds).
    pub first_seen: u32,
    /// Event time of the last row.
    pub last_seen: u32,
    /// When the last row was ingested.
    pub last_ingested: u32,
}

/// One version of one alert, as stored (column order of the `alerts` table).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct AlertRow {
    /// Stable id (see the module docs).
    pub alert_id: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's kind.
    pub kind: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The owner ('' when none).
    pub owner_id: String,
    /// The credential ('' when none).
    pub credential_id: String,
    /// Net usage rows of evidence.
    pub events: u64,
    /// Bytes in + out of evidence.
    pub bytes: u64,
    /// Event time of the first evidence (Unix seconds).
    pub first_seen: u32,
    /// Event time of the last evidence.
    pub last_seen: u32,
    /// When the last evidence was ingested.
    pub last_ingested: u32,
    /// When the alert fired.
    pub fired_at: u32,
    /// When it resolved (0 while firing).
    pub resolved_at: u32,
    /// Whether this state reached every sink (1) or not yet (0).
    pub delivered: u8,
    /// Version (microseconds); the highest wins.
    pub version: u64,
}

impl AlertRow {
    /// Whether this version is firing.
    pub fn is_firing(&self) -> bool {
        self.state == FIRING
    }
}

/// Evidence of an alert, as delivered and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertEvidence {
    /// Net usage rows.
    pub events: u64,
    /// Bytes in + out.
    pub bytes: u64,
    /// Event time of the first evidence, RFC 3339 UTC.
    pub first_seen: String,
    /// Event time of the last evidence, RFC 3339 UTC.
    pub last_seen: String,
}

/// Links to the API routes that show an alert and its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlertLinks {
    /// `/v1/alerts?alert_id=…`.
    pub alert: String,
    /// `/v1/anomalies` over the evidence's time range.
    pub evidence: String,
}

/// An alert, as delivered to the sinks and listed by `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// Stable id: the same for every delivery of every state of this episode.
    pub alert_id: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's kind (`revoked_credential_used`, `acl_violation`, `inactive_owner_used`,
    /// `unattributed_spike`, `device_dropped`, `overage_forecast`, `usage_spike`).
    pub kind: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// The owner (bot user or user), empty for unattributed usage.
    pub owner_id: String,
    /// The credential, empty for unattributed usage.
    pub credential_id: String,
    /// What made it fire.
    pub evidence: AlertEvidence,
    /// When it fired, RFC 3339 UTC.
    pub fired_at: String,
    /// When it resolved, RFC 3339 UTC; absent while firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// Where the API shows it.
    pub links: AlertLinks,
}

impl Alert {
    /// The alert a stored row describes; links are `api_base_url` + route (`""`: relative).
    pub fn from_row(row: &AlertRow, api_base_url: &str) -> Self {
        let base = api_base_url.trim_end_matches('/');
        Self {
            alert_id: row.alert_id.clone(),
            rule: row.rule.clone(),
            kind: row.kind.clone(),
            state: row.state.clone(),
            owner_id: row.owner_id.clone(),
            credential_id: row.credential_id.clone(),
            evidence: AlertEvidence {
                events: row.events,
                bytes: row.bytes,
                first_seen: rfc3339(row.first_seen),
                last_seen: rfc3339(row.last_seen),
            },
            fired_at: rfc3339(row.fired_at),
            resolved_at: (!row.is_firing()).then(|| rfc3339(row.resolved_at)),
            links: AlertLinks {
                alert: format!("{base}/v1/alerts?alert_id={}", row.alert_id),
                evidence: format!(
                    "{base}/v1/anomalies?from={}&to={}",
                    rfc3339(row.first_seen),
                    rfc3339(row.last_seen.saturating_add(1))
                ),
            },
        }
    }
}

/// The stable id of the episode of `rule` for (`owner_id`, `credential_id`) whose first evidence
/// is at `first_seen`.
pub fn alert_id(rule: &str, owner_id: &str, credential_id: &str, first_seen: u32) -> String {
    let mut hash = Sha256::new();
    for part in [rule, owner_id, credential_id] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(first_seen.to_be_bytes());
    format!("al_{}", hex::encode(&hash.finalize()[..16]))
}

fn clickhouse_error(action: &str) -> impl FnOnce(clickhouse::error::Error) -> Error + '_ {
    move |source| Error::ClickHouse {
        action: action.to_owned(),
        source,
    }
}

/// The alerts an evaluation starts from: firing, undelivered, or resolved since `resolved_since`.
pub async fn load_state(client: &Client, resolved_since: u32) -> Result<Vec<AlertRow>> {
    Ok(client
        .query(STATE_SQL)
        .bind(resolved_since)
        .fetch_all::<AlertRow>()
        .await
        .map_err(clickhouse_error("read the alerts' state"))?)
}

/// Writes alert versions.
pub async fn write_alerts(client: &Client, rows: &[AlertRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let action = "insert into alerts";
    let mut insert = client
        .insert::<AlertRow>(ALERTS_TABLE)
        .await
        .map_err(clickhouse_error(action))?;
    for row in rows {
        insert.write(row).await.map_err(clickhouse_error(action))?;
    }
    Ok(insert.end().await.map_err(clickhouse_error(action))?)
}

/// Which evidence to read: rows ingested since `ingested_since`, stamped after `event_after`,
/// for one key or (empty strings) all.
#[derive(Debug, Clone, Copy)]
struct EvidenceQuery<'a> {
    ingested_since: u32,
    event_after: u32,
    /// The bucket rules (`unattributed_spike`, `usage_spike`): only buckets (intervals, hours)
    /// starting after this count: the previous episode's last bucket (0: none), so that rows
    /// later in that bucket do not start the next episode at it (with the resolved one's id).
    bucket_after: u32,
    owner_id: &'a str,
    credential_id: &'a str,
}

impl EvidenceQuery<'static> {
    /// Every key's evidence at `now`: rows ingested within the lookback (read from
    /// `usage_alert_evidence`, migration 0016, ordered by ingestion time, so the primary key skips
    /// what was ingested before) and, a bound on the partition key (month of event_time) so that
    /// an evaluation reads recent months only, stamped within two lookbacks of now.
    fn all(lookback_seconds: u64, now: u32) -> Self {
        let lookback = u32::try_from(lookback_seconds).unwrap_or(u32::MAX);
        let ingested_since = now.saturating_sub(lookback);
        Self {
            ingested_since,
            event_after: ingested_since.saturating_sub(lookback),
            bucket_after: 0,
            owner_id: "",
            credential_id: "",
        }
    }
}

/// The credentials dropped now, as `/v1/fleet` classifies them (reusing its queries and rules):
/// one piece of evidence per credential, first and last seen the time it dropped.
async fn dropped_evidence(fleet: &AppState, rule: &Rule, now: u32) -> Result<Vec<Evidence>> {
    let grace = rule
        .drop_grace_seconds
        .unwrap_or(u64::from(crate::api::DEFAULT_FLEET_DROP_GRACE_SECONDS));
    let dropped =
        crate::api::dropped_credentials(fleet, now, u32::try_from(grace).unwrap_or(u32::MAX))
            .await
            .map_err(api_error)?;
    Ok(dropped
        .into_iter()
        .map(|credential| {
            let gone = u32::try_from(credential.gone_seconds.unwrap_or(0).max(0)).unwrap_or(0);
            let dropped_at = now.saturating_sub(gone);
            Evidence {
                owner_id: credential.owner_id,
                credential_id: credential.credential_id,
                events: 1,
                bytes: 0,
                first_seen: dropped_at,
                last_seen: dropped_at,
                last_ingested: dropped_at,
            }
        })
        .collect())
}

/// The month's projection of the rule's metric when it is over the plan's included amount: one
/// piece of evidence, first and last seen the month's start (one alert per metric and month),
/// `bytes` the projected amount of the metric, rounded.
async fn overage_evidence(
    fleet: &AppState,
    plan: Option<&crate::api::Plan>,
    rule: &Rule,
    now: u32,
) -> Result<Vec<Evidence>> {
    let (Some(plan), Some(metric)) = (plan, rule.metric.as_deref()) else {
        return Err(AlertError::Fleet(format!(
            "rule {:?}: overage_forecast without a plan or metric",
            rule.name
        )));
    };
    let (month_start, forecast) = crate::api::forecast_now(fleet, plan, now)
        .await
        .map_err(api_error)?;
    Ok(forecast
        .metrics
        .iter()
        .filter(|m| m.metric == metric && m.projected > m.included)
        .map(|m| Evidence {
            owner_id: String::new(),
            credential_id: String::new(),
            events: 1,
            bytes: m.projected.round() as i64,
            first_seen: month_start,
            last_seen: month_start,
            last_ingested: month_start,
        })
        .collect())
}

fn api_error(e: crate::api::ApiError) -> AlertError {
    match e {
        crate::api::ApiError::Unavailable(e) => AlertError::ClickHouse(e),
        other => AlertError::Fleet(format!("{other:?}")),
    }
}

async fn fetch_evidence(
    client: &Client,
    rule: &Rule,
    q: EvidenceQuery<'_>,
) -> Result<Vec<Evidence>> {
    let action = "read alert evidence";
    let rows = match rule.kind {
        RuleKind::DeviceDropped | RuleKind::OverageForecast => {
            unreachable!("device_dropped and overage_forecast read the fleet and the forecast")
        }
        RuleKind::UnattributedSpike => {
            let interval = rule.interval_seconds.unwrap_or(60);
            client
                .query(UNATTRIBUTED_EVIDENCE_SQL)
                .bind(interval)
                .bind(interval)
                .bind(q.ingested_since)
                .bind(q.event_after)
                .bind(rule.threshold_bytes.unwrap_or(u64::MAX))
                .bind(q.bucket_after)
                .fetch_all::<Evidence>()
                .await
        }
        RuleKind::UsageSpike => {
            let trailing_seconds = rule.spike_trailing_hours() * 3600;
            client
                .query(USAGE_SPIKE_EVIDENCE_SQL)
                .bind(trailing_seconds)
                .bind(q.ingested_since)
                .bind(q.event_after)
                .bind(q.owner_id)
                .bind(q.owner_id)
                // The hour holding event_after may be a candidate: its trailing hours too.
                .bind(u64::from(q.event_after).saturating_sub(trailing_seconds + 3600))
                .bind(q.owner_id)
                .bind(q.owner_id)
                .bind(q.bucket_after)
                .bind(rule.min_bytes_out.unwrap_or(u64::MAX))
                .bind(rule.factor.unwrap_or(f64::MAX))
                .fetch_all::<Evidence>()
                .await
        }
        kind => {
            let flags = kind.flags();
            client
                .query(FLAG_EVIDENCE_SQL)
                .bind(flags[0])
                .bind(flags[flags.len() - 1])
                .bind(q.ingested_since)
                .bind(q.event_after)
                .bind(q.owner_id)
                .bind(q.owner_id)
                .bind(q.credential_id)
                .bind(q.credential_id)
                .fetch_all::<Evidence>()
                .await
        }
    }
    .map_err(clickhouse_error(action))?;
    Ok(rows.into_iter().filter(|e| e.events > 0).collect())
}

/// The evidence a rule read from `usage_events` (flag and spike kinds, not `device_dropped` or
/// `overage_forecast`) finds at `now` with no previous episode: what one evaluation queries
/// first (the `usage_spike` bench measures it).
pub async fn usage_evidence(
    client: &Client,
    rule: &Rule,
    lookback_seconds: u64,
    now: u32,
) -> Result<Vec<Evidence>> {
    if rule.kind.is_condition() {
        return Err(AlertError::Fleet(format!(
            "rule {:?}: {} does not read usage rows",
            rule.name,
            rule.kind.as_str()
        )));
    }
    fetch_evidence(client, rule, EvidenceQuery::all(lookback_seconds, now)).await
}

/// One evaluation of one rule at `now` (Unix seconds): the alert versions to write, given the
/// stored alerts `known` (all rules; see [`load_state`]). `version` is the version new rows get.
/// `fleet` reads the fleet for `device_dropped` and the usage for `overage_forecast` (against
/// `plan`).
#[allow(clippy::too_many_arguments)]
pub async fn evaluate_rule(
    client: &Client,
    fleet: &AppState,
    plan: Option<&crate::api::Plan>,
    rule: &Rule,
    lookback_seconds: u64,
    now: u32,
    version: u64,
    known: &[AlertRow],
) -> Result<Vec<AlertRow>> {
    let all = EvidenceQuery::all(lookback_seconds, now);
    let recent = all.event_after;
    let mut evidence = Vec::new();
    let found_all = match rule.kind {
        RuleKind::DeviceDropped => dropped_evidence(fleet, rule, now).await?,
        RuleKind::OverageForecast => overage_evidence(fleet, plan, rule, now).await?,
        _ => fetch_evidence(client, rule, all).await?,
    };
    for found in found_all {
        let ended = last_resolved_evidence(rule, known, &found.owner_id, &found.credential_id);
        if ended == 0 || (rule.kind.is_condition() && found.last_seen > ended) {
            evidence.push(found);
        } else if found.last_seen > ended {
            // Only what came after the previous episode belongs to this one.
            let keyed = EvidenceQuery {
                event_after: ended.max(recent),
                bucket_after: ended,
                owner_id: &found.owner_id,
                credential_id: &found.credential_id,
                ..all
            };
            evidence.extend(
                fetch_evidence(client, rule, keyed)
                    .await?
                    .into_iter()
                    .filter(|e| {
                        e.owner_id == found.owner_id && e.credential_id == found.credential_id
                    }),
            );
        }
    }
    Ok(transitions(rule, now, version, &evidence, known))
}

/// The last evidence time of the newest resolved episode of `rule` for the key (0: none).
fn last_resolved_evidence(
    rule: &Rule,
    known: &[AlertRow],
    owner_id: &str,
    credential_id: &str,
) -> u32 {
    known
        .iter()
        .filter(|a| {
            a.rule == rule.name
                && a.owner_id == owner_id
                && a.credential_id == credential_id
                && !a.is_firing()
        })
        .map(|a| a.last_seen)
        .max()
        .unwrap_or(0)
}

/// The pure part of [`evaluate_rule`]: new, updated and resolved alerts from the evidence (each
/// already limited to what follows the key's previous episode).
pub fn transitions(
    rule: &Rule,
    now: u32,
    version: u64,
    evidence: &[Evidence],
    known: &[AlertRow],
) -> Vec<AlertRow> {
    // device_dropped and overage_forecast are conditions: over as soon as they do not hold, and
    // their evidence names its episode (the time the device dropped, the month): a condition
    // that holds again with another start (a new month's forecast still over quota, a device
    // back and dropped again between two evaluations) is a new alert, and the old one resolves.
    let condition = rule.kind.is_condition();
    let episode = |first_seen: u32| if condition { first_seen } else { 0 };
    let mut firing: BTreeMap<(&str, &str, u32), &AlertRow> = BTreeMap::new();
    for alert in known
        .iter()
        .filter(|a| a.rule == rule.name && a.is_firing())
    {
        firing.insert(
            (
                alert.owner_id.as_str(),
                alert.credential_id.as_str(),
                episode(alert.first_seen),
            ),
            alert,
        );
    }
    let mut out = Vec::new();
    let mut updated: BTreeMap<(&str, &str, u32), AlertRow> = BTreeMap::new();
    for e in evidence {
        let key = (
            e.owner_id.as_str(),
            e.credential_id.as_str(),
            episode(e.first_seen),
        );
        let events = u64::try_from(e.events).unwrap_or(0);
        let bytes = u64::try_from(e.bytes).unwrap_or(0);
        match firing.get(&key) {
            Some(current) => {
                if (
                    current.events,
                    current.bytes,
                    current.last_seen,
                    current.last_ingested,
                ) != (events, bytes, e.last_seen, e.last_ingested)
                {
                    let row = AlertRow {
                        events,
                        bytes,
                        last_seen: e.last_seen,
                        last_ingested: e.last_ingested.max(current.last_ingested),
                        version: version.max(current.version + 2),
                        ..(*current).clone()
                    };
                    updated.insert(key, row);
                }
            }
            None => out.push(AlertRow {
                alert_id: alert_id(&rule.name, &e.owner_id, &e.credential_id, e.first_seen),
                rule: rule.name.clone(),
                kind: rule.kind.as_str().to_owned(),
                state: FIRING.to_owned(),
                owner_id: e.owner_id.clone(),
                credential_id: e.credential_id.clone(),
                events,
                bytes,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                last_ingested: e.last_ingested,
                fired_at: now,
                resolved_at: 0,
                delivered: 0,
                version,
            }),
        }
    }
    let resolve_after = u32::try_from(rule.resolve_after_seconds).unwrap_or(u32::MAX);
    let present: std::collections::BTreeSet<(&str, &str, u32)> = evidence
        .iter()
        .map(|e| {
            (
                e.owner_id.as_str(),
                e.credential_id.as_str(),
                episode(e.first_seen),
            )
        })
        .collect();
    for (key, current) in firing {
        let latest = updated.remove(&key).unwrap_or_else(|| current.clone());
        let over = if condition {
            !present.contains(&key)
        } else {
            now.saturating_sub(latest.last_ingested) > resolve_after
        };
        // A firing state is delivered before its resolution, so no sink sees only the latter.
        if latest.delivered == 1 && over {
            out.push(AlertRow {
                state: RESOLVED.to_owned(),
                resolved_at: now,
                delivered: 0,
                version: version.max(latest.version + 2),
                ..latest
            });
        } else if latest != *current {
            out.push(latest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule {
            resolve_after_seconds: 60,
            ..Rule::new("revoked", RuleKind::RevokedCredentialUsed)
        }
    }

    #[test]
    fn a_dropped_device_resolves_when_it_is_back_not_after_a_delay() {
        let rule = Rule {
            name: "dropped".into(),
            kind: RuleKind::DeviceDropped,
            ..rule()
        };
        let dropped = evidence(1, 900, 900, 900);
        let fired = transitions(&rule, 1000, 1, std::slice::from_ref(&dropped), &[]);
        assert_eq!(fired.len(), 1);
        let delivered = AlertRow {
            delivered: 1,
            version: 2,
            ..fired[0].clone()
        };
        // Still dropped long after resolve_after: still firing, nothing written.
        assert!(transitions(
            &rule,
            5000,
            3,
            std::slice::from_ref(&dropped),
            std::slice::from_ref(&delivered)
        )
        .is_empty());
        // Back online: resolved at once.
        let resolved = transitions(&rule, 5001, 4, &[], std::slice::from_ref(&delivered));
        assert_eq!((resolved.len(), resolved[0].state.as_str()), (1, RESOLVED));
    }

    fn evidence(events: i64, first: u32, last: u32, ingested: u32) -> Evidence {
        Evidence {
            owner_id: "bot_a".into(),
            credential_id: "cr_a".into(),
            events,
            bytes: events * 10,
            first_seen: first,
            last_seen: last,
            last_ingested: ingested,
        }
    }

    #[test]
    fn an_episode_fires_updates_and_resolves_under_one_id() {
        let rule = rule();
        let fired = transitions(&rule, 1000, 1, &[evidence(2, 990, 995, 998)], &[]);
        assert_eq!(fired.len(), 1);
        let alert = &fired[0];
        assert_eq!(
            (alert.state.as_str(), alert.delivered, alert.events),
            (FIRING, 0, 2)
        );
        assert_eq!(alert.alert_id, alert_id("revoked", "bot_a", "cr_a", 990));
        // Same evidence again: nothing to write.
        assert!(transitions(&rule, 1001, 5, &[evidence(2, 990, 995, 998)], &fired).is_empty());
        // Undelivered: never resolved, however long.
        assert!(transitions(&rule, 5000, 5, &[], &fired).is_empty());
        let delivered = AlertRow {
            delivered: 1,
            version: 2,
            ..alert.clone()
        };
        // More evidence: an update of the same id, still delivered.
        let more = transitions(
            &rule,
            1010,
            10,
            &[evidence(3, 990, 1005, 1008)],
            std::slice::from_ref(&delivered),
        );
        assert_eq!(more.len(), 1);
        assert_eq!(
            (more[0].alert_id.as_str(), more[0].events, more[0].delivered),
            (alert.alert_id.as_str(), 3, 1)
        );
        // Quiet for longer than resolve_after: resolved, to be delivered.
        let resolved = transitions(&rule, 1069, 20, &[evidence(3, 990, 1005, 1008)], &more);
        assert_eq!(resolved.len(), 1);
        assert_eq!(
            (
                resolved[0].state.as_str(),
                resolved[0].resolved_at,
                resolved[0].delivered
            ),
            (RESOLVED, 1069, 0)
        );
        assert_eq!(resolved[0].alert_id, alert.alert_id);
        // New evidence after the resolved episode: a new id.
        let again = transitions(&rule, 2000, 30, &[evidence(1, 1990, 1990, 1995)], &resolved);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].alert_id, alert.alert_id);
        assert_eq!(again[0].state, FIRING);
    }

    #[test]
    fn a_usage_spike_is_one_alert_per_owner_and_episode() {
        let rule = Rule {
            factor: Some(3.0),
            min_bytes_out: Some(1000),
            ..Rule::new("spike", RuleKind::UsageSpike)
        };
        // Two spiking hours of one owner (evidence summed by the SQL): one alert, keyed by the
        // first hour, with no credential.
        let hour = 1_699_999_200;
        let spike = Evidence {
            owner_id: "bot_a".into(),
            credential_id: String::new(),
            events: 7,
            bytes: 9000,
            first_seen: hour,
            last_seen: hour + 3600,
            last_ingested: hour + 3700,
        };
        let fired = transitions(&rule, hour + 3700, 1, std::slice::from_ref(&spike), &[]);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].alert_id, alert_id("spike", "bot_a", "", hour));
        assert_eq!(
            (fired[0].kind.as_str(), fired[0].bytes),
            ("usage_spike", 9000)
        );
        let delivered = AlertRow {
            delivered: 1,
            version: 2,
            ..fired[0].clone()
        };
        // The spiking hours stop getting rows: resolved once resolve_after has passed.
        let quiet = hour + 3700 + 300;
        assert!(transitions(
            &rule,
            quiet,
            3,
            std::slice::from_ref(&spike),
            std::slice::from_ref(&delivered)
        )
        .is_empty());
        let resolved = transitions(&rule, quiet + 1, 4, &[spike], &[delivered]);
        assert_eq!((resolved.len(), resolved[0].state.as_str()), (1, RESOLVED));
    }

    #[test]
    fn a_forecast_still_over_quota_in_a_new_month_is_a_new_alert() {
        let rule = Rule {
            name: "forecast".into(),
            kind: RuleKind::OverageForecast,
            ..rule()
        };
        let (november, december) = (1_698_796_800, 1_701_388_800);
        let month = |start: u32| Evidence {
            owner_id: String::new(),
            credential_id: String::new(),
            first_seen: start,
            last_seen: start,
            last_ingested: start,
            ..evidence(1, start, start, start)
        };
        let fired = transitions(&rule, november + 10, 1, &[month(november)], &[]);
        let delivered = AlertRow {
            delivered: 1,
            version: 2,
            ..fired[0].clone()
        };
        // December's projection is over quota too: November's alert resolves and December's
        // fires under its own id, instead of November's alert carrying December's evidence.
        let mut next = transitions(&rule, december + 10, 3, &[month(december)], &[delivered]);
        next.sort_by_key(|a| a.first_seen);
        let states: Vec<(&str, &str, u32)> = next
            .iter()
            .map(|a| (a.alert_id.as_str(), a.state.as_str(), a.first_seen))
            .collect();
        let (november_id, december_id) = (
            alert_id("forecast", "", "", november),
            alert_id("forecast", "", "", december),
        );
        assert_eq!(
            states,
            [
                (november_id.as_str(), RESOLVED, november),
                (december_id.as_str(), FIRING, december)
            ]
        );
    }

    #[test]
    fn the_id_depends_on_rule_owner_credential_and_first_evidence() {
        let id = alert_id("r", "o", "c", 1);
        assert_eq!(id, alert_id("r", "o", "c", 1));
        for other in [
            alert_id("r2", "o", "c", 1),
            alert_id("r", "o2", "c", 1),
            alert_id("r", "o", "c2", 1),
            alert_id("r", "o", "c", 2),
            alert_id("r", "oc", "", 1),
        ] {
            assert_ne!(id, other);
        }
    }
}
