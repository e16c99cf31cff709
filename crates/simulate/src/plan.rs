//! The clean account of a [`FleetConfig`]: owners, their credentials, the agent sessions and
//! endpoints on those, and the API keys' activity, each link strictly after the one it needs
//! ([`World::plan`]); and, once the scenarios have edited it, every credential's bind rules
//! ([`World::finalize_acls`]).
//!
//! The draws happen in a fixed order (account, client addresses, owners, credentials, sessions,
//! endpoints, API activity): changing it changes every fleet's bytes.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Duration, DurationRound, Utc};
use model::{BindRule, CredentialKind, OwnerKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::FleetConfig;
use super::draw::{
    after, client_ips, endpoint_weight, fresh_tcp_address, ngrok_id, pick, pick_str, ADJECTIVES,
    BOT_PURPOSES, FIRST_NAMES, NOUNS, TEAMS,
};
use super::world::{
    url, AclMode, Audit, AuditKind, Credential, Endpoint, Owner, Scheme, Session, World,
};

impl World {
    /// The clean account `config` describes, drawn from `rng`.
    pub(super) fn plan(config: &FleetConfig, rng: &mut ChaCha8Rng) -> Self {
        let start = config
            .start
            .duration_trunc(Duration::milliseconds(1))
            .unwrap_or(config.start);
        let end = start + Duration::hours(i64::from(config.duration_hours));
        // Control events fall in the first tenth of the window, in four causal steps.
        let step_ms = ((end - start).num_milliseconds() / 10 / 4).max(1);

        let account_id = ngrok_id(rng, "ac_");
        let client_ips = client_ips(rng);
        let owners = plan_owners(config, start, step_ms, rng);
        let credentials = plan_credentials(config, &owners, step_ms, rng);
        let sessions = plan_sessions(config, &credentials, &client_ips, step_ms, rng);
        let mut tcp_addresses = HashSet::new();
        let endpoints = plan_endpoints(
            config,
            &credentials,
            &sessions,
            &mut tcp_addresses,
            step_ms,
            rng,
        );
        let audits = plan_audits(&owners, &credentials, end, rng);

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
            served_hosts: Vec::new(),
            probes: Vec::new(),
            audits,
            client_ips,
            tcp_addresses,
        }
    }

    /// Writes each credential's ACL from the endpoints its sessions serve, so that every endpoint
    /// satisfies its credential, except the deliberate ACL violations, which are then checked to
    /// violate. Preset rules (a wildcard site's) are left as written and checked to allow their
    /// endpoints (a wildcard endpoint by its own name, `*.site1.factory.example.com`).
    pub(super) fn finalize_acls(&mut self) {
        for endpoint in &self.endpoints {
            let session = &self.sessions[endpoint.session];
            if endpoint.acl_violation || !session.announced {
                continue;
            }
            let cred = &mut self.credentials[session.credential];
            let rule = match (cred.acl_mode, endpoint.scheme) {
                (AclMode::Open | AclMode::Star | AclMode::Preset, _) => None,
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
        // The deliberate violations must violate; preset rules must allow their endpoints.
        for endpoint in &self.endpoints {
            let cred = &self.credentials[self.sessions[endpoint.session].credential];
            if !endpoint.acl_violation && cred.acl_mode != AclMode::Preset {
                continue;
            }
            let rules = BindRule::parse_all(&cred.acl).expect("simulated ACLs parse");
            let permitted = BindRule::permits(
                &rules,
                &endpoint.host,
                Some(endpoint.port),
                &BTreeMap::new(),
            );
            assert_eq!(
                permitted, !endpoint.acl_violation,
                "{}:{} (ACL violation: {}) against {:?}",
                endpoint.host, endpoint.port, endpoint.acl_violation, cred.acl
            );
        }
    }
}

/// The users (existing from the window's start), then the bot users, each created by a user when
/// there are users, within the control phase's first step.
fn plan_owners(
    config: &FleetConfig,
    start: DateTime<Utc>,
    step_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<Owner> {
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
        let created_by = (config.users > 0).then(|| rng.gen_range(0..config.users as u32) as usize);
        owners.push(Owner::new(
            id,
            OwnerKind::BotUser,
            subject,
            created_at,
            created_by,
        ));
    }
    owners
}

/// `credentials_per_owner` credentials of each kind per owner, each created after its owner.
fn plan_credentials(
    config: &FleetConfig,
    owners: &[Owner],
    step_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<Credential> {
    let mut credentials = Vec::new();
    for (owner_index, owner) in owners.iter().enumerate() {
        for kind in [
            CredentialKind::Authtoken,
            CredentialKind::SshKey,
            CredentialKind::ApiKey,
        ] {
            for n in 0..config.credentials_per_owner {
                let number = credentials.len() + 1;
                credentials.push(plan_credential(
                    rng,
                    owner_index,
                    owner,
                    kind,
                    n,
                    number,
                    step_ms,
                ));
            }
        }
    }
    credentials
}

/// The `n`th credential of `kind` of `owner`, the `number`th of the fleet.
fn plan_credential(
    rng: &mut ChaCha8Rng,
    owner_index: usize,
    owner: &Owner,
    kind: CredentialKind,
    n: usize,
    number: usize,
    step_ms: i64,
) -> Credential {
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
    let slug = format!("{}-{}", pick_str(rng, NOUNS), number);
    Credential {
        id,
        kind,
        owner: owner_index,
        created_at,
        created_by,
        description,
        metadata,
        metadata_changes: Vec::new(),
        acl_mode,
        slug,
        acl: Vec::new(),
        announced: true,
        late: false,
        deleted_at: None,
    }
}

/// `sessions_per_credential` agent sessions per authtoken and SSH key, each started after its
/// credential was created, from one of the client addresses.
fn plan_sessions(
    config: &FleetConfig,
    credentials: &[Credential],
    client_ips: &[String],
    step_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<Session> {
    let mut sessions = Vec::new();
    for (cred_index, cred) in credentials.iter().enumerate() {
        if cred.kind == CredentialKind::ApiKey {
            continue; // API keys call the API; they never start agent sessions
        }
        for _ in 0..config.sessions_per_credential {
            let agent_ip = pick(rng, client_ips).clone();
            let id = ngrok_id(rng, "ts_");
            let started_at = after(rng, cred.created_at, step_ms);
            sessions.push(Session::new(rng, agent_ip, id, cred_index, started_at));
        }
    }
    sessions
}

/// `endpoints_per_session` endpoints per session, seven in ten HTTPS (under the credential's
/// slug when its bind rules are a wildcard), the rest on unused TCP addresses.
fn plan_endpoints(
    config: &FleetConfig,
    credentials: &[Credential],
    sessions: &[Session],
    tcp_addresses: &mut HashSet<(u32, u16)>,
    step_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
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
                Scheme::Tcp => fresh_tcp_address(rng, tcp_addresses),
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
    endpoints
}

/// API activity: each bot's API keys create a few domains and IP policies; users' keys less.
fn plan_audits(
    owners: &[Owner],
    credentials: &[Credential],
    end: DateTime<Utc>,
    rng: &mut ChaCha8Rng,
) -> Vec<Audit> {
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
    audits
}
