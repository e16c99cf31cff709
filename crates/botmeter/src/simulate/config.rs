//! What a simulated fleet looks like: how many owners, credentials, sessions, endpoints and
//! traffic events, over which window, from which seed. [`FleetConfig::validate`] checks it purely,
//! before anything is generated, and names the field and the value it rejects.

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

/// The shape of a simulated ngrok account.
///
/// Every owner (user or bot user) gets `credentials_per_owner` credentials **of each kind**
/// (authtoken, SSH key, API key). Every authtoken and SSH key starts `sessions_per_credential`
/// agent sessions (API keys start none), and every session serves `endpoints_per_session`
/// endpoints. `traffic_events` HTTP requests and TCP connections are spread over those endpoints.
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
    /// Length of the window in hours. Control events fall in its first tenth, traffic anywhere
    /// after the endpoint it uses came up.
    pub duration_hours: u32,
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
            start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("a valid date"),
            duration_hours: 6,
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
        write!(f, "invalid fleet config: {} = {}: {}", self.field, self.value, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl FleetConfig {
    /// Owners: users plus bot users.
    pub fn owners(&self) -> usize {
        self.users + self.bot_users
    }

    /// Endpoints the fleet will have: owners × credentials_per_owner × 2 (authtokens and SSH
    /// keys) × sessions_per_credential × endpoints_per_session (saturating).
    pub fn endpoints(&self) -> u64 {
        [self.owners(), self.credentials_per_owner, 2, self.sessions_per_credential, self.endpoints_per_session]
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
            return Err(err("users + bot_users", &0, "a fleet needs at least one owner".into()));
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
            return Err(err("duration_hours", &self.duration_hours, format!("expected 1..={MAX_DURATION_HOURS}")));
        }
        if !(1970..=9000).contains(&self.start.year()) {
            return Err(err("start", &self.start.to_rfc3339(), "expected a year between 1970 and 9000".into()));
        }
        Ok(())
    }
}
