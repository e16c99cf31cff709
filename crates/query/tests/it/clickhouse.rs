//! Real-service tests against a local ClickHouse (`scripts/services.sh up`), at
//! `BOTMETER_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`). Each test works in its own database,
//! `botmeter_test_<name>_<pid>`, dropped at the end even when the test fails, so tests run in parallel
//! and leave nothing behind. They run on ClickHouse 18.16 as well as on current versions.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use botmeter_query::api::{router, AppState, UsageBucket, UsageMetrics, UsageReport};
use botmeter_query::rows::{status, ControlRow, DeadLetterRow, UsageRow};
use botmeter_query::{migrate, ClickHouseConfig, Error};
use chrono::DateTime;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::common::{self, clickhouse_url, TestDb};

fn secs(rfc3339: &str) -> u32 {
    u32::try_from(DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp()).unwrap()
}

fn usage_row(event_id: &str, time: &str, owner_id: &str, offset: i64) -> UsageRow {
    let event_time = secs(time);
    UsageRow {
        event_id: event_id.to_owned(),
        event_type: "tcp_connection_closed.v0".to_owned(),
        event_time,
        event_time_us: i64::from(event_time) * 1_000_000 + 123_456,
        account_id: "ac_1".to_owned(),
        status: status::ATTRIBUTED.to_owned(),
        unattributed_reason: String::new(),
        flags: Vec::new(),
        owner_id: owner_id.to_owned(),
        owner_kind: "bot_user".to_owned(),
        credential_id: "cr_1".to_owned(),
        credential_kind: "authtoken".to_owned(),
        session_id: "ts_1".to_owned(),
        endpoint_id: "ep_1".to_owned(),
        hostname: "app.example.com".to_owned(),
        port: 0,
        bytes_in: 0,
        bytes_out: 0,
        http_requests: 0,
        tcp_connections: 0,
        status_code: 0,
        request_body_bytes: 0,
        response_body_bytes: 0,
        kafka_topic: "traffic".to_owned(),
        kafka_partition: 0,
        kafka_offset: offset,
        ingested_at: event_time + 5,
        sign: 1,
    }
}

fn control_row(offset: i64) -> ControlRow {
    ControlRow {
        event_id: "ev_control_1".to_owned(),
        event_type: "tunnel_credential_created.v0".to_owned(),
        event_time: secs("2024-05-01T09:00:01Z"),
        event_time_us: i64::from(secs("2024-05-01T09:00:01Z")) * 1_000_000 + 42,
        account_id: "ac_1".to_owned(),
        principal_id: "usr_admin".to_owned(),
        principal_subject: "admin@example.com".to_owned(),
        principal_credential_id: "ak_7".to_owned(),
        object_id: "cr_1".to_owned(),
        owner_id: "bot_a".to_owned(),
        object: r#"{"id":"cr_1","owner_id":"bot_a","acl":["bind:*.example.com"]}"#.to_owned(),
        kafka_topic: "control".to_owned(),
        kafka_partition: 0,
        kafka_offset: offset,
        ingested_at: secs("2024-05-01T09:00:02Z"),
        anomalies: vec!["api_key_owner_mismatch".to_owned()],
        source: String::new(),
    }
}

