//! The control events of a world: bot users, credentials, agent sessions and endpoints as they
//! are created, the API keys' audit events, then what the scenarios change after creation
//! (updates, deletions, stops, metadata changes), in time order; the late chains' creations
//! apart, for publishing after the traffic.
//!
//! The sections draw from the generator's stream in a fixed order (bot users, credentials,
//! sessions, endpoints, audit events, then the lifecycle: bot users, credential deletions,
//! session stops, endpoint deletions, credential updates); changing it changes every fleet's
//! bytes.

use chrono::{DateTime, Utc};
use model::{CredentialKind, OwnerKind};
use rand_chacha::ChaCha8Rng;

use super::draw::{pick_str, push_base62, SERVER_IPS};
use super::encode::{self, ts, Principal, Ref};
use super::generate::{SimMessage, TOKEN_MARKER};
use super::world::{Audit, AuditKind, Credential, Endpoint, Owner, Scheme, Session, World};

/// Control messages as they are emitted: those published on time, and the late ones.
#[derive(Debug, Default)]
struct ControlMessages {
    on_time: Vec<SimMessage>,
    late: Vec<SimMessage>,
}

impl ControlMessages {
    fn push(&mut self, is_late: bool, key: &str, at: DateTime<Utc>, payload: Vec<u8>) {
        let message = SimMessage {
            key: key.to_owned(),
            payload,
            event_time: at,
        };
        if is_late {
            self.late.push(message);
        } else {
            self.on_time.push(message);
        }
    }
}

impl World {
    /// The control events, and apart from them the late ones, each in time order.
    pub(super) fn control(&self, rng: &mut ChaCha8Rng) -> (Vec<SimMessage>, Vec<SimMessage>) {
        let mut out = ControlMessages {
            on_time: Vec::with_capacity(
                self.owners.len()
                    + self.credentials.len()
                    + self.sessions.len()
                    + self.endpoints.len()
                    + self.audits.len(),
            ),
            late: Vec::new(),
        };
        self.bot_creations(rng, &mut out);
        self.credential_creations(rng, &mut out);
        let server_ips = self.session_starts(rng, &mut out);
        self.endpoint_creations(rng, &mut out);
        for audit in &self.audits {
            let payload = self.audit_event(rng, audit);
            out.push(false, &self.owners[audit.owner].id, audit.at, payload);
        }
        // Lifecycle after creation: what the scenarios change (nothing in a clean fleet).
        self.bot_lifecycle(rng, &mut out);
        self.credential_deletions(rng, &mut out);
        self.session_stops(rng, &server_ips, &mut out);
        self.endpoint_deletions(rng, &mut out);
        self.credential_updates(rng, &mut out);

        // Stable: equal times keep emission order, which is causal.
        out.on_time.sort_by_key(|m| m.event_time);
        out.late.sort_by_key(|m| m.event_time);
        (out.on_time, out.late)
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

    /// The announced bot users.
    fn announced_bots(&self) -> impl Iterator<Item = &Owner> {
        self.owners
            .iter()
            .filter(|o| o.kind == OwnerKind::BotUser && o.announced)
    }

    // -----------------------------------------------------------------------------------------
    // Creations.

    fn bot_creations(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
        for owner in self.announced_bots() {
            let object = Self::bot_object(owner, true);
            let env = self.envelope(
                rng,
                "bot_user_created.v0",
                owner.created_at,
                self.bot_principal(owner),
                object,
            );
            out.push(
                owner.late,
                &owner.id,
                owner.created_at,
                encode::to_bytes(&env),
            );
        }
    }

    /// Each announced credential's `*_created.v0`, with the token (authtokens and API keys) or
    /// the public key (SSH keys) ngrok returns once.
    fn credential_creations(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
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
            let object = self.credential_object(cred, &cred.metadata, token, public_key);
            // A bot with no user to create its keys uses the API (ngrok: owner defaults to the caller).
            let principal = self.principal(cred.created_by, None);
            let env = self.envelope(rng, event_type, cred.created_at, Some(principal), object);
            out.push(
                cred.late,
                &owner.id,
                cred.created_at,
                encode::to_bytes(&env),
            );
        }
    }

