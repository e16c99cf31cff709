//! What a simulated fleet looks like: how many owners, credentials, sessions, endpoints and
//! traffic events, over which window, from which seed, and which anomalies ([`Scenarios`]) it
//! contains. [`FleetConfig::validate`] checks it purely, before anything is generated, and names
//! the field and the value it rejects.

use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Upper bound on endpoints in one fleet: TCP endpoints need unique `N.tcp.ngrok.io:PORT`
/// addresses (9 hosts × 20,000 ports), and the whole fleet is held in memory.
pub(crate) const MAX_ENDPOINTS: u64 = 100_000;
/// Upper bound on traffic events: the fleet is held in memory (about 550 bytes per event, so
/// some 5.5 GB at the bound; generating a million takes a few seconds in a release build).
pub(crate) const MAX_TRAFFIC_EVENTS: usize = 10_000_000;
/// Upper bound on users and on bot users.
pub(crate) const MAX_OWNERS_PER_KIND: usize = 100_000;
/// Upper bound on credentials per owner per kind, sessions per credential, endpoints per session.
pub(crate) const MAX_FAN_OUT: usize = 1_000;
/// Upper bound on the window: one leap year.
pub(crate) const MAX_DURATION_HOURS: u32 = 24 * 366;
/// Upper bound on each scenario count and on `late_control`.
pub(crate) const MAX_SCENARIOS: usize = 1_000;
/// Fleets with at most this many traffic events record the expected outcome of every event in
/// the ground truth unless `record_events` says otherwise (about 200 bytes of memory per event).
pub const RECORD_EVENTS_UP_TO: usize = 200_000;

/// The shape of a simulated ngrok account.
///
/// Every owner (user or bot user) gets `credentials_per_owner` credentials **of each kind**
/// (authtoken, SSH key, API key). Every authtoken and SSH key starts `sessions_per_credential`
/// agent sessions (API keys start none), and every session serves `endpoints_per_session`
/// endpoints. `traffic_events` HTTP requests and TCP connections are spread over those endpoints.
///
/// [`FleetConfig::default()`] is a clean fleet: every traffic event attributes, with no flag.
/// [`FleetConfig::with_anomalies()`] adds one or two of every [`Scenarios`] kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Seed of the ChaCha8 generator: the same seed and config give byte-identical events.
    pub seed: u64,
    /// People (`usr_…`). ngrok publishes no user lifecycle event: a user is only an owner id.
    pub users: usize,
    /// Bot users (`bot_…`), each announced by a `bot_user_created.v0` event.
    pub bot_users: usize,
    /// Credentials per owner and per kind (authtoken, SSH key, API key).
    pub credentials_per_owner: usize,
    /// Agent sessions started by each authtoken and each SSH key.
    pub sessions_per_credential: usize,
    /// Endpoints served by each agent session.
    pub endpoints_per_session: usize,
    /// `http_request_complete.v0` plus `tcp_connection_closed.v0` events in the whole window.
    pub traffic_events: usize,
    /// Start of the window (truncated to whole milliseconds, the precision of every timestamp).
    pub start: DateTime<Utc>,
    /// Length of the window in hours. Control events fall in its first tenth (the anomalies'
    /// lifecycle events later), traffic anywhere after the endpoint it uses came up.
    pub duration_hours: u32,
    /// Anomalies to add (rotated, deleted and deactivated credentials and bot users, reused
    /// hostnames, ACL violations, unknown links, wildcard sites, device metadata). None by
    /// default.
    pub scenarios: Scenarios,
    /// Late chains: this many extra credential → agent session → endpoint chains, each created a
    /// few milliseconds before its first traffic, whose control events are in
    /// [`Fleet::late_control`](super::Fleet::late_control), published after the traffic. Their
    /// traffic still attributes (botmeter waits for the control plane, with an allowed
    /// lateness); that only holds when the event times are close to the time of publishing,
    /// so 0 by default (see [`late_control_scenario`](super::late_control_scenario)).
    pub late_control: usize,
    /// Whether the ground truth lists the expected outcome of every traffic event
    /// ([`GroundTruth::events`](super::GroundTruth::events)). Unset: only for fleets of at most
    /// [`RECORD_EVENTS_UP_TO`] traffic events.
    pub record_events: Option<bool>,
}

