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
//! - the ground truth says, for every traffic event, the owner botmeter must attribute it to and
//!   its flags, or why it cannot be attributed, and equals what botmeter's resolver concludes
//!   from the decoded events (the tests replay them through `enrich::OwnershipState`);
//! - no traffic falls within [`GUARD_MS`] of a lifecycle boundary (a deletion, a deactivation, the
//!   end of a hostname's gap), so that `<` against `<=` never decides an outcome.
//!
//! Structure: [`World::plan`] builds the clean account, `World::add_scenarios` (in
//! `scenarios.rs`) edits it, then the world is emitted as control events, and traffic is drawn
//! on its *targets*: each endpoint during its life, and addresses with no endpoint (unknown
//! hostnames, a reused hostname's gap). Each traffic event's expected outcome is read from the
//! world at the event's time.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use model::{BindRule, CredentialKind, OwnerKind};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::FleetConfig;
use super::encode::{self, ts, Envelope, Principal, Ref};
use super::truth::{ExpectedEvent, GroundTruth, Inventory, OwnerTruth, Usage};

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

// ---------------------------------------------------------------------------------------------
// The plan.

const REGIONS: &[&str] = &["us", "eu", "ap", "au", "sa", "jp", "in"];
pub(super) const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly",
    "keen", "lucky", "misty", "noble", "odd", "proud", "quiet", "rapid", "shy", "tidy", "upbeat",
    "vivid", "witty", "young", "zesty",
];
pub(super) const NOUNS: &[&str] = &[
    "otter", "falcon", "maple", "harbor", "comet", "badger", "cedar", "delta", "ember", "fjord",
    "glacier", "heron", "island", "jaguar", "kestrel", "lagoon", "meadow", "nebula", "orchid",
    "pebble", "quartz", "raven", "summit", "tundra", "willow",
];
pub(super) const BOT_PURPOSES: &[&str] = &[
    "ci",
    "deployer",
    "monitor",
    "webhook",
    "ingest",
    "backup",
    "preview",
    "iot-gateway",
    "scraper",
    "billing",
];
const FIRST_NAMES: &[&str] = &[
    "ada", "bob", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo",
];
const TEAMS: &[&str] = &["platform", "payments", "growth", "infra", "data", "mobile"];
const OSES: &[(&str, &str)] = &[
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "arm64"),
    ("windows", "amd64"),
];
const AGENT_VERSIONS: &[&str] = &[
    "ngrok/3.18.4",
    "ngrok/3.22.1",
    "ngrok-go/1.12.0",
    "ngrok-rust/0.15.0",
];
const HTTP_PATHS: &[&str] = &[
    "/",
    "/api/v1/items",
    "/api/v1/orders",
    "/health",
    "/webhooks/github",
    "/static/app.js",
    "/login",
    "/graphql",
];
const USER_AGENTS: &[&str] = &[
    "curl/8.5.0",
    "Mozilla/5.0",
    "GitHub-Hookshot/7a1b2c3",
    "python-requests/2.32",
    "Go-http-client/2.0",
];
const SERVER_IPS: &[&str] = &[
    "3.20.27.198",
    "3.134.73.173",
    "18.158.249.75",
    "52.28.187.118",
    "13.228.71.132",
];

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
    /// Whether its creation is published late (in [`Fleet::late_control`]).
    pub(super) late: bool,
    /// `(since, active)` changes after creation, in time order (`bot_user_updated.v0`).
    pub(super) active_changes: Vec<(DateTime<Utc>, bool)>,
    /// When the bot user was deleted (`bot_user_deleted.v0`).
    pub(super) deleted_at: Option<DateTime<Utc>>,
}

impl Owner {
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
    pub(super) metadata: String,
    pub(super) acl_mode: AclMode,
    /// Subdomain label for [`AclMode::Wildcard`].
    pub(super) slug: String,
    pub(super) acl: Vec<String>,
    /// Whether a `*_created.v0` announces it (the missing link of an `unknown_credential` chain).
    pub(super) announced: bool,
    /// Whether its creation is published late.
    pub(super) late: bool,
    /// When it was deleted (`*_deleted.v0`): rotated away, or revoked with its bot user.
    pub(super) deleted_at: Option<DateTime<Utc>>,
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

/// The traffic message key: what identifies an endpoint among live ones, the hostname for HTTPS
/// and `host:port` for TCP.
fn address(scheme: Scheme, host: &str, port: u16) -> String {
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
}

/// Traffic the scenarios need, generated before the random traffic.
#[derive(Debug, Clone, Copy)]
pub(super) enum Probe {
    /// One event in each phase of the target's life (between consecutive boundaries).
    Phases(Target),
    /// One event at this time.
    At(Target, DateTime<Utc>),
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
    pub(super) probes: Vec<Probe>,
    pub(super) audits: Vec<Audit>,
    pub(super) client_ips: Vec<String>,
    /// TCP addresses in use (`N.tcp.ngrok.io`, port).
    pub(super) tcp_addresses: HashSet<(u32, u16)>,
}

/// Random ngrok-style id: prefix plus 27 base62 characters (the length of ngrok's KSUID ids).
pub(super) fn ngrok_id(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 27);
    id.push_str(prefix);
    push_base62(rng, &mut id, 27);
    id
}

