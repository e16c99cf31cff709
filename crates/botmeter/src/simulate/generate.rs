//! The fleet generator: plans an account (owners, credentials, agent sessions, endpoints, API
//! activity) from a seed, then renders it as ngrok-format events plus the ground truth they imply.
//!
//! Guarantees, each checked by a test:
//! - the same [`FleetConfig`] gives byte-identical messages (ChaCha8, no float maths, no map
//!   iteration, no `usize` sampling, which is not portable);
//! - every message decodes with [`model::decode`];
//! - the control messages are in time order, and every link of a chain comes strictly after the
//!   one it needs: bot user → credential → agent session → endpoint → traffic on that endpoint;
//! - every endpoint satisfies its credential's ACL bind rules, and every endpoint address is unique
//!   (hostname for HTTPS, `host:port` for TCP);
//! - the ground truth equals what the traffic messages say.
//!
//! Extending it: the generator first builds a [`World`] (the plan), then emits control events from
//! the world and traffic on its endpoints. A later scenario (hostname reuse, deleted credentials,
//! deactivated bots, quirky payloads, unknown hostnames…) is a step that edits the world before
//! emission or adds messages after it, and says in the ground truth what botmeter should make of it.

use std::collections::HashSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use model::{CredentialKind, OwnerKind};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::FleetConfig;
use super::encode::{self, ts, Envelope, Principal, Ref};
use super::truth::{GroundTruth, Inventory, OwnerTruth, Usage};

/// Every simulated token starts with this, so a test can search storage and logs for leaks.
pub const TOKEN_MARKER: &str = "simtoken_";

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
    /// Bot users, credentials, agent sessions, endpoints and audit events, in time order.
    pub control: Vec<SimMessage>,
    /// HTTP requests and TCP connections, in time order.
    pub traffic: Vec<SimMessage>,
    /// Usage per owner and per owner per hour.
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
    let world = World::plan(config, &mut rng);
    let mut truth = world.empty_truth(config.seed);
    let control = world.control(&mut rng);
    let traffic = world.traffic(config.traffic_events, &mut rng, &mut truth);
    truth.control_events = control.len() as u64;
    truth.traffic_events = traffic.len() as u64;
    truth.total_events = truth.control_events + truth.traffic_events;
    Fleet { control, traffic, truth }
}

// ---------------------------------------------------------------------------------------------
// The plan.

const REGIONS: &[&str] = &["us", "eu", "ap", "au", "sa", "jp", "in"];
const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly", "keen", "lucky", "misty",
    "noble", "odd", "proud", "quiet", "rapid", "shy", "tidy", "upbeat", "vivid", "witty", "young", "zesty",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "maple", "harbor", "comet", "badger", "cedar", "delta", "ember", "fjord", "glacier", "heron",
    "island", "jaguar", "kestrel", "lagoon", "meadow", "nebula", "orchid", "pebble", "quartz", "raven", "summit",
    "tundra", "willow",
];
const BOT_PURPOSES: &[&str] =
    &["ci", "deployer", "monitor", "webhook", "ingest", "backup", "preview", "iot-gateway", "scraper", "billing"];