fn dead_letter(topic: &str, partition: i32, offset: i64, payload: &[u8]) -> DeadLetterRow {
    DeadLetterRow {
        kafka_topic: topic.to_owned(),
        kafka_partition: partition,
        kafka_offset: offset,
        reason_kind: "malformed_json".to_owned(),
        reason: "offset 3: expected value at line 1 column 1, found \"\\xff\"".to_owned(),
        payload: payload.to_vec(),
        payload_bytes: payload.len() as u64,
        received_at: secs("2024-05-01T09:30:00Z"),
    }
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct MigrationRecord {
    version: u32,
    name: String,
    checksum: String,
    applied_at: u32,
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_edited_history() {
    let db = TestDb::new("migrations").await;

    let first = migrate(&db.config).await.unwrap();
    assert_eq!(first.database, db.config.database);
    assert!(!first.server_version.is_empty());
    let versions: Vec<u32> = first.applied.iter().map(|m| m.version).collect();
    let embedded: Vec<u32> = botmeter_query::migrate::migrations()
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(versions, embedded);
    assert_eq!(versions[..5], [1, 2, 3, 4, 5]);
    assert_eq!(first.applied[0].name, "initial");
    assert_eq!(first.applied[0].statements, 3);
    assert!(first.already_applied.is_empty());

    let second = migrate(&db.config).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.already_applied, embedded);

    let tables = db
        .client()
        .query("SELECT name FROM system.tables WHERE database = ? ORDER BY name")
        .bind(db.config.database.as_str())
        .fetch_all::<String>()
        .await
        .unwrap();
    assert_eq!(
        tables,
        [
            "alerts",
            "control_events",
            "control_events_log",
            "dead_letters",
            "fleet_credentials",
            "fleet_credentials_mv",
            "fleet_endpoints",
            "fleet_endpoints_mv",
            "fleet_sessions",
            "fleet_sessions_mv",
            "fleet_traffic",
            "fleet_traffic_mv",
            "fleet_traffic_seconds",
            "fleet_traffic_seconds_mv",
            "schema_migrations",
            "usage_alert_evidence",
            "usage_alert_evidence_mv",
            "usage_events",
            "usage_rollup",
            "usage_rollup_daily",
            "usage_rollup_daily_mv",
            "usage_rollup_hourly",
            "usage_rollup_hourly_mv",
            "usage_rollup_mv"
        ]
    );

    let recorded = db
        .client()
        .query("SELECT ?fields FROM schema_migrations ORDER BY version")
        .fetch_all::<MigrationRecord>()
        .await
        .unwrap();
    assert_eq!(recorded.len(), embedded.len());
    let expected_checksum = botmeter_query::migrate::migrations().unwrap()[0].checksum();
    assert_eq!(recorded[0].checksum, expected_checksum);
    assert_eq!(
        (recorded[0].version, recorded[0].name.as_str()),
        (1, "initial")
    );

    // Record version 1 with another checksum, as if the file had been edited after applying it.
    let mut insert = db
        .client()
        .insert::<MigrationRecord>("schema_migrations")
        .await
        .unwrap();
    insert
        .write(&MigrationRecord {
            version: 1,
            name: "initial".to_owned(),
            checksum: "0".repeat(64),
            applied_at: secs("2024-01-01T00:00:00Z"),
        })
        .await
        .unwrap();
    insert.end().await.unwrap();
    let err = migrate(&db.config).await.unwrap_err();
    assert!(
        matches!(err, Error::MigrationChanged { version: 1, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("migration 0001 (initial)"),
        "{err}"
    );
}

#[tokio::test]
async fn rows_round_trip_field_by_field() {
    let db = TestDb::migrated("roundtrip").await;
    let writer = db.writer();

    let mut usage = usage_row("ev_usage_1", "2024-05-01T10:15:00Z", "bot_a", 77);
    usage.flags = vec!["credential_deleted".to_owned(), "acl_denied".to_owned()];
    usage.port = 20002;
    usage.bytes_in = 1_234_567_890_123;
    usage.bytes_out = 42;
    usage.http_requests = 3;
    usage.tcp_connections = 4;
    usage.status_code = 503;
    usage.request_body_bytes = 11;
    usage.response_body_bytes = 12;
    usage.kafka_partition = 5;
    usage.event_time_us = -1; // any Int64, independent of event_time
                              // Synthesized by `botmeter sync`: the source column (migration 0012) round-trips.
    let control = ControlRow {
        source: "botmeter-sync".to_owned(),
        ..control_row(9)
    };
    // Not UTF-8: the payload column is a String holding raw bytes.
    let payload: &[u8] = &[0xff, 0x00, 0xfe, b'{', 0x80, b'\n'];
    let dead = dead_letter("traffic", 2, 13, payload);

    writer
        .insert_usage(std::slice::from_ref(&usage))
        .await
        .unwrap();
    writer
        .insert_control(std::slice::from_ref(&control))
        .await
        .unwrap();
    writer
        .insert_dead_letters(std::slice::from_ref(&dead))
        .await
        .unwrap();
    // Empty batches send nothing and succeed.
    writer.insert_usage::<UsageRow>(&[]).await.unwrap();
    // The control history reads back exactly what was written (the state is rebuilt from it).
    assert_eq!(
        db.reader()
            .control_history(&control.kafka_topic)
            .await
            .unwrap(),
        vec![control.clone()]
    );
    assert!(db
        .reader()
        .control_history("another-topic")
        .await
        .unwrap()
        .is_empty());

    let client = db.client();
    let got = client
        .query("SELECT ?fields FROM usage_events")
        .fetch_all::<UsageRow>()
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.event_id, usage.event_id);
    assert_eq!(got.event_type, usage.event_type);
    assert_eq!(got.event_time, usage.event_time);
    assert_eq!(got.event_time_us, usage.event_time_us);
    assert_eq!(got.account_id, usage.account_id);
    assert_eq!(got.status, usage.status);
    assert_eq!(got.unattributed_reason, usage.unattributed_reason);
    assert_eq!(got.flags, usage.flags);
    assert_eq!(got.owner_id, usage.owner_id);
    assert_eq!(got.owner_kind, usage.owner_kind);
    assert_eq!(got.credential_id, usage.credential_id);
    assert_eq!(got.credential_kind, usage.credential_kind);
    assert_eq!(got.session_id, usage.session_id);
    assert_eq!(got.endpoint_id, usage.endpoint_id);
    assert_eq!(got.hostname, usage.hostname);
    assert_eq!(got.port, usage.port);
    assert_eq!(got.bytes_in, usage.bytes_in);
    assert_eq!(got.sign, usage.sign);
    assert_eq!(got.bytes_out, usage.bytes_out);
    assert_eq!(got.http_requests, usage.http_requests);
    assert_eq!(got.tcp_connections, usage.tcp_connections);
    assert_eq!(got.status_code, usage.status_code);
    assert_eq!(got.request_body_bytes, usage.request_body_bytes);
    assert_eq!(got.response_body_bytes, usage.response_body_bytes);
    assert_eq!(got.kafka_topic, usage.kafka_topic);
    assert_eq!(got.kafka_partition, usage.kafka_partition);
    assert_eq!(got.kafka_offset, usage.kafka_offset);
    assert_eq!(got.ingested_at, usage.ingested_at);
    assert_eq!(*got, usage);

    // The server agrees on what the positional bytes meant, column by column.
    #[derive(Debug, Row, Deserialize)]
    struct UsageText {
        event_time: String,
        flags: String,
        port: u16,
        bytes_in: u64,
        kafka_offset: i64,
    }
    let text = client
        .query(
            "SELECT toString(event_time), toString(flags), port, bytes_in, kafka_offset \
             FROM usage_events",
        )
        .fetch_one::<UsageText>()
        .await
        .unwrap();
    assert_eq!(text.event_time, "2024-05-01 10:15:00");
    assert_eq!(text.flags, "['credential_deleted','acl_denied']");
    assert_eq!(
        (text.port, text.bytes_in, text.kafka_offset),
        (20002, 1_234_567_890_123, 77)
    );

    let got = client
        .query("SELECT ?fields FROM control_events")
        .fetch_all::<ControlRow>()
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.event_id, control.event_id);
    assert_eq!(got.event_type, control.event_type);
    assert_eq!(got.event_time, control.event_time);
    assert_eq!(got.event_time_us, control.event_time_us);
    assert_eq!(got.account_id, control.account_id);
    assert_eq!(got.principal_id, control.principal_id);
    assert_eq!(got.principal_subject, control.principal_subject);
    assert_eq!(got.principal_credential_id, control.principal_credential_id);
    assert_eq!(got.object_id, control.object_id);
    assert_eq!(got.owner_id, control.owner_id);
    assert_eq!(got.object, control.object);
    assert_eq!(got.kafka_topic, control.kafka_topic);
    assert_eq!(got.kafka_partition, control.kafka_partition);
    assert_eq!(got.kafka_offset, control.kafka_offset);
    assert_eq!(got.ingested_at, control.ingested_at);
    assert_eq!(got.source, "botmeter-sync");
    assert_eq!(*got, control);

    let got = client
        .query("SELECT ?fields FROM dead_letters")
        .fetch_all::<DeadLetterRow>()
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.kafka_topic, dead.kafka_topic);
    assert_eq!(got.kafka_partition, dead.kafka_partition);
    assert_eq!(got.kafka_offset, dead.kafka_offset);
    assert_eq!(got.reason_kind, dead.reason_kind);
    assert_eq!(got.reason, dead.reason);
    assert_eq!(got.payload, payload);
    assert_eq!(got.payload_bytes, dead.payload_bytes);
    assert_eq!(got.received_at, dead.received_at);
    assert_eq!(*got, dead);

    let stored = client
        .query("SELECT hex(payload), length(payload) FROM dead_letters")
        .fetch_one::<(String, u64)>()
        .await
        .unwrap();
    assert_eq!(stored, ("FF00FE7B800A".to_owned(), 6));
}

