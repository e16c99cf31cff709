//! `/v1/fleet` latency harness (not a timed test): a fleet of 100,000 credentials by default,
//! generated inside ClickHouse (`INSERT … SELECT … FROM numbers`) as the pipeline stores it — the
//! audit log (`control_events_log`: credential creations, agent session starts and stops,
//! endpoint creations and deletions) and a month of attributed usage on those credentials — then
//! `GET /v1/fleet` timed over HTTP against the release `botmeter serve`:
//! - the whole fleet as of now (default `limit` 1000: the summary and per-owner counts cover all
//!   100k credentials, the list the first 1000);
//! - the dropped devices only (`state=dropped`);
//! - one owner's fleet (`owner_id`), a different owner each time;
//! - the whole fleet as of a time (`at`, a different time of the month each request), answered
//!   from the fleet timeline `serve` rebuilds from ClickHouse every 10 s (as are the three above);
//! - the same from a second `serve --fleet-timeline-max-mib 64` (`BOTMETER_BENCH_FLEET_BOUNDED_MIB`),
//!   whose timeline keeps only the latest part of the month, at times from its horizon on;
//! - the same from a third `serve --no-fleet-timeline`, which reads ClickHouse for every
//!   request, a tenth as many runs. The servers' answers are compared at five times first, and
//!   each one's memory (timeline gauges, resident set) is printed.
//!
//! The fleet: owner `bot_{i % owners}` (a fiftieth of the credentials, so 50 credentials each)
//! owns `cr_i`; every tenth credential never connects; the others start session `ts_i` on day 1
//! with endpoint `ep_i`; every fourth of those drops on day 20 (session stopped, endpoint
//! deleted), and every other dropped one comes back on day 21 (`tsb_i`, `epb_i`).
//!
//! Run: `scripts/services.sh up && cargo bench --bench fleet`. Settings (environment):
//! `BOTMETER_BENCH_FLEET_CREDENTIALS` (default 100,000), `BOTMETER_BENCH_FLEET_USAGE_ROWS` (usage
//! rows over the month, default 10,000,000), `BOTMETER_BENCH_FLEET_RUNS` (requests per query,
//! default 200), `BOTMETER_BENCH_FLEET_KEEP=1` keeps the database (`botmeter_bench_fleet`, or
//! `BOTMETER_BENCH_FLEET_DATABASE`) and reuses it when it already holds the fleet. Results go to BENCHMARKS.md by hand, with the
//! machine.

#[path = "support/clickhouse.rs"]
mod clickhouse_support;
use clickhouse_support::{bench_database, env_or, BenchDatabase};
use std::process::Command;
use std::time::{Duration, Instant};

use query::rows::status;
#[path = "support/metrics.rs"]
mod metrics;
#[path = "support/proc.rs"]
#[expect(dead_code, reason = "this harness reads memory, not CPU")]
mod proc;
#[path = "support/serve.rs"]
mod serve;
#[path = "support/targets.rs"]
#[expect(
    dead_code,
    reason = "this harness reports only some kinds of target line"
)]
mod targets;
use targets::{report, Bar};

/// The bench database unless `BOTMETER_BENCH_FLEET_DATABASE` names another (two harnesses on one
/// server must not share it).
const DEFAULT_DATABASE: &str = "botmeter_bench_fleet";
/// 2026-10-01T00:00:00Z: the month of the fleet is October 2026.
const MONTH_START: u32 = 1_790_812_800;
const MONTH_SECS: u32 = 31 * 86_400;
const DAY_SECS: u32 = 86_400;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<44} n={:<4} p50 {:>9.2} ms  p99 {:>9.2} ms  max {:>9.2} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
    (p50, p99)
}

