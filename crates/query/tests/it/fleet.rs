//! `GET /v1/fleet` against ClickHouse 18.16, on the rows of tests/python/test_fleet_chdb.py (which
//! runs the same SQL on current ClickHouse), at several times, with every figure worked out by
//! hand:
//!
//! - `cr_1` (authtoken of `bot_a`): agent `ts_1` (us, darwin, ngrok/3.18.4) from 09:00 with `ep_1`
//!   and `ep_2` (deleted 09:30); `ts_1` stops at 10:00 (dropped); `ts_2` (SSH user agent) from
//!   11:00 with `ep_3`. Traffic 09:20, 09:55 (restated: a -1 copy) and 09:56 (restated with the
//!   same credential).
//! - `cr_2` (SSH key of `bot_a`): never seen (a stop without a start is no session).
//! - `cr_3` (authtoken of `usr_b`): `ts_3` 09:30 to 09:45, traffic 09:50.
//! - `cr_4` (authtoken of `bot_c`): `ts_4` online from 09:00; revoked with `bot_c` at 12:00.
//! - `cr_5` (authtoken of `bot_a`): never seen, deleted at 10:30. `ak_1`: an API key, never listed.
//!
//! `bot_a`'s metadata names the customer `acme`.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::StatusCode;
use botmeter_query::api::{key_digest, ApiKeys, AppState, SettingsFormat};
use botmeter_query::rows::{ControlRow, UsageRow};
use serde_json::{json, Value};

use crate::common::TestDb;
use crate::reports::{bot_user, control, credential, get, session, usage, Traffic};

fn start(
    event_id: &str,
    time: &str,
    id: &str,
    credential: &str,
    (region, os, agent): (&str, &str, &str),
) -> ControlRow {
    control(
        event_id,
        "agent_session_start.v0",
        time,
        id,
        json!({"session": {"id": id, "uri": ""}, "credential": {"id": credential, "uri": ""},
               "region": region, "os": os, "user_agent": agent}),
        "",
    )
}

fn endpoint(
    event_id: &str,
    action: &str,
    time: &str,
    id: &str,
    session: Option<&str>,
) -> ControlRow {
    let mut object = json!({"id": id, "region": "us"});
    if let Some(session) = session {
        object["tunnel_session"] = json!({"id": session, "uri": ""});
    }
    control(
        event_id,
        &format!("endpoint_{action}.v0"),
        time,
        id,
        object,
        "",
    )
}

const NGROK_EU: (&str, &str, &str) = ("eu", "linux", "ngrok/3.18.4");

