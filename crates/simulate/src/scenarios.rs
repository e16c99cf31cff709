//! The anomalies of a fleet ([`Scenarios`](super::Scenarios)), as edits of a planned world, and
//! the tiny fleet whose control events all arrive after its traffic ([`late_control_scenario`]).
//!
//! An edit only changes the world — who owns what, and when things start, stop, change or go —
//! and says which targets need traffic in each of their phases; the generator reads every
//! event's expected outcome off the world at the event's time. Scenarios pick disjoint
//! credentials and bot users while there are untouched ones, so each anomaly shows on its own:
//! a rotated authtoken's straggler is flagged `credential_deleted` and nothing else.

use std::collections::HashSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use model::{CredentialKind, OwnerKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::FleetConfig;
use super::generate::{
    after, client_ips, endpoint_weight, fresh_tcp_address, https_host, ngrok_id, pick, pick_str,
    url, AclMode, Credential, Endpoint, Fleet, Owner, Probe, Scheme, Session, Target, Unbound,
    World, ADJECTIVES, BOT_PURPOSES, NOUNS,
};

/// Traffic events in a [`late_control_scenario`] fleet.
pub const LATE_SCENARIO_TRAFFIC_EVENTS: usize = 20;

/// Scenario targets get traffic in every phase; a few endpoints of each credential are enough.
const PROBED_ENDPOINTS_PER_CREDENTIAL: usize = 4;

/// Removes and returns a random element (sampling a `u32`, which is portable).
fn take(rng: &mut ChaCha8Rng, items: &mut Vec<usize>) -> Option<usize> {
    if items.is_empty() {
        return None;
    }
    Some(items.remove(rng.gen_range(0..items.len() as u32) as usize))
}

/// A random index below `n` that is `eligible`, preferring those no other scenario `touched`, so
/// that each anomaly shows on its own while the fleet has room; past that, scenarios share.
fn choose(
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
    fn share(&self, rng: &mut ChaCha8Rng, lo_pct: i64, hi_pct: i64) -> Duration {
        let window = (self.end - self.start).num_milliseconds();
        Duration::milliseconds(rng.gen_range(window * lo_pct / 100..window * hi_pct / 100))
    }

    /// An instant `lo_pct..hi_pct` percent into the window.
    fn at_share(&self, rng: &mut ChaCha8Rng, lo_pct: i64, hi_pct: i64) -> DateTime<Utc> {
        self.start + self.share(rng, lo_pct, hi_pct)
    }

    /// A credential that is announced, never deleted, of an announced owner never deleted: one a
    /// scenario can build on.
    fn stable(&self, credential: usize) -> bool {
        let cred = &self.credentials[credential];
        let owner = &self.owners[cred.owner];
        cred.announced && cred.deleted_at.is_none() && owner.announced && owner.deleted_at.is_none()
    }

    /// Per credential, its first announced session that never stops.
    fn live_sessions(&self) -> Vec<Option<usize>> {
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
    fn plain(&self, endpoint: usize) -> bool {
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

    fn credential_of(&self, endpoint: usize) -> usize {
        self.sessions[self.endpoints[endpoint].session].credential
    }

    /// Who creates a new credential of `owner`: a user itself; for a bot user, the user that
    /// created it, else the bot over the API.
    fn creator_of(&self, owner: usize) -> usize {
        match self.owners[owner].kind {
            OwnerKind::User => owner,
            OwnerKind::BotUser => self.owners[owner].created_by.unwrap_or(owner),
        }
    }

    fn push_credential(
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
            acl_mode: AclMode::Open,
            slug: format!("{}-{}", pick_str(rng, NOUNS), index + 1),
            acl: Vec::new(),
            announced: true,
            late: false,
            deleted_at: None,
        });
        index
    }

    fn push_session(
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
    fn push_https_endpoint(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: usize,
        created_at: DateTime<Utc>,
    ) -> usize {
        let host = https_host(rng, self.endpoints.len() + 1);
        let principal = self.credentials[self.sessions[session].credential].owner;
        let endpoint = self.push_endpoint(
            rng,
            session,
            principal,
            Scheme::Https,
            host,
            443,
            created_at,
        );
        self.endpoints[endpoint].weight = rng.gen_range(1..10);
        endpoint
    }

    #[allow(clippy::too_many_arguments)]
    fn push_endpoint(
        &mut self,
        rng: &mut ChaCha8Rng,
        session: usize,
        principal: usize,
        scheme: Scheme,
        host: String,
        port: u16,
        created_at: DateTime<Utc>,
    ) -> usize {
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
    fn push_chain(
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

    /// Applies `config.scenarios` and `config.late_control`. Draws only from `rng`, the
    /// scenarios' own stream, and does nothing to a clean fleet.
    pub(super) fn add_scenarios(&mut self, config: &FleetConfig, rng: &mut ChaCha8Rng) {
        let scenarios = &config.scenarios;
        if scenarios.is_none() && config.late_control == 0 {
            return;
        }
        let mut touched_credentials: HashSet<usize> = HashSet::new();
        let mut touched_owners: HashSet<usize> = HashSet::new();
        let announced_owners: Vec<usize> = (0..self.owners.len())
            .filter(|&o| self.owners[o].announced)
            .collect();

        // Bot users deleted, then others deactivated (every other one reactivated later). Their
        // endpoints keep serving: that is the anomaly.
        let mut bots: Vec<usize> = announced_owners
            .iter()
            .copied()
            .filter(|&o| self.owners[o].kind == OwnerKind::BotUser)
            .collect();
        for _ in 0..scenarios.bot_deletions {
            let Some(bot) = take(rng, &mut bots) else {
                break;
            };
            let deleted_at = self.at_share(rng, 50, 70);
            self.owners[bot].deleted_at = Some(deleted_at);
            touched_owners.insert(bot);
            // Deleting a bot user revokes its credentials: each gets its `*_deleted.v0`.
            for (index, cred) in self
                .credentials
                .iter_mut()
                .enumerate()
                .filter(|(_, c)| c.owner == bot)
            {
                cred.deleted_at = Some(deleted_at);
                touched_credentials.insert(index);
            }
        }
        for n in 0..scenarios.bot_deactivations {
            let Some(bot) = take(rng, &mut bots) else {
                break;
            };
            let deactivated_at = self.at_share(rng, 25, 45);
            let mut changes = vec![(deactivated_at, false)];
            if n % 2 == 0 {
                changes.push((deactivated_at + self.share(rng, 15, 30), true));
            }
            self.owners[bot].active_changes = changes;
            touched_owners.insert(bot);
            touched_credentials
                .extend((0..self.credentials.len()).filter(|&c| self.credentials[c].owner == bot));
        }
        // Traffic in every phase on a few endpoints of each credential of those bot users.
        let mut probed = vec![0; self.credentials.len()];
        for endpoint in 0..self.endpoints.len() {
            let cred = self.credential_of(endpoint);
            let of_touched_bot = touched_owners.contains(&self.credentials[cred].owner);
            if of_touched_bot && probed[cred] < PROBED_ENDPOINTS_PER_CREDENTIAL {
                probed[cred] += 1;
                self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
            }
        }

        // Rotations: a new authtoken, all sessions but the last move to it (their endpoints come
        // back on the same addresses), then the old one is deleted under the last session.
        let mut rotated: HashSet<usize> = HashSet::new();
        for _ in 0..scenarios.rotations {
            let live = self.live_sessions();
            let Some(old) = choose(
                rng,
                self.credentials.len(),
                |c| touched_credentials.contains(&c),
                |c| {
                    self.credentials[c].kind == CredentialKind::Authtoken
                        && self.stable(c)
                        && !rotated.contains(&c)
                        && live[c].is_some()
                },
            ) else {
                break;
            };
            let rotated_at = self.at_share(rng, 20, 35);
            let deleted_at = self.at_share(rng, 50, 65);
            let new = self.credentials.len();
            let old_cred = &self.credentials[old];
            let successor = Credential {
                id: ngrok_id(rng, "cr_"),
                kind: CredentialKind::Authtoken,
                owner: old_cred.owner,
                created_at: rotated_at,
                created_by: old_cred.created_by,
                description: format!("{} (rotated)", old_cred.description),
                metadata: old_cred.metadata.clone(),
                acl_mode: old_cred.acl_mode,
                slug: old_cred.slug.clone(),
                acl: Vec::new(),
                announced: true,
                late: false,
                deleted_at: None,
            };
            self.credentials.push(successor);
            self.credentials[old].deleted_at = Some(deleted_at);
            touched_credentials.extend([old, new]);
            rotated.extend([old, new]);
            let sessions: Vec<usize> = (0..self.sessions.len())
                .filter(|&s| {
                    let session = &self.sessions[s];
                    session.credential == old && session.announced && session.stopped_at.is_none()
                })
                .collect();
            let Some((&straggler, movers)) = sessions.split_last() else {
                continue;
            };
            let mut served: Vec<Vec<usize>> = vec![Vec::new(); movers.len()];
            let mut left = Vec::new();
            for (index, endpoint) in self
                .endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| e.deleted_at.is_none())
            {
                if let Some(mover) = movers.iter().position(|&m| m == endpoint.session) {
                    served[mover].push(index);
                } else if endpoint.session == straggler
                    && left.len() < PROBED_ENDPOINTS_PER_CREDENTIAL
                {
                    left.push(index);
                }
            }
            for (&moving, served) in movers.iter().zip(served) {
                let moved_at = rotated_at + self.share(rng, 2, 10);
                let id = ngrok_id(rng, "ts_");
                let from = &self.sessions[moving];
                let session = Session {
                    id,
                    credential: new,
                    started_at: moved_at - Duration::milliseconds(1),
                    agent_ip: from.agent_ip.clone(),
                    region: from.region,
                    os: from.os,
                    user_agent: from.user_agent,
                    announced: true,
                    late: false,
                    stopped_at: None,
                };
                let new_session = self.sessions.len();
                self.sessions.push(session);
                self.sessions[moving].stopped_at = Some(moved_at + Duration::milliseconds(1));
                for old_endpoint in served {
                    self.endpoints[old_endpoint].deleted_at = Some(moved_at);
                    let (principal, scheme, host, port, weight) = {
                        let e = &self.endpoints[old_endpoint];
                        (e.principal, e.scheme, e.host.clone(), e.port, e.weight)
                    };
                    let moved = self.push_endpoint(
                        rng,
                        new_session,
                        principal,
                        scheme,
                        host,
                        port,
                        moved_at,
                    );
                    self.endpoints[moved].weight = weight;
                    self.probes
                        .push(Probe::Phases(Target::Endpoint(old_endpoint)));
                    self.probes.push(Probe::Phases(Target::Endpoint(moved)));
                }
            }
            for endpoint in left {
                self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
            }
        }

        // Hostname reuse: owner A's HTTPS endpoint goes; after a gap, owner B's comes up on the
        // same hostname. Both are among the endpoints and sessions of the control phase, long
        // before the gap.
        let early = self.start + (self.end - self.start) / 5;
        for _ in 0..scenarios.hostname_reuses {
            let Some(first) = choose(
                rng,
                self.endpoints.len(),
                |e| touched_credentials.contains(&self.credential_of(e)),
                |e| {
                    let endpoint = &self.endpoints[e];
                    endpoint.scheme == Scheme::Https && endpoint.created_at < early && self.plain(e)
                },
            ) else {
                break;
            };
            let first_cred = self.credential_of(first);
            let first_owner = self.credentials[first_cred].owner;
            let Some(second_session) = choose(
                rng,
                self.sessions.len(),
                |s| touched_credentials.contains(&self.sessions[s].credential),
                |s| {
                    let session = &self.sessions[s];
                    session.announced
                        && session.stopped_at.is_none()
                        && session.started_at < early
                        && self.stable(session.credential)
                        && self.credentials[session.credential].owner != first_owner
                },
            ) else {
                break;
            };
            let second_cred = self.sessions[second_session].credential;
            touched_credentials.extend([first_cred, second_cred]);
            let gone_at = self.at_share(rng, 30, 45);
            let back_at = gone_at + self.share(rng, 5, 15);
            self.endpoints[first].deleted_at = Some(gone_at);
            let host = self.endpoints[first].host.clone();
            let second_owner = self.credentials[second_cred].owner;
            let second = self.push_endpoint(
                rng,
                second_session,
                second_owner,
                Scheme::Https,
                host.clone(),
                443,
                back_at,
            );
            let weight = rng.gen_range(1..10);
            self.unbound.push(Unbound {
                scheme: Scheme::Https,
                host,
                port: 443,
                from: gone_at,
                to: back_at,
                is_gap: true,
                weight,
            });
            self.probes.push(Probe::Phases(Target::Endpoint(first)));
            self.probes
                .push(Probe::Phases(Target::Unbound(self.unbound.len() - 1)));
            self.probes.push(Probe::Phases(Target::Endpoint(second)));
        }

        // ACL violations: an endpoint its credential's bind rules do not allow. A credential with
        // no rules (or `*`) allows everything, so it is given exact rules instead.
        for _ in 0..scenarios.acl_violations {
            let live = self.live_sessions();
            let Some(cred) = choose(
                rng,
                self.credentials.len(),
                |c| touched_credentials.contains(&c),
                |c| {
                    self.credentials[c].kind != CredentialKind::ApiKey
                        && self.stable(c)
                        && live[c].is_some()
                },
            ) else {
                break;
            };
            if matches!(
                self.credentials[cred].acl_mode,
                AclMode::Open | AclMode::Star
            ) {
                self.credentials[cred].acl_mode = AclMode::Exact;
            }
            touched_credentials.insert(cred);
            let session = live[cred].expect("chosen among credentials with a session");
            let created_at = after(rng, self.sessions[session].started_at, self.step_ms);
            let endpoint = self.push_https_endpoint(rng, session, created_at);
            self.endpoints[endpoint].acl_violation = true;
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }

        // Principal mismatches: the endpoint names another owner than its credential's.
        for _ in 0..scenarios.principal_mismatches {
            let Some(endpoint) = choose(
                rng,
                self.endpoints.len(),
                |e| touched_credentials.contains(&self.credential_of(e)),
                |e| self.plain(e),
            ) else {
                break;
            };
            let cred = self.credential_of(endpoint);
            let owner = self.credentials[cred].owner;
            let others: Vec<usize> = announced_owners
                .iter()
                .copied()
                .filter(|&o| o != owner)
                .collect();
            if others.is_empty() {
                break;
            }
            self.endpoints[endpoint].principal = *pick(rng, &others);
            touched_credentials.insert(cred);
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }

        // Unknown addresses: HTTPS hostnames and TCP addresses no endpoint ever had.
        for n in 0..scenarios.unknown_hostnames {
            let (scheme, host, port) = if n % 2 == 0 {
                let host = format!(
                    "{}-{}-x{}.ngrok.app",
                    pick_str(rng, ADJECTIVES),
                    pick_str(rng, NOUNS),
                    n + 1
                );
                (Scheme::Https, host, 443)
            } else {
                let (host, port) = fresh_tcp_address(rng, &mut self.tcp_addresses);
                (Scheme::Tcp, host, port)
            };
            let weight = rng.gen_range(1..10);
            self.unbound.push(Unbound {
                scheme,
                host,
                port,
                from: self.start,
                to: self.end,
                is_gap: false,
                weight,
            });
            self.probes
                .push(Probe::Phases(Target::Unbound(self.unbound.len() - 1)));
        }

        // Broken chains: an endpoint on a session never announced; a session on a credential
        // never announced; a credential of a bot user never announced.
        let tokens: Vec<usize> = (0..self.credentials.len())
            .filter(|&c| {
                self.credentials[c].kind == CredentialKind::Authtoken
                    && self.credentials[c].announced
            })
            .collect();
        for _ in 0..scenarios.unknown_sessions {
            let Some(&cred) = (!tokens.is_empty()).then(|| pick(rng, &tokens)) else {
                break;
            };
            let started_at = after(rng, self.credentials[cred].created_at, self.step_ms);
            let session = self.push_session(rng, cred, started_at);
            self.sessions[session].announced = false;
            let created_at = after(rng, started_at, self.step_ms);
            let endpoint = self.push_https_endpoint(rng, session, created_at);
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }
        for _ in 0..scenarios.unknown_credentials {
            let owner = *pick(rng, &announced_owners);
            let created_at = after(rng, self.owners[owner].created_at, self.step_ms);
            let gap_ms = rng.gen_range(1..=self.step_ms);
            let (cred, _, endpoint) = self.push_chain(rng, owner, created_at, gap_ms);
            self.credentials[cred].announced = false;
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }
        let users: Vec<usize> = announced_owners
            .iter()
            .copied()
            .filter(|&o| self.owners[o].kind == OwnerKind::User)
            .collect();
        for n in 0..scenarios.unknown_owners {
            let id = ngrok_id(rng, "bot_");
            let subject = format!("{}-bot-unknown-{}", pick_str(rng, BOT_PURPOSES), n + 1);
            let created_at = self.start + Duration::milliseconds(rng.gen_range(0..self.step_ms));
            let created_by = (!users.is_empty()).then(|| *pick(rng, &users));
            let mut ghost = Owner::new(id, OwnerKind::BotUser, subject, created_at, created_by);
            ghost.announced = false;
            self.owners.push(ghost);
            let owner = self.owners.len() - 1;
            let cred_at = after(rng, created_at, self.step_ms);
            let gap_ms = rng.gen_range(1..=self.step_ms);
            let (_, _, endpoint) = self.push_chain(rng, owner, cred_at, gap_ms);
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }

        // Late chains: created milliseconds before their first traffic, published after it. Their
        // owners are untouched while there are some, and never deleted.
        let calm: Vec<usize> = announced_owners
            .iter()
            .copied()
            .filter(|o| !touched_owners.contains(o))
            .collect();
        let alive: Vec<usize> = announced_owners
            .iter()
            .copied()
            .filter(|&o| self.owners[o].deleted_at.is_none())
            .collect();
        let late_owners = [calm, alive, announced_owners]
            .into_iter()
            .find(|o| !o.is_empty())
            .unwrap_or_default();
        for _ in 0..config.late_control {
            let Some(&owner) = (!late_owners.is_empty()).then(|| pick(rng, &late_owners)) else {
                break;
            };
            // Clear of the owner's own lifecycle, should it have one.
            let lifecycle: Vec<DateTime<Utc>> = self.owners[owner]
                .deleted_at
                .into_iter()
                .chain(self.owners[owner].active_changes.iter().map(|(at, _)| *at))
                .collect();
            let created_at = loop {
                let at = self.at_share(rng, 20, 80);
                if lifecycle.iter().all(|b| (at - *b).num_seconds().abs() >= 1) {
                    break at;
                }
            };
            let (cred, session, endpoint) = self.push_chain(rng, owner, created_at, 1);
            self.credentials[cred].late = true;
            self.sessions[session].late = true;
            self.endpoints[endpoint].late = true;
            let up = self.endpoints[endpoint].created_at;
            for ms in 3..6 {
                self.probes.push(Probe::At(
                    Target::Endpoint(endpoint),
                    up + Duration::milliseconds(ms),
                ));
            }
        }
    }
}

/// A tiny fleet for the race between the topics, with times just before `now`: one bot user,
/// its authtoken, an agent session and an HTTPS endpoint, created a few milliseconds apart, then
/// [`LATE_SCENARIO_TRAFFIC_EVENTS`] HTTP requests and TCP connections on the endpoint, one per
/// millisecond, the last 15 ms before `now`. Every control event is in
/// [`Fleet::late_control`] (`control` is empty); published after the traffic, every traffic
/// event must still attribute to the bot user, unflagged, as the truth says.
pub fn late_control_scenario(now: DateTime<Utc>, seed: u64) -> Fleet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let now = now.duration_trunc(Duration::milliseconds(1)).unwrap_or(now);
    let events = LATE_SCENARIO_TRAFFIC_EVENTS as i64;
    let start = now - Duration::milliseconds(events + 20);
    let account_id = ngrok_id(&mut rng, "ac_");
    let client_ips = client_ips(&mut rng);
    let id = ngrok_id(&mut rng, "bot_");
    let subject = format!("{}-bot-late", pick_str(&mut rng, BOT_PURPOSES));
    let mut bot = Owner::new(id, OwnerKind::BotUser, subject, start, None);
    bot.late = true;
    let mut world = World {
        account_id,
        start,
        end: now + Duration::milliseconds(1),
        step_ms: 1,
        owners: vec![bot],
        credentials: Vec::new(),
        sessions: Vec::new(),
        endpoints: Vec::new(),
        unbound: Vec::new(),
        probes: Vec::new(),
        audits: Vec::new(),
        client_ips,
        tcp_addresses: HashSet::new(),
    };
    // Authtoken at +1 ms, session at +2 ms, endpoint at +3 ms, traffic from +6 ms.
    let (cred, session, endpoint) =
        world.push_chain(&mut rng, 0, start + Duration::milliseconds(1), 1);
    world.credentials[cred].late = true;
    world.sessions[session].late = true;
    world.endpoints[endpoint].late = true;
    for ms in 0..events {
        world.probes.push(Probe::At(
            Target::Endpoint(endpoint),
            start + Duration::milliseconds(6 + ms),
        ));
    }
    world.render(seed, LATE_SCENARIO_TRAFFIC_EVENTS, true, &mut rng)
}
