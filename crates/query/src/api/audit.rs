//! `GET /v1/audit?owner_id=…|credential_id=…[&from=…&to=…]`: the audit trail of an owner or a
//! credential (admin keys only). Without `from`/`to`, all of history.
//!
//! For an owner (`usr_…`/`bot_…`):
//! - `lifecycle`: events of the bot user itself and of every credential it owns (created, updated,
//!   deactivated, deleted; `revoked_with_owner` for a credential its owner's deletion revoked,
//!   with no deletion of its own before), and rejected attempts to change a credential's owner to or from it
//!   (anomaly `owner_change_rejected`);
//! - `credentials`: each of its credentials with its first and last attributed use;
//! - `actions`: the audit events it is the principal of, with the API key used
//!   (`principal_credential_id`) and any anomaly (`api_key_owner_mismatch`).
//!
//! For a credential: its lifecycle, its first and last use, and the actions made with it as API
//! key. At most [`MAX_AUDIT_EVENTS`] events; `truncated` says when there were more.
//!
//! Both also list, in `alerts`, every transition of an alert (`botmeter run --alert-rules`) of
//! the owner or of one of its credentials (of the credential): its firing at `fired_at` and its
//! resolution at `resolved_at`, each with the alert's id, rule, kind and evidence, and `source`
//! `botmeter-alerts`, apart from the control-plane events. Alerts are stored once per id, newest
//! state only, so both transitions carry the newest evidence (as of the resolution once resolved).
//! At most [`MAX_AUDIT_EVENTS`] alerts as well.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::catalog::{self, CredentialFilter, CredentialRow};
use super::params::{rfc3339, rfc3339_us, rfc3339_us_if_set, QueryParams, TimeRange};
use super::{ApiError, AppState};
use crate::alerts::{AlertEvidence, AlertRow, AUDIT_SQL as ALERTS_AUDIT_SQL, FIRING, RESOLVED};
use crate::rows::status;

/// Placeholders: ids four times, from, to, limit.
pub(super) const AUDIT_EVENTS_SQL: &str = include_str!("../../sql/audit_events.sql");
/// Placeholders: credential ids, status, from, to.
pub(super) const CREDENTIAL_USE_SQL: &str = include_str!("../../sql/credential_use.sql");

/// Most events one answer lists.
pub const MAX_AUDIT_EVENTS: u32 = 10_000;

const ALL_TIME: TimeRange = TimeRange {
    from: 0,
    to: u32::MAX,
};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(audit))
}

/// The response of `/v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditReport {
    /// The owner asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// The credential asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Start of the range, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the range, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Lifecycle events of the bot user and its credentials (or of the credential), oldest first.
    pub lifecycle: Vec<AuditEvent>,
    /// The credentials concerned, with their first and last use.
    pub credentials: Vec<CredentialAudit>,
    /// Audit events the owner acted as principal in (or made with the credential as API key).
    pub actions: Vec<AuditEvent>,
    /// Transitions of the alerts of the owner or its credentials (of the credential), oldest
    /// first; not control-plane events (`source` `botmeter-alerts`).
    pub alerts: Vec<AuditAlert>,
    /// Whether events or alerts were cut at the limit.
    pub truncated: bool,
}

/// `source` of the alert entries of an audit trail.
pub const ALERTS_SOURCE: &str = "botmeter-alerts";

/// One transition of an alert (`botmeter run --alert-rules`, `GET /v1/alerts`) in an audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditAlert {
    /// Always `botmeter-alerts`: made by botmeter's alert evaluation, not a control-plane event.
    pub source: String,
    /// `alert_firing` or `alert_resolved`.
    pub action: String,
    /// The transition: `firing` or `resolved`.
    pub state: String,
    /// When it happened (`fired_at` or `resolved_at`), RFC 3339 UTC.
    pub time: String,
    /// The alert's stable id (as in `/v1/alerts?alert_id=…` and every delivery).
    pub alert_id: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's kind, e.g. `revoked_credential_used`.
    pub kind: String,
    /// The owner.
    pub owner_id: String,
    /// The credential.
    pub credential_id: String,
    /// The evidence, one line: kind, events, bytes, first and last event time.
    pub summary: String,
    /// The evidence (the alert's newest).
    pub evidence: AlertEvidence,
}

