//! The as-of join: traffic at time *t* → endpoint (by id, or by hostname/port at *t*: the exact
//! name first, then the wildcard endpoint `*.suffix` with the longest suffix) → agent
//! session → credential → owner, with the anomaly flags of what should not have happened, or the
//! missing link when the chain breaks. Never drops an event: every call returns a [`Resolution`].

use chrono::{DateTime, Utc};
use model::{BindRule, CredentialKind, OwnerKind};

use crate::state::{micros, EndpointInterval, Micros, OwnershipState};

/// An anomaly on attributed usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    /// The credential had been deleted (revoked) before the event, by its own deletion or by
    /// its owning bot user's.
    CredentialDeleted,
    /// The owning bot user was deactivated at the event's time.
    OwnerInactive,
    /// The owning bot user had been deleted before the event.
    OwnerDeleted,
    /// The endpoint's hostname, address or labels were not allowed by the credential's bind rules.
    AclViolation,
    /// The endpoint names a principal other than the credential's owner.
    PrincipalMismatch,
}

impl Flag {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CredentialDeleted => "credential_deleted",
            Self::OwnerInactive => "owner_inactive",
            Self::OwnerDeleted => "owner_deleted",
            Self::AclViolation => "acl_violation",
            Self::PrincipalMismatch => "principal_mismatch",
        }
    }
}

/// Which link of the chain was missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnattributedReason {
    /// No endpoint had this hostname (and port) at the event's time.
    NoEndpoint,
    /// The endpoint names no session, or a session never seen.
    UnknownSession,
    /// The session's credential was never seen.
    UnknownCredential,
    /// The credential's owner is a bot user never seen.
    UnknownOwner,
    /// Not resolved: the control plane had not been read past the event's time within the
    /// pipeline's bound on waiting (`--max-control-wait-ms`); `botmeter reattribute` restates it.
    ControlPlaneBehind,
}

impl UnattributedReason {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoEndpoint => "no_endpoint",
            Self::UnknownSession => "unknown_session",
            Self::UnknownCredential => "unknown_credential",
            Self::UnknownOwner => "unknown_owner",
            Self::ControlPlaneBehind => "control_plane_behind",
        }
    }
}

/// The outcome of resolving one traffic event. Ids are filled as far as the chain got.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolution {
    /// The endpoint found.
    pub endpoint_id: Option<String>,
    /// The agent session found.
    pub session_id: Option<String>,
    /// The credential found.
    pub credential_id: Option<String>,
    /// Its kind.
    pub credential_kind: Option<CredentialKind>,
    /// The owner, when attributed.
    pub owner_id: Option<String>,
    /// The owner's kind.
    pub owner_kind: Option<OwnerKind>,
    /// Anomalies, sorted.
    pub flags: Vec<Flag>,
    /// Set when the chain broke.
    pub unattributed: Option<UnattributedReason>,
}

/// [`Resolution`] with its ids borrowed from the state: what the traffic hot path copies straight
/// into its rows, allocating nothing (flags aside, when there are any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolutionRef<'s> {
    /// The endpoint found.
    pub endpoint_id: Option<&'s str>,
    /// The agent session found.
    pub session_id: Option<&'s str>,
    /// The credential found.
    pub credential_id: Option<&'s str>,
    /// Its kind.
    pub credential_kind: Option<CredentialKind>,
    /// The owner, when attributed.
    pub owner_id: Option<&'s str>,
    /// The owner's kind.
    pub owner_kind: Option<OwnerKind>,
    /// Anomalies, sorted.
    pub flags: Vec<Flag>,
    /// Set when the chain broke.
    pub unattributed: Option<UnattributedReason>,
}

impl ResolutionRef<'_> {
    fn missing(mut self, reason: UnattributedReason) -> Self {
        self.unattributed = Some(reason);
        self
    }

    /// The owned form.
    pub fn to_owned(&self) -> Resolution {
        Resolution {
            endpoint_id: self.endpoint_id.map(str::to_owned),
            session_id: self.session_id.map(str::to_owned),
            credential_id: self.credential_id.map(str::to_owned),
            credential_kind: self.credential_kind,
            owner_id: self.owner_id.map(str::to_owned),
            owner_kind: self.owner_kind,
            flags: self.flags.clone(),
            unattributed: self.unattributed,
        }
    }
}

