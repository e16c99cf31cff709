//! `botmeter sync` harness (not a timed test): how long the release `botmeter sync --once` takes
//! to backfill a large fleet from the stand-in ngrok API (`simulate::ngrok_api`) to a fresh
//! control topic, to restart with nothing to publish (reading its own events back), and to publish
//! one poll's changes. The fleet: `BOTMETER_BENCH_SYNC_BOTS` bot users (default 500), each with 10
//! authtokens and an API key, one live session per authtoken and two endpoints per session
//! (21,000 objects by default; the issue's "hundreds of bot users, thousands of credentials and
//! live sessions").
//!
//! Run: `scripts/services.sh up && cargo bench --bench sync`. BOTMETER_BENCH_BIN runs another
//! build. Results go to BENCHMARKS.md by hand.

use std::process::Command;
use std::time::{Duration, Instant};

use model::ngrok_api::{ApiKey, BotUser, Credential, Endpoint, Ref, TunnelSession};
use simulate::ngrok_api::{ApiFleet, StandInApi};

fn fleet(bots: usize) -> ApiFleet {
    let mut fleet = ApiFleet::default();
    let at = |n: usize| {
        format!(
            "2026-01-01T{:02}:{:02}:{:02}Z",
            n / 3600 % 24,
            n / 60 % 60,
            n % 60
        )
    };
    let reference = |id: &str| {
        Some(Ref {
            id: id.to_owned(),
            uri: String::new(),
        })
    };
    for b in 0..bots {
        let bot = format!("bot_bench{b:06}");
        fleet.bot_users.insert(
            bot.clone(),
            BotUser {
                id: bot.clone(),
                name: format!("bench-{b}"),
                active: Some(true),
                created_at: at(b),
                ..BotUser::default()
            },
        );
        let key = format!("ak_bench{b:06}");
        fleet.api_keys.insert(
            key.clone(),
            ApiKey {
                id: key,
                owner_id: bot.clone(),
                created_at: at(b),
                ..ApiKey::default()
            },
        );
        for c in 0..10 {
            let n = b * 10 + c;
            let credential = format!("cr_bench{n:07}");
            fleet.credentials.insert(
                credential.clone(),
                Credential {
                    id: credential.clone(),
                    owner_id: bot.clone(),
                    created_at: at(n),
                    acl: vec![format!("bind:*.b{b}.example.com")],
                    metadata: format!(r#"{{"device_id":"d{n}"}}"#),
                    ..Credential::default()
                },
            );
            let session = format!("ts_bench{n:07}");
            fleet.tunnel_sessions.insert(
                session.clone(),
                TunnelSession {
                    id: session.clone(),
                    credential: reference(&credential),
                    started_at: at(n + 1),
                    region: "eu".into(),
                    ..TunnelSession::default()
                },
            );
            for e in 0..2 {
                let endpoint = format!("ep_bench{n:07}{e}");
                let host = format!("e{e}-{n}.b{b}.example.com");
                fleet.endpoints.insert(
                    endpoint.clone(),
                    Endpoint {
                        id: endpoint,
                        url: format!("https://{host}"),
                        host,
                        port: Some(443),
                        proto: "https".into(),
                        created_at: at(n + 2),
                        tunnel_session: reference(&session),
                        principal: reference(&bot),
                        ..Endpoint::default()
                    },
                );
            }
        }
    }
    fleet
}

fn objects(fleet: &ApiFleet) -> usize {
    fleet.bot_users.len()
        + fleet.credentials.len()
        + fleet.api_keys.len()
        + fleet.ssh_credentials.len()
        + fleet.tunnel_sessions.len()
        + fleet.endpoints.len()
}

#[tokio::main]
async fn main() {
    let bots: usize = std::env::var("BOTMETER_BENCH_SYNC_BOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let brokers =
        std::env::var("BOTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let binary = std::env::var("BOTMETER_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_botmeter").into());
    let topic = format!("bench.sync.{}.control", std::process::id());
    let fleet = fleet(bots);
    let total = objects(&fleet);
    let api = StandInApi::start("bench-key", fleet).await.unwrap();
    let base = api.base_url();
    let sync_once = |label: &str| {
        let started = Instant::now();
        let output = Command::new(&binary)
            .args(["sync", "--once", "--ngrok-api-url", &base])
            .env("NGROK_API_KEY", "bench-key")
            .env("BOTMETER_KAFKA_BROKERS", &brokers)
            .env("BOTMETER_CONTROL_TOPIC", &topic)
            .env("BOTMETER_LOG", "info")
            .env("BOTMETER_LOG_FORMAT", "json")
            .output()
            .expect("run botmeter sync");
        let elapsed = started.elapsed();
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{label}: {log}");
        let field = |message: &str, name: &str| -> u64 {
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["fields"]["message"] == message)
                .and_then(|l| l["fields"][name].as_u64())
                .unwrap_or(0)
        };
        let restore_ms = field(
            "rebuilt what sync published from the control topic",
            "elapsed_ms",
        );
        let published = field("poll published", "published");
        println!(
            "{label}: {published} events published in {:.2} s (restore from the topic {restore_ms} ms, of which 500 ms is the quiet wait)",
            elapsed.as_secs_f64()
        );
        (elapsed, published)
    };

    println!(
        "fleet: {bots} bot users, {total} objects; API pages of 100 ({} requests a poll)",
        total.div_ceil(100) + 6
    );
    let (first, published) = sync_once("backfill");
    assert_eq!(published as usize, total);
    println!(
        "backfill: {:.0} objects/s end to end (API read, diff, publish acknowledged)",
        total as f64 / first.as_secs_f64()
    );
    let (_, published) = sync_once("restart, nothing changed");
    assert_eq!(published, 0);
    api.with_fleet(|f| {
        for bot in f.bot_users.values_mut().take(10) {
            bot.active = Some(false);
        }
        let gone: Vec<String> = f.endpoints.keys().take(100).cloned().collect();
        for id in gone {
            f.endpoints.remove(&id);
        }
    });
    let (_, published) = sync_once("10 bots deactivated, 100 endpoints deleted");
    assert_eq!(published, 110);
    std::thread::sleep(Duration::from_millis(100));
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
    let _ = admin
        .delete_topics(&[&topic], &rdkafka::admin::AdminOptions::new())
        .await;
}