/// One kind of control event for every `n < credentials` that `filter` keeps (SQL over `n`):
/// `event_type`, the time (seconds, SQL), the object id and owner (SQL), the object (SQL).
fn control_sql(
    credentials: u64,
    owners: u64,
    event_type: &str,
    filter: &str,
    time: &str,
    object_id: &str,
    object: &str,
) -> String {
    format!(
        "INSERT INTO control_events_log (event_id, event_type, event_time, event_time_us, account_id, principal_id, \
         principal_subject, principal_credential_id, object_id, owner_id, object, kafka_topic, kafka_partition, \
         kafka_offset, ingested_at, anomalies) \
         SELECT concat('ev_', '{event_type}', toString(n)), '{event_type}', toDateTime(t), toInt64(t) * 1000000, 'ac_bench', \
         'usr_admin', '', '', {object_id}, if(startsWith('{event_type}', 'tunnel_credential'), owner, ''), {object}, \
         'control', 0, toInt64(n), toDateTime(t), [] \
         FROM (SELECT number AS n, concat('bot_', toString(number % {owners})) AS owner, toUInt32({time}) AS t \
               FROM system.numbers LIMIT {credentials}) \
         WHERE {filter}"
    )
}

#[tokio::main]
async fn main() {
    let credentials: u64 = env_or("BOTMETER_BENCH_FLEET_CREDENTIALS", 100_000);
    let usage_rows: u64 = env_or("BOTMETER_BENCH_FLEET_USAGE_ROWS", 10_000_000);
    let owners = (credentials / 50).max(1);
    let runs: usize = env_or("BOTMETER_BENCH_FLEET_RUNS", 200);
    let keep = std::env::var("BOTMETER_BENCH_FLEET_KEEP").is_ok_and(|v| v == "1");
    let database: String = env_or("BOTMETER_BENCH_FLEET_DATABASE", DEFAULT_DATABASE.to_owned());
    let database = database.as_str();
    let BenchDatabase {
        config,
        server,
        client,
    } = bench_database(database);
    let url = config.url.clone();

    // 1. The fleet, unless a kept database already holds it.
    let existing: u64 = client
        .query("SELECT count() FROM usage_events")
        .fetch_one()
        .await
        .unwrap_or(0);
    if existing != usage_rows {
        server
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
            .unwrap();
        query::migrate(&config).await.expect("migrate");
        let started = Instant::now();
        let day = |d: u32| format!("{} + n % 3600", MONTH_START + d * DAY_SECS);
        let session = |prefix: &str| {
            format!(
                "concat('{{\"credential\":{{\"id\":\"cr_', toString(n), '\"}},\"os\":\"linux\",\"region\":\"eu\",\
                 \"session\":{{\"id\":\"{prefix}', toString(n), '\"}},\"user_agent\":\"ngrok/3.18.4\"}}')"
            )
        };
        let endpoint = |prefix: &str, session: &str| {
            format!(
                "concat('{{\"id\":\"{prefix}', toString(n), '\",\"tunnel_session\":{{\"id\":\"{session}', toString(n), '\"}}}}')"
            )
        };
        let id = |prefix: &str| format!("concat('{prefix}', toString(n))");
        let seen = "n % 10 != 0";
        let dropped = "n % 10 != 0 AND n % 4 = 1";
        let back = "n % 10 != 0 AND n % 8 = 1";
        for sql in [
            control_sql(
                credentials,
                owners,
                "tunnel_credential_created.v0",
                "1",
                &day(0),
                &id("cr_"),
                "concat('{\"id\":\"cr_', toString(n), '\",\"owner_id\":\"', owner, '\"}')",
            ),
            control_sql(
                credentials,
                owners,
                "agent_session_start.v0",
                seen,
                &day(1),
                &id("ts_"),
                &session("ts_"),
            ),
            control_sql(
                credentials,
                owners,
                "endpoint_created.v0",
                seen,
                &format!("{} + 1", day(1)),
                &id("ep_"),
                &endpoint("ep_", "ts_"),
            ),
            control_sql(
                credentials,
                owners,
                "endpoint_deleted.v0",
                dropped,
                &day(20),
                &id("ep_"),
                &endpoint("ep_", "ts_"),
            ),
            control_sql(
                credentials,
                owners,
                "agent_session_stop.v0",
                dropped,
                &format!("{} + 1", day(20)),
                &id("ts_"),
                &session("ts_"),
            ),
            control_sql(
                credentials,
                owners,
                "agent_session_start.v0",
                back,
                &day(21),
                &id("tsb_"),
                &session("tsb_"),
            ),
            control_sql(
                credentials,
                owners,
                "endpoint_created.v0",
                back,
                &format!("{} + 1", day(21)),
                &id("epb_"),
                &endpoint("epb_", "tsb_"),
            ),
        ] {
            client
                .query(&sql)
                .execute()
                .await
                .expect("generate the audit log");
        }
        // Usage on the credentials that connect, spread over the month.
        let chunk = 10_000_000_u64.min(usage_rows);
        let mut written = 0;
        while written < usage_rows {
            let n = chunk.min(usage_rows - written);
            let sql = format!(
                "INSERT INTO usage_events (event_id, event_type, event_time, event_time_us, account_id, status, owner_id, \
                 owner_kind, credential_id, credential_kind, session_id, endpoint_id, hostname, port, bytes_in, bytes_out, \
                 http_requests, tcp_connections, status_code, kafka_topic, kafka_partition, kafka_offset, ingested_at, sign) \
                 SELECT concat('ev_', toString(n)), 'tcp_connection_closed.v0', \
                 toDateTime({MONTH_START} + intDiv(n * {MONTH_SECS}, {usage_rows})) AS t, toInt64(toUInt32(t)) * 1000000, 'ac_bench', \
                 '{attributed}', concat('bot_', toString(c % {owners})), 'bot_user', concat('cr_', toString(c)), \
                 'authtoken', concat('ts_', toString(c)), concat('ep_', toString(c)), concat('h', toString(c), '.ngrok.app'), \
                 443, 10, 100, 0, 1, 0, 'traffic', toInt32(n % 8), toInt64(intDiv(n, 8)), t, 1 \
                 FROM (SELECT number + {written} AS n, (cityHash64(number + {written}) % {credentials}) AS c0, \
                       if(c0 % 10 = 0, c0 + 1, c0) % {credentials} AS c FROM system.numbers LIMIT {n})",
                attributed = status::ATTRIBUTED,
            );
            client.query(&sql).execute().await.expect("generate usage");
            written += n;
        }
        eprintln!(
            "generated the fleet in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    } else {
        let report = query::migrate(&config).await.expect("migrate");
        if !report.applied.is_empty() {
            eprintln!("migrated the kept database: {:?}", report.applied);
        }
    }
    // Let the background merges settle so the timings see the tables as they live.
    for table in ["control_events_log", "usage_events"] {
        client
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .expect("optimize");
    }
    let control_rows: u64 = client
        .query("SELECT count() FROM control_events_log")
        .fetch_one()
        .await
        .unwrap();
    println!(
        "credentials {credentials}, owners {owners}, control events {control_rows}, usage rows {usage_rows}"
    );

    // 2. The API: one server with the fleet timeline (the default budget), one with the smallest
    // budget that still holds part of the month (`bounded_mib`), one reading ClickHouse for every
    // request (--no-fleet-timeline, what every `?at=` did before the timeline).
    let bounded_mib: u32 = env_or("BOTMETER_BENCH_FLEET_BOUNDED_MIB", 64);
    let started = Instant::now();
    let serve::Serve {
        child: mut serve,
        http,
        base,
        metrics: metrics_url,
    } = serve::start(database, &url).await;
    let bounded = serve::start_with(
        database,
        &url,
        &["--fleet-timeline-max-mib", &bounded_mib.to_string()],
    )
    .await;
    let reading = serve::start_with(database, &url, &["--no-fleet-timeline"]).await;
    let get = |base: String, path: String| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            let response = http.get(format!("{base}{path}")).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            let body: serde_json::Value = response.json().await.unwrap();
            (started.elapsed(), body)
        }
    };
    let at_of = |secs: u32| {
        format!(
            "at={}",
            chrono::DateTime::from_timestamp(i64::from(secs), 0)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    };
    // The timeline is read when serve starts: wait until a request without `at` answers from it
    // (its `at` is no longer the request's own now), on both servers that hold one.
    for server_base in [&base, &bounded.base] {
        loop {
            let asked = chrono::Utc::now().timestamp();
            let (_, body) = get(server_base.clone(), "/v1/fleet?limit=1".to_owned()).await;
            let answered = chrono::DateTime::parse_from_rfc3339(body["at"].as_str().unwrap())
                .unwrap()
                .timestamp();
            if answered < asked {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "the timeline never answered"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!(
        "first timelines answered {:.1}s after the servers started",
        started.elapsed().as_secs_f64()
    );
    // What each timeline holds, from its gauges.
    let gauge = |url: String, name: &'static str| async move {
        metrics::scrape(&url, name)
            .await
            .unwrap_or_else(|| panic!("{name} not in {url}"))
    };
    let traffic_bytes = gauge(metrics_url, "botmeter_fleet_timeline_traffic_bytes").await;
    let bounded_bytes = gauge(
        bounded.metrics.clone(),
        "botmeter_fleet_timeline_traffic_bytes",
    )
    .await;
    let bounded_horizon = gauge(
        bounded.metrics.clone(),
        "botmeter_fleet_timeline_horizon_seconds",
    )
    .await as u32;
    println!(
        "timeline traffic: {:.1} MiB (default budget), {:.1} MiB (--fleet-timeline-max-mib \
         {bounded_mib}, horizon {} = day {:.1} of the month)",
        traffic_bytes / 1_048_576.0,
        bounded_bytes / 1_048_576.0,
        at_of(bounded_horizon),
        f64::from(bounded_horizon.saturating_sub(MONTH_START)) / f64::from(DAY_SECS),
    );
    assert!(
        bounded_bytes <= f64::from(bounded_mib) * 1_048_576.0,
        "the bounded timeline holds {bounded_bytes} bytes"
    );
    // The answer is checked against the fleet's construction once, from both servers.
    let at = at_of(MONTH_START + MONTH_SECS);
    let (_, whole) = get(base.clone(), format!("/v1/fleet?{at}")).await;
    let (_, read) = get(reading.base.clone(), format!("/v1/fleet?{at}")).await;
    assert_eq!(whole, read, "the timeline answers as the read does");
    let summary_json = &whole["summary"];
    let never = credentials.div_ceil(10);
    let dropped = (0..credentials)
        .filter(|n| n % 10 != 0 && n % 4 == 1 && n % 8 != 1)
        .count() as u64;
    assert_eq!(summary_json["credentials"], credentials, "{summary_json}");
    assert_eq!(summary_json["never_seen"], never, "{summary_json}");
    assert_eq!(summary_json["dropped"], dropped, "{summary_json}");
    assert_eq!(
        summary_json["online"],
        credentials - never - dropped,
        "{summary_json}"
    );
    println!("summary at the month's end: {summary_json}");
    // Times through the month (a different one each run, not on whole hours): before, during and
    // after the drops, with traffic before and after each.
    let at_in_month = |run: usize| MONTH_START + 1_800 + (run as u32 * 86_413) % MONTH_SECS;
    // And the same from all three servers at a few of them (the bounded one answers those before
    // its horizon from ClickHouse).
    for run in [3, 19, 22, 30] {
        let path = format!("/v1/fleet?{}", at_of(at_in_month(run)));
        let (_, timeline) = get(base.clone(), path.clone()).await;
        let (_, from_bounded) = get(bounded.base.clone(), path.clone()).await;
        let (_, read) = get(reading.base.clone(), path.clone()).await;
        assert_eq!(
            timeline, read,
            "{path}: the timeline answers as the read does"
        );
        assert_eq!(
            from_bounded, read,
            "{path}: the bounded timeline answers as the read does"
        );
    }

    let (mut all, mut drops, mut owner, mut as_of, mut as_of_bounded) = (
        Vec::with_capacity(runs),
        Vec::with_capacity(runs),
        Vec::with_capacity(runs),
        Vec::with_capacity(runs),
        Vec::with_capacity(runs),
    );
    for run in 0..runs {
        all.push(get(base.clone(), "/v1/fleet".to_owned()).await.0);
        drops.push(
            get(base.clone(), "/v1/fleet?state=dropped".to_owned())
                .await
                .0,
        );
        let id = format!("bot_{}", (run as u64 * 7_919) % owners);
        owner.push(
            get(base.clone(), format!("/v1/fleet?owner_id={id}"))
                .await
                .0,
        );
        as_of.push(
            get(
                base.clone(),
                format!("/v1/fleet?{}", at_of(at_in_month(run))),
            )
            .await
            .0,
        );
        // The bounded timeline over the same times from its horizon on (earlier ones are reads,
        // timed below).
        let bounded_at = bounded_horizon
            + (run as u32 * 3_607) % (MONTH_START + MONTH_SECS - bounded_horizon).max(1);
        as_of_bounded.push(
            get(
                bounded.base.clone(),
                format!("/v1/fleet?{}", at_of(bounded_at)),
            )
            .await
            .0,
        );
    }
    let mut as_of_read = Vec::with_capacity(runs / 10);
    for run in 0..(runs / 10).max(1) {
        as_of_read.push(
            get(
                reading.base.clone(),
                format!("/v1/fleet?{}", at_of(at_in_month(run))),
            )
            .await
            .0,
        );
    }
    // Memory: each server's resident set after the runs (the timeline's traffic is the part that
    // grows with the fleet's history; --no-fleet-timeline holds none).
    let resident = |name: &str, pid: u32| {
        println!(
            "{name}: VmRSS {:.0} MiB, VmHWM {:.0} MiB",
            proc::status_mb(pid, "VmRSS"),
            proc::status_mb(pid, "VmHWM")
        );
    };
    resident("serve (default budget)", serve.id());
    resident(
        &format!("serve --fleet-timeline-max-mib {bounded_mib}"),
        bounded.child.id(),
    );
    resident("serve --no-fleet-timeline", reading.child.id());
    let (mut bounded_child, mut reading_child) = (bounded.child, reading.child);
    for child in [&mut serve, &mut bounded_child, &mut reading_child] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }

    let (_, all_p99) = summary("whole fleet (limit 1000), API", all);
    let (_, drops_p99) = summary("dropped devices, API", drops);
    let (_, owner_p99) = summary("one owner's fleet, API", owner);
    let (_, as_of_p99) = summary("whole fleet as of a time (timeline), API", as_of);
    let (_, as_of_bounded_p99) = summary(
        &format!("whole fleet as of a time from the horizon on (--fleet-timeline-max-mib {bounded_mib}), API"),
        as_of_bounded,
    );
    let (_, as_of_read_p99) = summary(
        "whole fleet as of a time (--no-fleet-timeline), API",
        as_of_read,
    );
    let thousands = credentials as f64 / 1e3;
    report(
        &format!("/v1/fleet over {thousands:.0}k credentials, p99 (n = {runs})"),
        all_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        &format!("/v1/fleet?state=dropped over {thousands:.0}k credentials, p99 (n = {runs})"),
        drops_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        &format!("/v1/fleet?owner_id over {thousands:.0}k credentials, p99 (n = {runs})"),
        owner_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        &format!("/v1/fleet?at over {thousands:.0}k credentials (timeline), p99 (n = {runs})"),
        as_of_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        &format!(
            "/v1/fleet?at over {thousands:.0}k credentials (timeline bounded to {bounded_mib} MiB, at from its horizon), p99 (n = {runs})"
        ),
        as_of_bounded_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        &format!(
            "/v1/fleet?at over {thousands:.0}k credentials (--no-fleet-timeline: read from ClickHouse), p99 (n = {})",
            (runs / 10).max(1)
        ),
        as_of_read_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    if !keep {
        server
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
            .unwrap();
    }
}