/// Anomalies in a fleet, each a count of occurrences. A count larger than the fleet can host
/// (it needs bot users, authtokens with several sessions, untouched owners…) is clamped:
/// scenarios pick disjoint credentials and bot users where they can. Every kind gets traffic in
/// each of its phases (before and after a deletion, inside a deactivation, in a hostname's gap,
/// under each endpoint that serves a wildcard site's hostname in turn, on each side of a
/// metadata change). A kind at 0 draws nothing: a fleet without it is byte for byte what it was
/// before the kind existed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenarios {
    /// Authtokens rotated: a new authtoken is created for the same owner, all but one of the old
    /// one's agent sessions move to it (their endpoints come back on the same addresses), and
    /// the old one is deleted (`tunnel_credential_deleted.v0`) while one session still runs on
    /// it: that session's later traffic is flagged `credential_deleted`.
    pub rotations: usize,
    /// Bot users deactivated mid-window (`bot_user_updated.v0`, `active: false`); every other
    /// one is reactivated later. Usage while inactive is flagged `owner_inactive`.
    pub bot_deactivations: usize,
    /// Bot users deleted mid-window (`bot_user_deleted.v0`, and the `*_deleted.v0` of each of
    /// their credentials, which deleting a bot revokes). Their endpoints keep serving; that
    /// usage is flagged `owner_deleted` and `credential_deleted`.
    pub bot_deletions: usize,
    /// Hostnames reused: an HTTPS endpoint of one owner is deleted (`endpoint_deleted.v0`) and,
    /// after a gap, an endpoint of another owner comes up on the same hostname. Traffic goes to
    /// the first before, to the second after, and is unattributed `no_endpoint` in the gap.
    pub hostname_reuses: usize,
    /// Endpoints whose hostname their credential's bind rules do not allow: `acl_violation`.
    pub acl_violations: usize,
    /// Endpoints naming a principal other than their credential's owner: `principal_mismatch`.
    pub principal_mismatches: usize,
    /// Addresses no endpoint ever had (HTTPS hostnames and TCP addresses, alternately) that
    /// still get traffic: unattributed `no_endpoint`.
    pub unknown_hostnames: usize,
    /// Endpoints naming an agent session never announced: unattributed `unknown_session`.
    pub unknown_sessions: usize,
    /// Agent sessions (each with an endpoint) naming a credential never announced: unattributed
    /// `unknown_credential`.
    pub unknown_credentials: usize,
    /// Credentials (each with a session and an endpoint) owned by a bot user never announced:
    /// unattributed `unknown_owner`.
    pub unknown_owners: usize,
    /// Bot users deleted mid-window with only `bot_user_deleted.v0` published: no `*_deleted.v0`
    /// for any of their credentials. Deleting a bot user revokes its credentials all the same
    /// (ngrok's behaviour), so their endpoints' later usage is flagged `credential_deleted` and
    /// `owner_deleted`, exactly as for [`bot_deletions`](Self::bot_deletions). When every bot
    /// user is already taken by the other bot scenarios, a deactivated one is deleted.
    pub bot_deletions_without_credential_deletes: usize,
    /// Wildcard sites, ngrok's fleet pattern (one URL per device under a site's wildcard
    /// domain). The fleet gets a catch-all wildcard endpoint `https://*.factory.example.com`
    /// (deleted at 80–90% of the window), and each site `siteN` a wildcard endpoint
    /// `https://*.siteN.factory.example.com` (site 1's deleted at 60–72%), each on its own
    /// authtoken whose ACL is `bind:*.factory.example.com` (which allows the wildcard names
    /// themselves), a bot user's when there is one. Traffic goes to device hostnames under the
    /// sites (`dev7.site2.factory.example.com`, nested `a.dev9.site2.factory.example.com`) and
    /// under the catch-all alone (`status.factory.example.com`, a site with no wildcard of its
    /// own); two devices per site also get an exact endpoint on a per-device authtoken of
    /// another owner for part of the window. Each event belongs to the endpoint serving its
    /// hostname at its time: an exact name beats any wildcard, the longest wildcard suffix
    /// wins, a wildcard covers names at any depth below it, and an endpoint serves from its
    /// creation until its deletion; with none, `no_endpoint`.
    pub wildcard_sites: usize,
    /// Credential metadata with device keys: this many credentials of each kind (authtoken, SSH
    /// key, API key) carry `{"device_id":"dev…","site":"site…","environment":"…"}` (API keys
    /// without `device_id`) instead of the plan's (empty, or only `team`), and the first of
    /// each kind gets a `*_updated.v0` at 35–55% of the window that moves it to the next site.
    /// Usage is grouped by metadata as of each event's time
    /// ([`GroundTruth::by_metadata`](super::GroundTruth::by_metadata)).
    pub credential_metadata: usize,
    /// Devices that drop and come back: this many authtokens or SSH keys with agents online
    /// lose every agent session (`agent_session_stop.v0`, their endpoints deleted) at 30–45% of
    /// the window, and every other one comes back at 55–70% (a new session from the same agent,
    /// its endpoints on the same addresses). The ground truth's
    /// [`fleet`](super::GroundTruth::fleet) says what `/v1/fleet` reports at any time. Not in
    /// [`Scenarios::standard`].
    pub device_drops: usize,
    /// Usage spikes: this many owners (untouched by the other scenarios while there are any,
    /// each with a TCP endpoint up through the window) get a burst of
    /// [`SPIKE_CONNECTIONS`](super::SPIKE_CONNECTIONS) TCP connections of
    /// [`SPIKE_BYTES_OUT`](super::SPIKE_BYTES_OUT) bytes out each, within ten minutes starting
    /// at 75–85% of the window: an hour of bytes out far over any multiple a `usage_spike` rule
    /// would use of the owner's usual hours (an ordinary connection carries at most 10 MB). The
    /// ground truth's [`expected_alerts`](super::GroundTruth::expected_alerts) says which alerts
    /// a rules file must raise. Not in [`Scenarios::standard`].
    pub usage_spikes: usize,
}

