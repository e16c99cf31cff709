//! The hot path's traffic decoder: [`decode_traffic`] reads an `http_request_complete.v0` or
//! `tcp_connection_closed.v0` payload in one pass, borrowing its strings from the payload (no
//! allocation unless a string holds an escape), into the few fields usage rows need.
//!
//! It is a fast path, not a second decoder with its own verdicts: it answers `None` for anything it
//! does not take in stride (another event type, a `principal`, an array where an object belongs, a
//! Traffic Policy whose metadata it would have to walk, any value [`crate::decode`] might reject),
//! and the caller then runs [`crate::decode`], which gives the verdict and the error message.
//! Whenever it answers `Some`, [`crate::decode`] accepts the payload with the same values; the
//! tests check this over every field's absent, `null`, valid, wrongly typed and escaped forms.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::objects::{lenient_port, opt_timestamp, Text, TrafficPolicy};

/// Which of the two traffic events a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficKind {
    /// `http_request_complete.v0`
    Http,
    /// `tcp_connection_closed.v0`
    Tcp,
}

impl TrafficKind {
    /// The `event_type` it is sent as.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Http => HTTP_EVENT_TYPE,
            Self::Tcp => TCP_EVENT_TYPE,
        }
    }
}

const HTTP_EVENT_TYPE: &str = "http_request_complete.v0";
const TCP_EVENT_TYPE: &str = "tcp_connection_closed.v0";

/// What usage rows need of one traffic event, borrowed from its payload where it can be.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficRef<'a> {
    /// `ev_…`
    pub event_id: Cow<'a, str>,
    /// HTTP request or TCP connection.
    pub kind: TrafficKind,
    /// The event's own timestamp.
    pub event_timestamp: DateTime<Utc>,
    /// `ac_…`; empty when absent or `null`.
    pub account_id: Cow<'a, str>,
    /// `conn.server_name`, as sent (not lowercased).
    pub server_name: Cow<'a, str>,
    /// `conn.server_port`.
    pub server_port: Option<u16>,
    /// `conn.bytes_in`.
    pub bytes_in: u64,
    /// `conn.bytes_out`.
    pub bytes_out: u64,
    /// `conn.end_ts`.
    pub end_ts: Option<DateTime<Utc>>,
    /// `http.response.status_code` (HTTP only, else 0).
    pub status_code: u16,
    /// `http.request.body_length` (HTTP only, else 0).
    pub request_body_length: u64,
    /// `http.response.body_length` (HTTP only, else 0).
    pub response_body_length: u64,
    /// The endpoint a Traffic Policy `log` action named.
    pub endpoint_id: Option<Cow<'a, str>>,
}

impl TrafficRef<'_> {
    /// The time usage is attributed at, as [`crate::Event::usage_time`] defines it.
    pub fn usage_time(&self) -> DateTime<Utc> {
        match self.kind {
            TrafficKind::Tcp => self.end_ts.unwrap_or(self.event_timestamp),
            TrafficKind::Http => self.event_timestamp,
        }
    }
}

impl crate::Event {
    /// The traffic fields of a decoded traffic event, as [`decode_traffic`] reads them; `None` for
    /// a control-plane event.
    pub fn traffic(&self) -> Option<TrafficRef<'_>> {
        use crate::EventBody;
        let (kind, conn, endpoint_id, http) = match &self.body {
            EventBody::Http(http) => (TrafficKind::Http, &http.conn, &http.endpoint_id, Some(http)),
            EventBody::Tcp(tcp) => (TrafficKind::Tcp, &tcp.conn, &tcp.endpoint_id, None),
            _ => return None,
        };
        Some(TrafficRef {
            event_id: Cow::Borrowed(&self.event_id),
            kind,
            event_timestamp: self.event_timestamp,
            account_id: Cow::Borrowed(&self.account_id),
            server_name: Cow::Borrowed(&conn.server_name),
            server_port: conn.server_port,
            bytes_in: conn.bytes_in,
            bytes_out: conn.bytes_out,
            end_ts: conn.end_ts,
            status_code: http.map_or(0, |h| h.status_code),
            request_body_length: http.map_or(0, |h| h.request_body_length),
            response_body_length: http.map_or(0, |h| h.response_body_length),
            endpoint_id: endpoint_id.as_deref().map(Cow::Borrowed),
        })
    }
}