fn control_rows() -> Vec<ControlRow> {
    let created = "2024-05-01 08:00:00";
    let authtoken = "tunnel_credential_created.v0";
    let mut rejected = credential(
        "ev_c1m",
        "tunnel_credential_updated.v0",
        "2024-05-01 08:30:00",
        "cr_1",
        "usr_b",
        "",
    );
    rejected.anomalies = vec!["owner_change_rejected".to_owned()];
    vec![
        bot_user(
            "ev_ba",
            "created",
            "2024-04-01 00:00:00",
            "bot_a",
            "fleet",
            true,
            Some(r#"{"customer":"acme"}"#),
        ),
        bot_user(
            "ev_bc",
            "created",
            "2024-04-01 00:00:00",
            "bot_c",
            "other",
            true,
            None,
        ),
        credential("ev_c1", authtoken, created, "cr_1", "bot_a", ""),
        credential(
            "ev_c2",
            "ssh_public_key_created.v0",
            created,
            "cr_2",
            "bot_a",
            "",
        ),
        credential("ev_c3", authtoken, created, "cr_3", "usr_b", ""),
        credential("ev_c4", authtoken, created, "cr_4", "bot_c", ""),
        credential("ev_c5", authtoken, created, "cr_5", "bot_a", ""),
        credential(
            "ev_c5x",
            "tunnel_credential_deleted.v0",
            "2024-05-01 10:30:00",
            "cr_5",
            "bot_a",
            "",
        ),
        credential("ev_k1", "api_key_created.v0", created, "ak_1", "bot_a", ""),
        rejected,
        control(
            "ev_bcx",
            "bot_user_deleted.v0",
            "2024-05-01 12:00:00",
            "bot_c",
            json!({"id": "bot_c"}),
            "bot_c",
        ),
        start(
            "ev_s1",
            "2024-05-01 09:00:00",
            "ts_1",
            "cr_1",
            ("us", "darwin", "ngrok/3.18.4"),
        ),
        endpoint(
            "ev_e1",
            "created",
            "2024-05-01 09:00:01",
            "ep_1",
            Some("ts_1"),
        ),
        endpoint(
            "ev_e2",
            "created",
            "2024-05-01 09:00:02",
            "ep_2",
            Some("ts_1"),
        ),
        endpoint("ev_e2x", "deleted", "2024-05-01 09:30:00", "ep_2", None),
        session(
            "ev_s1x",
            "stop",
            "2024-05-01 10:00:00",
            "ts_1",
            "cr_1",
            None,
        ),
        start(
            "ev_s2",
            "2024-05-01 11:00:00",
            "ts_2",
            "cr_1",
            ("eu", "linux", "SSH-2.0-OpenSSH_9.6"),
        ),
        endpoint(
            "ev_e3",
            "created",
            "2024-05-01 11:00:01",
            "ep_3",
            Some("ts_2"),
        ),
        start("ev_s3", "2024-05-01 09:30:00", "ts_3", "cr_3", NGROK_EU),
        session(
            "ev_s3x",
            "stop",
            "2024-05-01 09:45:00",
            "ts_3",
            "cr_3",
            None,
        ),
        start("ev_s4", "2024-05-01 09:00:00", "ts_4", "cr_4", NGROK_EU),
        session(
            "ev_s5x",
            "stop",
            "2024-05-01 09:00:00",
            "ts_5",
            "cr_2",
            None,
        ),
    ]
}

fn usage_rows() -> Vec<UsageRow> {
    let traffic = || Traffic {
        bytes_out: 10,
        ..Traffic::default()
    };
    let restated = || Traffic {
        sign: -1,
        ..traffic()
    };
    let flagged = Traffic {
        flags: &["acl_violation"],
        ..traffic()
    };
    vec![
        usage(
            "ev_1",
            "2024-05-01 09:20:00",
            "ep_1",
            "cr_1",
            "bot_a",
            traffic(),
        ),
        usage(
            "ev_2",
            "2024-05-01 09:50:00",
            "ep_9",
            "cr_3",
            "usr_b",
            traffic(),
        ),
        usage(
            "ev_r",
            "2024-05-01 09:55:00",
            "ep_1",
            "cr_1",
            "bot_a",
            traffic(),
        ),
        usage(
            "ev_r",
            "2024-05-01 09:55:00",
            "ep_1",
            "cr_1",
            "bot_a",
            restated(),
        ),
        usage(
            "ev_f",
            "2024-05-01 09:56:00",
            "ep_1",
            "cr_1",
            "bot_a",
            traffic(),
        ),
        usage(
            "ev_f",
            "2024-05-01 09:56:00",
            "ep_1",
            "cr_1",
            "bot_a",
            restated(),
        ),
        usage(
            "ev_f",
            "2024-05-01 09:56:00",
            "ep_1",
            "cr_1",
            "bot_a",
            flagged,
        ),
    ]
}

async fn fleet_state(name: &str) -> (TestDb, AppState) {
    let db = TestDb::migrated(&format!("fleet_{name}")).await;
    let writer = db.writer();
    writer.insert_usage(&usage_rows()).await.unwrap();
    writer.insert_control(&control_rows()).await.unwrap();
    let state = api_state(&db);
    (db, state)
}

/// The API over `db`, with the `acme` customer key and the `grafana` reader key.
fn api_state(db: &TestDb) -> AppState {
    let keys = format!(
        "[[keys]]\nname = \"acme\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n\
         [[keys]]\nname = \"grafana\"\nsha256 = \"{}\"\nrole = \"reader\"\n",
        key_digest("acme-secret"),
        key_digest("reader-secret")
    );
    db.state()
        .with_customer_metadata_key("customer")
        .unwrap()
        .with_api_keys(ApiKeys::parse(Path::new("keys.toml"), &keys, SettingsFormat::Toml).unwrap())
}

async fn call(state: &AppState, query: &str, key: &str) -> (StatusCode, Value) {
    let authorization = format!("Bearer {key}");
    let (status, _, body) = get(
        state,
        &format!("/v1/fleet?{query}"),
        &[("authorization", authorization.as_str())],
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{query}: {e}: {text}"));
    (status, json)
}

async fn report(state: &AppState, query: &str) -> Value {
    let (status, body) = call(state, query, "reader-secret").await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

/// The entry of `id` in a report's credentials.
fn listed<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {report}"))
}

/// Per credential: (state, agents online, endpoints online, last seen, dropped at).
fn states(report: &Value) -> BTreeMap<String, (String, u64, u64, String, String)> {
    report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let text = |name: &str| c[name].as_str().unwrap_or_default().to_owned();
            (
                text("credential_id"),
                (
                    text("state"),
                    c["agents_online"].as_u64().unwrap(),
                    c["endpoints_online"].as_u64().unwrap(),
                    text("last_seen_at"),
                    text("dropped_at"),
                ),
            )
        })
        .collect()
}

