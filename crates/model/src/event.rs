//! The ngrok event envelope and [`decode`], which turns one Kafka payload into an [`Event`].
//!
//! Known event types get typed bodies; any other `event_type` (ngrok publishes about fifty audit
//! types) is accepted as [`EventBody::Audit`]: kept raw and attributed to its principal. The raw
//! `object` of a non-traffic event is kept (with any credential `token` removed) for the audit log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::bind::BindRule;
use crate::error::{DecodeError, Result};
use crate::objects::{
    AgentSession, BotUser, Credential, CredentialKind, Endpoint, HttpRequestComplete, OwnerKind,
    RawHttpComplete, RawTcp, TcpConnectionClosed,
};

/// A reference to the API key a principal acted with.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PrincipalRef {
    /// `ak_…`
    #[serde(default)]
    pub id: String,
    /// Its API URI.
    #[serde(default)]
    pub uri: Option<String>,
}

/// Who caused an audit event: a user or bot user, and the API key it used.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Principal {
    /// `usr_…` or `bot_…`.
    #[serde(default)]
    pub id: String,
    /// Email of a user or name of a bot user.
    #[serde(default)]
    pub subject: Option<String>,
    /// `Dashboard` or `API`.
    #[serde(default)]
    pub source: Option<String>,
    /// The API key used, when the source is the API.
    #[serde(default)]
    pub credential: Option<PrincipalRef>,
}

/// Lifecycle step of a credential or bot user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialAction {
    /// `*_created.v0`
    Created,
    /// `*_updated.v0` (a bot's `active: false` is a deactivation)
    Updated,
    /// `*_deleted.v0`
    Deleted,
}

/// Lifecycle step of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointAction {
    /// `endpoint_created.v0`
    Created,
    /// `endpoint_deleted.v0`
    Deleted,
}

/// Lifecycle step of an agent session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionAction {
    /// `agent_session_start.v0`
    Start,
    /// `agent_session_stop.v0`
    Stop,
}

/// The event types botmeter understands, parsed from `event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `tunnel_credential_*`, `api_key_*`, `ssh_public_key_*`.
    Credential(CredentialKind, CredentialAction),
    /// `bot_user_*` (botmeter's own, ngrok publishes none).
    BotUser(CredentialAction),
    /// `endpoint_*` (botmeter's own).
    Endpoint(EndpointAction),
    /// `agent_session_start` / `_stop`.
    AgentSession(SessionAction),
    /// `http_request_complete.v0`.
    HttpRequestComplete,
    /// `tcp_connection_closed.v0`.
    TcpConnectionClosed,
    /// Any other type: stored raw, attributed to its principal.
    Audit,
}

impl EventType {
    /// Classifies an `event_type` string.
    pub fn parse(event_type: &str) -> Self {
        use CredentialAction as A;
        use CredentialKind as K;
        match event_type {
            "tunnel_credential_created.v0" => Self::Credential(K::Authtoken, A::Created),
            "tunnel_credential_updated.v0" => Self::Credential(K::Authtoken, A::Updated),
            "tunnel_credential_deleted.v0" => Self::Credential(K::Authtoken, A::Deleted),
            "api_key_created.v0" => Self::Credential(K::ApiKey, A::Created),
            "api_key_updated.v0" => Self::Credential(K::ApiKey, A::Updated),
            "api_key_deleted.v0" => Self::Credential(K::ApiKey, A::Deleted),
            "ssh_public_key_created.v0" => Self::Credential(K::SshKey, A::Created),
            "ssh_public_key_updated.v0" => Self::Credential(K::SshKey, A::Updated),
            "ssh_public_key_deleted.v0" => Self::Credential(K::SshKey, A::Deleted),
            "bot_user_created.v0" => Self::BotUser(A::Created),
            "bot_user_updated.v0" => Self::BotUser(A::Updated),
            "bot_user_deleted.v0" => Self::BotUser(A::Deleted),
            "endpoint_created.v0" => Self::Endpoint(EndpointAction::Created),
            "endpoint_deleted.v0" => Self::Endpoint(EndpointAction::Deleted),
            "agent_session_start.v0" => Self::AgentSession(SessionAction::Start),
            "agent_session_stop.v0" => Self::AgentSession(SessionAction::Stop),
            "http_request_complete.v0" => Self::HttpRequestComplete,
            "tcp_connection_closed.v0" => Self::TcpConnectionClosed,
            _ => Self::Audit,
        }
    }