/// Decodes a traffic event in one pass, or `None`: then [`crate::decode`] decides (see the
/// module's header).
pub fn decode_traffic(payload: &[u8]) -> Option<TrafficRef<'_>> {
    let MapOnly(envelope) = serde_json::from_slice::<MapOnly<Envelope<'_>>>(payload).ok()?;
    if envelope.principal.is_some() {
        return None;
    }
    let kind = match text(envelope.event_type).as_deref()? {
        HTTP_EVENT_TYPE => TrafficKind::Http,
        TCP_EVENT_TYPE => TrafficKind::Tcp,
        _ => return None,
    };
    let event_id = text(envelope.event_id).filter(|id| !id.is_empty())?;
    let event_timestamp = DateTime::parse_from_rfc3339(text(envelope.event_timestamp).as_deref()?)
        .ok()?
        .with_timezone(&Utc);
    if !crate::limits::storable_time(event_timestamp) {
        return None; // the full decoder names the range
    }
    let object = envelope
        .object
        .map(|MapOnly(object)| object)
        .unwrap_or_default();
    let endpoint_id = match object.traffic_policy {
        None => None,
        Some(raw) => serde_json::from_str::<TrafficPolicy>(raw.get())
            .ok()?
            .endpoint_id()
            .map(Cow::Owned),
    };
    let MapOnly(conn) = object.conn;
    let MapOnly(http) = object.http;
    let (MapOnly(request), MapOnly(response)) = (http.request, http.response);
    let is_http = kind == TrafficKind::Http;
    let counts = [
        conn.bytes_in,
        conn.bytes_out,
        request.body_length,
        response.body_length,
    ];
    if counts
        .iter()
        .any(|n| n.is_some_and(|n| n > crate::limits::MAX_COUNT))
    {
        return None; // the full decoder names the field and the bound
    }
    Some(TrafficRef {
        event_id,
        kind,
        event_timestamp,
        account_id: text(envelope.account_id).unwrap_or_default(),
        server_name: text(conn.server_name).unwrap_or_default(),
        server_port: conn.server_port,
        bytes_in: conn.bytes_in.unwrap_or_default(),
        bytes_out: conn.bytes_out.unwrap_or_default(),
        end_ts: conn.end_ts,
        status_code: if is_http {
            response.status_code.unwrap_or_default()
        } else {
            0
        },
        request_body_length: if is_http {
            request.body_length.unwrap_or_default()
        } else {
            0
        },
        response_body_length: if is_http {
            response.body_length.unwrap_or_default()
        } else {
            0
        },
        endpoint_id,
    })
}

/// The envelope; unknown keys are skipped, as by [`crate::decode`].
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    event_id: Option<Text<'a>>,
    #[serde(default, borrow)]
    event_type: Option<Text<'a>>,
    #[serde(default, borrow)]
    event_timestamp: Option<Text<'a>>,
    #[serde(default, borrow)]
    account_id: Option<Text<'a>>,
    /// Present at all (even `null`): left to the full decoder.
    #[serde(default, borrow, deserialize_with = "present")]
    principal: Option<&'a RawValue>,
    #[serde(default, borrow)]
    object: Option<MapOnly<TrafficObject<'a>>>,
}

/// An HTTP object is a TCP one plus `http`, so one shape reads both; a TCP event's `http`, if
/// any, must still read cleanly (else the full decoder decides) and is then ignored.
#[derive(Default, Deserialize)]
struct TrafficObject<'a> {
    #[serde(default, borrow)]
    conn: MapOnly<Conn<'a>>,
    #[serde(default, borrow)]
    http: MapOnly<Http<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    traffic_policy: Option<&'a RawValue>,
}

#[derive(Default, Deserialize)]
struct Conn<'a> {
    #[serde(default, borrow)]
    server_name: Option<Text<'a>>,
    #[serde(default, deserialize_with = "lenient_port")]
    server_port: Option<u16>,
    // Not used, but read as strings as the full decoder reads them.
    #[serde(default, borrow, rename = "server_ip")]
    _server_ip: Option<Text<'a>>,
    #[serde(default, borrow, rename = "client_ip")]
    _client_ip: Option<Text<'a>>,
    #[serde(default)]
    bytes_in: Option<u64>,
    #[serde(default)]
    bytes_out: Option<u64>,
    // Not used, but read as a timestamp as the full decoder reads it.
    #[serde(default, deserialize_with = "opt_timestamp", rename = "start_ts")]
    _start_ts: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "opt_timestamp")]
    end_ts: Option<DateTime<Utc>>,
}

