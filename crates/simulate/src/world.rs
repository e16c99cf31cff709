//! The simulated account as the generator plans it and the scenarios edit it: owners,
//! credentials, agent sessions, endpoints, addresses with no endpoint, hostnames under wildcard
//! endpoints, API activity, and the time each appears, changes and goes ([`World`]). Events are
//! rendered from it (`control.rs`, `traffic.rs`) only once it is complete.
//!
//! It also holds the two rules the truth reads off it besides the links themselves: which
//! endpoint serves a hostname at an instant ([`World::candidates`], [`World::serving_endpoint`]:
//! an exact name beats any wildcard, the longest wildcard suffix wins, a wildcard covers names at
//! any depth, an endpoint serves from its creation until its deletion), and when a credential is
//! revoked ([`World::revoked_at`]: at its deletion or its bot user's, whichever comes first).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use model::{CredentialKind, OwnerKind};
use rand_chacha::ChaCha8Rng;

use super::draw::{pick, pick_str, AGENT_VERSIONS, OSES, REGIONS};

#[derive(Debug)]
pub(super) struct Owner {
    pub(super) id: String,
    pub(super) kind: OwnerKind,
    /// Email of a user, name of a bot user (ngrok's `principal.subject`).
    pub(super) subject: String,
    /// When the owner exists from: a bot user's creation; the window start for users.
    pub(super) created_at: DateTime<Utc>,
    /// Who created a bot user (a user on the dashboard), if anyone.
    pub(super) created_by: Option<usize>,
    /// Whether a `bot_user_created.v0` announces it (always for users, who have no event). A bot
    /// never announced is the missing link of an `unknown_owner` chain.
    pub(super) announced: bool,
    /// Whether its creation is published late (in [`Fleet::late_control`](crate::Fleet::late_control)).
    pub(super) late: bool,
    /// `(since, active)` changes after creation, in time order (`bot_user_updated.v0`).
    pub(super) active_changes: Vec<(DateTime<Utc>, bool)>,
    /// When the bot user was deleted (`bot_user_deleted.v0`).
    pub(super) deleted_at: Option<DateTime<Utc>>,
}

impl Owner {
    pub(super) fn new(
        id: String,
        kind: OwnerKind,
        subject: String,
        created_at: DateTime<Utc>,
        created_by: Option<usize>,
    ) -> Self {
        Self {
            id,
            kind,
            subject,
            created_at,
            created_by,
            announced: true,
            late: false,
            active_changes: Vec::new(),
            deleted_at: None,
        }
    }

    pub(super) fn active_at(&self, t: DateTime<Utc>) -> bool {
        self.active_changes
            .iter()
            .take_while(|(since, _)| *since <= t)
            .last()
            .is_none_or(|(_, active)| *active)
    }
}

/// How a tunnel credential or SSH key restricts what it may bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AclMode {
    /// `acl: []`
    Open,
    /// `acl: ["*"]`
    Star,
    /// One `bind:host` / `bind:host:port` per endpoint.
    Exact,
    /// `bind:*.<slug>.ngrok.app` (its HTTPS endpoints are named under it) plus TCP addresses.
    Wildcard,
    /// Rules a scenario wrote itself (a wildcard site's gateway or device token);
    /// [`World::finalize_acls`] adds none and checks that they allow every endpoint.
    Preset,
}

#[derive(Debug)]
pub(super) struct Credential {
    pub(super) id: String,
    pub(super) kind: CredentialKind,
    pub(super) owner: usize,
    pub(super) created_at: DateTime<Utc>,
    /// The owner that made it: the user itself, or for a bot a user on the dashboard (or the bot
    /// over the API when the fleet has no users).
    pub(super) created_by: usize,
    pub(super) description: String,
    /// ngrok's `metadata` at creation: a JSON object as a string, or empty.
    pub(super) metadata: String,
    /// `(since, metadata)` changes after creation, in time order (`*_updated.v0`).
    pub(super) metadata_changes: Vec<(DateTime<Utc>, String)>,
    pub(super) acl_mode: AclMode,
    /// Subdomain label for [`AclMode::Wildcard`].
    pub(super) slug: String,
    pub(super) acl: Vec<String>,
    /// Whether a `*_created.v0` announces it (the missing link of an `unknown_credential` chain).
    pub(super) announced: bool,
    /// Whether its creation is published late.
    pub(super) late: bool,
    /// When its `*_deleted.v0` says it was deleted: rotated away, or revoked with its bot user.
    /// A bot user's deletion revokes it even without one ([`World::revoked_at`]).
    pub(super) deleted_at: Option<DateTime<Utc>>,
}

