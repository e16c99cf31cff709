//! The fleet generator: plans an account (owners, credentials, agent sessions, endpoints, API
//! activity) from a seed, adds the configured anomalies ([`Scenarios`](super::Scenarios)), then
//! renders it as ngrok-format events plus the ground truth they imply.
//!
//! Guarantees, each checked by a test:
//! - the same [`FleetConfig`] gives byte-identical messages (ChaCha8, no float maths, no map
//!   iteration, no `usize` sampling, which is not portable); the anomalies draw from their own
//!   stream, so a fleet without them is the same as before they existed;
//! - every message decodes with [`model::decode`];
//! - the control messages are in time order, and every link of a chain comes strictly after the
//!   one it needs: bot user → credential → agent session → endpoint → traffic on that endpoint;
//! - in a clean fleet every endpoint satisfies its credential's ACL bind rules, and no two live
//!   endpoints share an address (hostname for HTTPS, `host:port` for TCP);
//! - the ground truth says, for every traffic event, the owner botmeter must attribute it to, its
//!   flags, endpoint and credential, or why it cannot be attributed, and equals both the
//!   resolution rules re-applied by brute force to the decoded control events and what
//!   botmeter's resolver concludes from them (the tests replay them through
//!   `enrich::OwnershipState`);
//! - no traffic falls within [`GUARD_MS`] of a lifecycle boundary (a deletion, a deactivation, a
//!   metadata change, the end of a hostname's gap, an endpoint coming or going under a wildcard
//!   site's hostname), so that `<` against `<=` never decides an outcome.
//!
//! Structure: [`World::plan`] (in `plan.rs`) builds the clean account ([`World`], in
//! `world.rs`), `World::add_scenarios` (in `scenarios.rs`) edits it, then the world is emitted as
//! control events (`control.rs`), and traffic (`traffic.rs`) is drawn on its *targets*: each
//! endpoint during its life (wildcard endpoints aside), addresses with no endpoint (unknown
//! hostnames, a reused hostname's gap), and hostnames under wildcard endpoints, served by
//! whichever endpoint covers them best at each event's time (`wildcard_sites.rs`). Each traffic
//! event's expected outcome is read from the world at the event's time. The seeded draws they
//! share (ids, names, addresses) are in `draw.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use model::OwnerKind;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::FleetConfig;
use super::draw::ngrok_id;
use super::encode::{ts, Envelope, Principal};
use super::truth::{GroundTruth, Inventory, OwnerTruth, Usage};
use super::world::{Session, World};

/// Every simulated token starts with this, so a test can search storage and logs for leaks.
pub const TOKEN_MARKER: &str = "simtoken_";

/// No traffic is generated within this many milliseconds of a lifecycle boundary other than an
/// endpoint's creation (traffic may start 2 ms after that): a deletion, a (de)activation, the
/// end of a gap.
pub(super) const GUARD_MS: i64 = 5;

/// One Kafka message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// Message key: the owner id on the control topic; on the traffic topic the endpoint's
    /// address, i.e. the hostname for HTTPS endpoints and `host:port` for TCP endpoints (many TCP
    /// endpoints share `N.tcp.ngrok.io`).
    pub key: String,
    /// The event, ngrok-format JSON.
    pub payload: Vec<u8>,
    /// The event's time: `event_timestamp`, which for traffic is also its usage time
    /// (`conn.end_ts` of a connection). Used as the Kafka message timestamp.
    pub event_time: DateTime<Utc>,
}

/// A generated fleet: what to publish and what botmeter must conclude from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// Bot users, credentials, agent sessions, endpoints, their lifecycle and audit events, in
    /// time order.
    pub control: Vec<SimMessage>,
    /// HTTP requests and TCP connections, in time order.
    pub traffic: Vec<SimMessage>,
    /// Control events that reach the control topic only after the traffic that needs them (the
    /// late chains of [`FleetConfig::late_control`]), in time order. [`publish`](fn@super::publish)
    /// sends them last. Empty unless asked for.
    pub late_control: Vec<SimMessage>,
    /// Usage per owner and per owner per hour, and every traffic event's expected outcome.
    pub truth: GroundTruth,
}

