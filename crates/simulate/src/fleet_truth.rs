//! The fleet status a simulated account implies ([`GroundTruth::fleet`]), and the devices that
//! drop and come back ([`Scenarios::device_drops`](super::Scenarios::device_drops)).
//!
//! The truth records, per authtoken and SSH key the control plane announces, its owner, creation,
//! revocation (its deletion or its bot user's, whichever first), its announced agent sessions
//! with what their start event says about the agent and the endpoints each served, and the usage
//! times of the traffic attributed to it (when events are recorded).
//! [`GroundTruth::fleet_at`] reads the state botmeter's `/v1/fleet` must report at any instant
//! off it, by the rules the API documents.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use model::CredentialKind;
use rand_chacha::ChaCha8Rng;

use super::draw::ngrok_id;
use super::edits::NewEndpoint;
use super::scenarios::Touched;
use super::truth::{FleetCredential, FleetSession, GroundTruth};
use super::world::{Probe, Session, Target, World};

/// What `/v1/fleet` must say of one credential at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedFleetCredential {
    /// `online`, `reconnecting`, `dropped` or `never_seen`.
    pub state: &'static str,
    /// The sessions online, by id.
    pub agents_online: Vec<String>,
    /// Endpoints those sessions serve.
    pub endpoints_online: u64,
    /// The later of its latest session start and its latest attributed traffic.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When its last session stopped, when none is online.
    pub dropped_at: Option<DateTime<Utc>>,
}

impl GroundTruth {
    /// The fleet as of `at` (events strictly before it count): every credential of
    /// [`GroundTruth::fleet`] created before `at` and not revoked before it, with its state,
    /// `reconnecting` while its last session stopped at most `drop_grace` before `at`.
    /// `last_seen_at` needs the traffic times, recorded only with the events.
    pub fn fleet_at(
        &self,
        at: DateTime<Utc>,
        drop_grace: Duration,
    ) -> BTreeMap<String, ExpectedFleetCredential> {
        let mut out = BTreeMap::new();
        for (id, credential) in &self.fleet {
            if credential.created_at >= at || credential.revoked_at.is_some_and(|r| r < at) {
                continue;
            }
            let started: Vec<&FleetSession> = credential
                .sessions
                .iter()
                .filter(|s| s.started_at < at)
                .collect();
            let online: Vec<&&FleetSession> = started
                .iter()
                .filter(|s| s.stopped_at.is_none_or(|stop| stop >= at))
                .collect();
            let endpoints_online = online
                .iter()
                .flat_map(|s| &s.endpoints)
                .filter(|(created, deleted)| *created < at && deleted.is_none_or(|d| d >= at))
                .count() as u64;
            let last_start = started.iter().map(|s| s.started_at).max();
            let last_traffic = credential.traffic.iter().copied().filter(|t| *t < at).max();
            let last_stop = started.iter().filter_map(|s| s.stopped_at).max();
            let (state, dropped_at) = if !online.is_empty() {
                ("online", None)
            } else if started.is_empty() {
                ("never_seen", None)
            } else {
                let stop = last_stop.expect("every started session stopped");
                let state = if at - stop > drop_grace {
                    "dropped"
                } else {
                    "reconnecting"
                };
                (state, Some(stop))
            };
            let mut agents_online: Vec<String> =
                online.iter().map(|s| s.session_id.clone()).collect();
            agents_online.sort();
            out.insert(
                id.clone(),
                ExpectedFleetCredential {
                    state,
                    agents_online,
                    endpoints_online,
                    last_seen_at: last_start.max(last_traffic),
                    dropped_at,
                },
            );
        }
        out
    }
}

