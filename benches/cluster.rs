//! Single node against the local cluster, in one run (not a timed test): the same simulated
//! backlog ingested by the release `botmeter run` (BOTMETER_BENCH_INSTANCES instances, default 2)
//! into the single ClickHouse server and into the cluster of `scripts/services.sh cluster up`
//! (2 shards × 2 replicas), there twice: with per-shard inserts (`--clickhouse-shard-urls`, from
//! BOTMETER_CLUSTER_SHARD_URLS) and through the `Distributed` tables; then the latency of two reports through `botmeter serve` on each:
//! the top owners (`/v1/usage/top`, rollups) and one owner's daily usage
//! (`/v1/owners/{id}/usage`), BOTMETER_BENCH_REQUESTS sequential requests each (default 200).
//! Every run checks the stored rows: one per published event. Also printed: botmeter's CPU per
//! event (all instances) and ClickHouse's: the single server's (the process listening on its
//! port, per `ss`), the cluster's four servers' (BOTMETER_CLUSTER_PIDS) with each one's share.
//!
//! Run: `scripts/services.sh up && scripts/services.sh cluster up && eval "$(scripts/services.sh
//! env)" && eval "$(scripts/services.sh cluster env)" && cargo bench --bench cluster`
//! (BOTMETER_BENCH_EVENTS sets the backlog, default 300,000; BOTMETER_BENCH_PARTITIONS the traffic
//! partitions, default 4). Results go to BENCHMARKS.md by hand, with the machine.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use simulate::{generate, publish, FleetConfig};
#[path = "support/proc.rs"]
mod proc;
use proc::cpu_seconds;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where one measurement writes.
struct Target {
    label: &'static str,
    url: String,
    cluster: Option<String>,
    /// `--clickhouse-shard-urls` (per-shard inserts), or none (through the `Distributed` tables).
    shard_urls: Option<String>,
}

/// The cluster's ClickHouse servers' pids, from BOTMETER_CLUSTER_PIDS (`name=pidfile,...`).
fn cluster_server_pids() -> Vec<(String, u32)> {
    std::env::var("BOTMETER_CLUSTER_PIDS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (name, file) = pair.split_once('=')?;
            let pid = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
            Some((name.to_owned(), pid))
        })
        .collect()
}

