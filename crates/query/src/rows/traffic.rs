//! The traffic hot path's two rows-to-be, each keeping its strings in one buffer (one allocation per
//! event instead of a dozen): [`TrafficRecord`], a decoded traffic event held until its batch can
//! be attributed, and [`PendingUsage`], the attributed `usage_events` row held until its insert is
//! durable, written by lending its columns as a [`UsageRowRef`].
//!
//! The per-event functions are `#[inline]`: they run in the pipeline's loop in another crate,
//! and without it each would be an out-of-line call per event (measured: ~8% of the pipeline's
//! throughput when they moved here from the `botmeter` crate).

use std::borrow::Cow;
use std::sync::Arc;

use super::{status, AsUsageRow, StrList, UsageRowRef};
use enrich::{OwnershipState, ResolutionRef};
use model::{TrafficKind, TrafficRef};

/// Index of each string in a record's buffer.
mod field {
    pub(super) const EVENT_ID: usize = 0;
    pub(super) const ACCOUNT_ID: usize = 1;
    pub(super) const HOSTNAME: usize = 2;
    pub(super) const ENDPOINT_ID: usize = 3;
    pub(super) const SESSION_ID: usize = 4;
    pub(super) const CREDENTIAL_ID: usize = 5;
    pub(super) const OWNER_ID: usize = 6;
    pub(super) const COUNT: usize = 7;
}

/// Strings appended to one buffer, each named by its byte range.
#[derive(Debug, Clone, Default)]
struct Strings {
    text: String,
    spans: [(u32, u32); field::COUNT],
}

impl Strings {
    #[inline]
    fn with_capacity(bytes: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            spans: [(0, 0); field::COUNT],
        }
    }

    #[inline]
    fn set(&mut self, index: usize, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        self.spans[index] = (start as u32, self.text.len() as u32);
    }

    #[inline]
    fn set_lowercase(&mut self, index: usize, value: &str) {
        self.set(index, value);
        let (start, end) = self.spans[index];
        self.text[start as usize..end as usize].make_ascii_lowercase();
    }

    #[inline]
    fn get(&self, index: usize) -> &str {
        let (start, end) = self.spans[index];
        &self.text[start as usize..end as usize]
    }
}

/// A decoded traffic event, waiting for its batch to be attributed.
#[derive(Debug, Clone)]
pub struct TrafficRecord {
    /// Event id, account id, hostname (lowercased) and the endpoint the event names, if any.
    strings: Strings,
    names_endpoint: bool,
    kind: TrafficKind,
    /// The usage time ([`TrafficRef::usage_time`]), microseconds since the epoch.
    pub usage_time_us: i64,
    port: Option<u16>,
    bytes_in: u64,
    bytes_out: u64,
    status_code: u16,
    request_body_length: u64,
    response_body_length: u64,
    /// Source partition.
    partition: i32,
    /// Source offset.
    offset: i64,
}

/// Room for the ids attribution appends (endpoint, session, credential, owner), so the buffer
/// rarely grows twice.
const ATTRIBUTION_BYTES: usize = 112;

impl TrafficRecord {
    /// Keeps what the usage row needs of `traffic`.
    #[inline]
    pub fn new(traffic: &TrafficRef<'_>, partition: i32, offset: i64) -> Self {
        let endpoint_id = traffic.endpoint_id.as_deref();
        let mut strings = Strings::with_capacity(
            traffic.event_id.len()
                + traffic.account_id.len()
                + traffic.server_name.len()
                + endpoint_id.map_or(0, str::len)
                + ATTRIBUTION_BYTES,
        );
        strings.set(field::EVENT_ID, &traffic.event_id);
        strings.set(field::ACCOUNT_ID, &traffic.account_id);
        strings.set_lowercase(field::HOSTNAME, &traffic.server_name);
        strings.set(field::ENDPOINT_ID, endpoint_id.unwrap_or_default());
        Self {
            strings,
            names_endpoint: endpoint_id.is_some(),
            kind: traffic.kind,
            usage_time_us: traffic.usage_time().timestamp_micros(),
            port: traffic.server_port,
            bytes_in: traffic.bytes_in,
            bytes_out: traffic.bytes_out,
            status_code: traffic.status_code,
            request_body_length: traffic.request_body_length,
            response_body_length: traffic.response_body_length,
            partition,
            offset,
        }
    }

    /// Resolves the event against `state` as of its usage time: the row to write.
    #[inline]
    pub fn attribute(
        self,
        state: &OwnershipState,
        topic: &Arc<str>,
        ingested_at: u32,
    ) -> PendingUsage {
        let resolution = state.resolve_at(
            self.strings.get(field::HOSTNAME),
            self.port,
            self.names_endpoint
                .then(|| self.strings.get(field::ENDPOINT_ID)),
            self.usage_time_us,
        );
        PendingUsage::attributed(self, &resolution, topic, ingested_at)
    }

    /// The row of an event left unresolved for `reason` (the chain was not looked up).
    pub fn unresolved(
        self,
        reason: enrich::UnattributedReason,
        topic: &Arc<str>,
        ingested_at: u32,
    ) -> PendingUsage {
        let resolution = ResolutionRef {
            unattributed: Some(reason),
            ..ResolutionRef::default()
        };
        PendingUsage::attributed(self, &resolution, topic, ingested_at)
    }
}

