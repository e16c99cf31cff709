//! The objects carried in an event's `object`: ngrok's API resources for credentials, bot users and
//! endpoints, the agent-session object, and ngrok's traffic objects. Field names are ngrok's.
//!
//! Credential tokens are deliberately not a field of any type here: serde skips them, so a token
//! is never held, stored or logged (invariant 4).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::bind::BindRule;

/// The three kinds of credential whose owner usage is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Tunnel credential (`cr_…`), what an agent authenticates with.
    Authtoken,
    /// API key (`ak_…`), used for the ngrok API.
    ApiKey,
    /// SSH public key (`sshcr_…`), what an SSH-tunnel agent authenticates with.
    SshKey,
}

impl CredentialKind {
    /// The stored name: `authtoken`, `api_key`, `ssh_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authtoken => "authtoken",
            Self::ApiKey => "api_key",
            Self::SshKey => "ssh_key",
        }
    }
}

/// Whether an owner is a person or a bot user (service account).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerKind {
    /// `usr_…`
    User,
    /// `bot_…` (and ngrok's newer `service_…` service users, the same thing renamed).
    BotUser,
}

impl OwnerKind {
    /// The kind of owner an id names, from its prefix; `None` for any other id.
    pub fn of(owner_id: &str) -> Option<Self> {
        if owner_id.starts_with("usr_") {
            Some(Self::User)
        } else if owner_id.starts_with("bot_") || owner_id.starts_with("service_") {
            Some(Self::BotUser)
        } else {
            None
        }
    }

    /// The stored name: `user` or `bot_user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::BotUser => "bot_user",
        }
    }
}

/// A reference to another resource (`{"id": …, "uri": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ref {
    /// The resource id.
    #[serde(default)]
    pub id: String,
    /// The resource's API URI.
    #[serde(default, deserialize_with = "null_as_default")]
    pub uri: String,
}

/// A credential: tunnel credential (authtoken), API key or SSH public key, as ngrok's API resource.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Credential {
    /// `cr_…`, `ak_…` or `sshcr_…`.
    pub id: String,
    /// Human-readable description.
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    /// Arbitrary user data (a string in ngrok's API, often JSON).
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: String,
    /// When the credential was created.
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub created_at: Option<DateTime<Utc>>,
    /// The owning user or bot user. ngrok defaults it to the creating principal; so does the decoder.
    #[serde(default, deserialize_with = "null_as_default")]
    pub owner_id: String,
    /// Raw ACL rules (`bind:…`), tunnel credentials and SSH keys only.
    #[serde(default, deserialize_with = "null_as_default")]
    pub acl: Vec<String>,
    /// The ACL rules, parsed and validated at decode.
    #[serde(skip)]
    pub bind_rules: Vec<BindRule>,
}

/// A bot user (ngrok's Bot User / Service User resource).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BotUser {
    /// `bot_…`
    pub id: String,
    /// Human-readable name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Whether the bot may authenticate; a deactivated bot's usage is flagged. Absent or `null`
    /// reads as active.
    #[serde(default = "default_true", deserialize_with = "null_as_true")]
    pub active: bool,
    /// When the bot user was created.
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub created_at: Option<DateTime<Utc>>,
}

/// An endpoint (ngrok's Endpoint resource): where traffic arrives, and which session serves it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Endpoint {
    /// `ep_…`
    pub id: String,
    /// `https://name.ngrok.app` or `tcp://1.tcp.ngrok.io:20002`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub url: String,
    /// Older name of `url`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub public_url: String,
    /// `host:port`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub hostport: String,
    /// Hostname.
    #[serde(default, deserialize_with = "null_as_default")]
    pub host: String,
    /// Port; ngrok sends an integer, tolerated as a string too.
    #[serde(default, deserialize_with = "lenient_port")]
    pub port: Option<u16>,
    /// `http`, `https`, `tcp`, `tls`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub proto: String,
    /// The agent session serving this endpoint.
    #[serde(default)]
    pub tunnel_session: Option<Ref>,
    /// The endpoint's owner (bot or user), which must agree with the credential's owner.
    #[serde(default)]
    pub principal: Option<Ref>,
    /// Labels (for labeled tunnels); bind rules may restrict them.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// When the endpoint came up.
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub created_at: Option<DateTime<Utc>>,
}

impl Endpoint {
    /// The hostname traffic is matched on: `host`, else the host of `hostport`, `url` or
    /// `public_url`, lowercased.
    pub fn hostname(&self) -> Option<String> {
        if !self.host.is_empty() {
            return Some(self.host.to_ascii_lowercase());
        }
        [&self.hostport, &self.url, &self.public_url]
            .into_iter()
            .find_map(|s| split_hostport(s).map(|(host, _)| host.to_ascii_lowercase()))
    }