/// The pid of the process listening on the port of `url` (the single server), from `ss`.
fn listener_pid(url: &str) -> Option<u32> {
    let port = url.rsplit(':').next()?.trim_end_matches('/');
    let output = Command::new("ss")
        .args(["-H", "-ltnp", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let start = text.find("pid=")? + "pid=".len();
    let digits: String = text[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What one target measured.
struct Measured {
    label: &'static str,
    events_per_second: f64,
    ingest_seconds: f64,
    /// botmeter's CPU per event, all instances, µs.
    botmeter_cpu_us: f64,
    /// ClickHouse's CPU per event, all servers, µs, and each server's share.
    clickhouse_cpu_us: Option<(f64, Vec<(String, f64)>)>,
    top_p50_ms: f64,
    top_p99_ms: f64,
    owner_p50_ms: f64,
    owner_p99_ms: f64,
}

fn clickhouse(url: &str, sql: &str) -> Option<String> {
    let output = Command::new("curl")
        .args(["-sS", "--fail", url, "--data-binary", sql])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn botmeter(target: &Target, database: &str, topics: &[String; 3], group: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_botmeter"));
    command
        .env("BOTMETER_CLICKHOUSE_URL", &target.url)
        .env("BOTMETER_CLICKHOUSE_DATABASE", database)
        .env(
            "BOTMETER_KAFKA_BROKERS",
            env_or("BOTMETER_KAFKA_BROKERS", "127.0.0.1:9092"),
        )
        .env("BOTMETER_CONTROL_TOPIC", &topics[0])
        .env("BOTMETER_TRAFFIC_TOPIC", &topics[1])
        .env("BOTMETER_DEAD_LETTER_TOPIC", &topics[2])
        .env("BOTMETER_GROUP_ID", group)
        .env("BOTMETER_LOG", env_or("BOTMETER_LOG", "warn"))
        .env(
            "BOTMETER_CLICKHOUSE_CLUSTER",
            target.cluster.as_deref().unwrap_or(""),
        )
        .env(
            "BOTMETER_CLICKHOUSE_SHARD_URLS",
            target.shard_urls.as_deref().unwrap_or(""),
        )
        .stdout(Stdio::null());
    command
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    let index = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[index]
}

/// `requests` sequential GETs of `url`; (p50, p99) in milliseconds. Every answer must be 200.
async fn latency(http: &reqwest::Client, url: &str, requests: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let response = http.get(url).send().await.expect("reach botmeter serve");
        let status = response.status();
        let body = response.bytes().await.unwrap();
        assert!(
            status.is_success(),
            "{url}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn measure(target: &Target, run: usize) -> Measured {
    let events = env_number("BOTMETER_BENCH_EVENTS", 300_000);
    let partitions = env_number("BOTMETER_BENCH_PARTITIONS", 4) as i32;
    let instances = env_number("BOTMETER_BENCH_INSTANCES", 2);
    let requests = env_number("BOTMETER_BENCH_REQUESTS", 200);
    let brokers = env_or("BOTMETER_KAFKA_BROKERS", "127.0.0.1:9092");
    let run_id = format!("{}_{run}", std::process::id());
    let database = format!("botmeter_bench_cluster_{run_id}");
    let topics = [
        format!("bench.{run_id}.control"),
        format!("bench.{run_id}.traffic"),
        format!("bench.{run_id}.dead-letter"),
    ];
    let group = format!("bench-cluster-{run_id}");

    let fleet = generate(&FleetConfig {
        seed: 5,
        traffic_events: events,
        bot_users: 8,
        users: 4,
        ..FleetConfig::default()
    });
    let (first, last) = fleet
        .traffic
        .iter()
        .fold((i64::MAX, i64::MIN), |(a, b), m| {
            let t = m.event_time.timestamp();
            (a.min(t), b.max(t))
        });
    let owner = fleet
        .truth
        .owners
        .iter()
        .max_by_key(|(_, o)| o.usage.http_requests + o.usage.tcp_connections)
        .map(|(id, _)| id.clone())
        .expect("an owner");
    ingest::admin::ensure_topics(
        &brokers,
        &[(&topics[0], 1), (&topics[1], partitions), (&topics[2], 1)],
    )
    .await
    .unwrap();
    publish(&fleet, &brokers, &topics[0], &topics[1], None, false)
        .await
        .unwrap();
    drop(fleet);

    let migrate = botmeter(target, &database, &topics, &group)
        .arg("migrate")
        .status()
        .unwrap();
    assert!(
        migrate.success(),
        "{}: botmeter migrate failed",
        target.label
    );

    let mut runs: Vec<Child> = (0..instances)
        .map(|_| {
            botmeter(target, &database, &topics, &group)
                .args(["run", "--ops-listen", "127.0.0.1:0"])
                .spawn()
                .expect("spawn botmeter run")
        })
        .collect();
    let servers = if target.cluster.is_some() {
        cluster_server_pids()
    } else {
        listener_pid(&target.url)
            .map(|pid| vec![("server".to_owned(), pid)])
            .unwrap_or_default()
    };
    let servers_before: Vec<f64> = servers.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
    let count_sql = format!("SELECT count() FROM {database}.usage_events");
    let mut first_row = None;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let done = loop {
        let rows: usize = clickhouse(&target.url, &count_sql)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if rows > 0 && first_row.is_none() {
            first_row = Some(Instant::now());
        }
        if rows >= events {
            assert_eq!(rows, events, "{}: rows stored", target.label);
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{}: stuck at {rows} rows",
            target.label
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let botmeter_cpu: f64 = runs.iter().map(|run| cpu_seconds(run.id())).sum();
    let servers_cpu: Vec<(String, f64)> = servers
        .iter()
        .zip(&servers_before)
        .map(|((name, pid), before)| (name.clone(), cpu_seconds(*pid) - before))
        .collect();
    for run in &mut runs {
        let _ = Command::new("kill")
            .args(["-TERM", &run.id().to_string()])
            .status();
        let _ = run.wait();
    }
    let ingest_seconds = (done - first_row.expect("rows")).as_secs_f64();

    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut serve = botmeter(target, &database, &topics, &group)
        .args(["serve", "--listen", &addr.to_string()])
        .env(
            "BOTMETER_CLICKHOUSE_USER",
            env_or("BOTMETER_CLICKHOUSE_READER_USER", "botmeter_reader"),
        )
        .spawn()
        .expect("spawn botmeter serve");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    for _ in 0..100 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fmt = |secs: i64| {
        DateTime::<Utc>::from_timestamp(secs, 0)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    };
    let (from, to) = (
        fmt(first - first % 86_400),
        fmt(last - last % 86_400 + 86_400),
    );
    let (top_p50_ms, top_p99_ms) = latency(
        &http,
        &format!("{base}/v1/usage/top?metric=bytes_out&limit=10&from={from}&to={to}"),
        requests,
    )
    .await;
    let (owner_p50_ms, owner_p99_ms) = latency(
        &http,
        &format!("{base}/v1/owners/{owner}/usage?from={from}&to={to}&granularity=day"),
        requests,
    )
    .await;
    let _ = serve.kill();
    let _ = serve.wait();

    let on_cluster = target
        .cluster
        .as_ref()
        .map(|c| format!(" ON CLUSTER {c}"))
        .unwrap_or_default();
    clickhouse(
        &target.url,
        &format!("DROP DATABASE IF EXISTS {database}{on_cluster}"),
    );
    let topic_names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    let _ = admin
        .delete_topics(&topic_names, &rdkafka::admin::AdminOptions::new())
        .await;

    let per_event_us = |seconds: f64| seconds * 1e6 / events as f64;
    let clickhouse_cpu_us = (!servers_cpu.is_empty()).then(|| {
        let total: f64 = servers_cpu.iter().map(|(_, s)| s).sum();
        (
            per_event_us(total),
            servers_cpu
                .iter()
                .map(|(name, s)| (name.clone(), s / total))
                .collect(),
        )
    });
    Measured {
        label: target.label,
        events_per_second: events as f64 / ingest_seconds,
        ingest_seconds,
        botmeter_cpu_us: per_event_us(botmeter_cpu),
        clickhouse_cpu_us,
        top_p50_ms,
        top_p99_ms,
        owner_p50_ms,
        owner_p99_ms,
    }
}

#[tokio::main]
async fn main() {
    let cluster = std::env::var("BOTMETER_CLUSTER").expect(
        "BOTMETER_CLUSTER: scripts/services.sh cluster up && eval \"$(scripts/services.sh cluster env)\"",
    );
    let cluster_url = env_or("BOTMETER_CLUSTER_CLICKHOUSE_URL", "http://127.0.0.1:8131");
    let targets = [
        Target {
            label: "single node",
            url: env_or("BOTMETER_CLICKHOUSE_URL", "http://127.0.0.1:8123"),
            cluster: None,
            shard_urls: None,
        },
        Target {
            label: "cluster 2x2, per-shard inserts",
            url: cluster_url.clone(),
            cluster: Some(cluster.clone()),
            shard_urls: Some(std::env::var("BOTMETER_CLUSTER_SHARD_URLS").expect(
                "BOTMETER_CLUSTER_SHARD_URLS: eval \"$(scripts/services.sh cluster env)\"",
            )),
        },
        Target {
            label: "cluster 2x2, through Distributed",
            url: cluster_url,
            cluster: Some(cluster),
            shard_urls: None,
        },
    ];
    let mut results = Vec::new();
    for (run, target) in targets.iter().enumerate() {
        let measured = measure(target, run).await;
        eprintln!(
            "{}: {:.0} events/s ({:.1} s)",
            measured.label, measured.events_per_second, measured.ingest_seconds
        );
        results.push(measured);
    }
    println!(
        "\n| target | events/s | ingest s | botmeter CPU µs/event | ClickHouse CPU µs/event (share per server) | top p50 ms | top p99 ms | owner p50 ms | owner p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for m in &results {
        let clickhouse = m
            .clickhouse_cpu_us
            .as_ref()
            .map(|(total, shares)| {
                let shares: Vec<String> = shares
                    .iter()
                    .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
                    .collect();
                format!("{total:.1} ({})", shares.join(", "))
            })
            .unwrap_or_else(|| "—".to_owned());
        println!(
            "| {} | {:.0} | {:.1} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            m.label,
            m.events_per_second,
            m.ingest_seconds,
            m.botmeter_cpu_us,
            clickhouse,
            m.top_p50_ms,
            m.top_p99_ms,
            m.owner_p50_ms,
            m.owner_p99_ms
        );
    }
}
