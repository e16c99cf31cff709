//! The ownership state: owners, credentials, agent sessions and endpoints, each with the times
//! they were valid. Control events may arrive in any order; intervals are kept sorted.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use model::{
    BindRule, CredentialAction, CredentialKind, EndpointAction, Event, EventBody, OwnerKind,
    SessionAction,
};

pub(crate) type Time = DateTime<Utc>;

/// A bot user's history. Users have no lifecycle events; they are known from credentials.
#[derive(Debug, Clone, Default)]
pub(crate) struct BotState {
    pub(crate) name: String,
    pub(crate) created_at: Option<Time>,
    /// `(since, active)`, sorted by time.
    pub(crate) active_history: Vec<(Time, bool)>,
    pub(crate) deleted_at: Option<Time>,
}

impl BotState {
    pub(crate) fn active_at(&self, t: Time) -> bool {
        match self.active_history.partition_point(|(since, _)| *since <= t) {
            0 => self.active_history.first().map_or(true, |(_, active)| *active),
            i => self.active_history[i - 1].1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CredentialState {
    pub(crate) kind: CredentialKind,
    pub(crate) owner_id: String,
    pub(crate) created_at: Option<Time>,
    pub(crate) deleted_at: Option<Time>,
    /// `(since, rules)`, sorted by time: ACLs can be updated.
    pub(crate) acl_history: Vec<(Time, Vec<BindRule>)>,
}

impl CredentialState {
    pub(crate) fn rules_at(&self, t: Time) -> &[BindRule] {
        match self.acl_history.partition_point(|(since, _)| *since <= t) {
            0 => self.acl_history.first().map_or(&[], |(_, rules)| rules.as_slice()),
            i => &self.acl_history[i - 1].1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SessionState {
    pub(crate) credential_id: String,
    pub(crate) started_at: Option<Time>,
    pub(crate) stopped_at: Option<Time>,
}

#[derive(Debug, Clone)]
pub(crate) struct EndpointInterval {
    pub(crate) endpoint_id: String,
    pub(crate) port: Option<u16>,
    pub(crate) session_id: Option<String>,
    pub(crate) principal_id: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) start: Time,
    pub(crate) end: Option<Time>,
}

impl EndpointInterval {
    pub(crate) fn covers(&self, t: Time) -> bool {
        self.start <= t && self.end.map_or(true, |end| t < end)
    }
}

/// What applying a control event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The state changed.
    Applied,
    /// Not an ownership event (generic audit, traffic): nothing to do.
    Ignored,
    /// The event tried to change a credential's owner, which never changes: recorded, not applied.
    OwnerChangeRejected {
        /// The credential.
        credential_id: String,
        /// Its owner since creation.
        owner_id: String,
        /// The owner the event claimed.
        attempted_owner_id: String,
    },
}

/// Sizes of the state, for metrics and memory checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateStats {
    /// Bot users known.
    pub bot_users: usize,
    /// Credentials known.
    pub credentials: usize,
    /// Agent sessions known.
    pub sessions: usize,
    /// Endpoint intervals known.
    pub endpoints: usize,
}

/// Everything needed to resolve traffic to an owner as of a time.
#[derive(Debug, Default)]
pub struct OwnershipState {
    pub(crate) bots: HashMap<String, BotState>,
    pub(crate) credentials: HashMap<String, CredentialState>,
    pub(crate) sessions: HashMap<String, SessionState>,
    /// Hostname (lowercase) → intervals sorted by start.
    pub(crate) endpoints_by_host: HashMap<String, Vec<EndpointInterval>>,
    /// Endpoint id → hostname, to find an endpoint named by id.
    pub(crate) endpoint_hosts: HashMap<String, String>,
}

impl OwnershipState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sizes, for metrics.
    pub fn stats(&self) -> StateStats {
        StateStats {
            bot_users: self.bots.len(),
            credentials: self.credentials.len(),
            sessions: self.sessions.len(),
            endpoints: self.endpoints_by_host.values().map(Vec::len).sum(),
        }
    }

    /// Applies one control-plane event. Traffic and generic audit events are ignored.
    pub fn apply(&mut self, event: &Event) -> ApplyOutcome {
        let at = event.event_timestamp;
        match &event.body {
            EventBody::BotUser { action, bot_user } => {
                let bot = self.bots.entry(bot_user.id.clone()).or_default();
                if !bot_user.name.is_empty() {
                    bot.name.clone_from(&bot_user.name);
                }
                match action {
                    CredentialAction::Created => {
                        bot.created_at = Some(bot_user.created_at.unwrap_or(at));
                        insert_sorted(&mut bot.active_history, (bot_user.created_at.unwrap_or(at), bot_user.active));
                    }
                    CredentialAction::Updated => insert_sorted(&mut bot.active_history, (at, bot_user.active)),
                    CredentialAction::Deleted => {
                        bot.deleted_at = Some(bot.deleted_at.map_or(at, |d| d.min(at)));
                    }
                }
                ApplyOutcome::Applied
            }
            EventBody::Credential { kind, action, credential } => {
                let since = match action {
                    CredentialAction::Created => credential.created_at.unwrap_or(at),
                    _ => at,
                };
                match self.credentials.get_mut(&credential.id) {
                    Some(existing) if existing.owner_id != credential.owner_id => {
                        return ApplyOutcome::OwnerChangeRejected {
                            credential_id: credential.id.clone(),
                            owner_id: existing.owner_id.clone(),
                            attempted_owner_id: credential.owner_id.clone(),
                        };
                    }
                    Some(existing) => {
                        if *action == CredentialAction::Created {
                            existing.created_at = Some(since);
                        }
                        if *action == CredentialAction::Deleted {
                            existing.deleted_at = Some(existing.deleted_at.map_or(at, |d| d.min(at)));
                        } else {
                            insert_sorted(&mut existing.acl_history, (since, credential.bind_rules.clone()));
                        }
                    }
                    None => {
                        let deleted = *action == CredentialAction::Deleted;
                        self.credentials.insert(
                            credential.id.clone(),
                            CredentialState {
                                kind: *kind,
                                owner_id: credential.owner_id.clone(),
                                created_at: credential.created_at,
                                deleted_at: deleted.then_some(at),
                                acl_history: vec![(credential.created_at.unwrap_or(since), credential.bind_rules.clone())],
                            },
                        );
                    }
                }
                ApplyOutcome::Applied
            }
            EventBody::AgentSession { action, session } => {
                let entry = self.sessions.entry(session.session.id.clone()).or_insert_with(|| SessionState {
                    credential_id: session.credential.id.clone(),
                    started_at: None,
                    stopped_at: None,
                });
                entry.credential_id.clone_from(&session.credential.id);
                if let Some(started) = session.started_at {
                    entry.started_at = Some(started);
                }
                match action {
                    SessionAction::Start => {
                        entry.started_at.get_or_insert(at);
                    }
                    SessionAction::Stop => entry.stopped_at = Some(session.stopped_at.unwrap_or(at)),
                }
                ApplyOutcome::Applied
            }
            EventBody::Endpoint { action, endpoint } => {
                let Some(hostname) = endpoint.hostname() else { return ApplyOutcome::Ignored };
                let intervals = self.endpoints_by_host.entry(hostname.clone()).or_default();
                let existing = intervals.iter_mut().find(|i| i.endpoint_id == endpoint.id);
                match (action, existing) {
                    (EndpointAction::Created, Some(interval)) => {
                        interval.start = endpoint.created_at.unwrap_or(at);
                    }
                    (EndpointAction::Created, None) => {
                        let interval = EndpointInterval {
                            endpoint_id: endpoint.id.clone(),
                            port: endpoint.port_number(),
                            session_id: endpoint.session_id().map(str::to_owned),
                            principal_id: endpoint.principal.as_ref().map(|p| p.id.clone()).filter(|id| !id.is_empty()),
                            labels: endpoint.labels.clone(),
                            start: endpoint.created_at.unwrap_or(at),
                            end: None,
                        };
                        let pos = intervals.partition_point(|i| i.start <= interval.start);
                        intervals.insert(pos, interval);
                    }
                    (EndpointAction::Deleted, Some(interval)) => interval.end = Some(at),
                    (EndpointAction::Deleted, None) => {
                        // A deletion seen before its creation: keep the end, the start comes later.
                        let interval = EndpointInterval {
                            endpoint_id: endpoint.id.clone(),
                            port: endpoint.port_number(),
                            session_id: endpoint.session_id().map(str::to_owned),
                            principal_id: endpoint.principal.as_ref().map(|p| p.id.clone()).filter(|id| !id.is_empty()),
                            labels: endpoint.labels.clone(),
                            start: endpoint.created_at.unwrap_or(at),
                            end: Some(at),
                        };
                        let pos = intervals.partition_point(|i| i.start <= interval.start);
                        intervals.insert(pos, interval);
                    }
                }
                self.endpoint_hosts.insert(endpoint.id.clone(), hostname);
                ApplyOutcome::Applied
            }
            EventBody::Http(_) | EventBody::Tcp(_) | EventBody::Audit => ApplyOutcome::Ignored,
        }
    }

    /// The display name of a bot user, if known.
    pub fn owner_name(&self, owner_id: &str) -> Option<&str> {
        self.bots.get(owner_id).map(|b| b.name.as_str()).filter(|n| !n.is_empty())
    }

    /// The owner of a credential, if known.
    pub fn credential_owner(&self, credential_id: &str) -> Option<(&str, OwnerKind)> {
        let credential = self.credentials.get(credential_id)?;
        Some((credential.owner_id.as_str(), OwnerKind::of(&credential.owner_id)?))
    }
}

fn insert_sorted<T>(history: &mut Vec<(Time, T)>, entry: (Time, T)) {
    let pos = history.partition_point(|(since, _)| *since <= entry.0);
    history.insert(pos, entry);
}
