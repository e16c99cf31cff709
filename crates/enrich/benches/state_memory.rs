//! How much memory the ownership state takes for a fleet of live agent sessions and endpoints, and
//! how fast the as-of join runs on it.
//!
//! Builds an [`OwnershipState`] from real decoded events (`model::decode` on JSON bytes, as the
//! control loop does): N/100 bot users, N/10 credentials, N agent sessions and N endpoints with
//! ngrok-style ids (`ts_2…`, `ep_2…`, `cr_2…`, 30 bytes) and hostnames (`<adj>-<noun>-<n>.ngrok.app`),
//! reads the process's resident memory (`VmRSS`, `VmHWM` from `/proc/self/status`) before and
//! after, then times `resolve` on random live hostnames (and on hot ones, endpoint ids and unknown
//! hostnames). Then churn: 1% and then half of the sessions stop and their endpoints go away,
//! `evict_ended` is timed once the grace has passed, and as many new ones are added, with the RSS
//! after each step. Prints a table; asserts no timing.
//!
//! ```text
//! cargo bench -p botmeter-enrich --bench state_memory            # N = 1_000_000
//! cargo bench -p botmeter-enrich --bench state_memory -- 200000  # or STATE_MEMORY_N=200000
//! ```

use std::hint::black_box;
use std::time::Instant;

#[path = "../../../benches/support/targets.rs"]
#[expect(
    dead_code,
    reason = "this harness reports only some kinds of target line"
)]
mod targets;

use botmeter_enrich::{OwnershipState, Resolution};
use chrono::{DateTime, Duration, SecondsFormat, TimeZone, Utc};

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "kind", "lively", "proud",
    "silly", "witty",
];
const NOUNS: &[&str] = &[
    "otter", "falcon", "badger", "heron", "lynx", "marmot", "newt", "panda", "quokka", "raven",
    "tapir", "walrus",
];
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SplitMix64: deterministic, dependency-free randomness.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// An ngrok-style id: prefix + 27 base62 characters (a KSUID), e.g. `ts_2Xf…`, derived from
/// `(kind, i)` so that the bench can rebuild any id without keeping it.
fn id(prefix: &str, kind: u64, i: usize) -> String {
    let mut rng = Rng(kind.wrapping_mul(0x1000_0000_0001) ^ i as u64);
    let mut s = String::with_capacity(prefix.len() + 27);
    s.push_str(prefix);
    s.push_str("2X");
    for _ in 0..25 {
        s.push(char::from(BASE62[rng.below(BASE62.len())]));
    }
    s
}

fn hostname(i: usize) -> String {
    let mut rng = Rng(0xB0B ^ i as u64);
    format!(
        "{}-{}-{i}.ngrok.app",
        ADJECTIVES[rng.below(ADJECTIVES.len())],
        NOUNS[rng.below(NOUNS.len())]
    )
}

fn owner(n_bots: usize, c: usize) -> String {
    // One credential in five belongs to a person, the rest to bot users.
    if c.is_multiple_of(5) {
        id("usr_", 5, c % n_bots.max(1))
    } else {
        id("bot_", 1, c % n_bots.max(1))
    }
}

struct Fleet {
    sessions: usize,
    credentials: usize,
    bots: usize,
    base: DateTime<Utc>,
}