    /// Traffic (data plane) rather than control plane.
    pub fn is_traffic(self) -> bool {
        matches!(self, Self::HttpRequestComplete | Self::TcpConnectionClosed)
    }
}

/// The typed content of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// A credential was created, updated or deleted.
    Credential {
        /// Authtoken, API key or SSH key.
        kind: CredentialKind,
        /// Created, updated, deleted.
        action: CredentialAction,
        /// The credential resource (without its token).
        credential: Credential,
    },
    /// A bot user was created, updated or deleted.
    BotUser {
        /// Created, updated, deleted.
        action: CredentialAction,
        /// The bot user resource.
        bot_user: BotUser,
    },
    /// An endpoint came up or went away.
    Endpoint {
        /// Created or deleted.
        action: EndpointAction,
        /// The endpoint resource.
        endpoint: Endpoint,
    },
    /// An agent session started or stopped.
    AgentSession {
        /// Start or stop.
        action: SessionAction,
        /// The session.
        session: AgentSession,
    },
    /// An HTTP request completed.
    Http(HttpRequestComplete),
    /// A TCP connection closed.
    Tcp(TcpConnectionClosed),
    /// Any other audit event, kept raw.
    Audit,
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `ev_…`
    pub event_id: String,
    /// As sent, e.g. `tcp_connection_closed.v0`.
    pub event_type: String,
    /// When the event fired.
    pub event_timestamp: DateTime<Utc>,
    /// `ac_…`; empty when absent (ngrok's `test` event has none).
    pub account_id: String,
    /// Who acted; `None` for traffic.
    pub principal: Option<Principal>,
    /// The typed body.
    pub body: EventBody,
    /// The raw `object` with any `token` removed; `None` for traffic events (not kept by default).
    pub object: Option<serde_json::Value>,
    /// Who made the event, when not ngrok: botmeter's envelope field `source` (e.g.
    /// [`SOURCE_SYNC`] for what `botmeter sync` synthesized from the ngrok API). `None`, the
    /// field absent or `null`, is an event of ngrok's own.
    pub source: Option<String>,
}

/// The envelope `source` of the events `botmeter sync` synthesizes from the ngrok API.
pub const SOURCE_SYNC: &str = "botmeter-sync";

impl Event {
    /// The event's type, classified.
    pub fn kind(&self) -> EventType {
        EventType::parse(&self.event_type)
    }

    /// The time usage is attributed at: for connections their end (`conn.end_ts`), else the
    /// event's own timestamp.
    pub fn usage_time(&self) -> DateTime<Utc> {
        match &self.body {
            EventBody::Tcp(tcp) => tcp.conn.end_ts.unwrap_or(self.event_timestamp),
            _ => self.event_timestamp,
        }
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(default, borrow)]
    event_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    event_type: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    event_timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    account_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    principal: Option<&'a RawValue>,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    source: Option<&'a RawValue>,
}

/// Keys whose values are secrets in some ngrok resource (credential tokens, event-destination
/// keys): removed, at any depth, from every object botmeter keeps (invariant 4).
const SECRET_KEYS: &[&str] = &[
    "token",
    "api_key",
    "client_secret",
    "aws_secret_access_key",
    "secret_access_key",
    "password",
    "private_key",
];

fn scrub_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|key, _| !SECRET_KEYS.contains(&key.as_str()));
            map.values_mut().for_each(scrub_secrets);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub_secrets),
        _ => {}
    }
}

/// `null`/absent, or a JSON object: serde would otherwise fill a struct from an array by position.
fn require_object(raw: Option<&RawValue>, field: &str) -> Result<()> {
    match raw.map(|r| r.get().trim_start().as_bytes().first().copied()) {
        None | Some(Some(b'{')) => Ok(()),
        Some(_) if raw.is_some_and(|r| r.get().trim() == "null") => Ok(()),
        Some(_) => Err(DecodeError::new(
            field,
            format!(
                "expected a JSON object, found {}",
                truncate(raw.map_or("", RawValue::get))
            ),
        )),
    }
}

