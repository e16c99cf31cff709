//! The seeded draws the generator and the scenarios share: ngrok-style ids, names from small
//! vocabularies, client and TCP addresses, sizes and traffic weights. Every draw samples `u32`s
//! from the ChaCha8 stream (never `usize`, which is not portable) and no floats, so that the same
//! seed gives the same fleet everywhere.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;

pub(super) const REGIONS: &[&str] = &["us", "eu", "ap", "au", "sa", "jp", "in"];
pub(super) const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "dusty", "eager", "fuzzy", "gentle", "hidden", "icy", "jolly",
    "keen", "lucky", "misty", "noble", "odd", "proud", "quiet", "rapid", "shy", "tidy", "upbeat",
    "vivid", "witty", "young", "zesty",
];
pub(super) const NOUNS: &[&str] = &[
    "otter", "falcon", "maple", "harbor", "comet", "badger", "cedar", "delta", "ember", "fjord",
    "glacier", "heron", "island", "jaguar", "kestrel", "lagoon", "meadow", "nebula", "orchid",
    "pebble", "quartz", "raven", "summit", "tundra", "willow",
];
pub(super) const BOT_PURPOSES: &[&str] = &[
    "ci",
    "deployer",
    "monitor",
    "webhook",
    "ingest",
    "backup",
    "preview",
    "iot-gateway",
    "scraper",
    "billing",
];
pub(super) const FIRST_NAMES: &[&str] = &[
    "ada", "bob", "chen", "dana", "eli", "fatima", "gus", "hana", "ivan", "jo",
];
pub(super) const TEAMS: &[&str] = &["platform", "payments", "growth", "infra", "data", "mobile"];
pub(super) const ENVIRONMENTS: &[&str] = &["prod", "staging", "lab"];
pub(super) const OSES: &[(&str, &str)] = &[
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "arm64"),
    ("windows", "amd64"),
];
pub(super) const AGENT_VERSIONS: &[&str] = &[
    "ngrok/3.18.4",
    "ngrok/3.22.1",
    "ngrok-go/1.12.0",
    "ngrok-rust/0.15.0",
];
pub(super) const HTTP_PATHS: &[&str] = &[
    "/",
    "/api/v1/items",
    "/api/v1/orders",
    "/health",
    "/webhooks/github",
    "/static/app.js",
    "/login",
    "/graphql",
];
pub(super) const USER_AGENTS: &[&str] = &[
    "curl/8.5.0",
    "Mozilla/5.0",
    "GitHub-Hookshot/7a1b2c3",
    "python-requests/2.32",
    "Go-http-client/2.0",
];
pub(super) const SERVER_IPS: &[&str] = &[
    "3.20.27.198",
    "3.134.73.173",
    "18.158.249.75",
    "52.28.187.118",
    "13.228.71.132",
];

/// Random ngrok-style id: prefix plus 27 base62 characters (the length of ngrok's KSUID ids).
pub(super) fn ngrok_id(rng: &mut ChaCha8Rng, prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 27);
    id.push_str(prefix);
    push_base62(rng, &mut id, 27);
    id
}

/// Appends `len` random base62 characters to `out`.
pub(super) fn push_base62(rng: &mut ChaCha8Rng, out: &mut String, len: usize) {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..len {
        out.push(char::from(ALPHABET[(rng.next_u32() % 62) as usize]));
    }
}

/// A uniformly chosen element (sampling a `u32`, which is portable; `usize` is not).
pub(super) fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len() as u32) as usize]
}

/// [`pick`] for string lists, where auto-deref would otherwise confuse inference.
pub(super) fn pick_str(rng: &mut ChaCha8Rng, items: &[&'static str]) -> &'static str {
    items[rng.gen_range(0..items.len() as u32) as usize]
}

/// `t` plus 1..=`step_ms` milliseconds: strictly after `t`.
pub(super) fn after(rng: &mut ChaCha8Rng, t: DateTime<Utc>, step_ms: i64) -> DateTime<Utc> {
    t + Duration::milliseconds(rng.gen_range(1..=step_ms))
}

/// A number with `1..=max_digits` digits, uniform in its decade: a log-uniform size without floats.
pub(super) fn log_uniform(rng: &mut ChaCha8Rng, min_digits: u32, max_digits: u32) -> u64 {
    let digits = rng.gen_range(min_digits..=max_digits);
    let low = 10u64.pow(digits - 1);
    rng.gen_range(low..low * 10)
}

/// An endpoint's share of the traffic: mostly light endpoints, a few heavy ones, so that a
/// top-owners report has something to rank.
pub(super) fn endpoint_weight(rng: &mut ChaCha8Rng) -> u32 {
    match rng.gen_range(0..10u32) {
        0 => rng.gen_range(50..=200),
        1..=3 => rng.gen_range(10..50),
        _ => rng.gen_range(1..10),
    }
}

/// The 256 client addresses traffic comes from (one in eight IPv6).
pub(super) fn client_ips(rng: &mut ChaCha8Rng) -> Vec<String> {
    (0..256)
        .map(|_| {
            if rng.gen_ratio(1, 8) {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    rng.next_u32() & 0xffff,
                    rng.next_u32() & 0xffff,
                    rng.next_u32() & 0xffff
                )
            } else {
                format!(
                    "{}.{}.{}.{}",
                    rng.gen_range(1..=223u32),
                    rng.next_u32() % 256,
                    rng.next_u32() % 256,
                    rng.gen_range(1..=254u32)
                )
            }
        })
        .collect()
}

/// An unused `N.tcp.ngrok.io:PORT` (9 hosts × 20,000 ports; validate() keeps fleets well below).
pub(super) fn fresh_tcp_address(
    rng: &mut ChaCha8Rng,
    used: &mut HashSet<(u32, u16)>,
) -> (String, u16) {
    loop {
        let address = (rng.gen_range(1..=9u32), rng.gen_range(10_000..30_000u16));
        if used.insert(address) {
            return (format!("{}.tcp.ngrok.io", address.0), address.1);
        }
    }
}

/// A fresh HTTPS hostname: `<adjective>-<noun>-<number>.ngrok.app`.
pub(super) fn https_host(rng: &mut ChaCha8Rng, number: usize) -> String {
    format!(
        "{}-{}-{number}.ngrok.app",
        pick_str(rng, ADJECTIVES),
        pick_str(rng, NOUNS)
    )
}