    /// The port, when the endpoint names one (`port`, else from `hostport` or `url`).
    pub fn port_number(&self) -> Option<u16> {
        self.port.or_else(|| {
            [&self.hostport, &self.url, &self.public_url]
                .into_iter()
                .find_map(|s| split_hostport(s).and_then(|(_, port)| port))
        })
    }

    /// The session id serving this endpoint, if named.
    pub fn session_id(&self) -> Option<&str> {
        self.tunnel_session
            .as_ref()
            .map(|r| r.id.as_str())
            .filter(|id| !id.is_empty())
    }
}

/// `scheme://host:port/path` or `host:port` → (host, port).
fn split_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let rest = s.split_once("://").map_or(s, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return None;
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host, port.parse().ok())),
        _ => Some((authority, None)),
    }
}

/// An agent session (`agent_session_start.v0` / `agent_session_stop.v0` object).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AgentSession {
    /// The session (`ts_…`).
    pub session: Ref,
    /// The tunnel credential or SSH key that authenticated it.
    pub credential: Ref,
    /// Agent's public IP.
    #[serde(default, deserialize_with = "null_as_default")]
    pub agent_ip: String,
    /// Region the agent connected to.
    #[serde(default, deserialize_with = "null_as_default")]
    pub region: String,
    /// When the session started.
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the session stopped (stop events).
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub stopped_at: Option<DateTime<Utc>>,
}

/// The `conn` part of a traffic object.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TrafficConn {
    /// Hostname the client asked for (SNI / Host).
    #[serde(default, deserialize_with = "null_as_default")]
    pub server_name: String,
    /// Port the client connected to; ngrok's own examples send `""`.
    #[serde(default, deserialize_with = "lenient_port")]
    pub server_port: Option<u16>,
    /// Server IP.
    #[serde(default, deserialize_with = "null_as_default")]
    pub server_ip: String,
    /// Client IP.
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_ip: String,
    /// Bytes that arrived at the endpoint.
    #[serde(default, deserialize_with = "bounded_count")]
    pub bytes_in: u64,
    /// Bytes that left the endpoint (what ngrok bills as data transfer out).
    #[serde(default, deserialize_with = "bounded_count")]
    pub bytes_out: u64,
    /// Connection start.
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub start_ts: Option<DateTime<Utc>>,
    /// Connection end.
    #[serde(default, deserialize_with = "opt_timestamp")]
    pub end_ts: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct TrafficPolicy {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) logs: Vec<TrafficPolicyLog>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub(crate) struct TrafficPolicyLog {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) metadata: BTreeMap<String, serde_json::Value>,
}

impl TrafficPolicy {
    /// The `ep_` id a Traffic Policy `log` action put in its metadata, if any.
    pub(crate) fn endpoint_id(&self) -> Option<String> {
        self.logs.iter().find_map(|log| {
            log.metadata
                .get("endpoint_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
    }
}

/// `tcp_connection_closed.v0`: one closed connection, with its bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TcpConnectionClosed {
    /// The connection.
    pub conn: TrafficConn,
    /// Endpoint id from a Traffic Policy `log` action, when present.
    pub endpoint_id: Option<String>,
}

/// `http_request_complete.v0`: one HTTP request. Its body sizes are never added to connection
/// bytes (the connection event already counts them).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpRequestComplete {
    /// The connection the request came on.
    pub conn: TrafficConn,
    /// Request method, uppercased (ngrok's docs say lowercase, its example sends `GET`).
    pub method: String,
    /// Response status code (0 when absent).
    pub status_code: u16,
    /// Request body bytes.
    pub request_body_length: u64,
    /// Response body bytes.
    pub response_body_length: u64,
    /// Endpoint id from a Traffic Policy `log` action, when present.
    pub endpoint_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawTcp {
    #[serde(default)]
    conn: TrafficConn,
    #[serde(default)]
    traffic_policy: TrafficPolicy,
}

impl From<RawTcp> for TcpConnectionClosed {
    fn from(raw: RawTcp) -> Self {
        Self {
            endpoint_id: raw.traffic_policy.endpoint_id(),
            conn: raw.conn,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawHttpRequest {
    #[serde(default, deserialize_with = "null_as_default")]
    method: String,
    #[serde(default, deserialize_with = "bounded_count")]
    body_length: u64,
}

#[derive(Debug, Default, Deserialize)]
struct RawHttpResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    status_code: u16,
    #[serde(default, deserialize_with = "bounded_count")]
    body_length: u64,
}

#[derive(Debug, Default, Deserialize)]
struct RawHttp {
    #[serde(default)]
    request: RawHttpRequest,
    #[serde(default)]
    response: RawHttpResponse,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RawHttpComplete {
    #[serde(default)]
    conn: TrafficConn,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    traffic_policy: TrafficPolicy,
}

impl From<RawHttpComplete> for HttpRequestComplete {
    fn from(raw: RawHttpComplete) -> Self {
        Self {
            endpoint_id: raw.traffic_policy.endpoint_id(),
            conn: raw.conn,
            method: raw.http.request.method.to_ascii_uppercase(),
            status_code: raw.http.response.status_code,
            request_body_length: raw.http.request.body_length,
            response_body_length: raw.http.response.body_length,
        }
    }
}

fn default_true() -> bool {
    true
}

fn null_as_true<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(true))
}

/// `null` reads as the type's default (ngrok sends `null` for absent optional values).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string borrowed from the payload, or owned when it holds an escape. (serde's own `Cow`
/// borrows only as a struct's direct field, not inside an `Option`.)
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor(PhantomData))
    }
}