#[tokio::test]
async fn writer_works_again_after_a_failed_insert() {
    let db = TestDb::new("writer_retry").await;
    let writer = db.writer();
    let row = usage_row("ev_1", "2024-05-01T10:00:00Z", "bot_a", 1);

    // No database yet: the insert fails, cleanly.
    let err = writer
        .insert_usage(std::slice::from_ref(&row))
        .await
        .unwrap_err();
    assert!(err.is_clickhouse(), "{err:?}");
    assert!(
        err.to_string().contains("insert 1 rows into usage_events"),
        "{err}"
    );

    migrate(&db.config).await.unwrap();
    writer
        .insert_usage(std::slice::from_ref(&row))
        .await
        .unwrap();
    writer
        .insert_usage(std::slice::from_ref(&row))
        .await
        .unwrap();
    let count = db
        .client()
        .query("SELECT count() FROM usage_events")
        .fetch_one::<u64>()
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn positions_are_max_offsets_per_partition_across_tables() {
    let db = TestDb::migrated("positions").await;
    let writer = db.writer();

    assert_eq!(
        db.reader().positions("traffic").await.unwrap(),
        HashMap::new()
    );

    let at = |offset: i64, partition: i32| {
        let mut row = usage_row(
            &format!("ev_{offset}"),
            "2024-05-01T10:00:00Z",
            "bot_a",
            offset,
        );
        row.kafka_partition = partition;
        row
    };
    writer
        .insert_usage(&[at(5, 0), at(9, 0), at(4, 1), at(20, 2)])
        .await
        .unwrap();
    // Dead letters never move a position (they are written before the batch's rows).
    writer
        .insert_dead_letters(&[
            dead_letter("traffic", 0, 12, b"x"),
            dead_letter("traffic", 3, 0, b"y"),
            dead_letter("other", 1, 1_000, b"z"),
        ])
        .await
        .unwrap();
    writer
        .insert_control(&[control_row(7), control_row(100)])
        .await
        .unwrap();
    let mut other_topic = at(500, 1);
    other_topic.kafka_topic = "traffic_v2".to_owned();
    writer.insert_usage(&[other_topic]).await.unwrap();

    assert_eq!(
        db.reader().positions("traffic").await.unwrap(),
        HashMap::from([(0, 9), (1, 4), (2, 20)])
    );
    assert_eq!(
        db.reader().positions("control").await.unwrap(),
        HashMap::from([(0, 100)])
    );
    assert_eq!(
        db.reader().positions("nothing").await.unwrap(),
        HashMap::new()
    );
    // A topic name is a bound value, never SQL.
    assert_eq!(
        db.reader().positions("x' OR 1=1 --").await.unwrap(),
        HashMap::new()
    );
}

/// Several instances (or a retried insert whose response was lost) may store one control message
/// more than once: readers see it once, merged or not, and the state rebuilds from one copy.
#[tokio::test]
async fn a_control_message_stored_twice_reads_back_once() {
    let db = TestDb::migrated("control_dedup").await;
    let writer = db.writer();
    let rows = [control_row(1), control_row(2)];
    writer.insert_control(&rows).await.unwrap();
    // A second instance writes the same messages, and one more.
    let mut later = rows.to_vec();
    for row in &mut later {
        row.ingested_at += 5;
    }
    later.push(control_row(3));
    writer.insert_control(&later).await.unwrap();

    let count = |sql: &'static str| {
        let client = db.client();
        async move { client.query(sql).fetch_one::<u64>().await.unwrap() }
    };
    assert_eq!(
        count("SELECT count() FROM control_events_log").await,
        5,
        "both copies are stored"
    );
    assert_eq!(
        count("SELECT count() FROM control_events").await,
        3,
        "the view shows each position once"
    );
    let offsets: Vec<i64> = db
        .reader()
        .control_history("control")
        .await
        .unwrap()
        .iter()
        .map(|r| r.kafka_offset)
        .collect();
    assert_eq!(offsets, [1, 2, 3]);
    // After a merge the copies are gone from the table too, and the view says the same.
    db.client()
        .query("OPTIMIZE TABLE control_events_log FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(count("SELECT count() FROM control_events_log").await, 3);
    assert_eq!(count("SELECT count() FROM control_events").await, 3);
}

/// A database migrated by an older botmeter keeps its audit log: migration 0004 copies the v1
/// `control_events` table into `control_events_log`, and 0005 puts the view in its place.
#[tokio::test]
async fn migrating_a_v1_database_keeps_its_control_events() {
    let db = TestDb::new("control_v1").await;
    let server = common::server_client();
    server
        .query("CREATE DATABASE ?")
        .bind(clickhouse::sql::Identifier(&db.config.database))
        .execute()
        .await
        .unwrap();
    let client = db.client();
    // Schema as botmeter with migrations 0001–0003 left it (not recorded: `migrate` re-runs them,
    // which they allow).
    for migration in botmeter_query::migrate::migrations()
        .unwrap()
        .iter()
        .filter(|m| m.version <= 3)
    {
        for statement in migration.statements() {
            client
                .query(&statement.replace('?', "??"))
                .execute()
                .await
                .unwrap();
        }
    }
    // The v1 table has no `source` (0012 adds it): rows as v1 wrote them.
    for offset in [4, 5] {
        let mut row = serde_json::to_value(control_row(offset)).unwrap();
        row.as_object_mut().unwrap().remove("source");
        client
            .query(
                &format!("INSERT INTO control_events FORMAT JSONEachRow {row}").replace('?', "??"),
            )
            .execute()
            .await
            .unwrap();
    }

    let report = migrate(&db.config).await.unwrap();
    assert!(report.applied.iter().any(|m| m.version == 5), "{report:?}");
    let engine = client
        .query("SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'control_events'")
        .fetch_one::<String>()
        .await
        .unwrap();
    assert_eq!(engine, "View");
    let history = db.reader().control_history("control").await.unwrap();
    assert_eq!(
        history,
        vec![control_row(4), control_row(5)],
        "v1 rows survive field by field"
    );
}

#[tokio::test]
async fn usage_endpoint_returns_exact_hourly_sums() {
    let db = TestDb::migrated("usage_api").await;
    let writer = db.writer();

    let tcp = |id: &str, time: &str, owner: &str, bytes_in: u64, bytes_out: u64| {
        let mut row = usage_row(id, time, owner, 0);
        row.bytes_in = bytes_in;
        row.bytes_out = bytes_out;
        row.tcp_connections = 1;
        row
    };
    let http = |id: &str, time: &str, owner: &str| {
        let mut row = usage_row(id, time, owner, 0);
        row.event_type = "http_request_complete.v0".to_owned();
        row.http_requests = 1;
        row.status_code = 200;
        // Body sizes are never added to connection bytes.
        row.request_body_bytes = 1_000_000;
        row.response_body_bytes = 2_000_000;
        row
    };
    let mut unattributed = tcp("ev_u", "2024-05-01T10:30:00Z", "bot_a", 7_000, 7_000);
    unattributed.status = status::UNATTRIBUTED.to_owned();
    unattributed.unattributed_reason = "no_session".to_owned();
    writer
        .insert_usage(&[
            tcp("ev_1", "2024-05-01T10:00:00Z", "bot_a", 100, 1_000),
            tcp("ev_2", "2024-05-01T10:59:59Z", "bot_a", 200, 2_000),
            http("ev_3", "2024-05-01T10:20:00Z", "bot_a"),
            http("ev_4", "2024-05-01T11:00:00Z", "bot_a"),
            http("ev_5", "2024-05-01T11:45:00Z", "bot_a"),
            tcp("ev_6", "2024-05-01T11:30:00Z", "bot_a", 40, 50),
            // None of these count.
            unattributed,
            tcp("ev_b", "2024-05-01T10:10:00Z", "bot_b", 9_000, 9_000),
            tcp("ev_early", "2024-05-01T09:59:59Z", "bot_a", 8_000, 8_000),
            tcp("ev_late", "2024-05-01T12:00:00Z", "bot_a", 8_000, 8_000),
            // A restated row and its cancelling copy (sign -1) net to nothing.
            tcp("ev_restated", "2024-05-01T10:40:00Z", "bot_a", 5_000, 5_000),
            {
                let mut cancel = tcp("ev_restated", "2024-05-01T10:40:00Z", "bot_a", 5_000, 5_000);
                cancel.sign = -1;
                cancel
            },
        ])
        .await
        .unwrap();

    let state = AppState::new(&db.config).unwrap();
    let request = Request::builder()
        .uri("/v1/owners/bot_a/usage?from=2024-05-01T10:00:00Z&to=2024-05-01T12:00:00Z")
        .body(Body::empty())
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let report: UsageReport = serde_json::from_slice(&body).unwrap();
    let metrics = |bytes_in, bytes_out, http_requests, tcp_connections| UsageMetrics {
        bytes_in,
        bytes_out,
        http_requests,
        tcp_connections,
        // One endpoint (ep_1) in each hour with outgoing bytes; no agent sessions in this test.
        endpoints: 1,
        active_endpoint_hours: 1,
        agent_sessions: Some(0),
        session_hours: Some(0.0),
    };
    assert_eq!(
        report,
        UsageReport {
            owner_id: "bot_a".to_owned(),
            from: "2024-05-01T10:00:00Z".to_owned(),
            to: "2024-05-01T12:00:00Z".to_owned(),
            granularity: "hour".to_owned(),
            timezone: "UTC".to_owned(),
            group_by: None,
            buckets: vec![
                UsageBucket {
                    start: "2024-05-01T10:00:00Z".to_owned(),
                    metrics: metrics(300, 3_000, 1, 2),
                },
                UsageBucket {
                    start: "2024-05-01T11:00:00Z".to_owned(),
                    metrics: metrics(40, 50, 2, 1),
                },
            ],
            session_only_buckets: Vec::new(),
            totals: UsageMetrics {
                active_endpoint_hours: 2,
                ..metrics(340, 3_050, 3, 3)
            },
            groups: None,
        }
    );
    // The four original metrics keep their names and places in the JSON.
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["buckets"][0]["bytes_in"], 300);
    assert_eq!(json["totals"]["tcp_connections"], 3);

    // A whole day by date; an owner with nothing gets empty buckets, not an error.
    for (uri, buckets) in [
        ("/v1/owners/bot_a/usage?from=2024-05-01&to=2024-05-02", 4),
        (
            "/v1/owners/bot_nobody/usage?from=2024-05-01&to=2024-05-02",
            0,
        ),
    ] {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let report: UsageReport = serde_json::from_slice(&body).unwrap();
        assert_eq!(report.buckets.len(), buckets, "{uri}: {report:?}");
    }

    let request = Request::builder()
        .uri("/readyz")
        .body(Body::empty())
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn readyz_is_503_until_the_database_exists() {
    let db = TestDb::new("readyz").await;
    let state = AppState::new(&db.config).unwrap();
    let ready = |state: AppState| async move {
        let request = Request::builder()
            .uri("/readyz")
            .body(Body::empty())
            .unwrap();
        router(state).oneshot(request).await.unwrap().status()
    };
    assert_eq!(ready(state.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    migrate(&db.config).await.unwrap();
    assert_eq!(ready(state).await, StatusCode::OK);
}

#[tokio::test]
async fn server_version_answers() {
    let config = ClickHouseConfig {
        url: clickhouse_url(),
        ..ClickHouseConfig::default()
    };
    let version = botmeter_query::server_version(&config.validate().unwrap())
        .await
        .unwrap();
    assert!(
        version.chars().next().unwrap().is_ascii_digit(),
        "{version}"
    );
}
