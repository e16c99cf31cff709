//! Eviction: sessions that stopped and endpoint intervals that ended more than a grace period ago
//! are removed, so the state holds what is live plus what ended recently, not everything ever seen.
//!
//! What it guarantees: resolving traffic *by hostname* at any time at or after `now - grace` gives
//! the same answer after eviction as before. Traffic older than that is unattributed
//! (`no_endpoint`, or `unknown_session` for an endpoint whose session was evicted), so the grace
//! must exceed how late traffic may arrive. Traffic that names an endpoint by id finds it only
//! while it is kept. A stopped session stays while an endpoint still kept names it. Credentials
//! and bot users are small and always kept.
//!
//! The names (ids, hostnames) of evicted entries are freed too: a mark-and-sweep over the state
//! finds the names nothing kept refers to any more, and their symbols are reused.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::{micros, IntervalIdx, OwnershipState};

/// How long ended sessions and endpoints are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionConfig {
    /// How long a stopped session or ended endpoint is kept after its end, in milliseconds.
    /// Traffic that arrives later than this after the end is unattributed: it must exceed the
    /// allowed lateness of traffic.
    pub grace_ms: u64,
}

impl Default for EvictionConfig {
    /// One hour.
    fn default() -> Self {
        Self { grace_ms: 60 * 60 * 1000 }
    }
}

impl EvictionConfig {
    /// The grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
}

/// What one eviction removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evicted {
    /// Agent sessions.
    pub sessions: usize,
    /// Endpoint intervals.
    pub endpoints: usize,
    /// Names freed (ids and hostnames, including those only named by what was evicted).
    pub names: usize,
}

impl Evicted {
    /// Sessions and endpoint intervals removed.
    pub fn total(&self) -> usize {
        self.sessions + self.endpoints
    }
}

impl OwnershipState {
    /// Removes sessions stopped and endpoint intervals ended more than `grace` before `now`
    /// (strictly: an end exactly `grace` ago is kept), and frees the names only they used.
    ///
    /// `now` is the time traffic has been processed up to (the usage time of recent traffic),
    /// not necessarily the wall clock: a consumer catching up on a backlog must not evict what the
    /// backlog still needs. Runs in time linear in the size of the state; call it periodically
    /// (every minute or so), not per event.
    pub fn evict_ended(&mut self, now: DateTime<Utc>, grace: Duration) -> Evicted {
        let grace_us = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let cutoff = micros(now).saturating_sub(grace_us);
        let mut evicted = Evicted::default();

        // Endpoint intervals: unchain them host by host (one walk per host, however many of its
        // intervals end), then free their slots.
        let ended: Vec<IntervalIdx> = self
            .intervals
            .iter()
            .enumerate()
            .filter(|(_, interval)| interval.as_ref().is_some_and(|i| i.end < cutoff))
            .map(|(k, _)| IntervalIdx::new(k))
            .collect();
        let stopped_sessions = self.sessions.iter().filter(|(_, s)| s.credential.is_some() && s.stopped_at < cutoff).count();
        if ended.is_empty() && stopped_sessions == 0 {
            return evicted;
        }
        let mut host_done = vec![false; self.hosts.slots()];
        for &i in &ended {
            let host = self.interval(i).host;
            if std::mem::replace(&mut host_done[host.index()], true) {
                continue;
            }
            let chain: Vec<IntervalIdx> = self.host_intervals(host).filter(|&c| self.interval(c).end >= cutoff).collect();
            *self.hosts.value_mut(host) = chain.first().copied();
            for pair in chain.windows(2) {
                self.interval_mut(pair[0]).next = Some(pair[1]);
            }
            if let Some(&last) = chain.last() {
                self.interval_mut(last).next = None;
            }
        }
        for &i in &ended {
            let endpoint = self.interval(i).endpoint;
            if *self.endpoints.value(endpoint) == Some(i) {
                *self.endpoints.value_mut(endpoint) = None;
            }
            self.free_interval(i);
        }
        evicted.endpoints = ended.len();

        // Names: mark what the kept entries refer to, sweep the rest. Order matters: sessions
        // refer to credentials, credentials and endpoints to owners.
        evicted.names += self.hosts.retain(|_, head| head.is_some());
        let mut endpoint_marks = vec![false; self.endpoints.slots()];
        let mut session_marks = vec![false; self.sessions.slots()];
        let mut owner_marks = vec![false; self.owners.slots()];
        for interval in self.intervals.iter().flatten() {
            endpoint_marks[interval.endpoint.index()] = true;
            if let Some(session) = interval.session {
                session_marks[session.index()] = true;
            }
            if let Some(principal) = interval.principal {
                owner_marks[principal.index()] = true;
            }
        }
        evicted.names += self.endpoints.retain(|sym, _| endpoint_marks[sym.index()]);
        let mut sessions = 0;
        evicted.names += self.sessions.retain(|sym, session| {
            let live = session.credential.is_some() && session.stopped_at >= cutoff;
            let keep = live || session_marks[sym.index()];
            if !keep && session.credential.is_some() {
                sessions += 1;
            }
            keep
        });
        evicted.sessions = sessions;
        self.counts.sessions -= sessions;
        let mut credential_marks = vec![false; self.credentials.slots()];
        for (_, session) in self.sessions.iter() {
            if let Some(credential) = session.credential {
                credential_marks[credential.index()] = true;
            }
        }
        evicted.names += self.credentials.retain(|sym, credential| credential.is_some() || credential_marks[sym.index()]);
        for (_, credential) in self.credentials.iter() {
            if let Some(credential) = credential {
                owner_marks[credential.owner.index()] = true;
            }
        }
        evicted.names += self.owners.retain(|sym, bot| bot.is_some() || owner_marks[sym.index()]);
        if self.free_intervals.len() > self.intervals.len() / 2 {
            self.shrink_intervals();
        }
        evicted
    }

    /// Drops free slots at the end of the interval slab and gives back what is then unused.
    fn shrink_intervals(&mut self) {
        while matches!(self.intervals.last(), Some(None)) {
            self.intervals.pop();
        }
        let len = self.intervals.len();
        self.free_intervals.retain(|i| i.get() < len);
        self.intervals.shrink_to(len + len / 4);
        self.free_intervals.shrink_to(self.free_intervals.len() * 2);
    }
}