impl Fleet {
    fn at(&self, ms: usize) -> String {
        (self.base + Duration::milliseconds(ms as i64)).to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    fn credential_of(&self, s: usize) -> usize {
        s % self.credentials
    }

    fn bot_event(&self, b: usize) -> String {
        let at = self.at(b);
        format!(
            r#"{{"event_id":"ev_b{b}","event_type":"bot_user_created.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"id":"{}","name":"ci-bot-{b}","active":true,"created_at":"{at}"}}}}"#,
            id("bot_", 1, b)
        )
    }

    fn credential_event(&self, c: usize) -> String {
        let at = self.at(self.bots + c);
        // Half the credentials restrict binds to ngrok.app subdomains, half allow everything.
        let acl = if c.is_multiple_of(2) {
            r#"["bind:*.ngrok.app"]"#
        } else {
            "[]"
        };
        format!(
            r#"{{"event_id":"ev_c{c}","event_type":"tunnel_credential_created.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"id":"{}","description":"agent {c}","metadata":"","created_at":"{at}","owner_id":"{}","acl":{acl},"token":"secret"}}}}"#,
            id("cr_", 2, c),
            owner(self.bots, c)
        )
    }

    fn session_event(&self, s: usize) -> String {
        let at = self.at(self.bots + self.credentials + 2 * s);
        format!(
            r#"{{"event_id":"ev_s{s}","event_type":"agent_session_start.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"session":{{"id":"{}","uri":""}},"credential":{{"id":"{}","uri":""}},"agent_ip":"203.0.113.7","region":"us","started_at":"{at}"}}}}"#,
            id("ts_", 3, s),
            id("cr_", 2, self.credential_of(s))
        )
    }

    fn endpoint_event(&self, s: usize) -> String {
        let at = self.at(self.bots + self.credentials + 2 * s + 1);
        // One endpoint in fifty is labeled.
        let labels = if s.is_multiple_of(50) {
            format!(r#","labels":{{"app":"svc-{}"}}"#, s % 7)
        } else {
            String::new()
        };
        format!(
            r#"{{"event_id":"ev_e{s}","event_type":"endpoint_created.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"id":"{}","url":"https://{}","proto":"https","tunnel_session":{{"id":"{}"}},"principal":{{"id":"{}"}},"created_at":"{at}"{labels}}}}}"#,
            id("ep_", 4, s),
            hostname(s),
            id("ts_", 3, s),
            owner(self.bots, self.credential_of(s))
        )
    }

    /// A wildcard endpoint `*.site-<w>.fleet.example.com` on session `w`, created after every
    /// other event.
    fn wildcard_event(&self, w: usize) -> String {
        let at = self.at(self.bots + self.credentials + 2 * self.sessions + w);
        format!(
            r#"{{"event_id":"ev_w{w}","event_type":"endpoint_created.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"id":"{}","url":"https://*.site-{w}.fleet.example.com","proto":"https","tunnel_session":{{"id":"{}"}},"created_at":"{at}"}}}}"#,
            id("ep_", 6, w),
            id("ts_", 3, w),
        )
    }

    /// Session `s` stops and its endpoint goes away at `at`.
    fn end_events(&self, s: usize, at: DateTime<Utc>) -> [String; 2] {
        let at = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        [
            format!(
                r#"{{"event_id":"ev_x{s}","event_type":"endpoint_deleted.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"id":"{}","url":"https://{}","proto":"https"}}}}"#,
                id("ep_", 4, s),
                hostname(s)
            ),
            format!(
                r#"{{"event_id":"ev_y{s}","event_type":"agent_session_stop.v0","event_timestamp":"{at}","account_id":"ac_2Xbench","object":{{"session":{{"id":"{}"}},"credential":{{"id":"{}"}},"stopped_at":"{at}"}}}}"#,
                id("ts_", 3, s),
                id("cr_", 2, self.credential_of(s))
            ),
        ]
    }

    /// After every event of the fleet (and of as many wildcards as sessions).
    fn now(&self) -> DateTime<Utc> {
        self.base
            + Duration::milliseconds((self.bots + self.credentials + 3 * self.sessions + 1) as i64)
    }
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn apply(state: &mut OwnershipState, json: &str) {
    let event = model::decode(json.as_bytes()).expect("bench events decode");
    black_box(state.apply(&event));
}

fn size_from_args() -> usize {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("STATE_MEMORY_N").ok())
        .map(|s| s.replace('_', "").parse().expect("N must be a number"))
        .unwrap_or(1_000_000)
}

/// Query names back to back in one allocation, so that the bench's own data neither fragments
/// the heap nor stays resident once dropped.
#[derive(Debug, Default)]
struct Names {
    text: String,
    ends: Vec<usize>,
}

impl Names {
    fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.ends.iter().scan(0, |start, &end| {
            Some(&self.text[std::mem::replace(start, end)..end])
        })
    }
}

#[derive(Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, name: &str, value: String) {
        println!("{name:<46} {value}");
        self.0.push((name.to_owned(), value));
    }

    /// Times `resolve` over every name, `PASSES` times; counts the attributed ones so that nothing
    /// is optimized away.
    fn time_resolves(&mut self, what: &str, names: &Names, resolve: impl Fn(&str) -> Resolution) {
        const PASSES: usize = 4;
        let started = Instant::now();
        let mut attributed = 0;
        for _ in 0..PASSES {
            attributed += names
                .iter()
                .filter(|name| black_box(resolve(name)).unattributed.is_none())
                .count();
        }
        let count = PASSES * names.ends.len();
        let ns = started.elapsed().as_nanos() as f64 / count as f64;
        self.row(
            &format!("resolve {what} (ns/resolve)"),
            format!(
                "{ns:.0}  ({:.2} M/s, {attributed}/{count} attributed)",
                1e3 / ns
            ),
        );
    }

    fn memory(&mut self, what: &str, state: &OwnershipState) -> Memory {
        let m = memory();
        let stats = state.stats();
        self.row(
            &format!("RSS {what} (MiB)"),
            format!(
                "{:.1}  ({} sessions / {} endpoints, heap_bytes() {:.1} MiB)",
                mb(m.rss_kb),
                stats.sessions,
                stats.endpoints,
                state.heap_bytes() as f64 / (1024.0 * 1024.0)
            ),
        );
        m
    }
}

