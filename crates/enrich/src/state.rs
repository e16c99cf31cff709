//! The ownership state: owners, credentials, agent sessions and endpoints, each with the times
//! they were valid. Control events may arrive in any order; intervals are kept sorted.
//!
//! Layout, chosen for millions of live sessions and endpoints: every id and hostname is interned
//! once in a [`SymbolTable`] and referred to by a 4-byte symbol; times are `i64` microseconds since
//! the Unix epoch (so they compare at microsecond precision); labels and ACLs are boxed and only
//! allocated when present. Endpoint intervals live in one slab, chained per hostname from the
//! latest start to the earliest. What ended long ago is removed by `evict.rs`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use chrono::{DateTime, Utc};
use model::{
    AgentSession, BindRule, BotUser, Credential, CredentialAction, CredentialKind, Endpoint,
    EndpointAction, Event, EventBody, OwnerKind, SessionAction,
};

use crate::intern::{Sym, SymbolTable};

/// Microseconds since the Unix epoch.
pub(crate) type Micros = i64;

/// An end that has not happened (a live session or endpoint, a credential not deleted).
pub(crate) const NEVER: Micros = Micros::MAX;
/// A start that was never reported.
pub(crate) const UNKNOWN: Micros = Micros::MIN;

pub(crate) fn micros(t: DateTime<Utc>) -> Micros {
    t.timestamp_micros()
}

pub(crate) type Labels = BTreeMap<String, String>;

/// The labels of an endpoint without any.
pub(crate) static NO_LABELS: Labels = BTreeMap::new();

/// A user or bot user id. Bot users have a history; users have no lifecycle events (they are known
/// from credentials), nor do principals that never appear as a bot user: their value is `None`.
pub(crate) type OwnerSlot = Option<BotState>;
/// A credential id; `None` while it is only named by a session.
pub(crate) type CredentialSlot = Option<CredentialState>;

/// A bot user's history.
#[derive(Debug, Clone)]
pub(crate) struct BotState {
    pub(crate) name: Box<str>,
    pub(crate) created_at: Option<Micros>,
    /// `(since, active)`, sorted by time.
    pub(crate) active_history: Vec<(Micros, bool)>,
    /// [`NEVER`] unless deleted.
    pub(crate) deleted_at: Micros,
}

impl Default for BotState {
    fn default() -> Self {
        Self {
            name: Box::default(),
            created_at: None,
            active_history: Vec::new(),
            deleted_at: NEVER,
        }
    }
}