/// RFC 3339 timestamp, `null` or `""` read as absent.
pub(crate) fn opt_timestamp<'de, D>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw: Option<Text<'de>> = Option::deserialize(deserializer)?;
    match raw.as_ref().map(|Text(s)| s.as_ref()) {
        None | Some("") => Ok(None),
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    de::Error::custom(format!("expected an RFC 3339 timestamp, found {s:?} ({e})"))
                })?;
            if !crate::limits::storable_time(t) {
                return Err(de::Error::custom(crate::limits::time_out_of_range(t)));
            }
            Ok(Some(t))
        }
    }
}

/// A byte count or length: an unsigned integer up to [`crate::limits::MAX_COUNT`], `0` for
/// `null` or absent.
pub(crate) fn bounded_count<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    /// A `u64` as serde_json hands integers over, except that one too large for a `u64` (which
    /// serde_json hands over as a float) is a count out of range, not a type error.
    struct Count(u64);
    impl<'de> Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct CountVisitor;
            impl Visitor<'_> for CountVisitor {
                type Value = Count;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("u64")
                }
                fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                    Ok(Count(n))
                }
                fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                    u64::try_from(n)
                        .map(Count)
                        .map_err(|_| E::invalid_type(de::Unexpected::Signed(n), &self))
                }
                fn visit_f64<E: de::Error>(self, n: f64) -> Result<Count, E> {
                    if n.fract() == 0.0 && n >= 18_446_744_073_709_551_616.0 {
                        Err(E::custom(crate::limits::count_out_of_range(
                            "a number above 18446744073709551615",
                        )))
                    } else {
                        Err(E::invalid_type(de::Unexpected::Float(n), &self))
                    }
                }
            }
            deserializer.deserialize_any(CountVisitor)
        }
    }
    let n = Option::<Count>::deserialize(deserializer)?.map_or(0, |Count(n)| n);
    if n > crate::limits::MAX_COUNT {
        return Err(de::Error::custom(crate::limits::count_out_of_range(n)));
    }
    Ok(n)
}

/// A port: an integer, a numeric string, or `""`/`null` for none (ngrok's examples send `""`).
pub(crate) fn lenient_port<'de, D>(deserializer: D) -> Result<Option<u16>, D::Error>
where
    D: Deserializer<'de>,
{
    struct PortVisitor;
    fn invalid<E: de::Error>(found: impl fmt::Display) -> E {
        E::custom(format!("expected a port number 0..=65535, found {found}"))
    }
    impl<'de> Visitor<'de> for PortVisitor {
        type Value = Option<u16>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port number 0..=65535")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Option<u16>, E> {
            u16::try_from(n).map(Some).map_err(|_| invalid(n))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Option<u16>, E> {
            u16::try_from(n).map(Some).map_err(|_| invalid(n))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Option<u16>, E> {
            let port = s.trim();
            if port.is_empty() {
                return Ok(None);
            }
            port.parse::<u16>()
                .map(Some)
                .map_err(|_| invalid(format!("{s:?}")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<u16>, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<u16>, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(PortVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hostname_and_port_come_from_whichever_field_is_set() {
        let ep: Endpoint = serde_json::from_str(
            r#"{"id":"ep_1","url":"tcp://1.tcp.ngrok.io:20002","proto":"tcp"}"#,
        )
        .unwrap();
        assert_eq!(ep.hostname().as_deref(), Some("1.tcp.ngrok.io"));
        assert_eq!(ep.port_number(), Some(20002));
        let ep: Endpoint =
            serde_json::from_str(r#"{"id":"ep_2","host":"API.Example.com","port":"443"}"#).unwrap();
        assert_eq!(ep.hostname().as_deref(), Some("api.example.com"));
        assert_eq!(ep.port_number(), Some(443));
        let ep: Endpoint = serde_json::from_str(r#"{"id":"ep_3"}"#).unwrap();
        assert_eq!(ep.hostname(), None);
    }

    #[test]
    fn owner_kind_follows_the_id_prefix() {
        assert_eq!(OwnerKind::of("usr_1"), Some(OwnerKind::User));
        assert_eq!(OwnerKind::of("bot_1"), Some(OwnerKind::BotUser));
        assert_eq!(OwnerKind::of("service_1"), Some(OwnerKind::BotUser));
        assert_eq!(OwnerKind::of("ak_1"), None);
    }
}
