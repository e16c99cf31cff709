//! `botmeter reconcile` on the real services: a simulated fleet plus garbage on fresh topics,
//! `botmeter run` until everything is stored, then reconcile must agree (exit 0, the right counts
//! per outcome, in total and in a window), report lag without failing unless told to expect none,
//! fail (exit 1) naming the partition and offset once a usage row is duplicated, and exit 2 when
//! it cannot check at all.

use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, Utc};
use simulate::{generate, FleetConfig, SimMessage};

use crate::support::{send_raw, TestEnv};

/// Runs `botmeter reconcile <args>` to completion.
fn reconcile(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let mut command_args = vec!["reconcile"];
    command_args.extend_from_slice(args);
    let Output {
        status,
        stdout,
        stderr,
    } = env
        .command(&command_args)
        .output()
        .expect("run botmeter reconcile");
    let stdout = String::from_utf8(stdout).unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    eprintln!("$ botmeter reconcile {}\n{stdout}{stderr}", args.join(" "));
    (status.code(), stdout)
}

/// The cells of every row of one topic's table (header excluded), keyed by its first cell
/// (`0`, `1`, …, `total`).
fn table_of(output: &str, heading: &str) -> Vec<Vec<String>> {
    let mut lines = output.lines().skip_while(|line| *line != heading);
    assert!(lines.next().is_some(), "no table {heading:?} in\n{output}");
    let header = lines.next().unwrap();
    assert!(header.trim_start().starts_with("partition"), "{header}");
    lines
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .collect()
}

