//! The wire shapes of the simulated events: ngrok's envelope and ngrok's field names inside
//! `object`, as `Serialize` structs so that the field order, and so the bytes, never depend on a
//! map's iteration order. Every timestamp is RFC 3339 UTC with milliseconds, so that a payload
//! decodes back to exactly the instant the generator (and its ground truth) used.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// RFC 3339, UTC, milliseconds: `2026-01-01T00:00:00.000Z`.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

const API: &str = "https://api.ngrok.com";

/// Where ngrok's API serves the resource `id` of `collection`: `https://api.ngrok.com/<collection>/<id>`.
pub(crate) fn uri(collection: &str, id: &str) -> String {
    format!("{API}/{collection}/{id}")
}

/// The ngrok event envelope.
#[derive(Debug, Serialize)]
pub(crate) struct Envelope<'a, O> {
    pub(crate) event_id: String,
    pub(crate) event_type: &'a str,
    pub(crate) event_timestamp: String,
    pub(crate) account_id: &'a str,
    /// Left out rather than `null` where ngrok leaves it out (traffic, per its examples).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) principal: Option<Principal<'a>>,
    pub(crate) object: O,
}

/// Who acted: a user or bot user, and the API key it used.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Principal<'a> {
    pub(crate) id: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) credential: Option<Ref>,
}

/// `{"id": …, "uri": …}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Ref {
    pub(crate) id: String,
    pub(crate) uri: String,
}

impl Ref {
    pub(crate) fn new(id: &str, collection: &str) -> Self {
        Self {
            id: id.to_owned(),
            uri: uri(collection, id),
        }
    }
}

/// The fields ngrok's credential, reserved domain and IP policy resources begin with, in order.
#[derive(Debug, Serialize)]
pub(crate) struct Resource<'a> {
    pub(crate) id: &'a str,
    pub(crate) uri: String,
    pub(crate) created_at: String,
    pub(crate) description: &'a str,
    pub(crate) metadata: &'a str,
}

impl<'a> Resource<'a> {
    /// The resource `id` of `collection`, created at `created_at`.
    pub(crate) fn new(
        id: &'a str,
        collection: &str,
        created_at: DateTime<Utc>,
        description: &'a str,
        metadata: &'a str,
    ) -> Self {
        Self {
            id,
            uri: uri(collection, id),
            created_at: ts(created_at),
            description,
            metadata,
        }
    }
}

/// `bot_user_{created,updated,deleted}.v0` object: ngrok's Bot User resource.
#[derive(Debug, Serialize)]
pub(crate) struct BotUserObject<'a> {
    pub(crate) id: &'a str,
    pub(crate) uri: String,
    pub(crate) name: &'a str,
    pub(crate) active: bool,
    pub(crate) created_at: String,
}

/// `tunnel_credential_*`, `ssh_public_key_*`, `api_key_*` object: the credential resource.
#[derive(Debug, Serialize)]
pub(crate) struct CredentialObject<'a> {
    #[serde(flatten)]
    pub(crate) resource: Resource<'a>,
    /// Returned once, at creation (authtokens and API keys); botmeter must drop it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    /// SSH keys only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) public_key: Option<String>,
    /// Authtokens and SSH keys only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) acl: Option<&'a [String]>,
    pub(crate) owner_id: &'a str,
}

/// `agent_session_start.v0` / `agent_session_stop.v0` object.
#[derive(Debug, Serialize)]
pub(crate) struct AgentSessionObject<'a> {
    pub(crate) session: Ref,
    pub(crate) credential: Ref,
    pub(crate) agent_ip: &'a str,
    pub(crate) ingress_server_ip: &'a str,
    pub(crate) region: &'a str,
    pub(crate) ingress_hostname: String,
    pub(crate) user_agent: &'a str,
    pub(crate) metadata: &'a str,
    pub(crate) os: &'a str,
    pub(crate) arch: &'a str,
    pub(crate) transport: &'a str,
    pub(crate) started_at: String,
    /// `agent_session_stop.v0` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stopped_at: Option<String>,
}

/// `endpoint_created.v0` / `endpoint_deleted.v0` object: ngrok's Endpoint resource.
#[derive(Debug, Serialize)]
pub(crate) struct EndpointObject<'a> {
    pub(crate) id: &'a str,
    pub(crate) uri: String,
    pub(crate) region: &'a str,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) public_url: &'a str,
    pub(crate) url: &'a str,
    pub(crate) proto: &'a str,
    pub(crate) scheme: &'a str,
    pub(crate) hostport: String,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    pub(crate) metadata: &'a str,
    pub(crate) description: &'a str,
    pub(crate) upstream_url: &'a str,
    pub(crate) tunnel_session: Ref,
    pub(crate) principal: Ref,
}

/// `domain_created.v0` object: ngrok's Reserved Domain resource (abridged).
#[derive(Debug, Serialize)]
pub(crate) struct DomainObject<'a> {
    #[serde(flatten)]
    pub(crate) resource: Resource<'a>,
    pub(crate) domain: &'a str,
    pub(crate) region: &'a str,
    pub(crate) cname_target: Option<String>,
}

/// `ip_policy_created.v0` object, as in ngrok's example.
#[derive(Debug, Serialize)]
pub(crate) struct IpPolicyObject<'a> {
    #[serde(flatten)]
    pub(crate) resource: Resource<'a>,
    pub(crate) action: &'a str,
}

/// `conn` of a traffic event.
#[derive(Debug, Serialize)]
pub(crate) struct Conn<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bytes_out: Option<u64>,
    pub(crate) client_ip: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) end_ts: Option<String>,
    pub(crate) server_ip: &'a str,
    pub(crate) server_name: &'a str,
    pub(crate) server_port: u16,
    pub(crate) start_ts: String,
}

/// `tcp_connection_closed.v0` object.
#[derive(Debug, Serialize)]
pub(crate) struct TcpObject<'a> {
    pub(crate) conn: Conn<'a>,
}

/// `http_request_complete.v0` object.
#[derive(Debug, Serialize)]
pub(crate) struct HttpObject<'a> {
    pub(crate) conn: Conn<'a>,
    pub(crate) http: Http<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Http<'a> {
    pub(crate) request: HttpRequest<'a>,
    pub(crate) response: HttpResponse,
}

#[derive(Debug, Serialize)]
pub(crate) struct HttpRequest<'a> {
    pub(crate) body_length: u64,
    pub(crate) method: &'a str,
    pub(crate) url: HttpUrl<'a>,
    pub(crate) user_agent: &'a str,
    pub(crate) version: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct HttpUrl<'a> {
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) scheme: &'a str,
}

#[derive(Debug, Serialize)]
pub(crate) struct HttpResponse {
    pub(crate) body_length: u64,
    pub(crate) status_code: u16,
}

/// Serializes an event; the shapes above cannot fail to serialize.
pub(crate) fn to_bytes<O: Serialize>(envelope: &Envelope<'_, O>) -> Vec<u8> {
    serde_json::to_vec(envelope).expect("simulated events serialize")
}