fn expect(
    rows: &[(&str, &str, u64, u64, &str, &str)],
) -> BTreeMap<String, (String, u64, u64, String, String)> {
    rows.iter()
        .map(|(id, state, agents, endpoints, seen, dropped)| {
            let time = |t: &str| {
                if t.is_empty() {
                    String::new()
                } else {
                    format!("2024-05-01T{t}Z")
                }
            };
            (
                (*id).to_owned(),
                (
                    (*state).to_owned(),
                    *agents,
                    *endpoints,
                    time(seen),
                    time(dropped),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_fleet_as_of_several_times() {
    let (_db, state) = fleet_state("times").await;
    // 09:40: ts_1 with ep_1 only, ts_3 and ts_4 online.
    let at = report(&state, "at=2024-05-01T09:40:00Z").await;
    assert_eq!(
        states(&at),
        expect(&[
            ("cr_1", "online", 1, 1, "09:20:00", ""),
            ("cr_2", "never_seen", 0, 0, "", ""),
            ("cr_3", "online", 1, 0, "09:30:00", ""),
            ("cr_4", "online", 1, 0, "09:00:00", ""),
            ("cr_5", "never_seen", 0, 0, "", ""),
        ])
    );
    let agent = &listed(&at, "cr_1")["agents"][0];
    assert_eq!(
        (
            &agent["session_id"],
            &agent["region"],
            &agent["os"],
            &agent["agent_version"]
        ),
        (
            &json!("ts_1"),
            &json!("us"),
            &json!("darwin"),
            &json!("3.18.4")
        ),
        "{at}"
    );
    assert_eq!(at["summary"]["agents_online"], 3, "{at}");
    assert_eq!(at["summary"]["online"], 3, "{at}");
    // 09:48: ts_3 stopped 3 minutes ago, within the 5 minutes' grace; at 09:51, 6 minutes on, it
    // is within a grace of 600 s and past the default one, with traffic at 09:50 (seen, still
    // dropped: only a session brings it back).
    let at = report(&state, "at=2024-05-01T09:48:00Z").await;
    assert_eq!(listed(&at, "cr_3")["state"], "reconnecting", "{at}");
    assert_eq!(listed(&at, "cr_3")["gone_seconds"], 180, "{at}");
    let at = report(&state, "at=2024-05-01T09:51:00Z&drop_grace_seconds=600").await;
    assert_eq!(
        states(&at)["cr_3"],
        expect(&[("cr_3", "reconnecting", 0, 0, "09:50:00", "09:45:00")])["cr_3"]
    );
    let at = report(&state, "at=2024-05-01T09:51:00Z").await;
    assert_eq!(states(&at)["cr_3"].0, "dropped");
    // 10:30:00 exactly: cr_5's deletion is not before `at`.
    let at = report(&state, "at=2024-05-01T10:30:00Z").await;
    assert_eq!(
        states(&at),
        expect(&[
            ("cr_1", "dropped", 0, 0, "09:56:00", "10:00:00"),
            ("cr_2", "never_seen", 0, 0, "", ""),
            ("cr_3", "dropped", 0, 0, "09:50:00", "09:45:00"),
            ("cr_4", "online", 1, 0, "09:00:00", ""),
            ("cr_5", "never_seen", 0, 0, "", ""),
        ])
    );
    assert_eq!(listed(&at, "cr_1")["gone_seconds"], 1800, "{at}");
    // 12:00:01: cr_1 back with ts_2 and ep_3; cr_5 deleted, cr_4 revoked with bot_c.
    let at = report(&state, "at=2024-05-01T12:00:01Z").await;
    assert_eq!(
        states(&at),
        expect(&[
            ("cr_1", "online", 1, 1, "11:00:00", ""),
            ("cr_2", "never_seen", 0, 0, "", ""),
            ("cr_3", "dropped", 0, 0, "09:50:00", "09:45:00"),
        ])
    );
    assert_eq!(
        listed(&at, "cr_1")["agents"][0]["agent_version"],
        "",
        "{at}"
    );
    let owners: Vec<(&str, u64)> = at["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["owner_id"].as_str().unwrap(),
                o["credentials"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(owners, [("bot_a", 2), ("usr_b", 1)], "{at}");
    // Idle after 3 days unseen: cr_2 (created 08:00) and cr_3 (seen 09:50); cr_1 is online.
    let later = report(&state, "at=2024-05-04T12:00:00Z&idle_days=3&idle=true").await;
    let idle: Vec<&str> = later["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap())
        .collect();
    assert_eq!(idle, ["cr_2", "cr_3"], "{later}");
    assert_eq!(later["summary"]["idle"], 2, "{later}");
    // Filters.
    let dropped = report(
        &state,
        "at=2024-05-01T10:30:00Z&state=dropped&owner_id=usr_b",
    )
    .await;
    assert_eq!(dropped["matched"], 1, "{dropped}");
    assert_eq!(
        dropped["credentials"][0]["credential_id"], "cr_3",
        "{dropped}"
    );
}

#[tokio::test]
async fn a_customer_sees_its_bot_users_fleet_only() {
    let (_db, state) = fleet_state("tenancy").await;
    for query in [
        "at=2024-05-01T09:40:00Z",
        "at=2024-05-01T09:40:00Z&customer=acme",
    ] {
        let (status, body) = call(&state, query, "acme-secret").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids: Vec<&str> = body["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["credential_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["cr_1", "cr_2", "cr_5"], "{query}: {body}");
        assert_eq!(body["summary"]["agents_online"], 1, "{body}");
    }
    // The reader narrows to the customer the same way.
    let body = report(&state, "at=2024-05-01T09:40:00Z&customer=acme").await;
    assert_eq!(body["summary"]["credentials"], 3, "{body}");
    for query in [
        "at=2024-05-01T09:40:00Z&customer=globex",
        "at=2024-05-01T09:40:00Z&owner_id=usr_b",
        "at=2024-05-01T09:40:00Z&owner_id=bot_c",
    ] {
        let (status, body) = call(&state, query, "acme-secret").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{query}: {body}");
        assert!(!body.to_string().contains("cr_3"), "{body}");
    }
}

#[tokio::test]
async fn the_gauges_count_the_fleet_now() {
    let (_db, state) = fleet_state("gauges").await;
    // Now (long after the fixture): cr_1 online with ts_2 (bot_a), cr_3 dropped (usr_b), cr_2
    // never seen; cr_4 revoked with bot_c and cr_5 deleted are no longer in the fleet.
    let gauges = botmeter_query::api::refresh_fleet(&state).await.unwrap();
    assert_eq!(gauges.agents_online, 1);
    assert_eq!(
        gauges.agents_online_by_owner_kind,
        BTreeMap::from([("bot_user".to_owned(), 1), ("user".to_owned(), 0)])
    );
    assert_eq!((gauges.dropped, gauges.reconnecting), (1, 0));
}

#[tokio::test]
async fn without_at_a_fresh_timeline_answers() {
    let (db, state) = fleet_state("snapshot").await;
    // No timeline yet: read now.
    let before = report(&state, "").await;
    assert_eq!(before["summary"]["credentials"], 3, "{before}");
    botmeter_query::api::refresh_fleet(&state).await.unwrap();
    // A credential created after the refresh: only a read sees it.
    db.writer()
        .insert_control(&[credential(
            "ev_c6",
            "tunnel_credential_created.v0",
            "2024-05-02 00:00:00",
            "cr_6",
            "bot_a",
            "",
        )])
        .await
        .unwrap();
    let snapshot = report(&state, "").await;
    let at = snapshot["at"].as_str().unwrap().to_owned();
    assert_eq!(snapshot["summary"]["credentials"], 3, "{snapshot}");
    // As of the timeline's instant, the timeline answers (what ClickHouse held at the refresh).
    let same = report(&state, &format!("at={at}")).await;
    assert_eq!(same, snapshot);
    // A second later is after the timeline: read now.
    let later = chrono::DateTime::parse_from_rfc3339(&at).unwrap() + chrono::Duration::seconds(1);
    let read = report(
        &state,
        &format!(
            "at={}",
            later.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .await;
    assert_eq!(read["summary"]["credentials"], 4, "{read}");
    // Otherwise the same credentials in the same states, for the whole fleet and for a customer.
    let mut without_new = states(&read);
    without_new.remove("cr_6");
    assert_eq!(
        states(&snapshot)
            .into_iter()
            .map(|(id, (state, ..))| (id, state))
            .collect::<Vec<_>>(),
        without_new
            .into_iter()
            .map(|(id, (state, ..))| (id, state))
            .collect::<Vec<_>>()
    );
    let (status, customer) = call(&state, "", "acme-secret").await;
    assert_eq!(status, StatusCode::OK, "{customer}");
    assert_eq!(customer["at"], at.as_str());
    assert_eq!(customer["summary"]["credentials"], 2, "{customer}");
    // The next refresh sees it.
    botmeter_query::api::refresh_fleet(&state).await.unwrap();
    assert_eq!(report(&state, "").await["summary"]["credentials"], 4);
}

/// Times of the fixture's day and around it, each side of its events.
const TIMES: [&str; 25] = [
    "2024-04-30T00:00:00Z",
    "2024-05-01T08:00:00Z",
    "2024-05-01T08:00:01Z",
    "2024-05-01T09:00:00Z",
    "2024-05-01T09:00:01Z",
    "2024-05-01T09:00:02Z",
    "2024-05-01T09:00:03Z",
    "2024-05-01T09:20:00Z",
    "2024-05-01T09:20:01Z",
    "2024-05-01T09:30:00Z",
    "2024-05-01T09:45:01Z",
    "2024-05-01T09:50:01Z",
    "2024-05-01T09:55:01Z",
    "2024-05-01T09:56:01Z",
    "2024-05-01T09:58:00Z",
    "2024-05-01T09:58:01Z",
    "2024-05-01T10:00:00Z",
    "2024-05-01T10:00:01Z",
    "2024-05-01T10:05:01Z",
    "2024-05-01T10:30:00Z",
    "2024-05-01T10:30:01Z",
    "2024-05-01T11:00:01Z",
    "2024-05-01T12:00:00Z",
    "2024-05-01T12:00:01Z",
    "2024-06-15T00:00:00Z",
];

/// The `at` of each of `times` with the queries of the other tests (whole fleet, one owner's
/// dropped credentials, a customer's fleet) that `timeline` answers differently from `reading`.
async fn differences(timeline: &AppState, reading: &AppState, times: &[&str]) -> Vec<String> {
    let mut differ = Vec::new();
    for at in times {
        for (rest, key) in [
            ("", "reader-secret"),
            (
                "&owner_id=bot_a&idle_days=1&state=dropped&drop_grace_seconds=0",
                "reader-secret",
            ),
            ("", "acme-secret"),
        ] {
            let query = format!("at={at}{rest}");
            let from_timeline = call(timeline, &query, key).await;
            let read = call(reading, &query, key).await;
            assert_eq!(from_timeline.0, StatusCode::OK, "{query}");
            if from_timeline != read {
                differ.push(query);
            }
        }
    }
    differ
}

/// Every `at` of the fixture's day, and the queries of the other tests: the timeline answers
/// exactly as a read of ClickHouse does; a control event and usage stored late (old event times,
/// inserted after a refresh) are in the timeline after the next refresh, and not before.
#[tokio::test]
async fn the_timeline_answers_every_past_at_as_a_read_does() {
    let (db, timeline) = fleet_state("timeline").await;
    let reading = api_state(&db).with_fleet_timeline(false);
    botmeter_query::api::refresh_fleet(&timeline).await.unwrap();
    botmeter_query::api::refresh_fleet(&reading).await.unwrap();
    assert_eq!(
        differences(&timeline, &reading, &TIMES).await,
        Vec::<String>::new()
    );
    // A timeline answers while its refresh is at most 30 s old: a fresh one for what follows.
    botmeter_query::api::refresh_fleet(&timeline).await.unwrap();

    // Stored late: cr_2 starts a session at 09:57 and cr_3 has traffic at 09:58:00.7.
    db.writer()
        .insert_control(&[start(
            "ev_late",
            "2024-05-01 09:57:00",
            "ts_late",
            "cr_2",
            NGROK_EU,
        )])
        .await
        .unwrap();
    let mut late = usage(
        "ev_late",
        "2024-05-01 09:58:00",
        "ep_9",
        "cr_3",
        "usr_b",
        Traffic::default(),
    );
    late.event_time_us += 700_000;
    db.writer().insert_usage(&[late]).await.unwrap();
    // (A few times only: the timeline answers while at most 30 s old.)
    let differ = differences(
        &timeline,
        &reading,
        &[
            "2024-05-01T09:20:00Z",
            "2024-05-01T09:58:00Z",
            "2024-05-01T09:58:01Z",
        ],
    )
    .await;
    assert!(
        differ.contains(&"at=2024-05-01T09:58:01Z".to_owned())
            && !differ.contains(&"at=2024-05-01T09:20:00Z".to_owned()),
        "the timeline answers from its refresh: {differ:?}"
    );
    botmeter_query::api::refresh_fleet(&timeline).await.unwrap();
    assert_eq!(
        differences(&timeline, &reading, &TIMES).await,
        Vec::<String>::new()
    );
    let after = report(&timeline, "at=2024-05-01T09:58:01Z").await;
    assert_eq!(
        listed(&after, "cr_3")["last_traffic_at"],
        "2024-05-01T09:58:00.700Z",
        "{after}"
    );
    assert_eq!(listed(&after, "cr_2")["state"], "online", "{after}");
    let before = report(&timeline, "at=2024-05-01T09:58:00Z").await;
    assert_eq!(
        listed(&before, "cr_3")["last_traffic_at"],
        "2024-05-01T09:50:00Z",
        "{before}"
    );
}

/// A timeline whose traffic budget holds less than the fixture's traffic keeps only its latest
/// seconds (and every credential's latest traffic before them): an `at` from there on is answered
/// from memory, an earlier one is read from ClickHouse, and every answer is still exact. With
/// the budget too small even for one checkpoint, the timeline answers only after the last
/// traffic. The fixture's traffic is 4 entries of 12 bytes (credential and second) and a
/// checkpoint of 2 credentials (16 bytes): 40 bytes keep its last 2 entries.
#[tokio::test]
async fn a_timeline_over_its_memory_budget_answers_earlier_times_from_clickhouse() {
    let (db, _) = fleet_state("budget").await;
    let reading = api_state(&db).with_fleet_timeline(false);
    let mut horizons = Vec::new();
    for max_bytes in [40, 1] {
        let timeline = api_state(&db).with_fleet_timeline_max_bytes(max_bytes);
        botmeter_query::api::refresh_fleet(&timeline).await.unwrap();
        let horizon = timeline
            .fleet_timeline_horizon()
            .expect("a timeline was read");
        assert!(
            horizon > 1_714_550_400 && horizon < 1_714_575_600,
            "{max_bytes} bytes: horizon {horizon} is within the fixture's day"
        );
        assert_eq!(
            differences(&timeline, &reading, &TIMES).await,
            Vec::<String>::new(),
            "{max_bytes} bytes: horizon {horizon}"
        );
        horizons.push(horizon);
    }
    assert!(
        horizons[0] < horizons[1],
        "a larger budget keeps more seconds: {horizons:?}"
    );
}
