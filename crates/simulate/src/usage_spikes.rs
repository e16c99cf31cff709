//! Usage spikes ([`Scenarios::usage_spikes`](super::Scenarios::usage_spikes)): owners whose
//! hourly bytes out jump far over their usual hours, for botmeter's `usage_spike` alert rule.
//!
//! Each spike is a burst of [`SPIKE_CONNECTIONS`] TCP connections, each carrying
//! [`SPIKE_BYTES_OUT`] bytes out, within ten minutes starting at 75–85% of the window, on a TCP
//! endpoint that is up through the whole window (a plain endpoint of a stable credential, on a
//! live session) of an owner no other scenario touched while there is one. An ordinary
//! connection carries at most 10 MB out, so the burst's hour is over any factor a rule would use
//! of the owner's median hour. The connections are probes: they count among the fleet's traffic
//! events, like every scenario's.

use chrono::Duration;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::scenarios::Touched;
use super::world::{Probe, Scheme, Target, World};

/// TCP connections in one usage spike.
pub const SPIKE_CONNECTIONS: usize = 10;
/// Bytes out of each connection of a usage spike (1 GB).
pub const SPIKE_BYTES_OUT: u64 = 1_000_000_000;
/// The burst lasts at most this long.
const SPIKE_SPAN_MS: i64 = 10 * 60 * 1000;

impl World {
    /// Adds `count` usage spikes (see the module docs), marking each owner and credential
    /// touched.
    pub(super) fn add_usage_spikes(
        &mut self,
        count: usize,
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        for _ in 0..count {
            let Some(endpoint) = choose_spike_endpoint(self, touched, rng) else {
                break;
            };
            let credential = self.credential_of(endpoint);
            touched.credentials.insert(credential);
            touched.owners.insert(self.credentials[credential].owner);
            let from = self.at_share(rng, 75, 85);
            let span = SPIKE_SPAN_MS.min((self.end - from).num_milliseconds() - 1);
            for _ in 0..SPIKE_CONNECTIONS {
                let at = from + Duration::milliseconds(rng.gen_range(0..span));
                self.probes
                    .push(Probe::Spike(Target::Endpoint(endpoint), at));
            }
        }
    }
}

/// A TCP endpoint up through the window, of an owner (and credential) untouched when there is
/// one, never deactivated.
fn choose_spike_endpoint(world: &World, touched: &Touched, rng: &mut ChaCha8Rng) -> Option<usize> {
    super::edits::choose(
        rng,
        world.endpoints.len(),
        |e| {
            let credential = world.credential_of(e);
            touched.credentials.contains(&credential)
                || touched
                    .owners
                    .contains(&world.credentials[credential].owner)
        },
        |e| {
            let endpoint = &world.endpoints[e];
            let owner = &world.owners[world.credentials[world.credential_of(e)].owner];
            endpoint.scheme == Scheme::Tcp
                && world.plain(e)
                && owner.active_changes.is_empty()
                && endpoint.created_at < world.start + (world.end - world.start) * 7 / 10
        },
    )
}
