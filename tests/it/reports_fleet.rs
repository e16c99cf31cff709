//! The HTTP API's reports against a clean simulated fleet: the fleet is published to fresh topics,
//! `botmeter run` attributes it into a fresh ClickHouse database, `botmeter serve` (no API keys:
//! open, on loopback) answers, and every figure checked is computed independently here, from the
//! simulator's ground truth, from the control events it published, or from ClickHouse directly:
//!
//! - `/v1/owners?from&to`: every owner of the truth, with its kind, its usage totals, and its live
//!   credentials by kind (the `*_created.v0` events naming it as owner, none deleted);
//! - `/v1/owners/{id}/usage?…&granularity=day&timezone=America/New_York` for two owners over a
//!   range cutting the window: totals equal the truth's hours in the range, and `agent_sessions` /
//!   `session_hours` equal the sessions of the owner's credentials, each lasting from its
//!   `agent_session_start.v0` to its stop (or to `to`, never past now), clipped to the range;
//! - `/v1/audit?credential_id=<authtoken>&from&to`: the lifecycle holds the credential's
//!   `tunnel_credential_created.v0` event, and its first and last use are the earliest and latest
//!   usage time of its attributed traffic in `usage_events`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use simulate::{generate, FleetConfig, Usage};

use crate::support::{self, TestEnv};

/// A control event of the fleet, parsed.
struct Control {
    event_id: String,
    event_type: String,
    time: DateTime<Utc>,
    object: Value,
}

/// An agent session: its credential, first start and last stop.
type Span = (String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn parse_time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .with_timezone(&Utc)
}

