//! Alerts on the real services (`botmeter run --alert-rules`, README, Alerts): a small fleet with
//! a revoked token still in use, an ACL violation, an owner deactivated while its agent carries
//! traffic, a burst of unattributed traffic, a device that drops and comes back, and a healthy
//! owner. Every expected alert fires once
//! (one alert id per episode), reaches the Kafka topic, a generic webhook and an Alertmanager
//! receiver (axum servers on loopback; the webhook refuses its first request, so delivery is
//! retried), resolves once its cause stops, and no other alert fires; `botmeter run` is
//! SIGKILLed while the revoked token keeps being used, and its successor continues the same alert
//! instead of firing a second one. `/v1/alerts` lists them, and refuses a bad `state`; `/v1/audit`
//! shows each alert's firing and resolution in the trails of its owner and its credential.
//!
//! Then the same with a *simulated* fleet and all seven kinds (`usage_spike` too): the alerts
//! delivered are exactly the simulator's expected alerts
//! ([`simulate::GroundTruth::expected_alerts`]), across a SIGKILL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, DurationRound, Utc};
use serde_json::{json, Value};
use simulate::{ExpectedAlert, FleetConfig, Scenarios};

use crate::attribution::{chain, producer, send, tcp, ts};
use crate::delivery::spawn_assigned_with;
use crate::support::{self, TestEnv};

/// What the receivers got: (path, body).
#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<(String, Value)>>>,
    refused_first: Arc<AtomicBool>,
}

async fn webhook(State(received): State<Received>, Json(body): Json<Value>) -> StatusCode {
    if !received.refused_first.swap(true, Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    received.bodies.lock().unwrap().push(("/hook".into(), body));
    StatusCode::OK
}

async fn alertmanager(State(received): State<Received>, Json(body): Json<Value>) -> StatusCode {
    for alert in body.as_array().expect("an array of alerts") {
        received
            .bodies
            .lock()
            .unwrap()
            .push(("/api/v2/alerts".into(), alert.clone()));
    }
    StatusCode::OK
}

fn receiver_app() -> (Router, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/hook", post(webhook))
        .route("/api/v2/alerts", post(alertmanager))
        .with_state(received.clone());
    (app, received)
}

async fn receiver() -> (String, Received) {
    let (app, received) = receiver_app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

/// The receiver over https (rustls) with a self-signed certificate for 127.0.0.1: its base URL,
/// what it received and the certificate (PEM).
async fn tls_receiver() -> (String, Received, String) {
    let (app, received) = receiver_app();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        cert.key_pair.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let server = axum_server::from_tcp_rustls(listener, config).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
    (base, received, cert_pem)
}

/// (alert_id, state) → kind, owner and credential, from generic-JSON alerts.
type Seen = BTreeMap<(String, String), (String, String, String)>;

fn seen(alerts: impl Iterator<Item = Value>) -> Seen {
    alerts
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (
                (s("alert_id"), s("state")),
                (s("kind"), s("owner_id"), s("credential_id")),
            )
        })
        .collect()
}

fn webhook_seen(received: &Received) -> Seen {
    let bodies = received.bodies.lock().unwrap().clone();
    seen(
        bodies
            .into_iter()
            .filter(|(p, _)| p == "/hook")
            .map(|(_, b)| b),
    )
}

/// An agent session of cr_drop starting or stopping at `at`.
fn session_event(kind: &str, session: &str, at: chrono::DateTime<Utc>) -> Value {
    let mut object = json!({"session": {"id": session}, "credential": {"id": "cr_drop"}, "started_at": ts(at - chrono::Duration::seconds(1))});
    if kind == "agent_session_stop.v0" {
        object["stopped_at"] = json!(ts(at));
    }
    json!({"event_id": format!("ev_{session}_{kind}"), "event_type": kind, "event_timestamp": ts(at), "account_id": "ac_it", "object": object})
}

