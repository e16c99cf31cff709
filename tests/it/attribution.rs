//! Attribution on the real services: the late-control-event race (traffic published before the
//! control events it depends on still attributes), restatement of unattributed usage by
//! `botmeter reattribute` without double counting, and a restart that rebuilds the ownership
//! state from ClickHouse instead of replaying the control topic.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::support::{self, TestEnv};

pub(crate) fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

pub(crate) async fn send(producer: &FutureProducer, topic: &str, event: &serde_json::Value) {
    let payload = event.to_string();
    producer
        .send(
            FutureRecord::<(), str>::to(topic).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The control events of one chain: bot → authtoken → session → endpoint on `host`, all at `at`.
pub(crate) fn chain(tag: &str, host: &str, at: DateTime<Utc>) -> Vec<serde_json::Value> {
    let bot = format!("bot_{tag}");
    let event = |kind: &str, object: serde_json::Value| json!({"event_id": format!("ev_{tag}_{kind}"), "event_type": kind, "event_timestamp": ts(at), "account_id": "ac_it", "object": object});
    vec![
        event(
            "bot_user_created.v0",
            json!({"id": bot, "name": format!("bot {tag}"), "active": true, "created_at": ts(at)}),
        ),
        event(
            "tunnel_credential_created.v0",
            json!({"id": format!("cr_{tag}"), "owner_id": bot, "acl": [], "token": "never-stored", "created_at": ts(at)}),
        ),
        event(
            "agent_session_start.v0",
            json!({"session": {"id": format!("ts_{tag}")}, "credential": {"id": format!("cr_{tag}")}, "started_at": ts(at)}),
        ),
        event(
            "endpoint_created.v0",
            json!({"id": format!("ep_{tag}"), "url": format!("https://{host}"), "host": host, "proto": "https", "tunnel_session": {"id": format!("ts_{tag}")}, "principal": {"id": bot}, "created_at": ts(at)}),
        ),
    ]
}

pub(crate) fn tcp(
    tag: &str,
    n: usize,
    host: &str,
    at: DateTime<Utc>,
    bytes_out: u64,
) -> serde_json::Value {
    json!({"event_id": format!("ev_{tag}_tcp_{n}"), "event_type": "tcp_connection_closed.v0", "event_timestamp": ts(at), "account_id": "ac_it",
           "object": {"conn": {"server_name": host, "server_port": 443, "bytes_in": 10, "bytes_out": bytes_out, "start_ts": ts(at - chrono::Duration::seconds(1)), "end_ts": ts(at)}}})
}

/// Sends one traffic event now and waits until it is written: the traffic reader then holds its
/// partitions (tansu's group join takes seconds).
pub(crate) async fn warm_up(env: &TestEnv, run: &mut support::BotmeterProcess) {
    let producer = producer(&env.brokers);
    send(
        &producer,
        &env.traffic_topic,
        &tcp("warmup", 0, "warmup.ngrok.app", Utc::now(), 1),
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        1,
        Duration::from_secs(60),
        run,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_events_published_after_their_traffic_still_attribute() {
    let env = TestEnv::new("race");
    env.create_topics(2).await;
    let mut run = env.spawn(
        "run",
        &[
            "run",
            "--batch-max-wait-ms",
            "50",
            "--control-lateness-ms",
            "2000",
        ],
    );
    // The rounds below must really race the control reader.
    warm_up(&env, &mut run).await;
    let producer = producer(&env.brokers);
    let rounds = 5;
    let per_round = 20;
    for round in 0..rounds {
        // Created milliseconds before the first traffic, published after it.
        let tag = format!("r{round}");
        let host = format!("race-{round}.ngrok.app");
        let now = Utc::now();
        for n in 0..per_round {
            send(
                &producer,
                &env.traffic_topic,
                &tcp(
                    &tag,
                    n,
                    &host,
                    now + chrono::Duration::milliseconds(n as i64),
                    1000,
                ),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for event in chain(&tag, &host, now - chrono::Duration::milliseconds(5)) {
            send(&producer, &env.control_topic, &event).await;
        }
    }
    let total = (rounds * per_round) as u64 + 1;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        total,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let by_owner = env
        .clickhouse(&format!(
            "SELECT status, owner_id, count(), sum(bytes_out) FROM {}.usage_events GROUP BY status, owner_id ORDER BY owner_id FORMAT TSV",
            env.database
        ))
        .await;
    let expected: String = std::iter::once("unattributed\t\t1\t1\n".to_owned())
        .chain((0..rounds).map(|round| {
            format!(
                "attributed\tbot_r{round}\t{per_round}\t{}\n",
                per_round * 1000
            )
        }))
        .collect();
    assert_eq!(
        by_owner, expected,
        "every event on its bot, none unattributed"
    );
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattribute_restates_unattributed_usage_once() {
    let env = TestEnv::new("reattr");
    env.create_topics(2).await;
    let mut run = env.spawn(
        "run",
        &[
            "run",
            "--batch-max-wait-ms",
            "50",
            "--control-lateness-ms",
            "0",
        ],
    );
    let producer = producer(&env.brokers);
    let at: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
    // Traffic whose chain is published long after it was joined: unattributed (no endpoint).
    for n in 0..30 {
        send(
            &producer,
            &env.traffic_topic,
            &tcp(
                "late",
                n,
                "late.ngrok.app",
                at + chrono::Duration::seconds(n as i64),
                100,
            ),
        )
        .await;
    }
    // And traffic that never gets a chain.
    for n in 0..5 {
        send(
            &producer,
            &env.traffic_topic,
            &tcp("none", n, "nobody.ngrok.app", at, 7),
        )
        .await;
    }
    env.wait_for_count(
        &format!(
            "SELECT count() FROM {}.usage_events WHERE status = 'unattributed'",
            env.database
        ),
        35,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    for event in chain("late", "late.ngrok.app", at - chrono::Duration::minutes(1)) {
        send(&producer, &env.control_topic, &event).await;
    }
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        4,
        Duration::from_secs(30),
        &mut run,
    )
    .await;

    let reattribute = |env: &TestEnv| {
        let output = env
            .command(&[
                "reattribute",
                "--from",
                "2026-03-01T00:00:00Z",
                "--to",
                "2026-03-02T00:00:00Z",
                "--no-progress",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let first = reattribute(&env);
    assert!(
        first.starts_with("35 unattributed rows") && first.contains("30 now attributed"),
        "{first}"
    );
    let second = reattribute(&env);
    assert!(
        second.starts_with("5 unattributed rows") && second.contains("0 now attributed"),
        "{second}"
    );

    // Net per status and owner: the raw truth, nothing counted twice.
    let net = env
        .clickhouse(&format!(
            "SELECT status, owner_id, sum(sign), sum(bytes_out * sign) FROM {}.usage_events GROUP BY status, owner_id ORDER BY status, owner_id FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(
        net,
        "attributed\tbot_late\t30\t3000\nunattributed\t\t5\t35\n"
    );
    let positions = env
        .clickhouse_u64(&format!(
            "SELECT count() FROM (SELECT kafka_partition, kafka_offset, sum(sign) AS net FROM {}.usage_events GROUP BY kafka_partition, kafka_offset HAVING net != 1)",
            env.database
        ))
        .await;
    assert_eq!(positions, 0, "every message nets to exactly one row");
    // The rollup the reports read went through the same restatement (invariant 6), and the
    // per-owner report from it says what the raw rows say.
    let rollup = env
        .clickhouse(&format!(
            "SELECT status, owner_id, sum(net_rows), sum(net_bytes_out) FROM {}.usage_rollup GROUP BY status, owner_id HAVING sum(net_rows) != 0 ORDER BY status, owner_id FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(rollup, net);
    support::assert_rollup_equals_raw(&env);
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_rebuilds_its_state_from_clickhouse() {
    let env = TestEnv::new("restart");
    env.create_topics(2).await;
    let producer = producer(&env.brokers);
    let at: DateTime<Utc> = "2026-04-01T10:00:00Z".parse().unwrap();
    for event in chain("first", "first.ngrok.app", at) {
        send(&producer, &env.control_topic, &event).await;
    }
    for n in 0..40 {
        send(
            &producer,
            &env.traffic_topic,
            &tcp(
                "first",
                n,
                "first.ngrok.app",
                at + chrono::Duration::seconds(1 + n as i64),
                10,
            ),
        )
        .await;
    }
    let mut run = env.spawn("run-1", &["run", "--batch-max-wait-ms", "50"]);
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        40,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    assert!(run.terminate(Duration::from_secs(30)).success());

    // While it is down: a second chain, and traffic on both.
    for event in chain(
        "second",
        "second.ngrok.app",
        at + chrono::Duration::minutes(5),
    ) {
        send(&producer, &env.control_topic, &event).await;
    }
    for n in 0..40 {
        let t = at + chrono::Duration::minutes(6) + chrono::Duration::seconds(n as i64);
        send(
            &producer,
            &env.traffic_topic,
            &tcp("first2", n, "first.ngrok.app", t, 10),
        )
        .await;
        send(
            &producer,
            &env.traffic_topic,
            &tcp("second", n, "second.ngrok.app", t, 20),
        )
        .await;
    }
    let mut run = env.spawn("run-2", &["run", "--batch-max-wait-ms", "50"]);
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        120,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let by_owner = env
        .clickhouse(&format!(
            "SELECT status, owner_id, count(), sum(bytes_out) FROM {}.usage_events GROUP BY status, owner_id ORDER BY owner_id FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(
        by_owner,
        "attributed\tbot_first\t80\t800\nattributed\tbot_second\t40\t800\n"
    );
    // The audit log holds each control event once: the restart did not write them again.
    assert_eq!(
        env.clickhouse_u64(&format!(
            "SELECT count() FROM {}.control_events",
            env.database
        ))
        .await,
        8
    );
    assert!(run.terminate(Duration::from_secs(30)).success());
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        log.contains("ownership state rebuilt from ClickHouse") && log.contains("events=4"),
        "{log}"
    );
    env.drop_database().await;
}
