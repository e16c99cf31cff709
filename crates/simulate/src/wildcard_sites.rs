//! The wildcard sites of a fleet ([`Scenarios::wildcard_sites`](super::Scenarios)): ngrok's
//! fleet pattern for bot users, one URL per device under a site's wildcard domain, with some
//! devices also on exact endpoints of their own, so that every resolution rule decides some
//! traffic: an exact name beats any wildcard, the longest wildcard suffix wins, a wildcard covers
//! names at any depth below it, and all of it as of the event's time.
//!
//! Under [`FLEET_DOMAIN`] (`factory.example.com`), with `count` sites:
//!
//! - `https://*.factory.example.com`, the catch-all: a fleet gateway authtoken (a user's when
//!   there is one) bound by `bind:*.factory.example.com`; up in the control phase, deleted at
//!   80–90% of the window.
//! - `https://*.siteN.factory.example.com` per site: a site gateway authtoken (a bot user's when
//!   there is one) with the same rule, which allows the wildcard names themselves; up in the
//!   control phase, site 1's deleted at 60–72%.
//! - `https://devK.siteN.factory.example.com` for the first two devices of each site: a
//!   per-device authtoken of another owner bound by `bind:devK.siteN.factory.example.com`; the
//!   first device's from 25–35% to 45–55%, the second's from 40–50% to 84–95% (which may
//!   outlive site 1's wildcard and the catch-all).
//!
//! Traffic ([`Target::Served`]) goes to [`DEVICES_PER_SITE`] devices per site (`devK`, numbered
//! across the fleet), to `a.devK…` under the first and third device of each site (nested: the
//! first device's exact endpoint does not serve it), and to two names only the catch-all covers
//! (`status.factory.example.com`, and a device of a site with no wildcard of its own). So a
//! device of site 1 goes to its site's wildcard while that serves (the longer suffix), to the
//! catch-all before and after, and nowhere (`no_endpoint`) once both are gone; its first two
//! devices to their exact endpoints while those serve. Every phase of every name gets a probe.
//!
//! The gateway and device credentials carry site metadata (`{"site":"siteN",…}`, with
//! `device_id` for devices), the fleet gateway `{"team":"platform",…}`.

use chrono::{DateTime, Utc};
use model::OwnerKind;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::draw::after;
use super::edits::NewEndpoint;
use super::scenarios::{device_metadata, Touched};
use super::world::{AclMode, Probe, Scheme, ServedHost, Target, World};

/// The domain every wildcard site is under.
pub(super) const FLEET_DOMAIN: &str = "factory.example.com";
/// Device hostnames per site.
pub(super) const DEVICES_PER_SITE: usize = 8;

/// The lives of the exact endpoints of a site's first devices, in percent of the window:
/// ((created from, to), (deleted from, to)).
const EXACT_DEVICE_LIVES: [((i64, i64), (i64, i64)); 2] =
    [((25, 35), (45, 55)), ((40, 50), (84, 95))];

/// A wildcard endpoint a scenario adds: its owner, its host (`*.suffix`), and its credential's
/// description and metadata.
#[derive(Debug)]
struct Gateway {
    owner: usize,
    host: String,
    description: String,
    metadata: String,
}