#[derive(Default, Deserialize)]
struct Http<'a> {
    #[serde(default, borrow)]
    request: MapOnly<HttpRequest<'a>>,
    #[serde(default)]
    response: MapOnly<HttpResponse>,
}

#[derive(Default, Deserialize)]
struct HttpRequest<'a> {
    // Not used, but read as a string as the full decoder reads it.
    #[serde(default, borrow, rename = "method")]
    _method: Option<Text<'a>>,
    #[serde(default)]
    body_length: Option<u64>,
}

#[derive(Default, Deserialize)]
struct HttpResponse {
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default)]
    body_length: Option<u64>,
}

fn text(field: Option<Text<'_>>) -> Option<Cow<'_, str>> {
    field.map(|Text(text)| text)
}

/// A field that is present, whatever its value (`null` included), as its raw JSON.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// A struct read only from a JSON object: serde would also fill one from an array, by position,
/// which the full decoder's own rules would judge differently.
#[derive(Default)]
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(MapVisitor(PhantomData))
            .map(MapOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, Event};

    /// The full decoder's reading of the same fields, for comparison.
    fn full(payload: &str) -> Option<TrafficRef<'static>> {
        let event: Event = decode(payload.as_bytes()).ok()?;
        let traffic = event.traffic()?;
        Some(TrafficRef {
            event_id: Cow::Owned(traffic.event_id.into_owned()),
            account_id: Cow::Owned(traffic.account_id.into_owned()),
            server_name: Cow::Owned(traffic.server_name.into_owned()),
            endpoint_id: traffic.endpoint_id.map(|id| Cow::Owned(id.into_owned())),
            ..traffic
        })
    }

    const TCP: &str = r#"{"event_id":"ev_1","event_version":"1","event_type":"tcp_connection_closed.v0","event_timestamp":"2026-03-01T10:00:05.123456Z","account_id":"ac_1","object":{"conn":{"server_name":"1.tcp.ngrok.io","server_port":20002,"server_ip":"3.1.1.1","client_ip":"9.9.9.9","bytes_in":10,"bytes_out":2048,"start_ts":"2026-03-01T10:00:00Z","end_ts":"2026-03-01T10:00:04Z"}}}"#;
    const HTTP: &str = r#"{"event_id":"ev_2","event_type":"http_request_complete.v0","event_timestamp":"2026-03-01T10:00:05Z","account_id":"ac_1","object":{"conn":{"server_name":"API.example.com","server_port":"443","bytes_in":700,"bytes_out":900},"http":{"request":{"method":"get","body_length":12,"url":{"path":"/x"}},"response":{"status_code":201,"body_length":34}}}}"#;

    #[test]
    fn ordinary_traffic_takes_the_fast_path_borrowing_its_strings() {
        for payload in [TCP, HTTP] {
            let fast = decode_traffic(payload.as_bytes()).expect("fast path");
            assert!(matches!(fast.event_id, Cow::Borrowed(_)));
            assert!(matches!(fast.server_name, Cow::Borrowed(_)));
            assert_eq!(Some(fast), full(payload));
        }
        let tcp = decode_traffic(TCP.as_bytes()).unwrap();
        assert_eq!(tcp.usage_time().to_rfc3339(), "2026-03-01T10:00:04+00:00");
        assert_eq!(
            (tcp.bytes_in, tcp.bytes_out, tcp.server_port),
            (10, 2048, Some(20002))
        );
        let http = decode_traffic(HTTP.as_bytes()).unwrap();
        assert_eq!(
            (
                http.status_code,
                http.request_body_length,
                http.response_body_length
            ),
            (201, 12, 34)
        );
        assert_eq!(http.server_port, Some(443));
    }

    #[test]
    fn what_it_does_not_take_is_left_to_the_full_decoder() {
        let cases = [
            // another event type
            TCP.replace("tcp_connection_closed.v0", "agent_session_start.v0"),
            // a principal, even null
            TCP.replace(
                r#""account_id":"ac_1""#,
                r#""account_id":"ac_1","principal":null"#,
            ),
            // an array where an object belongs
            TCP.replace(r#""object":{"conn":{"#, r#""object":{"conn":["#)
                .replace(r#"04Z"}}}"#, r#"04Z"]}}"#),
            // a bad timestamp, a bad port, an empty id, no id
            TCP.replace("2026-03-01T10:00:05.123456Z", "yesterday"),
            TCP.replace("20002", "70000"),
            TCP.replace(r#""ev_1""#, r#""""#),
            TCP.replace(r#""event_id":"ev_1","#, ""),
            // a null conn (which the full decoder rejects)
            TCP.replace(r#""conn":{"#, r#""conn":null,"x":{"#),
            // not an object at all
            "[1,2]".to_owned(),
        ];
        for payload in cases {
            assert_eq!(decode_traffic(payload.as_bytes()), None, "{payload}");
        }
    }

    #[test]
    fn a_traffic_policy_endpoint_is_read_like_the_full_decoder_reads_it() {
        let payload = TCP.replace(
            r#""object":{"#,
            r#""object":{"traffic_policy":{"logs":[{"metadata":{"endpoint_id":"ep_7"}}]},"#,
        );
        let fast = decode_traffic(payload.as_bytes()).expect("fast path");
        assert_eq!(fast.endpoint_id.as_deref(), Some("ep_7"));
        assert_eq!(Some(fast), full(&payload));
    }

    /// One field's possible forms, valid and not.
    fn forms(field: &str) -> Vec<&'static str> {
        let mut forms = vec![
            "null",
            "\"\"",
            "[]",
            "{}",
            "1",
            "-1",
            "1.5",
            "true",
            "\"x\\u0041\"",
        ];
        forms.extend(match field {
            "event_timestamp" | "end_ts" | "start_ts" => {
                vec![
                    "\"2026-03-01T10:00:05Z\"",
                    "\"2026-03-01T10:00:05+05:30\"",
                    "\"nope\"",
                    "\"2106-02-07T06:28:16Z\"",
                    "\"1969-12-31T23:59:59Z\"",
                ]
            }
            "server_port" => vec!["443", "\" 80 \"", "\"65536\"", "70000", "\"\""],
            "bytes_in" | "bytes_out" | "body_length" => vec![
                "0",
                "9223372036854775807",
                "9223372036854775808",
                "18446744073709551615",
                "18446744073709551616",
                "1e30",
            ],
            "status_code" => vec!["200", "65536"],
            "event_type" => vec![
                "\"http_request_complete.v0\"",
                "\"tcp_connection_closed.v0\"",
            ],
            "traffic_policy" => vec![
                r#"{"logs":[{"metadata":{"endpoint_id":"ep_9"}}]}"#,
                r#"{"logs":null}"#,
                r#"{"logs":[{"metadata":{"endpoint_id":3}}]}"#,
            ],
            _ => vec!["\"ev_\\\"q\\\"\"", "\"API.Example.COM\""],
        });
        forms
    }

    fn with_field(payload: &str, path: &[&str], value: &str) -> Option<String> {
        let mut json: serde_json::Value = serde_json::from_str(payload).ok()?;
        let mut target = &mut json;
        for key in &path[..path.len() - 1] {
            target = target.get_mut(*key)?;
        }
        let value: serde_json::Value = serde_json::from_str(value).ok()?;
        target
            .as_object_mut()?
            .insert(path[path.len() - 1].to_owned(), value);
        Some(json.to_string())
    }

    #[test]
    fn whenever_the_fast_path_answers_the_full_decoder_agrees() {
        let paths: &[&[&str]] = &[
            &["event_id"],
            &["event_type"],
            &["event_timestamp"],
            &["account_id"],
            &["object"],
            &["object", "conn"],
            &["object", "http"],
            &["object", "traffic_policy"],
            &["object", "conn", "server_name"],
            &["object", "conn", "server_port"],
            &["object", "conn", "server_ip"],
            &["object", "conn", "client_ip"],
            &["object", "conn", "bytes_in"],
            &["object", "conn", "bytes_out"],
            &["object", "conn", "start_ts"],
            &["object", "conn", "end_ts"],
            &["object", "http", "request"],
            &["object", "http", "response"],
            &["object", "http", "request", "body_length"],
            &["object", "http", "request", "method"],
            &["object", "http", "response", "status_code"],
            &["object", "http", "response", "body_length"],
        ];
        let (mut fast_answers, mut cases) = (0, 0);
        for base in [TCP, HTTP] {
            for path in paths {
                let field = path[path.len() - 1];
                for form in forms(field) {
                    let Some(payload) = with_field(base, path, form) else {
                        continue;
                    };
                    cases += 1;
                    if let Some(fast) = decode_traffic(payload.as_bytes()) {
                        fast_answers += 1;
                        assert_eq!(Some(fast), full(&payload), "{payload}");
                    }
                }
            }
        }
        // The comparison means something only if the fast path answered often.
        assert!(
            cases > 300 && fast_answers * 4 > cases,
            "{fast_answers} of {cases}"
        );
    }
}
