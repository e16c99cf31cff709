//! The building blocks of the scenarios (`scenarios.rs`): picking what an anomaly touches
//! (preferring what no other anomaly touched), instants as shares of the window, and adding
//! credentials, agent sessions and endpoints to a planned world.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use model::{CredentialKind, OwnerKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::draw::{endpoint_weight, https_host, ngrok_id, pick, pick_str, NOUNS};
use super::world::{url, AclMode, Credential, Endpoint, Scheme, Session, World};

/// An endpoint a scenario adds: the session it runs on, the owner it names as its principal
/// (its credential's owner unless the scenario says otherwise), its address, and when it comes up.
#[derive(Debug)]
pub(super) struct NewEndpoint {
    pub(super) session: usize,
    pub(super) principal: usize,
    pub(super) scheme: Scheme,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) created_at: DateTime<Utc>,
}

/// Removes and returns a random element (sampling a `u32`, which is portable).
pub(super) fn take(rng: &mut ChaCha8Rng, items: &mut Vec<usize>) -> Option<usize> {
    if items.is_empty() {
        return None;
    }
    Some(items.remove(rng.gen_range(0..items.len() as u32) as usize))
}

/// A random index below `n` that is `eligible`, preferring those no other scenario `touched`, so
/// that each anomaly shows on its own while the fleet has room; past that, scenarios share.
pub(super) fn choose(
    rng: &mut ChaCha8Rng,
    n: usize,
    touched: impl Fn(usize) -> bool,
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    let (mut fresh, mut used): (Vec<usize>, Vec<usize>) =
        (0..n).filter(|&i| eligible(i)).partition(|&i| !touched(i));
    if fresh.is_empty() {
        take(rng, &mut used)
    } else {
        take(rng, &mut fresh)
    }
}

impl World {
    /// The window's length in milliseconds times `lo_pct..hi_pct` percent, drawn uniformly.
    pub(super) fn share(&self, rng: &mut ChaCha8Rng, lo_pct: i64, hi_pct: i64) -> Duration {
        let window = (self.end - self.start).num_milliseconds();
        Duration::milliseconds(rng.gen_range(window * lo_pct / 100..window * hi_pct / 100))
    }

    /// An instant `lo_pct..hi_pct` percent into the window.
    pub(super) fn at_share(&self, rng: &mut ChaCha8Rng, lo_pct: i64, hi_pct: i64) -> DateTime<Utc> {
        self.start + self.share(rng, lo_pct, hi_pct)
    }

    /// A credential that is announced, never deleted, of an announced owner never deleted: one a
    /// scenario can build on.
    pub(super) fn stable(&self, credential: usize) -> bool {
        let cred = &self.credentials[credential];
        let owner = &self.owners[cred.owner];
        cred.announced && cred.deleted_at.is_none() && owner.announced && owner.deleted_at.is_none()
    }

    /// Per credential, its first announced session that never stops.
    pub(super) fn live_sessions(&self) -> Vec<Option<usize>> {
        let mut live = vec![None; self.credentials.len()];
        for (index, session) in self.sessions.iter().enumerate().rev() {
            if session.announced && session.stopped_at.is_none() {
                live[session.credential] = Some(index);
            }
        }
        live
    }

    /// An endpoint on a stable credential's live session, naming its owner, within the rules,
    /// published on time, never deleted.
    pub(super) fn plain(&self, endpoint: usize) -> bool {
        let e = &self.endpoints[endpoint];
        let session = &self.sessions[e.session];
        session.announced
            && session.stopped_at.is_none()
            && self.stable(session.credential)
            && e.principal == self.credentials[session.credential].owner
            && e.deleted_at.is_none()
            && !e.acl_violation
            && !e.late
    }

    /// An announced owner never deleted, for a scenario to build on: of `kind` and not in `not`
    /// when there is one, else not in `not`, else any; among those, preferring one that no other
    /// anomaly `touched` and that is never deactivated.
    pub(super) fn pick_owner(
        &self,
        rng: &mut ChaCha8Rng,
        kind: OwnerKind,
        not: &[usize],
        touched: &HashSet<usize>,
    ) -> Option<usize> {
        let busy = |o: usize| touched.contains(&o) || !self.owners[o].active_changes.is_empty();
        for (same_kind, other) in [(true, true), (false, true), (false, false)] {
            let eligible = |o: usize| {
                let owner = &self.owners[o];
                owner.announced
                    && owner.deleted_at.is_none()
                    && (!same_kind || owner.kind == kind)
                    && (!other || !not.contains(&o))
            };
            if let Some(owner) = choose(rng, self.owners.len(), busy, eligible) {
                return Some(owner);
            }
        }
        None
    }