fn truncate(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_owned()
    }
}

/// Decodes one payload. Errors name the event, the field and the value.
pub fn decode(payload: &[u8]) -> Result<Event> {
    let head = parse_head(payload)?;
    let event_id = head.event_id.as_deref().unwrap_or_default().to_owned();
    let event_type = head.event_type.as_deref().unwrap_or_default().to_owned();
    let tag = |e: DecodeError| e.with_event(&event_id, &event_type);
    if event_id.is_empty() {
        return Err(DecodeError::new(
            "event_id",
            "missing field or empty string",
        ));
    }
    if event_type.is_empty() {
        return Err(tag(DecodeError::new(
            "event_type",
            "missing field or empty string",
        )));
    }
    let event_timestamp = parse_timestamp(head.event_timestamp.as_deref()).map_err(tag)?;
    let account_id = parse_account_id(head.account_id).map_err(tag)?;
    let source = parse_source(head.source).map_err(tag)?;
    require_object(head.principal, "principal").map_err(tag)?;
    let principal = match head.principal.map(RawValue::get) {
        None | Some("null") => None,
        Some(raw) => Some(typed_at::<Principal>(raw, "principal").map_err(tag)?),
    };
    require_object(head.object, "object").map_err(tag)?;
    let kind = EventType::parse(&event_type);
    let object_json = match head.object.map(RawValue::get) {
        None | Some("null") => "{}",
        Some(raw) => raw,
    };
    let body = decode_body(kind, object_json, principal.as_ref()).map_err(tag)?;
    let object = if kind.is_traffic() {
        None
    } else {
        Some(kept_object(object_json).map_err(tag)?)
    };
    Ok(Event {
        event_id,
        event_type,
        event_timestamp,
        account_id,
        principal,
        body,
        object,
        source,
    })
}

/// `source`: absent or `null` (ngrok's own event), else a non-empty string.
fn parse_source(raw: Option<&RawValue>) -> Result<Option<String>> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(None),
        Some(raw) => match serde_json::from_str::<String>(raw) {
            Ok(source) if !source.is_empty() => Ok(Some(source)),
            _ => Err(DecodeError::new(
                "source",
                format!(
                    "expected a non-empty string or null, found {}",
                    truncate(raw)
                ),
            )),
        },
    }
}

/// The envelope's top-level fields, from a payload that must be a JSON object.
fn parse_head(payload: &[u8]) -> Result<Head<'_>> {
    // serde reads a struct from a JSON array by position: an envelope must be an object.
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            let reason = match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
                Ok(_) => "not an ngrok event envelope: expected a JSON object".to_owned(),
                Err(e) => format!("not valid JSON: {e}"),
            };
            return Err(DecodeError::new("<payload>", reason));
        }
        None => {
            return Err(DecodeError::new(
                "<payload>",
                "not valid JSON: empty payload",
            ))
        }
    }
    serde_json::from_slice(payload).map_err(|e| {
        let reason = if e.is_data() {
            format!("not an ngrok event envelope: {e}")
        } else {
            format!("not valid JSON: {e}")
        };
        DecodeError::new("<payload>", reason)
    })
}

/// `event_timestamp`: required, RFC 3339, within the storable range ([`crate::limits`]).
fn parse_timestamp(raw: Option<&str>) -> Result<DateTime<Utc>> {
    let Some(raw) = raw else {
        return Err(DecodeError::new(
            "event_timestamp",
            "missing field event_timestamp",
        ));
    };
    let t = DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            DecodeError::new(
                "event_timestamp",
                format!("expected an RFC 3339 timestamp, found {raw:?} ({e})"),
            )
        })?;
    if !crate::limits::storable_time(t) {
        return Err(DecodeError::new(
            "event_timestamp",
            crate::limits::time_out_of_range(t),
        ));
    }
    Ok(t)
}

/// `account_id`: a string, empty when absent or `null`.
fn parse_account_id(raw: Option<&RawValue>) -> Result<String> {
    match raw.map(RawValue::get) {
        None | Some("null") => Ok(String::new()),
        Some(raw) => serde_json::from_str::<String>(raw).map_err(|_| {
            DecodeError::new(
                "account_id",
                format!("expected a string, found {}", truncate(raw)),
            )
        }),
    }
}

