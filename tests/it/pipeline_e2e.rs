//! End to end on the real services: a simulated fleet published to fresh topics, `botmeter run`
//! attributing it into a fresh ClickHouse database, `botmeter serve` answering per-owner hourly
//! usage that must equal the simulator's ground truth exactly, and malformed messages ending as
//! dead letters with their reason.

use std::time::Duration;

use simulate::{generate, FleetConfig};

use crate::support::{self, free_port, send_raw, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_fleet_is_attributed_end_to_end() {
    let env = TestEnv::new("e2e");
    let fleet = generate(&FleetConfig {
        seed: 11,
        bot_users: 4,
        users: 2,
        traffic_events: 3_000,
        ..FleetConfig::default()
    });
    let truth = &fleet.truth;
    env.create_topics(3).await;
    env.publish(&fleet).await;

    // Bad input: garbage, a negative byte count, and a credential with an unparseable ACL.
    send_raw(&env.brokers, &env.traffic_topic, b"\xffnot json at all").await;
    send_raw(
        &env.brokers,
        &env.traffic_topic,
        br#"{"event_id":"ev_bad_bytes","event_type":"tcp_connection_closed.v0","event_timestamp":"2026-01-01T01:00:00Z","object":{"conn":{"server_name":"x.ngrok.app","bytes_out":-5}}}"#,
    )
    .await;
    send_raw(
        &env.brokers,
        &env.control_topic,
        br#"{"event_id":"ev_bad_acl","event_type":"tunnel_credential_created.v0","event_timestamp":"2026-01-01T00:00:00Z","object":{"id":"cr_bad","owner_id":"bot_x","acl":["bind:bad host"]}}"#,
    )
    .await;

    let ops = format!("127.0.0.1:{}", free_port());
    let mut run = env.spawn(
        "run",
        &["run", "--batch-max-wait-ms", "100", "--ops-listen", &ops],
    );
    let traffic_rows = truth.traffic_events + 2;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        traffic_rows,
        Duration::from_secs(120),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        truth.control_events,
        Duration::from_secs(30),
        &mut run,
    )
    .await;

    // Every traffic event is attributed in the simple case; nothing unattributed.
    let by_status = env
        .clickhouse(&format!("SELECT status, count() FROM {}.usage_events GROUP BY status ORDER BY status FORMAT TSV", env.database))
        .await;
    assert_eq!(
        by_status,
        format!("attributed\t{}\ndead_letter\t2\n", truth.traffic_events)
    );

    // Dead letters: in ClickHouse with reason and original bytes, and on the dead-letter topic.
    let letters = env
        .clickhouse(&format!(
            "SELECT kafka_topic, reason_kind, reason, payload FROM {}.dead_letters FINAL ORDER BY kafka_topic, reason_kind FORMAT TSV",
            env.database
        ))
        .await;
    let lines: Vec<&str> = letters.lines().collect();
    assert_eq!(lines.len(), 3, "{letters}");
    assert!(
        lines[0].starts_with(&format!("{}\tinvalid_field\t", env.control_topic))
            && lines[0].contains("field object.acl")
            && lines[0].contains("bind:bad host"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1]
            .contains("event ev_bad_bytes (tcp_connection_closed.v0): field object.conn.bytes_out")
            && lines[1].contains("-5"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&format!("{}\tmalformed_json\t", env.traffic_topic)),
        "{}",
        lines[2]
    );
    let on_topic =
        support::read_topic_all(&env.brokers, &env.dead_letter_topic, Duration::from_secs(3));
    assert_eq!(on_topic.len(), 3, "three messages on the dead-letter topic");
    assert!(on_topic.iter().any(|message| {
        message.payload.as_deref().unwrap_or_default() == b"\xffnot json at all"
            && message
                .headers
                .iter()
                .any(|(k, v)| k == "botmeter.reason_kind" && v == "malformed_json")
            && message
                .headers
                .iter()
                .any(|(k, v)| k == "botmeter.source_topic" && *v == env.traffic_topic)
    }));

    // The operations endpoint: ready, and counters that match what was sent.
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://{ops}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counter = |line_start: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let sent_tcp = truth.totals.tcp_connections;
    let sent_http = truth.totals.http_requests;
    assert_eq!(
        counter("botmeter_events_total{topic=\"traffic\",kind=\"tcp_connection\"}"),
        sent_tcp,
        "{metrics}"
    );
    assert_eq!(
        counter("botmeter_events_total{topic=\"traffic\",kind=\"http_request\"}"),
        sent_http,
        "{metrics}"
    );
    assert_eq!(
        counter("botmeter_dead_letters_total{reason=\"malformed_json\""),
        1,
        "{metrics}"
    );
    let control_events: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("botmeter_events_total{topic=\"control\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    assert_eq!(control_events, truth.control_events);
    assert!(
        metrics.contains("botmeter_batch_write_seconds_bucket"),
        "{metrics}"
    );
    support::assert_metrics_readable(&metrics);
    assert!(
        metrics.contains("botmeter_build_info{version=\""),
        "{metrics}"
    );

    // No credential token reaches ClickHouse.
    let tokens = env
        .clickhouse_u64(&format!(
            "SELECT count() FROM {}.control_events WHERE position(object, '{}') > 0",
            env.database,
            simulate::TOKEN_MARKER
        ))
        .await;
    assert_eq!(tokens, 0);

    // The API's hourly usage equals the ground truth for every owner, bucket by bucket.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = env.spawn("serve", &["serve", "--listen", &listen]);
    let mut ready = false;
    for _ in 0..100 {
        serve.assert_running();
        if http
            .get(format!("http://{listen}/healthz"))
            .send()
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "serve never answered\n{}", serve.log_tail());
    let (from, to) = (
        truth.window_start.to_rfc3339(),
        truth.window_end.to_rfc3339(),
    );
    let mut owners_with_usage = 0;
    for (owner_id, owner) in &truth.owners {
        let report: serde_json::Value = http
            .get(format!("http://{listen}/v1/owners/{owner_id}/usage"))
            .query(&[("from", from.as_str()), ("to", to.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let totals = &report["totals"];
        for metric in ["bytes_in", "bytes_out", "http_requests", "tcp_connections"] {
            let want = serde_json::to_value(owner.usage).unwrap()[metric]
                .as_u64()
                .unwrap();
            assert_eq!(
                totals[metric].as_u64(),
                Some(want),
                "{owner_id} {metric}: {report}"
            );
        }
        let hourly = truth.hourly.get(owner_id).cloned().unwrap_or_default();
        let buckets = report["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), hourly.len(), "{owner_id}: hours with usage");
        for bucket in buckets {
            let start = bucket["start"].as_str().unwrap();
            let start = chrono::DateTime::parse_from_rfc3339(start)
                .unwrap()
                .with_timezone(&chrono::Utc);
            let key = simulate::hour_bucket(start);
            let want = serde_json::to_value(hourly[&key]).unwrap();
            for metric in ["bytes_in", "bytes_out", "http_requests", "tcp_connections"] {
                assert_eq!(bucket[metric], want[metric], "{owner_id} {key} {metric}");
            }
        }
        owners_with_usage +=
            usize::from(owner.usage.bytes_out > 0 || owner.usage.http_requests > 0);
    }
    assert!(
        owners_with_usage >= 4,
        "the fleet should spread usage over several owners"
    );

    // Graceful shutdown on SIGTERM.
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );
    let status = serve.terminate(Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
    env.drop_database().await;
}
