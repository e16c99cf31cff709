//! Alert latency harness (not a timed test): how long from publishing the Kafka message that
//! triggers an alert to the alert's delivery at a webhook. The release `botmeter run
//! --alert-rules` runs against fresh topics and a fresh database, with a simulated fleet's
//! traffic published at a steady rate as background load; meanwhile, every second, probe k
//! publishes one traffic event on its own credential, deleted (revoked) before the run started,
//! so that each probe fires one `revoked_credential_used` alert of its own. A webhook receiver
//! (axum on loopback) records when each alert arrives. Latency of probe k = arrival of its alert −
//! the moment before its message was sent.
//!
//! The figure includes `--control-lateness-ms` (live traffic waits 1 s for the control plane by
//! default), the batch wait and the evaluation period (1 s).
//!
//! Run: `scripts/services.sh up && cargo bench --bench alerts`. Settings (environment):
//! `BOTMETER_BENCH_ALERTS_RATE` (background traffic events/s, default 45,000),
//! `BOTMETER_BENCH_ALERTS_PROBES` (default 30, one a second), `BOTMETER_BENCH_LOG` (the
//! pipeline's log filter, on stderr; default `warn`). Results go to BENCHMARKS.md by hand.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use simulate::{generate, publish, FleetConfig};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Probe k's chain, then its credential's deletion.
fn probe_control(k: usize, at: &str) -> Vec<Value> {
    let event = |kind: &str, object: Value| json!({"event_id": format!("ev_probe_{k}_{kind}"), "event_type": kind, "event_timestamp": at, "account_id": "ac_bench", "object": object});
    let (bot, cred, session, host) = (
        format!("bot_probe{k}"),
        format!("cr_probe{k}"),
        format!("ts_probe{k}"),
        format!("probe{k}.alerts.example.com"),
    );
    vec![
        event(
            "bot_user_created.v0",
            json!({"id": bot, "name": "probe", "active": true, "created_at": at}),
        ),
        event(
            "tunnel_credential_created.v0",
            json!({"id": cred, "owner_id": bot, "acl": [], "created_at": at}),
        ),
        event(
            "agent_session_start.v0",
            json!({"session": {"id": session}, "credential": {"id": cred}, "started_at": at}),
        ),
        event(
            "endpoint_created.v0",
            json!({"id": format!("ep_probe{k}"), "url": format!("https://{host}"), "host": host, "proto": "https", "tunnel_session": {"id": session}, "created_at": at}),
        ),
        event(
            "tunnel_credential_deleted.v0",
            json!({"id": cred, "owner_id": bot}),
        ),
    ]
}

