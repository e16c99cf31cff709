//! The anomalies of a fleet ([`Scenarios`]), as edits of a planned world, and
//! the late chains of [`FleetConfig::late_control`] (those in `late_control.rs`).
//!
//! An edit only changes the world — who owns what, and when things start, stop, change or go —
//! and says which targets need traffic in each of their phases; the generator reads every
//! event's expected outcome off the world at the event's time. Scenarios pick disjoint
//! credentials and bot users while there are untouched ones, so each anomaly shows on its own:
//! a rotated authtoken's straggler is flagged `credential_deleted` and nothing else. The
//! building blocks they share are in `edits.rs`.
//!
//! The kinds are applied, and draw from the scenarios' stream, in a fixed order (bot deletions,
//! bot deactivations, bot deletions without credential deletes, rotations, hostname reuses, ACL
//! violations, principal mismatches, unknown hostnames, sessions, credentials and owners,
//! wildcard sites (in `wildcard_sites.rs`), credential metadata, device drops (in
//! `fleet_truth.rs`), usage spikes (in `usage_spikes.rs`), late chains): changing it
//! changes the fleets. A kind whose count is 0 draws nothing, so adding one leaves the fleets
//! without it as they were.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use model::{CredentialKind, OwnerKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::{FleetConfig, Scenarios};
use super::draw::{
    after, fresh_tcp_address, ngrok_id, pick, pick_str, ADJECTIVES, BOT_PURPOSES, ENVIRONMENTS,
    NOUNS,
};
use super::edits::{choose, take, NewEndpoint};
use super::world::{AclMode, Credential, Owner, Probe, Scheme, Session, Target, Unbound, World};

/// Scenario targets get traffic in every phase; a few endpoints of each credential are enough.
const PROBED_ENDPOINTS_PER_CREDENTIAL: usize = 4;

/// What the anomalies so far have touched: the later ones pick among the rest while there are
/// any, so that each anomaly shows on its own.
#[derive(Debug, Default)]
pub(super) struct Touched {
    pub(super) credentials: HashSet<usize>,
    pub(super) owners: HashSet<usize>,
}

impl World {
    /// Applies `config.scenarios` and `config.late_control`. Draws only from `rng`, the
    /// scenarios' own stream, and does nothing to a clean fleet.
    pub(super) fn add_scenarios(&mut self, config: &FleetConfig, rng: &mut ChaCha8Rng) {
        let scenarios = &config.scenarios;
        if scenarios.is_none() && config.late_control == 0 {
            return;
        }
        let mut touched = Touched::default();
        let announced_owners: Vec<usize> = (0..self.owners.len())
            .filter(|&o| self.owners[o].announced)
            .collect();
        self.add_bot_lifecycles(scenarios, &announced_owners, &mut touched, rng);
        self.add_rotations(scenarios.rotations, &mut touched, rng);
        self.add_hostname_reuses(scenarios.hostname_reuses, &mut touched, rng);
        self.add_acl_violations(scenarios.acl_violations, &mut touched, rng);
        self.add_principal_mismatches(
            scenarios.principal_mismatches,
            &announced_owners,
            &mut touched,
            rng,
        );
        self.add_unknown_hostnames(scenarios.unknown_hostnames, rng);
        self.add_broken_chains(scenarios, &announced_owners, rng);
        self.add_wildcard_sites(scenarios.wildcard_sites, &mut touched, rng);
        self.add_credential_metadata(scenarios.credential_metadata, &mut touched, rng);
        self.add_device_drops(scenarios.device_drops, &mut touched, rng);
        self.add_usage_spikes(scenarios.usage_spikes, &mut touched, rng);
        self.add_late_chains(config.late_control, &announced_owners, &touched.owners, rng);
    }

