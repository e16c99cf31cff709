//! The attribution issues' acceptance tests on the real services: simulated fleets through
//! `botmeter run`, every traffic event compared with the ground truth — owner or unattributed
//! reason, exactly the truth's flags, and the endpoint and credential it resolved to — and
//! flagged/unattributed usage equal to the truth byte for byte.
//!
//! The first fleet has every anomaly (rotations, deactivated and deleted bots, hostname reuse,
//! ACL violations, endpoint owner mismatches, unknown hostnames, sessions, credentials and
//! owners) and the wildcard sites, bot deletions without credential deletes and device metadata
//! of issue 15 ([`Scenarios::standard`]). The second is wildcard sites and revoking deletions
//! only, larger, to show each resolution rule deciding traffic: an exact name over a live
//! wildcard, the longest suffix over a shorter one, names at any depth, and each as of the
//! event's time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use simulate::{generate, Fleet, FleetConfig, Scenarios, Usage};

use crate::support::TestEnv;

#[derive(Debug, serde::Deserialize)]
struct Row {
    event_id: String,
    status: String,
    owner_id: String,
    unattributed_reason: String,
    flags: Vec<String>,
    endpoint_id: String,
    credential_id: String,
    hostname: String,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
}

impl Row {
    fn usage(&self) -> Usage {
        Usage {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            http_requests: self.http_requests,
            tcp_connections: self.tcp_connections,
        }
    }
}