fn probe_traffic(k: usize) -> String {
    let at = now_rfc3339();
    json!({"event_id": format!("ev_probe_{k}_use"), "event_type": "tcp_connection_closed.v0", "event_timestamp": at, "account_id": "ac_bench",
           "object": {"conn": {"server_name": format!("probe{k}.alerts.example.com"), "server_port": 443, "bytes_in": 0, "bytes_out": 1, "start_ts": at, "end_ts": at}}})
    .to_string()
}

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn webhook(State(arrivals): State<Arrivals>, Json(alert): Json<Value>) {
    if alert["state"] == "firing" {
        let credential = alert["credential_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        arrivals
            .lock()
            .unwrap()
            .entry(credential)
            .or_insert_with(Instant::now);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let rate: u64 = env_or("BOTMETER_BENCH_ALERTS_RATE", 45_000);
    let probes: usize = env_or("BOTMETER_BENCH_ALERTS_PROBES", 30);
    let url =
        std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let brokers =
        std::env::var("BOTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run_id = std::process::id();
    let database = format!("botmeter_bench_alerts_{run_id}");
    let (control, traffic, dead, alerts_topic) = (
        format!("alerts.{run_id}.control"),
        format!("alerts.{run_id}.traffic"),
        format!("alerts.{run_id}.dead-letter"),
        format!("alerts.{run_id}.alerts"),
    );
    ingest::admin::ensure_topics(&brokers, &[(&control, 1), (&traffic, 4), (&dead, 1)])
        .await
        .unwrap();

    let arrivals: Arrivals = Arc::default();
    let app = Router::new()
        .route("/hook", post(webhook))
        .with_state(arrivals.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let rules = std::env::temp_dir().join(format!("botmeter-bench-alerts-{run_id}.toml"));
    std::fs::write(
        &rules,
        format!(
            "evaluate_every_seconds = 1\n[delivery]\nkafka_topic = \"{alerts_topic}\"\nwebhook_urls = [\"{hook}\"]\n[[rules]]\nname = \"revoked\"\nkind = \"revoked_credential_used\"\n"
        ),
    )
    .unwrap();

    let secs = probes as u64 + 5;
    let fleet = Arc::new(generate(&FleetConfig {
        seed: 12,
        start: Utc::now() - chrono::Duration::hours(1),
        duration_hours: 1,
        traffic_events: usize::try_from(rate * secs).unwrap(),
        bot_users: 50,
        users: 10,
        ..FleetConfig::default()
    }));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let at = now_rfc3339();
    for k in 0..probes {
        for event in probe_control(k, &at) {
            producer
                .send(
                    FutureRecord::<(), str>::to(&control).payload(&event.to_string()),
                    Duration::from_secs(10),
                )
                .await
                .expect("probe control");
        }
    }

    let log = std::env::var("BOTMETER_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    let mut run = Command::new(env!("CARGO_BIN_EXE_botmeter"))
        .args(["run", "--alert-rules", rules.to_str().unwrap()])
        .env("BOTMETER_LOG", log)
        .env("BOTMETER_CLICKHOUSE_URL", &url)
        .env("BOTMETER_CLICKHOUSE_DATABASE", &database)
        .env("BOTMETER_KAFKA_BROKERS", &brokers)
        .env("BOTMETER_CONTROL_TOPIC", &control)
        .env("BOTMETER_TRAFFIC_TOPIC", &traffic)
        .env("BOTMETER_DEAD_LETTER_TOPIC", &dead)
        .env("BOTMETER_GROUP_ID", format!("bench-alerts-{run_id}"))
        .env("BOTMETER_OPS_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn botmeter");
    // The group join (tansu waits the rebalance timeout) and the first evaluation.
    tokio::time::sleep(Duration::from_secs(12)).await;

    let load = {
        let (fleet, brokers, control, traffic) = (
            fleet.clone(),
            brokers.clone(),
            control.clone(),
            traffic.clone(),
        );
        tokio::spawn(async move {
            publish(&fleet, &brokers, &control, &traffic, Some(rate), false)
                .await
                .expect("publish the load")
        })
    };
    let mut sent = Vec::new();
    for k in 0..probes {
        let payload = probe_traffic(k);
        let before = Instant::now();
        producer
            .send(
                FutureRecord::<(), str>::to(&traffic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("probe");
        sent.push((format!("cr_probe{k}"), before));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < probes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = load.await.unwrap();
    let arrived = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(credential, before)| {
            arrived.get(credential).map(|at| at.duration_since(*before))
        })
        .collect();
    latencies.sort();
    let _ = run.kill();
    let _ = run.wait();
    let _ = std::fs::remove_file(&rules);
    println!(
        "background load: {} traffic events at {rate}/s requested ({:?})",
        report.traffic_messages,
        Duration::from_millis(report.elapsed_ms)
    );
    println!("alerts delivered: {} of {probes} probes", latencies.len());
    if !latencies.is_empty() {
        println!(
            "latency publish → webhook: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            latencies[latencies.len() - 1]
        );
    }
    let http = reqwest::Client::new();
    let _ = http
        .post(&url)
        .body(format!("DROP DATABASE IF EXISTS {database}"))
        .send()
        .await;
}