/// The transitions of stored alerts that fall in `window`, oldest first (firing before
/// resolved at the same second).
fn alert_transitions(rows: &[AlertRow], window: TimeRange) -> Vec<AuditAlert> {
    let mut out: Vec<(u32, AuditAlert)> = Vec::new();
    for row in rows {
        let alert = crate::alerts::Alert::from_row(row, "");
        let summary = format!(
            "{}: {} events, {} bytes, from {} to {}",
            alert.kind,
            alert.evidence.events,
            alert.evidence.bytes,
            alert.evidence.first_seen,
            alert.evidence.last_seen
        );
        let mut transitions = vec![(row.fired_at, FIRING)];
        if !row.is_firing() {
            transitions.push((row.resolved_at, RESOLVED));
        }
        for (at, state) in transitions {
            if !(window.from..window.to).contains(&at) {
                continue;
            }
            out.push((
                at,
                AuditAlert {
                    source: ALERTS_SOURCE.to_owned(),
                    action: format!("alert_{state}"),
                    state: state.to_owned(),
                    time: rfc3339(at),
                    alert_id: alert.alert_id.clone(),
                    rule: alert.rule.clone(),
                    kind: alert.kind.clone(),
                    owner_id: alert.owner_id.clone(),
                    credential_id: alert.credential_id.clone(),
                    summary: summary.clone(),
                    evidence: alert.evidence.clone(),
                },
            ));
        }
    }
    out.sort_by(|(a, x), (b, y)| {
        (a, x.state != FIRING, &x.alert_id).cmp(&(b, y.state != FIRING, &y.alert_id))
    });
    out.into_iter().map(|(_, alert)| alert).collect()
}

/// The alerts of the owners' or the credentials' that fired or resolved in `window`, one more
/// than [`MAX_AUDIT_EVENTS`] to tell truncation.
async fn fetch_alerts(
    state: &AppState,
    subject: &str,
    owners: &[String],
    credential_ids: &[String],
    window: TimeRange,
) -> Result<Vec<AlertRow>, ApiError> {
    Ok(state
        .read(format!("read the alerts of {subject:?}"), |client| {
            client
                .query(ALERTS_AUDIT_SQL)
                .bind(owners)
                .bind(credential_ids)
                .bind(window.from)
                .bind(window.to)
                .bind(window.from)
                .bind(window.to)
                .bind(MAX_AUDIT_EVENTS + 1)
                .fetch_all::<AlertRow>()
        })
        .await?)
}

/// One control-plane event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// The event id.
    pub event_id: String,
    /// Its type, e.g. `tunnel_credential_deleted.v0`.
    pub event_type: String,
    /// `created`, `updated`, `deactivated`, `deleted`, `revoked_with_owner` (the owner's
    /// `bot_user_deleted.v0`, about a credential it revoked), `owner_change_rejected`,
    /// `session_start`, `session_stop`, or `action` for any other audit event.
    pub action: String,
    /// RFC 3339 UTC, to the microsecond.
    pub time: String,
    /// Who acted.
    pub principal_id: String,
    /// The principal's email or name.
    pub principal_subject: String,
    /// The API key the principal used.
    pub principal_credential_id: String,
    /// The object the event is about.
    pub object_id: String,
    /// The owner the event named.
    pub owner_id: String,
    /// Anomalies of the event.
    pub anomalies: Vec<String>,
    /// Who made the event when ngrok did not: `botmeter-sync` for one `botmeter sync`
    /// synthesized from the ngrok API (its time is as the API tells, see the README); empty for
    /// ngrok's own.
    pub source: String,
}

/// A credential's identity and use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialAudit {
    /// The credential.
    pub credential_id: String,
    /// `authtoken`, `ssh_key` or `api_key`.
    pub kind: String,
    /// Its owner.
    pub owner_id: String,
    /// When it first appeared (created), RFC 3339.
    pub created_at: String,
    /// When it was deleted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Its first attributed use in the range, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_used_at: Option<String>,
    /// Its last attributed use in the range, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// Net traffic events attributed to it in the range.
    pub events: i64,
}

#[derive(Debug, Row, Deserialize)]
struct EventRow {
    event_id: String,
    event_type: String,
    time_us: i64,
    principal_id: String,
    principal_subject: String,
    principal_credential_id: String,
    object_id: String,
    owner_id: String,
    active: String,
    anomalies: Vec<String>,
    source: String,
}

#[derive(Debug, Row, Deserialize)]
struct UseRow {
    credential_id: String,
    first_us: i64,
    last_us: i64,
    events: i64,
}