    /// Bot users deleted, then others deactivated (every other one reactivated later), then
    /// others deleted without their credentials' deletions (a deactivated one when no other is
    /// left). Their endpoints keep serving: that is the anomaly. Traffic in every phase on a few
    /// endpoints of each credential of those bot users.
    fn add_bot_lifecycles(
        &mut self,
        scenarios: &Scenarios,
        announced_owners: &[usize],
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        let mut bots: Vec<usize> = announced_owners
            .iter()
            .copied()
            .filter(|&o| self.owners[o].kind == OwnerKind::BotUser)
            .collect();
        let mut deactivated: Vec<usize> = Vec::new();
        self.delete_bots(scenarios.bot_deletions, true, &mut bots, touched, rng);
        self.deactivate_bots(
            scenarios.bot_deactivations,
            &mut bots,
            &mut deactivated,
            touched,
            rng,
        );
        if bots.is_empty() {
            bots.append(&mut deactivated);
        }
        self.delete_bots(
            scenarios.bot_deletions_without_credential_deletes,
            false,
            &mut bots,
            touched,
            rng,
        );
        let mut probed = vec![0; self.credentials.len()];
        for endpoint in 0..self.endpoints.len() {
            let cred = self.credential_of(endpoint);
            let of_touched_bot = touched.owners.contains(&self.credentials[cred].owner);
            if of_touched_bot && probed[cred] < PROBED_ENDPOINTS_PER_CREDENTIAL {
                probed[cred] += 1;
                self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
            }
        }
    }

    /// Deletes `count` of `bots` (taking them out of it), which revokes its credentials; with
    /// `publish_credential_deletes` each of them also gets its `*_deleted.v0`.
    fn delete_bots(
        &mut self,
        count: usize,
        publish_credential_deletes: bool,
        bots: &mut Vec<usize>,
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        for _ in 0..count {
            let Some(bot) = take(rng, bots) else {
                break;
            };
            let deleted_at = self.at_share(rng, 50, 70);
            self.owners[bot].deleted_at = Some(deleted_at);
            touched.owners.insert(bot);
            for (index, cred) in self
                .credentials
                .iter_mut()
                .enumerate()
                .filter(|(_, c)| c.owner == bot)
            {
                if publish_credential_deletes {
                    cred.deleted_at = Some(deleted_at);
                }
                touched.credentials.insert(index);
            }
        }
    }

    /// Deactivates `count` of `bots` (taking them out of it, into `deactivated`), reactivating
    /// every other one.
    fn deactivate_bots(
        &mut self,
        count: usize,
        bots: &mut Vec<usize>,
        deactivated: &mut Vec<usize>,
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        for n in 0..count {
            let Some(bot) = take(rng, bots) else {
                break;
            };
            deactivated.push(bot);
            let deactivated_at = self.at_share(rng, 25, 45);
            let mut changes = vec![(deactivated_at, false)];
            if n % 2 == 0 {
                changes.push((deactivated_at + self.share(rng, 15, 30), true));
            }
            self.owners[bot].active_changes = changes;
            touched.owners.insert(bot);
            touched
                .credentials
                .extend((0..self.credentials.len()).filter(|&c| self.credentials[c].owner == bot));
        }
    }

    /// Rotations: a new authtoken, all sessions but the last move to it (their endpoints come
    /// back on the same addresses), then the old one is deleted under the last session.
    fn add_rotations(&mut self, count: usize, touched: &mut Touched, rng: &mut ChaCha8Rng) {
        let mut rotated: HashSet<usize> = HashSet::new();
        for _ in 0..count {
            let live = self.live_sessions();
            let Some(old) = choose(
                rng,
                self.credentials.len(),
                |c| touched.credentials.contains(&c),
                |c| {
                    self.credentials[c].kind == CredentialKind::Authtoken
                        && self.stable(c)
                        && !rotated.contains(&c)
                        && live[c].is_some()
                },
            ) else {
                break;
            };
            self.rotate(old, touched, &mut rotated, rng);
        }
    }

