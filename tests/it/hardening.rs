//! A real feed is not clean (issue 13): on the real services, traffic stamped far in the future
//! or past, or with counts no sum can hold, is dead-lettered and holds nothing back; a control
//! event from the far future does not end later waits early (live and after a restart); a
//! control plane that cannot be read does not stop traffic (after `--max-control-wait-ms` it is
//! written unattributed, the consumer never leaves its group, and `reattribute` makes the totals
//! exact); and no secret of a malformed message survives anywhere.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use simulate::{generate, FleetConfig};

use crate::attribution::{chain, producer, send, tcp, ts, warm_up};
use crate::support::{self, TestEnv};

fn tcp_raw(event_id: &str, timestamp: &str, conn: &str) -> serde_json::Value {
    let conn: serde_json::Value = serde_json::from_str(conn).unwrap();
    json!({"event_id": event_id, "event_type": "tcp_connection_closed.v0", "event_timestamp": timestamp, "account_id": "ac_it", "object": {"conn": conn}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_outside_the_storable_or_plausible_range_is_dead_lettered_and_holds_nothing_back() {
    let env = TestEnv::new("far_times");
    env.create_topics(1).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "50"]);
    warm_up(&env, &mut run).await;
    let producer = producer(&env.brokers);
    let ok_conn = r#"{"server_name":"ok.ngrok.app","bytes_out":1}"#;
    for bad in [
        tcp_raw("ev_2030", "2030-01-01T00:00:00Z", ok_conn),
        tcp_raw("ev_2099", "2099-01-01T00:00:00Z", ok_conn),
        tcp_raw("ev_1990", "1990-01-01T00:00:00Z", ok_conn),
        tcp_raw(
            "ev_end_2150",
            &ts(Utc::now()),
            r#"{"server_name":"ok.ngrok.app","bytes_out":1,"end_ts":"2150-01-01T00:00:00Z"}"#,
        ),
        tcp_raw(
            "ev_huge",
            &ts(Utc::now()),
            r#"{"server_name":"ok.ngrok.app","bytes_out":9223372036854775808}"#,
        ),
    ] {
        send(&producer, &env.traffic_topic, &bad).await;
    }
    // A chain and 100 ordinary events after the bad ones, on the same partition. The traffic is
    // stamped after the chain was published, so the chain is never a late control event.
    for event in chain(
        "ok",
        "ok.ngrok.app",
        Utc::now() - chrono::Duration::minutes(1),
    ) {
        send(&producer, &env.control_topic, &event).await;
    }
    let at = Utc::now();
    for n in 0..100 {
        send(
            &producer,
            &env.traffic_topic,
            &tcp("ok", n, "ok.ngrok.app", at, 1000),
        )
        .await;
    }
    env.wait_for_count(
        &format!(
            "SELECT count() FROM {}.usage_events WHERE owner_id = 'bot_ok'",
            env.database
        ),
        100,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let reasons = env
        .clickhouse(&format!(
            "SELECT reason_kind, count() FROM {}.dead_letters GROUP BY reason_kind ORDER BY reason_kind FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(
        reasons,
        "count_out_of_range\t1\nevent_time_out_of_range\t4\n",
        "{}",
        run.log_tail()
    );
    let named = env
        .clickhouse(&format!(
            "SELECT reason FROM {}.dead_letters ORDER BY kafka_offset FORMAT TSV",
            env.database
        ))
        .await;
    for expected in [
        "2030-01-01",
        "--max-clock-skew-ms",
        "2099-01-01",
        "1990-01-01",
        "--min-event-time",
        "object.conn.end_ts",
        "object.conn.bytes_out",
        "9223372036854775808",
    ] {
        assert!(named.contains(expected), "{expected} in {named}");
    }
    // Every position nets to one row; no time was stored as 0; the owner's bytes are exact.
    let summary = env
        .clickhouse(&format!(
            "SELECT sum(sign), countIf(event_time = toDateTime(0)), sumIf(bytes_out * sign, owner_id = 'bot_ok') FROM {}.usage_events FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(summary, "106\t0\t100000\n");
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    env.drop_database().await;
}

/// Sends traffic at `now` for a chain whose control events are published two seconds later
/// (created a second before the traffic), and waits until all ten events are attributed: the
/// traffic must have waited for the control plane.
async fn late_chain_attributes(env: &TestEnv, run: &mut support::BotmeterProcess, tag: &str) {
    let producer = producer(&env.brokers);
    let host = format!("{tag}.ngrok.app");
    let now = Utc::now();
    for n in 0..10 {
        send(&producer, &env.traffic_topic, &tcp(tag, n, &host, now, 10)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for event in chain(tag, &host, now - chrono::Duration::seconds(1)) {
        send(&producer, &env.control_topic, &event).await;
    }
    env.wait_for_count(
        &format!(
            "SELECT count() FROM {}.usage_events WHERE owner_id = 'bot_{tag}'",
            env.database
        ),
        10,
        Duration::from_secs(40),
        run,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_event_from_the_far_future_does_not_end_later_waits_early() {
    let env = TestEnv::new("future_control");
    env.create_topics(1).await;
    let args = [
        "run",
        "--batch-max-wait-ms",
        "50",
        "--control-lateness-ms",
        "8000",
    ];
    let mut run = env.spawn("run", &args);
    warm_up(&env, &mut run).await;
    let producer = producer(&env.brokers);
    let far: DateTime<Utc> = "2099-01-01T00:00:00Z".parse().unwrap();
    send(
        &producer,
        &env.control_topic,
        &json!({"event_id": "ev_far", "event_type": "domain_created.v0", "event_timestamp": ts(far), "account_id": "ac_it", "principal": {"id": "usr_far"}, "object": {"id": "rd_far"}}),
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        1,
        Duration::from_secs(30),
        &mut run,
    )
    .await;
    late_chain_attributes(&env, &mut run, "live").await;
    // After a restart the watermark is rebuilt from the audit log: the far event again counts
    // only as of when it was written.
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    let mut run = env.spawn("run-again", &args);
    late_chain_attributes(&env, &mut run, "restarted").await;
    let unattributed = env
        .clickhouse_u64(&format!(
            "SELECT count() FROM {}.usage_events WHERE status = 'unattributed'",
            env.database
        ))
        .await;
    assert_eq!(unattributed, 1, "only the warm-up\n{}", run.log_tail());
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_that_cannot_be_read_does_not_stop_traffic() {
    let env = TestEnv::new("control_held");
    let fleet = generate(&FleetConfig {
        seed: 31,
        traffic_events: 3_000,
        ..FleetConfig::default()
    });
    let truth = &fleet.truth;
    env.create_topics(2).await;
    env.publish(&fleet).await;
    // The control reader starts 60 s late; each batch waits 3 s for it, and in all far longer
    // than tansu's 6 s session timeout allows between polls.
    let mut run = env.spawn(
        "run",
        &[
            "run",
            "--batch-max-wait-ms",
            "100",
            "--batch-max-rows",
            "1000",
            "--max-control-wait-ms",
            "3000",
            "--hold-control-reader-ms",
            "60000",
        ],
    );
    env.wait_for_count(
        &format!(
            "SELECT count() FROM {}.usage_events WHERE unattributed_reason = 'control_plane_behind'",
            env.database
        ),
        truth.traffic_events,
        Duration::from_secs(45),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        truth.control_events,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let log = run.log_text();
    assert_eq!(
        log.matches("traffic partitions assigned").count(),
        1,
        "no rebalance while waiting\n{log}"
    );
    assert!(log.contains("--max-control-wait-ms"), "{log}");
    let output = env
        .command(&[
            "reattribute",
            "--from",
            &ts(truth.window_start),
            "--to",
            &ts(truth.window_end),
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Net per owner: exactly the ground truth.
    assert_eq!(env.attributed_totals().await, support::truth_totals(truth));
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_a_malformed_message_survives_anywhere() {
    let env = TestEnv::new("secrets");
    env.create_topics(1).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "50"]);
    warm_up(&env, &mut run).await;
    let at = ts(Utc::now());
    // Each carries a distinct secret; none decodes.
    let messages: Vec<(bool, String)> = vec![
        (
            true,
            format!(
                r#"{{"event_id":"ev_s1","event_type":"tunnel_credential_created.v0","event_timestamp":"{at}","object":{{"id":"cr_s1","owner_id":"bot_s","acl":"not a list","token":"SECRET_TOKEN_ONE"}}}}"#
            ),
        ),
        (
            true,
            format!(
                r#"{{"event_id":"ev_s2","event_type":"api_key_created.v0","event_timestamp":"{at}","object":{{"id":"ak_s2","owner_id":"org_x","nested":{{"Client_Secret":"SECRET_TWO","password":"SECRET_THREE"}}}}}}"#
            ),
        ),
        (
            true,
            format!(
                r#"{{"event_id":"ev_s3","event_type":"ssh_public_key_created.v0","event_timestamp":"{at}","object":{{"id":"sk_s3","token":"SECRET_FOUR","acl":["bind:bad host"]"#
            ),
        ),
        (
            false,
            format!(
                r#"{{"event_id":"ev_s4","event_type":"tcp_connection_closed.v0","event_timestamp":"{at}","object":{{"conn":{{"bytes_out":"-1"}},"private_key":"SECRET_FIVE"}}}}"#
            ),
        ),
        (
            false,
            "garbage token=SECRET_SIX secret: 'SECRET_SEVEN' \u{1}".to_owned(),
        ),
    ];
    for (control, message) in &messages {
        let topic = if *control {
            &env.control_topic
        } else {
            &env.traffic_topic
        };
        support::send_raw(&env.brokers, topic, message.as_bytes()).await;
    }
    env.wait_for_count(
        &format!("SELECT count() FROM {}.dead_letters", env.database),
        messages.len() as u64,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let secrets = [
        "SECRET_TOKEN_ONE",
        "SECRET_TWO",
        "SECRET_THREE",
        "SECRET_FOUR",
        "SECRET_FIVE",
        "SECRET_SIX",
        "SECRET_SEVEN",
    ];
    support::assert_no_secret_stored(&env, &secrets).await;
    let letters =
        support::read_topic_all(&env.brokers, &env.dead_letter_topic, Duration::from_secs(3));
    assert_eq!(letters.len(), messages.len());
    support::assert_no_secret_on_topic(&letters, &secrets);
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    // The logs.
    let log = run.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    assert!(
        log.matches("dead letter").count() >= messages.len(),
        "every dead letter was logged, so the log was searched where secrets would be\n{log}"
    );
    env.drop_database().await;
}
