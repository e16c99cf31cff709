//! Alert evaluation cost harness (not a timed test): what one evaluation of the usage rules
//! (`revoked_credential_used`, `acl_violation`, `inactive_owner_used`, `unattributed_spike`,
//! evaluated every second by `botmeter run --alert-rules`) costs ClickHouse when `usage_events`
//! holds months of rows. The rows are generated inside ClickHouse (`INSERT … SELECT … FROM
//! numbers`) through `usage_events`, so every materialized view sees them as it sees the
//! pipeline's inserts: by default 12,000,000 rows over the 180 days before now, ingested as they
//! happen, on 100,000 credentials of 2,000 owners; one row in 1,000 carries flag
//! `credential_deleted`, one in 2,000 `acl_violation`, one in 3,000 `owner_inactive`, and one in
//! 997 is unattributed. Then the four rules are evaluated with `query::alerts::evaluate_rule`
//! (the code `botmeter run` runs, default lookback 3600 s), `BOTMETER_BENCH_SCAN_RUNS` times
//! (default 30), timed, and the rows and bytes ClickHouse read for them are summed from
//! `system.query_log` (the harness's queries, one after the other, carry one `query_id` of their own).
//!
//! Last, what the view of migration 0016 adds to an insert into `usage_events`: the same rows
//! inserted into a bare copy of the table without and with a copy of the view, alternating.
//!
//! Run: `scripts/services.sh up && cargo bench --bench alert_scan`. Settings (environment):
//! `BOTMETER_BENCH_SCAN_ROWS` (default 12,000,000), `BOTMETER_BENCH_SCAN_DAYS` (default 180),
//! `BOTMETER_BENCH_SCAN_RUNS` (default 30), `BOTMETER_BENCH_SCAN_INSERT_ROWS` (rows per insert of
//! the view's write cost below, default 2,000,000; 0 skips it), `BOTMETER_BENCH_SCAN_KEEP=1` keeps the database
//! (`botmeter_bench_alert_scan`) and reuses it when it holds that many rows (migrating it first:
//! a build with newer migrations is measured on the same rows). Results go to BENCHMARKS.md by
//! hand, with the machine.

#[path = "support/clickhouse.rs"]
mod clickhouse_support;
use clickhouse_support::{bench_database, env_or, BenchDatabase};
use std::time::{Duration, Instant};

use query::alerts::AlertRules;
use query::rows::status;