fn in_window(messages: &[SimMessage], from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    messages
        .iter()
        .filter(|m| m.event_time >= from && m.event_time < to)
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_agrees_after_a_run_and_names_a_duplicate() {
    let env = TestEnv::new("reconcile");
    let fleet = generate(&FleetConfig {
        seed: 5,
        users: 1,
        bot_users: 2,
        traffic_events: 600,
        ..FleetConfig::default()
    });
    let truth = &fleet.truth;
    env.create_topics(3).await;
    env.publish(&fleet).await;
    // Garbage: two traffic dead letters (which also get a usage row) and one control dead letter
    // (only in dead_letters).
    send_raw(&env.brokers, &env.traffic_topic, b"\xffnot json").await;
    send_raw(&env.brokers, &env.traffic_topic, br#"{"event_id":"ev_neg","event_type":"tcp_connection_closed.v0","event_timestamp":"2026-01-01T01:00:00Z","object":{"conn":{"server_name":"x.ngrok.app","bytes_out":-5}}}"#).await;
    send_raw(&env.brokers, &env.control_topic, b"{\"event_id\": 12").await;

    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    let db = &env.database;
    let traffic_messages = truth.traffic_events + 2;
    let control_messages = truth.control_events + 1;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.usage_events"),
        traffic_messages,
        Duration::from_secs(120),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.control_events"),
        truth.control_events,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!(
            "SELECT uniqExact(kafka_topic, kafka_partition, kafka_offset) FROM {db}.dead_letters"
        ),
        3,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );

    // Everything consumed, once: exit 0 even when no lag is allowed.
    let (code, out) = reconcile(&env, &["--expect-caught-up"]);
    assert_eq!(code, Some(0), "{out}");
    let traffic = table_of(&out, &format!("traffic topic {}", env.traffic_topic));
    assert_eq!(traffic.len(), 4, "three partitions and the total:\n{out}");
    for row in &traffic[..3] {
        assert_eq!(row[2], row[3], "every message in Kafka is stored: {row:?}");
        assert_eq!(&row[7..], ["0", "0", "0", "0", "0", "ok"], "{row:?}");
    }
    let (t, c) = (
        traffic_messages.to_string(),
        truth.traffic_events.to_string(),
    );
    // total, offsets, messages, stored, attributed, unattributed, dead letters, repeats,
    // duplicates, lost, gaps, not consumed, status
    assert_eq!(
        traffic[3],
        ["total", "-", &t, &t, &c, "0", "2", "0", "0", "0", "0", "0", "ok"],
        "{out}"
    );
    let control = table_of(&out, &format!("control topic {}", env.control_topic));
    let (m, e) = (
        control_messages.to_string(),
        truth.control_events.to_string(),
    );
    // total, offsets, messages, stored, control events, dead letters, duplicates, lost, gaps, not consumed, status
    assert_eq!(
        control[0],
        [
            "0",
            &format!("0..{m}"),
            &m,
            &m,
            &e,
            "1",
            "0",
            "0",
            "0",
            "0",
            "ok"
        ],
        "{out}"
    );
    assert!(out.contains("OK: every stored position nets to exactly one row, no gaps; 0 messages not consumed yet."), "{out}");

    // A window restricts the outcome counts only (dead letters count by receipt: now, outside it).
    let from = truth.window_start + chrono::Duration::minutes(10);
    let to = truth.window_start + chrono::Duration::hours(3);
    let (code, out) = reconcile(
        &env,
        &["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()],
    );
    assert_eq!(code, Some(0), "{out}");
    let traffic = table_of(&out, &format!("traffic topic {}", env.traffic_topic));
    let attributed = in_window(&fleet.traffic, from, to).to_string();
    assert_eq!(
        traffic[3],
        [
            "total",
            "-",
            &t,
            &t,
            &attributed,
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "ok"
        ],
        "{out}"
    );
    let control = table_of(&out, &format!("control topic {}", env.control_topic));
    let control_in_window = in_window(&fleet.control, from, to);
    assert!(
        control_in_window > 0 && control_in_window < truth.control_events,
        "the window should cut the control events"
    );
    assert_eq!(control[1][4], control_in_window.to_string(), "{out}");
    assert_eq!(control[1][5], "0", "{out}");

    // Lag: messages published while no pipeline runs are reported, and fail only when no lag is
    // expected. This also needs the true end of the partitions, past tansu's high watermark.
    for _ in 0..3 {
        send_raw(&env.brokers, &env.traffic_topic, b"published after the run").await;
    }
    let (code, out) = reconcile(&env, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("; 3 messages not consumed yet."), "{out}");
    let traffic = table_of(&out, &format!("traffic topic {}", env.traffic_topic));
    assert_eq!(traffic[3][11], "3", "{out}");
    assert_eq!(traffic[3][2], (traffic_messages + 3).to_string(), "{out}");
    let (code, out) = reconcile(&env, &["--expect-caught-up"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("message(s) not consumed yet (--expect-caught-up)"),
        "{out}"
    );

    // A usage row copied with sign 1: its position now nets to 2 rows.
    env.clickhouse(&format!(
        "INSERT INTO {db}.usage_events SELECT * FROM {db}.usage_events LIMIT 1"
    ))
    .await;
    let duplicated = env
        .clickhouse(&format!(
            "SELECT kafka_partition, kafka_offset FROM {db}.usage_events GROUP BY kafka_partition, kafka_offset HAVING sum(sign) != 1 FORMAT TSV"
        ))
        .await;
    let (partition, offset) = duplicated
        .trim()
        .split_once('\t')
        .unwrap_or_else(|| panic!("one duplicated position, found {duplicated:?}"));
    let (code, out) = reconcile(&env, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("{} partition {partition}: 1 duplicate position(s) (rows netting to more than one): offset {offset} nets to 2 rows", env.traffic_topic)),
        "{out}"
    );
    let traffic = table_of(&out, &format!("traffic topic {}", env.traffic_topic));
    let row = traffic.iter().find(|row| row[0] == partition).unwrap();
    assert_eq!(
        (row[8].as_str(), row[12].as_str()),
        ("1", "MISMATCH"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|line| line.starts_with("MISMATCH: 1 problem(s) above")),
        "{out}"
    );

    // Cannot check (no such database): exit 2, not the mismatch code.
    let (code, _) = reconcile(&env, &["--clickhouse-database", &format!("{db}_missing")]);
    assert_eq!(code, Some(2));

    env.drop_database().await;
}