impl Scenarios {
    /// One or two of every kind: what [`FleetConfig::with_anomalies`] uses.
    pub fn standard() -> Self {
        Self {
            rotations: 2,
            bot_deactivations: 2,
            bot_deletions: 1,
            hostname_reuses: 2,
            acl_violations: 2,
            principal_mismatches: 1,
            unknown_hostnames: 2,
            unknown_sessions: 1,
            unknown_credentials: 1,
            unknown_owners: 1,
            bot_deletions_without_credential_deletes: 1,
            wildcard_sites: 2,
            credential_metadata: 2,
            device_drops: 0,
            usage_spikes: 0,
        }
    }

    /// No anomaly at all.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    fn counts(&self) -> [(&'static str, usize); 15] {
        [
            ("scenarios.rotations", self.rotations),
            ("scenarios.bot_deactivations", self.bot_deactivations),
            ("scenarios.bot_deletions", self.bot_deletions),
            ("scenarios.hostname_reuses", self.hostname_reuses),
            ("scenarios.acl_violations", self.acl_violations),
            ("scenarios.principal_mismatches", self.principal_mismatches),
            ("scenarios.unknown_hostnames", self.unknown_hostnames),
            ("scenarios.unknown_sessions", self.unknown_sessions),
            ("scenarios.unknown_credentials", self.unknown_credentials),
            ("scenarios.unknown_owners", self.unknown_owners),
            (
                "scenarios.bot_deletions_without_credential_deletes",
                self.bot_deletions_without_credential_deletes,
            ),
            ("scenarios.wildcard_sites", self.wildcard_sites),
            ("scenarios.credential_metadata", self.credential_metadata),
            ("scenarios.device_drops", self.device_drops),
            ("scenarios.usage_spikes", self.usage_spikes),
        ]
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            users: 3,
            bot_users: 3,
            credentials_per_owner: 1,
            sessions_per_credential: 2,
            endpoints_per_session: 2,
            traffic_events: 1_000,
            start: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("a valid date"),
            duration_hours: 6,
            scenarios: Scenarios::default(),
            late_control: 0,
            record_events: None,
        }
    }
}

