//! Repeated deliveries (issue 13, item 5), on the real services: ngrok's destinations deliver at
//! least once, so one `event_id` arrives at two Kafka positions. The repeat is written with
//! status `duplicate` (its position covered), counted in no report and no rollup, listed by
//! `/v1/anomalies` and `botmeter reconcile`, and counted in `botmeter_repeated_events_total`;
//! after a restart the window is rebuilt from ClickHouse, so a repeat arriving then is caught too.

use std::time::Duration;

use chrono::Utc;
use rdkafka::producer::FutureProducer;

use crate::attribution::{chain, producer, send, tcp, warm_up};
use crate::support::{self, free_port, BotmeterProcess, TestEnv};

/// Sends `event` to one partition of `topic`.
async fn send_to(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    event: &serde_json::Value,
) {
    support::send_to_partition(producer, topic, partition, event.to_string().as_bytes()).await;
}

/// Net sums of `bot_rep`'s attributed usage: raw rows, then the quarter-hour rollup (waited for
/// until it nets to `rows`: ClickHouse 18.16 writes the materialized view's rows after the raw
/// ones, so a reader can see the raw rows first).
async fn attributed_bytes_out(
    env: &TestEnv,
    rows: u64,
    run: &mut BotmeterProcess,
) -> (String, String) {
    env.wait_for_count(
        &format!(
            "SELECT sum(net_rows) FROM {}.usage_rollup WHERE status = 'attributed' AND owner_id = 'bot_rep'",
            env.database
        ),
        rows,
        Duration::from_secs(30),
        run,
    )
    .await;
    let raw = env
        .clickhouse(&format!(
            "SELECT sum(bytes_out * sign), sum(sign) FROM {}.usage_events WHERE status = 'attributed' AND owner_id = 'bot_rep' FORMAT TSV",
            env.database
        ))
        .await;
    let rollup = env
        .clickhouse(&format!(
            "SELECT sum(net_bytes_out), sum(net_rows) FROM {}.usage_rollup WHERE status = 'attributed' AND owner_id = 'bot_rep' FORMAT TSV",
            env.database
        ))
        .await;
    (raw, rollup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_is_kept_as_a_duplicate_and_counted_nowhere_also_after_a_restart() {
    let env = TestEnv::new("repeats");
    env.create_topics(2).await;
    let ops = format!("127.0.0.1:{}", free_port());
    let mut run = env.spawn(
        "run",
        &["run", "--batch-max-wait-ms", "50", "--ops-listen", &ops],
    );
    warm_up(&env, &mut run).await;
    let producer = producer(&env.brokers);
    // The chain is stamped before the traffic and the traffic now, so the traffic waits for it.
    for event in chain(
        "rep",
        "rep.ngrok.app",
        Utc::now() - chrono::Duration::minutes(1),
    ) {
        send(&producer, &env.control_topic, &event).await;
    }
    let at = Utc::now();
    // 40 events, then 10 of them again on the other partition and 5 again on the same one.
    for n in 0..40 {
        let event = tcp("rep", n, "rep.ngrok.app", at, 1000);
        send_to(&producer, &env.traffic_topic, (n % 2) as i32, &event).await;
    }
    for n in 0..15 {
        let partition = if n < 10 { (n + 1) % 2 } else { n % 2 };
        let event = tcp("rep", n, "rep.ngrok.app", at, 1000);
        send_to(&producer, &env.traffic_topic, partition as i32, &event).await;
    }
    let rows = |env: &TestEnv| format!("SELECT count() FROM {}.usage_events", env.database);
    env.wait_for_count(&rows(&env), 1 + 40 + 15, Duration::from_secs(60), &mut run)
        .await;
    assert_eq!(
        attributed_bytes_out(&env, 40, &mut run).await,
        ("40000\t40\n".to_owned(), "40000\t40\n".to_owned()),
        "{}",
        run.log_tail()
    );
    let repeats = env
        .clickhouse(&format!(
            "SELECT status, unattributed_reason, owner_id, count(), sum(bytes_out) FROM {}.usage_events WHERE status = 'duplicate' GROUP BY status, unattributed_reason, owner_id FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(
        repeats,
        "duplicate\trepeated_event_id\tbot_rep\t15\t15000\n"
    );
    // A batch's counters are recorded when its insert is finished, which may be a moment after
    // its rows are visible: scrape until they are there.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = reqwest::get(format!("http://{ops}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|line| line == "botmeter_repeated_events_total 15")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics
            .lines()
            .any(|line| line == "botmeter_repeated_events_total 15"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("botmeter_repeat_window_ids ")),
        "{metrics}"
    );

    // After a restart the window comes from ClickHouse: repeats of events written before it are
    // still repeats, and new events are still counted.
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());
    let mut run = env.spawn("run-again", &["run", "--batch-max-wait-ms", "50"]);
    for n in 20..25 {
        let event = tcp("rep", n, "rep.ngrok.app", at, 1000);
        send_to(&producer, &env.traffic_topic, ((n + 1) % 2) as i32, &event).await;
    }
    for n in 40..45 {
        let event = tcp("rep", n, "rep.ngrok.app", at, 1000);
        send_to(&producer, &env.traffic_topic, (n % 2) as i32, &event).await;
    }
    env.wait_for_count(
        &rows(&env),
        1 + 40 + 15 + 10,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    assert_eq!(
        attributed_bytes_out(&env, 45, &mut run).await,
        ("45000\t45\n".to_owned(), "45000\t45\n".to_owned()),
        "{}",
        run.log_tail()
    );
    assert!(
        run.log_text()
            .contains("repeat window rebuilt from ClickHouse"),
        "{}",
        run.log_tail()
    );
    let status = run.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", run.log_tail());

    // reconcile: every position nets to one row; the repeats have a column of their own.
    let text = env.reconcile_caught_up();
    let header = text
        .lines()
        .find(|l| l.starts_with("partition") && l.contains(" repeats "))
        .expect(&text);
    let total = text
        .lines()
        .skip_while(|l| !l.contains("traffic topic"))
        .find(|l| l.trim_start().starts_with("total"))
        .expect(&text);
    // Cells are right-aligned under their header.
    let column = |line: &str, name: &str| -> String {
        let end = header.find(name).unwrap() + name.len();
        line.get(..end)
            .unwrap_or_default()
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(column(total, "repeats"), "20", "{text}");
    assert_eq!(column(total, "attributed"), "45", "{text}");

    // /v1/anomalies lists them, with what they would have added.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = env.spawn("serve", &["serve", "--listen", &listen]);
    let from = (at - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:00:00Z");
    let to = (at + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:00:00Z");
    let url = format!("http://{listen}/v1/anomalies?from={from}&to={to}");
    let mut body = serde_json::Value::Null;
    for _ in 0..100 {
        serve.assert_running();
        if let Ok(response) = reqwest::get(&url).await {
            if response.status() == 200 {
                body = response.json().await.unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        body["duplicates"],
        serde_json::json!([{"reason": "repeated_event_id", "events": 20, "bytes_in": 200,
                            "bytes_out": 20000, "http_requests": 0, "tcp_connections": 20}]),
        "{body}"
    );
    env.drop_database().await;
}
