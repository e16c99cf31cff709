//! Where one ngrok event goes in Kafka, read from as little of it as possible: the topic (control
//! or traffic, by `event_type`) and the message key that keeps related events in one partition.
//! Used by producers that take events from outside (`botmeter receive`), which must not decode
//! every field — that is `botmeter run`'s job, with the Kafka position in its dead letters.
//!
//! A payload is routed when it is a JSON object with a non-empty string `event_id` and
//! `event_type`; anything else is [`NotAnEvent`], with a reason. Keys follow `botmeter simulate`:
//! on the traffic topic the endpoint's address (`conn.server_name`, with `:port` for ports other
//! than 80 and 443), so every delivery of one event lands on one partition (the repeat window of
//! `botmeter run` relies on that); on the control topic the owner id the event names (a
//! credential's `owner_id`, a bot user's `id`, an endpoint's `principal.id`, an audit event's
//! principal), else the object's own id (an agent session's credential), else the event id.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::EventType;

/// Which topic an event belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// Credentials, bot users, sessions, endpoints, every other audit event.
    Control,
    /// `http_request_complete.v0`, `tcp_connection_closed.v0`.
    Traffic,
}

impl Destination {
    /// `control` or `traffic`: a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Control => "control",
            Self::Traffic => "traffic",
        }
    }
}

/// Where one event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// Control or traffic topic.
    pub destination: Destination,
    /// The message key.
    pub key: Cow<'a, str>,
    /// `ev_…`
    pub event_id: Cow<'a, str>,
}

/// Why a payload is not an ngrok event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NotAnEvent {
    /// Reason class, a metric and dead-letter label: `malformed_json`, `not_an_event`,
    /// `missing_field`.
    pub kind: &'static str,
    /// What is wrong, naming the field.
    pub reason: String,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    principal: Option<&'a RawValue>,
}

/// The ids an object may carry; read leniently (a field of another type is no key, not an error).
#[derive(Deserialize, Default)]
struct Keys<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    owner_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    principal: Option<IdOf<'a>>,
    #[serde(borrow, default)]
    credential: Option<IdOf<'a>>,
    #[serde(borrow, default)]
    conn: Option<Conn<'a>>,
}

#[derive(Deserialize)]
struct IdOf<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Conn<'a> {
    #[serde(borrow, default)]
    server_name: Option<Cow<'a, str>>,
    #[serde(default)]
    server_port: Option<serde_json::Value>,
}

/// Reads `raw` as `T`, or `None` when it is absent, `null` or of another shape.
fn lenient<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

fn non_empty(value: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    value.filter(|v| !v.is_empty())
}

/// Routes one event payload (its bytes as they go to Kafka, without a trailing newline).
pub fn route(payload: &[u8]) -> Result<Route<'_>, NotAnEvent> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => {
            let (kind, reason) = match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
                Ok(_) => (
                    "not_an_event",
                    "expected a JSON object (an ngrok event)".to_owned(),
                ),
                Err(e) => ("malformed_json", format!("not valid JSON: {e}")),
            };
            return Err(NotAnEvent { kind, reason });
        }
        None => {
            return Err(NotAnEvent {
                kind: "empty",
                reason: "empty record".to_owned(),
            })
        }
    }
    let head: Head<'_> = serde_json::from_slice(payload).map_err(|e| {
        if e.is_data() {
            NotAnEvent {
                kind: "not_an_event",
                reason: format!("not an ngrok event envelope: {e}"),
            }
        } else {
            NotAnEvent {
                kind: "malformed_json",
                reason: format!("not valid JSON: {e}"),
            }
        }
    })?;
    let missing = |field: &str| NotAnEvent {
        kind: "missing_field",
        reason: format!("not an ngrok event: field {field}: missing or empty"),
    };
    let event_id = non_empty(head.event_id).ok_or_else(|| missing("event_id"))?;
    let event_type = non_empty(head.event_type).ok_or_else(|| missing("event_type"))?;
    let kind = EventType::parse(&event_type);
    let keys: Keys<'_> = lenient(head.object).unwrap_or_default();
    let (destination, key) = if kind.is_traffic() {
        (Destination::Traffic, traffic_key(keys.conn))
    } else {
        let principal: Option<IdOf<'_>> = lenient(head.principal);
        (Destination::Control, control_key(kind, keys, principal))
    };
    let key = key.unwrap_or_else(|| event_id.clone());
    Ok(Route {
        destination,
        key,
        event_id,
    })
}

