//! The traffic of a world: HTTP requests and TCP connections on its targets (each endpoint
//! during its life, the addresses with no endpoint, and the hostnames under wildcard endpoints),
//! the scenarios' probes first, then events drawn by the targets' weights; each one's expected
//! outcome read off the world at its time. No event falls within [`GUARD_MS`] of a boundary that
//! changes its outcome.
//!
//! A wildcard endpoint is never a target itself (no traffic names `*.suffix`): traffic to a
//! hostname under it is a [`Target::Served`], whose endpoint is resolved at each event's time
//! among every endpoint covering the name ([`World::candidates`], [`World::serving_endpoint`]).

use chrono::{DateTime, Duration, Utc};
use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::draw::{log_uniform, pick, pick_str, HTTP_PATHS, SERVER_IPS, USER_AGENTS};
use super::encode::{self, ts};
use super::generate::{SimMessage, GUARD_MS};
use super::truth::{metadata_values, ExpectedEvent, GroundTruth, Usage, METADATA_KEYS};
use super::usage_spikes::SPIKE_BYTES_OUT;
use super::world::{address, Probe, Scheme, Target, World};

/// A credential's metadata values ([`metadata_values`]) from each instant on: its creation's,
/// then each change's.
type MetadataHistory = Vec<(DateTime<Utc>, [String; METADATA_KEYS.len()])>;

/// What the traffic of a world looks up for every event, computed once: the endpoints that may
/// serve each [`Target::Served`] hostname, best first, and each credential's metadata values.
#[derive(Debug)]
struct Lookups {
    served: Vec<Vec<usize>>,
    metadata: Vec<MetadataHistory>,
}

impl Lookups {
    fn new(world: &World) -> Self {
        let served = world
            .served_hosts
            .iter()
            .map(|served| world.candidates(&served.host))
            .collect();
        let metadata = world
            .credentials
            .iter()
            .map(|cred| {
                std::iter::once((DateTime::<Utc>::MIN_UTC, cred.metadata.as_str()))
                    .chain(
                        cred.metadata_changes
                            .iter()
                            .map(|(at, m)| (*at, m.as_str())),
                    )
                    .map(|(since, metadata)| (since, metadata_values(metadata)))
                    .collect()
            })
            .collect();
        Self { served, metadata }
    }

    /// Credential `credential`'s metadata values as of `t`.
    fn metadata_at(&self, credential: usize, t: DateTime<Utc>) -> &[String] {
        let history = &self.metadata[credential];
        let (_, values) = history
            .iter()
            .take_while(|(since, _)| *since <= t)
            .last()
            .unwrap_or(&history[0]);
        values
    }
}

/// One traffic event to draw: on `target` at `at`, a usage spike's connection or not.
#[derive(Debug, Clone, Copy)]
struct TrafficEvent {
    target: Target,
    at: DateTime<Utc>,
    spike: bool,
}

/// Where and when one connection happens, as its `conn` reports it.
#[derive(Debug)]
struct ConnectionSite<'a> {
    /// The address it reached: `conn.server_name` and `conn.server_port`.
    host: &'a str,
    port: u16,
    client_ip: &'a str,
    /// The ngrok ingress it came through.
    server_ip: &'a str,
    /// When it ended (the event's usage time).
    at: DateTime<Utc>,
    /// How long its target had been up at `at`: the longest it can have lasted.
    since_up_ms: i64,
}

/// An HTTP method: mostly `GET`.
fn http_method(rng: &mut ChaCha8Rng) -> &'static str {
    match rng.gen_range(0..100u32) {
        0..=69 => "GET",
        70..=84 => "POST",
        85..=89 => "PUT",
        90..=92 => "DELETE",
        93..=95 => "HEAD",
        96..=97 => "PATCH",
        _ => "OPTIONS",
    }
}

/// An HTTP response status: mostly `200`.
fn http_status(rng: &mut ChaCha8Rng) -> u16 {
    match rng.gen_range(0..100u32) {
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
    }
}

impl World {
    fn weight(&self, target: Target) -> u32 {
        match target {
            Target::Endpoint(index) => self.endpoints[index].weight,
            Target::Unbound(index) => self.unbound[index].weight,
            Target::Served(index) => self.served_hosts[index].weight,
        }
    }