impl Credential {
    /// Its metadata as of `t`: the last change at or before `t`, else the creation's.
    pub(super) fn metadata_at(&self, t: DateTime<Utc>) -> &str {
        self.metadata_changes
            .iter()
            .take_while(|(since, _)| *since <= t)
            .last()
            .map_or(self.metadata.as_str(), |(_, metadata)| metadata.as_str())
    }
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) id: String,
    pub(super) credential: usize,
    pub(super) started_at: DateTime<Utc>,
    pub(super) agent_ip: String,
    pub(super) region: &'static str,
    pub(super) os: (&'static str, &'static str),
    pub(super) user_agent: &'static str,
    /// Whether an `agent_session_start.v0` announces it (the missing link of `unknown_session`).
    pub(super) announced: bool,
    /// Whether its start is published late.
    pub(super) late: bool,
    /// When it stopped (`agent_session_stop.v0`): it moved to a rotated credential.
    pub(super) stopped_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Https,
    Tcp,
}

#[derive(Debug)]
pub(super) struct Endpoint {
    pub(super) id: String,
    pub(super) session: usize,
    /// The owner the endpoint names as its principal: its credential's owner, except for a
    /// `principal_mismatch`.
    pub(super) principal: usize,
    pub(super) scheme: Scheme,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) url: String,
    pub(super) created_at: DateTime<Utc>,
    /// Relative share of the traffic.
    pub(super) weight: u32,
    /// When it went away (`endpoint_deleted.v0`).
    pub(super) deleted_at: Option<DateTime<Utc>>,
    /// Deliberately outside its credential's bind rules.
    pub(super) acl_violation: bool,
    /// Whether its creation is published late.
    pub(super) late: bool,
}

impl Endpoint {
    /// A wildcard endpoint (`https://*.suffix`): traffic names the hostnames under it, never
    /// its own name, so it is a candidate of [`ServedHost`]s rather than a target itself.
    pub(super) fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }

    /// Whether it serves at `t`: from its creation until its deletion.
    pub(super) fn serves_at(&self, t: DateTime<Utc>) -> bool {
        self.created_at <= t && self.deleted_at.is_none_or(|deleted| t < deleted)
    }

    /// How specifically this HTTPS endpoint's name covers `host`, if it does: an exact name
    /// above every wildcard, a wildcard `*.suffix` (covering any name ending in `.suffix`, at
    /// any depth) by the length of its suffix. The higher serves.
    pub(super) fn covers(&self, host: &str) -> Option<usize> {
        if self.scheme != Scheme::Https {
            return None;
        }
        match self.host.strip_prefix('*') {
            Some(dot_suffix) => (host.len() > dot_suffix.len() && host.ends_with(dot_suffix))
                .then(|| dot_suffix.len() - 1),
            None => (self.host == host).then_some(usize::MAX),
        }
    }
}

/// A hostname that traffic reaches by name and that, at each instant, the endpoint the
/// resolution rules pick serves ([`World::serving_endpoint`]): a device under a wildcard site,
/// which its own exact endpoint may serve for part of the window.
#[derive(Debug)]
pub(super) struct ServedHost {
    pub(super) host: String,
    /// Relative share of the traffic.
    pub(super) weight: u32,
}

/// The traffic message key: what identifies an endpoint among live ones, the hostname for HTTPS
/// and `host:port` for TCP.
pub(super) fn address(scheme: Scheme, host: &str, port: u16) -> String {
    match scheme {
        Scheme::Https => host.to_owned(),
        Scheme::Tcp => format!("{host}:{port}"),
    }
}

/// An address with traffic but no endpoint over `[from, to)`: a hostname never announced, or a
/// reused hostname between its two owners.
#[derive(Debug)]
pub(super) struct Unbound {
    pub(super) scheme: Scheme,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) from: DateTime<Utc>,
    pub(super) to: DateTime<Utc>,
    /// `from` and `to` are boundaries (a gap between two endpoints) rather than the window.
    pub(super) is_gap: bool,
    pub(super) weight: u32,
}

