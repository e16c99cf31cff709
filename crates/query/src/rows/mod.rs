//! The rows botmeter writes, one struct per table of `schemas/clickhouse/`, and the mapping of
//! attributed events, control events and dead letters to them. Field order is the table's column
//! order: the writer sends RowBinary, which is positional.

mod traffic;

use chrono::{DateTime, Utc};
use clickhouse::Row;
use model::{DeadLetter, Event, EventBody, SourcePosition};
use serde::{Deserialize, Serialize};

pub use traffic::{PendingUsage, TrafficRecord};

/// Outcome of attributing a traffic event.
pub mod status {
    /// The message could not be decoded; `unattributed_reason` holds the reason class and
    /// `dead_letters` the bytes.
    pub const DEAD_LETTER: &str = "dead_letter";
    /// Resolved to an owner (possibly with flags).
    pub const ATTRIBUTED: &str = "attributed";
    /// A link of the chain was missing; `unattributed_reason` names it.
    pub const UNATTRIBUTED: &str = "unattributed";
    /// Another delivery of an event already written at another position (ngrok's destinations
    /// deliver at least once): attributed like the first but counted nowhere;
    /// `unattributed_reason` is [`REPEATED_EVENT_ID`](super::REPEATED_EVENT_ID).
    pub const DUPLICATE: &str = "duplicate";
}

/// The `unattributed_reason` of a [`status::DUPLICATE`] row.
pub const REPEATED_EVENT_ID: &str = "repeated_event_id";

/// One traffic event with its attribution: a row of `usage_events`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct UsageRow {
    /// `ev_…`
    pub event_id: String,
    /// `http_request_complete.v0` or `tcp_connection_closed.v0`.
    pub event_type: String,
    /// Usage time, whole seconds (UTC).
    pub event_time: u32,
    /// Usage time, microseconds since the epoch.
    pub event_time_us: i64,
    /// `ac_…`
    pub account_id: String,
    /// [`status::ATTRIBUTED`], [`status::UNATTRIBUTED`], [`status::DUPLICATE`] or
    /// [`status::DEAD_LETTER`].
    pub status: String,
    /// Which link was missing, empty when attributed.
    pub unattributed_reason: String,
    /// Anomaly flags on attributed usage.
    pub flags: Vec<String>,
    /// Owner (`usr_…`/`bot_…`), empty when unattributed.
    pub owner_id: String,
    /// `user` / `bot_user`, empty when unattributed.
    pub owner_kind: String,
    /// The credential behind the session.
    pub credential_id: String,
    /// `authtoken` / `ssh_key` / `api_key`.
    pub credential_kind: String,
    /// Agent session (`ts_…`).
    pub session_id: String,
    /// Endpoint (`ep_…`).
    pub endpoint_id: String,
    /// Hostname the traffic arrived on.
    pub hostname: String,
    /// Port, 0 when none.
    pub port: u16,
    /// Bytes that arrived at the endpoint (connections only).
    pub bytes_in: u64,
    /// Bytes that left the endpoint (connections only).
    pub bytes_out: u64,
    /// 1 for an HTTP request event.
    pub http_requests: u32,
    /// 1 for a TCP connection event.
    pub tcp_connections: u32,
    /// HTTP status code, 0 for connections.
    pub status_code: u16,
    /// HTTP request body bytes (never added to connection bytes).
    pub request_body_bytes: u64,
    /// HTTP response body bytes (never added to connection bytes).
    pub response_body_bytes: u64,
    /// Source topic.
    pub kafka_topic: String,
    /// Source partition.
    pub kafka_partition: i32,
    /// Source offset.
    pub kafka_offset: i64,
    /// When botmeter wrote it (seconds).
    pub ingested_at: u32,
    /// +1 for a row as written; -1 for the cancelling copy `reattribute` writes of a row it
    /// restates. Reports sum `metric * sign`.
    pub sign: i8,
}

