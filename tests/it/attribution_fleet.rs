//! The attribution issue's acceptance test on the real services: a simulated fleet with every
//! anomaly (rotations, deactivated and deleted bots, hostname reuse, ACL violations, endpoint
//! owner mismatches, unknown hostnames, sessions, credentials and owners) through `botmeter run`.
//! Every traffic event must land on the ground truth's owner or unattributed reason, with exactly
//! the ground truth's flags, and flagged/unattributed usage must equal the truth byte for byte.

use std::collections::BTreeMap;
use std::time::Duration;

use simulate::{generate, FleetConfig, Usage};

use crate::support::TestEnv;

#[derive(Debug, serde::Deserialize)]
struct Row {
    event_id: String,
    status: String,
    owner_id: String,
    unattributed_reason: String,
    flags: Vec<String>,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_on_the_ground_truth_owner_reason_and_flags() {
    let env = TestEnv::new("anomalies");
    let config = FleetConfig {
        seed: 23,
        traffic_events: 20_000,
        ..FleetConfig::with_anomalies()
    };
    let fleet = generate(&config);
    let truth = &fleet.truth;
    assert_eq!(
        truth.events.len() as u64,
        truth.traffic_events,
        "the truth records every event"
    );
    env.create_topics(4).await;
    env.publish(&fleet).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        truth.traffic_events,
        Duration::from_secs(180),
        &mut run,
    )
    .await;

    let body = env
        .clickhouse(&format!(
            "SELECT event_id, status, owner_id, unattributed_reason, flags, bytes_in, bytes_out, \
             toUInt64(http_requests) AS http_requests, toUInt64(tcp_connections) AS tcp_connections \
             FROM {}.usage_events FORMAT JSONEachRow",
            env.database
        ))
        .await;
    let rows: Vec<Row> = body
        .lines()
        .map(|line| {
            // ClickHouse 18.16 quotes 64-bit integers in JSON.
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in ["bytes_in", "bytes_out", "http_requests", "tcp_connections"] {
                if let Some(s) = value[key].as_str() {
                    value[key] = serde_json::json!(s.parse::<u64>().unwrap());
                }
            }
            serde_json::from_value(value).unwrap()
        })
        .collect();
    assert_eq!(rows.len() as u64, truth.traffic_events);

    let mut mismatches = Vec::new();
    let mut flagged: BTreeMap<(String, String), Usage> = BTreeMap::new();
    let mut unattributed: BTreeMap<String, Usage> = BTreeMap::new();
    for row in &rows {
        let expected = &truth.events[&row.event_id];
        let got_owner = (row.status == "attributed").then(|| row.owner_id.clone());
        let got_reason = (row.status == "unattributed").then(|| row.unattributed_reason.clone());
        if got_owner != expected.owner_id
            || got_reason != expected.unattributed_reason
            || row.flags != expected.flags
        {
            mismatches.push(format!(
                "{}: got owner {:?} reason {:?} flags {:?}, expected {:?} {:?} {:?}",
                row.event_id,
                got_owner,
                got_reason,
                row.flags,
                expected.owner_id,
                expected.unattributed_reason,
                expected.flags
            ));
        }
        let usage = Usage {
            bytes_in: row.bytes_in,
            bytes_out: row.bytes_out,
            http_requests: row.http_requests,
            tcp_connections: row.tcp_connections,
        };
        for flag in &row.flags {
            flagged
                .entry((row.owner_id.clone(), flag.clone()))
                .or_default()
                .add(&usage);
        }
        if let Some(reason) = got_reason {
            unattributed.entry(reason).or_default().add(&usage);
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} events differ from the ground truth, e.g.:\n{}",
        mismatches.len(),
        rows.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );

    // Flagged and unattributed usage: exactly the truth's, no false positives or negatives.
    let expected_flagged: BTreeMap<(String, String), Usage> = truth
        .owners
        .iter()
        .flat_map(|(owner, o)| {
            o.flagged
                .iter()
                .map(move |(flag, usage)| ((owner.clone(), flag.clone()), *usage))
        })
        .collect();
    assert_eq!(flagged, expected_flagged);
    assert_eq!(unattributed, truth.unattributed);
    for flag in [
        "credential_deleted",
        "owner_inactive",
        "owner_deleted",
        "acl_violation",
        "principal_mismatch",
    ] {
        assert!(
            flagged.keys().any(|(_, f)| f == flag),
            "the fleet exercises {flag}"
        );
    }
    for reason in [
        "no_endpoint",
        "unknown_session",
        "unknown_credential",
        "unknown_owner",
    ] {
        assert!(
            unattributed.contains_key(reason),
            "the fleet exercises {reason}"
        );
    }
    assert!(run.terminate(Duration::from_secs(30)).success());
    env.drop_database().await;
}