pub(crate) fn main() {
    let n = size_from_args().max(10);
    let fleet = Fleet {
        sessions: n,
        credentials: (n / 10).max(1),
        bots: (n / 100).max(1),
        base: Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap(),
    };
    let mut table = Table::default();

    // Build: bots, credentials, then each session with its endpoint.
    let before = memory();
    let mut state = OwnershipState::new();
    let started = Instant::now();
    for b in 0..fleet.bots {
        apply(&mut state, &fleet.bot_event(b));
    }
    for c in 0..fleet.credentials {
        apply(&mut state, &fleet.credential_event(c));
    }
    for s in 0..fleet.sessions {
        apply(&mut state, &fleet.session_event(s));
        apply(&mut state, &fleet.endpoint_event(s));
    }
    let build = started.elapsed();
    let events = fleet.bots + fleet.credentials + 2 * fleet.sessions;
    let after = memory();
    let stats = state.stats();
    table.row(
        "sessions / endpoints / credentials / bots",
        format!(
            "{} / {} / {} / {}",
            stats.sessions, stats.endpoints, stats.credentials, stats.bot_users
        ),
    );
    table.row("RSS before (MiB)", format!("{:.1}", mb(before.rss_kb)));
    table.row("RSS after build (MiB)", format!("{:.1}", mb(after.rss_kb)));
    targets::report(
        &format!(
            "RSS with {} live sessions + {} endpoints (this allocator)",
            targets::number(stats.sessions as f64),
            targets::number(stats.endpoints as f64)
        ),
        after.rss_kb as f64 * 1024.0 / 1e6,
        "MB",
        targets::Bar::AtMost(300.0),
    );
    table.row(
        "peak RSS during build, VmHWM (MiB)",
        format!("{:.1}", mb(after.hwm_kb)),
    );
    let state_bytes = after.rss_kb.saturating_sub(before.rss_kb) * 1024;
    table.row(
        "state RSS, after - before (MiB)",
        format!("{:.1}", state_bytes as f64 / (1024.0 * 1024.0)),
    );
    table.row(
        "bytes per session + endpoint (RSS delta / N)",
        format!("{:.0}", state_bytes as f64 / n as f64),
    );
    table.row(
        "state heap estimate, heap_bytes() (MiB)",
        format!("{:.1}", state.heap_bytes() as f64 / (1024.0 * 1024.0)),
    );
    table.row(
        "decode + apply (events/s)",
        format!("{:.0}", events as f64 / build.as_secs_f64()),
    );

    // Resolve on random live hostnames (and endpoint ids, and unknown hostnames) at a time when
    // every endpoint is live. A quarter of a million queries, each run four times: enough to time,
    // small beside the state.
    let queries = n.min(250_000);
    let mut rng = Rng(42);
    let mut hosts = Names::default();
    let mut endpoint_ids = Names::default();
    let mut misses = Names::default();
    let mut hot = Names::default();
    for i in 0..queries {
        hosts.push(&hostname(rng.below(n)));
        hot.push(&hostname(rng.below(1000.min(n))));
        if i % 4 == 0 {
            endpoint_ids.push(&id("ep_", 4, rng.below(n)));
            misses.push(&format!("gone-{i}.ngrok.app"));
        }
    }
    let now = fleet.now();
    table.time_resolves("by hostname", &hosts, |h| state.resolve(h, None, None, now));
    table.time_resolves("by hostname, 1000 hot ones", &hot, |h| {
        state.resolve(h, None, None, now)
    });
    table.time_resolves("by endpoint id", &endpoint_ids, |e| {
        state.resolve("", None, Some(e), now)
    });
    table.time_resolves("unknown hostname", &misses, |h| {
        state.resolve(h, Some(443), None, now)
    });

    // Wildcards: one per ten sessions (100k beside 1M exact endpoints at N = 1M), each serving a
    // site's devices. Exact names resolve as before; a hostname with no exact endpoint now also
    // looks up `*.<suffix>` once per label.
    let wildcards = n / 10;
    let started = Instant::now();
    for w in 0..wildcards {
        apply(&mut state, &fleet.wildcard_event(w));
    }
    let wildcard_build = started.elapsed();
    table.row(
        "wildcard endpoints added (decode + apply, ms)",
        format!("{wildcards}  ({:.0})", wildcard_build.as_secs_f64() * 1e3),
    );
    let with_wildcards = table.memory("with the wildcards", &state);
    targets::report(
        &format!(
            "RSS with {} live sessions + {} exact and {} wildcard endpoints (this allocator)",
            targets::number(n as f64),
            targets::number(n as f64),
            targets::number(wildcards as f64)
        ),
        with_wildcards.rss_kb as f64 * 1024.0 / 1e6,
        "MB",
        targets::Bar::AtMost(300.0),
    );
    let mut devices = Names::default();
    let mut rng = Rng(7);
    for i in 0..queries {
        let site = rng.below(wildcards.max(1));
        if i % 3 == 0 {
            devices.push(&format!(
                "cam-{i}.line-{}.site-{site}.fleet.example.com",
                i % 5
            ));
        } else {
            devices.push(&format!("dev-{i}.site-{site}.fleet.example.com"));
        }
    }
    table.time_resolves("by hostname, with wildcards", &hosts, |h| {
        state.resolve(h, None, None, now)
    });
    table.time_resolves("under a wildcard (1 or 2 labels deep)", &devices, |h| {
        state.resolve(h, None, None, now)
    });
    table.time_resolves("unknown hostname, with wildcards", &misses, |h| {
        state.resolve(h, Some(443), None, now)
    });
    drop((hosts, hot, endpoint_ids, misses, devices));

    // Churn: 1% of the sessions stop and their endpoints go away, then half; once the grace has
    // passed they are evicted, and as many new ones take their place.
    let grace = std::time::Duration::from_secs(3600);
    let grace_chrono = Duration::from_std(grace).expect("grace fits");
    let started = Instant::now();
    let noop = state.evict_ended(now, grace);
    table.row(
        "evict_ended, nothing ended (ms)",
        format!(
            "{:.1}  ({} evicted)",
            started.elapsed().as_secs_f64() * 1e3,
            noop.total()
        ),
    );
    let mut clock = now;
    for (what, ended) in [
        ("1% ended", (1..n).step_by(100).collect::<Vec<_>>()),
        ("half ended", (0..n).step_by(2).collect()),
    ] {
        clock += Duration::seconds(1);
        for &s in &ended {
            for json in fleet.end_events(s, clock) {
                apply(&mut state, &json);
            }
        }
        clock += grace_chrono + Duration::seconds(1);
        let started = Instant::now();
        let evicted = state.evict_ended(clock, grace);
        table.row(
            &format!("evict_ended, {what} (ms)"),
            format!(
                "{:.1}  ({} sessions + {} endpoints, {} names freed)",
                started.elapsed().as_secs_f64() * 1e3,
                evicted.sessions,
                evicted.endpoints,
                evicted.names
            ),
        );
    }
    table.memory("after eviction", &state);
    let refill = Fleet {
        base: clock,
        ..fleet
    };
    let evicted = n - state.stats().sessions;
    for s in n..n + evicted {
        apply(&mut state, &refill.session_event(s));
        apply(&mut state, &refill.endpoint_event(s));
    }
    let end = table.memory("after as many new ones", &state);
    table.row(
        "peak RSS over the run, VmHWM (MiB)",
        format!("{:.1}", mb(end.hwm_kb)),
    );

    println!();
    println!("| measure (N = {n}) | value |");
    println!("| --- | --- |");
    for (name, value) in &table.0 {
        println!("| {name} | {value} |");
    }
}