/// What a control event did to its object.
fn action_of(row: &EventRow) -> &'static str {
    if row.anomalies.iter().any(|a| a == "owner_change_rejected") {
        return "owner_change_rejected";
    }
    let t = row.event_type.as_str();
    let lifecycle = [
        "tunnel_credential_",
        "ssh_public_key_",
        "api_key_",
        "bot_user_",
    ]
    .iter()
    .any(|prefix| t.starts_with(prefix));
    match t {
        "agent_session_start.v0" => "session_start",
        "agent_session_stop.v0" => "session_stop",
        // Only made by `revocations`: the owner's deletion, about a credential.
        "bot_user_deleted.v0" if !row.object_id.starts_with("bot_") => "revoked_with_owner",
        _ if lifecycle && t.ends_with("_created.v0") => "created",
        _ if lifecycle && t.ends_with("_deleted.v0") => "deleted",
        "bot_user_updated.v0" if row.active == "false" => "deactivated",
        _ if lifecycle && t.ends_with("_updated.v0") => "updated",
        _ => "action",
    }
}

/// The audit trail of an owner or a credential: its control-plane events, its credentials' use,
/// and the firings and resolutions of its alerts (`alerts`, source `botmeter-alerts`).
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(
        ("owner_id" = Option<String>, Query, description = "An owner (exactly one of owner_id and credential_id)"),
        ("credential_id" = Option<String>, Query, description = "A credential"),
        ("from" = Option<String>, Query, description = "Start (with to); all of history without"),
        ("to" = Option<String>, Query, description = "End (with from)"),
    ),
    responses(
        (status = 200, body = AuditReport),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, description = "Not an admin key", body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn audit(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditReport>, ApiError> {
    access.require_admin()?;
    let params = QueryParams::parse(
        query.as_deref(),
        &["owner_id", "credential_id", "from", "to"],
    )?;
    let owner_id = params.id("owner_id")?;
    let credential_id = params.id("credential_id")?;
    let range = params.optional_range()?;
    let subject = exactly_one_subject(&owner_id, &credential_id)?;
    let by_owner = owner_id.is_some();
    let one = std::slice::from_ref(&subject);
    let filter = if by_owner {
        CredentialFilter {
            owners: one,
            ..CredentialFilter::default()
        }
    } else {
        CredentialFilter {
            credentials: one,
            ..CredentialFilter::default()
        }
    };
    let credentials = catalog::credentials(&state, filter).await?;
    let credential_ids: Vec<String> = credentials
        .iter()
        .map(|c| c.credential_id.clone())
        .collect();
    let trail = Trail::new(&subject, by_owner, &credential_ids);
    let window = range.unwrap_or(ALL_TIME);
    // An owner's alerts are those it owns and those of its credentials; a credential's, its own.
    let (alert_owners, alert_credentials) = if by_owner {
        (one.to_vec(), credential_ids.clone())
    } else {
        (Vec::new(), one.to_vec())
    };
    let (mut events, uses, alert_rows) = tokio::try_join!(
        trail.fetch_events(&state, &subject, window),
        fetch_uses(&state, &subject, &credential_ids, window),
        fetch_alerts(&state, &subject, &alert_owners, &alert_credentials, window),
    )?;
    let mut revoked = revocations(&credentials, window);
    // A revocation is its owner's deletion event: it has that event's source when the trail
    // holds it (an owner's trail does; a credential's does not, and shows it empty).
    for revocation in &mut revoked {
        if let Some(deletion) = events.iter().find(|e| e.event_id == revocation.event_id) {
            revocation.source.clone_from(&deletion.source);
        }
    }
    events.extend(revoked);
    events.sort_by(|a, b| (a.time_us, &a.event_id).cmp(&(b.time_us, &b.event_id)));
    let truncated =
        events.len() > MAX_AUDIT_EVENTS as usize || alert_rows.len() > MAX_AUDIT_EVENTS as usize;
    let (lifecycle, actions) = trail.split(events);
    let mut alerts = alert_transitions(
        &alert_rows[..alert_rows.len().min(MAX_AUDIT_EVENTS as usize)],
        window,
    );
    alerts.truncate(MAX_AUDIT_EVENTS as usize);
    Ok(Json(AuditReport {
        owner_id,
        credential_id,
        from: range.map(|r| rfc3339(r.from)),
        to: range.map(|r| rfc3339(r.to)),
        lifecycle,
        credentials: credential_audits(credentials, &uses),
        actions,
        alerts,
        truncated,
    }))
}

/// The one of `owner_id` and `credential_id` that was given, or a 400 when none or both were.
fn exactly_one_subject(
    owner_id: &Option<String>,
    credential_id: &Option<String>,
) -> Result<String, ApiError> {
    match (owner_id, credential_id) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "invalid_parameter",
            "credential_id",
            "query parameters owner_id and credential_id: give one, not both",
        )),
        (None, None) => Err(ApiError::bad(
            "missing_parameter",
            "owner_id",
            "missing query parameter owner_id or credential_id",
        )),
        (Some(id), None) | (None, Some(id)) => Ok(id.clone()),
    }
}

