//! A bad feed (issue 13, "done when"), on the real services: interleaved with a simulated fleet,
//! traffic stamped far in the future and far in the past, a clock-skewed producer (a few minutes
//! ahead: accepted; ten minutes ahead: dead-lettered), repeated event ids, byte counts no sum can
//! hold, secrets in malformed messages on both topics and 1 MiB of garbage. Afterwards the
//! per-owner totals equal the truth exactly, every Kafka position nets to one row (`botmeter
//! reconcile --expect-caught-up`), no secret is found in any table, on the dead-letter topic or in
//! the log, and ingestion never stalled longer than the configured bound on waiting.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::json;
use simulate::{generate, FleetConfig};

use crate::attribution::{chain, tcp, ts};
use crate::support::{self, free_port, send_to_partition as send, TestEnv};

/// The longest a batch may wait for the control plane in this test (`--max-control-wait-ms`).
const MAX_CONTROL_WAIT: Duration = Duration::from_secs(5);

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        // 1 MiB of garbage must reach the broker.
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap()
}

fn tcp_at(event_id: &str, at: &str, conn: serde_json::Value) -> Vec<u8> {
    json!({"event_id": event_id, "event_type": "tcp_connection_closed.v0", "event_timestamp": at,
           "account_id": "ac_it", "object": {"conn": conn}})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_feed_stalls_nothing_leaks_nothing_and_counts_exactly_once() {
    let env = TestEnv::new("bad_feed");
    let now = Utc::now();
    // A fleet of the last 90 minutes (its traffic up to half an hour ago), so that it shares the
    // repeat window with the skewed producer's traffic.
    let start =
        DateTime::from_timestamp_millis((now - chrono::Duration::minutes(90)).timestamp_millis())
            .unwrap();
    let fleet = generate(&FleetConfig {
        seed: 13,
        traffic_events: 3_000,
        start,
        duration_hours: 1,
        ..FleetConfig::default()
    });
    let truth = &fleet.truth;
    env.create_topics(2).await;
    let ops = format!("127.0.0.1:{}", free_port());
    let wait_ms = MAX_CONTROL_WAIT.as_millis().to_string();
    let mut run = env.spawn(
        "run",
        &[
            "run",
            "--batch-max-wait-ms",
            "100",
            "--max-control-wait-ms",
            &wait_ms,
            "--ops-listen",
            &ops,
        ],
    );

    // --- The bad feed -----------------------------------------------------------------------------
    let secrets = [
        "SECRET_BF_ONE",
        "SECRET_BF_TWO",
        "SECRET_BF_THREE",
        "SECRET_BF_FOUR",
    ];
    let conn = |bytes_out: u64| json!({"server_name": "skew.ngrok.app", "server_port": 443, "bytes_out": bytes_out});
    let mut traffic_bad: Vec<Vec<u8>> = vec![
        tcp_at("ev_bf_2030", "2030-01-01T00:00:00Z", conn(1)),
        tcp_at("ev_bf_2099", "2099-01-01T00:00:00Z", conn(1)),
        tcp_at("ev_bf_1990", "1990-01-01T00:00:00Z", conn(1)),
        tcp_at("ev_bf_1969", "1969-12-31T23:59:59Z", conn(1)),
        tcp_at("ev_bf_huge_out", &ts(now), json!({"server_name": "skew.ngrok.app", "bytes_out": 9223372036854775808_u64})),
        format!(r#"{{"event_id":"ev_bf_huge_in","event_type":"tcp_connection_closed.v0","event_timestamp":"{}","object":{{"conn":{{"server_name":"skew.ngrok.app","bytes_in":18446744073709551616}}}}}}"#, ts(now)).into_bytes(),
        format!(r#"{{"event_id":"ev_bf_s2","event_type":"tcp_connection_closed.v0","event_timestamp":"{}","object":{{"conn":{{"bytes_out":"-1"}},"private_key":"SECRET_BF_TWO"}}}}"#, ts(now)).into_bytes(),
        b"garbage token=SECRET_BF_THREE secret: 'SECRET_BF_FOUR' \x01".to_vec(),
    ];
    let mut garbage = vec![0_u8; 1 << 20];
    for (i, byte) in garbage.iter_mut().enumerate() {
        *byte = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    traffic_bad.push(garbage);
    // A producer ten minutes ahead: beyond --max-clock-skew-ms (5 min), dead-lettered.
    let far_skew = now + chrono::Duration::minutes(10);
    for n in 0..5 {
        traffic_bad.push(
            tcp("skewfar", n, "skew.ngrok.app", far_skew, 7)
                .to_string()
                .into_bytes(),
        );
    }
    let traffic_dead_letters = traffic_bad.len() as u64;
    let control_bad = format!(
        r#"{{"event_id":"ev_bf_s1","event_type":"tunnel_credential_created.v0","event_timestamp":"{}","object":{{"id":"cr_bf","owner_id":"bot_bf","acl":"not a list","token":"SECRET_BF_ONE"}}}}"#,
        ts(now)
    );
    // A producer two minutes ahead: accepted, attributed to its chain, waited on only up to now.
    let near_skew = now + chrono::Duration::minutes(2);
    let skewed: Vec<Vec<u8>> = (0..20)
        .map(|n| {
            tcp("skew", n, "skew.ngrok.app", near_skew, 100)
                .to_string()
                .into_bytes()
        })
        .collect();
    // Repeated deliveries: 50 of the fleet's last 20 minutes of traffic and 5 of the skewed ones.
    let recent = now - chrono::Duration::minutes(50);
    let mut repeats: Vec<Vec<u8>> = fleet
        .traffic
        .iter()
        .filter(|m| m.event_time >= recent)
        .step_by(7)
        .take(50)
        .map(|m| m.payload.clone())
        .collect();
    assert_eq!(repeats.len(), 50, "enough recent fleet traffic to repeat");
    repeats.extend(skewed.iter().take(5).cloned());

    let bad_feed = async {
        let producer = producer(&env.brokers);
        send(&producer, &env.control_topic, 0, control_bad.as_bytes()).await;
        for event in chain("skew", "skew.ngrok.app", now - chrono::Duration::minutes(1)) {
            send(
                &producer,
                &env.control_topic,
                0,
                event.to_string().as_bytes(),
            )
            .await;
        }
        // Interleaved with the fleet's publishing: a few at a time.
        let all: Vec<&Vec<u8>> = traffic_bad.iter().chain(&skewed).chain(&repeats).collect();
        for (i, payload) in all.iter().enumerate() {
            send(&producer, &env.traffic_topic, (i % 2) as i32, payload).await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let published = Instant::now();
    tokio::join!(env.publish(&fleet), bad_feed);

    // --- Ingestion never stalls longer than the bound ---------------------------------------------
    let traffic_rows =
        truth.traffic_events + skewed.len() as u64 + repeats.len() as u64 + traffic_dead_letters;
    let count_sql = format!("SELECT count() FROM {}.usage_events", env.database);
    let mut last = (0, Instant::now());
    let mut longest_stall = Duration::ZERO;
    loop {
        run.assert_running();
        let rows = env
            .clickhouse(&count_sql)
            .await
            .trim()
            .parse::<u64>()
            .unwrap_or(0);
        if rows != last.0 {
            last = (rows, Instant::now());
        } else if rows > 0 {
            // Only once the group has formed (tansu's join takes seconds) and writing started.
            longest_stall = longest_stall.max(last.1.elapsed());
        }
        if rows >= traffic_rows {
            break;
        }
        assert!(
            published.elapsed() < Duration::from_secs(120),
            "{rows} of {traffic_rows} rows after 2 min\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_written = published.elapsed();
    assert!(
        longest_stall < MAX_CONTROL_WAIT + Duration::from_secs(3),
        "writing stalled {longest_stall:?} (bound {MAX_CONTROL_WAIT:?})\n{}",
        run.log_tail()
    );
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        truth.control_events + 4,
        Duration::from_secs(30),
        &mut run,
    )
    .await;
    // Caught up: the lag the pipeline publishes is 0 on every partition, and no wait ran out.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let metrics = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lags: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("botmeter_consumer_lag_messages{"))
        .collect();
    assert_eq!(lags.len(), 2, "{metrics}");
    assert!(lags.iter().all(|line| line.ends_with(" 0")), "{lags:?}");
    assert!(
        !metrics.contains("botmeter_control_wait_bounded_total"),
        "no batch waited out its bound: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line == format!("botmeter_repeated_events_total {}", repeats.len())),
        "{metrics}"
    );

    // --- Exactly the truth --------------------------------------------------------------------
    let mut expected = support::truth_totals(truth);
    expected.insert("bot_skew".to_owned(), (2_000, 0, 20));
    assert_eq!(
        env.attributed_totals().await,
        expected,
        "{}",
        run.log_tail()
    );
    let by_status = env
        .clickhouse(&format!(
            "SELECT status, sum(sign) FROM {}.usage_events GROUP BY status ORDER BY status FORMAT TSV",
            env.database
        ))
        .await;
    let unattributed = truth
        .unattributed
        .values()
        .map(|u| u.http_requests + u.tcp_connections)
        .sum::<u64>();
    let mut want = format!(
        "attributed\t{}\ndead_letter\t{traffic_dead_letters}\nduplicate\t{}\n",
        truth.traffic_events - unattributed + skewed.len() as u64,
        repeats.len()
    );
    if unattributed > 0 {
        want.push_str(&format!("unattributed\t{unattributed}\n"));
    }
    assert_eq!(by_status, want);
    let reasons = env
        .clickhouse(&format!(
            "SELECT reason_kind, uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM {}.dead_letters GROUP BY reason_kind ORDER BY reason_kind FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(
        reasons,
        "count_out_of_range\t2\nevent_time_out_of_range\t9\ninvalid_field\t2\nmalformed_json\t2\n",
    );

    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    // Every Kafka position nets to exactly one row, on both topics.
    env.reconcile_caught_up();

    // No secret anywhere.
    support::assert_no_secret_stored(&env, &secrets).await;
    let letters =
        support::read_topic_all(&env.brokers, &env.dead_letter_topic, Duration::from_secs(3));
    assert_eq!(letters.len() as u64, traffic_dead_letters + 1);
    support::assert_no_secret_on_topic(&letters, &secrets);
    let log = run.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    eprintln!(
        "bad feed: {traffic_rows} traffic rows written {all_written:?} after publishing began; longest stall {longest_stall:?}"
    );
    env.drop_database().await;
}