/// The `object` of a non-traffic event as kept for the audit log, secrets removed.
fn kept_object(object_json: &str) -> Result<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(object_json)
        .map_err(|e| DecodeError::new("object", format!("not valid JSON: {e}")))?;
    // The API returns a credential's token once; botmeter never keeps it (invariant 4).
    scrub_secrets(&mut value);
    Ok(value)
}

fn typed<'a, T: Deserialize<'a>>(json: &'a str) -> Result<T> {
    typed_at(json, "object")
}

fn typed_at<'a, T: Deserialize<'a>>(json: &'a str, root: &str) -> Result<T> {
    // Fast path: plain serde_json. Only a payload that fails is decoded again, with
    // serde_path_to_error tracking the path for the message (same deserializer, same verdict):
    // tracking every key costs about a tenth of the traffic path's CPU.
    if let Ok(value) = serde_json::from_str(json) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            root.to_owned()
        } else {
            format!("{root}.{path}")
        };
        DecodeError::new(field, e.into_inner().to_string())
    })
}

fn decode_body(kind: EventType, object: &str, principal: Option<&Principal>) -> Result<EventBody> {
    Ok(match kind {
        EventType::Credential(kind, action) => {
            let mut credential: Credential = typed(object)?;
            require_id(&credential.id, "object.id")?;
            if credential.owner_id.is_empty() {
                // ngrok: "Defaults to the authenticated User or Bot".
                match principal.map(|p| p.id.as_str()).filter(|id| !id.is_empty()) {
                    Some(id) => credential.owner_id = id.to_owned(),
                    None => {
                        return Err(DecodeError::new(
                            "object.owner_id",
                            "missing, and no principal to default it to",
                        ))
                    }
                }
            }
            if OwnerKind::of(&credential.owner_id).is_none() {
                return Err(DecodeError::new(
                    "object.owner_id",
                    format!(
                        "expected a usr_, bot_ or service_ id, found {:?}",
                        credential.owner_id
                    ),
                ));
            }
            credential.bind_rules = BindRule::parse_all(&credential.acl)
                .map_err(|e| DecodeError::new("object.acl", e.to_string()))?;
            EventBody::Credential {
                kind,
                action,
                credential,
            }
        }
        EventType::BotUser(action) => {
            let bot_user: BotUser = typed(object)?;
            require_id(&bot_user.id, "object.id")?;
            if OwnerKind::of(&bot_user.id) != Some(OwnerKind::BotUser) {
                return Err(DecodeError::new(
                    "object.id",
                    format!("expected a bot_ id, found {:?}", bot_user.id),
                ));
            }
            EventBody::BotUser { action, bot_user }
        }
        EventType::Endpoint(action) => {
            let endpoint: Endpoint = typed(object)?;
            require_id(&endpoint.id, "object.id")?;
            if endpoint.hostname().is_none() {
                return Err(DecodeError::new(
                    "object.host",
                    "endpoint names no host (host, hostport, url and public_url are all empty)",
                ));
            }
            EventBody::Endpoint { action, endpoint }
        }
        EventType::AgentSession(action) => {
            let session: AgentSession = typed(object)?;
            require_id(&session.session.id, "object.session.id")?;
            require_id(&session.credential.id, "object.credential.id")?;
            EventBody::AgentSession { action, session }
        }
        EventType::HttpRequestComplete => EventBody::Http(typed::<RawHttpComplete>(object)?.into()),
        EventType::TcpConnectionClosed => EventBody::Tcp(typed::<RawTcp>(object)?.into()),
        EventType::Audit => EventBody::Audit,
    })
}