impl World {
    /// [`GroundTruth::fleet`] without the traffic times (added as traffic is drawn).
    pub(super) fn fleet_truth(&self) -> BTreeMap<String, FleetCredential> {
        let mut fleet = BTreeMap::new();
        for (index, cred) in self.credentials.iter().enumerate() {
            if !cred.announced || cred.kind == CredentialKind::ApiKey {
                continue;
            }
            let sessions = self
                .sessions
                .iter()
                .enumerate()
                .filter(|(_, s)| s.credential == index && s.announced)
                .map(|(s, session)| FleetSession {
                    session_id: session.id.clone(),
                    started_at: session.started_at,
                    stopped_at: session.stopped_at,
                    region: session.region.to_owned(),
                    os: session.os.0.to_owned(),
                    user_agent: session.user_agent.to_owned(),
                    endpoints: self
                        .endpoints
                        .iter()
                        .filter(|e| e.session == s)
                        .map(|e| (e.created_at, e.deleted_at))
                        .collect(),
                })
                .collect();
            fleet.insert(
                cred.id.clone(),
                FleetCredential {
                    owner_id: self.owners[cred.owner].id.clone(),
                    kind: cred.kind.as_str().to_owned(),
                    created_at: cred.created_at,
                    revoked_at: self.revoked_at(index),
                    sessions,
                    traffic: Vec::new(),
                },
            );
        }
        fleet
    }

    /// Devices that drop and come back: `count` authtokens or SSH keys with agents online (on
    /// stable credentials, untouched by other scenarios while there are any) lose every session
    /// at 30–45% of the window (`agent_session_stop.v0`; their endpoints are deleted a
    /// millisecond before); every other one comes back at 55–70% with a new session from the
    /// same agent and its endpoints on the same addresses. Traffic in every phase of each
    /// endpoint.
    pub(super) fn add_device_drops(
        &mut self,
        count: usize,
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        for drop in 0..count {
            let Some((credential, _)) = self.choose_live_tunnel_credential(touched, rng) else {
                break;
            };
            touched.credentials.insert(credential);
            let dropped_at = self.at_share(rng, 30, 45);
            let back_at = (drop % 2 == 0).then(|| self.at_share(rng, 55, 70));
            let sessions: Vec<usize> = (0..self.sessions.len())
                .filter(|&s| {
                    let session = &self.sessions[s];
                    session.credential == credential
                        && session.announced
                        && session.stopped_at.is_none()
                })
                .collect();
            for session in sessions {
                self.sessions[session].stopped_at = Some(dropped_at + Duration::milliseconds(1));
                let served: Vec<usize> = (0..self.endpoints.len())
                    .filter(|&e| {
                        self.endpoints[e].session == session
                            && self.endpoints[e].deleted_at.is_none()
                    })
                    .collect();
                for &endpoint in &served {
                    self.endpoints[endpoint].deleted_at = Some(dropped_at);
                    self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
                }
                if let Some(back_at) = back_at {
                    self.come_back(session, back_at, &served, rng);
                }
            }
        }
    }

    /// A new session of the agent of `session` at `back_at`, serving the endpoints `served`
    /// again on the same addresses.
    fn come_back(
        &mut self,
        session: usize,
        back_at: DateTime<Utc>,
        served: &[usize],
        rng: &mut ChaCha8Rng,
    ) {
        let from = &self.sessions[session];
        let again = Session {
            id: ngrok_id(rng, "ts_"),
            credential: from.credential,
            started_at: back_at - Duration::milliseconds(1),
            agent_ip: from.agent_ip.clone(),
            region: from.region,
            os: from.os,
            user_agent: from.user_agent,
            announced: true,
            late: false,
            stopped_at: None,
        };
        let new_session = self.sessions.len();
        self.sessions.push(again);
        for &old in served {
            let (principal, scheme, host, port, weight) = {
                let e = &self.endpoints[old];
                (e.principal, e.scheme, e.host.clone(), e.port, e.weight)
            };
            let back = self.push_endpoint(
                rng,
                NewEndpoint {
                    session: new_session,
                    principal,
                    scheme,
                    host,
                    port,
                    created_at: back_at,
                },
            );
            self.endpoints[back].weight = weight;
            self.probes.push(Probe::Phases(Target::Endpoint(back)));
        }
    }
}
