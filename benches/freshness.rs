//! Freshness harness (not a timed test): how long from publishing a traffic event to seeing it in
//! the HTTP API, under load. The release `botmeter run` and `botmeter serve` run against fresh
//! topics and a fresh database; a simulated fleet's traffic is published at a steady rate (half
//! the measured maximum by default) while a probe event is published every 100 ms for a probe
//! bot user of its own (1 byte out each). A poller asks `GET /v1/usage/top` every 100 ms
//! (`BOTMETER_BENCH_FRESHNESS_POLL_MS`);
//! probe k is visible once the probe's `bytes_out` total reaches k + 1. Freshness of probe k =
//! first poll that shows it − the moment before it was sent.
//!
//! Live traffic waits for the control plane: with the control topic idle and read to its end, an
//! event is joined once `--control-lateness-ms` (1 s by default) has passed since its time, so a
//! control event published a little after it still applies. That wait is part of the figure.
//!
//! Run: `scripts/services.sh up && cargo bench --bench freshness`. Settings (environment):
//! `BOTMETER_BENCH_FRESHNESS_RATE` (traffic events/s, default 90,000),
//! `BOTMETER_BENCH_FRESHNESS_SECS` (default 30), `BOTMETER_BENCH_LOG` (the pipeline's log filter,
//! on stderr; default `warn`). Results go to BENCHMARKS.md by hand.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use simulate::{generate, publish, FleetConfig};
#[path = "support/targets.rs"]
#[expect(
    dead_code,
    reason = "this harness reports only some kinds of target line"
)]
mod targets;
use chrono::{SecondsFormat, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const PROBE_HOST: &str = "freshness-probe.ngrok.app";
const PROBE_BOT: &str = "bot_freshnessprobe0000000000000";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The probe's ownership chain: bot user → authtoken → agent session → endpoint on PROBE_HOST.
fn probe_control(at: &str) -> Vec<String> {
    vec![
        format!(
            r#"{{"event_id":"ev_probe_bot","event_type":"bot_user_created.v0","event_timestamp":"{at}","account_id":"ac_bench","object":{{"id":"{PROBE_BOT}","name":"freshness-probe","active":true,"created_at":"{at}"}}}}"#
        ),
        format!(
            r#"{{"event_id":"ev_probe_cred","event_type":"tunnel_credential_created.v0","event_timestamp":"{at}","account_id":"ac_bench","object":{{"id":"cr_freshnessprobe","owner_id":"{PROBE_BOT}","acl":[],"created_at":"{at}"}}}}"#
        ),
        format!(
            r#"{{"event_id":"ev_probe_session","event_type":"agent_session_start.v0","event_timestamp":"{at}","account_id":"ac_bench","object":{{"session":{{"id":"ts_freshnessprobe"}},"credential":{{"id":"cr_freshnessprobe"}},"started_at":"{at}"}}}}"#
        ),
        format!(
            r#"{{"event_id":"ev_probe_endpoint","event_type":"endpoint_created.v0","event_timestamp":"{at}","account_id":"ac_bench","object":{{"id":"ep_freshnessprobe","url":"https://{PROBE_HOST}","host":"{PROBE_HOST}","proto":"https","tunnel_session":{{"id":"ts_freshnessprobe"}},"created_at":"{at}"}}}}"#
        ),
    ]
}

fn probe_traffic(k: usize) -> String {
    let at = now_rfc3339();
    format!(
        r#"{{"event_id":"ev_probe_{k}","event_type":"tcp_connection_closed.v0","event_timestamp":"{at}","account_id":"ac_bench","object":{{"conn":{{"server_name":"{PROBE_HOST}","server_port":443,"bytes_in":0,"bytes_out":1,"start_ts":"{at}","end_ts":"{at}"}}}}}}"#
    )
}

fn spawn(args: &[&str], envs: &[(&str, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_botmeter"));
    let log = std::env::var("BOTMETER_BENCH_LOG").unwrap_or_else(|_| "warn".into());
    command
        .args(args)
        .env("BOTMETER_LOG", log)
        .stdout(Stdio::null());
    for (key, value) in envs {
        command.env(key, value);
    }
    command.spawn().expect("spawn botmeter")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let rate: u64 = env_or("BOTMETER_BENCH_FRESHNESS_RATE", 90_000);
    let secs: u64 = env_or("BOTMETER_BENCH_FRESHNESS_SECS", 30);
    let poll_ms: u64 = env_or("BOTMETER_BENCH_FRESHNESS_POLL_MS", 100);
    let url =
        std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let brokers =
        std::env::var("BOTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run_id = std::process::id();
    let database = format!("botmeter_bench_fresh_{run_id}");
    let (control, traffic, dead) = (
        format!("fresh.{run_id}.control"),
        format!("fresh.{run_id}.traffic"),
        format!("fresh.{run_id}.dead-letter"),
    );
    ingest::admin::ensure_topics(&brokers, &[(&control, 1), (&traffic, 4), (&dead, 1)])
        .await
        .unwrap();

    // The load's events fall in the hour before now, so that, like live traffic, they are in the
    // current month (a batch across months is split per partition and month: many small inserts)
    // and none is in the future (which would wait for the control plane's lateness).
    let fleet = Arc::new(generate(&FleetConfig {
        seed: 11,
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
    for payload in probe_control(&now_rfc3339()) {
        producer
            .send(
                FutureRecord::<(), str>::to(&control).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("probe control");
    }

    let envs = [
        ("BOTMETER_CLICKHOUSE_URL", url.clone()),
        ("BOTMETER_CLICKHOUSE_DATABASE", database.clone()),
        ("BOTMETER_KAFKA_BROKERS", brokers.clone()),
        ("BOTMETER_CONTROL_TOPIC", control.clone()),
        ("BOTMETER_TRAFFIC_TOPIC", traffic.clone()),
        ("BOTMETER_DEAD_LETTER_TOPIC", dead.clone()),
        ("BOTMETER_GROUP_ID", format!("fresh-{run_id}")),
    ];
    let mut run = spawn(&["run", "--ops-listen", "127.0.0.1:0"], &envs);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut serve = spawn(
        &[
            "serve",
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &envs,
    );
    let http = reqwest::Client::new();
    // The top-owners report for today (every owner of the fleet fits in it): it reads only the
    // rollups, so polling it often does not load ClickHouse the way the per-owner report
    // would (that one also reads agent sessions from the audit log).
    let usage_url = {
        let today = Utc::now().date_naive();
        format!(
            "http://{addr}/v1/usage/top?metric=bytes_out&limit=1000&from={today}&to={}",
            today.succ_opt().unwrap()
        )
    };
    let probe_total = {
        let (http, usage_url) = (http.clone(), usage_url.clone());
        move || {
            let (http, usage_url) = (http.clone(), usage_url.clone());
            async move {
                let response = http.get(&usage_url).send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let body: serde_json::Value = response.json().await.ok()?;
                let owners = body["owners"].as_array()?;
                Some(
                    owners
                        .iter()
                        .find(|o| o["owner_id"] == PROBE_BOT)
                        .map_or(0, |o| o["usage"]["bytes_out"].as_u64().unwrap_or(0)),
                )
            }
        }
    };
    // Ready: the pipeline holds the traffic partitions (a first probe shows up) before the load.
    let started = Instant::now();
    let mut warm = 0;
    loop {
        producer
            .send(
                FutureRecord::<(), str>::to(&traffic).payload(&probe_traffic(1_000_000 + warm)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        warm += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if probe_total().await.unwrap_or(0) > 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the pipeline never attributed a probe"
        );
    }
    let baseline = loop {
        let total = probe_total().await.unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(3)).await;
        if probe_total().await.unwrap_or(0) == total {
            break total;
        }
    };
    eprintln!(
        "pipeline ready in {:.1?}; publishing {} events at {rate}/s with a probe every 100 ms",
        started.elapsed(),
        rate * secs
    );

    let load = {
        let (fleet, brokers, control, traffic) = (
            fleet.clone(),
            brokers.clone(),
            control.clone(),
            traffic.clone(),
        );
        tokio::spawn(async move {
            publish(&fleet, &brokers, &control, &traffic, Some(rate), false).await
        })
    };
    let poller = {
        let probe_total = probe_total.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(Instant, u64)> = Vec::new();
            let mut last = 0;
            let stop_after = Instant::now() + Duration::from_secs(secs + 60);
            while Instant::now() < stop_after {
                if let Some(total) = probe_total().await {
                    if total > last {
                        seen.push((Instant::now(), total));
                        last = total;
                    }
                }
                tokio::time::sleep(Duration::from_millis(poll_ms)).await;
            }
            seen
        })
    };
    let mut sent = Vec::new();
    let probes_until = Instant::now() + Duration::from_secs(secs);
    let mut k = 0;
    while Instant::now() < probes_until {
        let at = Instant::now();
        producer
            .send(
                FutureRecord::<(), str>::to(&traffic).payload(&probe_traffic(k)),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        sent.push(at);
        k += 1;
        tokio::time::sleep_until((at + Duration::from_millis(100)).into()).await;
    }
    let report = load.await.unwrap().expect("publish the load");
    let seen = poller.await.unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string(), &serve.id().to_string()])
        .status();
    let _ = (run.wait(), serve.wait());
    let _ = Command::new("curl")
        .args([
            "-sS",
            &url,
            "--data-binary",
            &format!("DROP DATABASE IF EXISTS {database}"),
        ])
        .output();

    let mut latencies: Vec<Duration> = Vec::with_capacity(sent.len());
    for (k, at) in sent.iter().enumerate() {
        let needed = baseline + k as u64 + 1;
        match seen.iter().find(|(_, total)| *total >= needed) {
            Some((when, _)) => latencies.push(when.saturating_duration_since(*at)),
            None => panic!(
                "probe {k} never became visible (last total {:?})",
                seen.last()
            ),
        }
    }
    latencies.sort();
    println!(
        "load                         {} traffic events at {:.0}/s achieved (target {rate}/s)",
        report.traffic_messages, report.messages_per_sec
    );
    println!("probes                       {}", latencies.len());
    println!(
        "freshness publish → API      p50 {:.0} ms  p90 {:.0} ms  p99 {:.0} ms  max {:.0} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.9).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    targets::report(
        &format!(
            "freshness p99, publish → API, at {} events/s",
            targets::number(report.messages_per_sec)
        ),
        percentile(&latencies, 0.99).as_secs_f64(),
        "s",
        targets::Bar::AtMost(2.0),
    );
}