/// Where a traffic event is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// An endpoint, during its life.
    Endpoint(usize),
    /// An address with no endpoint.
    Unbound(usize),
    /// A hostname served, at each event's time, by whichever endpoint covers it best then
    /// ([`World::serving_endpoint`]), or by none.
    Served(usize),
}

/// Traffic the scenarios need, generated before the random traffic.
#[derive(Debug, Clone, Copy)]
pub(super) enum Probe {
    /// One event in each phase of the target's life (between consecutive boundaries).
    Phases(Target),
    /// One event at this time.
    At(Target, DateTime<Utc>),
    /// One TCP connection of a usage spike at this time, carrying
    /// [`SPIKE_BYTES_OUT`](super::SPIKE_BYTES_OUT) bytes out (the target is a TCP endpoint).
    Spike(Target, DateTime<Utc>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum AuditKind {
    DomainCreated,
    IpPolicyCreated,
}

#[derive(Debug)]
pub(super) struct Audit {
    pub(super) owner: usize,
    pub(super) api_key: usize,
    pub(super) at: DateTime<Utc>,
    pub(super) kind: AuditKind,
    pub(super) object_id: String,
    pub(super) domain: String,
}

/// Everything in the simulated account, with the time each thing appears and goes.
#[derive(Debug)]
pub(super) struct World {
    pub(super) account_id: String,
    pub(super) start: DateTime<Utc>,
    pub(super) end: DateTime<Utc>,
    /// A quarter of the control phase (the first tenth of the window).
    pub(super) step_ms: i64,
    pub(super) owners: Vec<Owner>,
    pub(super) credentials: Vec<Credential>,
    pub(super) sessions: Vec<Session>,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) unbound: Vec<Unbound>,
    /// Hostnames under wildcard endpoints that get traffic (the wildcard sites' devices).
    pub(super) served_hosts: Vec<ServedHost>,
    pub(super) probes: Vec<Probe>,
    pub(super) audits: Vec<Audit>,
    pub(super) client_ips: Vec<String>,
    /// TCP addresses in use (`N.tcp.ngrok.io`, port).
    pub(super) tcp_addresses: HashSet<(u32, u16)>,
}

impl Session {
    /// A session of `credential` from the agent at `agent_ip`, in a random region and OS.
    pub(super) fn new(
        rng: &mut ChaCha8Rng,
        agent_ip: String,
        id: String,
        credential: usize,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            credential,
            started_at,
            agent_ip,
            region: pick_str(rng, REGIONS),
            os: *pick(rng, OSES),
            user_agent: pick_str(rng, AGENT_VERSIONS),
            announced: true,
            late: false,
            stopped_at: None,
        }
    }
}

impl World {
    /// When credential `credential` stops being usable: its deletion, or its owner's (deleting
    /// a bot user revokes every credential it owns, whether or not a `*_deleted.v0` says so),
    /// whichever comes first.
    pub(super) fn revoked_at(&self, credential: usize) -> Option<DateTime<Utc>> {
        let cred = &self.credentials[credential];
        let owner_deleted = self.owners[cred.owner].deleted_at;
        match (cred.deleted_at, owner_deleted) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The endpoints that may serve `host`, best first: the exact endpoints of that name, then
    /// the wildcards covering it, longest suffix first; among equals the latest created first
    /// (as botmeter picks among endpoints reusing a name).
    pub(super) fn candidates(&self, host: &str) -> Vec<usize> {
        let mut found: Vec<(usize, usize)> = self
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(index, e)| e.covers(host).map(|rank| (rank, index)))
            .collect();
        found.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(
                    self.endpoints[b.1]
                        .created_at
                        .cmp(&self.endpoints[a.1].created_at),
                )
                .then(a.1.cmp(&b.1))
        });
        found.into_iter().map(|(_, index)| index).collect()
    }

    /// The endpoint serving a hostname at `t`, among its [`World::candidates`]: the first that
    /// serves then. Exact beats wildcard, the longest suffix wins, all as of `t`.
    pub(super) fn serving_endpoint(&self, candidates: &[usize], t: DateTime<Utc>) -> Option<usize> {
        candidates
            .iter()
            .copied()
            .find(|&e| self.endpoints[e].serves_at(t))
    }
}

/// `https://host` or `tcp://host:port`.
pub(super) fn url(scheme: Scheme, host: &str, port: u16) -> String {
    match scheme {
        Scheme::Https => format!("https://{host}"),
        Scheme::Tcp => format!("tcp://{host}:{port}"),
    }
}