fn require_id(id: &str, field: &str) -> Result<()> {
    if id.is_empty() {
        Err(DecodeError::new(field, "missing field or empty string"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_counts_outside_what_can_be_stored_are_refused_by_name() {
        let tcp = |timestamp: &str, end_ts: &str, bytes_out: &str| {
            format!(
                r#"{{"event_id":"ev_9","event_type":"tcp_connection_closed.v0","event_timestamp":"{timestamp}","object":{{"conn":{{"server_name":"1.tcp.ngrok.io","bytes_out":{bytes_out},"end_ts":"{end_ts}"}}}}}}"#
            )
        };
        let ok = "2026-03-01T10:00:05Z";
        for (payload, field, kind) in [
            (
                tcp("2150-01-01T00:00:00Z", ok, "1"),
                "event_timestamp",
                "event_time_out_of_range",
            ),
            (
                tcp("1969-12-31T23:59:59Z", ok, "1"),
                "event_timestamp",
                "event_time_out_of_range",
            ),
            (
                tcp(ok, "2107-01-01T00:00:00Z", "1"),
                "object.conn.end_ts",
                "event_time_out_of_range",
            ),
            (
                tcp(ok, ok, "9223372036854775808"),
                "object.conn.bytes_out",
                "count_out_of_range",
            ),
            // Beyond u64: serde_json hands it over as a float; still a count out of range.
            (
                tcp(ok, ok, "18446744073709551616"),
                "object.conn.bytes_out",
                "count_out_of_range",
            ),
        ] {
            let err = decode(payload.as_bytes()).unwrap_err();
            assert_eq!((err.field.as_str(), err.kind()), (field, kind), "{err}");
            assert!(err.to_string().contains("ev_9"), "{err}");
        }
        let max = tcp(ok, ok, "9223372036854775807");
        assert!(decode(max.as_bytes()).is_ok());
        assert!(decode(tcp("2106-02-07T06:28:15Z", ok, "1").as_bytes()).is_ok());
    }

    #[test]
    fn error_names_event_field_and_value() {
        let payload = br#"{"event_id":"ev_123","event_type":"tcp_connection_closed.v0","event_timestamp":"2022-02-23T23:51:14Z","object":{"conn":{"bytes_out":"-5"}}}"#;
        let err = decode(payload).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "event ev_123 (tcp_connection_closed.v0): field object.conn.bytes_out:"
            ),
            "{text}"
        );
        assert!(text.contains("-5"), "{text}");
    }

    #[test]
    fn unknown_types_are_kept_as_audit_events() {
        let payload = br#"{"event_id":"ev_1","event_type":"domain_created.v0","event_timestamp":"2022-02-23T23:51:14Z","principal":{"id":"bot_1"},"object":{"id":"rd_1"}}"#;
        let event = decode(payload).unwrap();
        assert_eq!(event.body, EventBody::Audit);
        assert_eq!(event.principal.unwrap().id, "bot_1");
        assert_eq!(event.object.unwrap()["id"], "rd_1");
    }

    #[test]
    fn tokens_are_never_kept() {
        let payload = br#"{"event_id":"ev_1","event_type":"api_key_created.v0","event_timestamp":"2022-02-23T23:51:14Z","object":{"id":"ak_1","owner_id":"bot_1","token":"secret-token"}}"#;
        let event = decode(payload).unwrap();
        assert!(!format!("{event:?}").contains("secret-token"));
    }

    #[test]
    fn credential_owner_defaults_to_principal_and_must_be_an_owner_id() {
        let payload = br#"{"event_id":"ev_1","event_type":"tunnel_credential_created.v0","event_timestamp":"2022-02-23T23:51:14Z","principal":{"id":"usr_9"},"object":{"id":"cr_1"}}"#;
        match decode(payload).unwrap().body {
            EventBody::Credential { credential, .. } => assert_eq!(credential.owner_id, "usr_9"),
            other => panic!("unexpected {other:?}"),
        }
        let payload = br#"{"event_id":"ev_1","event_type":"tunnel_credential_created.v0","event_timestamp":"2022-02-23T23:51:14Z","object":{"id":"cr_1","owner_id":"ak_1"}}"#;
        let err = decode(payload).unwrap_err();
        assert_eq!(err.field, "object.owner_id");
        assert!(err.reason.contains("ak_1"));
    }

    #[test]
    fn bad_acl_is_rejected_at_decode() {
        let payload = br#"{"event_id":"ev_1","event_type":"tunnel_credential_created.v0","event_timestamp":"2022-02-23T23:51:14Z","object":{"id":"cr_1","owner_id":"bot_1","acl":["bind:ok.io","bind:bad host"]}}"#;
        let err = decode(payload).unwrap_err();
        assert_eq!(err.field, "object.acl");
        assert!(err.reason.contains("bind:bad host"), "{err}");
    }

    #[test]
    fn bad_principal_or_account_names_the_field_and_keeps_the_event_id() {
        let err = decode(br#"{"event_id":"ev_1","event_type":"domain_created.v0","event_timestamp":"2022-02-23T23:51:14Z","principal":{"credential":"ak_1"}}"#).unwrap_err();
        assert_eq!(err.event_id.as_deref(), Some("ev_1"));
        assert_eq!(err.field, "principal.credential");
        let err = decode(br#"{"event_id":"ev_1","event_type":"domain_created.v0","event_timestamp":"2022-02-23T23:51:14Z","account_id":5}"#).unwrap_err();
        assert_eq!(err.field, "account_id");
        assert_eq!(err.kind(), "invalid_field");
    }

    #[test]
    fn an_array_shaped_like_an_envelope_is_not_an_event() {
        let err = decode(br#"["ev_array","tcp_connection_closed.v0","2022-02-23T23:51:14Z",null,null,{"conn":{"bytes_out":5}}]"#).unwrap_err();
        assert_eq!(err.field, "<payload>");
        assert_eq!(err.kind(), "malformed_json");
    }

    #[test]
    fn arrays_are_not_objects() {
        let err = decode(br#"{"event_id":"ev_1","event_type":"api_key_created.v0","event_timestamp":"2022-02-23T23:51:14Z","object":["ak_1","","",null,"usr_1"]}"#).unwrap_err();
        assert_eq!(err.field, "object");
        let err = decode(br#"{"event_id":"ev_1","event_type":"domain_created.v0","event_timestamp":"2022-02-23T23:51:14Z","object":"x"}"#).unwrap_err();
        assert_eq!(err.field, "object");
        let err = decode(br#"{"event_id":"ev_1","event_type":"domain_created.v0","event_timestamp":"2022-02-23T23:51:14Z","principal":[]}"#).unwrap_err();
        assert_eq!(err.field, "principal");
    }

    #[test]
    fn nested_secrets_are_scrubbed() {
        let event = decode(br#"{"event_id":"ev_1","event_type":"event_destination_created.v0","event_timestamp":"2022-02-23T23:51:14Z","object":{"id":"ed_1","target":{"datadog":{"api_key":"dd-secret"},"azure_logs_ingestion":{"client_secret":"az-secret"}}}}"#).unwrap();
        let kept = event.object.unwrap().to_string();
        assert!(
            !kept.contains("secret\"")
                && !kept.contains("dd-secret")
                && !kept.contains("az-secret"),
            "{kept}"
        );
        assert!(kept.contains("ed_1"));
    }

    #[test]
    fn source_marks_synthesized_events_and_is_absent_on_ngroks() {
        let event = |source: &str| {
            format!(
                r#"{{"event_id":"ev_1","event_type":"bot_user_created.v0","event_timestamp":"2022-02-23T23:51:14Z",{source}"object":{{"id":"bot_1"}}}}"#
            )
        };
        assert_eq!(decode(event("").as_bytes()).unwrap().source, None);
        assert_eq!(
            decode(event(r#""source":null,"#).as_bytes())
                .unwrap()
                .source,
            None
        );
        assert_eq!(
            decode(event(r#""source":"botmeter-sync","#).as_bytes())
                .unwrap()
                .source
                .as_deref(),
            Some(SOURCE_SYNC)
        );
        for bad in [r#""source":5,"#, r#""source":"","#] {
            let err = decode(event(bad).as_bytes()).unwrap_err();
            assert_eq!(err.field, "source", "{err}");
        }
    }

    #[test]
    fn garbage_is_a_payload_error() {
        let err = decode(b"\xff\x00not json").unwrap_err();
        assert_eq!(err.field, "<payload>");
        assert_eq!(err.kind(), "malformed_json");
        let err = decode(br#"{"event_type":"x"}"#).unwrap_err();
        assert_eq!(err.field, "event_id");
    }
}