    pub(super) fn credential_of(&self, endpoint: usize) -> usize {
        self.sessions[self.endpoints[endpoint].session].credential
    }

    /// Who creates a new credential of `owner`: a user itself; for a bot user, the user that
    /// created it, else the bot over the API.
    pub(super) fn creator_of(&self, owner: usize) -> usize {
        match self.owners[owner].kind {
            OwnerKind::User => owner,
            OwnerKind::BotUser => self.owners[owner].created_by.unwrap_or(owner),
        }
    }

    pub(super) fn push_credential(
        &mut self,
        rng: &mut ChaCha8Rng,
        owner: usize,
        created_at: DateTime<Utc>,
    ) -> usize {
        let index = self.credentials.len();
        let subject = &self.owners[owner].subject;
        self.credentials.push(Credential {
            id: ngrok_id(rng, "cr_"),
            kind: CredentialKind::Authtoken,
            owner,
            created_at,
            created_by: self.creator_of(owner),
            description: format!("agent authtoken for {subject}"),
            metadata: String::new(),
            metadata_changes: Vec::new(),
            acl_mode: AclMode::Open,
            slug: format!("{}-{}", pick_str(rng, NOUNS), index + 1),
            acl: Vec::new(),
            announced: true,
            late: false,
            deleted_at: None,
        });
        index
    }

    pub(super) fn push_session(
        &mut self,
        rng: &mut ChaCha8Rng,
        credential: usize,
        started_at: DateTime<Utc>,
    ) -> usize {
        let agent_ip = pick(rng, &self.client_ips).clone();
        let id = ngrok_id(rng, "ts_");
        self.sessions
            .push(Session::new(rng, agent_ip, id, credential, started_at));
        self.sessions.len() - 1
    }

    /// A new HTTPS endpoint on `session`, named after its number, with a light share of the
    /// traffic: it exists for a scenario, and anomalies should stay the exception.
    pub(super) fn push_https_endpoint(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: usize,
        created_at: DateTime<Utc>,
    ) -> usize {
        let host = https_host(rng, self.endpoints.len() + 1);
        let principal = self.credentials[self.sessions[session].credential].owner;
        let endpoint = self.push_endpoint(
            rng,
            NewEndpoint {
                session,
                principal,
                scheme: Scheme::Https,
                host,
                port: 443,
                created_at,
            },
        );
        self.endpoints[endpoint].weight = rng.gen_range(1..10);
        endpoint
    }

    /// Adds `endpoint` with a random share of the traffic; returns its index.
    pub(super) fn push_endpoint(&mut self, rng: &mut ChaCha8Rng, endpoint: NewEndpoint) -> usize {
        let NewEndpoint {
            session,
            principal,
            scheme,
            host,
            port,
            created_at,
        } = endpoint;
        let weight = endpoint_weight(rng);
        self.endpoints.push(Endpoint {
            id: ngrok_id(rng, "ep_"),
            session,
            principal,
            scheme,
            url: url(scheme, &host, port),
            host,
            port,
            created_at,
            weight,
            deleted_at: None,
            acl_violation: false,
            late: false,
        });
        self.endpoints.len() - 1
    }

    /// A new authtoken of `owner` created at `created_at`, one agent session on it and one HTTPS
    /// endpoint on that, each link `gap_ms` after the previous one. Returns (credential,
    /// session, endpoint).
    pub(super) fn push_chain(
        &mut self,
        rng: &mut ChaCha8Rng,
        owner: usize,
        created_at: DateTime<Utc>,
        gap_ms: i64,
    ) -> (usize, usize, usize) {
        let gap = Duration::milliseconds(gap_ms);
        let credential = self.push_credential(rng, owner, created_at);
        let session = self.push_session(rng, credential, created_at + gap);
        let endpoint = self.push_https_endpoint(rng, session, created_at + gap + gap);
        (credential, session, endpoint)
    }
}