fn usage_of(json: &Value) -> Usage {
    let field = |name: &str| {
        json[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in {json}"))
    };
    Usage {
        bytes_in: field("bytes_in"),
        bytes_out: field("bytes_out"),
        http_requests: field("http_requests"),
        tcp_connections: field("tcp_connections"),
    }
}

pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reports_agree_with_a_simulated_fleet() {
    let started = Instant::now();
    let env = TestEnv::new("reports_fleet");
    let config = FleetConfig {
        users: 2,
        bot_users: 3,
        traffic_events: 3_000,
        ..FleetConfig::default()
    };
    let fleet = generate(&config);
    let truth = &fleet.truth;
    assert!(fleet.late_control.is_empty());
    assert!(truth.unattributed.is_empty(), "a clean fleet");

    // --- What the control plane says, read from the published events ----------------------------
    let control: Vec<Control> = fleet
        .control
        .iter()
        .map(|m| {
            let json: Value = serde_json::from_slice(&m.payload).unwrap();
            Control {
                event_id: json["event_id"].as_str().unwrap().to_owned(),
                event_type: json["event_type"].as_str().unwrap().to_owned(),
                time: parse_time(json["event_timestamp"].as_str().unwrap()),
                object: json["object"].clone(),
            }
        })
        .collect();
    // Credential id → (kind as the API names it, owner, created event id).
    let mut credentials: BTreeMap<String, (&str, String, String)> = BTreeMap::new();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    for c in &control {
        let kind = match c.event_type.split_once('.').map(|(t, _)| t) {
            Some("tunnel_credential_created") => "authtoken",
            Some("ssh_public_key_created") => "ssh_key",
            Some("api_key_created") => "api_key",
            Some(t)
                if t.ends_with("_deleted")
                    && !t.starts_with("endpoint")
                    && !t.starts_with("bot_user") =>
            {
                deleted.insert(c.object["id"].as_str().unwrap().to_owned());
                continue;
            }
            _ => continue,
        };
        let id = c.object["id"].as_str().unwrap().to_owned();
        let owner = c.object["owner_id"].as_str().unwrap().to_owned();
        assert!(credentials
            .insert(id, (kind, owner, c.event_id.clone()))
            .is_none());
    }
    assert!(deleted.is_empty(), "a clean fleet deletes nothing");
    // Per owner, credentials by kind.
    let mut by_owner: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (kind, owner, _) in credentials.values() {
        *by_owner.entry(owner).or_default().entry(kind).or_default() += 1;
    }
    // Session id → (credential id, start, stop).
    let mut sessions: BTreeMap<String, Span> = BTreeMap::new();
    for c in &control {
        let start = c.event_type == "agent_session_start.v0";
        if !start && c.event_type != "agent_session_stop.v0" {
            continue;
        }
        let id = c.object["session"]["id"].as_str().unwrap().to_owned();
        let credential = c.object["credential"]["id"].as_str().unwrap().to_owned();
        let entry = sessions.entry(id).or_insert((credential, None, None));
        // First start, last stop.
        if start {
            entry.1 = Some(entry.1.map_or(c.time, |t| t.min(c.time)));
        } else {
            entry.2 = Some(entry.2.map_or(c.time, |t| t.max(c.time)));
        }
    }
    assert_eq!(sessions.len() as u64, truth.inventory.agent_sessions);

    // --- The pipeline ---------------------------------------------------------------------------
    env.create_topics(2).await;
    env.publish(&fleet).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        truth.traffic_events,
        Duration::from_secs(60),
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
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );

    let (mut serve, base) = env.serve().await;
    let http = reqwest::Client::new();

    // --- /v1/owners over the whole window -------------------------------------------------------
    let (window_from, window_to) = (truth.window_start, truth.window_end);
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let list = get_json(
        &http,
        &format!(
            "{base}/v1/owners?from={}&to={}",
            fmt(window_from),
            fmt(window_to)
        ),
    )
    .await;
    let listed: BTreeMap<&str, &Value> = list["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect();
    assert_eq!(truth.owners.len(), 5);
    for (id, owner) in &truth.owners {
        let got = listed
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} not listed: {list}"));
        assert_eq!(got["kind"], owner.owner_kind.as_str(), "{id}: {got}");
        assert_eq!(usage_of(&got["usage"]), owner.usage, "{id}: {got}");
        let counts = by_owner.get(id.as_str()).cloned().unwrap_or_default();
        for kind in ["authtoken", "ssh_key", "api_key"] {
            assert_eq!(
                got["credentials"][kind].as_u64(),
                Some(counts.get(kind).copied().unwrap_or(0)),
                "{id} {kind}: {got}"
            );
        }
        assert_eq!(
            counts.values().sum::<u64>(),
            owner.credentials,
            "{id}: the truth's credential count"
        );
        assert_eq!(got["deleted_credentials"], 0, "{id}: {got}");
    }
    assert_eq!(
        listed.len(),
        truth.owners.len(),
        "no owner beyond the truth's: {list}"
    );

    // --- /v1/owners/{id}/usage over ranges cutting the window ----------------------------------
    // Both end one hour before the window does (open sessions stop at `to`); the first starts with
    // the window (every session starts inside it: control events are in the first tenth), the
    // second one hour in (every session is cut at `from`). The truth's hours are UTC hours, so the
    // ranges take whole ones.
    let to = window_to - chrono::Duration::hours(1);
    let now = Utc::now();
    // The bot user and the user with the most bytes out.
    let mut ranked: Vec<(&String, u64)> = truth
        .owners
        .iter()
        .map(|(id, o)| (id, o.usage.bytes_out))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let bot = ranked
        .iter()
        .find(|(id, _)| id.starts_with("bot_"))
        .unwrap()
        .0;
    let user = ranked
        .iter()
        .find(|(id, _)| id.starts_with("usr_"))
        .unwrap()
        .0;
    for (owner, from) in [bot, user].into_iter().flat_map(|o| {
        [
            (o, window_from),
            (o, window_from + chrono::Duration::hours(1)),
        ]
    }) {
        let mut expected = Usage::default();
        for (hour, usage) in truth.hourly.get(owner).into_iter().flatten() {
            let hour = parse_time(hour);
            if hour >= from && hour < to {
                expected.add(usage);
            }
        }
        assert!(
            expected.http_requests + expected.tcp_connections > 0,
            "{owner} has traffic in the range"
        );
        // Sessions of the owner's credentials: [start, stop or min(to, now)) ∩ [from, to).
        let end_open = to.min(now.max(from));
        let (mut count, mut micros) = (0_u64, 0_i64);
        for (credential, start, stop) in sessions.values() {
            if credentials.get(credential).map(|c| c.1.as_str()) != Some(owner.as_str()) {
                continue;
            }
            let start = start.expect("a clean fleet announces every session's start");
            if start >= to {
                continue;
            }
            let stop = match stop {
                Some(stop) if *stop < to => *stop,
                _ => end_open,
            };
            let (a, b) = (start.max(from), stop.min(end_open));
            if a < b {
                count += 1;
                micros += (b - a).num_microseconds().unwrap();
            }
        }
        let hours = micros as f64 / 3_600_000_000.0;
        assert!(count > 0, "{owner} has sessions in the range");

        let url = format!("{base}/v1/owners/{owner}/usage?from={}&to={}&granularity=day&timezone=America/New_York", fmt(from), fmt(to));
        let report = get_json(&http, &url).await;
        eprintln!(
            "{owner}: {expected:?}, {count} sessions, {hours:.6} session-hours; API {}",
            report["totals"]
        );
        let totals = &report["totals"];
        assert_eq!(usage_of(totals), expected, "{owner}: {report}");
        assert_eq!(
            totals["agent_sessions"].as_u64(),
            Some(count),
            "{owner}: {report}"
        );
        let got_hours = totals["session_hours"].as_f64().unwrap();
        assert!(
            (got_hours - hours).abs() < 1e-6,
            "{owner}: session_hours {got_hours} != {hours}: {report}"
        );
        // The day buckets (New York days) add up to the totals.
        let mut summed = Usage::default();
        for bucket in report["buckets"].as_array().unwrap() {
            summed.add(&usage_of(bucket));
        }
        assert_eq!(summed, expected, "{owner}: buckets {report}");
    }

    // --- /v1/audit for one authtoken -----------------------------------------------------------
    let (credential, (_, owner, created_event)) = credentials
        .iter()
        .find(|(_, (kind, owner, _))| *kind == "authtoken" && owner == bot)
        .expect("an authtoken of the bot user");
    let url = format!(
        "{base}/v1/audit?credential_id={credential}&from={}&to={}",
        fmt(window_from),
        fmt(window_to)
    );
    let audit = get_json(&http, &url).await;
    let lifecycle = audit["lifecycle"].as_array().unwrap();
    let created = lifecycle
        .iter()
        .find(|e| e["event_id"] == created_event.as_str())
        .unwrap_or_else(|| panic!("{credential}: no created event {created_event}: {audit}"));
    assert_eq!(
        created["event_type"], "tunnel_credential_created.v0",
        "{audit}"
    );
    assert_eq!(created["action"], "created", "{audit}");
    assert_eq!(created["object_id"], credential.as_str(), "{audit}");
    let row = env
        .clickhouse(&format!(
            "SELECT min(event_time_us), max(event_time_us), count() FROM {}.usage_events \
             WHERE credential_id = '{credential}' AND status = 'attributed' AND sign > 0 FORMAT TSV",
            env.database
        ))
        .await;
    let fields: Vec<i64> = row.trim().split('\t').map(|f| f.parse().unwrap()).collect();
    assert!(fields[2] > 0, "{credential} ({owner}) has traffic");
    let cred = audit["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential_id"] == credential.as_str())
        .unwrap_or_else(|| panic!("{credential} not in credentials: {audit}"));
    assert_eq!(cred["kind"], "authtoken", "{audit}");
    assert_eq!(cred["owner_id"], owner.as_str(), "{audit}");
    let first = parse_time(cred["first_used_at"].as_str().unwrap()).timestamp_micros();
    let last = parse_time(cred["last_used_at"].as_str().unwrap()).timestamp_micros();
    assert_eq!(
        (first, last),
        (fields[0], fields[1]),
        "{credential}: {audit}"
    );
    assert_eq!(
        cred["events"].as_i64(),
        Some(fields[2]),
        "{credential}: {audit}"
    );

    eprintln!("reports_fleet: {:.1}s", started.elapsed().as_secs_f64());
    let status = serve.terminate(Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
    env.drop_database().await;
    support::delete_topics(
        &env.brokers,
        &[
            &env.control_topic,
            &env.traffic_topic,
            &env.dead_letter_topic,
        ],
    )
    .await;
}