/// The three flag rules both rules files of these tests hold, resolved after 8 s of quiet.
const FLAG_RULES: &str = r#"[[rules]]
name = "revoked"
kind = "revoked_credential_used"
resolve_after_seconds = 8
[[rules]]
name = "acl"
kind = "acl_violation"
resolve_after_seconds = 8
[[rules]]
name = "inactive"
kind = "inactive_owner_used"
resolve_after_seconds = 8
"#;

/// The rules file of these tests: the four kinds, resolved after 8 s of quiet, delivered to
/// `alerts_topic`, the webhook and the Alertmanager receiver at `base`.
fn rules_toml(alerts_topic: &str, base: &str) -> String {
    format!(
        r#"
evaluate_every_seconds = 1
lookback_seconds = 600
api_base_url = "http://api.example"
[delivery]
kafka_topic = "{alerts_topic}"
webhook_urls = ["{base}/hook"]
alertmanager_urls = ["{base}"]
initial_backoff_ms = 50
{FLAG_RULES}[[rules]]
name = "unattributed"
kind = "unattributed_spike"
interval_seconds = 3600
threshold_bytes = 5000
resolve_after_seconds = 8
[[rules]]
name = "dropped"
kind = "device_dropped"
drop_grace_seconds = 2
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_once_resolve_and_reach_every_sink_across_a_sigkill() {
    let env = TestEnv::new("alerts");
    env.create_topics(1).await;
    let alerts_topic = format!("{}.alerts", env.traffic_topic);
    let (base, received) = receiver().await;
    // The month's bytes out are projected over a 100-byte quota from the first traffic on.
    let plan_path = env.log_dir.join("plan.toml");
    std::fs::write(
        &plan_path,
        "name = \"tiny\"\n[metrics.bytes_out]\nincluded = 100\nprice_per_unit = 1\n",
    )
    .unwrap();
    let rules = format!(
        "plan = {:?}\n{}\n[[rules]]\nname = \"overage\"\nkind = \"overage_forecast\"\nmetric = \"bytes_out\"\n",
        plan_path.to_str().unwrap(),
        rules_toml(&alerts_topic, &base)
    );
    let rules_path = env.log_dir.join("alert-rules.toml");
    std::fs::write(&rules_path, rules).unwrap();
    let rules_arg = rules_path.to_str().unwrap().to_owned();
    let args = ["run", "--alert-rules", &rules_arg];

    // The control plane: five owners, then the revocation, the deactivation and a narrow ACL.
    let t0 = Utc::now() - chrono::Duration::seconds(30);
    let kafka = producer(&env.brokers);
    let mut control = Vec::new();
    for tag in ["rev", "acl", "ina", "ok", "drop"] {
        let mut events = chain(tag, &format!("{tag}.example.com"), t0);
        if tag == "acl" {
            events[1]["object"]["acl"] = json!(["bind:allowed.example.com"]);
        }
        control.extend(events);
    }
    let later = t0 + chrono::Duration::seconds(1);
    control.push(json!({"event_id": "ev_rev_delete", "event_type": "tunnel_credential_deleted.v0", "event_timestamp": ts(later), "account_id": "ac_it", "object": {"id": "cr_rev", "owner_id": "bot_rev"}}));
    control.push(json!({"event_id": "ev_ina_off", "event_type": "bot_user_updated.v0", "event_timestamp": ts(later), "account_id": "ac_it", "object": {"id": "bot_ina", "name": "bot ina", "active": false, "created_at": ts(t0)}}));
    // The device behind cr_drop loses its agent.
    control.push(session_event("agent_session_stop.v0", "ts_drop", later));
    for event in &control {
        send(&kafka, &env.control_topic, event).await;
    }

    let mut run = spawn_assigned_with(&env, "run-0", &args).await;
    crate::attribution::warm_up(&env, &mut run).await;
    let traffic_at = Utc::now();
    let mut n = 0;
    for tag in ["rev", "acl", "ina", "ok"] {
        for _ in 0..2 {
            n += 1;
            send(
                &kafka,
                &env.traffic_topic,
                &tcp(tag, n, &format!("{tag}.example.com"), traffic_at, 100),
            )
            .await;
        }
    }
    n += 1;
    send(
        &kafka,
        &env.traffic_topic,
        &tcp("nobody", n, "nobody.example.com", traffic_at, 10_000),
    )
    .await;

    // Four alerts fire, each delivered to the webhook (after one refused attempt).
    let expected: BTreeSet<(String, String, String)> = [
        ("revoked_credential_used", "bot_rev", "cr_rev"),
        ("acl_violation", "bot_acl", "cr_acl"),
        ("inactive_owner_used", "bot_ina", "cr_ina"),
        ("unattributed_spike", "", ""),
        ("device_dropped", "bot_drop", "cr_drop"),
        ("overage_forecast", "", ""),
    ]
    .iter()
    .map(|(k, o, c)| ((*k).to_owned(), (*o).to_owned(), (*c).to_owned()))
    .collect();
    let firing_of = |seen: &Seen| -> BTreeSet<(String, String, String)> {
        seen.iter()
            .filter(|((_, s), _)| s == "firing")
            .map(|(_, v)| v.clone())
            .collect()
    };
    let started = Instant::now();
    while firing_of(&webhook_seen(&received)) != expected {
        run.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "firing alerts: {:?}\n{}",
            webhook_seen(&received),
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let revoked_id = webhook_seen(&received)
        .iter()
        .find(|(_, (kind, _, _))| kind == "revoked_credential_used")
        .map(|((id, _), _)| id.clone())
        .unwrap();

    // SIGKILL mid-way; the revoked token keeps being used while botmeter is down and after, and
    // the dropped device comes back.
    run.kill9();
    send(
        &kafka,
        &env.control_topic,
        &session_event("agent_session_start.v0", "ts_drop2", Utc::now()),
    )
    .await;
    for i in 0..3 {
        n += 1;
        send(
            &kafka,
            &env.traffic_topic,
            &tcp("rev", n, "rev.example.com", Utc::now(), 100 + i),
        )
        .await;
    }
    let mut run = spawn_assigned_with(&env, "run-1", &args).await;
    env.wait_for_count(
        &format!(
            "SELECT count() FROM {}.usage_events WHERE credential_id = 'cr_rev'",
            env.database
        ),
        5,
        Duration::from_secs(60),
        &mut run,
    )
    .await;

    // Every alert resolves once its cause has been quiet for 8 s, but the month's projection,
    // still over quota.
    let mut expected = expected;
    expected.remove(&("overage_forecast".to_owned(), String::new(), String::new()));
    let started = Instant::now();
    loop {
        run.assert_running();
        let seen = webhook_seen(&received);
        let resolved: BTreeSet<_> = seen
            .iter()
            .filter(|((_, s), _)| s == "resolved")
            .map(|(_, v)| v.clone())
            .collect();
        if resolved == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "resolved alerts: {seen:?}\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Each sink saw each of the four alerts fire and resolve under one id: no second id, no
    // unexpected alert.
    let webhook = webhook_seen(&received);
    let ids: BTreeSet<&String> = webhook.keys().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 6, "one id per alert: {webhook:?}");
    assert_eq!(
        webhook.len(),
        11,
        "each id fired and resolved, the overage only fired: {webhook:?}"
    );
    let overage_id = webhook
        .iter()
        .find(|(_, (kind, _, _))| kind == "overage_forecast")
        .map(|((id, _), _)| id.clone())
        .unwrap();
    assert!(
        ids.contains(&revoked_id),
        "the revoked token's alert kept its id across the SIGKILL: {webhook:?}"
    );
    let revoked_events = received
        .bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, b)| {
            p == "/hook" && b["alert_id"] == revoked_id.as_str() && b["state"] == "resolved"
        })
        .map(|(_, b)| b["evidence"]["events"].as_u64().unwrap())
        .max();
    assert_eq!(
        revoked_events,
        Some(5),
        "the resolved alert counts the traffic before and after the kill"
    );

    let messages = support::read_topic_all(&env.brokers, &alerts_topic, Duration::from_secs(3));
    let kafka_alerts: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        seen(kafka_alerts.into_iter()),
        webhook,
        "the Kafka topic holds the same alerts"
    );

    let bodies = received.bodies.lock().unwrap().clone();
    let alertmanager: BTreeSet<(String, bool)> = bodies
        .iter()
        .filter(|(p, _)| p == "/api/v2/alerts")
        .map(|(_, a)| {
            assert!(
                a["startsAt"].is_string()
                    && a["generatorURL"]
                        .as_str()
                        .unwrap()
                        .starts_with("http://api.example/v1/alerts?alert_id="),
                "{a}"
            );
            (
                a["labels"]["alert_id"].as_str().unwrap().to_owned(),
                a.get("endsAt").is_some(),
            )
        })
        .collect();
    let expected_am: BTreeSet<(String, bool)> = ids
        .iter()
        .flat_map(|id| [((*id).clone(), false), ((*id).clone(), true)])
        .filter(|(id, resolved)| !(*id == overage_id && *resolved))
        .collect();
    assert_eq!(
        alertmanager, expected_am,
        "Alertmanager got each alert firing, then with endsAt"
    );

    // The API lists them from ClickHouse.
    let (_serve, api) = env.serve().await;
    let http = reqwest::Client::new();
    let list: Value = http
        .get(format!("{api}/v1/alerts?state=resolved"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: BTreeSet<&str> = list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap())
        .collect();
    let resolved_ids: BTreeSet<&str> = ids
        .iter()
        .map(|s| s.as_str())
        .filter(|id| *id != overage_id)
        .collect();
    assert_eq!(listed, resolved_ids, "{list}");
    let firing: Value = http
        .get(format!("{api}/v1/alerts?state=firing"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        firing["alerts"]
            .as_array()
            .map(|a| a.iter().map(|x| x["alert_id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(overage_id)]),
        "{firing}"
    );
    let one: Value = http
        .get(format!("{api}/v1/alerts?alert_id={revoked_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["alerts"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["alerts"][0]["evidence"]["events"], 5, "{one}");
    assert_eq!(
        one["alerts"][0]["links"]["alert"],
        format!("/v1/alerts?alert_id={revoked_id}")
    );
    // The audit log keeps them: the owner's and the credential's trails show each transition of
    // their own alerts only, apart from the control-plane events.
    let audit = |query: String| {
        let http = http.clone();
        let api = api.clone();
        async move {
            let trail: Value = http
                .get(format!("{api}/v1/audit?{query}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            trail
        }
    };
    let transitions = |trail: &Value| -> Vec<(String, String, String, String)> {
        trail["alerts"]
            .as_array()
            .unwrap_or_else(|| panic!("no alerts in {trail}"))
            .iter()
            .map(|a| {
                assert_eq!(a["source"], "botmeter-alerts", "{a}");
                let s = |k: &str| a[k].as_str().unwrap().to_owned();
                (s("alert_id"), s("action"), s("kind"), s("credential_id"))
            })
            .collect()
    };
    let revoked_transitions = vec![
        (
            revoked_id.clone(),
            "alert_firing".to_owned(),
            "revoked_credential_used".to_owned(),
            "cr_rev".to_owned(),
        ),
        (
            revoked_id.clone(),
            "alert_resolved".to_owned(),
            "revoked_credential_used".to_owned(),
            "cr_rev".to_owned(),
        ),
    ];
    let by_owner = audit("owner_id=bot_rev".to_owned()).await;
    assert_eq!(transitions(&by_owner), revoked_transitions, "{by_owner}");
    assert!(
        by_owner["alerts"][1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("revoked_credential_used: 5 events"),
        "{by_owner}"
    );
    assert!(
        by_owner["lifecycle"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("alert_id").is_none()),
        "alerts are not control events: {by_owner}"
    );
    let by_credential = audit("credential_id=cr_rev".to_owned()).await;
    assert_eq!(
        transitions(&by_credential),
        revoked_transitions,
        "{by_credential}"
    );
    let acl = audit("credential_id=cr_acl".to_owned()).await;
    assert_eq!(
        transitions(&acl)
            .iter()
            .map(|(_, action, kind, _)| (action.as_str(), kind.as_str()))
            .collect::<Vec<_>>(),
        [
            ("alert_firing", "acl_violation"),
            ("alert_resolved", "acl_violation")
        ],
        "{acl}"
    );
    assert_eq!(
        transitions(&audit("owner_id=bot_ok".to_owned()).await),
        [],
        "a healthy owner has no alerts"
    );
    // A window that ends before the alert fired holds none of it.
    let before = audit(format!(
        "owner_id=bot_rev&from={}&to={}",
        (t0 - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"),
        t0.format("%Y-%m-%dT%H:%M:%SZ")
    ))
    .await;
    assert_eq!(transitions(&before), [], "{before}");

    let bad = http
        .get(format!("{api}/v1/alerts?state=burning"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("state") && text.contains("burning"), "{text}");

    run.terminate(Duration::from_secs(30));
    env.drop_database().await;
}

/// Two instances of one consumer group: only the one holding traffic partition 0 evaluates, so
/// each alert is written and delivered by one instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_of_a_group_evaluates() {
    let env = TestEnv::new("alerts_two");
    env.create_topics(2).await;
    let alerts_topic = format!("{}.alerts", env.traffic_topic);
    let (base, received) = receiver().await;
    let rules_path = env.log_dir.join("alert-rules.toml");
    std::fs::write(&rules_path, rules_toml(&alerts_topic, &base)).unwrap();
    let rules_arg = rules_path.to_str().unwrap().to_owned();
    let args = ["run", "--alert-rules", &rules_arg];
    let t0 = Utc::now() - chrono::Duration::seconds(30);
    let kafka = producer(&env.brokers);
    let mut control = chain("rev", "rev.example.com", t0);
    control.push(json!({"event_id": "ev_rev_delete", "event_type": "tunnel_credential_deleted.v0", "event_timestamp": ts(t0 + chrono::Duration::seconds(1)), "account_id": "ac_it", "object": {"id": "cr_rev", "owner_id": "bot_rev"}}));
    for event in &control {
        send(&kafka, &env.control_topic, event).await;
    }
    let mut a = spawn_assigned_with(&env, "run-a", &args).await;
    let mut b = spawn_assigned_with(&env, "run-b", &args).await;
    // Both hold a partition once the group has settled.
    let started = Instant::now();
    loop {
        a.assert_running();
        b.assert_running();
        let held = |p: &support::BotmeterProcess| {
            crate::delivery::assigned(p).is_some_and(|h| h.len() > 2)
        };
        if held(&a) && held(&b) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the group never settled\n{}\n{}",
            a.log_tail(),
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in 0..4 {
        send(
            &kafka,
            &env.traffic_topic,
            &tcp("rev", n, "rev.example.com", Utc::now(), 100),
        )
        .await;
    }
    let started = Instant::now();
    while !webhook_seen(&received).keys().any(|(_, s)| s == "firing") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no alert\n{}\n{}",
            a.log_tail(),
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more evaluations by both, had both been evaluating.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writers: Vec<&str> = [("a", &a), ("b", &b)]
        .iter()
        .filter(|(_, p)| p.log_text().contains("alert state"))
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        writers.len(),
        1,
        "exactly one instance evaluates: {writers:?}\n{}\n{}",
        a.log_tail(),
        b.log_tail()
    );
    let leader = if writers == ["a"] { &a } else { &b };
    assert!(
        crate::delivery::assigned(leader).unwrap().contains('0'),
        "the evaluator holds partition 0"
    );
    let firings = received
        .bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, body)| p == "/hook" && body["state"] == "firing")
        .count();
    assert_eq!(firings, 1, "one delivery of the firing state");
    a.terminate(Duration::from_secs(30));
    b.terminate(Duration::from_secs(30));
    env.drop_database().await;
}

/// A bad rules file stops `botmeter run` before any IO, naming the rule, the field and the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rules_file_is_refused_before_any_io() {
    let env = TestEnv::new("alerts_bad");
    let path = env.log_dir.join("bad-rules.toml");
    std::fs::write(
        &path,
        "[[rules]]\nname = \"burst\"\nkind = \"unattributed_spike\"\ninterval_seconds = 0\nthreshold_bytes = 1\n",
    )
    .unwrap();
    let output = env
        .command(&["run", "--alert-rules", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--alert-rules")
            && stderr.contains("\"burst\"")
            && stderr.contains("interval_seconds = 0"),
        "{stderr}"
    );
    let databases = env
        .clickhouse(&format!(
            "SELECT count() FROM system.databases WHERE name = '{}'",
            env.database
        ))
        .await;
    assert_eq!(databases.trim(), "0", "nothing was created");
}

/// An https webhook whose certificate is of a private CA: without `delivery.ca_file` the
/// delivery is refused (the certificate is not trusted), logged and retried, and the alert stays
/// undelivered in ClickHouse; `botmeter run` restarted with the CA file delivers that same alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_of_a_private_ca_gets_the_alert_once_the_ca_is_given() {
    let env = TestEnv::new("alerts_tls");
    env.create_topics(1).await;
    let (base, received, cert_pem) = tls_receiver().await;
    let ca_path = env.log_dir.join("ca.pem");
    std::fs::write(&ca_path, cert_pem).unwrap();
    let rules = |ca: &str| {
        format!(
            "evaluate_every_seconds = 1\nlookback_seconds = 600\n[delivery]\nkafka_topic = \"\"\nwebhook_urls = [\"{base}/hook\"]\nmax_attempts = 2\ninitial_backoff_ms = 50\n{ca}\n[[rules]]\nname = \"revoked\"\nkind = \"revoked_credential_used\"\nresolve_after_seconds = 60\n"
        )
    };
    let without_ca = env.log_dir.join("rules-without-ca.toml");
    std::fs::write(&without_ca, rules("")).unwrap();
    let with_ca = env.log_dir.join("rules-with-ca.toml");
    std::fs::write(
        &with_ca,
        rules(&format!("ca_file = {:?}", ca_path.to_str().unwrap())),
    )
    .unwrap();

    let t0 = Utc::now() - chrono::Duration::seconds(30);
    let kafka = producer(&env.brokers);
    let mut control = chain("rev", "rev.example.com", t0);
    control.push(json!({"event_id": "ev_rev_delete", "event_type": "tunnel_credential_deleted.v0", "event_timestamp": ts(t0 + chrono::Duration::seconds(1)), "account_id": "ac_it", "object": {"id": "cr_rev", "owner_id": "bot_rev"}}));
    for event in &control {
        send(&kafka, &env.control_topic, event).await;
    }
    let mut run = spawn_assigned_with(
        &env,
        "run-no-ca",
        &["run", "--alert-rules", without_ca.to_str().unwrap()],
    )
    .await;
    crate::attribution::warm_up(&env, &mut run).await;
    for n in 0..2 {
        send(
            &kafka,
            &env.traffic_topic,
            &tcp("rev", n, "rev.example.com", Utc::now(), 100),
        )
        .await;
    }
    // Refused for the certificate, logged, retried at later evaluations; nothing received.
    let started = Instant::now();
    loop {
        run.assert_running();
        let log = run.log_text();
        let refusals = log
            .matches("alert not delivered; retried at the next evaluation")
            .count();
        if refusals >= 2 {
            assert!(
                log.contains("alert delivery failed; retrying") && log.contains("certificate"),
                "the refusal names the certificate\n{}",
                run.log_tail()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no refused delivery\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(webhook_seen(&received).is_empty());
    run.kill9();
    let stored = env
        .clickhouse(&format!(
            "SELECT alert_id, argMax(state, version), argMax(delivered, version) FROM {}.alerts GROUP BY alert_id",
            env.database
        ))
        .await;
    let fields: Vec<&str> = stored.trim().split('\t').collect();
    assert_eq!(
        fields[1..],
        ["firing", "0"],
        "one firing alert, undelivered: {stored}"
    );
    let alert_id = fields[0].to_owned();

    // With the CA: the same alert reaches the https webhook.
    let mut run = spawn_assigned_with(
        &env,
        "run-ca",
        &["run", "--alert-rules", with_ca.to_str().unwrap()],
    )
    .await;
    let started = Instant::now();
    while webhook_seen(&received).is_empty() {
        run.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not delivered over https\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = webhook_seen(&received);
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        [(alert_id, "firing".to_owned())],
        "{seen:?}"
    );
    run.terminate(Duration::from_secs(30));
    env.drop_database().await;
}

/// The alerts the webhook got, one per alert id, in the simulator's terms (resolved once a
/// resolved state of that id arrived), sorted.
fn delivered_alerts(received: &Received) -> Vec<ExpectedAlert> {
    let bodies = received.bodies.lock().unwrap().clone();
    let mut by_id: BTreeMap<String, ExpectedAlert> = BTreeMap::new();
    for (_, alert) in bodies.iter().filter(|(path, _)| path == "/hook") {
        let s = |k: &str| alert[k].as_str().unwrap_or_default().to_owned();
        let entry = by_id.entry(s("alert_id")).or_insert_with(|| ExpectedAlert {
            rule: s("rule"),
            kind: s("kind"),
            owner_id: s("owner_id"),
            credential_id: s("credential_id"),
            resolved: false,
        });
        entry.resolved |= alert["state"] == "resolved";
    }
    let mut alerts: Vec<ExpectedAlert> = by_id.into_values().collect();
    alerts.sort();
    alerts
}

/// The alerts as fired, whether resolved since or not.
fn fired(alerts: &[ExpectedAlert]) -> Vec<ExpectedAlert> {
    let mut fired: Vec<ExpectedAlert> = alerts
        .iter()
        .map(|a| ExpectedAlert {
            resolved: false,
            ..a.clone()
        })
        .collect();
    fired.sort();
    fired
}

/// Waits until the webhook's alerts, as `view` sees them, are `expected`'s.
async fn wait_for_alerts(
    received: &Received,
    expected: &[ExpectedAlert],
    view: fn(&[ExpectedAlert]) -> Vec<ExpectedAlert>,
    run: &mut support::BotmeterProcess,
    what: &str,
) {
    let started = Instant::now();
    loop {
        run.assert_running();
        let delivered = delivered_alerts(received);
        if view(&delivered) == view(expected) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{what}: the webhook got\n{delivered:#?}\nexpected\n{expected:#?}\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The part of `fleet` stamped in `[from, to)`, to publish as one stage.
fn stage(fleet: &simulate::Fleet, from: DateTime<Utc>, to: DateTime<Utc>) -> simulate::Fleet {
    let within = |messages: &[simulate::SimMessage]| -> Vec<simulate::SimMessage> {
        messages
            .iter()
            .filter(|m| m.event_time >= from && m.event_time < to)
            .cloned()
            .collect()
    };
    simulate::Fleet {
        control: within(&fleet.control),
        traffic: within(&fleet.traffic),
        late_control: Vec::new(),
        truth: fleet.truth.clone(),
    }
}

/// A simulated fleet (the simulator's scenarios: devices that drop, one of them coming back, a
/// rotated token still used after its deletion, an ACL violation, a deactivated bot user, an
/// owner's usage spike, unknown hostnames, a month-end projection over a tiny quota) over the
/// last two whole hours, published through `botmeter run --alert-rules` with all seven kinds in
/// two stages split at the hour between them. The alerts delivered equal
/// [`simulate::GroundTruth::expected_alerts`] for those stages exactly: each once (one id),
/// resolved where its cause ended, none other. `botmeter run` is SIGKILLed once the first stage's
/// alerts have fired; its successor resolves them under the same ids before the second stage is
/// published. The Kafka topic holds what the webhook got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_fleets_alerts_are_the_simulators_expected_alerts_across_a_sigkill() {
    let env = TestEnv::new("alerts_sim");
    env.create_topics(1).await;
    let alerts_topic = format!("{}.alerts", env.traffic_topic);
    let (base, received) = receiver().await;
    let last_hour = Utc::now()
        .duration_trunc(chrono::Duration::hours(1))
        .unwrap();
    let config = FleetConfig {
        seed: 16,
        users: 2,
        bot_users: 4,
        traffic_events: 1_500,
        start: last_hour - chrono::Duration::hours(2),
        duration_hours: 2,
        scenarios: Scenarios {
            rotations: 1,
            acl_violations: 1,
            bot_deactivations: 1,
            device_drops: 2,
            usage_spikes: 1,
            unknown_hostnames: 2,
            ..Scenarios::default()
        },
        ..FleetConfig::default()
    };
    let fleet = simulate::generate(&config);
    let truth = &fleet.truth;
    // Half way: after the drops (30–45%), before the comebacks (55–70%), on an hour.
    let cut = last_hour - chrono::Duration::hours(1);

    let plan_path = env.log_dir.join("plan.toml");
    std::fs::write(
        &plan_path,
        "name = \"tiny\"\n[metrics.bytes_out]\nincluded = 1000\nprice_per_unit = 1\n",
    )
    .unwrap();
    let rules_path = env.log_dir.join("alert-rules.toml");
    std::fs::write(
        &rules_path,
        format!(
            r#"
evaluate_every_seconds = 1
lookback_seconds = 86400
plan = {plan_path:?}
[delivery]
kafka_topic = "{alerts_topic}"
webhook_urls = ["{base}/hook"]
initial_backoff_ms = 50
{FLAG_RULES}[[rules]]
name = "unattributed"
kind = "unattributed_spike"
interval_seconds = 3600
threshold_bytes = 1
resolve_after_seconds = 8
[[rules]]
name = "dropped"
kind = "device_dropped"
drop_grace_seconds = 2
[[rules]]
name = "overage"
kind = "overage_forecast"
metric = "bytes_out"
[[rules]]
name = "spike"
kind = "usage_spike"
factor = 4
trailing_hours = 24
min_bytes_out = 1000000000
resolve_after_seconds = 8
"#
        ),
    )
    .unwrap();
    let rules = query::alerts::AlertRules::load(&rules_path).unwrap();
    let first_stage = truth.expected_alerts(&rules, &[cut]).unwrap();
    let expected = truth
        .expected_alerts(&rules, &[cut, truth.window_end])
        .unwrap();
    // The fleet has every kind of cause (else this test would prove less than it says).
    let kinds: BTreeSet<&str> = expected.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds.len(), 7, "{expected:#?}");
    assert!(
        expected
            .iter()
            .any(|a| a.kind == "device_dropped" && a.resolved)
            && expected
                .iter()
                .any(|a| a.kind == "device_dropped" && !a.resolved),
        "a device comes back, another does not: {expected:#?}"
    );

    let rules_arg = rules_path.to_str().unwrap().to_owned();
    let args = ["run", "--alert-rules", &rules_arg];
    let mut run = spawn_assigned_with(&env, "run-0", &args).await;
    let first = stage(&fleet, truth.window_start, cut);
    env.publish(&first).await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        first.traffic.len() as u64,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    wait_for_alerts(
        &received,
        &first_stage,
        fired,
        &mut run,
        "first stage, fired",
    )
    .await;

    // SIGKILL with the first stage's alerts firing; the successor resolves them (same ids).
    run.kill9();
    let mut run = spawn_assigned_with(&env, "run-1", &args).await;
    wait_for_alerts(
        &received,
        &first_stage,
        |a| a.to_vec(),
        &mut run,
        "first stage, resolved",
    )
    .await;

    let second = stage(&fleet, cut, truth.window_end);
    env.publish(&second).await;
    wait_for_alerts(
        &received,
        &expected,
        |a| a.to_vec(),
        &mut run,
        "both stages",
    )
    .await;
    // A few more evaluations raise nothing more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(delivered_alerts(&received), expected);

    let webhook = webhook_seen(&received);
    let messages = support::read_topic_all(&env.brokers, &alerts_topic, Duration::from_secs(3));
    let kafka_alerts: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(m.payload.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(
        seen(kafka_alerts.into_iter()),
        webhook,
        "the Kafka topic holds the same alerts and states"
    );
    run.terminate(Duration::from_secs(30));
    env.drop_database().await;
}