/// A config value that cannot be generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field (or combination of fields) at fault.
    pub field: &'static str,
    /// The value found.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid fleet config: {} = {}: {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl FleetConfig {
    /// The default fleet with [`Scenarios::standard`] anomalies (and no late control).
    pub fn with_anomalies() -> Self {
        Self {
            scenarios: Scenarios::standard(),
            ..Self::default()
        }
    }

    /// Whether the ground truth lists every traffic event's expected outcome.
    pub fn records_events(&self) -> bool {
        self.record_events
            .unwrap_or(self.traffic_events <= RECORD_EVENTS_UP_TO)
    }

    /// Owners: users plus bot users.
    pub fn owners(&self) -> usize {
        self.users + self.bot_users
    }

    /// Endpoints the fleet will have: owners × credentials_per_owner × 2 (authtokens and SSH
    /// keys) × sessions_per_credential × endpoints_per_session (saturating).
    pub fn endpoints(&self) -> u64 {
        [
            self.owners(),
            self.credentials_per_owner,
            2,
            self.sessions_per_credential,
            self.endpoints_per_session,
        ]
        .into_iter()
        .fold(1u64, |acc, n| acc.saturating_mul(n as u64))
    }

    /// The window's end (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        self.start + chrono::Duration::hours(i64::from(self.duration_hours))
    }

    /// Checks every field, without generating anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, value: &dyn fmt::Display, reason: String| ConfigError {
            field,
            value: value.to_string(),
            reason,
        };
        for (field, value) in [("users", self.users), ("bot_users", self.bot_users)] {
            if value > MAX_OWNERS_PER_KIND {
                return Err(err(field, &value, format!("at most {MAX_OWNERS_PER_KIND}")));
            }
        }
        if self.owners() == 0 {
            return Err(err(
                "users + bot_users",
                &0,
                "a fleet needs at least one owner".into(),
            ));
        }
        for (field, value) in [
            ("credentials_per_owner", self.credentials_per_owner),
            ("sessions_per_credential", self.sessions_per_credential),
            ("endpoints_per_session", self.endpoints_per_session),
        ] {
            if !(1..=MAX_FAN_OUT).contains(&value) {
                return Err(err(field, &value, format!("expected 1..={MAX_FAN_OUT}")));
            }
        }
        let endpoints = self.endpoints();
        if endpoints > MAX_ENDPOINTS {
            return Err(err(
                "endpoints_per_session",
                &self.endpoints_per_session,
                format!(
                    "owners ({}) × credentials_per_owner ({}) × 2 (authtokens and SSH keys) × \
                     sessions_per_credential ({}) × endpoints_per_session gives {endpoints} endpoints, \
                     more than the {MAX_ENDPOINTS} a fleet may have",
                    self.owners(),
                    self.credentials_per_owner,
                    self.sessions_per_credential,
                ),
            ));
        }
        if self.traffic_events > MAX_TRAFFIC_EVENTS {
            return Err(err(
                "traffic_events",
                &self.traffic_events,
                format!("at most {MAX_TRAFFIC_EVENTS} (the fleet is held in memory; publish several seeds for more)"),
            ));
        }
        if !(1..=MAX_DURATION_HOURS).contains(&self.duration_hours) {
            return Err(err(
                "duration_hours",
                &self.duration_hours,
                format!("expected 1..={MAX_DURATION_HOURS}"),
            ));
        }
        for (field, value) in self
            .scenarios
            .counts()
            .into_iter()
            .chain([("late_control", self.late_control)])
        {
            if value > MAX_SCENARIOS {
                return Err(err(field, &value, format!("at most {MAX_SCENARIOS}")));
            }
        }
        if !(1970..=9000).contains(&self.start.year()) {
            return Err(err(
                "start",
                &self.start.to_rfc3339(),
                "expected a year between 1970 and 9000".into(),
            ));
        }
        Ok(())
    }
}
