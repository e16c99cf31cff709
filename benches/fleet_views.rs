//! What the fleet's materialized views on `usage_events` cost each insert (not a timed test):
//! `fleet_traffic_mv` (migration 0013: each credential's latest traffic) and
//! `fleet_traffic_seconds_mv` (0017: its latest traffic per second, for the fleet timeline).
//!
//! The same usage rows (attributed traffic of 100,000 credentials over a day, microsecond times)
//! are inserted with the pipeline's writer (`Writer::insert_usage`) in the pipeline's batch size
//! (50,000 rows) into four freshly migrated databases: every view; without `fleet_traffic_mv`;
//! without `fleet_traffic_seconds_mv`; without either. The four are interleaved, round after
//! round, so that the load of a shared box falls on each alike; each case's rate is reported
//! relative to the same round's rate without either view (the median over rounds of that ratio).
//!
//! Run: `scripts/services.sh up && cargo bench --bench fleet_views`. Settings (environment):
//! `BOTMETER_BENCH_VIEWS_ROWS` (rows per insert round, default 1,000,000),
//! `BOTMETER_BENCH_VIEWS_ROUNDS` (default 6). Results go to BENCHMARKS.md by hand, with the
//! machine and its load average.

#[path = "support/clickhouse.rs"]
mod clickhouse_support;
use clickhouse_support::{bench_database, env_or, BenchDatabase};
use std::time::Instant;

use query::rows::{status, UsageRow};
use query::Writer;

const BATCH_ROWS: usize = 50_000;
/// 2026-10-01T00:00:00Z.
const DAY_START: u32 = 1_790_812_800;

/// Row `n` of `rows`: credential `cr_{hash % 100k}` of owner `bot_{…}`, at a time spread over
/// the day (with microseconds).
fn usage_row(n: u64, rows: u64) -> UsageRow {
    let credential = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % 100_000;
    let time_us =
        i64::from(DAY_START) * 1_000_000 + (n as i64 * 86_400_000_000) / rows as i64 + 123;
    UsageRow {
        event_id: format!("ev_{n}"),
        event_type: "tcp_connection_closed.v0".to_owned(),
        event_time: u32::try_from(time_us / 1_000_000).unwrap(),
        event_time_us: time_us,
        account_id: "ac_bench".to_owned(),
        status: status::ATTRIBUTED.to_owned(),
        unattributed_reason: String::new(),
        flags: Vec::new(),
        owner_id: format!("bot_{}", credential % 2_000),
        owner_kind: "bot_user".to_owned(),
        credential_id: format!("cr_{credential}"),
        credential_kind: "authtoken".to_owned(),
        session_id: format!("ts_{credential}"),
        endpoint_id: format!("ep_{credential}"),
        hostname: format!("h{credential}.ngrok.app"),
        port: 443,
        bytes_in: 10,
        bytes_out: 100,
        http_requests: 0,
        tcp_connections: 1,
        status_code: 0,
        request_body_bytes: 0,
        response_body_bytes: 0,
        kafka_topic: "traffic".to_owned(),
        kafka_partition: (n % 8) as i32,
        kafka_offset: (n / 8) as i64,
        ingested_at: DAY_START,
        sign: 1,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let rows: u64 = env_or("BOTMETER_BENCH_VIEWS_ROWS", 1_000_000);
    let rounds: usize = env_or("BOTMETER_BENCH_VIEWS_ROUNDS", 6);
    let data: Vec<UsageRow> = (0..rows).map(|n| usage_row(n, rows)).collect();
    let cases: [(&str, &[&str]); 4] = [
        ("every view", &[]),
        ("without fleet_traffic_mv (0013)", &["fleet_traffic_mv"]),
        (
            "without fleet_traffic_seconds_mv (0017)",
            &["fleet_traffic_seconds_mv"],
        ),
        (
            "without either fleet view",
            &["fleet_traffic_mv", "fleet_traffic_seconds_mv"],
        ),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for (case, (name, dropped)) in cases.iter().enumerate() {
            let database = format!("botmeter_bench_views_{case}");
            let BenchDatabase {
                config,
                server,
                client,
            } = bench_database(&database);
            let drop_database = format!("DROP DATABASE IF EXISTS {database}");
            server.query(&drop_database).execute().await.unwrap();
            query::migrate(&config).await.expect("migrate");
            for view in *dropped {
                client
                    .query(&format!("DROP TABLE {view}"))
                    .execute()
                    .await
                    .unwrap();
            }
            let writer = Writer::new(&config).unwrap();
            let started = Instant::now();
            for batch in data.chunks(BATCH_ROWS) {
                writer.insert_usage(batch).await.unwrap();
            }
            let rate = rows as f64 / started.elapsed().as_secs_f64();
            println!("round {round}: {name:<42} {rate:>10.0} rows/s");
            rates[case].push(rate);
            server.query(&drop_database).execute().await.unwrap();
        }
    }
    // Each round's rates relative to the same round without either view (paired: the load of
    // the moment falls on the four alike), then the median over rounds.
    println!("\nmedian of {rounds} rounds, {rows} rows each, batches of {BATCH_ROWS}:");
    let without_either = rates[3].clone();
    for ((name, _), case_rates) in cases.iter().zip(&rates) {
        let relative: Vec<f64> = case_rates
            .iter()
            .zip(&without_either)
            .map(|(rate, base)| rate / base)
            .collect();
        println!(
            "{name:<42} {:>10.0} rows/s  {:>6.1}% of the rate without either view (paired median)",
            median(case_rates.clone()),
            median(relative) * 100.0
        );
    }
}