impl World {
    /// Adds `count` wildcard sites under [`FLEET_DOMAIN`] and the fleet's catch-all wildcard,
    /// the exact device endpoints that overlap them, and the hostnames their traffic goes to.
    pub(super) fn add_wildcard_sites(
        &mut self,
        count: usize,
        touched: &mut Touched,
        rng: &mut ChaCha8Rng,
    ) {
        if count == 0 {
            return;
        }
        let Some(fleet_owner) = self.pick_owner(rng, OwnerKind::User, &[], &touched.owners) else {
            return;
        };
        touched.owners.insert(fleet_owner);
        let catch_all = self.push_gateway(
            rng,
            Gateway {
                owner: fleet_owner,
                host: format!("*.{FLEET_DOMAIN}"),
                description: format!("fleet gateway for {FLEET_DOMAIN}"),
                metadata: r#"{"team":"platform","environment":"prod"}"#.to_owned(),
            },
            touched,
        );
        self.endpoints[catch_all].deleted_at = Some(self.at_share(rng, 80, 90));

        let mut device = 0;
        for site in 1..=count {
            let Some(owner) =
                self.pick_owner(rng, OwnerKind::BotUser, &[fleet_owner], &touched.owners)
            else {
                break;
            };
            touched.owners.insert(owner);
            let domain = format!("site{site}.{FLEET_DOMAIN}");
            let wildcard = self.push_gateway(
                rng,
                Gateway {
                    owner,
                    host: format!("*.{domain}"),
                    description: format!("site gateway for site{site}"),
                    metadata: device_metadata(None, site as u32, "prod"),
                },
                touched,
            );
            if site == 1 {
                self.endpoints[wildcard].deleted_at = Some(self.at_share(rng, 60, 72));
            }
            let device_owner = self
                .pick_owner(rng, OwnerKind::BotUser, &[owner], &touched.owners)
                .unwrap_or(owner);
            touched.owners.insert(device_owner);
            for n in 1..=DEVICES_PER_SITE {
                device += 1;
                let host = format!("dev{device}.{domain}");
                if let Some(&((made_lo, made_hi), (gone_lo, gone_hi))) =
                    EXACT_DEVICE_LIVES.get(n - 1)
                {
                    let created_at = self.at_share(rng, made_lo, made_hi);
                    let deleted_at = self.at_share(rng, gone_lo, gone_hi);
                    self.push_device_endpoint(rng, device_owner, (device, site), &host, created_at);
                    let endpoint = self.endpoints.len() - 1;
                    self.endpoints[endpoint].deleted_at = Some(deleted_at);
                }
                if n == 1 || n == 3 {
                    self.push_served_host(rng, format!("a.{host}"));
                }
                self.push_served_host(rng, host);
            }
        }
        device += 1;
        self.push_served_host(rng, format!("dev{device}.site{}.{FLEET_DOMAIN}", count + 1));
        self.push_served_host(rng, format!("status.{FLEET_DOMAIN}"));
    }

    /// A gateway authtoken of `gateway.owner`, bound by `bind:*.`[`FLEET_DOMAIN`], with its one
    /// session and its wildcard endpoint, created in the control phase; returns the endpoint.
    fn push_gateway(
        &mut self,
        rng: &mut ChaCha8Rng,
        gateway: Gateway,
        touched: &mut Touched,
    ) -> usize {
        let created_at = after(rng, self.owners[gateway.owner].created_at, self.step_ms);
        let cred = self.push_credential(rng, gateway.owner, created_at);
        touched.credentials.insert(cred);
        let credential = &mut self.credentials[cred];
        credential.description = gateway.description;
        credential.metadata = gateway.metadata;
        credential.acl_mode = AclMode::Preset;
        credential.acl = vec![format!("bind:*.{FLEET_DOMAIN}")];
        let started_at = after(rng, created_at, self.step_ms);
        let session = self.push_session(rng, cred, started_at);
        let created_at = after(rng, started_at, self.step_ms);
        let endpoint = self.push_endpoint(
            rng,
            NewEndpoint {
                session,
                principal: gateway.owner,
                scheme: Scheme::Https,
                host: gateway.host,
                port: 443,
                created_at,
            },
        );
        // A wildcard is never a target: traffic names the hostnames under it.
        self.endpoints[endpoint].weight = 0;
        endpoint
    }

    /// Device `device` of site `site`: a per-device authtoken of `owner` bound to `host` alone,
    /// started in the control phase, and its exact endpoint on `host` from `created_at`.
    fn push_device_endpoint(
        &mut self,
        rng: &mut ChaCha8Rng,
        owner: usize,
        (device, site): (usize, usize),
        host: &str,
        created_at: DateTime<Utc>,
    ) {
        let cred_at = after(rng, self.owners[owner].created_at, self.step_ms);
        let cred = self.push_credential(rng, owner, cred_at);
        let credential = &mut self.credentials[cred];
        credential.description = format!("device dev{device} at site{site}");
        credential.metadata = device_metadata(Some(&format!("dev{device}")), site as u32, "prod");
        credential.acl_mode = AclMode::Preset;
        credential.acl = vec![format!("bind:{host}")];
        let started_at = after(rng, cred_at, self.step_ms);
        let session = self.push_session(rng, cred, started_at);
        let endpoint = self.push_endpoint(
            rng,
            NewEndpoint {
                session,
                principal: owner,
                scheme: Scheme::Https,
                host: host.to_owned(),
                port: 443,
                created_at,
            },
        );
        self.endpoints[endpoint].weight = rng.gen_range(1..10);
        self.probes.push(Probe::Phases(Target::Endpoint(endpoint)));
    }

    /// A hostname with traffic in every phase of what serves it, and a light share of the rest.
    fn push_served_host(&mut self, rng: &mut ChaCha8Rng, host: String) {
        let weight = rng.gen_range(1..10);
        self.served_hosts.push(ServedHost { host, weight });
        self.probes
            .push(Probe::Phases(Target::Served(self.served_hosts.len() - 1)));
    }
}
