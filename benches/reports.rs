//! Report latency harness (not a timed test): a month of attributed usage — 100M rows by default —
//! generated inside ClickHouse (`INSERT … SELECT … FROM numbers`, so the rollup's materialized
//! view sees every block as it would from `botmeter run`), then the two reports the performance
//! issue names, timed over HTTP against the release `botmeter serve` (which reads the rollup) and
//! as SQL over the raw rows:
//! - per-owner month: `GET /v1/owners/{owner}/usage?granularity=month` for a month, a different
//!   owner each time;
//! - top-N: `GET /v1/usage/top?metric=bytes_out&limit=10` for the month.
//! - per-owner year, aligned (`from=2026-01-01T00:00:00Z`, all rollup) and ragged
//!   (`from=2026-01-01T00:00:01Z`: the rollup for its whole quarter hours, raw rows for the edges).
//!
//! Run: `scripts/services.sh up && cargo bench --bench reports`. Settings (environment):
//! `BOTMETER_BENCH_REPORT_ROWS` (default 100,000,000), `BOTMETER_BENCH_REPORT_ENDPOINTS` (5,000;
//! owners are a fifth of that, credentials three fifths), `BOTMETER_BENCH_REPORT_RUNS` (rollup
//! requests per report, default 200), `BOTMETER_BENCH_REPORT_RAW_RUNS` (raw queries, default 5),
//! `BOTMETER_BENCH_REPORT_KEEP=1` keeps the database (`botmeter_bench_reports`) and reuses it when
//! it already holds the rows. Results go to BENCHMARKS.md by hand, with the machine.

#[path = "support/clickhouse.rs"]
mod clickhouse_support;
use clickhouse_support::{bench_database, env_or, BenchDatabase};
use std::process::Command;
use std::time::{Duration, Instant};

use query::rows::status;
#[path = "support/serve.rs"]
mod serve;
#[path = "support/targets.rs"]
#[expect(
    dead_code,
    reason = "this harness reports only some kinds of target line"
)]
mod targets;
use targets::{report, Bar};

const DATABASE: &str = "botmeter_bench_reports";
/// 2026-10-01T00:00:00Z: the month of usage is October 2026.
const MONTH_START: u32 = 1_790_812_800;
const MONTH_SECS: u32 = 31 * 86_400;
const USAGE_BUCKETS_SQL: &str = include_str!("../crates/query/sql/usage_buckets.sql");
const OWNER_TOTALS_SQL: &str = include_str!("../crates/query/sql/owner_totals.sql");

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

