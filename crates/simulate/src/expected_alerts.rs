//! The alerts botmeter's alert rules (`botmeter run --alert-rules`) must raise for a simulated
//! fleet ([`GroundTruth::expected_alerts`]), computed from the ground truth by the rules as the
//! README (Alerts) states them, independently of the SQL that evaluates them.
//!
//! The fleet is taken to be published in **stages**: stage `i` holds the events stamped before
//! `stage_ends[i]` and not in an earlier stage; each stage is fully ingested and evaluated before
//! the next one is published, and every alert whose cause ended with it (evidence that stopped
//! coming) has resolved by then. Under that model:
//! - the flag rules (`revoked_credential_used`, `acl_violation`, `inactive_owner_used`) raise one
//!   alert per stage and (owner, credential) with traffic carrying one of the rule's flags in that
//!   stage, resolved (its evidence stops with the stage);
//! - `usage_spike` (per owner) and `unattributed_spike` (account-wide) find their buckets over
//!   the rule's threshold from everything published so far, and raise one alert in a stage when
//!   a bucket is over that starts after the last bucket of the previous alert, resolved;
//! - `device_dropped` and `overage_forecast` are conditions, observed at each stage's end: an
//!   alert fires when the condition starts to hold and resolves at the first stage end where it
//!   does not; one that still holds at the last stage end is still firing. The clock at each
//!   observation is taken to be the stage's end: publish stages that lie in the past, with no
//!   session stopping within the drop grace before a stage's end.
//!
//! It needs the events recorded ([`GroundTruth::events`]); every rule's evidence is taken to be
//! within its lookback.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use query::alerts::{AlertRules, Rule, RuleKind};

use super::truth::{ExpectedEvent, GroundTruth};

/// One alert a rules file must raise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExpectedAlert {
    /// The rule's name.
    pub rule: String,
    /// The rule's kind (`usage_spike`, …).
    pub kind: String,
    /// The owner (`""` for account-wide kinds).
    pub owner_id: String,
    /// The credential (`""` for account-wide kinds and `usage_spike`).
    pub credential_id: String,
    /// Resolved once the last stage was evaluated (else still firing).
    pub resolved: bool,
}

/// Why the expected alerts cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedAlertsError {
    /// The rule (or `(stages)`, `(events)`).
    pub rule: String,
    /// What is missing or not modelled.
    pub reason: String,
}

impl fmt::Display for ExpectedAlertsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected alerts: {}: {}", self.rule, self.reason)
    }
}

impl std::error::Error for ExpectedAlertsError {}

fn error(rule: &str, reason: impl Into<String>) -> ExpectedAlertsError {
    ExpectedAlertsError {
        rule: rule.to_owned(),
        reason: reason.into(),
    }
}

/// A recorded traffic event with its usage time, in whole seconds (as stored).
struct Timed<'a> {
    at: DateTime<Utc>,
    second: i64,
    event: &'a ExpectedEvent,
}