/// Which events belong to a subject's trail, and as what.
#[derive(Debug)]
struct Trail {
    /// Lifecycle objects: the subject and its credentials.
    objects: Vec<String>,
    /// The owner whose credentials' owner changes count (an owner subject only).
    owners: Vec<String>,
    /// The principal whose actions count (an owner subject only).
    principals: Vec<String>,
    /// The API key whose actions count (a credential subject only).
    api_keys: Vec<String>,
}

impl Trail {
    fn new(subject: &str, by_owner: bool, credential_ids: &[String]) -> Self {
        let mut objects = credential_ids.to_vec();
        objects.push(subject.to_owned());
        let one = vec![subject.to_owned()];
        let (owners, principals, api_keys) = if by_owner {
            (one.clone(), one, Vec::new())
        } else {
            (Vec::new(), Vec::new(), one)
        };
        Self {
            objects,
            owners,
            principals,
            api_keys,
        }
    }

    /// The trail's events, oldest first, one more than [`MAX_AUDIT_EVENTS`] to tell truncation.
    async fn fetch_events(
        &self,
        state: &AppState,
        subject: &str,
        window: TimeRange,
    ) -> Result<Vec<EventRow>, ApiError> {
        Ok(state
            .read(format!("read the audit trail of {subject:?}"), |client| {
                client
                    .query(AUDIT_EVENTS_SQL)
                    .bind(&self.objects)
                    .bind(&self.owners)
                    .bind(&self.principals)
                    .bind(&self.api_keys)
                    .bind(window.from)
                    .bind(window.to)
                    .bind(MAX_AUDIT_EVENTS + 1)
                    .fetch_all::<EventRow>()
            })
            .await?)
    }

    /// The first [`MAX_AUDIT_EVENTS`] events as (lifecycle, actions): what happened to the
    /// subject, and what the subject did.
    fn split(&self, events: Vec<EventRow>) -> (Vec<AuditEvent>, Vec<AuditEvent>) {
        let mut lifecycle = Vec::new();
        let mut actions = Vec::new();
        for row in events.into_iter().take(MAX_AUDIT_EVENTS as usize) {
            let is_object =
                self.objects.contains(&row.object_id) || self.owners.contains(&row.owner_id);
            let event = audit_event(row);
            let by_subject = self.principals.contains(&event.principal_id)
                || self.api_keys.contains(&event.principal_credential_id);
            if is_object && event.action != "action" {
                lifecycle.push(event);
            } else if by_subject {
                actions.push(event);
            } else {
                lifecycle.push(event);
            }
        }
        (lifecycle, actions)
    }
}

/// A `revoked_with_owner` lifecycle entry for each credential that its owner's deletion revoked
/// within `window` (no deletion of its own came first): the owner's `bot_user_deleted.v0`, about
/// the credential. Deleting a bot user revokes its credentials whether or not ngrok sends a
/// deletion event for each.
fn revocations(credentials: &[CredentialRow], window: TimeRange) -> Vec<EventRow> {
    let (from_us, to_us) = (
        i64::from(window.from) * 1_000_000,
        i64::from(window.to) * 1_000_000,
    );
    credentials
        .iter()
        .filter(|c| c.revoked_with_owner == 1 && (from_us..to_us).contains(&c.deleted_us))
        .map(|c| EventRow {
            event_id: c.revoking_event_id.clone(),
            event_type: "bot_user_deleted.v0".to_owned(),
            time_us: c.deleted_us,
            principal_id: String::new(),
            principal_subject: String::new(),
            principal_credential_id: String::new(),
            object_id: c.credential_id.clone(),
            owner_id: c.owner_id.clone(),
            active: String::new(),
            anomalies: Vec::new(),
            source: String::new(),
        })
        .collect()
}

