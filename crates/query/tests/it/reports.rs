//! Real-service tests of the report routes against a local ClickHouse (`scripts/services.sh up`),
//! at `BOTMETER_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`), each in its own database dropped
//! at the end. The fleet is the one of `tests/python/test_reports_chdb.py`, row for row, so the same
//! SQL gives the same numbers on ClickHouse 18.16 here and on current ClickHouse there; this file
//! adds what only the Rust side computes (session-hours per bucket, shares, formats, keys).

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use botmeter_query::api::{
    key_digest, router, ApiKeys, AppState, Plan, SettingsFormat, UsageMetrics, UsageReport,
};
use botmeter_query::rows::{status, ControlRow, UsageRow};
use chrono::DateTime;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::TestDb;

/// A migrated database holding this file's rows.
async fn db_with_fleet(name: &str) -> TestDb {
    let db = TestDb::migrated(&format!("reports_{name}")).await;
    let writer = db.writer();
    writer.insert_usage(&usage_rows()).await.unwrap();
    writer.insert_control(&control_rows()).await.unwrap();
    db
}

pub(crate) fn secs(time: &str) -> u32 {
    let rfc3339 = format!("{}Z", time.replace(' ', "T"));
    u32::try_from(DateTime::parse_from_rfc3339(&rfc3339).unwrap().timestamp()).unwrap()
}

pub(crate) fn us(time: &str) -> i64 {
    i64::from(secs(time)) * 1_000_000
}

#[derive(Default)]
pub(crate) struct Traffic {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) http: bool,
    pub(crate) sign: i8,
    pub(crate) status: &'static str,
    pub(crate) reason: &'static str,
    pub(crate) hostname: &'static str,
    pub(crate) flags: &'static [&'static str],
}

pub(crate) fn usage(
    event_id: &str,
    time: &str,
    endpoint: &str,
    credential: &str,
    owner: &str,
    t: Traffic,
) -> UsageRow {
    UsageRow {
        event_id: event_id.to_owned(),
        event_type: if t.http {
            "http_request_complete.v0"
        } else {
            "tcp_connection_closed.v0"
        }
        .to_owned(),
        event_time: secs(time),
        event_time_us: us(time),
        account_id: "ac_1".to_owned(),
        status: if t.status.is_empty() {
            status::ATTRIBUTED
        } else {
            t.status
        }
        .to_owned(),
        unattributed_reason: t.reason.to_owned(),
        flags: t.flags.iter().map(|f| (*f).to_owned()).collect(),
        owner_id: owner.to_owned(),
        owner_kind: if owner.is_empty() { "" } else { "bot_user" }.to_owned(),
        credential_id: credential.to_owned(),
        credential_kind: "authtoken".to_owned(),
        session_id: String::new(),
        endpoint_id: endpoint.to_owned(),
        hostname: if t.hostname.is_empty() {
            "app.example.com"
        } else {
            t.hostname
        }
        .to_owned(),
        port: 0,
        bytes_in: t.bytes_in,
        bytes_out: t.bytes_out,
        http_requests: u32::from(t.http),
        tcp_connections: u32::from(!t.http && t.status != status::DEAD_LETTER),
        status_code: 0,
        request_body_bytes: 0,
        response_body_bytes: 0,
        kafka_topic: "traffic".to_owned(),
        kafka_partition: 0,
        kafka_offset: 0,
        ingested_at: secs(time),
        sign: if t.sign == 0 { 1 } else { t.sign },
    }
}