/// The write form of a [`UsageRow`]: the same columns, in the same order, borrowed. Every usage
/// insert serializes this one type (see [`AsUsageRow`]), so the pipeline can write rows kept in
/// its own compact form without building owned `UsageRow`s.
#[derive(Debug, Clone, Copy, Row, Serialize)]
pub struct UsageRowRef<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub event_time: u32,
    pub event_time_us: i64,
    pub account_id: &'a str,
    pub status: &'a str,
    pub unattributed_reason: &'a str,
    pub flags: StrList<'a>,
    pub owner_id: &'a str,
    pub owner_kind: &'a str,
    pub credential_id: &'a str,
    pub credential_kind: &'a str,
    pub session_id: &'a str,
    pub endpoint_id: &'a str,
    pub hostname: &'a str,
    pub port: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub http_requests: u32,
    pub tcp_connections: u32,
    pub status_code: u16,
    pub request_body_bytes: u64,
    pub response_body_bytes: u64,
    pub kafka_topic: &'a str,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    pub ingested_at: u32,
    pub sign: i8,
}

impl UsageRowRef<'_> {
    /// The owned row.
    pub fn to_owned_row(&self) -> UsageRow {
        UsageRow {
            event_id: self.event_id.to_owned(),
            event_type: self.event_type.to_owned(),
            event_time: self.event_time,
            event_time_us: self.event_time_us,
            account_id: self.account_id.to_owned(),
            status: self.status.to_owned(),
            unattributed_reason: self.unattributed_reason.to_owned(),
            flags: match self.flags {
                StrList::Owned(names) => names.to_vec(),
                StrList::Static(names) => names.iter().map(|name| (*name).to_owned()).collect(),
            },
            owner_id: self.owner_id.to_owned(),
            owner_kind: self.owner_kind.to_owned(),
            credential_id: self.credential_id.to_owned(),
            credential_kind: self.credential_kind.to_owned(),
            session_id: self.session_id.to_owned(),
            endpoint_id: self.endpoint_id.to_owned(),
            hostname: self.hostname.to_owned(),
            port: self.port,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            http_requests: self.http_requests,
            tcp_connections: self.tcp_connections,
            status_code: self.status_code,
            request_body_bytes: self.request_body_bytes,
            response_body_bytes: self.response_body_bytes,
            kafka_topic: self.kafka_topic.to_owned(),
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
            ingested_at: self.ingested_at,
            sign: self.sign,
        }
    }
}

/// An `Array(String)` column's value, from owned or static names.
#[derive(Debug, Clone, Copy)]
pub enum StrList<'a> {
    /// Owned names (a [`UsageRow`]'s flags).
    Owned(&'a [String]),
    /// Static names (the pipeline's flags).
    Static(&'a [&'static str]),
}

impl Serialize for StrList<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Owned(names) => serializer.collect_seq(names.iter()),
            Self::Static(names) => serializer.collect_seq(names.iter()),
        }
    }
}

/// Anything written to `usage_events`: it lends its columns as a [`UsageRowRef`].
pub trait AsUsageRow {
    /// The row's columns.
    fn usage_row(&self) -> UsageRowRef<'_>;
}

impl AsUsageRow for UsageRow {
    fn usage_row(&self) -> UsageRowRef<'_> {
        UsageRowRef {
            event_id: &self.event_id,
            event_type: &self.event_type,
            event_time: self.event_time,
            event_time_us: self.event_time_us,
            account_id: &self.account_id,
            status: &self.status,
            unattributed_reason: &self.unattributed_reason,
            flags: StrList::Owned(&self.flags),
            owner_id: &self.owner_id,
            owner_kind: &self.owner_kind,
            credential_id: &self.credential_id,
            credential_kind: &self.credential_kind,
            session_id: &self.session_id,
            endpoint_id: &self.endpoint_id,
            hostname: &self.hostname,
            port: self.port,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            http_requests: self.http_requests,
            tcp_connections: self.tcp_connections,
            status_code: self.status_code,
            request_body_bytes: self.request_body_bytes,
            response_body_bytes: self.response_body_bytes,
            kafka_topic: &self.kafka_topic,
            kafka_partition: self.kafka_partition,
            kafka_offset: self.kafka_offset,
            ingested_at: self.ingested_at,
            sign: self.sign,
        }
    }
}