/// First and last attributed use of each of `credential_ids` in `window`.
async fn fetch_uses(
    state: &AppState,
    subject: &str,
    credential_ids: &[String],
    window: TimeRange,
) -> Result<Vec<UseRow>, ApiError> {
    Ok(state
        .read(
            format!("read the credential use of {subject:?}"),
            |client| {
                client
                    .query(CREDENTIAL_USE_SQL)
                    .bind(credential_ids)
                    .bind(status::ATTRIBUTED)
                    .bind(window.from)
                    .bind(window.to)
                    .fetch_all::<UseRow>()
            },
        )
        .await?)
}

fn audit_event(row: EventRow) -> AuditEvent {
    AuditEvent {
        action: action_of(&row).to_owned(),
        event_id: row.event_id,
        event_type: row.event_type,
        time: rfc3339_us(row.time_us),
        principal_id: row.principal_id,
        principal_subject: row.principal_subject,
        principal_credential_id: row.principal_credential_id,
        object_id: row.object_id,
        owner_id: row.owner_id,
        anomalies: row.anomalies,
        source: row.source,
    }
}

/// Each credential with its first and last use, if any.
fn credential_audits(credentials: Vec<CredentialRow>, uses: &[UseRow]) -> Vec<CredentialAudit> {
    credentials
        .into_iter()
        .map(|c| {
            let used = uses.iter().find(|u| u.credential_id == c.credential_id);
            CredentialAudit {
                created_at: rfc3339_us(c.created_us),
                deleted_at: rfc3339_us_if_set(c.deleted_us),
                first_used_at: used.map(|u| rfc3339_us(u.first_us)),
                last_used_at: used.map(|u| rfc3339_us(u.last_us)),
                events: used.map_or(0, |u| u.events),
                credential_id: c.credential_id,
                kind: c.kind,
                owner_id: c.owner_id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;

    fn alert_row(alert_id: &str, state: &str, fired_at: u32, resolved_at: u32) -> AlertRow {
        AlertRow {
            alert_id: alert_id.into(),
            rule: "revoked".into(),
            kind: "revoked_credential_used".into(),
            state: state.into(),
            owner_id: "bot_a".into(),
            credential_id: "cr_a".into(),
            events: 5,
            bytes: 500,
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_010,
            last_ingested: 1_700_000_011,
            fired_at,
            resolved_at,
            delivered: 1,
            version: 1,
        }
    }

    #[test]
    fn a_resolved_alert_is_two_transitions_within_the_window() {
        let rows = [
            alert_row("al_b", RESOLVED, 1_700_000_020, 1_700_000_100),
            alert_row("al_a", FIRING, 1_700_000_100, 0),
        ];
        let all = alert_transitions(&rows, ALL_TIME);
        let seen: Vec<(&str, &str, &str)> = all
            .iter()
            .map(|a| (a.alert_id.as_str(), a.action.as_str(), a.time.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("al_b", "alert_firing", "2023-11-14T22:13:40Z"),
                ("al_a", "alert_firing", "2023-11-14T22:15:00Z"),
                ("al_b", "alert_resolved", "2023-11-14T22:15:00Z"),
            ]
        );
        assert!(all.iter().all(|a| a.source == ALERTS_SOURCE));
        assert_eq!(
            all[0].summary,
            "revoked_credential_used: 5 events, 500 bytes, from 2023-11-14T22:13:20Z to 2023-11-14T22:13:30Z"
        );
        // Only the resolution of al_b is in [+50, +100]; al_a fired at the window's (exclusive) end.
        let late = alert_transitions(
            &rows,
            TimeRange {
                from: 1_700_000_050,
                to: 1_700_000_101,
            },
        );
        let seen: Vec<(&str, &str)> = late
            .iter()
            .map(|a| (a.alert_id.as_str(), a.state.as_str()))
            .collect();
        assert_eq!(seen, [("al_a", "firing"), ("al_b", "resolved")]);
    }

    #[tokio::test]
    async fn exactly_one_subject() {
        for (uri, parameter) in [
            ("/v1/audit", "owner_id"),
            (
                "/v1/audit?owner_id=bot_1&credential_id=cr_1",
                "credential_id",
            ),
            ("/v1/audit?owner_id=bot%201", "owner_id"),
            ("/v1/audit?owner_id=bot_1&from=2024-05-01", "to"),
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