/// The USAGE rows of tests/python/test_reports_chdb.py.
fn usage_rows() -> Vec<UsageRow> {
    let tcp = |bytes_in, bytes_out| Traffic {
        bytes_in,
        bytes_out,
        ..Traffic::default()
    };
    vec![
        usage(
            "ev_1",
            "2024-05-01 09:10:00",
            "ep_1",
            "cr_1",
            "bot_a",
            tcp(100, 1000),
        ),
        usage(
            "ev_2",
            "2024-05-01 09:40:00",
            "ep_1",
            "cr_1",
            "bot_a",
            tcp(200, 2000),
        ),
        usage(
            "ev_3",
            "2024-05-01 10:05:00",
            "ep_2",
            "cr_2",
            "bot_a",
            tcp(10, 0),
        ),
        usage(
            "ev_4",
            "2024-05-01 10:20:00",
            "ep_2",
            "cr_2",
            "bot_a",
            Traffic {
                http: true,
                ..Traffic::default()
            },
        ),
        usage(
            "ev_5",
            "2024-05-01 10:50:00",
            "ep_1",
            "cr_1",
            "bot_a",
            tcp(1, 5),
        ),
        usage(
            "ev_6",
            "2024-05-02 00:30:00",
            "ep_2",
            "cr_2",
            "bot_a",
            Traffic {
                flags: &["owner_inactive"],
                ..tcp(7, 70)
            },
        ),
        usage(
            "ev_r",
            "2024-05-01 09:20:00",
            "ep_3",
            "cr_1",
            "bot_a",
            tcp(5000, 5000),
        ),
        usage(
            "ev_r",
            "2024-05-01 09:20:00",
            "ep_3",
            "cr_1",
            "bot_a",
            Traffic {
                sign: -1,
                ..tcp(5000, 5000)
            },
        ),
        usage(
            "ev_b",
            "2024-05-01 09:10:00",
            "ep_9",
            "cr_x",
            "bot_b",
            Traffic {
                flags: &["acl_violation", "owner_inactive"],
                ..tcp(9, 9)
            },
        ),
        usage(
            "ev_u",
            "2024-05-01 09:10:00",
            "",
            "",
            "",
            Traffic {
                status: status::UNATTRIBUTED,
                reason: "no_endpoint",
                hostname: "ghost.example.com",
                ..tcp(0, 9)
            },
        ),
        usage(
            "ev_u2",
            "2024-05-01 09:11:00",
            "",
            "",
            "",
            Traffic {
                status: status::UNATTRIBUTED,
                reason: "unknown_session",
                http: true,
                ..Traffic::default()
            },
        ),
        usage(
            "ev_u3",
            "2024-05-01 09:12:00",
            "",
            "",
            "",
            Traffic {
                status: status::UNATTRIBUTED,
                reason: "no_endpoint",
                hostname: "late.example.com",
                ..tcp(0, 50)
            },
        ),
        usage(
            "ev_u3",
            "2024-05-01 09:12:00",
            "",
            "",
            "",
            Traffic {
                status: status::UNATTRIBUTED,
                reason: "no_endpoint",
                hostname: "late.example.com",
                sign: -1,
                ..tcp(0, 50)
            },
        ),
        usage(
            "ev_d",
            "2024-05-01 09:13:00",
            "",
            "",
            "",
            Traffic {
                status: status::DEAD_LETTER,
                reason: "malformed_json",
                ..Traffic::default()
            },
        ),
        usage(
            "ev_o",
            "2024-05-03 00:00:00",
            "ep_1",
            "cr_1",
            "bot_a",
            tcp(9, 9),
        ),
    ]
}

pub(crate) fn control(
    event_id: &str,
    event_type: &str,
    time: &str,
    object_id: &str,
    object: Value,
    owner_id: &str,
) -> ControlRow {
    ControlRow {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        event_time: secs(time),
        event_time_us: us(time),
        account_id: "ac_1".to_owned(),
        principal_id: String::new(),
        principal_subject: String::new(),
        principal_credential_id: String::new(),
        object_id: object_id.to_owned(),
        owner_id: owner_id.to_owned(),
        // As the pipeline stores it: serde_json's compact text.
        object: object.to_string(),
        kafka_topic: "control".to_owned(),
        kafka_partition: 0,
        kafka_offset: 0,
        ingested_at: secs(time),
        anomalies: Vec::new(),
        source: String::new(),
    }
}

fn by_admin(mut row: ControlRow) -> ControlRow {
    row.principal_id = "usr_admin".to_owned();
    row
}

pub(crate) fn credential(
    event_id: &str,
    event_type: &str,
    time: &str,
    id: &str,
    owner: &str,
    metadata: &str,
) -> ControlRow {
    by_admin(control(
        event_id,
        event_type,
        time,
        id,
        json!({"id": id, "owner_id": owner, "metadata": metadata}),
        owner,
    ))
}

pub(crate) fn bot_user(
    event_id: &str,
    action: &str,
    time: &str,
    id: &str,
    name: &str,
    active: bool,
    metadata: Option<&str>,
) -> ControlRow {
    let mut object = json!({"id": id, "name": name, "active": active});
    if let Some(metadata) = metadata {
        object["metadata"] = json!(metadata);
    }
    by_admin(control(
        event_id,
        &format!("bot_user_{action}.v0"),
        time,
        id,
        object,
        id,
    ))
}

pub(crate) fn session(
    event_id: &str,
    action: &str,
    time: &str,
    id: &str,
    credential: &str,
    started_at: Option<&str>,
) -> ControlRow {
    control(
        event_id,
        &format!("agent_session_{action}.v0"),
        time,
        id,
        json!({"session": {"id": id, "uri": ""}, "credential": {"id": credential, "uri": ""}, "started_at": started_at, "stopped_at": null}),
        "",
    )
}

