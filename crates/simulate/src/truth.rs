//! The ground truth of a simulated fleet: what botmeter must report once it has read every event.
//! Usage is counted per owner and per owner per UTC hour at the event's usage time, which is how
//! botmeter buckets ([`model::Event::usage_time`]): `conn.end_ts` for TCP connections,
//! `event_timestamp` for HTTP requests. Only connections carry bytes; HTTP body sizes are never
//! added to them.
//!
//! Every traffic event either attributes to an owner (possibly with flags: `credential_deleted`,
//! `owner_inactive`, `owner_deleted`, `acl_violation`, `principal_mismatch`, in that order) or is
//! unattributed with the missing link (`no_endpoint`, `unknown_session`, `unknown_credential`,
//! `unknown_owner`). Owners' usage and hours count attributed usage only, flagged included;
//! [`GroundTruth::unattributed`] holds the rest, and [`GroundTruth::totals`] is all of it.
//!
//! Attributed usage is also grouped by credential metadata ([`GroundTruth::by_metadata`],
//! [`OwnerTruth::by_metadata`]): for each of [`METADATA_KEYS`], by the value the event's
//! credential's metadata had under that key at the event's time, [`NO_METADATA_VALUE`] when it
//! had none.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use model::OwnerKind;
use serde::{Deserialize, Serialize};

/// The credential metadata keys the truth groups attributed usage by.
pub const METADATA_KEYS: [&str; 4] = ["device_id", "environment", "site", "team"];

/// The group of usage whose credential's metadata, at the event's time, had no value under the
/// key: no metadata, metadata that is not a JSON object, or an object without the key.
pub const NO_METADATA_VALUE: &str = "(none)";

/// Usage per metadata key, per value (or [`NO_METADATA_VALUE`]).
pub type MetadataUsage = BTreeMap<String, BTreeMap<String, Usage>>;

/// What a credential's metadata (ngrok's `metadata`, a JSON object in a string) holds under
/// each of [`METADATA_KEYS`]: the string there, else [`NO_METADATA_VALUE`]. The simulator only
/// writes string values.
pub fn metadata_values(metadata: &str) -> [String; METADATA_KEYS.len()] {
    let object = serde_json::from_str::<serde_json::Value>(metadata).ok();
    METADATA_KEYS.map(|key| {
        object
            .as_ref()
            .and_then(|o| o.get(key))
            .and_then(serde_json::Value::as_str)
            .unwrap_or(NO_METADATA_VALUE)
            .to_owned()
    })
}

/// Adds `usage` under each key's value (allocating only for a key or value not seen yet: this
/// runs for every attributed event).
fn add_by_metadata(groups: &mut MetadataUsage, values: &[String], usage: &Usage) {
    for (key, value) in METADATA_KEYS.iter().zip(values) {
        if !groups.contains_key(*key) {
            groups.insert((*key).to_owned(), BTreeMap::new());
        }
        let by_value = groups.get_mut(*key).expect("inserted above");
        match by_value.get_mut(value.as_str()) {
            Some(sum) => sum.add(usage),
            None => {
                by_value.insert(value.clone(), *usage);
            }
        }
    }
}

/// Usage metrics for one owner, in total or in one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Sum of `conn.bytes_in` over `tcp_connection_closed.v0`.
    pub bytes_in: u64,
    /// Sum of `conn.bytes_out` over `tcp_connection_closed.v0`.
    pub bytes_out: u64,
    /// Count of `http_request_complete.v0`.
    pub http_requests: u64,
    /// Count of `tcp_connection_closed.v0`.
    pub tcp_connections: u64,
}

impl Usage {
    /// Adds another usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.http_requests += other.http_requests;
        self.tcp_connections += other.tcp_connections;
    }

    /// One closed TCP connection.
    pub fn tcp(bytes_in: u64, bytes_out: u64) -> Self {
        Self {
            bytes_in,
            bytes_out,
            tcp_connections: 1,
            ..Self::default()
        }
    }

    /// One HTTP request.
    pub fn http() -> Self {
        Self {
            http_requests: 1,
            ..Self::default()
        }
    }
}