/// A `usage_events` row, held until its insert is durable.
#[derive(Debug, Clone)]
pub struct PendingUsage {
    strings: Strings,
    event_type: &'static str,
    status: &'static str,
    unattributed_reason: Cow<'static, str>,
    flags: Vec<&'static str>,
    owner_kind: &'static str,
    credential_kind: &'static str,
    event_time_us: i64,
    port: u16,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u32,
    tcp_connections: u32,
    status_code: u16,
    request_body_bytes: u64,
    response_body_bytes: u64,
    kafka_topic: Arc<str>,
    kafka_partition: i32,
    kafka_offset: i64,
    ingested_at: u32,
}

impl PendingUsage {
    #[inline]
    fn attributed(
        record: TrafficRecord,
        resolution: &ResolutionRef<'_>,
        topic: &Arc<str>,
        ingested_at: u32,
    ) -> Self {
        let TrafficRecord {
            mut strings,
            kind,
            usage_time_us,
            port,
            bytes_in,
            bytes_out,
            status_code,
            request_body_length,
            response_body_length,
            partition,
            offset,
            names_endpoint: _,
        } = record;
        // The endpoint the event names is kept even when unknown (so that `reattribute` can look
        // it up again); the one found replaces it.
        if let Some(endpoint_id) = resolution.endpoint_id {
            strings.set(field::ENDPOINT_ID, endpoint_id);
        }
        strings.set(field::SESSION_ID, resolution.session_id.unwrap_or_default());
        strings.set(
            field::CREDENTIAL_ID,
            resolution.credential_id.unwrap_or_default(),
        );
        strings.set(field::OWNER_ID, resolution.owner_id.unwrap_or_default());
        let is_tcp = kind == TrafficKind::Tcp;
        Self {
            strings,
            event_type: kind.event_type(),
            status: if resolution.unattributed.is_some() {
                status::UNATTRIBUTED
            } else {
                status::ATTRIBUTED
            },
            unattributed_reason: Cow::Borrowed(
                resolution.unattributed.map_or("", |reason| reason.as_str()),
            ),
            flags: resolution.flags.iter().map(|flag| flag.as_str()).collect(),
            owner_kind: resolution.owner_kind.map_or("", |kind| kind.as_str()),
            credential_kind: resolution.credential_kind.map_or("", |kind| kind.as_str()),
            event_time_us: usage_time_us,
            port: port.unwrap_or(0),
            bytes_in: if is_tcp { bytes_in } else { 0 },
            bytes_out: if is_tcp { bytes_out } else { 0 },
            http_requests: u32::from(!is_tcp),
            tcp_connections: u32::from(is_tcp),
            status_code,
            request_body_bytes: request_body_length,
            response_body_bytes: response_body_length,
            kafka_topic: Arc::clone(topic),
            kafka_partition: partition,
            kafka_offset: offset,
            ingested_at,
        }
    }

    /// The row of a message that could not be decoded (`reason_kind` names why), so that its
    /// position is stored like any other.
    pub fn dead_letter(
        reason_kind: &str,
        topic: &Arc<str>,
        partition: i32,
        offset: i64,
        now: u32,
    ) -> Self {
        Self {
            strings: Strings::default(),
            event_type: "",
            status: status::DEAD_LETTER,
            unattributed_reason: Cow::Owned(reason_kind.to_owned()),
            flags: Vec::new(),
            owner_kind: "",
            credential_kind: "",
            event_time_us: i64::from(now) * 1_000_000,
            port: 0,
            bytes_in: 0,
            bytes_out: 0,
            http_requests: 0,
            tcp_connections: 0,
            status_code: 0,
            request_body_bytes: 0,
            response_body_bytes: 0,
            kafka_topic: Arc::clone(topic),
            kafka_partition: partition,
            kafka_offset: offset,
            ingested_at: now,
        }
    }

    /// `event_time`: whole seconds (UTC), 0 before the epoch or after 2106 as the column holds.
    #[inline]
    pub fn event_time(&self) -> u32 {
        u32::try_from(self.event_time_us.div_euclid(1_000_000)).unwrap_or(0)
    }

    /// The event id (empty for a dead letter).
    #[inline]
    pub fn event_id(&self) -> &str {
        self.strings.get(field::EVENT_ID)
    }

    /// Event time, microseconds since the epoch.
    #[inline]
    pub fn event_time_us(&self) -> i64 {
        self.event_time_us
    }

    /// Makes this row another delivery of an event already written: status
    /// [`status::DUPLICATE`], counted nowhere (its attribution is kept, for the audit).
    pub fn mark_repeat(&mut self) {
        self.status = status::DUPLICATE;
        self.unattributed_reason = Cow::Borrowed(super::REPEATED_EVENT_ID);
    }

    /// (topic, partition, offset).
    #[inline]
    pub fn position(&self) -> (&str, i32, i64) {
        (&self.kafka_topic, self.kafka_partition, self.kafka_offset)
    }
}

impl AsUsageRow for PendingUsage {
    #[inline]
    fn usage_row(&self) -> UsageRowRef<'_> {
        let strings = &self.strings;
        UsageRowRef {
            event_id: strings.get(field::EVENT_ID),
            event_type: self.event_type,
            event_time: self.event_time(),
            event_time_us: self.event_time_us,
            account_id: strings.get(field::ACCOUNT_ID),
            status: self.status,
            unattributed_reason: &self.unattributed_reason,
            flags: StrList::Static(&self.flags),
            owner_id: strings.get(field::OWNER_ID),
            owner_kind: self.owner_kind,
            credential_id: strings.get(field::CREDENTIAL_ID),
            credential_kind: self.credential_kind,
            session_id: strings.get(field::SESSION_ID),
            endpoint_id: strings.get(field::ENDPOINT_ID),
            hostname: strings.get(field::HOSTNAME),
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
            sign: 1,
        }
    }
}