    /// Rotates the authtoken `old`: its successor, the sessions that move to it, and the probes.
    fn rotate(
        &mut self,
        old: usize,
        touched: &mut Touched,
        rotated: &mut HashSet<usize>,
        rng: &mut ChaCha8Rng,
    ) {
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
            metadata_changes: Vec::new(),
            acl_mode: old_cred.acl_mode,
            slug: old_cred.slug.clone(),
            acl: Vec::new(),
            announced: true,
            late: false,
            deleted_at: None,
        };
        self.credentials.push(successor);
        self.credentials[old].deleted_at = Some(deleted_at);
        touched.credentials.extend([old, new]);
        rotated.extend([old, new]);
        let sessions: Vec<usize> = (0..self.sessions.len())
            .filter(|&s| {
                let session = &self.sessions[s];
                session.credential == old && session.announced && session.stopped_at.is_none()
            })
            .collect();
        let Some((&straggler, movers)) = sessions.split_last() else {
            return;
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
            } else if endpoint.session == straggler && left.len() < PROBED_ENDPOINTS_PER_CREDENTIAL
            {
                left.push(index);
            }
        }
        for (&moving, served) in movers.iter().zip(served) {
            self.move_session(moving, new, rotated_at, served, rng);
        }
        for endpoint in left {
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }
    }

    /// Moves session `moving` to the credential `new` a little after `rotated_at`: a new session
    /// from the same agent, and the endpoints it `served` back on the same addresses.
    fn move_session(
        &mut self,
        moving: usize,
        new: usize,
        rotated_at: DateTime<Utc>,
        served: Vec<usize>,
        rng: &mut ChaCha8Rng,
    ) {
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
                NewEndpoint {
                    session: new_session,
                    principal,
                    scheme,
                    host,
                    port,
                    created_at: moved_at,
                },
            );
            self.endpoints[moved].weight = weight;
            self.probes
                .push(Probe::Phases(Target::Endpoint(old_endpoint)));
            self.probes.push(Probe::Phases(Target::Endpoint(moved)));
        }
    }

    /// Hostname reuse: owner A's HTTPS endpoint goes; after a gap, owner B's comes up on the
    /// same hostname. Both are among the endpoints and sessions of the control phase, long
    /// before the gap.
    fn add_hostname_reuses(&mut self, count: usize, touched: &mut Touched, rng: &mut ChaCha8Rng) {
        let early = self.start + (self.end - self.start) / 5;
        for _ in 0..count {
            let Some(first) = choose(
                rng,
                self.endpoints.len(),
                |e| touched.credentials.contains(&self.credential_of(e)),
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
                |s| touched.credentials.contains(&self.sessions[s].credential),
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
            touched.credentials.extend([first_cred, second_cred]);
            self.reuse_hostname(first, second_session, rng);
        }
    }

    /// Deletes endpoint `first` and, after a gap with no endpoint, brings its hostname back on
    /// `second_session`, naming that session's owner; probes all three phases.
    fn reuse_hostname(&mut self, first: usize, second_session: usize, rng: &mut ChaCha8Rng) {
        let second_cred = self.sessions[second_session].credential;
        let gone_at = self.at_share(rng, 30, 45);
        let back_at = gone_at + self.share(rng, 5, 15);
        self.endpoints[first].deleted_at = Some(gone_at);
        let host = self.endpoints[first].host.clone();
        let second_owner = self.credentials[second_cred].owner;
        let second = self.push_endpoint(
            rng,
            NewEndpoint {
                session: second_session,
                principal: second_owner,
                scheme: Scheme::Https,
                host: host.clone(),
                port: 443,
                created_at: back_at,
            },
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

    /// An untouched, stable tunnel credential (authtoken or SSH key) with a live session: the
    /// credential and its latest live session.
    pub(super) fn choose_live_tunnel_credential(
        &self,
        touched: &Touched,
        rng: &mut ChaCha8Rng,
    ) -> Option<(usize, usize)> {
        let live = self.live_sessions();
        let credential = choose(
            rng,
            self.credentials.len(),
            |c| touched.credentials.contains(&c),
            |c| {
                self.credentials[c].kind != CredentialKind::ApiKey
                    && self.stable(c)
                    && live[c].is_some()
            },
        )?;
        Some((credential, live[credential]?))
    }

    /// ACL violations: an endpoint its credential's bind rules do not allow. A credential with
    /// no rules (or `*`) allows everything, so it is given exact rules instead.
    fn add_acl_violations(&mut self, count: usize, touched: &mut Touched, rng: &mut ChaCha8Rng) {
        for _ in 0..count {
            let Some((cred, session)) = self.choose_live_tunnel_credential(touched, rng) else {
                break;
            };
            if matches!(
                self.credentials[cred].acl_mode,
                AclMode::Open | AclMode::Star
            ) {
                self.credentials[cred].acl_mode = AclMode::Exact;
            }
            touched.credentials.insert(cred);
            let created_at = after(rng, self.sessions[session].started_at, self.step_ms);
            let endpoint = self.push_https_endpoint(rng, session, created_at);
            self.endpoints[endpoint].acl_violation = true;
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }
    }

    /// Principal mismatches: the endpoint names another owner than its credential's.
    fn add_principal_mismatches(
        &mut self,
        count: usize,
        announced_owners: &[usize],
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        for _ in 0..count {
            let Some(endpoint) = choose(
                rng,
                self.endpoints.len(),
                |e| touched.credentials.contains(&self.credential_of(e)),
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
            touched.credentials.insert(cred);
            self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
        }
    }

    /// Unknown addresses: HTTPS hostnames and TCP addresses no endpoint ever had.
    fn add_unknown_hostnames(&mut self, count: usize, rng: &mut ChaCha8Rng) {
        for n in 0..count {
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
    }

    /// Broken chains: an endpoint on a session never announced; a session on a credential never
    /// announced; a credential of a bot user never announced.
    fn add_broken_chains(
        &mut self,
        scenarios: &Scenarios,
        announced_owners: &[usize],
        rng: &mut ChaCha8Rng,
    ) {
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
            let owner = *pick(rng, announced_owners);
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
    }

    /// Credential metadata: `count` stable credentials of each kind (with a live session, for
    /// the kinds that have sessions) get device metadata, and the first of each kind a change
    /// mid-window that moves it to the next site; traffic on each side of the change.
    fn add_credential_metadata(
        &mut self,
        count: usize,
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        let live = self.live_sessions();
        for kind in [
            CredentialKind::Authtoken,
            CredentialKind::SshKey,
            CredentialKind::ApiKey,
        ] {
            for n in 0..count {
                let Some(cred) = choose(
                    rng,
                    self.credentials.len(),
                    |c| touched.credentials.contains(&c),
                    |c| {
                        let cred = &self.credentials[c];
                        cred.kind == kind
                            && self.stable(c)
                            && cred.acl_mode != AclMode::Preset
                            && cred.metadata_changes.is_empty()
                            && (kind == CredentialKind::ApiKey || live[c].is_some())
                    },
                ) else {
                    break;
                };
                touched.credentials.insert(cred);
                let site = rng.gen_range(1..=4u32);
                let environment = pick_str(rng, ENVIRONMENTS);
                let device = (kind != CredentialKind::ApiKey).then(|| format!("dev{}", 100 + cred));
                let metadata = |site: u32| device_metadata(device.as_deref(), site, environment);
                self.credentials[cred].metadata = metadata(site);
                if n > 0 {
                    continue;
                }
                let changed_at = self.at_share(rng, 35, 55);
                self.credentials[cred]
                    .metadata_changes
                    .push((changed_at, metadata(site % 4 + 1)));
                let mut probed = 0;
                for endpoint in 0..self.endpoints.len() {
                    if probed < PROBED_ENDPOINTS_PER_CREDENTIAL
                        && self.credential_of(endpoint) == cred
                        && self.plain(endpoint)
                    {
                        probed += 1;
                        self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
                    }
                }
            }
        }
    }
}

/// ngrok-style credential metadata, a JSON object in a string: `device_id` (when on a device),
/// `site` and `environment`. Written out by hand so that the bytes never depend on a JSON
/// library's key order; the values are plain identifiers.
pub(super) fn device_metadata(device: Option<&str>, site: u32, environment: &str) -> String {
    let device = device.map_or(String::new(), |d| format!(r#""device_id":"{d}","#));
    format!(r#"{{{device}"site":"site{site}","environment":"{environment}"}}"#)
}
