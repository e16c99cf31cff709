//! `botmeter serve`'s low-cardinality gauges on its `/metrics`, read from ClickHouse: the alerts
//! firing per rule and kind (`botmeter_alerts_firing`, from the `alerts` table `botmeter run
//! --alert-rules` writes) next to the fleet gauges. Two instances export the same figures (none
//! comes from one instance's memory), and a resolution written to the table reaches the gauge at
//! the next refresh.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{self, free_port, BotmeterProcess, TestEnv};

fn alert(id: &str, rule: &str, kind: &str, state: &str, version: u64) -> Value {
    json!({
        "alert_id": id, "rule": rule, "kind": kind, "state": state,
        "owner_id": "bot_a", "credential_id": "cr_a", "events": 1, "bytes": 10,
        "first_seen": "2026-01-01 00:00:00", "last_seen": "2026-01-01 00:00:00",
        "last_ingested": "2026-01-01 00:00:00", "fired_at": "2026-01-01 00:01:00",
        "resolved_at": if state == "resolved" { "2026-01-01 00:06:00" } else { "1970-01-01 00:00:00" },
        "delivered": 1, "version": version,
    })
}

async fn insert_alerts(env: &TestEnv, rows: &[Value]) {
    let body: Vec<String> = rows.iter().map(Value::to_string).collect();
    env.clickhouse(&format!(
        "INSERT INTO {}.alerts FORMAT JSONEachRow\n{}",
        env.database,
        body.join("\n")
    ))
    .await;
}

/// The value of the one series of `name` whose labels include every `label="value"`.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Scrapes `metrics` until `ready` holds of the text (or 40 s pass: the gauges refresh every 10).
async fn scrape_until(
    metrics: &str,
    process: &mut BotmeterProcess,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        process.assert_running();
        let text = match reqwest::get(format!("http://{metrics}/metrics")).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "gauges not as expected on {metrics}:\n{text}\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_the_alerts_firing_per_rule_from_clickhouse() {
    let env = TestEnv::new("serve_gauges");
    let migrate = env.command(&["migrate"]).output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    insert_alerts(
        &env,
        &[
            alert("al_1", "revoked", "revoked_credential_used", "firing", 10),
            alert("al_2", "revoked", "revoked_credential_used", "firing", 11),
            alert("al_3", "devices", "device_dropped", "firing", 12),
            alert("al_3", "devices", "device_dropped", "resolved", 20),
        ],
    )
    .await;
    let mut instances = Vec::new();
    for name in ["serve_a", "serve_b"] {
        let metrics = format!("127.0.0.1:{}", free_port());
        let listen = format!("127.0.0.1:{}", free_port());
        let process = env.spawn(
            name,
            &["serve", "--listen", &listen, "--metrics-listen", &metrics],
        );
        instances.push((metrics, process));
    }
    let firing = |rule: &str, kind: &str| {
        let (rule, kind) = (rule.to_owned(), kind.to_owned());
        move |text: &str| {
            series(
                text,
                "botmeter_alerts_firing",
                &[("rule", &rule), ("kind", &kind)],
            )
        }
    };
    let revoked = firing("revoked", "revoked_credential_used");
    let devices = firing("devices", "device_dropped");
    for (metrics, process) in &mut instances {
        let text = scrape_until(metrics, process, |t| revoked(t).is_some()).await;
        assert_eq!(revoked(&text), Some(2.0), "{metrics}");
        assert_eq!(devices(&text), Some(0.0), "{metrics}: resolved");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("botmeter_alerts_firing{"))
                .count(),
            2,
            "one series per rule\n{text}"
        );
        // Beside the fleet gauges (an empty fleet).
        assert_eq!(
            series(
                &text,
                "botmeter_fleet_agents_online_by_owner_kind",
                &[("owner_kind", "bot_user")]
            ),
            Some(0.0)
        );
        support::assert_metrics_readable(&text);
    }
    // al_1 resolves: both instances see it at their next refresh.
    insert_alerts(
        &env,
        &[alert(
            "al_1",
            "revoked",
            "revoked_credential_used",
            "resolved",
            30,
        )],
    )
    .await;
    for (metrics, process) in &mut instances {
        scrape_until(metrics, process, |t| revoked(t) == Some(1.0)).await;
    }
    for (_, mut process) in instances {
        process.terminate(Duration::from_secs(30));
    }
    env.drop_database().await;
}