const FIRST_NAMES: &[&str] = &["ada", "bob", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo"];
const TEAMS: &[&str] = &["platform", "payments", "growth", "infra", "data", "mobile"];
const OSES: &[(&str, &str)] = &[("linux", "amd64"), ("linux", "arm64"), ("darwin", "arm64"), ("windows", "amd64")];
const AGENT_VERSIONS: &[&str] = &["ngrok/3.18.4", "ngrok/3.22.1", "ngrok-go/1.12.0", "ngrok-rust/0.15.0"];
const HTTP_PATHS: &[&str] =
    &["/", "/api/v1/items", "/api/v1/orders", "/health", "/webhooks/github", "/static/app.js", "/login", "/graphql"];
const USER_AGENTS: &[&str] =
    &["curl/8.5.0", "Mozilla/5.0", "GitHub-Hookshot/7a1b2c3", "python-requests/2.32", "Go-http-client/2.0"];
const SERVER_IPS: &[&str] = &["3.20.27.198", "3.134.73.173", "18.158.249.75", "52.28.187.118", "13.228.71.132"];

#[derive(Debug)]
struct Owner {
    id: String,
    kind: OwnerKind,
    /// Email of a user, name of a bot user (ngrok's `principal.subject`).
    subject: String,
    /// When the owner exists from: a bot user's creation; the window start for users.
    created_at: DateTime<Utc>,
    /// Who created a bot user (a user on the dashboard), if anyone.
    created_by: Option<usize>,
}

/// How a tunnel credential or SSH key restricts what it may bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AclMode {
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
struct Credential {
    id: String,
    kind: CredentialKind,
    owner: usize,
    created_at: DateTime<Utc>,
    /// The owner that made it: the user itself, or for a bot a user on the dashboard (or the bot
    /// over the API when the fleet has no users).
    created_by: usize,
    description: String,
    metadata: String,
    acl_mode: AclMode,
    /// Subdomain label for [`AclMode::Wildcard`].
    slug: String,
    acl: Vec<String>,
}

#[derive(Debug)]
struct Session {
    id: String,
    credential: usize,
    started_at: DateTime<Utc>,
    agent_ip: String,
    region: &'static str,
    os: (&'static str, &'static str),
    user_agent: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Https,
    Tcp,
}

#[derive(Debug)]
struct Endpoint {
    id: String,
    session: usize,
    owner: usize,
    scheme: Scheme,
    host: String,
    port: u16,
    url: String,
    created_at: DateTime<Utc>,
    /// Relative share of the traffic.
    weight: u32,
}

impl Endpoint {
    /// The traffic message key: what identifies the endpoint among live ones.
    fn address(&self) -> String {
        match self.scheme {
            Scheme::Https => self.host.clone(),
            Scheme::Tcp => format!("{}:{}", self.host, self.port),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum AuditKind {
    DomainCreated,
    IpPolicyCreated,
}

#[derive(Debug)]
struct Audit {
    owner: usize,
    api_key: usize,
    at: DateTime<Utc>,
    kind: AuditKind,
    object_id: String,
    domain: String,
}

/// Everything in the simulated account, with the time each thing appears.
#[derive(Debug)]
struct World {
    account_id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    owners: Vec<Owner>,
    credentials: Vec<Credential>,
    sessions: Vec<Session>,
    endpoints: Vec<Endpoint>,
    audits: Vec<Audit>,
    client_ips: Vec<String>,
}

/// Random ngrok-style id: prefix plus 27 base62 characters (the length of ngrok's KSUID ids).
fn ngrok_id(rng: &mut ChaCha8Rng, prefix: &str) -> String {
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
fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len() as u32) as usize]
}

/// [`pick`] for string lists, where auto-deref would otherwise confuse inference.
fn pick_str(rng: &mut ChaCha8Rng, items: &[&'static str]) -> &'static str {
    items[rng.gen_range(0..items.len() as u32) as usize]
}

/// `t` plus 1..=`step_ms` milliseconds: strictly after `t`.
fn after(rng: &mut ChaCha8Rng, t: DateTime<Utc>, step_ms: i64) -> DateTime<Utc> {
    t + Duration::milliseconds(rng.gen_range(1..=step_ms))
}

/// A number with `1..=max_digits` digits, uniform in its decade: a log-uniform size without floats.
fn log_uniform(rng: &mut ChaCha8Rng, min_digits: u32, max_digits: u32) -> u64 {
    let digits = rng.gen_range(min_digits..=max_digits);
    let low = 10u64.pow(digits - 1);
    rng.gen_range(low..low * 10)
}

impl World {
    fn plan(config: &FleetConfig, rng: &mut ChaCha8Rng) -> Self {
        let start = config.start.duration_trunc(Duration::milliseconds(1)).unwrap_or(config.start);
        let end = start + Duration::hours(i64::from(config.duration_hours));
        // Control events fall in the first tenth of the window, in four causal steps.
        let step_ms = ((end - start).num_milliseconds() / 10 / 4).max(1);

        let account_id = ngrok_id(rng, "ac_");
        let client_ips: Vec<String> = (0..256)
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
            .collect();

        let mut owners = Vec::with_capacity(config.owners());
        for i in 0..config.users {
            let id = ngrok_id(rng, "usr_");
            let subject = format!("{}.{}{}@example.com", pick_str(rng, FIRST_NAMES), pick_str(rng, NOUNS), i + 1);
            owners.push(Owner { id, kind: OwnerKind::User, subject, created_at: start, created_by: None });
        }
        for i in 0..config.bot_users {
            let id = ngrok_id(rng, "bot_");
            let subject = format!("{}-bot-{}", pick_str(rng, BOT_PURPOSES), i + 1);
            let created_at = start + Duration::milliseconds(rng.gen_range(0..step_ms));
            let created_by = (config.users > 0).then(|| rng.gen_range(0..config.users as u32) as usize);
            owners.push(Owner { id, kind: OwnerKind::BotUser, subject, created_at, created_by });
        }

        let mut credentials = Vec::new();
        for (owner_index, owner) in owners.iter().enumerate() {
            for kind in [CredentialKind::Authtoken, CredentialKind::SshKey, CredentialKind::ApiKey] {
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
                        CredentialKind::Authtoken => format!("agent authtoken {} for {}", n + 1, owner.subject),
                        CredentialKind::SshKey => format!("ssh tunnel key {} for {}", n + 1, owner.subject),
                        CredentialKind::ApiKey => format!("api key {} for {}", n + 1, owner.subject),
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
                sessions.push(Session {
                    id: ngrok_id(rng, "ts_"),
                    credential: cred_index,
                    started_at: after(rng, cred.created_at, step_ms),
                    agent_ip,
                    region: pick_str(rng, REGIONS),
                    os: *pick(rng, OSES),
                    user_agent: pick_str(rng, AGENT_VERSIONS),
                });
            }
        }

        let mut endpoints = Vec::new();
        let mut tcp_addresses = HashSet::new();
        for (session_index, session) in sessions.iter().enumerate() {
            let cred = &credentials[session.credential];
            for _ in 0..config.endpoints_per_session {
                let number = endpoints.len() + 1;
                let scheme = if rng.gen_ratio(7, 10) { Scheme::Https } else { Scheme::Tcp };
                let (host, port) = match scheme {
                    Scheme::Https if cred.acl_mode == AclMode::Wildcard => {
                        (format!("{}-{number}.{}.ngrok.app", pick_str(rng, ADJECTIVES), cred.slug), 443)
                    }
                    Scheme::Https => {
                        (format!("{}-{}-{number}.ngrok.app", pick_str(rng, ADJECTIVES), pick_str(rng, NOUNS)), 443)
                    }
                    Scheme::Tcp => loop {
                        // 9 hosts × 20,000 ports; validate() keeps the fleet well below that.
                        let address = (rng.gen_range(1..=9u32), rng.gen_range(10_000..30_000u16));
                        if tcp_addresses.insert(address) {
                            break (format!("{}.tcp.ngrok.io", address.0), address.1);
                        }
                    },
                };
                let url = match scheme {
                    Scheme::Https => format!("https://{host}"),
                    Scheme::Tcp => format!("tcp://{host}:{port}"),
                };
                // Mostly light endpoints, a few heavy ones: a top-owners report has something to rank.
                let weight = match rng.gen_range(0..10u32) {
                    0 => rng.gen_range(50..=200),
                    1..=3 => rng.gen_range(10..50),
                    _ => rng.gen_range(1..10),
                };
                endpoints.push(Endpoint {
                    id: ngrok_id(rng, "ep_"),
                    session: session_index,
                    owner: cred.owner,
                    scheme,
                    host,
                    port,
                    url,
                    created_at: after(rng, session.started_at, step_ms),
                    weight,
                });
            }
        }

        // ACLs name the endpoints they will bind, so every endpoint satisfies its credential.
        for endpoint in &endpoints {
            let cred = &mut credentials[sessions[endpoint.session].credential];
            let rule = match (cred.acl_mode, endpoint.scheme) {
                (AclMode::Open | AclMode::Star, _) => None,
                (AclMode::Exact, Scheme::Https) => Some(format!("bind:{}", endpoint.host)),
                (AclMode::Wildcard, Scheme::Https) => Some(format!("bind:*.{}.ngrok.app", cred.slug)),
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
        for cred in &mut credentials {
            if cred.acl_mode == AclMode::Star {
                cred.acl.push("*".to_owned());
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
                let at = lo + Duration::milliseconds(rng.gen_range(0..(end - lo).num_milliseconds()));
                let kind = if rng.gen_ratio(3, 5) { AuditKind::DomainCreated } else { AuditKind::IpPolicyCreated };
                let object_id = match kind {
                    AuditKind::DomainCreated => ngrok_id(rng, "rd_"),
                    AuditKind::IpPolicyCreated => ngrok_id(rng, "ipp_"),
                };
                let domain = format!("{}-{}.example.com", pick_str(rng, NOUNS), audits.len() + 1);
                audits.push(Audit { owner: cred.owner, api_key: cred_index, at, kind, object_id, domain });
            }
        }

        Self { account_id, start, end, owners, credentials, sessions, endpoints, audits, client_ips }
    }

    fn empty_truth(&self, seed: u64) -> GroundTruth {
        let mut owners = std::collections::BTreeMap::new();
        for owner in &self.owners {
            owners.insert(
                owner.id.clone(),
                OwnerTruth {
                    owner_kind: owner.kind,
                    usage: Usage::default(),
                    audit_events: 0,
                    credentials: 0,
                    agent_sessions: 0,
                    endpoints: 0,
                },
            );
        }
        let mut entry = |owner: usize, count: fn(&mut OwnerTruth) -> &mut u64| {
            *count(owners.get_mut(&self.owners[owner].id).expect("registered above")) += 1;
        };
        for cred in &self.credentials {
            entry(cred.owner, |o| &mut o.credentials);
        }
        for session in &self.sessions {
            entry(self.credentials[session.credential].owner, |o| &mut o.agent_sessions);
        }
        for endpoint in &self.endpoints {
            entry(endpoint.owner, |o| &mut o.endpoints);
        }
        for audit in &self.audits {
            entry(audit.owner, |o| &mut o.audit_events);
        }
        let count = |kind| self.owners.iter().filter(|o| o.kind == kind).count() as u64;
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
                credentials: self.credentials.len() as u64,
                agent_sessions: self.sessions.len() as u64,
                endpoints: self.endpoints.len() as u64,
                audit_events: self.audits.len() as u64,
            },
            totals: Usage::default(),
            owners,
            hourly: std::collections::BTreeMap::new(),
        }
    }

    /// How `owner` appears as an envelope principal.
    fn principal(&self, owner: usize, credential: Option<Ref>) -> Principal<'_> {
        let o = &self.owners[owner];
        let source = if credential.is_some() { "API" } else { "Dashboard" };
        Principal { id: &o.id, subject: &o.subject, source, credential }
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

    fn control(&self, rng: &mut ChaCha8Rng) -> Vec<SimMessage> {
        let mut out = Vec::with_capacity(
            self.owners.len() + self.credentials.len() + self.sessions.len() + self.endpoints.len() + self.audits.len(),
        );
        let mut push = |key: &str, at: DateTime<Utc>, payload: Vec<u8>| {
            out.push(SimMessage { key: key.to_owned(), payload, event_time: at });
        };

        for owner in self.owners.iter().filter(|o| o.kind == OwnerKind::BotUser) {
            let object = encode::BotUserObject {
                id: &owner.id,
                uri: format!("{}/bot_users/{}", encode::API, owner.id),
                name: &owner.subject,
                active: true,
                created_at: ts(owner.created_at),
            };
            let principal = owner.created_by.map(|user| self.principal(user, None));
            let env = self.envelope(rng, "bot_user_created.v0", owner.created_at, principal, object);
            push(&owner.id, owner.created_at, encode::to_bytes(&env));
        }

        for cred in &self.credentials {
            let owner = &self.owners[cred.owner];
            let (event_type, collection) = match cred.kind {
                CredentialKind::Authtoken => ("tunnel_credential_created.v0", "credentials"),
                CredentialKind::SshKey => ("ssh_public_key_created.v0", "ssh_credentials"),
                CredentialKind::ApiKey => ("api_key_created.v0", "api_keys"),
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
            let object = encode::CredentialObject {
                id: &cred.id,
                uri: format!("{}/{collection}/{}", encode::API, cred.id),
                created_at: ts(cred.created_at),
                description: &cred.description,
                metadata: &cred.metadata,
                token,
                public_key,
                acl: (cred.kind != CredentialKind::ApiKey).then_some(cred.acl.as_slice()),
                owner_id: &owner.id,
            };
            // A bot with no user to create its keys uses the API (ngrok: owner defaults to the caller).
            let principal = self.principal(cred.created_by, None);
            let env = self.envelope(rng, event_type, cred.created_at, Some(principal), object);
            push(&owner.id, cred.created_at, encode::to_bytes(&env));
        }

        for session in &self.sessions {
            let cred = &self.credentials[session.credential];
            let collection = match cred.kind {
                CredentialKind::SshKey => "ssh_credentials",
                _ => "credentials",
            };
            let server_ip = pick_str(rng, SERVER_IPS);
            let object = encode::AgentSessionObject {
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
                transport: if cred.kind == CredentialKind::SshKey { "ssh" } else { "ngrok/2" },
                started_at: ts(session.started_at),
            };
            let env = self.envelope(rng, "agent_session_start.v0", session.started_at, None, object);
            push(&self.owners[cred.owner].id, session.started_at, encode::to_bytes(&env));
        }

        for endpoint in &self.endpoints {
            let session = &self.sessions[endpoint.session];
            let owner = &self.owners[endpoint.owner];
            let (proto, scheme, upstream) = match endpoint.scheme {
                Scheme::Https => ("https", "https", "http://localhost:8080"),
                Scheme::Tcp => ("tcp", "tcp", "tcp://localhost:22"),
            };
            let object = encode::EndpointObject {
                id: &endpoint.id,
                uri: format!("{}/endpoints/{}", encode::API, endpoint.id),
                region: session.region,
                created_at: ts(endpoint.created_at),
                updated_at: ts(endpoint.created_at),
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
                principal: Ref::new(&owner.id, if owner.kind == OwnerKind::BotUser { "bot_users" } else { "users" }),
            };
            let env = self.envelope(rng, "endpoint_created.v0", endpoint.created_at, None, object);
            push(&owner.id, endpoint.created_at, encode::to_bytes(&env));
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
                        cname_target: Some(format!("{}.cname.ngrok.app", audit.object_id.to_ascii_lowercase())),
                    };
                    encode::to_bytes(&self.envelope(rng, "domain_created.v0", audit.at, Some(principal), object))
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
                    encode::to_bytes(&self.envelope(rng, "ip_policy_created.v0", audit.at, Some(principal), object))
                }
            };
            push(&self.owners[audit.owner].id, audit.at, payload);
        }

        // Stable: equal times keep emission order, which is causal.
        out.sort_by_key(|m| m.event_time);
        out
    }

    // -----------------------------------------------------------------------------------------
    // Data plane.

    fn traffic(&self, count: usize, rng: &mut ChaCha8Rng, truth: &mut GroundTruth) -> Vec<SimMessage> {
        let mut out = Vec::with_capacity(count);
        if count == 0 {
            return out;
        }
        let weights =
            WeightedIndex::new(self.endpoints.iter().map(|e| e.weight)).expect("validate() ensures endpoints");
        let addresses: Vec<String> = self.endpoints.iter().map(Endpoint::address).collect();
        for _ in 0..count {
            let index = weights.sample(rng);
            let endpoint = &self.endpoints[index];
            let owner = &self.owners[endpoint.owner].id;
            // Strictly after the endpoint came up, before the window ends.
            let earliest = endpoint.created_at + Duration::milliseconds(2);
            let at = earliest + Duration::milliseconds(rng.gen_range(0..(self.end - earliest).num_milliseconds()));
            let since_up_ms = (at - endpoint.created_at).num_milliseconds();
            let is_http = endpoint.scheme == Scheme::Https && rng.gen_ratio(3, 4);
            let client_ip = pick(rng, &self.client_ips);
            let server_ip = pick_str(rng, SERVER_IPS);
            let (payload, usage) = if is_http {
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
                        server_name: &endpoint.host,
                        server_port: endpoint.port,
                        start_ts: ts(at - Duration::milliseconds(latency_ms)),
                    },
                    http: encode::Http {
                        request: encode::HttpRequest {
                            body_length: request_body,
                            method,
                            url: encode::HttpUrl {
                                host: &endpoint.host,
                                path: pick_str(rng, HTTP_PATHS),
                                scheme: "https",
                            },
                            user_agent: pick_str(rng, USER_AGENTS),
                            version: "HTTP/2.0",
                        },
                        response: encode::HttpResponse { body_length: response_body, status_code },
                    },
                };
                (encode::to_bytes(&self.envelope(rng, "http_request_complete.v0", at, None, object)), Usage::http())
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
                        server_name: &endpoint.host,
                        server_port: endpoint.port,
                        start_ts: ts(at - Duration::milliseconds(duration_ms)),
                    },
                };
                // event_timestamp = conn.end_ts: a connection is reported when it closes.
                let payload = encode::to_bytes(&self.envelope(rng, "tcp_connection_closed.v0", at, None, object));
                (payload, Usage::tcp(bytes_in, bytes_out))
            };
            truth.record_usage(owner, at, &usage);
            out.push(SimMessage { key: addresses[index].clone(), payload, event_time: at });
        }
        out.sort_by_key(|m| m.event_time);
        out
    }
}