    /// Each announced session's `agent_session_start.v0`. Returns the ingress each session
    /// connected through (`""` for those never announced), for its stop event too.
    fn session_starts(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) -> Vec<&'static str> {
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
            out.push(
                session.late,
                key,
                session.started_at,
                encode::to_bytes(&env),
            );
        }
        server_ips
    }

    fn endpoint_creations(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
        for endpoint in &self.endpoints {
            let object = self.endpoint_object(endpoint, endpoint.created_at);
            let env = self.envelope(
                rng,
                "endpoint_created.v0",
                endpoint.created_at,
                None,
                object,
            );
            out.push(
                endpoint.late,
                &self.owners[endpoint.principal].id,
                endpoint.created_at,
                encode::to_bytes(&env),
            );
        }
    }

    /// A `domain_created.v0` or `ip_policy_created.v0` by an API key.
    fn audit_event(&self, rng: &mut ChaCha8Rng, audit: &Audit) -> Vec<u8> {
        let api_key = Ref::new(&self.credentials[audit.api_key].id, "api_keys");
        let principal = self.principal(audit.owner, Some(api_key));
        match audit.kind {
            AuditKind::DomainCreated => {
                let object = encode::DomainObject {
                    resource: encode::Resource::new(
                        &audit.object_id,
                        "reserved_domains",
                        audit.at,
                        "",
                        "",
                    ),
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
                    resource: encode::Resource::new(
                        &audit.object_id,
                        "ip_policies",
                        audit.at,
                        "office network",
                        "",
                    ),
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
        }
    }

    // -----------------------------------------------------------------------------------------
    // Lifecycle after creation.

    /// Each bot user's (de)activations, then its deletion.
    fn bot_lifecycle(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
        for owner in self.announced_bots() {
            for &(at, active) in &owner.active_changes {
                let object = Self::bot_object(owner, active);
                let env = self.envelope(
                    rng,
                    "bot_user_updated.v0",
                    at,
                    self.bot_principal(owner),
                    object,
                );
                out.push(false, &owner.id, at, encode::to_bytes(&env));
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
                out.push(false, &owner.id, at, encode::to_bytes(&env));
            }
        }
    }

    /// Each published credential deletion. A bot user's deletion revokes its credentials
    /// without one when the scenario says so (`bot_deletions_without_credential_deletes`).
    fn credential_deletions(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
        for cred in self.credentials.iter().filter(|c| c.announced) {
            if let Some(at) = cred.deleted_at {
                let event_type = match cred.kind {
                    CredentialKind::Authtoken => "tunnel_credential_deleted.v0",
                    CredentialKind::SshKey => "ssh_public_key_deleted.v0",
                    CredentialKind::ApiKey => "api_key_deleted.v0",
                };
                let object = self.credential_object(cred, cred.metadata_at(at), None, None);
                let principal = self.principal(cred.created_by, None);
                let env = self.envelope(rng, event_type, at, Some(principal), object);
                out.push(
                    false,
                    &self.owners[cred.owner].id,
                    at,
                    encode::to_bytes(&env),
                );
            }
        }
    }

    /// Each metadata change's `*_updated.v0`: the whole credential (its ACL unchanged), with the
    /// new metadata.
    fn credential_updates(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
        for cred in self.credentials.iter().filter(|c| c.announced) {
            for (at, metadata) in &cred.metadata_changes {
                let event_type = match cred.kind {
                    CredentialKind::Authtoken => "tunnel_credential_updated.v0",
                    CredentialKind::SshKey => "ssh_public_key_updated.v0",
                    CredentialKind::ApiKey => "api_key_updated.v0",
                };
                let object = self.credential_object(cred, metadata, None, None);
                let principal = self.principal(cred.created_by, None);
                let env = self.envelope(rng, event_type, *at, Some(principal), object);
                out.push(
                    false,
                    &self.owners[cred.owner].id,
                    *at,
                    encode::to_bytes(&env),
                );
            }
        }
    }

    /// Each stopped session's `agent_session_stop.v0`, through the ingress it started on.
    fn session_stops(&self, rng: &mut ChaCha8Rng, server_ips: &[&str], out: &mut ControlMessages) {
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
                out.push(false, key, at, encode::to_bytes(&env));
            }
        }
    }

    fn endpoint_deletions(&self, rng: &mut ChaCha8Rng, out: &mut ControlMessages) {
        for endpoint in &self.endpoints {
            if let Some(at) = endpoint.deleted_at {
                let object = self.endpoint_object(endpoint, at);
                let env = self.envelope(rng, "endpoint_deleted.v0", at, None, object);
                out.push(
                    false,
                    &self.owners[endpoint.principal].id,
                    at,
                    encode::to_bytes(&env),
                );
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The objects, as ngrok's resources.

    fn bot_object(owner: &Owner, active: bool) -> encode::BotUserObject<'_> {
        encode::BotUserObject {
            id: &owner.id,
            uri: encode::uri("bot_users", &owner.id),
            name: &owner.subject,
            active,
            created_at: ts(owner.created_at),
        }
    }

    /// A credential as ngrok returns it, with `metadata` (its metadata at the event's time).
    fn credential_object<'a>(
        &'a self,
        cred: &'a Credential,
        metadata: &'a str,
        token: Option<String>,
        public_key: Option<String>,
    ) -> encode::CredentialObject<'a> {
        let collection = match cred.kind {
            CredentialKind::Authtoken => "credentials",
            CredentialKind::SshKey => "ssh_credentials",
            CredentialKind::ApiKey => "api_keys",
        };
        encode::CredentialObject {
            resource: encode::Resource::new(
                &cred.id,
                collection,
                cred.created_at,
                &cred.description,
                metadata,
            ),
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
            uri: encode::uri("endpoints", &endpoint.id),
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
}
