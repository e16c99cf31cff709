//! `usage_spike` evaluation cost harness (not a timed test): how long one evaluation's evidence
//! query of a `usage_spike` rule takes on ClickHouse, against a month of usage (by default 10M
//! rows of 2,000 owners over 30 days, ingested as they happened), for a 24-hour, a 168-hour and a
//! 720-hour (30-day, over the cap `trailing_hours` has, to show why) trailing window, beside an `acl_violation` rule's flag query on the same rows for
//! scale. The query is the one `botmeter run --alert-rules` makes
//! (`query::alerts::usage_evidence`); each is run `BOTMETER_BENCH_SPIKE_RUNS` times (default 20)
//! after one warm-up, and p50 and max are printed.
//!
//! Run: `scripts/services.sh up && cargo bench --bench usage_spike`. Settings (environment):
//! `BOTMETER_BENCH_SPIKE_ROWS` (default 10,000,000), `BOTMETER_BENCH_SPIKE_OWNERS` (2,000),
//! `BOTMETER_BENCH_SPIKE_RUNS` (20), `BOTMETER_BENCH_SPIKE_KEEP=1` keeps the database
//! (`botmeter_bench_usage_spike`) and reuses it when it holds as many rows. Results go to
//! BENCHMARKS.md by hand.

#[path = "support/clickhouse.rs"]
mod clickhouse_support;
use clickhouse_support::{bench_database, env_or, BenchDatabase};
use std::time::{Duration, Instant};

use query::alerts::{usage_evidence, Rule, RuleKind};

const DATABASE: &str = "botmeter_bench_usage_spike";
const DAYS: u64 = 30;

#[tokio::main]
async fn main() {
    let rows: u64 = env_or("BOTMETER_BENCH_SPIKE_ROWS", 10_000_000);
    let owners: u64 = env_or("BOTMETER_BENCH_SPIKE_OWNERS", 2_000);
    let runs: usize = env_or("BOTMETER_BENCH_SPIKE_RUNS", 20);
    let keep = std::env::var("BOTMETER_BENCH_SPIKE_KEEP").is_ok_and(|v| v == "1");
    let BenchDatabase {
        config,
        server,
        client,
    } = bench_database(DATABASE);
    let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap();
    let span = DAYS * 86_400;

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
        let started = Instant::now();
        // Row n: owner n % owners, stamped evenly over the 30 days before now, ingested 5 s
        // later; one row in 50 flagged acl_violation.
        let sql = format!(
            "INSERT INTO usage_events (event_id, event_type, event_time, event_time_us, account_id, status, flags, \
             owner_id, owner_kind, credential_id, credential_kind, endpoint_id, bytes_in, bytes_out, tcp_connections, \
             ingested_at, sign) \
             SELECT concat('ev_', toString(n)), 'tcp_connection_closed.v0', \
             toDateTime({start} + intDiv(n * {span}, {rows})) AS t, toInt64(toUInt32(t)) * 1000000, 'ac_bench', \
             'attributed', if(n % 50 = 0, ['acl_violation'], emptyArrayString()), concat('bot_', toString(n % {owners})), \
             'bot_user', concat('cr_', toString(n % {owners})), 'authtoken', concat('ep_', toString(n % {owners})), \
             cityHash64(n, 1) % 10000, cityHash64(n, 2) % 1000000, 1, t + 5, 1 \
             FROM (SELECT number AS n FROM system.numbers LIMIT {rows})",
            start = u64::from(now) - span,
        );
        client.query(&sql).execute().await.expect("generate usage");
        eprintln!(
            "generated {rows} rows in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let spike = |trailing_hours: u64| Rule {
        factor: Some(4.0),
        trailing_hours: Some(trailing_hours),
        min_bytes_out: Some(1_000_000_000),
        ..Rule::new("spike", RuleKind::UsageSpike)
    };
    let cases = [
        ("usage_spike, trailing_hours = 24", spike(24)),
        ("usage_spike, trailing_hours = 168", spike(168)),
        // Over the 168-hour cap the rules file allows: what the cap avoids.
        ("usage_spike, trailing_hours = 720", spike(720)),
        (
            "acl_violation (flag query, for scale)",
            Rule::new("acl", RuleKind::AclViolation),
        ),
    ];
    println!(
        "{rows} rows, {owners} owners, {DAYS} days; lookback_seconds = 3600; {runs} runs each"
    );
    println!("| rule | evidence rows | p50 | max |");
    println!("| --- | ---: | ---: | ---: |");
    for (label, rule) in &cases {
        let found = usage_evidence(&client, rule, 3600, now)
            .await
            .expect("evidence");
        let mut samples: Vec<Duration> = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            usage_evidence(&client, rule, 3600, now)
                .await
                .expect("evidence");
            samples.push(started.elapsed());
        }
        samples.sort();
        println!(
            "| {label} | {} | {:.1} ms | {:.1} ms |",
            found.len(),
            samples[samples.len() / 2].as_secs_f64() * 1e3,
            samples.last().unwrap().as_secs_f64() * 1e3
        );
    }
    if !keep {
        server
            .query(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
            .execute()
            .await
            .unwrap();
    }
}
