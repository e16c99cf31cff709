//! The traffic hot path (borrowed decoder, [`TrafficRecord`], [`PendingUsage`]) against the owned
//! path `reattribute` takes ([`UsageRow::set_attribution`]): the same event gives the same row.

use std::sync::Arc;

use enrich::OwnershipState;
use model::{TrafficKind, TrafficRef};
use query::rows::{status, AsUsageRow, PendingUsage, TrafficRecord, UsageRow};

use simulate::{generate, FleetConfig};

/// The owned path (`set_attribution`, as `reattribute` builds rows) for the same event.
fn reference_row(
    state: &OwnershipState,
    traffic: &TrafficRef<'_>,
    topic: &str,
    position: (i32, i64),
    now: u32,
) -> UsageRow {
    let t = traffic.usage_time();
    let endpoint_id = traffic.endpoint_id.as_deref();
    let resolution = state.resolve(&traffic.server_name, traffic.server_port, endpoint_id, t);
    let is_tcp = traffic.kind == TrafficKind::Tcp;
    let mut row = UsageRow {
        event_id: traffic.event_id.to_string(),
        event_type: traffic.kind.event_type().to_owned(),
        event_time: u32::try_from(t.timestamp()).unwrap_or(0),
        event_time_us: t.timestamp_micros(),
        account_id: traffic.account_id.to_string(),
        status: String::new(),
        unattributed_reason: String::new(),
        flags: Vec::new(),
        owner_id: String::new(),
        owner_kind: String::new(),
        credential_id: String::new(),
        credential_kind: String::new(),
        session_id: String::new(),
        endpoint_id: endpoint_id.unwrap_or_default().to_owned(),
        hostname: traffic.server_name.to_ascii_lowercase(),
        port: traffic.server_port.unwrap_or(0),
        bytes_in: if is_tcp { traffic.bytes_in } else { 0 },
        bytes_out: if is_tcp { traffic.bytes_out } else { 0 },
        http_requests: u32::from(!is_tcp),
        tcp_connections: u32::from(is_tcp),
        status_code: traffic.status_code,
        request_body_bytes: traffic.request_body_length,
        response_body_bytes: traffic.response_body_length,
        kafka_topic: topic.to_owned(),
        kafka_partition: position.0,
        kafka_offset: position.1,
        ingested_at: now,
        sign: 1,
    };
    row.set_attribution(&resolution);
    row
}

#[test]
fn every_simulated_traffic_event_takes_the_fast_path_and_writes_the_reference_row() {
    let fleet = generate(&FleetConfig {
        traffic_events: 6_000,
        ..FleetConfig::with_anomalies()
    });
    let mut state = OwnershipState::new();
    for message in fleet.control.iter().chain(&fleet.late_control) {
        state.apply(&model::decode(&message.payload).unwrap());
    }
    let topic: Arc<str> = Arc::from("botmeter.traffic");
    let mut statuses = std::collections::BTreeSet::new();
    for (offset, message) in fleet.traffic.iter().enumerate() {
        let payload = String::from_utf8_lossy(&message.payload);
        let fast = model::decode_traffic(&message.payload)
            .unwrap_or_else(|| panic!("fast path refused {payload}"));
        let event = model::decode(&message.payload).unwrap();
        assert_eq!(Some(&fast), event.traffic().as_ref(), "{payload}");
        let position = (offset as i32 % 3, offset as i64);
        let pending =
            TrafficRecord::new(&fast, position.0, position.1).attribute(&state, &topic, 7);
        let want = reference_row(&state, &fast, &topic, position, 7);
        assert_eq!(pending.usage_row().to_owned_row(), want, "{payload}");
        statuses.insert((want.status.clone(), want.unattributed_reason, want.flags));
    }
    // The comparison covered attributed, flagged and unattributed rows alike.
    assert!(statuses.len() >= 6, "{statuses:?}");
}

#[test]
fn a_dead_letter_row_stores_its_position_and_reason() {
    let topic: Arc<str> = Arc::from("t");
    let row = PendingUsage::dead_letter("malformed_json", &topic, 2, 9, 1_767_225_600)
        .usage_row()
        .to_owned_row();
    assert_eq!(
        (row.status.as_str(), row.unattributed_reason.as_str()),
        (status::DEAD_LETTER, "malformed_json")
    );
    assert_eq!(
        (
            row.kafka_topic.as_str(),
            row.kafka_partition,
            row.kafka_offset
        ),
        ("t", 2, 9)
    );
    assert_eq!(
        (row.event_time, row.event_time_us),
        (1_767_225_600, 1_767_225_600_000_000)
    );
    assert_eq!(
        (row.http_requests, row.tcp_connections, row.sign),
        (0, 0, 1)
    );
}

#[test]
fn an_uppercase_hostname_and_a_named_endpoint_are_kept_as_the_reference_keeps_them() {
    let payload = br#"{"event_id":"ev_\u0031","event_type":"http_request_complete.v0","event_timestamp":"2026-03-01T10:00:05Z","object":{"conn":{"server_name":"API.Example.COM","server_port":""},"traffic_policy":{"logs":[{"metadata":{"endpoint_id":"ep_gone"}}]}}}"#;
    let fast = model::decode_traffic(payload).unwrap();
    let state = OwnershipState::new();
    let topic: Arc<str> = Arc::from("t");
    let row = TrafficRecord::new(&fast, 0, 1).attribute(&state, &topic, 3);
    let row = row.usage_row().to_owned_row();
    assert_eq!(row, reference_row(&state, &fast, "t", (0, 1), 3));
    assert_eq!(row.event_id, "ev_1");
    assert_eq!(row.hostname, "api.example.com");
    assert_eq!(row.endpoint_id, "ep_gone");
    assert_eq!(row.unattributed_reason, "no_endpoint");
}
