//! Eviction: sessions that stopped and endpoint intervals that ended more than a grace period ago
//! are removed, so the state holds what is live plus what ended recently, not everything ever seen.
//!
//! What it guarantees: resolving traffic *by hostname* at any time at or after `now - grace` gives
//! the same answer after eviction as before. Traffic from before that is no longer judged by what
//! was evicted: it is unattributed (`no_endpoint`) or, where another kept interval of the same
//! hostname covers its time (pooled endpoints, TCP addresses without a port), attributed through
//! that one. So the grace must exceed how late traffic may arrive. Traffic that names an endpoint
//! by id finds it only while it is kept. A stopped session stays while an endpoint still kept
//! names it. Credentials and bot users are small and always kept.
//!
//! The names (ids, hostnames) of evicted entries are freed too: a mark-and-sweep over the state
//! finds the names nothing kept refers to any more, and their symbols are reused.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::state::{micros, IntervalIdx, Micros, OwnershipState};

/// Default grace before ended sessions and endpoints are evicted, in milliseconds: one hour.
/// Traffic on them resolved later than the grace after their end is unattributed, so it must
/// exceed the allowed lateness of traffic.
pub const DEFAULT_EVICTION_GRACE_MS: u64 = 3_600_000;

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
    /// Traffic at or after `now - grace` resolves by hostname exactly as before. Traffic from
    /// before is no longer judged by what was evicted: it is unattributed (`no_endpoint`), or
    /// attributed through another kept interval of the same hostname that covers its time. An
    /// endpoint named by id is found only while kept; a stopped session stays while a kept
    /// endpoint names it; credentials and bot users are always kept.
    ///
    /// `now` is the time traffic has been processed up to (the usage time of recent traffic),
    /// not necessarily the wall clock: a consumer catching up on a backlog must not evict what the
    /// backlog still needs. Runs in time linear in the size of the state; call it periodically
    /// (every minute or so), not per event.
    pub fn evict_ended(&mut self, now: DateTime<Utc>, grace: Duration) -> Evicted {
        let grace_us = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let cutoff = micros(now).saturating_sub(grace_us);
        let mut evicted = Evicted::default();

        let ended: Vec<IntervalIdx> = self
            .intervals
            .iter()
            .enumerate()
            .filter(|(_, interval)| interval.as_ref().is_some_and(|i| i.end < cutoff))
            .map(|(k, _)| IntervalIdx::new(k))
            .collect();
        let stopped_sessions = self
            .sessions
            .iter()
            .filter(|(_, s)| s.credential.is_some() && s.stopped_at < cutoff)
            .count();
        if ended.is_empty() && stopped_sessions == 0 {
            return evicted;
        }
        self.remove_intervals(&ended, cutoff);
        evicted.endpoints = ended.len();
        self.sweep_names(cutoff, &mut evicted);
        if self.free_intervals.len() > self.intervals.len() / 2 {
            self.shrink_intervals();
        }
        evicted
    }

    /// Removes the endpoint intervals `ended` (each ended before `cutoff`): unchains them host by
    /// host (one walk per host, however many of its intervals end), then frees their slots.
    fn remove_intervals(&mut self, ended: &[IntervalIdx], cutoff: Micros) {
        let mut host_done = vec![false; self.hosts.slots()];
        for &i in ended {
            let host = self.interval(i).host;
            if std::mem::replace(&mut host_done[host.index()], true) {
                continue;
            }
            let chain: Vec<IntervalIdx> = self
                .host_intervals(host)
                .filter(|&c| self.interval(c).end >= cutoff)
                .collect();
            *self.hosts.value_mut(host) = chain.first().copied();
            for pair in chain.windows(2) {
                self.interval_mut(pair[0]).next = Some(pair[1]);
            }
            if let Some(&last) = chain.last() {
                self.interval_mut(last).next = None;
            }
        }
        for &i in ended {
            let endpoint = self.interval(i).endpoint;
            if *self.endpoints.value(endpoint) == Some(i) {
                *self.endpoints.value_mut(endpoint) = None;
            }
            self.free_interval(i);
        }
    }

    /// Removes the sessions stopped before `cutoff` that no kept interval names, and frees every
    /// name nothing kept refers to any more, counting both into `evicted`.
    fn sweep_names(&mut self, cutoff: Micros, evicted: &mut Evicted) {
        // Mark what the kept entries refer to, sweep the rest. Order matters: sessions refer to
        // credentials, credentials and endpoints to owners.
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
        evicted.names += self
            .credentials
            .retain(|sym, credential| credential.is_some() || credential_marks[sym.index()]);
        for (_, credential) in self.credentials.iter() {
            if let Some(credential) = credential {
                owner_marks[credential.owner.index()] = true;
            }
        }
        evicted.names += self
            .owners
            .retain(|sym, bot| bot.is_some() || owner_marks[sym.index()]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Resolution, UnattributedReason};
    use chrono::TimeZone;
    use proptest::prelude::*;
    use serde_json::json;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, h, m, 0).unwrap()
    }

    fn control(event_type: &str, t: DateTime<Utc>, object: serde_json::Value) -> model::Event {
        let e = json!({"event_id": format!("ev_{t}_{event_type}"), "event_type": event_type, "event_timestamp": t.to_rfc3339(), "object": object});
        model::decode(e.to_string().as_bytes()).unwrap()
    }

    /// A bot with a credential, and one session with one endpoint on `host` per `(name, end)`:
    /// both end at `end` (session stop and endpoint deletion), or stay live.
    fn fleet(entries: &[(&str, Option<DateTime<Utc>>)]) -> OwnershipState {
        let mut state = OwnershipState::new();
        state.apply(&control(
            "bot_user_created.v0",
            at(0, 0),
            json!({"id": "bot_a", "name": "ci"}),
        ));
        state.apply(&control(
            "tunnel_credential_created.v0",
            at(0, 0),
            json!({"id": "cr_a", "owner_id": "bot_a"}),
        ));
        for (name, end) in entries {
            let session =
                json!({"session": {"id": format!("ts_{name}")}, "credential": {"id": "cr_a"}});
            let endpoint = json!({"id": format!("ep_{name}"), "host": format!("{name}.example.com"), "tunnel_session": {"id": format!("ts_{name}")}});
            state.apply(&control(
                "agent_session_start.v0",
                at(1, 0),
                session.clone(),
            ));
            state.apply(&control("endpoint_created.v0", at(1, 0), endpoint.clone()));
            if let Some(end) = *end {
                state.apply(&control("endpoint_deleted.v0", end, endpoint));
                state.apply(&control("agent_session_stop.v0", end, session));
            }
        }
        state
    }

    fn owner_at(state: &OwnershipState, host: &str, t: DateTime<Utc>) -> Option<String> {
        state.resolve(host, None, None, t).owner_id
    }

    #[test]
    fn ended_before_the_grace_is_evicted_inside_is_kept_and_live_is_kept() {
        let mut state = fleet(&[
            ("old", Some(at(10, 0))),
            ("recent", Some(at(11, 30))),
            ("live", None),
        ]);
        assert_eq!(
            owner_at(&state, "old.example.com", at(9, 59)).as_deref(),
            Some("bot_a")
        );
        let evicted = state.evict_ended(at(12, 0), HOUR);
        assert_eq!(
            (evicted.sessions, evicted.endpoints, evicted.total()),
            (1, 1, 2)
        );
        // ep_old, old.example.com and ts_old.
        assert_eq!(evicted.names, 3);
        assert_eq!(state.stats().sessions, 2);
        assert_eq!(state.stats().endpoints, 2);

        // Gone: traffic older than the grace is unattributed, by hostname and by id.
        assert_eq!(
            state
                .resolve("old.example.com", None, None, at(9, 59))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
        assert_eq!(
            state
                .resolve("", None, Some("ep_old"), at(9, 59))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
        assert_eq!(state.sessions.get("ts_old"), None);
        // Ended inside the grace: still resolves, with its session.
        let recent = state.resolve("recent.example.com", None, None, at(11, 29));
        assert_eq!(
            (recent.owner_id.as_deref(), recent.session_id.as_deref()),
            (Some("bot_a"), Some("ts_recent"))
        );
        assert_eq!(
            state
                .resolve("", None, Some("ep_recent"), at(11, 29))
                .owner_id
                .as_deref(),
            Some("bot_a")
        );
        // Live: kept.
        assert_eq!(
            owner_at(&state, "live.example.com", at(12, 0)).as_deref(),
            Some("bot_a")
        );
        // Credentials and bot users are kept.
        assert_eq!(
            state.credential_owner("cr_a").map(|(owner, _)| owner),
            Some("bot_a")
        );
        assert_eq!(state.owner_name("bot_a"), Some("ci"));
    }

    #[test]
    fn an_end_exactly_grace_ago_is_kept() {
        let mut state = fleet(&[("edge", Some(at(11, 0)))]);
        let solo = json!({"session": {"id": "ts_solo"}, "credential": {"id": "cr_a"}});
        state.apply(&control("agent_session_start.v0", at(1, 0), solo.clone()));
        state.apply(&control("agent_session_stop.v0", at(11, 0), solo));
        assert_eq!(state.evict_ended(at(12, 0), HOUR), Evicted::default());
        assert!(state.sessions.get("ts_solo").is_some());
        assert_eq!(
            owner_at(&state, "edge.example.com", at(10, 59)).as_deref(),
            Some("bot_a")
        );
        let evicted = state.evict_ended(at(12, 0) + chrono::Duration::microseconds(1), HOUR);
        assert_eq!(evicted.total(), 3);
        state.check_invariants();
        assert_eq!(
            state.stats(),
            crate::StateStats {
                bot_users: 1,
                credentials: 1,
                sessions: 0,
                endpoints: 0
            }
        );
    }

    #[test]
    fn a_stopped_session_stays_while_a_kept_endpoint_names_it() {
        let mut state = fleet(&[("lingering", None)]);
        // The stop was seen, the endpoint's deletion was not.
        state.apply(&control(
            "agent_session_stop.v0",
            at(2, 0),
            json!({"session": {"id": "ts_lingering"}, "credential": {"id": "cr_a"}}),
        ));
        let before = state.resolve("lingering.example.com", None, None, at(12, 0));
        let evicted = state.evict_ended(at(12, 0), HOUR);
        assert_eq!(evicted, Evicted::default());
        assert_eq!(
            state.resolve("lingering.example.com", None, None, at(12, 0)),
            before
        );
        assert_eq!(before.session_id.as_deref(), Some("ts_lingering"));
        assert_eq!(state.stats().sessions, 1);
    }

    #[test]
    fn freed_names_are_reused_by_new_entries() {
        let mut state = fleet(&[("a", Some(at(2, 0))), ("b", Some(at(2, 0))), ("keep", None)]);
        state.evict_ended(at(12, 0), HOUR);
        let free_sessions = state.sessions.slots() - state.sessions.len();
        assert_eq!(free_sessions, 2);
        // A hostname comes back with a new endpoint and session; the old slots are reused.
        for e in [
            control(
                "agent_session_start.v0",
                at(12, 0),
                json!({"session": {"id": "ts_new"}, "credential": {"id": "cr_a"}}),
            ),
            control(
                "endpoint_created.v0",
                at(12, 0),
                json!({"id": "ep_new", "host": "a.example.com", "tunnel_session": {"id": "ts_new"}}),
            ),
        ] {
            state.apply(&e);
        }
        assert_eq!(state.sessions.slots() - state.sessions.len(), 1);
        let r = state.resolve("a.example.com", None, None, at(12, 30));
        assert_eq!(
            (
                r.endpoint_id.as_deref(),
                r.session_id.as_deref(),
                r.owner_id.as_deref()
            ),
            (Some("ep_new"), Some("ts_new"), Some("bot_a"))
        );
        assert_eq!(
            state
                .resolve("a.example.com", None, None, at(1, 30))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
        assert_eq!(
            owner_at(&state, "keep.example.com", at(12, 30)).as_deref(),
            Some("bot_a")
        );
        assert_eq!(
            state
                .resolve("b.example.com", None, None, at(12, 30))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
    }

    #[test]
    fn names_only_evicted_entries_used_are_freed() {
        let mut state = fleet(&[]);
        // An endpoint naming a session, credential-less principal and owner never seen otherwise.
        state.apply(&control("endpoint_created.v0", at(1, 0), json!({"id": "ep_x", "host": "x.io", "tunnel_session": {"id": "ts_ghost"}, "principal": {"id": "usr_ghost"}})));
        state.apply(&control(
            "endpoint_deleted.v0",
            at(2, 0),
            json!({"id": "ep_x", "host": "x.io"}),
        ));
        state.apply(&control(
            "agent_session_start.v0",
            at(1, 0),
            json!({"session": {"id": "ts_y"}, "credential": {"id": "cr_ghost"}}),
        ));
        state.apply(&control(
            "agent_session_stop.v0",
            at(2, 0),
            json!({"session": {"id": "ts_y"}, "credential": {"id": "cr_ghost"}}),
        ));
        let evicted = state.evict_ended(at(12, 0), HOUR);
        assert_eq!((evicted.sessions, evicted.endpoints), (1, 1));
        // ep_x, x.io, ts_ghost, usr_ghost, ts_y, cr_ghost.
        assert_eq!(evicted.names, 6);
        assert_eq!(
            (
                state.owners.len(),
                state.credentials.len(),
                state.sessions.len(),
                state.endpoints.len(),
                state.hosts.len()
            ),
            (1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn an_endpoint_id_seen_on_two_hosts_keeps_the_kept_one() {
        let mut state = fleet(&[]);
        let on = |host: &str| json!({"id": "ep_m", "host": host});
        state.apply(&control("endpoint_created.v0", at(3, 0), on("new.io")));
        state.apply(&control("endpoint_created.v0", at(1, 0), on("old.io")));
        state.apply(&control("endpoint_deleted.v0", at(2, 0), on("old.io")));
        let evicted = state.evict_ended(at(12, 0), HOUR);
        assert_eq!(evicted.endpoints, 1);
        state.check_invariants();
        assert_eq!(
            state
                .resolve("new.io", None, None, at(12, 0))
                .endpoint_id
                .as_deref(),
            Some("ep_m")
        );
        // The id pointed at the evicted interval: it is no longer found by id, and its slot is
        // safely reused.
        assert_eq!(
            state
                .resolve("", None, Some("ep_m"), at(12, 0))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
        state.apply(&control(
            "endpoint_created.v0",
            at(12, 0),
            json!({"id": "ep_z", "host": "z.io"}),
        ));
        assert_eq!(
            state.resolve("", None, Some("ep_m"), at(12, 0)).endpoint_id,
            None
        );
        state.check_invariants();
    }

    #[test]
    fn the_default_grace_is_an_hour_in_milliseconds() {
        assert_eq!(Duration::from_millis(DEFAULT_EVICTION_GRACE_MS), HOUR);
    }

    /// One generated session with its endpoint: `(host, start, end, port, session named)`.
    type Entry = (usize, i64, Option<i64>, Option<u16>, usize);

    fn entries(max: usize) -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(
            (
                0..4usize,
                0..200i64,
                prop::option::of(0..200i64),
                prop::option::of(20000..20002u16),
                0..12usize,
            ),
            0..max,
        )
    }

    fn second(s: i64) -> DateTime<Utc> {
        at(0, 0) + chrono::Duration::seconds(s)
    }

    fn apply_entries(state: &mut OwnershipState, prefix: &str, entries: &[Entry]) {
        for (i, &(host, start, end, port, session)) in entries.iter().enumerate() {
            // cr_3 is never created: its sessions are unknown_credential.
            let credential = format!("cr_{}", i % 4);
            let session_id = format!("ts_{prefix}{session}");
            let mut endpoint = json!({"id": format!("ep_{prefix}{i}"), "host": format!("h{host}.example.com"), "tunnel_session": {"id": session_id}, "principal": {"id": (["bot_a", "usr_b", "usr_c"][i % 3])}});
            if let Some(port) = port {
                endpoint["port"] = json!(port);
            }
            let session = json!({"session": {"id": format!("ts_{prefix}{i}")}, "credential": {"id": credential}});
            state.apply(&control(
                "agent_session_start.v0",
                second(start),
                session.clone(),
            ));
            state.apply(&control(
                "endpoint_created.v0",
                second(start),
                endpoint.clone(),
            ));
            if let Some(end) = end {
                state.apply(&control(
                    "agent_session_stop.v0",
                    second(start + end),
                    session,
                ));
                state.apply(&control(
                    "endpoint_deleted.v0",
                    second(start + end),
                    endpoint,
                ));
            }
        }
    }

    fn base_state() -> OwnershipState {
        let mut state = OwnershipState::new();
        state.apply(&control(
            "bot_user_created.v0",
            at(0, 0),
            json!({"id": "bot_a", "name": "ci"}),
        ));
        for (c, owner) in ["bot_a", "usr_b", "bot_a"].iter().enumerate() {
            state.apply(&control("tunnel_credential_created.v0", at(0, 0), json!({"id": format!("cr_{c}"), "owner_id": owner, "acl": if c == 2 { json!(["bind:h1.example.com"]) } else { json!([]) }})));
        }
        state
    }

    fn resolutions(state: &OwnershipState, from: i64) -> Vec<Resolution> {
        let mut out = Vec::new();
        for t in (from..=500).step_by(7) {
            for host in 0..5 {
                for port in [None, Some(20000)] {
                    out.push(state.resolve(&format!("h{host}.example.com"), port, None, second(t)));
                }
            }
        }
        out
    }

    proptest! {
        /// Eviction never changes how traffic at or after `now - grace` resolves by hostname,
        /// and names freed by it are safely reused by what comes next.
        #[test]
        fn eviction_keeps_every_answer_after_the_cutoff(
            before in entries(24),
            after in entries(12),
            now in 0..500i64,
            grace in 0..300i64,
        ) {
            let mut evicted = base_state();
            let mut full = base_state();
            apply_entries(&mut evicted, "", &before);
            apply_entries(&mut full, "", &before);
            let cutoff = now - grace;
            let expected = resolutions(&full, cutoff);
            let stats = evicted.stats();
            full.check_invariants();
            let outcome = evicted.evict_ended(second(now), Duration::from_secs(grace as u64));
            evicted.check_invariants();
            prop_assert_eq!(evicted.stats().endpoints, stats.endpoints - outcome.endpoints);
            prop_assert_eq!(evicted.stats().sessions, stats.sessions - outcome.sessions);
            prop_assert_eq!(resolutions(&evicted, cutoff), expected);
            // New ids (hostnames may be reused) after the eviction.
            apply_entries(&mut evicted, "n", &after);
            apply_entries(&mut full, "n", &after);
            evicted.check_invariants();
            prop_assert_eq!(resolutions(&evicted, cutoff), resolutions(&full, cutoff));
        }
    }
}