#[tokio::main]
async fn main() {
    let rows: u64 = env_or("BOTMETER_BENCH_REPORT_ROWS", 100_000_000);
    let endpoints: u64 = env_or("BOTMETER_BENCH_REPORT_ENDPOINTS", 5_000);
    let owners = (endpoints / 5).max(1);
    let credentials = (endpoints * 3 / 5).max(1);
    let runs: usize = env_or("BOTMETER_BENCH_REPORT_RUNS", 200);
    let raw_runs: usize = env_or("BOTMETER_BENCH_REPORT_RAW_RUNS", 5);
    let keep = std::env::var("BOTMETER_BENCH_REPORT_KEEP").is_ok_and(|v| v == "1");
    let BenchDatabase {
        config,
        server,
        client,
    } = bench_database(DATABASE);

    // 1. The month of usage, unless a kept database already holds it.
    let existing: u64 = client
        .query("SELECT count() FROM usage_events")
        .fetch_one()
        .await
        .unwrap_or(0);
    if existing != rows {
        server
            .query(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
            .execute()
            .await
            .unwrap();
        query::migrate(&config).await.expect("migrate");
        let chunk = 10_000_000_u64.min(rows);
        let started = Instant::now();
        let mut written = 0;
        while written < rows {
            let n = chunk.min(rows - written);
            // Endpoint e belongs to owner e % owners through credential e % credentials; times
            // spread evenly over the month in offset order, like a topic's backlog.
            let sql = format!(
                "INSERT INTO usage_events (event_id, event_type, event_time, event_time_us, account_id, status, owner_id, \
                 owner_kind, credential_id, credential_kind, session_id, endpoint_id, hostname, port, bytes_in, bytes_out, \
                 http_requests, tcp_connections, status_code, kafka_topic, kafka_partition, kafka_offset, ingested_at, sign) \
                 SELECT concat('ev_', toString(n)), if(n % 4 = 0, 'http_request_complete.v0', 'tcp_connection_closed.v0'), \
                 toDateTime({MONTH_START} + intDiv(n * {MONTH_SECS}, {rows})) AS t, toInt64(toUInt32(t)) * 1000000, 'ac_bench', \
                 '{attributed}', concat('bot_', toString(e % {owners})), 'bot_user', concat('cr_', toString(e % {credentials})), \
                 'authtoken', concat('ts_', toString(e)), concat('ep_', toString(e)), concat('h', toString(e), '.ngrok.app'), \
                 443, cityHash64(n, 1) % 10000, cityHash64(n, 2) % 1000000, toUInt32(n % 4 = 0), toUInt32(n % 4 != 0), 200, \
                 'traffic', toInt32(n % 8), toInt64(intDiv(n, 8)), t, 1 \
                 FROM (SELECT number + {written} AS n, cityHash64(number + {written}) % {endpoints} AS e FROM system.numbers LIMIT {n})",
                attributed = status::ATTRIBUTED,
            );
            client.query(&sql).execute().await.expect("generate usage");
            written += n;
            eprintln!(
                "generated {written} of {rows} rows ({:.0} rows/s)",
                written as f64 / started.elapsed().as_secs_f64()
            );
        }
    } else {
        // A kept database is brought to the current schema (a new rollup is filled from the
        // raw rows by the migration that creates its view).
        let report = query::migrate(&config).await.expect("migrate");
        if !report.applied.is_empty() {
            eprintln!("migrated the kept database: {:?}", report.applied);
        }
    }
    // Let the background merges settle so the timings see the tables as they live.
    for table in query::rollup::ROLLUP_TABLES {
        client
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .expect("optimize the rollup");
    }
    let rollup_rows: u64 = client
        .query("SELECT count() FROM usage_rollup")
        .fetch_one()
        .await
        .unwrap();
    println!("rows {rows}, owners {owners}, credentials {credentials}, endpoints {endpoints}, rollup rows {rollup_rows}");

    // 2. The API, reading the rollup.
    let serve::Serve {
        child: mut serve,
        http,
        base,
        ..
    } = serve::start(DATABASE, &config.url).await;
    let get = |path: String| {
        let (http, base) = (http.clone(), base.clone());
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
    let month = "from=2026-10-01&to=2026-11-01";
    // Warm up (connection pools, ClickHouse's caches), and one answer to compare with the raw SQL.
    let (_, top_api) = get(format!("/v1/usage/top?metric=bytes_out&limit=10&{month}")).await;
    let mut owner_month = Vec::with_capacity(runs);
    let mut top = Vec::with_capacity(runs);
    // A year aligned on quarter hours (all rollup) and the same year from 00:00:01 (the rollup for
    // its whole quarter hours, raw rows for the two ragged edges).
    let (mut year, mut year_ragged) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for run in 0..runs {
        let owner = format!("bot_{}", (run as u64 * 7_919) % owners);
        owner_month.push(
            get(format!(
                "/v1/owners/{owner}/usage?granularity=month&{month}"
            ))
            .await
            .0,
        );
        top.push(
            get(format!("/v1/usage/top?metric=bytes_out&limit=10&{month}"))
                .await
                .0,
        );
        let usage = format!("/v1/owners/{owner}/usage?granularity=month&to=2027-01-01T00:00:00Z");
        year.push(get(format!("{usage}&from=2026-01-01T00:00:00Z")).await.0);
        year_ragged.push(get(format!("{usage}&from=2026-01-01T00:00:01Z")).await.0);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let _ = serve.wait();

    // 3. The same answers from the raw rows (the SQL the API runs for ranges off quarter hours).
    let mut owner_month_raw = Vec::with_capacity(raw_runs);
    let mut top_raw = Vec::with_capacity(raw_runs);
    let mut top_raw_owners = Vec::new();
    for run in 0..raw_runs {
        let owner = vec![format!("bot_{}", (run as u64 * 7_919) % owners)];
        let started = Instant::now();
        client
            .query(USAGE_BUCKETS_SQL)
            .bind("UTC")
            .bind("month")
            .bind("")
            .bind(&owner)
            .bind(Vec::<String>::new())
            .bind(status::ATTRIBUTED)
            .bind(MONTH_START)
            .bind(MONTH_START + MONTH_SECS)
            .execute()
            .await
            .unwrap();
        owner_month_raw.push(started.elapsed());
        let started = Instant::now();
        top_raw_owners = client
            .query(&format!("SELECT o_owner_id FROM ({OWNER_TOTALS_SQL})"))
            .bind("bytes_out")
            .bind(status::ATTRIBUTED)
            .bind(MONTH_START)
            .bind(MONTH_START + MONTH_SECS)
            .bind(10_u32)
            .fetch_all::<String>()
            .await
            .unwrap();
        top_raw.push(started.elapsed());
    }
    let api_owners: Vec<String> = top_api["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["owner_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        api_owners, top_raw_owners,
        "the rollup and the raw rows rank the same owners"
    );

    let (owner_p50, owner_p99) = summary("per-owner month, API (rollup)", owner_month);
    let (top_p50, top_p99) = summary("top 10 by bytes_out, API (rollup)", top);
    let (_, year_p99) = summary("per-owner year, aligned, API", year);
    let (_, year_ragged_p99) = summary("per-owner year from 00:00:01, API", year_ragged);
    let (owner_raw_p50, _) = summary("per-owner month, SQL over raw rows", owner_month_raw);
    let (top_raw_p50, _) = summary("top 10 by bytes_out, SQL over raw rows", top_raw);
    println!(
        "speed-up per-owner month (p50 raw / p50 API)  {:.1}×",
        owner_raw_p50.as_secs_f64() / owner_p50.as_secs_f64()
    );
    println!(
        "speed-up top 10 (p50 raw / p50 API)           {:.1}×",
        top_raw_p50.as_secs_f64() / top_p50.as_secs_f64()
    );
    let millions = rows as f64 / 1e6;
    report(
        &format!("per-owner month over {millions:.0}M events, p99 (n = {runs})"),
        owner_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        &format!("top 10 owners over {millions:.0}M events, p99 (n = {runs})"),
        top_p99.as_secs_f64() * 1e3,
        "ms",
        Bar::AtMost(50.0),
    );
    report(
        "per-owner year from 00:00:01 (ragged), p99 ÷ aligned year p99",
        year_ragged_p99.as_secs_f64() / year_p99.as_secs_f64(),
        "×",
        Bar::AtMost(2.0),
    );
    report(
        "per-owner month, speed-up over the raw rows (p50)",
        owner_raw_p50.as_secs_f64() / owner_p50.as_secs_f64(),
        "×",
        Bar::AtLeast(20.0),
    );
    report(
        "top 10 owners, speed-up over the raw rows (p50)",
        top_raw_p50.as_secs_f64() / top_p50.as_secs_f64(),
        "×",
        Bar::AtLeast(20.0),
    );
    if !keep {
        server
            .query(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
            .execute()
            .await
            .unwrap();
    }
}