impl GroundTruth {
    /// The alerts `rules` must raise when the fleet is published in stages ending at
    /// `stage_ends` (ascending; see the module docs), sorted. `overage_forecast` rules need
    /// `rules.loaded_plan` ([`AlertRules::load`]) and a metric counted per event (`bytes_in`,
    /// `bytes_out`, `http_requests`, `tcp_connections`).
    pub fn expected_alerts(
        &self,
        rules: &AlertRules,
        stage_ends: &[DateTime<Utc>],
    ) -> Result<Vec<ExpectedAlert>, ExpectedAlertsError> {
        if stage_ends.is_empty() || stage_ends.windows(2).any(|w| w[0] >= w[1]) {
            return Err(error("(stages)", "expected at least one, ascending"));
        }
        if self.events.len() as u64 != self.traffic_events {
            return Err(error("(events)", "the truth does not record every event"));
        }
        let mut events: Vec<Timed<'_>> = self
            .events
            .values()
            .map(|event| {
                let at = event
                    .usage_time
                    .ok_or_else(|| error("(events)", "an event without its usage time"))?;
                Ok(Timed {
                    at,
                    second: at.timestamp(),
                    event,
                })
            })
            .collect::<Result<_, ExpectedAlertsError>>()?;
        events.sort_by_key(|e| e.at);
        let mut out = Vec::new();
        for rule in &rules.rules {
            let alert = |owner_id: &str, credential_id: &str, resolved: bool| ExpectedAlert {
                rule: rule.name.clone(),
                kind: rule.kind.as_str().to_owned(),
                owner_id: owner_id.to_owned(),
                credential_id: credential_id.to_owned(),
                resolved,
            };
            match rule.kind {
                RuleKind::RevokedCredentialUsed
                | RuleKind::AclViolation
                | RuleKind::InactiveOwnerUsed => {
                    for stage in stages(&events, stage_ends) {
                        let keys: BTreeSet<(&str, &str)> = stage
                            .iter()
                            .filter(|e| {
                                e.event
                                    .flags
                                    .iter()
                                    .any(|f| rule.kind.flags().contains(&f.as_str()))
                            })
                            .filter_map(|e| {
                                Some((
                                    e.event.owner_id.as_deref()?,
                                    e.event.credential_id.as_deref()?,
                                ))
                            })
                            .collect();
                        out.extend(keys.into_iter().map(|(o, c)| alert(o, c, true)));
                    }
                }
                RuleKind::UsageSpike | RuleKind::UnattributedSpike => {
                    for owner in spike_episodes(rule, &events, stage_ends) {
                        out.push(alert(&owner, "", true));
                    }
                }
                RuleKind::DeviceDropped => {
                    let grace = chrono::Duration::seconds(rule.drop_grace_seconds.map_or(
                        i64::from(query::api::DEFAULT_FLEET_DROP_GRACE_SECONDS),
                        |s| i64::try_from(s).unwrap_or(i64::MAX),
                    ));
                    let observations = stage_ends.iter().map(|&end| {
                        self.fleet_at(end, grace)
                            .into_iter()
                            .filter(|(_, c)| c.state == "dropped")
                            .map(|(credential, _)| {
                                (self.fleet[&credential].owner_id.clone(), credential)
                            })
                            .collect::<BTreeSet<(String, String)>>()
                    });
                    for ((owner, credential), resolved) in condition_episodes(observations) {
                        out.push(alert(&owner, &credential, resolved));
                    }
                }
                RuleKind::OverageForecast => {
                    let over = stage_ends
                        .iter()
                        .map(|&end| {
                            let over = projected_over(rules, rule, &events, end)?;
                            Ok(if over {
                                BTreeSet::from([(String::new(), String::new())])
                            } else {
                                BTreeSet::new()
                            })
                        })
                        .collect::<Result<Vec<_>, ExpectedAlertsError>>()?;
                    for ((owner, credential), resolved) in condition_episodes(over.into_iter()) {
                        out.push(alert(&owner, &credential, resolved));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The events of each stage.
fn stages<'e, 'a>(
    events: &'e [Timed<'a>],
    stage_ends: &'e [DateTime<Utc>],
) -> impl Iterator<Item = &'e [Timed<'a>]> {
    let mut from = 0;
    stage_ends.iter().map(move |end| {
        let to = from + events[from..].partition_point(|e| e.at < *end);
        let stage = &events[from..to];
        from = to;
        stage
    })
}

/// The episodes of a condition observed at each stage end (the keys for which it holds): per
/// key, one per run of observations in which it holds, resolved unless the run reaches the
/// last observation.
fn condition_episodes(
    observations: impl Iterator<Item = BTreeSet<(String, String)>>,
) -> Vec<((String, String), bool)> {
    let mut out = Vec::new();
    let mut holding: BTreeSet<(String, String)> = BTreeSet::new();
    for now in observations {
        for ended in holding.difference(&now) {
            out.push((ended.clone(), true));
        }
        holding = now;
    }
    out.extend(holding.into_iter().map(|key| (key, false)));
    out
}

/// Per stage, the bucket sums of a spike rule from everything published so far, and the owners
/// (`""` for `unattributed_spike`) that get an alert in it: one per stage with a bucket over the
/// threshold that starts after the last bucket of the owner's previous alert.
fn spike_episodes(rule: &Rule, events: &[Timed<'_>], stage_ends: &[DateTime<Utc>]) -> Vec<String> {
    let mut last_bucket: BTreeMap<String, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for end in stage_ends {
        let published = &events[..events.partition_point(|e| e.at < *end)];
        for (owner, over) in buckets_over(rule, published) {
            let new: Vec<i64> = over
                .into_iter()
                .filter(|b| last_bucket.get(&owner).is_none_or(|last| b > last))
                .collect();
            if let Some(&last) = new.iter().max() {
                last_bucket.insert(owner.clone(), last);
                out.push(owner);
            }
        }
    }
    out
}

/// Per owner, the starts of the buckets over a spike rule's threshold.
fn buckets_over(rule: &Rule, events: &[Timed<'_>]) -> BTreeMap<String, Vec<i64>> {
    let mut out = BTreeMap::new();
    if rule.kind == RuleKind::UnattributedSpike {
        let interval = i64::try_from(rule.interval_seconds.unwrap_or(60)).unwrap_or(i64::MAX);
        let threshold = rule.threshold_bytes.unwrap_or(u64::MAX);
        let mut sums: BTreeMap<i64, u64> = BTreeMap::new();
        for e in events.iter().filter(|e| e.event.owner_id.is_none()) {
            *sums
                .entry(e.second.div_euclid(interval) * interval)
                .or_default() += e.event.usage.bytes_in + e.event.usage.bytes_out;
        }
        let over: Vec<i64> = sums
            .into_iter()
            .filter(|(_, bytes)| *bytes > threshold)
            .map(|(start, _)| start)
            .collect();
        if !over.is_empty() {
            out.insert(String::new(), over);
        }
        return out;
    }
    // usage_spike: each owner's hours with usage and their bytes out.
    let mut hours: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
    for e in events {
        if let Some(owner) = e.event.owner_id.as_deref() {
            *hours
                .entry(owner)
                .or_default()
                .entry(e.second.div_euclid(3600) * 3600)
                .or_default() += e.event.usage.bytes_out;
        }
    }
    let trailing = i64::try_from(rule.spike_trailing_hours()).unwrap_or(i64::MAX / 7200) * 3600;
    let floor = rule.min_bytes_out.unwrap_or(u64::MAX);
    let factor = rule.factor.unwrap_or(f64::MAX);
    for (owner, series) in hours {
        let over: Vec<i64> = series
            .iter()
            .filter(|&(&start, bytes)| {
                let mut before: Vec<u64> = series
                    .range(start - trailing..start)
                    .map(|(_, b)| *b)
                    .collect();
                before.sort_unstable();
                // The upper middle value of an even count, 0 with none.
                let median = before.get(before.len() / 2).copied().unwrap_or(0);
                *bytes > floor && *bytes as f64 > factor * median as f64
            })
            .map(|(start, _)| *start)
            .collect();
        if !over.is_empty() {
            out.insert(owner.to_owned(), over);
        }
    }
    out
}

/// Whether the account's month-end projection of the rule's metric, as of `at`, is over the
/// plan's included amount (`/v1/overage`'s method: month to date + the trailing 7 days' daily
/// rate × the days left).
fn projected_over(
    rules: &AlertRules,
    rule: &Rule,
    events: &[Timed<'_>],
    at: DateTime<Utc>,
) -> Result<bool, ExpectedAlertsError> {
    let metric = rule.metric.as_deref().unwrap_or_default();
    let plan = rules
        .loaded_plan
        .as_ref()
        .ok_or_else(|| error(&rule.name, "no plan loaded (AlertRules::load)"))?;
    let included = plan
        .metrics
        .iter()
        .find(|(m, _)| m.name() == metric)
        .map(|(_, priced)| priced.included)
        .ok_or_else(|| error(&rule.name, format!("metric {metric:?} not in the plan")))?;
    let of = |e: &ExpectedEvent| -> Result<f64, ExpectedAlertsError> {
        let usage = &e.usage;
        Ok(match metric {
            "bytes_in" => usage.bytes_in as f64,
            "bytes_out" => usage.bytes_out as f64,
            "http_requests" => usage.http_requests as f64,
            "tcp_connections" => usage.tcp_connections as f64,
            other => {
                return Err(error(
                    &rule.name,
                    format!("metric {other:?} is not modelled (not counted per event)"),
                ))
            }
        })
    };
    let as_of = at.timestamp();
    let month_start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month exists");
    let month_end = month_start
        .checked_add_months(chrono::Months::new(1))
        .expect("a month after a simulated window exists");
    let (mut to_date, mut trailing) = (0.0, 0.0);
    for e in events.iter().filter(|e| e.event.owner_id.is_some()) {
        if e.second >= as_of {
            break;
        }
        if e.second >= month_start.timestamp() {
            to_date += of(e.event)?;
        }
        if e.second >= as_of - 7 * 86_400 {
            trailing += of(e.event)?;
        }
    }
    let days_left = (month_end.timestamp() - as_of) as f64 / 86_400.0;
    Ok(to_date + trailing / 7.0 * days_left > included)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, Fleet, FleetConfig, Scenarios, SPIKE_BYTES_OUT, SPIKE_CONNECTIONS};

    fn fleet() -> Fleet {
        generate(&FleetConfig {
            seed: 7,
            users: 2,
            bot_users: 4,
            traffic_events: 2_000,
            duration_hours: 2,
            scenarios: Scenarios {
                rotations: 1,
                acl_violations: 1,
                bot_deactivations: 1,
                device_drops: 2,
                usage_spikes: 1,
                unknown_hostnames: 1,
                ..Scenarios::default()
            },
            ..FleetConfig::default()
        })
    }

    /// All seven kinds, the plan including `included` bytes out.
    fn rules(included: u64) -> AlertRules {
        let dir = std::env::temp_dir().join(format!(
            "simulate-expected-alerts-{}-{included}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = dir.join("plan.toml");
        std::fs::write(
            &plan,
            format!(
                "name = \"t\"\n[metrics.bytes_out]\nincluded = {included}\nprice_per_unit = 1\n"
            ),
        )
        .unwrap();
        let path = dir.join("rules.toml");
        std::fs::write(
            &path,
            format!(
                r#"lookback_seconds = 86400
plan = {plan:?}
[[rules]]
name = "revoked"
kind = "revoked_credential_used"
[[rules]]
name = "acl"
kind = "acl_violation"
[[rules]]
name = "inactive"
kind = "inactive_owner_used"
[[rules]]
name = "unattributed"
kind = "unattributed_spike"
interval_seconds = 3600
threshold_bytes = 1
[[rules]]
name = "dropped"
kind = "device_dropped"
drop_grace_seconds = 2
[[rules]]
name = "overage"
kind = "overage_forecast"
metric = "bytes_out"
[[rules]]
name = "spike"
kind = "usage_spike"
factor = 4
min_bytes_out = 1000000000
"#
            ),
        )
        .unwrap();
        let rules = AlertRules::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        rules
    }

    fn of<'a>(alerts: &'a [ExpectedAlert], rule: &str) -> Vec<&'a ExpectedAlert> {
        alerts.iter().filter(|a| a.rule == rule).collect()
    }

    #[test]
    fn the_spike_owner_alerts_and_no_other() {
        let fleet = fleet();
        let truth = &fleet.truth;
        // The spike, read off the hourly truth (another path than the events'): one owner has an
        // hour of at least the burst's bytes out; no other owner has an hour near the floor.
        let burst = SPIKE_CONNECTIONS as u64 * SPIKE_BYTES_OUT;
        let spiking: Vec<&String> = truth
            .hourly
            .iter()
            .filter(|(_, hours)| hours.values().any(|u| u.bytes_out >= burst))
            .map(|(owner, _)| owner)
            .collect();
        assert_eq!(spiking.len(), 1, "{:?}", truth.hourly);
        let quiet_max = truth
            .hourly
            .values()
            .flat_map(|hours| hours.values())
            .map(|u| u.bytes_out)
            .filter(|b| *b < burst)
            .max()
            .unwrap();
        assert!(quiet_max < 1_000_000_000, "{quiet_max}");
        let alerts = truth
            .expected_alerts(&rules(1), &[truth.window_end])
            .unwrap();
        let spikes = of(&alerts, "spike");
        assert_eq!(spikes.len(), 1, "{alerts:?}");
        assert_eq!(
            (
                &spikes[0].owner_id,
                spikes[0].credential_id.as_str(),
                spikes[0].resolved
            ),
            (spiking[0], "", true)
        );
        // With a floor over the burst, nothing.
        let mut high = rules(1);
        high.rules.iter_mut().for_each(|r| {
            if r.name == "spike" {
                r.min_bytes_out = Some(burst * 2);
            }
        });
        let alerts = truth.expected_alerts(&high, &[truth.window_end]).unwrap();
        assert!(of(&alerts, "spike").is_empty(), "{alerts:?}");
    }

    #[test]
    fn flagged_traffic_alerts_once_per_owner_credential_and_stage() {
        let fleet = fleet();
        let truth = &fleet.truth;
        let rules = rules(1);
        let once = truth.expected_alerts(&rules, &[truth.window_end]).unwrap();
        // The rotated authtoken (deleted under a live session) and the ACL violation, each
        // resolved; the deactivated bot user's credentials.
        let revoked = of(&once, "revoked");
        let revoked_credentials: BTreeSet<&str> = truth
            .events
            .values()
            .filter(|e| e.flags.iter().any(|f| f == "credential_deleted"))
            .filter_map(|e| e.credential_id.as_deref())
            .collect();
        assert!(!revoked.is_empty());
        assert_eq!(
            revoked
                .iter()
                .map(|a| a.credential_id.as_str())
                .collect::<BTreeSet<_>>(),
            revoked_credentials
        );
        assert!(revoked.iter().all(|a| a.resolved && !a.owner_id.is_empty()));
        assert_eq!(of(&once, "acl").len(), 1, "{once:?}");
        assert!(!of(&once, "inactive").is_empty(), "{once:?}");
        assert_eq!(of(&once, "unattributed").len(), 1, "{once:?}");
        // In two stages, a key flagged on both sides of the cut alerts twice.
        let cut = truth.window_start + (truth.window_end - truth.window_start) / 2;
        let twice = truth
            .expected_alerts(&rules, &[cut, truth.window_end])
            .unwrap();
        let both_sides: usize = revoked_credentials
            .iter()
            .filter(|c| {
                let flagged: Vec<DateTime<Utc>> = truth
                    .events
                    .values()
                    .filter(|e| {
                        e.credential_id.as_deref() == Some(**c)
                            && e.flags.iter().any(|f| f == "credential_deleted")
                    })
                    .filter_map(|e| e.usage_time)
                    .collect();
                flagged.iter().any(|t| *t < cut) && flagged.iter().any(|t| *t >= cut)
            })
            .count();
        assert_eq!(of(&twice, "revoked").len(), revoked.len() + both_sides);
    }

    #[test]
    fn a_dropped_device_fires_at_the_cut_and_resolves_once_back() {
        let fleet = fleet();
        let truth = &fleet.truth;
        let rules = rules(1);
        let cut = truth.window_start + (truth.window_end - truth.window_start) / 2;
        let staged = truth
            .expected_alerts(&rules, &[cut, truth.window_end])
            .unwrap();
        let dropped = of(&staged, "dropped");
        // Two devices drop before half way; the first comes back, the second does not.
        assert_eq!(dropped.len(), 2, "{staged:?}");
        assert_eq!(
            dropped.iter().filter(|a| a.resolved).count(),
            1,
            "{dropped:?}"
        );
        for alert in &dropped {
            let credential = &truth.fleet[&alert.credential_id];
            assert_eq!(credential.owner_id, alert.owner_id);
            let back = credential.sessions.iter().any(|s| s.started_at > cut);
            assert_eq!(alert.resolved, back, "{alert:?}");
        }
        // Published at once, the one that came back never looked dropped.
        let once = truth.expected_alerts(&rules, &[truth.window_end]).unwrap();
        let dropped_once = of(&once, "dropped");
        assert_eq!(dropped_once.len(), 1, "{once:?}");
        assert!(!dropped_once[0].resolved);
    }

    #[test]
    fn the_overage_fires_over_the_quota_and_stays_firing() {
        let fleet = fleet();
        let truth = &fleet.truth;
        let cut = truth.window_start + (truth.window_end - truth.window_start) / 2;
        let over = truth
            .expected_alerts(&rules(1), &[cut, truth.window_end])
            .unwrap();
        assert_eq!(
            of(&over, "overage")
                .iter()
                .map(|a| (a.owner_id.as_str(), a.resolved))
                .collect::<Vec<_>>(),
            [("", false)]
        );
        // A quota no projection of a 2-hour fleet reaches.
        let under = truth
            .expected_alerts(&rules(u64::MAX / 4), &[cut, truth.window_end])
            .unwrap();
        assert!(of(&under, "overage").is_empty(), "{under:?}");
    }

    #[test]
    fn what_cannot_be_computed_is_an_error_naming_it() {
        let fleet = fleet();
        let truth = &fleet.truth;
        let rules = rules(1);
        let end = truth.window_end;
        let message = truth.expected_alerts(&rules, &[]).unwrap_err().to_string();
        assert!(message.contains("(stages)"), "{message}");
        let message = truth
            .expected_alerts(&rules, &[end, truth.window_start])
            .unwrap_err()
            .to_string();
        assert!(message.contains("ascending"), "{message}");
        let mut unrecorded = truth.clone();
        unrecorded.events.clear();
        let message = unrecorded
            .expected_alerts(&rules, &[end])
            .unwrap_err()
            .to_string();
        assert!(message.contains("record"), "{message}");
        let mut hours = rules.clone();
        hours.rules.retain(|r| r.name == "overage");
        hours.rules[0].metric = Some("session_hours".into());
        let message = truth
            .expected_alerts(&hours, &[end])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("overage") && message.contains("session_hours"),
            "{message}"
        );
    }
}