/// The CONTROL rows of tests/python/test_reports_chdb.py.
fn control_rows() -> Vec<ControlRow> {
    let acme = Some(r#"{"customer":"acme"}"#);
    let mut rejected = credential(
        "ev_c4",
        "tunnel_credential_updated.v0",
        "2024-05-01 08:00:00",
        "cr_1",
        "bot_b",
        "",
    );
    rejected.anomalies = vec!["owner_change_rejected".to_owned()];
    let mut action = control(
        "ev_a1",
        "domain_created.v0",
        "2024-05-01 10:00:00",
        "rd_1",
        json!({"id": "rd_1"}),
        "",
    );
    action.principal_id = "bot_a".to_owned();
    action.principal_credential_id = "ak_1".to_owned();
    let mut mismatch = control(
        "ev_a2",
        "domain_deleted.v0",
        "2024-05-01 11:00:00",
        "rd_1",
        json!({"id": "rd_1"}),
        "",
    );
    mismatch.principal_id = "bot_a".to_owned();
    mismatch.principal_credential_id = "ak_9".to_owned();
    mismatch.anomalies = vec!["api_key_owner_mismatch".to_owned()];
    vec![
        bot_user(
            "ev_b1",
            "created",
            "2024-03-01 00:00:00",
            "bot_a",
            "payments-ci",
            true,
            acme,
        ),
        bot_user(
            "ev_b2",
            "updated",
            "2024-05-01 12:00:00",
            "bot_a",
            "payments-ci-2",
            false,
            acme,
        ),
        bot_user(
            "ev_b3",
            "created",
            "2024-03-02 00:00:00",
            "bot_b",
            "search",
            true,
            None,
        ),
        bot_user(
            "ev_b4",
            "deleted",
            "2024-05-02 00:00:00",
            "bot_b",
            "",
            true,
            None,
        ),
        credential(
            "ev_c1",
            "tunnel_credential_created.v0",
            "2024-04-01 00:00:00",
            "cr_1",
            "bot_a",
            "",
        ),
        credential(
            "ev_c2",
            "ssh_public_key_created.v0",
            "2024-04-01 00:00:00",
            "cr_2",
            "bot_a",
            "",
        ),
        credential(
            "ev_c3",
            "api_key_created.v0",
            "2024-04-01 00:00:00",
            "ak_1",
            "bot_a",
            "",
        ),
        credential(
            "ev_c3x",
            "api_key_deleted.v0",
            "2024-05-02 00:00:00",
            "ak_1",
            "bot_a",
            "",
        ),
        credential(
            "ev_cx",
            "tunnel_credential_created.v0",
            "2024-04-01 00:00:00",
            "cr_x",
            "bot_b",
            r#"{"customer":"acme"}"#,
        ),
        action,
        mismatch,
        rejected,
        session(
            "ev_s1",
            "start",
            "2024-05-01 09:15:00",
            "ts_1",
            "cr_1",
            None,
        ),
        session(
            "ev_s1x",
            "stop",
            "2024-05-01 10:45:00",
            "ts_1",
            "cr_1",
            None,
        ),
        session(
            "ev_s2",
            "start",
            "2024-05-01 23:30:00",
            "ts_2",
            "cr_2",
            None,
        ),
        session(
            "ev_s2x",
            "stop",
            "2024-05-02 01:00:00",
            "ts_2",
            "cr_2",
            None,
        ),
        session(
            "ev_s3",
            "start",
            "2024-05-02 23:00:00",
            "ts_3",
            "cr_1",
            None,
        ),
        session(
            "ev_s4",
            "start",
            "2024-04-30 23:00:00",
            "ts_old",
            "cr_1",
            None,
        ),
        session(
            "ev_s4x",
            "stop",
            "2024-05-01 00:30:00",
            "ts_old",
            "cr_1",
            None,
        ),
        session(
            "ev_s5x",
            "stop",
            "2024-05-01 12:00:00",
            "ts_stoponly",
            "cr_2",
            Some("2024-05-01T11:00:00Z"),
        ),
        session(
            "ev_s6",
            "start",
            "2024-04-20 00:00:00",
            "ts_gone",
            "cr_1",
            None,
        ),
        session(
            "ev_s6x",
            "stop",
            "2024-04-20 01:00:00",
            "ts_gone",
            "cr_1",
            None,
        ),
        session(
            "ev_s7",
            "start",
            "2024-05-01 09:00:00",
            "ts_b",
            "cr_x",
            None,
        ),
        session(
            "ev_s8",
            "start",
            "2024-05-03 00:00:00",
            "ts_late",
            "cr_1",
            None,
        ),
    ]
}

pub(crate) async fn get(
    state: &AppState,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, content_type, body.to_vec())
}