/// Everything known about one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerTruth {
    /// `user` or `bot_user`.
    pub owner_kind: OwnerKind,
    /// Traffic attributed to the owner over the whole window, flagged usage included.
    #[serde(flatten)]
    pub usage: Usage,
    /// Per flag (`credential_deleted`, `owner_inactive`, `owner_deleted`, `acl_violation`,
    /// `principal_mismatch`), the part of `usage` carrying it; an event with two flags counts
    /// under both. Only flags that occurred.
    #[serde(default)]
    pub flagged: BTreeMap<String, Usage>,
    /// Generic audit events (`domain_created.v0`, …) whose principal is this owner.
    pub audit_events: u64,
    /// Credentials owned (all three kinds), as announced by `*_created.v0`.
    pub credentials: u64,
    /// Agent sessions started with the owner's announced credentials.
    pub agent_sessions: u64,
    /// Endpoints served by those sessions (each `endpoint_created.v0`; an endpoint that came back
    /// on the same address after a rotation counts again).
    pub endpoints: u64,
    /// `usage` grouped by credential metadata as [`GroundTruth::by_metadata`] is: per key of
    /// [`METADATA_KEYS`], per value; each key's values sum to `usage`. Empty without usage.
    #[serde(default)]
    pub by_metadata: MetadataUsage,
}

/// What botmeter must conclude about one traffic event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExpectedEvent {
    /// The owner it attributes to; `None` when unattributed.
    pub owner_id: Option<String>,
    /// Why it is unattributed (`no_endpoint`, `unknown_session`, `unknown_credential`,
    /// `unknown_owner`); `None` when attributed.
    pub unattributed_reason: Option<String>,
    /// Flags of attributed usage, in botmeter's order: `credential_deleted`, `owner_inactive`,
    /// `owner_deleted`, `acl_violation`, `principal_mismatch`. Empty when unattributed.
    /// `credential_deleted` once the credential was deleted or its bot user was (deleting a bot
    /// user revokes its credentials, whether or not their `*_deleted.v0` are published).
    pub flags: Vec<String>,
    /// The endpoint that served the event at its time (`ep_…`): the one with its hostname (and
    /// port), else the wildcard covering it with the longest suffix. `None` for `no_endpoint`.
    #[serde(default)]
    pub endpoint_id: Option<String>,
    /// The credential of that endpoint's agent session; `None` when there is no endpoint or the
    /// session was never announced (`unknown_session`). Set for `unknown_credential`, which
    /// names it.
    #[serde(default)]
    pub credential_id: Option<String>,
    /// Its metrics.
    #[serde(flatten)]
    pub usage: Usage,
    /// Its usage time (`event_timestamp`, `conn.end_ts` for a connection), as recorded in
    /// [`GroundTruth::events`]; what [`GroundTruth::expected_alerts`] places it in time by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_time: Option<DateTime<Utc>>,
}

impl ExpectedEvent {
    /// Unattributed for `reason`, with no link found.
    pub(crate) fn unattributed(reason: &str, usage: Usage) -> Self {
        Self {
            unattributed_reason: Some(reason.to_owned()),
            usage,
            ..Self::default()
        }
    }
}

/// How many of each thing the fleet has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Inventory {
    /// Users (`usr_…`).
    pub users: u64,
    /// Bot users (`bot_…`).
    pub bot_users: u64,
    /// Credentials of all kinds.
    pub credentials: u64,
    /// Agent sessions.
    pub agent_sessions: u64,
    /// Endpoints.
    pub endpoints: u64,
    /// Generic audit events.
    pub audit_events: u64,
}

/// What botmeter must report for a fleet. Written as JSON next to a published fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// The seed the fleet was generated from.
    pub seed: u64,
    /// The account every event carries (`ac_…`).
    pub account_id: String,
    /// Start of the window.
    pub window_start: DateTime<Utc>,
    /// End of the window (exclusive): every event's time is before it.
    pub window_end: DateTime<Utc>,
    /// Control plus traffic events.
    pub total_events: u64,
    /// Events for the control topic.
    pub control_events: u64,
    /// Events for the traffic topic.
    pub traffic_events: u64,
    /// Entity counts, of what the control events announce.
    pub inventory: Inventory,
    /// Usage of all traffic, attributed or not.
    pub totals: Usage,
    /// Per announced owner id, every owner (with zeros when it had no traffic); attributed usage.
    pub owners: BTreeMap<String, OwnerTruth>,
    /// Per owner id, per UTC hour start (`2026-01-01T05:00:00Z`), only hours with attributed usage.
    pub hourly: BTreeMap<String, BTreeMap<String, Usage>>,
    /// Per unattributed reason (`no_endpoint`, …), the usage no owner gets. Only reasons that
    /// occurred.
    #[serde(default)]
    pub unattributed: BTreeMap<String, Usage>,
    /// Attributed usage (flagged included) per credential metadata key of [`METADATA_KEYS`]
    /// (`device_id`, `environment`, `site`, `team`), per value the key had in the event's
    /// credential's metadata **at the event's time** (a `*_updated.v0` moves later usage to the
    /// new value), [`NO_METADATA_VALUE`] (`(none)`) when it had none. Each key's values sum to
    /// the attributed usage; every key is present once anything is attributed.
    #[serde(default)]
    pub by_metadata: MetadataUsage,
    /// Per traffic `event_id`, what botmeter must conclude about it. Empty when not recorded
    /// ([`FleetConfig::record_events`](super::FleetConfig::record_events); by default recorded for
    /// fleets of at most 200,000 traffic events).
    #[serde(default)]
    pub events: BTreeMap<String, ExpectedEvent>,
    /// Per announced authtoken and SSH key, what the fleet status reads: owner, creation,
    /// revocation, agent sessions and, when events are recorded, its attributed traffic's usage
    /// times. [`GroundTruth::fleet_at`] gives the expected `/v1/fleet` at any instant.
    #[serde(default)]
    pub fleet: BTreeMap<String, FleetCredential>,
}