fn push_base62(rng: &mut ChaCha8Rng, out: &mut String, len: usize) {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..len {
        out.push(char::from(ALPHABET[(rng.next_u32() % 62) as usize]));
    }
}

/// A uniformly chosen element (sampling a `u32`, which is portable; `usize` is not).
pub(super) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len() as u32) as usize]
}

/// [`pick`] for string lists, where auto-deref would otherwise confuse inference.
pub(super) fn pick_str(rng: &mut ChaCha8Rng, items: &[&'static str]) -> &'static str {
    items[rng.gen_range(0..items.len() as u32) as usize]
}

/// `t` plus 1..=`step_ms` milliseconds: strictly after `t`.
pub(super) fn after(rng: &mut ChaCha8Rng, t: DateTime<Utc>, step_ms: i64) -> DateTime<Utc> {
    t + Duration::milliseconds(rng.gen_range(1..=step_ms))
}

/// A number with `1..=max_digits` digits, uniform in its decade: a log-uniform size without floats.
fn log_uniform(rng: &mut ChaCha8Rng, min_digits: u32, max_digits: u32) -> u64 {
    let digits = rng.gen_range(min_digits..=max_digits);
    let low = 10u64.pow(digits - 1);
    rng.gen_range(low..low * 10)
}

/// An endpoint's share of the traffic: mostly light endpoints, a few heavy ones, so that a
/// top-owners report has something to rank.
pub(super) fn endpoint_weight(rng: &mut ChaCha8Rng) -> u32 {
    match rng.gen_range(0..10u32) {
        0 => rng.gen_range(50..=200),
        1..=3 => rng.gen_range(10..50),
        _ => rng.gen_range(1..10),
    }
}

/// The 256 client addresses traffic comes from (one in eight IPv6).
pub(super) fn client_ips(rng: &mut ChaCha8Rng) -> Vec<String> {
    (0..256)
        .map(|_| {
            if rng.gen_ratio(1, 8) {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    rng.next_u32() & 0xffff,
                    rng.next_u32() & 0xffff,
                    rng.next_u32() & 0xffff
                )
            } else {
                format!(
                    "{}.{}.{}.{}",
                    rng.gen_range(1..=223u32),
                    rng.next_u32() % 256,
                    rng.next_u32() % 256,
                    rng.gen_range(1..=254u32)
                )
            }
        })
        .collect()
}

impl World {
    fn plan(config: &FleetConfig, rng: &mut ChaCha8Rng) -> Self {
        let start = config
            .start
            .duration_trunc(Duration::milliseconds(1))
            .unwrap_or(config.start);
        let end = start + Duration::hours(i64::from(config.duration_hours));
        // Control events fall in the first tenth of the window, in four causal steps.
        let step_ms = ((end - start).num_milliseconds() / 10 / 4).max(1);

        let account_id = ngrok_id(rng, "ac_");
        let client_ips = client_ips(rng);

        let mut owners = Vec::with_capacity(config.owners());
        for i in 0..config.users {
            let id = ngrok_id(rng, "usr_");
            let subject = format!(
                "{}.{}{}@example.com",
                pick_str(rng, FIRST_NAMES),
                pick_str(rng, NOUNS),
                i + 1
            );
            owners.push(Owner::new(id, OwnerKind::User, subject, start, None));
        }
        for i in 0..config.bot_users {
            let id = ngrok_id(rng, "bot_");
            let subject = format!("{}-bot-{}", pick_str(rng, BOT_PURPOSES), i + 1);
            let created_at = start + Duration::milliseconds(rng.gen_range(0..step_ms));
            let created_by =
                (config.users > 0).then(|| rng.gen_range(0..config.users as u32) as usize);
            owners.push(Owner::new(
                id,
                OwnerKind::BotUser,
                subject,
                created_at,
                created_by,
            ));
        }

        let mut credentials = Vec::new();
        for (owner_index, owner) in owners.iter().enumerate() {
            for kind in [
                CredentialKind::Authtoken,
                CredentialKind::SshKey,
                CredentialKind::ApiKey,
            ] {
                for n in 0..config.credentials_per_owner {
                    let prefix = match kind {
                        CredentialKind::Authtoken => "cr_",
                        CredentialKind::SshKey => "sshcr_",
                        CredentialKind::ApiKey => "ak_",
                    };
                    let id = ngrok_id(rng, prefix);
                    let created_at = after(rng, owner.created_at, step_ms);
                    let created_by = match owner.kind {
                        OwnerKind::User => owner_index,
                        OwnerKind::BotUser => owner.created_by.unwrap_or(owner_index),
                    };
                    let description = match kind {
                        CredentialKind::Authtoken => {
                            format!("agent authtoken {} for {}", n + 1, owner.subject)
                        }
                        CredentialKind::SshKey => {
                            format!("ssh tunnel key {} for {}", n + 1, owner.subject)
                        }
                        CredentialKind::ApiKey => {
                            format!("api key {} for {}", n + 1, owner.subject)
                        }
                    };
                    let metadata = if rng.gen_bool(0.5) {
                        format!(r#"{{"team":"{}"}}"#, pick_str(rng, TEAMS))
                    } else {
                        String::new()
                    };
                    let acl_mode = if kind == CredentialKind::ApiKey {
                        AclMode::Open
                    } else {
                        match rng.gen_range(0..20u32) {
                            0..=7 => AclMode::Open,
                            8..=9 => AclMode::Star,
                            10..=14 => AclMode::Exact,
                            _ => AclMode::Wildcard,
                        }
                    };
                    let slug = format!("{}-{}", pick_str(rng, NOUNS), credentials.len() + 1);
                    credentials.push(Credential {
                        id,
                        kind,
                        owner: owner_index,
                        created_at,
                        created_by,
                        description,
                        metadata,
                        acl_mode,
                        slug,
                        acl: Vec::new(),
                        announced: true,
                        late: false,
                        deleted_at: None,
                    });
                }
            }
        }

        let mut sessions = Vec::new();
        for (cred_index, cred) in credentials.iter().enumerate() {
            if cred.kind == CredentialKind::ApiKey {
                continue; // API keys call the API; they never start agent sessions
            }
            for _ in 0..config.sessions_per_credential {
                let agent_ip = pick(rng, &client_ips).clone();
                let id = ngrok_id(rng, "ts_");
                let started_at = after(rng, cred.created_at, step_ms);
                sessions.push(Session::new(rng, agent_ip, id, cred_index, started_at));
            }
        }

        let mut endpoints = Vec::new();
        let mut tcp_addresses = HashSet::new();
        for (session_index, session) in sessions.iter().enumerate() {
            let cred = &credentials[session.credential];
            for _ in 0..config.endpoints_per_session {
                let number = endpoints.len() + 1;
                let scheme = if rng.gen_ratio(7, 10) {
                    Scheme::Https
                } else {
                    Scheme::Tcp
                };
                let (host, port) = match scheme {
                    Scheme::Https if cred.acl_mode == AclMode::Wildcard => (
                        format!(
                            "{}-{number}.{}.ngrok.app",
                            pick_str(rng, ADJECTIVES),
                            cred.slug
                        ),
                        443,
                    ),
                    Scheme::Https => (
                        format!(
                            "{}-{}-{number}.ngrok.app",
                            pick_str(rng, ADJECTIVES),
                            pick_str(rng, NOUNS)
                        ),
                        443,
                    ),
                    Scheme::Tcp => fresh_tcp_address(rng, &mut tcp_addresses),
                };
                let weight = endpoint_weight(rng);
                endpoints.push(Endpoint {
                    id: ngrok_id(rng, "ep_"),
                    session: session_index,
                    principal: cred.owner,
                    scheme,
                    url: url(scheme, &host, port),
                    host,
                    port,
                    created_at: after(rng, session.started_at, step_ms),
                    weight,
                    deleted_at: None,
                    acl_violation: false,
                    late: false,
                });
            }
        }

        // API activity: each bot's API keys create a few domains and IP policies; users' keys less.
        let mut audits = Vec::new();
        for (cred_index, cred) in credentials.iter().enumerate() {
            if cred.kind != CredentialKind::ApiKey {
                continue;
            }
            let count = match owners[cred.owner].kind {
                OwnerKind::BotUser => rng.gen_range(1..=3u32),
                OwnerKind::User => rng.gen_range(0..=1u32),
            };
            for _ in 0..count {
                let lo = cred.created_at + Duration::milliseconds(1);
                let at =
                    lo + Duration::milliseconds(rng.gen_range(0..(end - lo).num_milliseconds()));
                let kind = if rng.gen_ratio(3, 5) {
                    AuditKind::DomainCreated
                } else {
                    AuditKind::IpPolicyCreated
                };
                let object_id = match kind {
                    AuditKind::DomainCreated => ngrok_id(rng, "rd_"),
                    AuditKind::IpPolicyCreated => ngrok_id(rng, "ipp_"),
                };
                let domain = format!("{}-{}.example.com", pick_str(rng, NOUNS), audits.len() + 1);
                audits.push(Audit {
                    owner: cred.owner,
                    api_key: cred_index,
                    at,
                    kind,
                    object_id,
                    domain,
                });
            }
        }

        Self {
            account_id,
            start,
            end,
            step_ms,
            owners,
            credentials,
            sessions,
            endpoints,
            unbound: Vec::new(),
            probes: Vec::new(),
            audits,
            client_ips,
            tcp_addresses,
        }
    }

    /// Writes each credential's ACL from the endpoints its sessions serve, so that every endpoint
    /// satisfies its credential, except the deliberate ACL violations, which are then checked to
    /// violate.
    fn finalize_acls(&mut self) {
        for endpoint in &self.endpoints {
            let session = &self.sessions[endpoint.session];
            if endpoint.acl_violation || !session.announced {
                continue;
            }
            let cred = &mut self.credentials[session.credential];
            let rule = match (cred.acl_mode, endpoint.scheme) {
                (AclMode::Open | AclMode::Star, _) => None,
                (AclMode::Exact, Scheme::Https) => Some(format!("bind:{}", endpoint.host)),
                // A reused hostname outside the slug needs its own rule.
                (AclMode::Wildcard, Scheme::Https)
                    if endpoint
                        .host
                        .ends_with(&format!(".{}.ngrok.app", cred.slug)) =>
                {
                    Some(format!("bind:*.{}.ngrok.app", cred.slug))
                }
                (AclMode::Wildcard, Scheme::Https) => Some(format!("bind:{}", endpoint.host)),
                (AclMode::Exact | AclMode::Wildcard, Scheme::Tcp) => {
                    Some(format!("bind:{}:{}", endpoint.host, endpoint.port))
                }
            };
            if let Some(rule) = rule {
                if !cred.acl.contains(&rule) {
                    cred.acl.push(rule);
                }
            }
        }
        for cred in &mut self.credentials {
            if cred.acl_mode == AclMode::Star {
                cred.acl.push("*".to_owned());
            }
        }
        for endpoint in self.endpoints.iter().filter(|e| e.acl_violation) {
            let cred = &self.credentials[self.sessions[endpoint.session].credential];
            let rules = BindRule::parse_all(&cred.acl).expect("simulated ACLs parse");
            assert!(
                !BindRule::permits(
                    &rules,
                    &endpoint.host,
                    Some(endpoint.port),
                    &BTreeMap::new()
                ),
                "ACL violation {}:{} is allowed by {:?}",
                endpoint.host,
                endpoint.port,
                cred.acl
            );
        }
    }

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
            events: BTreeMap::new(),
        }
    }

    /// How `owner` appears as an envelope principal.
    fn principal(&self, owner: usize, credential: Option<Ref>) -> Principal<'_> {
        let o = &self.owners[owner];
        let source = if credential.is_some() {
            "API"
        } else {
            "Dashboard"
        };
        Principal {
            id: &o.id,
            subject: &o.subject,
            source,
            credential,
        }
    }

    /// The principal of a bot user's lifecycle events: the user that created it, if any.
    fn bot_principal(&self, bot: &Owner) -> Option<Principal<'_>> {
        bot.created_by.map(|user| self.principal(user, None))
    }

    fn envelope<'a, O>(
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

    // -----------------------------------------------------------------------------------------
    // Control plane.

    fn bot_object(owner: &Owner, active: bool) -> encode::BotUserObject<'_> {
        encode::BotUserObject {
            id: &owner.id,
            uri: format!("{}/bot_users/{}", encode::API, owner.id),
            name: &owner.subject,
            active,
            created_at: ts(owner.created_at),
        }
    }

    fn credential_object<'a>(
        &'a self,
        cred: &'a Credential,
        token: Option<String>,
        public_key: Option<String>,
    ) -> encode::CredentialObject<'a> {
        let collection = match cred.kind {
            CredentialKind::Authtoken => "credentials",
            CredentialKind::SshKey => "ssh_credentials",
            CredentialKind::ApiKey => "api_keys",
        };
        encode::CredentialObject {
            id: &cred.id,
            uri: format!("{}/{collection}/{}", encode::API, cred.id),
            created_at: ts(cred.created_at),
            description: &cred.description,
            metadata: &cred.metadata,
            token,
            public_key,
            acl: (cred.kind != CredentialKind::ApiKey).then_some(cred.acl.as_slice()),
            owner_id: &self.owners[cred.owner].id,
        }
    }

    fn session_object<'a>(
        &'a self,
        session: &'a Session,
        server_ip: &'a str,
        stopped_at: Option<DateTime<Utc>>,
    ) -> encode::AgentSessionObject<'a> {
        let cred = &self.credentials[session.credential];
        let collection = match cred.kind {
            CredentialKind::SshKey => "ssh_credentials",
            _ => "credentials",
        };
        encode::AgentSessionObject {
            session: Ref::new(&session.id, "tunnel_sessions"),
            credential: Ref::new(&cred.id, collection),
            agent_ip: &session.agent_ip,
            ingress_server_ip: server_ip,
            region: session.region,
            ingress_hostname: format!("connect.{}.ngrok-agent.com", session.region),
            user_agent: session.user_agent,
            metadata: "",
            os: session.os.0,
            arch: session.os.1,
            transport: if cred.kind == CredentialKind::SshKey {
                "ssh"
            } else {
                "ngrok/2"
            },
            started_at: ts(session.started_at),
            stopped_at: stopped_at.map(ts),
        }
    }

    fn endpoint_object<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        updated_at: DateTime<Utc>,
    ) -> encode::EndpointObject<'a> {
        let session = &self.sessions[endpoint.session];
        let principal = &self.owners[endpoint.principal];
        let (proto, scheme, upstream) = match endpoint.scheme {
            Scheme::Https => ("https", "https", "http://localhost:8080"),
            Scheme::Tcp => ("tcp", "tcp", "tcp://localhost:22"),
        };
        encode::EndpointObject {
            id: &endpoint.id,
            uri: format!("{}/endpoints/{}", encode::API, endpoint.id),
            region: session.region,
            created_at: ts(endpoint.created_at),
            updated_at: ts(updated_at),
            public_url: &endpoint.url,
            url: &endpoint.url,
            proto,
            scheme,
            hostport: format!("{}:{}", endpoint.host, endpoint.port),
            host: &endpoint.host,
            port: endpoint.port,
            kind: "ephemeral",
            metadata: "",
            description: "",
            upstream_url: upstream,
            tunnel_session: Ref::new(&session.id, "tunnel_sessions"),
            principal: Ref::new(
                &principal.id,
                if principal.kind == OwnerKind::BotUser {
                    "bot_users"
                } else {
                    "users"
                },
            ),
        }
    }

    /// The control events, and apart from them the late ones, each in time order.
    fn control(&self, rng: &mut ChaCha8Rng) -> (Vec<SimMessage>, Vec<SimMessage>) {
        let mut out = Vec::with_capacity(
            self.owners.len()
                + self.credentials.len()
                + self.sessions.len()
                + self.endpoints.len()
                + self.audits.len(),
        );
        let mut late = Vec::new();
        let mut push = |is_late: bool, key: &str, at: DateTime<Utc>, payload: Vec<u8>| {
            let message = SimMessage {
                key: key.to_owned(),
                payload,
                event_time: at,
            };
            if is_late {
                late.push(message);
            } else {
                out.push(message);
            }
        };

        let bots = || {
            self.owners
                .iter()
                .filter(|o| o.kind == OwnerKind::BotUser && o.announced)
        };
        for owner in bots() {
            let object = Self::bot_object(owner, true);
            let env = self.envelope(
                rng,
                "bot_user_created.v0",
                owner.created_at,
                self.bot_principal(owner),
                object,
            );
            push(
                owner.late,
                &owner.id,
                owner.created_at,
                encode::to_bytes(&env),
            );
        }

        for cred in self.credentials.iter().filter(|c| c.announced) {
            let owner = &self.owners[cred.owner];
            let event_type = match cred.kind {
                CredentialKind::Authtoken => "tunnel_credential_created.v0",
                CredentialKind::SshKey => "ssh_public_key_created.v0",
                CredentialKind::ApiKey => "api_key_created.v0",
            };
            let token = (cred.kind != CredentialKind::SshKey).then(|| {
                let mut token = String::from(TOKEN_MARKER);
                push_base62(rng, &mut token, 40);
                token
            });
            let public_key = (cred.kind == CredentialKind::SshKey).then(|| {
                let mut key = String::from("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI");
                push_base62(rng, &mut key, 43);
                key.push(' ');
                key.push_str(&owner.subject);
                key
            });
            let object = self.credential_object(cred, token, public_key);
            // A bot with no user to create its keys uses the API (ngrok: owner defaults to the caller).
            let principal = self.principal(cred.created_by, None);
            let env = self.envelope(rng, event_type, cred.created_at, Some(principal), object);
            push(
                cred.late,
                &owner.id,
                cred.created_at,
                encode::to_bytes(&env),
            );
        }

        // The ingress each session connected through, for its stop event too.
        let mut server_ips = vec![""; self.sessions.len()];
        for (index, session) in self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.announced)
        {
            let server_ip = pick_str(rng, SERVER_IPS);
            server_ips[index] = server_ip;
            let object = self.session_object(session, server_ip, None);
            let env = self.envelope(
                rng,
                "agent_session_start.v0",
                session.started_at,
                None,
                object,
            );
            let key = &self.owners[self.credentials[session.credential].owner].id;
            push(
                session.late,
                key,
                session.started_at,
                encode::to_bytes(&env),
            );
        }

        for endpoint in &self.endpoints {
            let object = self.endpoint_object(endpoint, endpoint.created_at);
            let env = self.envelope(
                rng,
                "endpoint_created.v0",
                endpoint.created_at,
                None,
                object,
            );
            push(
                endpoint.late,
                &self.owners[endpoint.principal].id,
                endpoint.created_at,
                encode::to_bytes(&env),
            );
        }

        for audit in &self.audits {
            let api_key = Ref::new(&self.credentials[audit.api_key].id, "api_keys");
            let principal = self.principal(audit.owner, Some(api_key));
            let payload = match audit.kind {
                AuditKind::DomainCreated => {
                    let object = encode::DomainObject {
                        id: &audit.object_id,
                        uri: format!("{}/reserved_domains/{}", encode::API, audit.object_id),
                        created_at: ts(audit.at),
                        description: "",
                        metadata: "",
                        domain: &audit.domain,
                        region: "",
                        cname_target: Some(format!(
                            "{}.cname.ngrok.app",
                            audit.object_id.to_ascii_lowercase()
                        )),
                    };
                    encode::to_bytes(&self.envelope(
                        rng,
                        "domain_created.v0",
                        audit.at,
                        Some(principal),
                        object,
                    ))
                }
                AuditKind::IpPolicyCreated => {
                    let object = encode::IpPolicyObject {
                        id: &audit.object_id,
                        uri: format!("{}/ip_policies/{}", encode::API, audit.object_id),
                        created_at: ts(audit.at),
                        description: "office network",
                        metadata: "",
                        action: "allow",
                    };
                    encode::to_bytes(&self.envelope(
                        rng,
                        "ip_policy_created.v0",
                        audit.at,
                        Some(principal),
                        object,
                    ))
                }
            };
            push(false, &self.owners[audit.owner].id, audit.at, payload);
        }

        // Lifecycle after creation: what the scenarios change (nothing in a clean fleet).
        for owner in bots() {
            for &(at, active) in &owner.active_changes {
                let object = Self::bot_object(owner, active);
                let env = self.envelope(
                    rng,
                    "bot_user_updated.v0",
                    at,
                    self.bot_principal(owner),
                    object,
                );
                push(false, &owner.id, at, encode::to_bytes(&env));
            }
            if let Some(at) = owner.deleted_at {
                let object = Self::bot_object(owner, owner.active_at(at));
                let env = self.envelope(
                    rng,
                    "bot_user_deleted.v0",
                    at,
                    self.bot_principal(owner),
                    object,
                );
                push(false, &owner.id, at, encode::to_bytes(&env));
            }
        }
        for cred in self.credentials.iter().filter(|c| c.announced) {
            if let Some(at) = cred.deleted_at {
                let event_type = match cred.kind {
                    CredentialKind::Authtoken => "tunnel_credential_deleted.v0",
                    CredentialKind::SshKey => "ssh_public_key_deleted.v0",
                    CredentialKind::ApiKey => "api_key_deleted.v0",
                };
                let object = self.credential_object(cred, None, None);
                let principal = self.principal(cred.created_by, None);
                let env = self.envelope(rng, event_type, at, Some(principal), object);
                push(
                    false,
                    &self.owners[cred.owner].id,
                    at,
                    encode::to_bytes(&env),
                );
            }
        }
        for (index, session) in self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.announced)
        {
            if let Some(at) = session.stopped_at {
                let object = self.session_object(session, server_ips[index], Some(at));
                let env = self.envelope(rng, "agent_session_stop.v0", at, None, object);
                let key = &self.owners[self.credentials[session.credential].owner].id;
                push(false, key, at, encode::to_bytes(&env));
            }
        }
        for endpoint in &self.endpoints {
            if let Some(at) = endpoint.deleted_at {
                let object = self.endpoint_object(endpoint, at);
                let env = self.envelope(rng, "endpoint_deleted.v0", at, None, object);
                push(
                    false,
                    &self.owners[endpoint.principal].id,
                    at,
                    encode::to_bytes(&env),
                );
            }
        }

        // Stable: equal times keep emission order, which is causal.
        out.sort_by_key(|m| m.event_time);
        late.sort_by_key(|m| m.event_time);
        (out, late)
    }

    // -----------------------------------------------------------------------------------------
    // Data plane.

    fn weight(&self, target: Target) -> u32 {
        match target {
            Target::Endpoint(index) => self.endpoints[index].weight,
            Target::Unbound(index) => self.unbound[index].weight,
        }
    }

    /// When traffic on the target may happen, `[lo, hi)`, and the instant its connections can
    /// have started from at the earliest.
    fn span(&self, target: Target) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
        match target {
            Target::Endpoint(index) => {
                let endpoint = &self.endpoints[index];
                // Strictly after the endpoint came up, before it goes or the window ends.
                let lo = endpoint.created_at + Duration::milliseconds(2);
                (
                    lo,
                    endpoint.deleted_at.unwrap_or(self.end),
                    endpoint.created_at,
                )
            }
            Target::Unbound(index) => {
                let unbound = &self.unbound[index];
                (
                    unbound.from + Duration::milliseconds(2),
                    unbound.to,
                    unbound.from,
                )
            }
        }
    }

    /// The instants around which no traffic on the target may fall: anything that changes its
    /// outcome (a deletion, a (de)activation, the ends of a gap).
    fn boundaries(&self, target: Target) -> Vec<DateTime<Utc>> {
        match target {
            Target::Endpoint(index) => {
                let endpoint = &self.endpoints[index];
                let cred = &self.credentials[self.sessions[endpoint.session].credential];
                let owner = &self.owners[cred.owner];
                let mut times: Vec<DateTime<Utc>> =
                    [endpoint.deleted_at, cred.deleted_at, owner.deleted_at]
                        .into_iter()
                        .flatten()
                        .chain(owner.active_changes.iter().map(|(at, _)| *at))
                        .collect();
                times.sort();
                times
            }
            Target::Unbound(index) => {
                let unbound = &self.unbound[index];
                if unbound.is_gap {
                    vec![unbound.from, unbound.to]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// A time in `[lo, hi)` at least [`GUARD_MS`] from every boundary. The scenarios keep their
    /// boundaries minutes apart, so this ends quickly.
    fn draw_time(
        rng: &mut ChaCha8Rng,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
        boundaries: &[DateTime<Utc>],
    ) -> DateTime<Utc> {
        let span = (hi - lo).num_milliseconds();
        assert!(span > 2 * GUARD_MS, "no room for traffic in [{lo}, {hi})");
        loop {
            let at = lo + Duration::milliseconds(rng.gen_range(0..span));
            if boundaries
                .iter()
                .all(|b| (at - *b).num_milliseconds().abs() >= GUARD_MS)
            {
                return at;
            }
        }
    }

    /// The probes as (target, time): one event in every phase of every scenario target, and the
    /// late chains' first events.
    fn probe_times(&self, rng: &mut ChaCha8Rng) -> Vec<(Target, DateTime<Utc>)> {
        let mut out = Vec::new();
        for probe in &self.probes {
            match *probe {
                Probe::At(target, at) => out.push((target, at)),
                Probe::Phases(target) => {
                    let (lo, hi, _) = self.span(target);
                    let boundaries = self.boundaries(target);
                    let mut cuts: Vec<DateTime<Utc>> = boundaries
                        .iter()
                        .copied()
                        .filter(|b| *b > lo && *b < hi)
                        .collect();
                    cuts.insert(0, lo);
                    cuts.push(hi);
                    for phase in cuts.windows(2) {
                        if (phase[1] - phase[0]).num_milliseconds() > 4 * GUARD_MS {
                            out.push((
                                target,
                                Self::draw_time(rng, phase[0], phase[1], &boundaries),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    fn traffic(
        &self,
        count: usize,
        record: bool,
        rng: &mut ChaCha8Rng,
        truth: &mut GroundTruth,
    ) -> Vec<SimMessage> {
        let mut out = Vec::with_capacity(count);
        if count == 0 {
            return out;
        }
        let targets: Vec<Target> = (0..self.endpoints.len())
            .map(Target::Endpoint)
            .chain((0..self.unbound.len()).map(Target::Unbound))
            .collect();
        let weights = WeightedIndex::new(targets.iter().map(|t| self.weight(*t)))
            .expect("validate() ensures endpoints");
        let boundaries: Vec<Vec<DateTime<Utc>>> =
            targets.iter().map(|t| self.boundaries(*t)).collect();
        // Every phase of every scenario first, so that each occurs however small the fleet.
        let probes = self.probe_times(rng);
        let forced = probes.len().min(count);
        for (target, at) in probes.into_iter().take(count) {
            out.push(self.traffic_event(rng, target, at, record, truth));
        }
        for _ in forced..count {
            let index = weights.sample(rng);
            let target = targets[index];
            let (lo, hi, _) = self.span(target);
            let at = Self::draw_time(rng, lo, hi, &boundaries[index]);
            out.push(self.traffic_event(rng, target, at, record, truth));
        }
        out.sort_by_key(|m| m.event_time);
        out
    }

    /// One HTTP request or TCP connection on `target` at `at`, counted in the truth.
    fn traffic_event(
        &self,
        rng: &mut ChaCha8Rng,
        target: Target,
        at: DateTime<Utc>,
        record: bool,
        truth: &mut GroundTruth,
    ) -> SimMessage {
        let (scheme, host, port) = match target {
            Target::Endpoint(index) => {
                let e = &self.endpoints[index];
                (e.scheme, e.host.as_str(), e.port)
            }
            Target::Unbound(index) => {
                let u = &self.unbound[index];
                (u.scheme, u.host.as_str(), u.port)
            }
        };
        let (_, _, up_since) = self.span(target);
        let since_up_ms = (at - up_since).num_milliseconds();
        let is_http = scheme == Scheme::Https && rng.gen_ratio(3, 4);
        let client_ip = pick(rng, &self.client_ips);
        let server_ip = pick_str(rng, SERVER_IPS);
        let (event_id, payload, usage) = if is_http {
            let latency_ms = rng.gen_range(0..since_up_ms.min(30_000));
            let method = match rng.gen_range(0..100u32) {
                0..=69 => "GET",
                70..=84 => "POST",
                85..=89 => "PUT",
                90..=92 => "DELETE",
                93..=95 => "HEAD",
                96..=97 => "PATCH",
                _ => "OPTIONS",
            };
            let status_code = match rng.gen_range(0..100u32) {
                0..=74 => 200,
                75..=79 => 201,
                80..=82 => 204,
                83..=84 => 301,
                85..=87 => 304,
                88..=89 => 400,
                90..=91 => 401,
                92..=95 => 404,
                96..=97 => 500,
                98 => 502,
                _ => 503,
            };
            let request_body = match method {
                "POST" | "PUT" | "PATCH" => log_uniform(rng, 2, 5),
                _ => 0,
            };
            let response_body = match (method, status_code) {
                ("HEAD", _) | (_, 204 | 304) => 0,
                _ => log_uniform(rng, 2, 7),
            };
            let object = encode::HttpObject {
                conn: encode::Conn {
                    bytes_in: None,
                    bytes_out: None,
                    client_ip,
                    end_ts: None,
                    server_ip,
                    server_name: host,
                    server_port: port,
                    start_ts: ts(at - Duration::milliseconds(latency_ms)),
                },
                http: encode::Http {
                    request: encode::HttpRequest {
                        body_length: request_body,
                        method,
                        url: encode::HttpUrl {
                            host,
                            path: pick_str(rng, HTTP_PATHS),
                            scheme: "https",
                        },
                        user_agent: pick_str(rng, USER_AGENTS),
                        version: "HTTP/2.0",
                    },
                    response: encode::HttpResponse {
                        body_length: response_body,
                        status_code,
                    },
                },
            };
            let env = self.envelope(rng, "http_request_complete.v0", at, None, object);
            (env.event_id.clone(), encode::to_bytes(&env), Usage::http())
        } else {
            let duration_ms = rng.gen_range(1..since_up_ms.min(600_000));
            let bytes_in = log_uniform(rng, 1, 5);
            let bytes_out = log_uniform(rng, 2, 7);
            let object = encode::TcpObject {
                conn: encode::Conn {
                    bytes_in: Some(bytes_in),
                    bytes_out: Some(bytes_out),
                    client_ip,
                    end_ts: Some(ts(at)),
                    server_ip,
                    server_name: host,
                    server_port: port,
                    start_ts: ts(at - Duration::milliseconds(duration_ms)),
                },
            };
            // event_timestamp = conn.end_ts: a connection is reported when it closes.
            let env = self.envelope(rng, "tcp_connection_closed.v0", at, None, object);
            (
                env.event_id.clone(),
                encode::to_bytes(&env),
                Usage::tcp(bytes_in, bytes_out),
            )
        };
        truth.record(&event_id, at, self.expected(target, at, usage), record);
        SimMessage {
            key: address(scheme, host, port),
            payload,
            event_time: at,
        }
    }

    /// What botmeter must conclude about traffic on `target` at `at`: the world as of `at`,
    /// link by link, then the flags in botmeter's order.
    fn expected(&self, target: Target, at: DateTime<Utc>, usage: Usage) -> ExpectedEvent {
        let unattributed = |reason: &str| ExpectedEvent {
            owner_id: None,
            unattributed_reason: Some(reason.to_owned()),
            flags: Vec::new(),
            usage,
        };
        let Target::Endpoint(index) = target else {
            return unattributed("no_endpoint");
        };
        let endpoint = &self.endpoints[index];
        let session = &self.sessions[endpoint.session];
        if !session.announced {
            return unattributed("unknown_session");
        }
        let cred = &self.credentials[session.credential];
        if !cred.announced {
            return unattributed("unknown_credential");
        }
        let owner = &self.owners[cred.owner];
        if !owner.announced {
            return unattributed("unknown_owner");
        }
        let mut flags = Vec::new();
        if cred.deleted_at.is_some_and(|deleted| deleted <= at) {
            flags.push("credential_deleted".to_owned());
        }
        if owner.deleted_at.is_some_and(|deleted| deleted <= at) {
            flags.push("owner_deleted".to_owned());
        } else if !owner.active_at(at) {
            flags.push("owner_inactive".to_owned());
        }
        if endpoint.acl_violation {
            flags.push("acl_violation".to_owned());
        }
        if endpoint.principal != cred.owner {
            flags.push("principal_mismatch".to_owned());
        }
        ExpectedEvent {
            owner_id: Some(owner.id.clone()),
            unattributed_reason: None,
            flags,
            usage,
        }
    }
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

/// `https://host` or `tcp://host:port`.
pub(super) fn url(scheme: Scheme, host: &str, port: u16) -> String {
    match scheme {
        Scheme::Https => format!("https://{host}"),
        Scheme::Tcp => format!("tcp://{host}:{port}"),
    }
}

/// An unused `N.tcp.ngrok.io:PORT` (9 hosts × 20,000 ports; validate() keeps fleets well below).
pub(super) fn fresh_tcp_address(
    rng: &mut ChaCha8Rng,
    used: &mut HashSet<(u32, u16)>,
) -> (String, u16) {
    loop {
        let address = (rng.gen_range(1..=9u32), rng.gen_range(10_000..30_000u16));
        if used.insert(address) {
            return (format!("{}.tcp.ngrok.io", address.0), address.1);
        }
    }
}

/// A fresh HTTPS hostname: `<adjective>-<noun>-<number>.ngrok.app`.
pub(super) fn https_host(rng: &mut ChaCha8Rng, number: usize) -> String {
    format!(
        "{}-{}-{number}.ngrok.app",
        pick_str(rng, ADJECTIVES),
        pick_str(rng, NOUNS)
    )
}