const DATABASE: &str = "botmeter_bench_alert_scan";
const RULES: &str = r#"
[delivery]
kafka_topic = "unused"
[[rules]]
name = "revoked"
kind = "revoked_credential_used"
[[rules]]
name = "acl"
kind = "acl_violation"
[[rules]]
name = "inactive"
kind = "inactive_owner_used"
[[rules]]
name = "unattributed"
kind = "unattributed_spike"
interval_seconds = 60
threshold_bytes = 1000000
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn now_secs() -> u32 {
    u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// `INSERT … SELECT` of rows `written..written + n` of `rows` spread over `span` seconds from
/// `first` into `table` (see the module docs for their shape).
fn usage_insert_sql(table: &str, first: u64, span: u64, rows: u64, written: u64, n: u64) -> String {
    format!(
        "INSERT INTO {table} (event_id, event_type, event_time, event_time_us, account_id, status, flags, \
         owner_id, owner_kind, credential_id, credential_kind, session_id, endpoint_id, hostname, port, bytes_in, \
         bytes_out, http_requests, tcp_connections, status_code, kafka_topic, kafka_partition, kafka_offset, \
         ingested_at, sign) \
         SELECT concat('ev_', toString(n)), 'tcp_connection_closed.v0', \
         toDateTime({first} + intDiv(n * {span}, {rows})) AS t, toInt64(toUInt32(t)) * 1000000, 'ac_bench', \
         if(n % 997 = 0, '{unattributed}', '{attributed}') AS s, \
         multiIf(s != '{attributed}', emptyArrayString(), n % 1000 = 0, ['credential_deleted'], \
                 n % 2000 = 1, ['acl_violation'], n % 3000 = 2, ['owner_inactive'], emptyArrayString()), \
         if(s = '{attributed}', concat('bot_', toString(c % 2000)), ''), 'bot_user', \
         if(s = '{attributed}', concat('cr_', toString(c)), ''), 'authtoken', concat('ts_', toString(c)), \
         concat('ep_', toString(c)), concat('h', toString(c), '.ngrok.app'), 443, 10, 100, 0, 1, 0, \
         'traffic', toInt32(n % 8), toInt64(intDiv(n, 8)), toDateTime(toUInt32(t) + 1), 1 \
         FROM (SELECT number + {written} AS n, cityHash64(number + {written}) % 100000 AS c \
               FROM system.numbers LIMIT {n})",
        attributed = status::ATTRIBUTED,
        unattributed = status::UNATTRIBUTED,
    )
}

/// What the view of migration 0016 adds to an insert: `rounds` inserts of `rows` rows into a bare
/// copy of `usage_events` without the view, then with it (feeding a copy of
/// `usage_alert_evidence`), alternating; the mean time per million rows of each.
async fn view_insert_cost(client: &clickhouse::Client, rows: u64, rounds: usize) -> (f64, f64) {
    const MIGRATION: &str = include_str!("../schemas/clickhouse/0016_usage_alert_evidence.sql");
    let view_select = MIGRATION
        .split("\n;\n")
        .find(|s| s.contains("CREATE MATERIALIZED VIEW"))
        .and_then(|s| s.split_once(" AS\n"))
        .expect("the view's SELECT")
        .1
        .replace("FROM usage_events", "FROM scratch_usage");
    for sql in [
        "DROP TABLE IF EXISTS scratch_view",
        "DROP TABLE IF EXISTS scratch_usage",
        "DROP TABLE IF EXISTS scratch_evidence",
        "CREATE TABLE scratch_usage AS usage_events",
        "CREATE TABLE scratch_evidence AS usage_alert_evidence",
    ] {
        client.query(sql).execute().await.expect(sql);
    }
    let first = u64::from(now_secs()) - 86_400;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        let viewed = round % 2 == 1;
        if viewed {
            client
                .query(&format!(
                    "CREATE MATERIALIZED VIEW scratch_view TO scratch_evidence AS {view_select}"
                ))
                .execute()
                .await
                .expect("create the view");
        }
        let sql = usage_insert_sql("scratch_usage", first, 86_400, rows, 0, rows);
        let started = Instant::now();
        client.query(&sql).execute().await.expect("insert");
        let per_million = started.elapsed().as_secs_f64() * 1000.0 / (rows as f64 / 1e6);
        if viewed {
            with.push(per_million);
            client
                .query("DROP TABLE scratch_view")
                .execute()
                .await
                .expect("drop the view");
        } else {
            without.push(per_million);
        }
    }
    for sql in ["DROP TABLE scratch_usage", "DROP TABLE scratch_evidence"] {
        client.query(sql).execute().await.expect(sql);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    (mean(&without), mean(&with))
}

#[tokio::main]
async fn main() {
    let rows: u64 = env_or("BOTMETER_BENCH_SCAN_ROWS", 12_000_000);
    let days: u64 = env_or("BOTMETER_BENCH_SCAN_DAYS", 180);
    let runs: usize = env_or("BOTMETER_BENCH_SCAN_RUNS", 30);
    let keep = std::env::var("BOTMETER_BENCH_SCAN_KEEP").is_ok_and(|v| v == "1");
    let BenchDatabase {
        config,
        server,
        client,
    } = bench_database(DATABASE);

    let existing: u64 = client
        .query("SELECT count() FROM usage_events")
        .fetch_one()
        .await
        .unwrap_or(0);
    if existing != rows || !keep {
        server
            .query(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
            .execute()
            .await
            .unwrap();
        query::migrate(&config).await.expect("migrate");
        let started = Instant::now();
        let span = days * 86_400;
        let first = u64::from(now_secs()) - span;
        let chunk = 4_000_000_u64.min(rows);
        let mut written = 0;
        while written < rows {
            let n = chunk.min(rows - written);
            let sql = usage_insert_sql("usage_events", first, span, rows, written, n);
            client.query(&sql).execute().await.expect("generate usage");
            written += n;
        }
        eprintln!(
            "generated {rows} usage rows over {days} days in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    } else {
        let started = Instant::now();
        let report = query::migrate(&config).await.expect("migrate");
        if !report.applied.is_empty() {
            eprintln!(
                "migrated the kept database: {:?} in {:.1}s",
                report.applied,
                started.elapsed().as_secs_f64()
            );
        }
    }
    // Let the background merges settle so the timings see the tables as they live.
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree'")
        .fetch_all()
        .await
        .unwrap();
    for table in &tables {
        client
            .query(&format!("OPTIMIZE TABLE {table} FINAL"))
            .execute()
            .await
            .expect("optimize");
    }

    let rules = AlertRules::parse(RULES).expect("rules");
    let query_id = format!("bench_alert_scan_{}", std::process::id());
    let measured = client
        .clone()
        .with_option("log_queries", "1")
        .with_option("query_id", &query_id);
    let fleet = query::AppState::new(&config).expect("app state");
    let mut samples = Vec::with_capacity(runs);
    let mut found = 0;
    for run in 0..runs {
        let started = Instant::now();
        let now = now_secs();
        for rule in &rules.rules {
            found += query::alerts::evaluate_rule(
                &measured,
                &fleet,
                None,
                rule,
                rules.lookback_seconds,
                now,
                u64::try_from(run).unwrap(),
                &[],
            )
            .await
            .expect("evaluate")
            .len();
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    server
        .query("SYSTEM FLUSH LOGS")
        .execute()
        .await
        .expect("flush logs");
    let (queries, read_rows, read_bytes): (u64, u64, u64) = server
        .query(
            "SELECT count(), sum(read_rows), sum(read_bytes) FROM system.query_log \
             WHERE query_id = ? AND type = 2",
        )
        .bind(query_id.as_str())
        .fetch_one()
        .await
        .expect("query log");
    println!("usage_events: {rows} rows over {days} days; {runs} evaluations of the 4 usage rules (lookback {} s)", rules.lookback_seconds);
    println!(
        "evaluation (4 rules): p50 {:.1?}, p99 {:.1?}, max {:.1?}; {} alerts per evaluation",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
        found / runs.max(1)
    );
    println!(
        "ClickHouse read per evaluation: {} rows, {:.1} MiB ({queries} queries in all)",
        read_rows / runs.max(1) as u64,
        read_bytes as f64 / runs.max(1) as f64 / 1_048_576.0
    );
    let insert_rows: u64 = env_or("BOTMETER_BENCH_SCAN_INSERT_ROWS", 2_000_000);
    if insert_rows > 0 {
        let (without, with) = view_insert_cost(&client, insert_rows, 3).await;
        println!(
            "insert of {insert_rows} usage rows into a bare copy of usage_events: {without:.0} ms per million rows \
             without the view of 0016, {with:.0} ms with it (+{:.1}%; 3 rounds each, alternating)",
            (with / without - 1.0) * 100.0
        );
    }
    if !keep {
        server
            .query(&format!("DROP DATABASE {DATABASE}"))
            .execute()
            .await
            .unwrap();
    }
}