impl OwnershipState {
    /// Resolves traffic on `hostname`/`port` (or on the endpoint it names) at time `t`.
    ///
    /// Times compare at microsecond precision. An endpoint or session evicted by
    /// [`OwnershipState::evict_ended`] is no longer found: see there for the grace period that
    /// bounds how late traffic may be.
    pub fn resolve(
        &self,
        hostname: &str,
        port: Option<u16>,
        endpoint_id: Option<&str>,
        t: DateTime<Utc>,
    ) -> Resolution {
        self.resolve_at(hostname, port, endpoint_id, micros(t))
            .to_owned()
    }

    /// [`OwnershipState::resolve`] at `t_us` microseconds since the epoch, borrowing the ids.
    pub fn resolve_at(
        &self,
        hostname: &str,
        port: Option<u16>,
        endpoint_id: Option<&str>,
        t_us: i64,
    ) -> ResolutionRef<'_> {
        let t: Micros = t_us;
        let mut resolution = ResolutionRef::default();
        let Some(endpoint) = self.find_endpoint(hostname, port, endpoint_id, t) else {
            return resolution.missing(UnattributedReason::NoEndpoint);
        };
        resolution.endpoint_id = Some(self.endpoints.name(endpoint.endpoint));
        let Some(session_sym) = endpoint.session else {
            return resolution.missing(UnattributedReason::UnknownSession);
        };
        resolution.session_id = Some(self.sessions.name(session_sym));
        let Some(credential_sym) = self.sessions.value(session_sym).credential else {
            return resolution.missing(UnattributedReason::UnknownSession);
        };
        resolution.credential_id = Some(self.credentials.name(credential_sym));
        let Some(credential) = self.credentials.value(credential_sym) else {
            return resolution.missing(UnattributedReason::UnknownCredential);
        };
        resolution.credential_kind = Some(credential.kind);
        let owner_id = self.owners.name(credential.owner);
        let owner_kind = OwnerKind::of(owner_id);
        let bot = self.owners.value(credential.owner).as_ref();
        if owner_kind != Some(OwnerKind::User) && bot.is_none() {
            return resolution.missing(UnattributedReason::UnknownOwner);
        }
        resolution.owner_id = Some(owner_id);
        resolution.owner_kind = owner_kind;