impl BotState {
    pub(crate) fn active_at(&self, t: Micros) -> bool {
        match self
            .active_history
            .partition_point(|(since, _)| *since <= t)
        {
            0 => self
                .active_history
                .first()
                .is_none_or(|(_, active)| *active),
            i => self.active_history[i - 1].1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CredentialState {
    pub(crate) kind: CredentialKind,
    pub(crate) owner: Sym<OwnerSlot>,
    pub(crate) created_at: Option<Micros>,
    /// [`NEVER`] unless deleted.
    pub(crate) deleted_at: Micros,
    /// `(since, rules)`, sorted by time: ACLs can be updated.
    pub(crate) acl_history: Vec<(Micros, Box<[BindRule]>)>,
}

impl CredentialState {
    /// Records a later event of this credential, whose owner is already checked: a creation sets
    /// the creation time, a deletion the earliest deletion seen, anything else adds ACL rules.
    fn record(&mut self, action: CredentialAction, since: Micros, at: Micros, rules: &[BindRule]) {
        if action == CredentialAction::Created {
            self.created_at = Some(since);
        }
        if action == CredentialAction::Deleted {
            self.deleted_at = self.deleted_at.min(at);
        } else {
            insert_sorted(&mut self.acl_history, (since, rules.into()));
        }
    }

    pub(crate) fn rules_at(&self, t: Micros) -> &[BindRule] {
        match self.acl_history.partition_point(|(since, _)| *since <= t) {
            0 => self.acl_history.first().map_or(&[], |(_, rules)| rules),
            i => &self.acl_history[i - 1].1,
        }
    }
}

/// An agent session id. `credential` is `None` while the session is only named by an endpoint
/// (never seen itself, or evicted while the endpoint stays).
#[derive(Debug, Clone)]
pub(crate) struct SessionState {
    pub(crate) credential: Option<Sym<CredentialSlot>>,
    /// [`UNKNOWN`] until reported.
    pub(crate) started_at: Micros,
    /// [`NEVER`] while live.
    pub(crate) stopped_at: Micros,
}

impl Default for SessionState {
    fn default() -> Self {
        Self {
            credential: None,
            started_at: UNKNOWN,
            stopped_at: NEVER,
        }
    }
}

/// An index into the interval slab; `Option<IntervalIdx>` is 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IntervalIdx(NonZeroU32);

impl IntervalIdx {
    pub(crate) fn new(i: usize) -> Self {
        let i = u32::try_from(i + 1)
            .ok()
            .and_then(NonZeroU32::new)
            .expect("more than 2^32 - 1 endpoint intervals");
        Self(i)
    }

    pub(crate) fn get(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// An endpoint id: its interval on the hostname it was last seen with.
pub(crate) type EndpointSlot = Option<IntervalIdx>;
/// A hostname: the first of its intervals, which are chained by latest start first.
pub(crate) type HostSlot = Option<IntervalIdx>;

/// One endpoint on one hostname, from `start` until `end`.
#[derive(Debug, Clone)]
pub(crate) struct EndpointInterval {
    pub(crate) endpoint: Sym<EndpointSlot>,
    pub(crate) host: Sym<HostSlot>,
    pub(crate) session: Option<Sym<SessionState>>,
    pub(crate) principal: Option<Sym<OwnerSlot>>,
    pub(crate) port: Option<u16>,
    /// The next interval on the same host (an earlier or equal start).
    pub(crate) next: Option<IntervalIdx>,
    pub(crate) start: Micros,
    /// [`NEVER`] while live.
    pub(crate) end: Micros,
    /// Only allocated when the endpoint has labels.
    pub(crate) labels: Option<Box<Labels>>,
}

impl EndpointInterval {
    pub(crate) fn covers(&self, t: Micros) -> bool {
        self.start <= t && t < self.end
    }

    pub(crate) fn labels(&self) -> &Labels {
        self.labels.as_deref().unwrap_or(&NO_LABELS)
    }
}

/// What an endpoint event names besides its id, hostname and times, as its interval holds it.
struct EndpointLinks {
    session: Option<Sym<SessionState>>,
    principal: Option<Sym<OwnerSlot>>,
    port: Option<u16>,
    labels: Option<Box<Labels>>,
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
    pub(crate) owners: SymbolTable<OwnerSlot>,
    pub(crate) credentials: SymbolTable<CredentialSlot>,
    pub(crate) sessions: SymbolTable<SessionState>,
    pub(crate) endpoints: SymbolTable<EndpointSlot>,
    pub(crate) hosts: SymbolTable<HostSlot>,
    /// Endpoint intervals; `None` slots are free and listed in `free_intervals`.
    pub(crate) intervals: Vec<Option<EndpointInterval>>,
    pub(crate) free_intervals: Vec<IntervalIdx>,
    pub(crate) counts: StateStats,
    /// Whether any endpoint has had a wildcard name (`*.suffix`): until one has, resolving a
    /// hostname with no exact endpoint looks no further.
    pub(crate) has_wildcards: bool,
}

impl OwnershipState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sizes, for metrics.
    pub fn stats(&self) -> StateStats {
        self.counts
    }

    /// Bytes the state holds on the heap: an estimate (it counts capacity, not the allocator's
    /// overhead), for metrics and memory checks.
    pub fn heap_bytes(&self) -> usize {
        let credentials: usize = self
            .credentials
            .iter()
            .filter_map(|(_, c)| c.as_ref())
            .map(|c| {
                c.acl_history.capacity() * std::mem::size_of::<(Micros, Box<[BindRule]>)>()
                    + c.acl_history
                        .iter()
                        .map(|(_, rules)| std::mem::size_of_val::<[BindRule]>(rules))
                        .sum::<usize>()
            })
            .sum();
        let bots: usize = self
            .owners
            .iter()
            .filter_map(|(_, b)| b.as_ref())
            .map(|b| b.name.len() + b.active_history.capacity() * 16)
            .sum();
        let labels = self
            .intervals
            .iter()
            .flatten()
            .filter(|i| i.labels.is_some())
            .count()
            * 64;
        self.owners.heap_bytes()
            + self.credentials.heap_bytes()
            + self.sessions.heap_bytes()
            + self.endpoints.heap_bytes()
            + self.hosts.heap_bytes()
            + self.intervals.capacity() * std::mem::size_of::<Option<EndpointInterval>>()
            + self.free_intervals.capacity() * std::mem::size_of::<IntervalIdx>()
            + credentials
            + bots
            + labels
    }

    /// Applies one control-plane event. Traffic and generic audit events are ignored.
    pub fn apply(&mut self, event: &Event) -> ApplyOutcome {
        let at = micros(event.event_timestamp);
        match &event.body {
            EventBody::BotUser { action, bot_user } => self.apply_bot_user(*action, bot_user, at),
            EventBody::Credential {
                kind,
                action,
                credential,
            } => self.apply_credential(*kind, *action, credential, at),
            EventBody::AgentSession { action, session } => {
                self.apply_agent_session(*action, session, at)
            }
            EventBody::Endpoint { action, endpoint } => self.apply_endpoint(*action, endpoint, at),
            EventBody::Http(_) | EventBody::Tcp(_) | EventBody::Audit => ApplyOutcome::Ignored,
        }
    }

    /// A bot user created, updated or deleted at `at`: its name, creation and active history.
    fn apply_bot_user(
        &mut self,
        action: CredentialAction,
        bot_user: &BotUser,
        at: Micros,
    ) -> ApplyOutcome {
        let sym = self.owners.intern(&bot_user.id);
        let slot = self.owners.value_mut(sym);
        if slot.is_none() {
            self.counts.bot_users += 1;
        }
        let bot = slot.get_or_insert_with(BotState::default);
        if !bot_user.name.is_empty() {
            bot.name = bot_user.name.as_str().into();
        }
        let created = bot_user.created_at.map_or(at, micros);
        match action {
            CredentialAction::Created => {
                bot.created_at = Some(created);
                insert_sorted(&mut bot.active_history, (created, bot_user.active));
            }
            CredentialAction::Updated => {
                insert_sorted(&mut bot.active_history, (at, bot_user.active))
            }
            CredentialAction::Deleted => bot.deleted_at = bot.deleted_at.min(at),
        }
        ApplyOutcome::Applied
    }

    /// A credential created, updated or deleted at `at`. Its owner never changes: an event that
    /// names another owner is rejected, not applied.
    fn apply_credential(
        &mut self,
        kind: CredentialKind,
        action: CredentialAction,
        credential: &Credential,
        at: Micros,
    ) -> ApplyOutcome {
        let created_at = credential.created_at.map(micros);
        let since = match action {
            CredentialAction::Created => created_at.unwrap_or(at),
            _ => at,
        };
        let sym = self.credentials.intern(&credential.id);
        match self.credentials.value_mut(sym) {
            Some(existing) if self.owners.name(existing.owner) != credential.owner_id => {
                return ApplyOutcome::OwnerChangeRejected {
                    credential_id: credential.id.clone(),
                    owner_id: self.owners.name(existing.owner).to_owned(),
                    attempted_owner_id: credential.owner_id.clone(),
                };
            }
            Some(existing) => existing.record(action, since, at, &credential.bind_rules),
            slot @ None => {
                let owner = self.owners.intern(&credential.owner_id);
                *slot = Some(CredentialState {
                    kind,
                    owner,
                    created_at,
                    deleted_at: if action == CredentialAction::Deleted {
                        at
                    } else {
                        NEVER
                    },
                    acl_history: vec![(
                        created_at.unwrap_or(since),
                        credential.bind_rules.as_slice().into(),
                    )],
                });
                self.counts.credentials += 1;
            }
        }
        ApplyOutcome::Applied
    }

    /// An agent session started or stopped at `at`, with the credential it runs under.
    fn apply_agent_session(
        &mut self,
        action: SessionAction,
        session: &AgentSession,
        at: Micros,
    ) -> ApplyOutcome {
        let credential = self.credentials.intern(&session.credential.id);
        let sym = self.sessions.intern(&session.session.id);
        let entry = self.sessions.value_mut(sym);
        if entry.credential.is_none() {
            // New, or so far only named by an endpoint.
            self.counts.sessions += 1;
            *entry = SessionState::default();
        }
        entry.credential = Some(credential);
        if let Some(started) = session.started_at {
            entry.started_at = micros(started);
        }
        match action {
            SessionAction::Start => {
                if entry.started_at == UNKNOWN {
                    entry.started_at = at;
                }
            }
            SessionAction::Stop => entry.stopped_at = session.stopped_at.map_or(at, micros),
        }
        ApplyOutcome::Applied
    }

    /// An endpoint created or deleted at `at`: its interval on its hostname, whichever of the two
    /// events arrives first. An endpoint without a hostname is ignored.
    fn apply_endpoint(
        &mut self,
        action: EndpointAction,
        endpoint: &Endpoint,
        at: Micros,
    ) -> ApplyOutcome {
        let Some(hostname) = endpoint.hostname() else {
            return ApplyOutcome::Ignored;
        };
        let host = self.hosts.intern(&hostname);
        self.has_wildcards |= hostname.starts_with("*.");
        let id = self.endpoints.intern(&endpoint.id);
        let start = endpoint.created_at.map_or(at, micros);
        let existing = self
            .host_intervals(host)
            .find(|&i| self.interval(i).endpoint == id);
        let idx = match (action, existing) {
            (EndpointAction::Created, Some(i)) => {
                self.complete_endpoint_interval(i, start, endpoint);
                i
            }
            (EndpointAction::Deleted, Some(i)) => {
                self.interval_mut(i).end = at;
                i
            }
            (action, None) => {
                // A deletion seen before its creation keeps the end; the start comes later.
                let end = if action == EndpointAction::Deleted {
                    at
                } else {
                    NEVER
                };
                let links = self.endpoint_links(endpoint);
                let interval = EndpointInterval {
                    endpoint: id,
                    host,
                    session: links.session,
                    principal: links.principal,
                    port: links.port,
                    next: None,
                    start,
                    end,
                    labels: links.labels,
                };
                let i = self.alloc_interval(interval);
                self.link(i);
                i
            }
        };
        *self.endpoints.value_mut(id) = Some(idx);
        ApplyOutcome::Applied
    }

    /// An endpoint's creation arriving after an event that already made its interval `i` (a
    /// deletion seen first): sets the start and fills in what that event did not name.
    fn complete_endpoint_interval(&mut self, i: IntervalIdx, start: Micros, endpoint: &Endpoint) {
        // A deletion seen first guessed the start: re-chained if the guess was wrong, so that the
        // host's intervals stay sorted by start.
        if self.interval(i).start != start {
            self.unlink(i);
            self.interval_mut(i).start = start;
            self.link(i);
        }
        // The creation carries the full resource; a deletion seen first may not have named the
        // session, principal, port or labels.
        let links = self.endpoint_links(endpoint);
        let interval = self.interval_mut(i);
        if interval.session.is_none() {
            interval.session = links.session;
        }
        if interval.principal.is_none() {
            interval.principal = links.principal;
        }
        if interval.port.is_none() {
            interval.port = links.port;
        }
        if interval.labels.is_none() {
            interval.labels = links.labels;
        }
    }

    /// What an endpoint event names besides its id, hostname and times, as an interval holds it
    /// (the session and principal interned; an empty principal id or label set is absent).
    fn endpoint_links(&mut self, endpoint: &Endpoint) -> EndpointLinks {
        EndpointLinks {
            session: endpoint.session_id().map(|s| self.sessions.intern(s)),
            principal: endpoint
                .principal
                .as_ref()
                .map(|p| p.id.as_str())
                .filter(|p| !p.is_empty())
                .map(|p| self.owners.intern(p)),
            port: endpoint.port_number(),
            labels: (!endpoint.labels.is_empty()).then(|| Box::new(endpoint.labels.clone())),
        }
    }

    /// The display name of a bot user, if known.
    pub fn owner_name(&self, owner_id: &str) -> Option<&str> {
        let sym = self.owners.get(owner_id)?;
        self.owners
            .value(sym)
            .as_ref()
            .map(|b| &*b.name)
            .filter(|n| !n.is_empty())
    }

    /// The owner of a credential, if known.
    pub fn credential_owner(&self, credential_id: &str) -> Option<(&str, OwnerKind)> {
        let credential = self
            .credentials
            .value(self.credentials.get(credential_id)?)
            .as_ref()?;
        let owner_id = self.owners.name(credential.owner);
        Some((owner_id, OwnerKind::of(owner_id)?))
    }

    pub(crate) fn interval(&self, i: IntervalIdx) -> &EndpointInterval {
        self.intervals[i.get()]
            .as_ref()
            .expect("a linked interval is live")
    }

    pub(crate) fn interval_mut(&mut self, i: IntervalIdx) -> &mut EndpointInterval {
        self.intervals[i.get()]
            .as_mut()
            .expect("a linked interval is live")
    }

    /// A host's intervals, latest start first.
    pub(crate) fn host_intervals(
        &self,
        host: Sym<HostSlot>,
    ) -> impl Iterator<Item = IntervalIdx> + '_ {
        std::iter::successors(*self.hosts.value(host), |&i| self.interval(i).next)
    }

    fn alloc_interval(&mut self, interval: EndpointInterval) -> IntervalIdx {
        self.counts.endpoints += 1;
        match self.free_intervals.pop() {
            Some(i) => {
                self.intervals[i.get()] = Some(interval);
                i
            }
            None => {
                self.intervals.push(Some(interval));
                IntervalIdx::new(self.intervals.len() - 1)
            }
        }
    }

    pub(crate) fn free_interval(&mut self, i: IntervalIdx) {
        self.intervals[i.get()] = None;
        self.free_intervals.push(i);
        self.counts.endpoints -= 1;
    }

    /// Puts an unlinked interval in its host's chain: before every interval that starts at the
    /// same time or earlier, so the latest-applied of equal starts is found first.
    fn link(&mut self, i: IntervalIdx) {
        let (host, start) = (self.interval(i).host, self.interval(i).start);
        let mut prev = None;
        let mut cursor = *self.hosts.value(host);
        while let Some(c) = cursor {
            if self.interval(c).start <= start {
                break;
            }
            prev = Some(c);
            cursor = self.interval(c).next;
        }
        self.interval_mut(i).next = cursor;
        match prev {
            None => *self.hosts.value_mut(host) = Some(i),
            Some(p) => self.interval_mut(p).next = Some(i),
        }
    }

    /// Takes an interval out of its host's chain (the slot stays allocated).
    pub(crate) fn unlink(&mut self, i: IntervalIdx) {
        let host = self.interval(i).host;
        let next = self.interval_mut(i).next.take();
        let prev = self.host_intervals(host).take_while(|&c| c != i).last();
        match prev {
            None => *self.hosts.value_mut(host) = next,
            Some(p) => self.interval_mut(p).next = next,
        }
    }
}

#[cfg(test)]
impl OwnershipState {
    /// Panics unless every symbol held is live, every interval is chained once under its host in
    /// start order, the free list matches the free slots and the counts match the tables.
    pub(crate) fn check_invariants(&self) {
        let mut chained = vec![false; self.intervals.len()];
        for (host, head) in self.hosts.iter() {
            assert!(
                head.is_some(),
                "host {} has no interval",
                self.hosts.name(host)
            );
            let mut last_start = Micros::MAX;
            for i in self.host_intervals(host) {
                let interval = self.interval(i);
                assert!(
                    !std::mem::replace(&mut chained[i.get()], true),
                    "interval chained twice"
                );
                assert_eq!(interval.host, host);
                assert!(
                    interval.start <= last_start,
                    "chain of {} not sorted",
                    self.hosts.name(host)
                );
                last_start = interval.start;
            }
        }
        let mut live = 0;
        for (k, interval) in self.intervals.iter().enumerate() {
            let Some(interval) = interval else {
                assert!(
                    self.free_intervals.contains(&IntervalIdx::new(k)),
                    "free slot {k} not listed"
                );
                continue;
            };
            live += 1;
            assert!(chained[k], "interval {k} not chained");
            assert!(self.endpoints.is_live(interval.endpoint) && self.hosts.is_live(interval.host));
            assert!(
                interval.session.is_none_or(|s| self.sessions.is_live(s)),
                "interval names a freed session"
            );
            assert!(
                interval.principal.is_none_or(|p| self.owners.is_live(p)),
                "interval names a freed owner"
            );
        }
        assert_eq!(live + self.free_intervals.len(), self.intervals.len());
        for (endpoint, slot) in self.endpoints.iter() {
            if let Some(i) = *slot {
                assert_eq!(self.interval(i).endpoint, endpoint);
            }
        }
        for (_, session) in self.sessions.iter() {
            assert!(
                session
                    .credential
                    .is_none_or(|c| self.credentials.is_live(c)),
                "session names a freed credential"
            );
        }
        for (_, credential) in self.credentials.iter() {
            assert!(
                credential
                    .as_ref()
                    .is_none_or(|c| self.owners.is_live(c.owner)),
                "credential names a freed owner"
            );
        }
        let counts = StateStats {
            bot_users: self.owners.iter().filter(|(_, b)| b.is_some()).count(),
            credentials: self.credentials.iter().filter(|(_, c)| c.is_some()).count(),
            sessions: self
                .sessions
                .iter()
                .filter(|(_, s)| s.credential.is_some())
                .count(),
            endpoints: live,
        };
        assert_eq!(self.counts, counts);
    }
}

fn insert_sorted<T>(history: &mut Vec<(Micros, T)>, entry: (Micros, T)) {
    let pos = history.partition_point(|(since, _)| *since <= entry.0);
    history.insert(pos, entry);
}