    /// When traffic on the target may happen, `[lo, hi)`, and the instant its connections can
    /// have started from at the earliest.
    fn span(
        &self,
        lookups: &Lookups,
        target: Target,
    ) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
        match target {
            Target::Served(index) => {
                // From the first endpoint that can serve it to the window's end: whatever
                // serves it at each instant, if anything.
                let first = lookups.served[index]
                    .iter()
                    .map(|&e| self.endpoints[e].created_at)
                    .min()
                    .expect("a served hostname has an endpoint that covers it");
                (first + Duration::milliseconds(2), self.end, first)
            }
            Target::Endpoint(index) => {
                let endpoint = &self.endpoints[index];
                // Strictly after the endpoint came up, before it goes or the window ends.
                let lo = endpoint.created_at + Duration::milliseconds(2);
                (
                    lo,
                    endpoint.deleted_at.unwrap_or(self.end),
                    endpoint.created_at,
                )
            }
            Target::Unbound(index) => {
                let unbound = &self.unbound[index];
                (
                    unbound.from + Duration::milliseconds(2),
                    unbound.to,
                    unbound.from,
                )
            }
        }
    }

    /// The instants around which no traffic on the target may fall: anything that changes its
    /// outcome (a deletion, a (de)activation, a metadata change, the ends of a gap, an endpoint
    /// coming up or going under a served hostname).
    fn boundaries(&self, lookups: &Lookups, target: Target) -> Vec<DateTime<Utc>> {
        match target {
            Target::Endpoint(index) => {
                let mut times = self.endpoint_boundaries(index);
                times.sort();
                times
            }
            Target::Served(index) => {
                let mut times: Vec<DateTime<Utc>> = lookups.served[index]
                    .iter()
                    .flat_map(|&e| {
                        let mut times = self.endpoint_boundaries(e);
                        times.push(self.endpoints[e].created_at);
                        times
                    })
                    .collect();
                times.sort();
                times.dedup();
                times
            }
            Target::Unbound(index) => {
                let unbound = &self.unbound[index];
                if unbound.is_gap {
                    vec![unbound.from, unbound.to]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// What changes the outcome of traffic on endpoint `index` while it serves: its deletion,
    /// its credential's deletion or metadata changes, its owner's deletion and (de)activations.
    fn endpoint_boundaries(&self, index: usize) -> Vec<DateTime<Utc>> {
        let endpoint = &self.endpoints[index];
        let cred = &self.credentials[self.sessions[endpoint.session].credential];
        let owner = &self.owners[cred.owner];
        [endpoint.deleted_at, cred.deleted_at, owner.deleted_at]
            .into_iter()
            .flatten()
            .chain(owner.active_changes.iter().map(|(at, _)| *at))
            .chain(cred.metadata_changes.iter().map(|(at, _)| *at))
            .collect()
    }

    /// A time in `[lo, hi)` at least [`GUARD_MS`] from every boundary. The scenarios keep their
    /// boundaries minutes apart, so this ends quickly.
    fn draw_time(
        rng: &mut ChaCha8Rng,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
        boundaries: &[DateTime<Utc>],
    ) -> DateTime<Utc> {
        let span = (hi - lo).num_milliseconds();
        assert!(span > 2 * GUARD_MS, "no room for traffic in [{lo}, {hi})");
        loop {
            let at = lo + Duration::milliseconds(rng.gen_range(0..span));
            if boundaries
                .iter()
                .all(|b| (at - *b).num_milliseconds().abs() >= GUARD_MS)
            {
                return at;
            }
        }
    }

    /// The probes as (target, time, whether a usage spike's connection): one event in every
    /// phase of every scenario target, the late chains' first events, and the usage spikes.
    fn probe_times(
        &self,
        lookups: &Lookups,
        rng: &mut ChaCha8Rng,
    ) -> Vec<(Target, DateTime<Utc>, bool)> {
        let mut out = Vec::new();
        for probe in &self.probes {
            match *probe {
                Probe::At(target, at) => out.push((target, at, false)),
                Probe::Spike(target, at) => out.push((target, at, true)),
                Probe::Phases(target) => {
                    let (lo, hi, _) = self.span(lookups, target);
                    let boundaries = self.boundaries(lookups, target);
                    let mut cuts: Vec<DateTime<Utc>> = boundaries
                        .iter()
                        .copied()
                        .filter(|b| *b > lo && *b < hi)
                        .collect();
                    cuts.insert(0, lo);
                    cuts.push(hi);
                    for phase in cuts.windows(2) {
                        if (phase[1] - phase[0]).num_milliseconds() > 4 * GUARD_MS {
                            out.push((
                                target,
                                Self::draw_time(rng, phase[0], phase[1], &boundaries),
                                false,
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// `count` traffic events, in time order: the probes first, then events on targets drawn by
    /// weight, each counted in `truth` (and listed when `record` is set).
    pub(super) fn traffic(
        &self,
        count: usize,
        record: bool,
        rng: &mut ChaCha8Rng,
        truth: &mut GroundTruth,
    ) -> Vec<SimMessage> {
        let mut out = Vec::with_capacity(count);
        if count == 0 {
            return out;
        }
        let lookups = Lookups::new(self);
        let targets: Vec<Target> = (0..self.endpoints.len())
            .filter(|&e| !self.endpoints[e].is_wildcard())
            .map(Target::Endpoint)
            .chain((0..self.unbound.len()).map(Target::Unbound))
            .chain((0..self.served_hosts.len()).map(Target::Served))
            .collect();
        let weights = WeightedIndex::new(targets.iter().map(|t| self.weight(*t)))
            .expect("validate() ensures endpoints");
        let boundaries: Vec<Vec<DateTime<Utc>>> = targets
            .iter()
            .map(|t| self.boundaries(&lookups, *t))
            .collect();
        // Every phase of every scenario first, so that each occurs however small the fleet.
        let probes = self.probe_times(&lookups, rng);
        let forced = probes.len().min(count);
        for (target, at, spike) in probes.into_iter().take(count) {
            let event = TrafficEvent { target, at, spike };
            out.push(self.traffic_event(rng, &lookups, event, record, truth));
        }
        for _ in forced..count {
            let index = weights.sample(rng);
            let target = targets[index];
            let (lo, hi, _) = self.span(&lookups, target);
            let at = Self::draw_time(rng, lo, hi, &boundaries[index]);
            let event = TrafficEvent {
                target,
                at,
                spike: false,
            };
            out.push(self.traffic_event(rng, &lookups, event, record, truth));
        }
        out.sort_by_key(|m| m.event_time);
        out
    }

    /// One HTTP request or TCP connection on `target` at `at`, counted in the truth.
    fn traffic_event(
        &self,
        rng: &mut ChaCha8Rng,
        lookups: &Lookups,
        event: TrafficEvent,
        record: bool,
        truth: &mut GroundTruth,
    ) -> SimMessage {
        let TrafficEvent { target, at, spike } = event;
        let (scheme, host, port) = match target {
            Target::Endpoint(index) => {
                let e = &self.endpoints[index];
                (e.scheme, e.host.as_str(), e.port)
            }
            Target::Unbound(index) => {
                let u = &self.unbound[index];
                (u.scheme, u.host.as_str(), u.port)
            }
            Target::Served(index) => (Scheme::Https, self.served_hosts[index].host.as_str(), 443),
        };
        // The endpoint the event reaches: the target itself, or whichever serves the name now.
        let endpoint = match target {
            Target::Endpoint(index) => Some(index),
            Target::Unbound(_) => None,
            Target::Served(index) => self.serving_endpoint(&lookups.served[index], at),
        };
        let up_since = match (target, endpoint) {
            (Target::Served(_), Some(index)) => self.endpoints[index].created_at,
            _ => self.span(lookups, target).2,
        };
        let is_http = scheme == Scheme::Https && rng.gen_ratio(3, 4);
        let site = ConnectionSite {
            host,
            port,
            client_ip: pick(rng, &self.client_ips).as_str(),
            server_ip: pick_str(rng, SERVER_IPS),
            at,
            since_up_ms: (at - up_since).num_milliseconds(),
        };
        let (event_id, payload, usage) = if is_http {
            self.http_request(rng, &site)
        } else {
            self.tcp_connection(rng, &site, spike)
        };
        let (outcome, credential) = match endpoint {
            Some(index) => self.expected(index, at, usage),
            None => (ExpectedEvent::unattributed("no_endpoint", usage), None),
        };
        let metadata = credential
            .filter(|_| outcome.owner_id.is_some())
            .map(|c| lookups.metadata_at(c, at));
        truth.record(&event_id, at, outcome, metadata, record);
        SimMessage {
            key: address(scheme, host, port),
            payload,
            event_time: at,
        }
    }

    /// An `http_request_complete.v0` at `site`: its event id, payload and usage.
    fn http_request(
        &self,
        rng: &mut ChaCha8Rng,
        site: &ConnectionSite<'_>,
    ) -> (String, Vec<u8>, Usage) {
        let latency_ms = rng.gen_range(0..site.since_up_ms.min(30_000));
        let method = http_method(rng);
        let status_code = http_status(rng);
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
                client_ip: site.client_ip,
                end_ts: None,
                server_ip: site.server_ip,
                server_name: site.host,
                server_port: site.port,
                start_ts: ts(site.at - Duration::milliseconds(latency_ms)),
            },
            http: encode::Http {
                request: encode::HttpRequest {
                    body_length: request_body,
                    method,
                    url: encode::HttpUrl {
                        host: site.host,
                        path: pick_str(rng, HTTP_PATHS),
                        scheme: "https",
                    },
                    user_agent: pick_str(rng, USER_AGENTS),
                    version: "HTTP/2.0",
                },
                response: encode::HttpResponse {
                    body_length: response_body,
                    status_code,
                },
            },
        };
        let env = self.envelope(rng, "http_request_complete.v0", site.at, None, object);
        (env.event_id.clone(), encode::to_bytes(&env), Usage::http())
    }

    /// A `tcp_connection_closed.v0` at `site`: its event id, payload and usage; a usage spike's
    /// (`spike`) carries [`SPIKE_BYTES_OUT`] bytes out.
    fn tcp_connection(
        &self,
        rng: &mut ChaCha8Rng,
        site: &ConnectionSite<'_>,
        spike: bool,
    ) -> (String, Vec<u8>, Usage) {
        let duration_ms = rng.gen_range(1..site.since_up_ms.min(600_000));
        let bytes_in = log_uniform(rng, 1, 5);
        let drawn_bytes_out = log_uniform(rng, 2, 7);
        let bytes_out = if spike {
            SPIKE_BYTES_OUT
        } else {
            drawn_bytes_out
        };
        let object = encode::TcpObject {
            conn: encode::Conn {
                bytes_in: Some(bytes_in),
                bytes_out: Some(bytes_out),
                client_ip: site.client_ip,
                end_ts: Some(ts(site.at)),
                server_ip: site.server_ip,
                server_name: site.host,
                server_port: site.port,
                start_ts: ts(site.at - Duration::milliseconds(duration_ms)),
            },
        };
        // event_timestamp = conn.end_ts: a connection is reported when it closes.
        let env = self.envelope(rng, "tcp_connection_closed.v0", site.at, None, object);
        (
            env.event_id.clone(),
            encode::to_bytes(&env),
            Usage::tcp(bytes_in, bytes_out),
        )
    }

    /// What botmeter must conclude about traffic that endpoint `index` serves at `at`: the world
    /// as of `at`, link by link, then the flags in botmeter's order. Also the credential whose
    /// metadata the usage is grouped by, when the chain reaches one.
    fn expected(
        &self,
        index: usize,
        at: DateTime<Utc>,
        usage: Usage,
    ) -> (ExpectedEvent, Option<usize>) {
        let endpoint = &self.endpoints[index];
        let mut outcome = ExpectedEvent {
            endpoint_id: Some(endpoint.id.clone()),
            ..ExpectedEvent::unattributed("unknown_session", usage)
        };
        let session = &self.sessions[endpoint.session];
        if !session.announced {
            return (outcome, None);
        }
        let cred_index = session.credential;
        let cred = &self.credentials[cred_index];
        outcome.credential_id = Some(cred.id.clone());
        if !cred.announced {
            outcome.unattributed_reason = Some("unknown_credential".to_owned());
            return (outcome, Some(cred_index));
        }
        let owner = &self.owners[cred.owner];
        if !owner.announced {
            outcome.unattributed_reason = Some("unknown_owner".to_owned());
            return (outcome, Some(cred_index));
        }
        let flags = &mut outcome.flags;
        // Deleting a bot user revokes its credentials, published or not.
        if self
            .revoked_at(cred_index)
            .is_some_and(|revoked| revoked <= at)
        {
            flags.push("credential_deleted".to_owned());
        }
        if owner.deleted_at.is_some_and(|deleted| deleted <= at) {
            flags.push("owner_deleted".to_owned());
        } else if !owner.active_at(at) {
            flags.push("owner_inactive".to_owned());
        }
        if endpoint.acl_violation {
            flags.push("acl_violation".to_owned());
        }
        if endpoint.principal != cred.owner {
            flags.push("principal_mismatch".to_owned());
        }
        outcome.owner_id = Some(owner.id.clone());
        outcome.unattributed_reason = None;
        (outcome, Some(cred_index))
    }
}