/// Publishes `config`'s fleet to fresh topics, runs `botmeter run` until every traffic event is
/// written, and asserts that every row is what the truth says of its event: owner or reason,
/// flags, endpoint and credential. Returns the fleet and the rows.
async fn attribute(env: &TestEnv, config: &FleetConfig) -> (Fleet, Vec<Row>) {
    let fleet = generate(config);
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
            "SELECT event_id, status, owner_id, unattributed_reason, flags, endpoint_id, \
             credential_id, hostname, bytes_in, bytes_out, \
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
    for row in &rows {
        let expected = &truth.events[&row.event_id];
        let got_owner = (row.status == "attributed").then(|| row.owner_id.clone());
        let got_reason = (row.status == "unattributed").then(|| row.unattributed_reason.clone());
        let expected_endpoint = expected.endpoint_id.clone().unwrap_or_default();
        let expected_credential = expected.credential_id.clone().unwrap_or_default();
        if got_owner != expected.owner_id
            || got_reason != expected.unattributed_reason
            || row.flags != expected.flags
            || row.endpoint_id != expected_endpoint
            || row.credential_id != expected_credential
        {
            mismatches.push(format!(
                "{} on {}: got owner {:?} reason {:?} flags {:?} endpoint {:?} credential {:?}, \
                 expected {:?} {:?} {:?} {:?} {:?}",
                row.event_id,
                row.hostname,
                got_owner,
                got_reason,
                row.flags,
                row.endpoint_id,
                row.credential_id,
                expected.owner_id,
                expected.unattributed_reason,
                expected.flags,
                expected_endpoint,
                expected_credential
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} events differ from the ground truth, e.g.:\n{}",
        mismatches.len(),
        rows.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
    assert!(run.terminate(Duration::from_secs(30)).success());
    (fleet, rows)
}

/// The endpoints of a fleet by id, with their host (`*.suffix` for a wildcard), from its
/// `endpoint_created.v0` events.
fn endpoint_hosts(fleet: &Fleet) -> BTreeMap<String, String> {
    fleet
        .control
        .iter()
        .chain(&fleet.late_control)
        .filter_map(|m| {
            let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            (event["event_type"] == "endpoint_created.v0").then(|| {
                (
                    event["object"]["id"].as_str().unwrap().to_owned(),
                    event["object"]["host"].as_str().unwrap().to_owned(),
                )
            })
        })
        .collect()
}

/// Bot users deleted with no `*_deleted.v0` for any of their credentials.
fn bots_deleted_without_credential_deletes(fleet: &Fleet) -> BTreeSet<String> {
    let mut deleted = BTreeSet::new();
    let mut with_credential_deletes = BTreeSet::new();
    for m in &fleet.control {
        let event: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let event_type = event["event_type"].as_str().unwrap();
        if event_type == "bot_user_deleted.v0" {
            deleted.insert(event["object"]["id"].as_str().unwrap().to_owned());
        } else if event_type.ends_with("_deleted.v0") && event["object"]["owner_id"].is_string() {
            with_credential_deletes
                .insert(event["object"]["owner_id"].as_str().unwrap().to_owned());
        }
    }
    &deleted - &with_credential_deletes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_lands_on_the_ground_truth_owner_reason_and_flags() {
    let env = TestEnv::new("anomalies");
    let config = FleetConfig {
        seed: 23,
        traffic_events: 20_000,
        ..FleetConfig::with_anomalies()
    };
    assert!(config.scenarios.wildcard_sites > 0);
    assert!(config.scenarios.bot_deletions_without_credential_deletes > 0);
    let (fleet, rows) = attribute(&env, &config).await;
    let truth = &fleet.truth;

    let mut flagged: BTreeMap<(String, String), Usage> = BTreeMap::new();
    let mut unattributed: BTreeMap<String, Usage> = BTreeMap::new();
    for row in &rows {
        for flag in &row.flags {
            flagged
                .entry((row.owner_id.clone(), flag.clone()))
                .or_default()
                .add(&row.usage());
        }
        if row.status == "unattributed" {
            unattributed
                .entry(row.unattributed_reason.clone())
                .or_default()
                .add(&row.usage());
        }
    }
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
    // Issue 15: traffic under wildcard endpoints, and revoked credentials of a bot user deleted
    // without their deletions.
    let hosts = endpoint_hosts(&fleet);
    assert!(
        rows.iter().any(|r| hosts
            .get(&r.endpoint_id)
            .is_some_and(|h| h.starts_with("*."))),
        "the fleet has traffic served by wildcard endpoints"
    );
    let silent = bots_deleted_without_credential_deletes(&fleet);
    assert!(!silent.is_empty(), "the fleet deletes a bot user alone");
    assert!(
        rows.iter()
            .any(|r| silent.contains(&r.owner_id) && r.flags.contains(&"credential_deleted".into())),
        "a bot user's deletion revokes its credentials"
    );
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_sites_and_revoking_deletions_land_on_the_ground_truth() {
    let env = TestEnv::new("wildcard_sites");
    let config = FleetConfig {
        seed: 31,
        users: 3,
        bot_users: 6,
        traffic_events: 12_000,
        scenarios: Scenarios {
            wildcard_sites: 4,
            bot_deletions_without_credential_deletes: 2,
            credential_metadata: 2,
            ..Scenarios::default()
        },
        ..FleetConfig::default()
    };
    let (fleet, rows) = attribute(&env, &config).await;

    // Each rule decided some of the traffic under the fleet domain.
    let hosts = endpoint_hosts(&fleet);
    let mut decided: BTreeMap<&str, u64> = BTreeMap::new();
    let mut owners_of_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| r.hostname.ends_with(".factory.example.com"))
    {
        let case = match hosts.get(&row.endpoint_id).map(String::as_str) {
            None => "no endpoint left",
            Some(host) if host == row.hostname => "exact device endpoint",
            Some("*.factory.example.com") => "catch-all wildcard",
            // The labels the wildcard's `*` stands for: one, or more for a nested name.
            Some(host) if row.hostname[..row.hostname.len() - host.len() + 1].contains('.') => {
                "nested name under a site wildcard"
            }
            Some(_) => "site wildcard",
        };
        *decided.entry(case).or_default() += 1;
        if row.status == "attributed" {
            owners_of_name
                .entry(&row.hostname)
                .or_default()
                .insert(&row.owner_id);
        }
    }
    for case in [
        "exact device endpoint",
        "site wildcard",
        "catch-all wildcard",
        "nested name under a site wildcard",
        "no endpoint left",
    ] {
        assert!(
            decided.get(case).is_some_and(|n| *n > 0),
            "no {case} in {decided:?}"
        );
    }
    assert!(
        owners_of_name.values().any(|owners| owners.len() > 2),
        "a device name changes hands between its exact endpoint, its site and the catch-all"
    );
    let silent = bots_deleted_without_credential_deletes(&fleet);
    assert_eq!(silent.len(), 2);
    for bot in &silent {
        let revoked = &fleet.truth.owners[bot].flagged["credential_deleted"];
        let mut got = Usage::default();
        rows.iter()
            .filter(|r| &r.owner_id == bot && r.flags.contains(&"credential_deleted".into()))
            .for_each(|r| got.add(&r.usage()));
        assert_eq!(&got, revoked, "{bot}: usage on revoked credentials");
    }
    metadata_groups_equal_the_truth(&env, &fleet).await;
    env.drop_database().await;
}

/// Usage grouped by each metadata key of the truth (`group_by=metadata.<key>`), per owner and
/// account-wide (the top route), through `botmeter serve`: every value's sums equal the truth's
/// (the value as of each event's time, `(none)` without it).
async fn metadata_groups_equal_the_truth(env: &TestEnv, fleet: &Fleet) {
    let truth = &fleet.truth;
    let (_serve, base) = env.serve().await;
    let http = reqwest::Client::new();
    let range = format!(
        "from={}&to={}",
        truth
            .window_start
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        truth
            .window_end
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let get = |url: String| {
        let http = http.clone();
        async move {
            let response = http.get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let usage_of = |json: &serde_json::Value| Usage {
        bytes_in: json["bytes_in"].as_u64().unwrap(),
        bytes_out: json["bytes_out"].as_u64().unwrap(),
        http_requests: json["http_requests"].as_u64().unwrap(),
        tcp_connections: json["tcp_connections"].as_u64().unwrap(),
    };
    let mut checked = 0;
    for (key, expected) in &truth.by_metadata {
        let top = get(format!(
            "{base}/v1/usage/top?{range}&group_by=metadata.{key}&limit=1000"
        ))
        .await;
        let got: BTreeMap<String, Usage> = top["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["key"].as_str().unwrap().to_owned(), usage_of(&g["usage"])))
            .collect();
        assert_eq!(&got, expected, "account-wide by metadata.{key}");
        for (owner, owner_truth) in &truth.owners {
            let Some(expected) = owner_truth.by_metadata.get(key) else {
                continue;
            };
            let report = get(format!(
                "{base}/v1/owners/{owner}/usage?{range}&granularity=day&group_by=metadata.{key}"
            ))
            .await;
            let got: BTreeMap<String, Usage> = report["groups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        g["key"].as_str().unwrap().to_owned(),
                        usage_of(&g["totals"]),
                    )
                })
                .collect();
            assert_eq!(&got, expected, "{owner} by metadata.{key}");
            checked += 1;
        }
    }
    assert!(checked > 4, "only {checked} owner and key pairs");
    assert!(
        truth.by_metadata["site"].len() > 2,
        "the fleet's credentials name several sites: {:?}",
        truth.by_metadata["site"].keys()
    );
}