/// One control-plane event: a row of `control_events`, the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct ControlRow {
    /// `ev_…`
    pub event_id: String,
    /// As sent.
    pub event_type: String,
    /// Event time, whole seconds.
    pub event_time: u32,
    /// Event time, microseconds since the epoch.
    pub event_time_us: i64,
    /// `ac_…`
    pub account_id: String,
    /// Who acted.
    pub principal_id: String,
    /// The principal's email or bot name.
    pub principal_subject: String,
    /// The API key the principal used.
    pub principal_credential_id: String,
    /// The object's id (credential, bot user, endpoint, session…).
    pub object_id: String,
    /// The owner the object names (credentials), else empty.
    pub owner_id: String,
    /// The object as JSON, without any credential token.
    pub object: String,
    /// Source topic.
    pub kafka_topic: String,
    /// Source partition.
    pub kafka_partition: i32,
    /// Source offset.
    pub kafka_offset: i64,
    /// When botmeter wrote it (seconds).
    pub ingested_at: u32,
    /// Anomalies of this event (`owner_change_rejected`, `api_key_owner_mismatch`).
    pub anomalies: Vec<String>,
    /// The envelope's `source`: `botmeter-sync` for an event `botmeter sync` synthesized from
    /// the ngrok API, empty for ngrok's own.
    pub source: String,
}

/// A message that could not be decoded or validated: a row of `dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct DeadLetterRow {
    /// Source topic.
    pub kafka_topic: String,
    /// Source partition.
    pub kafka_partition: i32,
    /// Source offset.
    pub kafka_offset: i64,
    /// Reason class (`malformed_json`, `missing_field`, `invalid_field`, …).
    pub reason_kind: String,
    /// The full reason, naming event, field and value.
    pub reason: String,
    /// The original bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Size of the original message.
    pub payload_bytes: u64,
    /// When botmeter received it (seconds).
    pub received_at: u32,
}

impl UsageRow {
    /// Writes a resolution's outcome into the row (status, reason, flags and the chain's ids):
    /// the owned path, as `botmeter reattribute` restates rows. The hot path builds the same row
    /// borrowed ([`TrafficRecord::attribute`]); a test holds the two together.
    pub fn set_attribution(&mut self, resolution: &enrich::Resolution) {
        self.status = if resolution.unattributed.is_some() {
            status::UNATTRIBUTED
        } else {
            status::ATTRIBUTED
        }
        .to_owned();
        self.unattributed_reason = resolution
            .unattributed
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default();
        self.flags = resolution
            .flags
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect();
        self.owner_id = resolution.owner_id.clone().unwrap_or_default();
        self.owner_kind = resolution
            .owner_kind
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default();
        self.credential_id = resolution.credential_id.clone().unwrap_or_default();
        self.credential_kind = resolution
            .credential_kind
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default();
        self.session_id = resolution.session_id.clone().unwrap_or_default();
        if let Some(endpoint_id) = &resolution.endpoint_id {
            self.endpoint_id.clone_from(endpoint_id);
        }
    }
}

/// Whole seconds of `t` as the tables' `DateTime` holds them (0 outside 1970–2106).
fn seconds(t: DateTime<Utc>) -> u32 {
    u32::try_from(t.timestamp()).unwrap_or(0)
}