/// One authtoken or SSH key as the fleet status sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetCredential {
    /// Its owner.
    pub owner_id: String,
    /// `authtoken` or `ssh_key`.
    pub kind: String,
    /// Its `*_created.v0`.
    pub created_at: DateTime<Utc>,
    /// Its deletion or its bot user's, whichever came first.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Its announced agent sessions.
    pub sessions: Vec<FleetSession>,
    /// Usage times of the traffic attributed to it (any order); empty unless events are
    /// recorded.
    #[serde(default)]
    pub traffic: Vec<DateTime<Utc>>,
}

/// One agent session of a [`FleetCredential`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSession {
    /// Its id (`ts_…`).
    pub session_id: String,
    /// Its `agent_session_start.v0`.
    pub started_at: DateTime<Utc>,
    /// Its `agent_session_stop.v0`, if any.
    pub stopped_at: Option<DateTime<Utc>>,
    /// What its start event says.
    pub region: String,
    /// What its start event says.
    pub os: String,
    /// What its start event says.
    pub user_agent: String,
    /// The endpoints it served: (created, deleted).
    pub endpoints: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

/// The UTC hour an instant falls in, as its RFC 3339 start: `2026-01-01T05:00:00Z`.
pub fn hour_bucket(t: DateTime<Utc>) -> String {
    let hour = t
        .with_nanosecond(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_minute(0))
        .expect("truncating to the hour is always valid in UTC");
    hour.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl GroundTruth {
    /// Counts one traffic event: on its owner (and each flag) when attributed, on its reason when
    /// not, always in the totals; and lists it when `record` is set. `metadata` is what its
    /// credential's metadata held under each of [`METADATA_KEYS`] at `at` (attributed events).
    pub(crate) fn record(
        &mut self,
        event_id: &str,
        at: DateTime<Utc>,
        mut outcome: ExpectedEvent,
        metadata: Option<&[String]>,
        record: bool,
    ) {
        outcome.usage_time = Some(at);
        let usage = outcome.usage;
        self.totals.add(&usage);
        match (&outcome.owner_id, &outcome.unattributed_reason) {
            (Some(owner), None) => {
                let entry = self
                    .owners
                    .get_mut(owner)
                    .expect("owner registered before its usage");
                entry.usage.add(&usage);
                for flag in &outcome.flags {
                    entry.flagged.entry(flag.clone()).or_default().add(&usage);
                }
                let metadata = metadata.expect("attributed usage has a credential");
                add_by_metadata(&mut entry.by_metadata, metadata, &usage);
                add_by_metadata(&mut self.by_metadata, metadata, &usage);
                self.hourly
                    .entry(owner.clone())
                    .or_default()
                    .entry(hour_bucket(at))
                    .or_default()
                    .add(&usage);
            }
            (None, Some(reason)) => self
                .unattributed
                .entry(reason.clone())
                .or_default()
                .add(&usage),
            other => unreachable!("an event is either attributed or unattributed, not {other:?}"),
        }
        if record {
            if let (Some(_), Some(credential)) = (&outcome.owner_id, &outcome.credential_id) {
                if let Some(fleet) = self.fleet.get_mut(credential) {
                    fleet.traffic.push(at);
                }
            }
            self.events.insert(event_id.to_owned(), outcome);
        }
    }

    /// Pretty JSON, the form written to a ground-truth file.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("ground truth serializes")
    }
}