/// Generates a fleet. Deterministic: the same config gives byte-identical messages.
///
/// # Panics
/// When `config.validate()` fails; validate first to report the error.
pub fn generate(config: &FleetConfig) -> Fleet {
    if let Err(err) = config.validate() {
        panic!("{err}");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut world = World::plan(config, &mut rng);
    // The anomalies draw from their own stream: a clean fleet is what it was before they existed.
    let mut scenario_rng = ChaCha8Rng::seed_from_u64(config.seed);
    scenario_rng.set_stream(1);
    world.add_scenarios(config, &mut scenario_rng);
    world.finalize_acls();
    world.render(
        config.seed,
        config.traffic_events,
        config.records_events(),
        &mut rng,
    )
}

impl World {
    /// Emits the control events and the traffic, and the ground truth they imply.
    pub(super) fn render(
        self,
        seed: u64,
        traffic_events: usize,
        record_events: bool,
        rng: &mut ChaCha8Rng,
    ) -> Fleet {
        let mut truth = self.empty_truth(seed);
        let (control, late_control) = self.control(rng);
        let traffic = self.traffic(traffic_events, record_events, rng, &mut truth);
        truth.control_events = (control.len() + late_control.len()) as u64;
        truth.traffic_events = traffic.len() as u64;
        truth.total_events = truth.control_events + truth.traffic_events;
        Fleet {
            control,
            traffic,
            late_control,
            truth,
        }
    }

    fn empty_truth(&self, seed: u64) -> GroundTruth {
        let mut owners = BTreeMap::new();
        for owner in self.owners.iter().filter(|o| o.announced) {
            owners.insert(
                owner.id.clone(),
                OwnerTruth {
                    owner_kind: owner.kind,
                    usage: Usage::default(),
                    flagged: BTreeMap::new(),
                    audit_events: 0,
                    credentials: 0,
                    agent_sessions: 0,
                    endpoints: 0,
                    by_metadata: BTreeMap::new(),
                },
            );
        }
        // Counted on the owner botmeter resolves them to; links of broken chains on nobody.
        let mut entry = |owner: usize, count: fn(&mut OwnerTruth) -> &mut u64| {
            if let Some(truth) = owners.get_mut(&self.owners[owner].id) {
                *count(truth) += 1;
            }
        };
        let resolvable_session =
            |session: &Session| session.announced && self.credentials[session.credential].announced;
        for cred in self.credentials.iter().filter(|c| c.announced) {
            entry(cred.owner, |o| &mut o.credentials);
        }
        for session in self.sessions.iter().filter(|s| resolvable_session(s)) {
            entry(self.credentials[session.credential].owner, |o| {
                &mut o.agent_sessions
            });
        }
        for endpoint in &self.endpoints {
            let session = &self.sessions[endpoint.session];
            if resolvable_session(session) {
                entry(self.credentials[session.credential].owner, |o| {
                    &mut o.endpoints
                });
            }
        }
        for audit in &self.audits {
            entry(audit.owner, |o| &mut o.audit_events);
        }
        let count = |kind| {
            self.owners
                .iter()
                .filter(|o| o.kind == kind && o.announced)
                .count() as u64
        };
        GroundTruth {
            seed,
            account_id: self.account_id.clone(),
            window_start: self.start,
            window_end: self.end,
            total_events: 0,
            control_events: 0,
            traffic_events: 0,
            inventory: Inventory {
                users: count(OwnerKind::User),
                bot_users: count(OwnerKind::BotUser),
                credentials: self.credentials.iter().filter(|c| c.announced).count() as u64,
                agent_sessions: self.sessions.iter().filter(|s| s.announced).count() as u64,
                endpoints: self.endpoints.len() as u64,
                audit_events: self.audits.len() as u64,
            },
            totals: Usage::default(),
            owners,
            hourly: BTreeMap::new(),
            unattributed: BTreeMap::new(),
            by_metadata: BTreeMap::new(),
            events: BTreeMap::new(),
            fleet: self.fleet_truth(),
        }
    }

    /// The ngrok envelope of one event of the account, with a fresh event id.
    pub(super) fn envelope<'a, O>(
        &'a self,
        rng: &mut ChaCha8Rng,
        event_type: &'a str,
        at: DateTime<Utc>,
        principal: Option<Principal<'a>>,
        object: O,
    ) -> Envelope<'a, O> {
        Envelope {
            event_id: ngrok_id(rng, "ev_"),
            event_type,
            event_timestamp: ts(at),
            account_id: &self.account_id,
            principal,
            object,
        }
    }
}
