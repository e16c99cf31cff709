//! Control events that arrive after the traffic that needs them: the late chains a fleet adds
//! ([`FleetConfig::late_control`](super::FleetConfig::late_control)), each a credential, agent
//! session and endpoint created milliseconds before their first traffic and published after it,
//! and [`late_control_scenario`], a tiny fleet made of nothing else, for the race between the
//! topics.

use std::collections::HashSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use model::OwnerKind;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::draw::{client_ips, ngrok_id, pick, pick_str, BOT_PURPOSES};
use super::generate::Fleet;
use super::world::{Owner, Probe, Target, World};

/// Traffic events in a [`late_control_scenario`] fleet.
pub const LATE_SCENARIO_TRAFFIC_EVENTS: usize = 20;

impl World {
    /// Late chains: created milliseconds before their first traffic, published after it. Their
    /// owners are untouched while there are some, and never deleted.
    pub(super) fn add_late_chains(
        &mut self,
        count: usize,
        announced_owners: &[usize],
        touched_owners: &HashSet<usize>,
        rng: &mut ChaCha8Rng,
    ) {
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
        let late_owners = [calm, alive, announced_owners.to_vec()]
            .into_iter()
            .find(|o| !o.is_empty())
            .unwrap_or_default();
        for _ in 0..count {
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
        served_hosts: Vec::new(),
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