pub(crate) async fn get_json(state: &AppState, uri: &str) -> Value {
    let (status, _, body) = get(state, uri, &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// (bytes_in, bytes_out, http_requests, tcp_connections, endpoints, active_endpoint_hours,
/// agent_sessions, session_hours)
type Row = (u64, u64, u64, u64, u64, u64, u64, f64);

fn row(m: &UsageMetrics) -> Row {
    (
        m.bytes_in,
        m.bytes_out,
        m.http_requests,
        m.tcp_connections,
        m.endpoints,
        m.active_endpoint_hours,
        m.agent_sessions.unwrap(),
        m.session_hours.unwrap(),
    )
}

/// Buckets with traffic and session-only buckets, merged in order (one time zone offset per
/// test, so the RFC 3339 text sorts in time order).
fn buckets(report: &UsageReport) -> Vec<(&str, Row)> {
    for bucket in &report.session_only_buckets {
        let m = &bucket.metrics;
        assert_eq!(
            (
                m.bytes_in,
                m.bytes_out,
                m.http_requests,
                m.tcp_connections,
                m.endpoints
            ),
            (0, 0, 0, 0, 0)
        );
    }
    let mut all: Vec<(&str, Row)> = report
        .buckets
        .iter()
        .chain(&report.session_only_buckets)
        .map(|b| (b.start.as_str(), row(&b.metrics)))
        .collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    all
}

const RANGE: &str = "from=2024-05-01&to=2024-05-03";

#[tokio::test]
async fn owner_usage_hourly_with_sessions_across_hour_boundaries() {
    let db = db_with_fleet("hourly").await;
    let report: UsageReport = serde_json::from_value(
        get_json(&db.state(), &format!("/v1/owners/bot_a/usage?{RANGE}")).await,
    )
    .unwrap();
    assert_eq!(
        buckets(&report),
        [
            // ts_old, started before `from`: only its half hour after `from`.
            ("2024-05-01T00:00:00Z", (0, 0, 0, 0, 0, 0, 1, 0.5)),
            // ts_1 runs 09:15–10:45: three quarters of each hour. ep_3's restated pair is nothing.
            ("2024-05-01T09:00:00Z", (300, 3000, 0, 2, 1, 1, 1, 0.75)),
            // ep_2 has traffic but no bytes out: an endpoint, not an active endpoint hour.
            ("2024-05-01T10:00:00Z", (11, 5, 1, 2, 2, 1, 1, 0.75)),
            // ts_stoponly: its start comes from started_at.
            ("2024-05-01T11:00:00Z", (0, 0, 0, 0, 0, 0, 1, 1.0)),
            ("2024-05-01T23:00:00Z", (0, 0, 0, 0, 0, 0, 1, 0.5)),
            ("2024-05-02T00:00:00Z", (7, 70, 0, 1, 1, 1, 1, 1.0)),
            // ts_3 has not stopped: it runs to `to`.
            ("2024-05-02T23:00:00Z", (0, 0, 0, 0, 0, 0, 1, 1.0)),
        ]
    );
    assert_eq!(row(&report.totals), (318, 3075, 1, 5, 2, 3, 5, 5.5));
    assert_eq!(
        (report.granularity.as_str(), report.timezone.as_str()),
        ("hour", "UTC")
    );
    // `buckets` still lists exactly the hours with traffic, as before sessions were reported.
    let traffic: Vec<&str> = report.buckets.iter().map(|b| b.start.as_str()).collect();
    assert_eq!(
        traffic,
        [
            "2024-05-01T09:00:00Z",
            "2024-05-01T10:00:00Z",
            "2024-05-02T00:00:00Z"
        ]
    );
    assert_eq!(report.session_only_buckets.len(), 4);
}

#[tokio::test]
async fn owner_usage_in_a_half_hour_time_zone() {
    let db = db_with_fleet("kolkata").await;
    let uri = format!("/v1/owners/bot_a/usage?{RANGE}&timezone=Asia/Kolkata");
    let report: UsageReport = serde_json::from_value(get_json(&db.state(), &uri).await).unwrap();
    assert_eq!(
        buckets(&report),
        [
            ("2024-05-01T05:00:00+05:30", (0, 0, 0, 0, 0, 0, 1, 0.5)),
            (
                "2024-05-01T14:00:00+05:30",
                (100, 1000, 0, 1, 1, 1, 1, 0.25)
            ),
            ("2024-05-01T15:00:00+05:30", (210, 2000, 1, 2, 2, 1, 1, 1.0)),
            ("2024-05-01T16:00:00+05:30", (1, 5, 0, 1, 1, 1, 2, 0.75)),
            ("2024-05-01T17:00:00+05:30", (0, 0, 0, 0, 0, 0, 1, 0.5)),
            ("2024-05-02T05:00:00+05:30", (0, 0, 0, 0, 0, 0, 1, 1.0)),
            ("2024-05-02T06:00:00+05:30", (7, 70, 0, 1, 1, 1, 1, 0.5)),
            ("2024-05-03T04:00:00+05:30", (0, 0, 0, 0, 0, 0, 1, 0.5)),
            ("2024-05-03T05:00:00+05:30", (0, 0, 0, 0, 0, 0, 1, 0.5)),
        ]
    );
    // ep_1 is active in three local hours (two UTC hours).
    assert_eq!(row(&report.totals), (318, 3075, 1, 5, 2, 4, 5, 5.5));

    let uri = format!("/v1/owners/bot_a/usage?{RANGE}&timezone=Asia/Kolkata&granularity=day");
    let report: UsageReport = serde_json::from_value(get_json(&db.state(), &uri).await).unwrap();
    assert_eq!(
        buckets(&report),
        [
            ("2024-05-01T00:00:00+05:30", (311, 3005, 1, 4, 2, 3, 3, 3.0)),
            ("2024-05-02T00:00:00+05:30", (7, 70, 0, 1, 1, 1, 1, 1.5)),
            ("2024-05-03T00:00:00+05:30", (0, 0, 0, 0, 0, 0, 1, 1.0)),
        ]
    );
    let uri = format!("/v1/owners/bot_a/usage?{RANGE}&timezone=America/New_York&granularity=month");
    let report: UsageReport = serde_json::from_value(get_json(&db.state(), &uri).await).unwrap();
    assert_eq!(
        buckets(&report),
        [
            // ts_old's half hour is April 30 in New York.
            ("2024-04-01T00:00:00-04:00", (0, 0, 0, 0, 0, 0, 1, 0.5)),
            ("2024-05-01T00:00:00-04:00", (318, 3075, 1, 5, 2, 3, 4, 5.0)),
        ]
    );
}

#[tokio::test]
async fn owner_usage_grouped_by_credential_and_endpoint() {
    let db = db_with_fleet("grouped").await;
    let uri = format!("/v1/owners/bot_a/usage?{RANGE}&granularity=day&group_by=credential");
    let report: UsageReport = serde_json::from_value(get_json(&db.state(), &uri).await).unwrap();
    let groups = report.groups.unwrap();
    let totals: Vec<(&str, Row)> = groups
        .iter()
        .map(|g| (g.key.as_str(), row(&g.totals)))
        .collect();
    assert_eq!(
        totals,
        [
            ("cr_1", (301, 3005, 0, 3, 1, 2, 3, 3.0)),
            ("cr_2", (17, 70, 1, 2, 1, 1, 2, 2.5)),
        ]
    );
    assert_eq!(groups[1].buckets.len(), 2);

    let uri = format!("/v1/owners/bot_a/usage?{RANGE}&granularity=day&group_by=endpoint");
    let json = get_json(&db.state(), &uri).await;
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(
        groups
            .iter()
            .map(|g| g["key"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["ep_1", "ep_2"]
    );
    assert_eq!(groups[1]["totals"]["bytes_out"], 70);
    // A session serves several endpoints: no session figures per endpoint.
    assert!(groups[1]["totals"].get("session_hours").is_none());
    assert_eq!(json["totals"]["session_hours"], 5.5);
}

#[tokio::test]
async fn owners_top_anomalies_and_audit() {
    let db = db_with_fleet("lists").await;
    let state = db.state();
    let owners = get_json(&state, &format!("/v1/owners?{RANGE}")).await;
    let owners = owners["owners"].as_array().unwrap();
    let ids: Vec<&str> = owners.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bot_a", "bot_b", "usr_admin"]);
    let bot_a = &owners[0];
    assert_eq!(bot_a["name"], "payments-ci-2");
    assert_eq!(bot_a["active"], false);
    assert_eq!(
        bot_a["credentials"],
        json!({"authtoken": 1, "ssh_key": 1, "api_key": 0})
    );
    assert_eq!(bot_a["deleted_credentials"], 1);
    assert_eq!(bot_a["usage"]["bytes_out"], 3075);
    assert_eq!(bot_a["usage"]["active_endpoint_hours"], 3);
    assert_eq!(
        (
            owners[1]["deleted"].clone(),
            owners[1]["usage"]["bytes_in"].clone()
        ),
        (json!(true), json!(9))
    );
    // Deleting bot_b revoked cr_x, though no deletion of cr_x came: no live credential left.
    assert_eq!(
        (
            owners[1]["credentials"].clone(),
            owners[1]["deleted_credentials"].clone()
        ),
        (
            json!({"authtoken": 0, "ssh_key": 0, "api_key": 0}),
            json!(1)
        )
    );
    assert_eq!(
        (owners[2]["kind"].clone(), owners[2]["active"].clone()),
        (json!("user"), json!(true))
    );
    assert!(get_json(&state, "/v1/owners").await["owners"][0]
        .get("usage")
        .is_none());

    let top = get_json(
        &state,
        &format!("/v1/usage/top?{RANGE}&metric=bytes_in&limit=1"),
    )
    .await;
    assert_eq!(top["owners"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            top["owners"][0]["owner_id"].clone(),
            top["owners"][0]["usage"]["bytes_in"].clone()
        ),
        (json!("bot_a"), json!(318))
    );
    let top = get_json(&state, &format!("/v1/usage/top?{RANGE}")).await;
    assert_eq!(top["metric"], "bytes_out");
    assert_eq!(top["owners"][1]["rank"], 2);

    let anomalies = get_json(&state, &format!("/v1/anomalies?{RANGE}")).await;
    assert_eq!(
        anomalies["flagged"],
        json!([
            {"flag": "acl_violation", "owner_id": "bot_b", "events": 1, "bytes_in": 9, "bytes_out": 9, "http_requests": 0, "tcp_connections": 1},
            {"flag": "owner_inactive", "owner_id": "bot_a", "events": 1, "bytes_in": 7, "bytes_out": 70, "http_requests": 0, "tcp_connections": 1},
            {"flag": "owner_inactive", "owner_id": "bot_b", "events": 1, "bytes_in": 9, "bytes_out": 9, "http_requests": 0, "tcp_connections": 1},
        ])
    );
    assert_eq!(
        anomalies["unattributed"],
        json!([
            {"reason": "no_endpoint", "hostname": "ghost.example.com", "events": 1, "bytes_in": 0, "bytes_out": 9, "http_requests": 0, "tcp_connections": 1},
            {"reason": "unknown_session", "events": 1, "bytes_in": 0, "bytes_out": 0, "http_requests": 1, "tcp_connections": 0},
        ])
    );
    assert_eq!(anomalies["dead_letters"][0]["reason"], "malformed_json");
    let control: Vec<(&str, &str)> = anomalies["control"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap(),
                a["anomaly"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        control,
        [
            ("ev_a2", "api_key_owner_mismatch"),
            ("ev_c4", "owner_change_rejected")
        ]
    );

    let audit = get_json(&state, "/v1/audit?owner_id=bot_a").await;
    let lifecycle: Vec<(&str, &str)> = audit["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lifecycle,
        [
            ("ev_b1", "created"),
            ("ev_c1", "created"),
            ("ev_c2", "created"),
            ("ev_c3", "created"),
            ("ev_c4", "owner_change_rejected"),
            ("ev_b2", "deactivated"),
            ("ev_c3x", "deleted"),
        ]
    );
    let actions = audit["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2);
    assert_eq!(
        (
            actions[0]["principal_credential_id"].clone(),
            actions[1]["anomalies"].clone()
        ),
        (json!("ak_1"), json!(["api_key_owner_mismatch"]))
    );
    assert_eq!(
        audit["credentials"],
        json!([
            {"credential_id": "ak_1", "kind": "api_key", "owner_id": "bot_a", "created_at": "2024-04-01T00:00:00Z",
             "deleted_at": "2024-05-02T00:00:00Z", "events": 0},
            {"credential_id": "cr_1", "kind": "authtoken", "owner_id": "bot_a", "created_at": "2024-04-01T00:00:00Z",
             "first_used_at": "2024-05-01T09:10:00Z", "last_used_at": "2024-05-03T00:00:00Z", "events": 4},
            {"credential_id": "cr_2", "kind": "ssh_key", "owner_id": "bot_a", "created_at": "2024-04-01T00:00:00Z",
             "first_used_at": "2024-05-01T10:05:00Z", "last_used_at": "2024-05-02T00:30:00Z", "events": 3},
        ])
    );
    // The owner's deletion is in the trail of each credential it revoked.
    let audit = get_json(&state, "/v1/audit?owner_id=bot_b").await;
    let revoked: Vec<(&str, &str, &str, &str)> = audit["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_id"] == "ev_b4")
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["object_id"].as_str().unwrap(),
                e["event_type"].as_str().unwrap(),
                e["time"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revoked,
        [
            (
                "deleted",
                "bot_b",
                "bot_user_deleted.v0",
                "2024-05-02T00:00:00Z"
            ),
            (
                "revoked_with_owner",
                "cr_x",
                "bot_user_deleted.v0",
                "2024-05-02T00:00:00Z"
            ),
        ]
    );
    assert_eq!(
        audit["credentials"][0]["deleted_at"],
        "2024-05-02T00:00:00Z"
    );
    let audit = get_json(&state, "/v1/audit?credential_id=cr_x").await;
    let actions: Vec<&str> = audit["lifecycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "revoked_with_owner"]);
    let audit = get_json(&state, &format!("/v1/audit?credential_id=ak_1&{RANGE}")).await;
    let ids = |key: &str| -> Vec<String> {
        audit[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        (ids("lifecycle"), ids("actions")),
        (vec!["ev_c3x".to_owned()], vec!["ev_a1".to_owned()])
    );
}

fn plan() -> Plan {
    Plan::parse(
        Path::new("plan.toml"),
        "name = \"pro\"\n\
         [metrics.bytes_out]\nincluded = 3000\nunit = 10\nprice_per_unit = 1.0\n\
         [metrics.active_endpoint_hours]\nincluded = 2\nprice_per_unit = 0.5\n\
         [metrics.session_hours]\nincluded = 2000\nprice_per_unit = 0.1\n",
        SettingsFormat::Toml,
    )
    .unwrap()
}

fn close(a: &Value, b: f64) -> bool {
    (a.as_f64().unwrap() - b).abs() < 1e-6
}

#[tokio::test]
async fn overage_shares_and_drill_down() {
    let db = db_with_fleet("overage").await;
    let state = db.state().with_plan(plan());
    let report = get_json(&state, "/v1/overage?month=2024-05").await;
    let metrics = report["metrics"].as_array().unwrap();
    // May: bot_a 3084 + bot_b 9 bytes out; endpoint hours 4 + 1; open sessions run to June 1.
    let lines: Vec<(&str, f64, f64)> = metrics
        .iter()
        .map(|m| {
            (
                m["metric"].as_str().unwrap(),
                m["usage"].as_f64().unwrap(),
                m["amount"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("bytes_out", 3093.0, 9.3),
            ("active_endpoint_hours", 5.0, 1.5),
            ("session_hours", 2132.5, 13.25)
        ]
    );
    assert!(close(&report["total_amount"], 24.05));
    let owners = report["owners"].as_array().unwrap();
    assert_eq!(owners[0]["owner_id"], "bot_a");
    let bot_a = 9.3 * 3084.0 / 3093.0 + 1.5 * 4.0 / 5.0 + 13.25 * 1397.5 / 2132.5;
    let bot_b = 9.3 * 9.0 / 3093.0 + 1.5 / 5.0 + 13.25 * 735.0 / 2132.5;
    assert!(
        close(&owners[0]["amount"], bot_a),
        "{}",
        owners[0]["amount"]
    );
    assert!(
        close(&owners[1]["amount"], bot_b),
        "{}",
        owners[1]["amount"]
    );
    assert!(close(&owners[0]["share"]["active_endpoint_hours"], 0.8));

    let report = get_json(&state, "/v1/overage?month=2024-05&owner_id=bot_a").await;
    let owners = report["owners"].as_array().unwrap();
    assert_eq!(owners.len(), 1);
    let credentials = owners[0]["credentials"].as_array().unwrap();
    let summary: Vec<(&str, f64, f64, Vec<&str>)> = credentials
        .iter()
        .map(|c| {
            (
                c["credential_id"].as_str().unwrap(),
                c["usage"]["bytes_out"].as_f64().unwrap(),
                c["usage"]["session_hours"].as_f64().unwrap(),
                c["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["endpoint_id"].as_str().unwrap())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("cr_1", 3014.0, 1395.0, vec!["ep_1"]),
            ("cr_2", 70.0, 2.5, vec!["ep_2"])
        ]
    );
    let sum: f64 = credentials
        .iter()
        .map(|c| c["amount"].as_f64().unwrap())
        .sum();
    assert!((sum - bot_a).abs() < 1e-5, "{sum} vs {bot_a}");
    assert_eq!(
        credentials[0]["endpoints"][0]["usage"]["active_endpoint_hours"],
        3.0
    );
}

fn keys() -> ApiKeys {
    let text = format!(
        "[[keys]]\nname = \"acme\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n\
         [[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        key_digest("acme-secret"),
        key_digest("ops-secret")
    );
    ApiKeys::parse(Path::new("keys.toml"), &text, SettingsFormat::Toml).unwrap()
}

#[tokio::test]
async fn customer_report_in_json_csv_and_html_behind_keys() {
    let db = db_with_fleet("customers").await;
    let state = db
        .state()
        .with_customer_metadata_key("customer")
        .unwrap()
        .with_api_keys(keys());
    let acme = [("authorization", "Bearer acme-secret")];

    let (status, _, body) = get(&state, "/v1/customers/acme/report?month=2024-05", &acme).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let report: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        report["bot_users"],
        json!([{"id": "bot_a", "name": "payments-ci-2", "active": false, "deleted": false}])
    );
    let credentials: Vec<(&str, i64)> = report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["credential_id"].as_str().unwrap(),
                c["age_days"].as_i64().unwrap(),
            )
        })
        .collect();
    // bot_a's credentials, not cr_x: its metadata names acme, but bot_b owns it. Ages to the end
    // of May (ak_1: to its deletion).
    assert_eq!(credentials, [("ak_1", 31), ("cr_1", 61), ("cr_2", 61)]);
    let t = &report["totals"];
    assert_eq!(
        (
            t["bytes_in"].clone(),
            t["bytes_out"].clone(),
            t["tcp_connections"].clone(),
            t["endpoints"].clone(),
            t["active_endpoint_hours"].clone()
        ),
        (json!(327), json!(3084), json!(6), json!(2), json!(4))
    );
    assert_eq!(
        (t["agent_sessions"].clone(), t["session_hours"].clone()),
        (json!(6), json!(1397.5))
    );
    assert_eq!(report["days"][0]["start"], "2024-05-01T00:00:00Z");

    let (status, content_type, body) = get(
        &state,
        "/v1/customers/acme/report?month=2024-05",
        &[acme[0], ("accept", "text/csv")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let csv = String::from_utf8(body).unwrap();
    assert_eq!(csv.lines().count(), 1 + 31 + 1);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("2024-05-02,7,70,0,1,1,1,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .last()
            .unwrap()
            .starts_with("total,327,3084,1,6,2,4,6,1397.5"),
        "{csv}"
    );

    let (status, content_type, body) = get(
        &state,
        "/v1/customers/acme/report?month=2024-05&format=html",
        &acme,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = String::from_utf8(body).unwrap();
    assert_eq!(page.matches("<rect class=\"bar\"").count(), 31);
    assert!(page.contains("<code>cr_1</code>") && page.contains("payments-ci-2"));
    assert!(!page.contains("cr_x"));

    // The customer key sees its bot users' usage, nothing else.
    let (status, _, _) = get(&state, &format!("/v1/owners/bot_a/usage?{RANGE}"), &acme).await;
    assert_eq!(status, StatusCode::OK);
    for (uri, expected) in [
        (
            format!("/v1/owners/bot_b/usage?{RANGE}"),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v1/customers/globex/report?month=2024-05".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (format!("/v1/usage/top?{RANGE}"), StatusCode::FORBIDDEN),
    ] {
        let (status, content_type, body) = get(&state, &uri, &acme).await;
        assert_eq!(
            status,
            expected,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(content_type.starts_with("application/json"));
    }
    let (status, _, _) = get(&state, "/v1/customers/acme/report?month=2024-05", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An admin sees any customer; one nobody names is 404.
    let ops = [("authorization", "Bearer ops-secret")];
    let (status, _, _) = get(&state, "/v1/customers/bot_b/report?month=2024-05", &ops).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = get(&state, "/v1/customers/globex/report?month=2024-05", &ops).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn bad_input_never_reaches_clickhouse_as_sql() {
    let db = db_with_fleet("injection").await;
    let state = db.state();
    for uri in [
        "/v1/owners/bot_a%27%20OR%201=1/usage?from=2024-05-01&to=2024-05-03",
        "/v1/owners/bot_a/usage?from=2024-05-01&to=2024-05-03&timezone=UTC%27)%20--",
        "/v1/audit?owner_id=bot_a%27",
        "/v1/customers/acme%27/report?month=2024-05",
    ] {
        let (status, _, body) = get(&state, uri, &[]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // A valid id that matches nothing is an empty report, not an error.
    let report = get_json(
        &state,
        "/v1/owners/bot_nobody/usage?from=2024-05-01&to=2024-05-03",
    )
    .await;
    assert_eq!(report["buckets"], json!([]));
}