impl ControlRow {
    /// The audit-log row of a control event read at `source`, with its anomalies.
    pub fn new(
        event: &Event,
        source: SourcePosition<'_>,
        anomalies: Vec<String>,
        ingested_at: u32,
    ) -> Self {
        let principal = event.principal.clone().unwrap_or_default();
        let object = event.object.as_ref();
        let object_id = match &event.body {
            EventBody::AgentSession { session, .. } => session.session.id.clone(),
            _ => object
                .and_then(|o| o.get("id"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
        };
        let owner_id = match &event.body {
            EventBody::Credential { credential, .. } => credential.owner_id.clone(),
            EventBody::BotUser { bot_user, .. } => bot_user.id.clone(),
            EventBody::Endpoint { endpoint, .. } => endpoint
                .principal
                .as_ref()
                .map(|p| p.id.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        Self {
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            event_time: seconds(event.event_timestamp),
            event_time_us: event.event_timestamp.timestamp_micros(),
            account_id: event.account_id.clone(),
            principal_id: principal.id,
            principal_subject: principal.subject.unwrap_or_default(),
            principal_credential_id: principal.credential.map(|c| c.id).unwrap_or_default(),
            object_id,
            owner_id,
            object: object.map(|o| o.to_string()).unwrap_or_default(),
            kafka_topic: source.topic.to_owned(),
            kafka_partition: source.partition,
            kafka_offset: source.offset,
            ingested_at,
            anomalies,
            source: event.source.clone().unwrap_or_default(),
        }
    }
}

impl DeadLetterRow {
    /// The `dead_letters` row of a dead letter received at `received_at` (Unix seconds).
    pub fn new(letter: &DeadLetter, received_at: u32) -> Self {
        Self {
            kafka_topic: letter.topic.clone(),
            kafka_partition: letter.partition,
            kafka_offset: letter.offset,
            reason_kind: letter.reason_kind.clone(),
            reason: letter.reason.clone(),
            payload_bytes: letter.payload_bytes,
            payload: letter.payload.clone(),
            received_at,
        }
    }
}

/// Turns a stored control event back into the event it was, for rebuilding the ownership state
/// at start-up. Times are kept to the microsecond; the stored object has its secrets removed,
/// which the state never needs.
pub fn decode_control_row(row: &ControlRow) -> model::Result<model::Event> {
    let timestamp = DateTime::from_timestamp_micros(row.event_time_us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let object: serde_json::Value =
        serde_json::from_str(&row.object).unwrap_or(serde_json::Value::Null);
    let mut envelope = serde_json::json!({
        "event_id": row.event_id,
        "event_type": row.event_type,
        "event_timestamp": timestamp,
        "account_id": row.account_id,
        "object": object,
    });
    if !row.principal_id.is_empty() {
        let mut principal =
            serde_json::json!({ "id": row.principal_id, "subject": row.principal_subject });
        if !row.principal_credential_id.is_empty() {
            principal["credential"] = serde_json::json!({ "id": row.principal_credential_id });
        }
        envelope["principal"] = principal;
    }
    if !row.source.is_empty() {
        envelope["source"] = serde_json::json!(row.source);
    }
    model::decode(envelope.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_control_event_decodes_back_to_the_same_event() {
        let payload = br#"{"event_id":"ev_1","event_type":"tunnel_credential_created.v0","event_timestamp":"2026-01-01T00:00:01.123456Z","account_id":"ac_1","principal":{"id":"usr_1","subject":"a@b.c","credential":{"id":"ak_1"}},"object":{"id":"cr_1","owner_id":"bot_1","acl":["bind:*.example.com"],"token":"secret"},"source":"botmeter-sync"}"#;
        let original = model::decode(payload).unwrap();
        let row = ControlRow {
            event_id: original.event_id.clone(),
            event_type: original.event_type.clone(),
            event_time: original.event_timestamp.timestamp() as u32,
            event_time_us: original.event_timestamp.timestamp_micros(),
            account_id: original.account_id.clone(),
            principal_id: "usr_1".into(),
            principal_subject: "a@b.c".into(),
            principal_credential_id: "ak_1".into(),
            object_id: "cr_1".into(),
            owner_id: "bot_1".into(),
            object: original.object.as_ref().unwrap().to_string(),
            kafka_topic: "t".into(),
            kafka_partition: 0,
            kafka_offset: 7,
            ingested_at: 0,
            anomalies: Vec::new(),
            source: original.source.clone().unwrap_or_default(),
        };
        assert_eq!(row.source, "botmeter-sync");
        let mut decoded = decode_control_row(&row).unwrap();
        // The principal's `source` is not stored; nothing reads it.
        decoded.principal.as_mut().unwrap().source =
            original.principal.as_ref().unwrap().source.clone();
        if let Some(c) = decoded.principal.as_mut().unwrap().credential.as_mut() {
            c.uri = None;
        }
        assert_eq!(decoded, original);
    }
}