/// The endpoint's address: the hostname, with `:port` for ports other than 80 and 443.
fn traffic_key(conn: Option<Conn<'_>>) -> Option<Cow<'_, str>> {
    let conn = conn?;
    let host = non_empty(conn.server_name)?;
    let port = match conn.server_port {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    Some(match port {
        Some(port) if port != 80 && port != 443 => Cow::Owned(format!("{host}:{port}")),
        _ => host,
    })
}

/// The owner the event names, else the object's own id.
fn control_key<'a>(
    kind: EventType,
    keys: Keys<'a>,
    principal: Option<IdOf<'a>>,
) -> Option<Cow<'a, str>> {
    let principal_id = principal.and_then(|p| non_empty(p.id));
    let object_principal = keys.principal.and_then(|p| non_empty(p.id));
    let credential = keys.credential.and_then(|c| non_empty(c.id));
    let id = non_empty(keys.id);
    match kind {
        EventType::Credential(..) => non_empty(keys.owner_id).or(principal_id).or(id),
        EventType::BotUser(_) => id,
        EventType::Endpoint(_) => object_principal.or(id),
        EventType::AgentSession(_) => credential.or(id),
        _ => principal_id.or(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(payload: &str) -> (Destination, String) {
        let route = route(payload.as_bytes()).unwrap();
        (route.destination, route.key.into_owned())
    }

    #[test]
    fn traffic_is_keyed_by_the_endpoint_address() {
        let http = r#"{"event_id":"ev_1","event_type":"http_request_complete.v0","object":{"conn":{"server_name":"a.example.com","server_port":443}}}"#;
        assert_eq!(routed(http), (Destination::Traffic, "a.example.com".into()));
        let tcp = r#"{"event_id":"ev_2","event_type":"tcp_connection_closed.v0","object":{"conn":{"server_name":"1.tcp.ngrok.io","server_port":20002}}}"#;
        assert_eq!(
            routed(tcp),
            (Destination::Traffic, "1.tcp.ngrok.io:20002".into())
        );
        // ngrok's own example sends server_port "": the hostname alone.
        let quirk = r#"{"event_id":"ev_3","event_type":"tcp_connection_closed.v0","object":{"conn":{"server_name":"h.example","server_port":""}}}"#;
        assert_eq!(routed(quirk), (Destination::Traffic, "h.example".into()));
        // No hostname: the event id keeps every delivery of the event on one partition.
        let bare = r#"{"event_id":"ev_4","event_type":"tcp_connection_closed.v0","object":{}}"#;
        assert_eq!(routed(bare), (Destination::Traffic, "ev_4".into()));
    }

    #[test]
    fn control_is_keyed_by_the_owner_it_names() {
        let credential = r#"{"event_id":"ev_1","event_type":"tunnel_credential_created.v0","principal":{"id":"usr_1"},"object":{"id":"cr_1","owner_id":"bot_1"}}"#;
        assert_eq!(routed(credential), (Destination::Control, "bot_1".into()));
        let defaulted = r#"{"event_id":"ev_1","event_type":"api_key_created.v0","principal":{"id":"usr_1"},"object":{"id":"ak_1"}}"#;
        assert_eq!(routed(defaulted).1, "usr_1");
        let bot = r#"{"event_id":"ev_1","event_type":"bot_user_updated.v0","principal":{"id":"usr_1"},"object":{"id":"bot_9"}}"#;
        assert_eq!(routed(bot).1, "bot_9");
        let endpoint = r#"{"event_id":"ev_1","event_type":"endpoint_created.v0","object":{"id":"ep_1","principal":{"id":"bot_2"}}}"#;
        assert_eq!(routed(endpoint).1, "bot_2");
        let session = r#"{"event_id":"ev_1","event_type":"agent_session_start.v0","object":{"session":{"id":"ts_1"},"credential":{"id":"cr_7"}}}"#;
        assert_eq!(routed(session).1, "cr_7");
        let audit = r#"{"event_id":"ev_1","event_type":"ip_policy_created.v0","principal":{"id":"usr_5"},"object":{"id":"ipp_1"}}"#;
        assert_eq!(routed(audit), (Destination::Control, "usr_5".into()));
    }

    #[test]
    fn odd_shapes_inside_the_object_are_not_errors() {
        // A field of another type is no key, not a reason to refuse the event.
        let odd = r#"{"event_id":"ev_1","event_type":"domain_created.v0","principal":"x","object":{"id":7,"credential":"y"}}"#;
        assert_eq!(routed(odd), (Destination::Control, "ev_1".into()));
        let null_object = r#"{"event_id":"ev_1","event_type":"domain_created.v0","object":null}"#;
        assert_eq!(routed(null_object).1, "ev_1");
    }

    #[test]
    fn what_is_not_an_event_says_why() {
        let cases = [
            ("", "empty", "empty record"),
            ("not json", "malformed_json", "not valid JSON"),
            ("[1,2]", "not_an_event", "expected a JSON object"),
            (r#"{"event_id":"ev_1""#, "malformed_json", "not valid JSON"),
            (
                r#"{"event_type":"x.v0"}"#,
                "missing_field",
                "field event_id",
            ),
            (
                r#"{"event_id":"ev_1","event_type":""}"#,
                "missing_field",
                "field event_type",
            ),
            (
                r#"{"event_id":5,"event_type":"x"}"#,
                "not_an_event",
                "invalid type",
            ),
        ];
        for (payload, kind, reason) in cases {
            let err = route(payload.as_bytes()).unwrap_err();
            assert_eq!(err.kind, kind, "{payload}: {err}");
            assert!(err.reason.contains(reason), "{payload}: {err}");
        }
    }
}