        let flags = &mut resolution.flags;
        // Deleting a bot user revokes its credentials (ngrok's behaviour), whether or not a
        // deletion event of each credential follows.
        let revoked_with_owner = bot.is_some_and(|bot| bot.deleted_at <= t);
        if credential.deleted_at <= t || revoked_with_owner {
            flags.push(Flag::CredentialDeleted);
        }
        if let Some(bot) = bot {
            if bot.deleted_at <= t {
                flags.push(Flag::OwnerDeleted);
            } else if !bot.active_at(t) {
                flags.push(Flag::OwnerInactive);
            }
        }
        let bind_host = self.hosts.name(endpoint.host);
        if !BindRule::permits(
            credential.rules_at(t),
            bind_host,
            endpoint.port,
            endpoint.labels(),
        ) {
            flags.push(Flag::AclViolation);
        }
        if endpoint.principal.is_some_and(|p| p != credential.owner) {
            flags.push(Flag::PrincipalMismatch);
        }
        flags.sort();
        resolution
    }

    fn find_endpoint(
        &self,
        hostname: &str,
        port: Option<u16>,
        endpoint_id: Option<&str>,
        t: Micros,
    ) -> Option<&EndpointInterval> {
        if let Some(id) = endpoint_id.filter(|id| !id.is_empty()) {
            // Named by id (Traffic Policy log action): still only while the endpoint exists.
            let sym = self.endpoints.get(id)?;
            return (*self.endpoints.value(sym))
                .map(|i| self.interval(i))
                .filter(|i| i.covers(t));
        }
        if let Some(found) = self.find_on_host(hostname, port, t) {
            return Some(found);
        }
        if self.has_wildcards {
            self.find_wildcard(hostname, port, t)
        } else {
            None
        }
    }

    /// The endpoint on exactly `hostname` at `t`: the latest-starting interval that covers `t`
    /// and agrees on the port (when both name one).
    fn find_on_host(
        &self,
        hostname: &str,
        port: Option<u16>,
        t: Micros,
    ) -> Option<&EndpointInterval> {
        let host = match self.hosts.get(hostname) {
            Some(host) => host,
            None if hostname.bytes().any(|b| b.is_ascii_uppercase()) => {
                self.hosts.get(&hostname.to_ascii_lowercase())?
            }
            None => return None,
        };
        self.host_intervals(host)
            .map(|i| self.interval(i))
            .skip_while(|i| i.start > t)
            .find(|i| i.covers(t) && !matches!((port, i.port), (Some(a), Some(b)) if a != b))
    }

    /// The endpoint of the wildcard name `*.suffix` with the longest suffix of `hostname` that
    /// serves it at `t` (any depth: `*.example.com` serves `a.b.example.com`). Only asked when
    /// no endpoint has the exact name at `t`: exact beats wildcard. The names are built in a
    /// stack buffer, so a lookup allocates nothing: one hash lookup per label of `hostname`.
    fn find_wildcard(
        &self,
        hostname: &str,
        port: Option<u16>,
        t: Micros,
    ) -> Option<&EndpointInterval> {
        // DNS names are at most 253 bytes; anything longer has no wildcard endpoint.
        const MAX_NAME: usize = 255;
        if hostname.len() >= MAX_NAME {
            return None;
        }
        let mut buffer = [0_u8; MAX_NAME + 1];
        buffer[0] = b'*';
        // Longest suffix first: the dots from the left.
        for (dot, _) in hostname.match_indices('.') {
            let suffix = &hostname.as_bytes()[dot..];
            if suffix.len() < 2 {
                continue; // a trailing dot
            }
            let name = &mut buffer[..=suffix.len()];
            name[1..].copy_from_slice(suffix);
            name.make_ascii_lowercase();
            let Ok(name) = std::str::from_utf8(name) else {
                return None; // not reached: a suffix of a str after an ASCII dot is a str
            };
            if let Some(found) = self.find_on_host(name, port, t) {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::decode;

    fn event(json: serde_json::Value) -> model::Event {
        decode(json.to_string().as_bytes()).unwrap()
    }

    fn control(event_type: &str, at: &str, object: serde_json::Value) -> model::Event {
        event(
            serde_json::json!({"event_id": format!("ev_{at}_{event_type}"), "event_type": event_type, "event_timestamp": at, "object": object}),
        )
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fleet() -> OwnershipState {
        let mut state = OwnershipState::new();
        for e in [
            control(
                "bot_user_created.v0",
                "2024-01-01T00:00:00Z",
                serde_json::json!({"id": "bot_a", "name": "ci", "active": true}),
            ),
            control(
                "tunnel_credential_created.v0",
                "2024-01-01T00:01:00Z",
                serde_json::json!({"id": "cr_a", "owner_id": "bot_a", "acl": ["bind:*.example.com"]}),
            ),
            control(
                "agent_session_start.v0",
                "2024-01-01T00:02:00Z",
                serde_json::json!({"session": {"id": "ts_a"}, "credential": {"id": "cr_a"}}),
            ),
            control(
                "endpoint_created.v0",
                "2024-01-01T00:03:00Z",
                serde_json::json!({"id": "ep_a", "url": "https://api.example.com", "tunnel_session": {"id": "ts_a"}, "principal": {"id": "bot_a"}}),
            ),
        ] {
            assert_eq!(state.apply(&e), crate::ApplyOutcome::Applied);
        }
        state
    }

    #[test]
    fn an_endpoint_named_by_id_resolves_only_while_it_exists() {
        let mut state = fleet();
        state.apply(&control(
            "endpoint_deleted.v0",
            "2024-01-01T04:00:00Z",
            serde_json::json!({"id": "ep_a", "url": "https://api.example.com"}),
        ));
        assert_eq!(
            state
                .resolve("", None, Some("ep_a"), t("2024-01-01T03:00:00Z"))
                .owner_id
                .as_deref(),
            Some("bot_a")
        );
        assert_eq!(
            state
                .resolve("", None, Some("ep_a"), t("2024-01-01T05:00:00Z"))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
        assert_eq!(
            state
                .resolve("", None, Some("ep_a"), t("2024-01-01T00:00:00Z"))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
    }

    #[test]
    fn a_deletion_seen_before_its_creation_still_gets_the_session() {
        let mut state = fleet();
        state.apply(&control(
            "endpoint_deleted.v0",
            "2024-01-01T06:00:00Z",
            serde_json::json!({"id": "ep_late", "host": "late.example.com"}),
        ));
        state.apply(&control("endpoint_created.v0", "2024-01-01T05:00:00Z", serde_json::json!({"id": "ep_late", "host": "late.example.com", "tunnel_session": {"id": "ts_a"}})));
        let r = state.resolve("late.example.com", None, None, t("2024-01-01T05:30:00Z"));
        assert_eq!(r.owner_id.as_deref(), Some("bot_a"), "{r:?}");
        assert_eq!(
            state
                .resolve("late.example.com", None, None, t("2024-01-01T06:30:00Z"))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
    }

    #[test]
    fn resolves_the_whole_chain() {
        let state = fleet();
        let r = state.resolve("api.example.com", None, None, t("2024-01-01T01:00:00Z"));
        assert_eq!(r.owner_id.as_deref(), Some("bot_a"));
        assert_eq!(r.owner_kind, Some(OwnerKind::BotUser));
        assert_eq!(r.credential_id.as_deref(), Some("cr_a"));
        assert_eq!(r.session_id.as_deref(), Some("ts_a"));
        assert_eq!(r.endpoint_id.as_deref(), Some("ep_a"));
        assert!(r.flags.is_empty(), "{:?}", r.flags);
        assert_eq!(r.unattributed, None);
    }

    #[test]
    fn before_the_endpoint_existed_there_is_no_endpoint() {
        let state = fleet();
        let r = state.resolve("api.example.com", None, None, t("2024-01-01T00:02:59Z"));
        assert_eq!(r.unattributed, Some(UnattributedReason::NoEndpoint));
        let r = state.resolve("other.example.com", None, None, t("2024-01-01T01:00:00Z"));
        assert_eq!(r.unattributed, Some(UnattributedReason::NoEndpoint));
    }

    #[test]
    fn flags_follow_the_time_of_the_event() {
        let mut state = fleet();
        state.apply(&control(
            "bot_user_updated.v0",
            "2024-01-01T02:00:00Z",
            serde_json::json!({"id": "bot_a", "active": false}),
        ));
        state.apply(&control(
            "tunnel_credential_deleted.v0",
            "2024-01-01T03:00:00Z",
            serde_json::json!({"id": "cr_a", "owner_id": "bot_a"}),
        ));
        assert!(state
            .resolve("api.example.com", None, None, t("2024-01-01T01:00:00Z"))
            .flags
            .is_empty());
        assert_eq!(
            state
                .resolve("api.example.com", None, None, t("2024-01-01T02:30:00Z"))
                .flags,
            vec![Flag::OwnerInactive]
        );
        assert_eq!(
            state
                .resolve("api.example.com", None, None, t("2024-01-01T03:30:00Z"))
                .flags,
            vec![Flag::CredentialDeleted, Flag::OwnerInactive]
        );
    }

    #[test]
    fn owner_never_changes() {
        let mut state = fleet();
        let outcome = state.apply(&control(
            "tunnel_credential_updated.v0",
            "2024-01-01T02:00:00Z",
            serde_json::json!({"id": "cr_a", "owner_id": "usr_b"}),
        ));
        assert!(matches!(
            outcome,
            crate::ApplyOutcome::OwnerChangeRejected { .. }
        ));
        let r = state.resolve("api.example.com", None, None, t("2024-01-01T03:00:00Z"));
        assert_eq!(r.owner_id.as_deref(), Some("bot_a"));
    }

    #[test]
    fn hostname_reuse_resolves_by_interval() {
        let mut state = fleet();
        for e in [
            control(
                "endpoint_deleted.v0",
                "2024-01-01T04:00:00Z",
                serde_json::json!({"id": "ep_a", "url": "https://api.example.com"}),
            ),
            control(
                "tunnel_credential_created.v0",
                "2024-01-01T04:00:00Z",
                serde_json::json!({"id": "cr_u", "owner_id": "usr_u"}),
            ),
            control(
                "agent_session_start.v0",
                "2024-01-01T04:00:00Z",
                serde_json::json!({"session": {"id": "ts_u"}, "credential": {"id": "cr_u"}}),
            ),
            control(
                "endpoint_created.v0",
                "2024-01-01T05:00:00Z",
                serde_json::json!({"id": "ep_u", "host": "api.example.com", "tunnel_session": {"id": "ts_u"}}),
            ),
        ] {
            state.apply(&e);
        }
        assert_eq!(
            state
                .resolve("api.example.com", None, None, t("2024-01-01T03:59:59Z"))
                .owner_id
                .as_deref(),
            Some("bot_a")
        );
        assert_eq!(
            state
                .resolve("api.example.com", None, None, t("2024-01-01T04:30:00Z"))
                .unattributed,
            Some(UnattributedReason::NoEndpoint)
        );
        assert_eq!(
            state
                .resolve("API.example.com", None, None, t("2024-01-01T05:00:00Z"))
                .owner_id
                .as_deref(),
            Some("usr_u")
        );
    }

    #[test]
    fn acl_violation_and_missing_links() {
        let mut state = fleet();
        state.apply(&control(
            "endpoint_created.v0",
            "2024-01-01T00:04:00Z",
            serde_json::json!({"id": "ep_x", "host": "evil.io", "tunnel_session": {"id": "ts_a"}}),
        ));
        state.apply(&control("endpoint_created.v0", "2024-01-01T00:04:00Z", serde_json::json!({"id": "ep_y", "host": "orphan.io", "tunnel_session": {"id": "ts_none"}})));
        assert_eq!(
            state
                .resolve("evil.io", None, None, t("2024-01-01T01:00:00Z"))
                .flags,
            vec![Flag::AclViolation]
        );
        assert_eq!(
            state
                .resolve("orphan.io", None, None, t("2024-01-01T01:00:00Z"))
                .unattributed,
            Some(UnattributedReason::UnknownSession)
        );
        // By endpoint id, whatever the hostname says.
        assert_eq!(
            state
                .resolve("", None, Some("ep_a"), t("2024-01-01T01:00:00Z"))
                .owner_id
                .as_deref(),
            Some("bot_a")
        );
    }

    /// `fleet()` plus a second bot whose session serves the wildcard `*.factory.example.com`
    /// from 00:10, and `*.example.com` on the first bot's session from 00:05.
    fn wildcard_fleet() -> OwnershipState {
        let mut state = fleet();
        for e in [
            control(
                "bot_user_created.v0",
                "2024-01-01T00:00:00Z",
                serde_json::json!({"id": "bot_w", "name": "fleet", "active": true}),
            ),
            control(
                "tunnel_credential_created.v0",
                "2024-01-01T00:01:00Z",
                serde_json::json!({"id": "cr_w", "owner_id": "bot_w", "acl": ["bind:*.example.com"]}),
            ),
            control(
                "agent_session_start.v0",
                "2024-01-01T00:02:00Z",
                serde_json::json!({"session": {"id": "ts_w"}, "credential": {"id": "cr_w"}}),
            ),
            control(
                "endpoint_created.v0",
                "2024-01-01T00:10:00Z",
                serde_json::json!({"id": "ep_w", "url": "https://*.Factory.example.com", "tunnel_session": {"id": "ts_w"}}),
            ),
            control(
                "endpoint_created.v0",
                "2024-01-01T00:05:00Z",
                serde_json::json!({"id": "ep_wide", "url": "https://*.example.com", "tunnel_session": {"id": "ts_a"}}),
            ),
        ] {
            assert_eq!(state.apply(&e), crate::ApplyOutcome::Applied);
        }
        state
    }

    fn endpoint_at(state: &OwnershipState, hostname: &str, at: &str) -> Option<String> {
        state.resolve(hostname, None, None, t(at)).endpoint_id
    }

    #[test]
    fn a_wildcard_serves_every_subdomain_the_longest_suffix_first() {
        let state = wildcard_fleet();
        let at = "2024-01-01T01:00:00Z";
        let found = state.resolve("dev7.factory.example.com", None, None, t(at));
        assert_eq!(found.endpoint_id.as_deref(), Some("ep_w"));
        assert_eq!(found.owner_id.as_deref(), Some("bot_w"));
        assert_eq!(found.flags, vec![]);
        // Any depth, any case.
        assert_eq!(
            endpoint_at(&state, "a.b.Factory.example.com", at).as_deref(),
            Some("ep_w")
        );
        // Outside the longer suffix, the shorter wildcard.
        assert_eq!(
            endpoint_at(&state, "shop.example.com", at).as_deref(),
            Some("ep_wide")
        );
        // Before the longer wildcard came up, the shorter one served its names.
        assert_eq!(
            endpoint_at(&state, "dev7.factory.example.com", "2024-01-01T00:07:00Z").as_deref(),
            Some("ep_wide")
        );
        // Neither serves the apex or another domain.
        assert_eq!(endpoint_at(&state, "example.com", at), None);
        assert_eq!(endpoint_at(&state, "dev7.factory.example.org", at), None);
    }

    #[test]
    fn an_exact_name_beats_a_wildcard_while_it_serves() {
        let mut state = wildcard_fleet();
        // api.example.com (fleet()) is exact: never the wildcard's.
        assert_eq!(
            endpoint_at(&state, "api.example.com", "2024-01-01T01:00:00Z").as_deref(),
            Some("ep_a")
        );
        state.apply(&control(
            "endpoint_created.v0",
            "2024-01-01T02:00:00Z",
            serde_json::json!({"id": "ep_dev7", "url": "https://dev7.factory.example.com", "tunnel_session": {"id": "ts_a"}}),
        ));
        state.apply(&control(
            "endpoint_deleted.v0",
            "2024-01-01T03:00:00Z",
            serde_json::json!({"id": "ep_dev7", "url": "https://dev7.factory.example.com"}),
        ));
        let dev7 =
            |state: &OwnershipState, at: &str| endpoint_at(state, "dev7.factory.example.com", at);
        assert_eq!(
            dev7(&state, "2024-01-01T01:59:59Z").as_deref(),
            Some("ep_w")
        );
        assert_eq!(
            dev7(&state, "2024-01-01T02:30:00Z").as_deref(),
            Some("ep_dev7")
        );
        assert_eq!(
            dev7(&state, "2024-01-01T03:00:00Z").as_deref(),
            Some("ep_w")
        );
        // A wildcard that ended serves nothing after its end: the shorter one takes over.
        state.apply(&control(
            "endpoint_deleted.v0",
            "2024-01-01T04:00:00Z",
            serde_json::json!({"id": "ep_w", "url": "https://*.factory.example.com"}),
        ));
        assert_eq!(
            dev7(&state, "2024-01-01T03:59:59Z").as_deref(),
            Some("ep_w")
        );
        assert_eq!(
            dev7(&state, "2024-01-01T04:00:00Z").as_deref(),
            Some("ep_wide")
        );
    }

    #[test]
    fn a_wildcard_endpoint_is_checked_against_the_acl_by_its_own_name() {
        let mut state = wildcard_fleet();
        // cr_a allows *.example.com: its wildcard *.example.com is within it.
        assert_eq!(
            state
                .resolve("shop.example.com", None, None, t("2024-01-01T01:00:00Z"))
                .flags,
            vec![]
        );
        // A credential allowed only one device's name may not serve the site's wildcard.
        for e in [
            control(
                "tunnel_credential_created.v0",
                "2024-01-01T00:01:00Z",
                serde_json::json!({"id": "cr_one", "owner_id": "bot_w", "acl": ["bind:dev1.site.example.net"]}),
            ),
            control(
                "agent_session_start.v0",
                "2024-01-01T00:02:00Z",
                serde_json::json!({"session": {"id": "ts_one"}, "credential": {"id": "cr_one"}}),
            ),
            control(
                "endpoint_created.v0",
                "2024-01-01T00:03:00Z",
                serde_json::json!({"id": "ep_site", "url": "https://*.site.example.net", "tunnel_session": {"id": "ts_one"}}),
            ),
        ] {
            state.apply(&e);
        }
        let found = state.resolve(
            "dev1.site.example.net",
            None,
            None,
            t("2024-01-01T01:00:00Z"),
        );
        assert_eq!(found.endpoint_id.as_deref(), Some("ep_site"));
        assert_eq!(found.flags, vec![Flag::AclViolation]);
    }

    #[test]
    fn deleting_a_bot_user_revokes_its_credentials() {
        let mut state = fleet();
        state.apply(&control(
            "bot_user_deleted.v0",
            "2024-01-01T05:00:00Z",
            serde_json::json!({"id": "bot_a"}),
        ));
        let flags = |at: &str| state.resolve("api.example.com", None, None, t(at)).flags;
        assert_eq!(flags("2024-01-01T04:59:59Z"), vec![]);
        // No tunnel_credential_deleted.v0 came: the credential is revoked all the same.
        assert_eq!(
            flags("2024-01-01T05:00:00Z"),
            vec![Flag::CredentialDeleted, Flag::OwnerDeleted]
        );
    }
}
