//! The ngrok REST API's list resources that `botmeter sync` reads, field for field as ngrok's
//! OpenAPI description names them (`ngrok.yaml`, `components.schemas`): [`BotUser`],
//! [`Credential`] (tunnel authtokens), [`ApiKey`], [`SshCredential`], [`TunnelSession`],
//! [`Endpoint`], their `*List` pages and ngrok's [`ApiError`] body. The stand-in ngrok API of the
//! tests (`simulate::ngrok_api`) serves these same structs, so the client and the server cannot
//! disagree on a name.
//!
//! Every field is optional on the wire (the description requires none) and `null` reads as
//! absent. A credential's `token` (ngrok returns it once, at creation) is a [`Token`], which
//! never prints: `Debug` shows `[redacted]`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::objects::null_as_default;

/// The header every request to ngrok's API carries, and its value.
pub const VERSION_HEADER: (&str, &str) = ("Ngrok-Version", "2");

/// A secret returned by the API (a credential's token). Serializes as the string (the stand-in
/// API must send it as ngrok does), never prints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `Ref`: a reference to another resource.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Ref {
    /// a resource identifier
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// a uri for locating a resource
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
}

/// `BotUser`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BotUser {
    /// unique API key resource identifier (sic: a bot user id, `bot_…`)
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// URI to the API resource of this bot user
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
    /// human-readable name used to identify the bot
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// whether or not the bot is active
    pub active: Option<bool>,
    /// timestamp when the api key was created, RFC 3339 format
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
}

/// `Credential`: a tunnel authtoken credential.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Credential {
    /// unique tunnel credential resource identifier (`cr_…`)
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// URI of the tunnel credential API resource
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
    /// timestamp when the tunnel credential was created, RFC 3339 format
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
    /// human-readable description of who or what will use the credential to authenticate
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// arbitrary user-defined machine-readable data of this credential
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// the credential's authtoken; only on the response that created it, otherwise null
    pub token: Option<Token>,
    /// optional list of ACL rules (`bind:…`)
    #[serde(deserialize_with = "null_as_default")]
    pub acl: Vec<String>,
    /// the owning User or Bot
    #[serde(deserialize_with = "null_as_default")]
    pub owner_id: String,
}

/// `APIKey`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiKey {
    /// unique API key resource identifier (`ak_…`)
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// URI to the API resource of this API key
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
    /// human-readable description of what uses the API key to authenticate
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// arbitrary user-defined data of this API key
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// timestamp when the api key was created, RFC 3339 format
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
    /// the bearer token; only on the response that created it, otherwise null
    pub token: Option<Token>,
    /// the owning User or Bot
    #[serde(deserialize_with = "null_as_default")]
    pub owner_id: String,
}

/// `SSHCredential`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SshCredential {
    /// unique ssh credential resource identifier (`sshcr_…`)
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// URI of the ssh credential API resource
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
    /// timestamp when the ssh credential was created, RFC 3339 format
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
    /// human-readable description of who or what will use the ssh credential
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// arbitrary user-defined machine-readable data of this ssh credential
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// the PEM-encoded public key of the SSH keypair
    #[serde(deserialize_with = "null_as_default")]
    pub public_key: String,
    /// optional list of ACL rules (`bind:…`)
    #[serde(deserialize_with = "null_as_default")]
    pub acl: Vec<String>,
    /// the owning User or Bot
    #[serde(deserialize_with = "null_as_default")]
    pub owner_id: String,
}

/// `TunnelSession`: a live agent session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TunnelSession {
    /// version of the ngrok agent that started this ngrok tunnel session
    #[serde(deserialize_with = "null_as_default")]
    pub agent_version: String,
    /// the tunnel credential or ssh credential the agent authenticated with
    pub credential: Option<Ref>,
    /// unique tunnel session resource identifier (`ts_…`)
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// source ip address of the tunnel session
    #[serde(deserialize_with = "null_as_default")]
    pub ip: String,
    /// arbitrary user-defined data from the agent's configuration
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// operating system of the host the ngrok agent is running on
    #[serde(deserialize_with = "null_as_default")]
    pub os: String,
    /// the ngrok region identifier in which this tunnel session was started
    #[serde(deserialize_with = "null_as_default")]
    pub region: String,
    /// time when the tunnel session first connected to the ngrok servers
    #[serde(deserialize_with = "null_as_default")]
    pub started_at: String,
    /// `ngrok/v2` or `ssh`
    #[serde(deserialize_with = "null_as_default")]
    pub transport: String,
    /// URI to the API resource of the tunnel session
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
}

/// `Endpoint`: a live endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// unique endpoint resource identifier (`ep_…`)
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// identifier of the region this endpoint belongs to
    #[serde(deserialize_with = "null_as_default")]
    pub region: String,
    /// timestamp when the endpoint was created in RFC 3339 format
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
    /// timestamp when the endpoint was updated in RFC 3339 format
    #[serde(deserialize_with = "null_as_default")]
    pub updated_at: String,
    /// URL of the hostport served by this endpoint
    #[serde(deserialize_with = "null_as_default")]
    pub public_url: String,
    /// `http`, `https`, `tcp` or `tls`
    #[serde(deserialize_with = "null_as_default")]
    pub proto: String,
    /// the URL scheme
    #[serde(deserialize_with = "null_as_default")]
    pub scheme: String,
    /// hostport served by this endpoint (hostname:port)
    #[serde(deserialize_with = "null_as_default")]
    pub hostport: String,
    /// the hostname
    #[serde(deserialize_with = "null_as_default")]
    pub host: String,
    /// the port
    pub port: Option<i64>,
    /// `ephemeral`, `edge` or `cloud`
    #[serde(rename = "type", deserialize_with = "null_as_default")]
    pub kind: String,
    /// user-supplied metadata of the associated tunnel or edge object
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: String,
    /// user-supplied description of the associated tunnel
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// the domain reserved for this endpoint
    pub domain: Option<Ref>,
    /// the address reserved for this endpoint
    pub tcp_addr: Option<Ref>,
    /// the tunnel serving requests to this endpoint, if ephemeral
    pub tunnel: Option<Ref>,
    /// the edge serving requests to this endpoint, if an edge endpoint
    pub edge: Option<Ref>,
    /// the local address the tunnel forwards to
    #[serde(deserialize_with = "null_as_default")]
    pub upstream_url: String,
    /// the protocol the agent uses to forward with
    #[serde(deserialize_with = "null_as_default")]
    pub upstream_protocol: String,
    /// the url of the endpoint
    #[serde(deserialize_with = "null_as_default")]
    pub url: String,
    /// the owner (bot or user) of this endpoint
    pub principal: Option<Ref>,
    /// the traffic policy attached to this endpoint
    #[serde(deserialize_with = "null_as_default")]
    pub traffic_policy: String,
    /// the bindings associated with this endpoint
    #[serde(deserialize_with = "null_as_default")]
    pub bindings: Vec<String>,
    /// the tunnel session of the agent for this endpoint
    pub tunnel_session: Option<Ref>,
    /// URI of the endpoint API resource
    #[serde(deserialize_with = "null_as_default")]
    pub uri: String,
    /// user supplied name for the endpoint
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// whether the endpoint allows pooling
    pub pooling_enabled: Option<bool>,
}

/// One page of a list: its items, its own `uri` and the `next_page_uri` (null on the last).
pub trait Page: serde::de::DeserializeOwned + Serialize {
    /// The item type.
    type Item;
    /// The list's path under the API's base URL, e.g. `/bot_users`.
    const PATH: &'static str;
    /// A page of `items`.
    fn new(items: Vec<Self::Item>, uri: String, next_page_uri: Option<String>) -> Self;
    /// Its items.
    fn into_items(self) -> Vec<Self::Item>;
    /// The next page's URI, if any.
    fn next_page_uri(&self) -> Option<&str>;
}

macro_rules! list {
    ($(#[$doc:meta])* $name:ident, $item:ty, $items:ident, $path:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(default)]
        pub struct $name {
            /// The page's items.
            #[serde(deserialize_with = "null_as_default")]
            pub $items: Vec<$item>,
            /// URI of the list API resource.
            #[serde(deserialize_with = "null_as_default")]
            pub uri: String,
            /// URI of the next page, or null if there is no next page.
            pub next_page_uri: Option<String>,
        }

        impl Page for $name {
            type Item = $item;
            const PATH: &'static str = $path;
            fn new(items: Vec<$item>, uri: String, next_page_uri: Option<String>) -> Self {
                Self { $items: items, uri, next_page_uri }
            }
            fn into_items(self) -> Vec<$item> {
                self.$items
            }
            fn next_page_uri(&self) -> Option<&str> {
                self.next_page_uri.as_deref()
            }
        }
    };
}

list!(
    /// `BotUserList` (`GET /bot_users`).
    BotUserList, BotUser, bot_users, "/bot_users"
);
list!(
    /// `CredentialList` (`GET /credentials`).
    CredentialList, Credential, credentials, "/credentials"
);
list!(
    /// `APIKeyList` (`GET /api_keys`).
    ApiKeyList, ApiKey, keys, "/api_keys"
);
list!(
    /// `SSHCredentialList` (`GET /ssh_credentials`).
    SshCredentialList, SshCredential, ssh_credentials, "/ssh_credentials"
);
list!(
    /// `TunnelSessionList` (`GET /tunnel_sessions`).
    TunnelSessionList, TunnelSession, tunnel_sessions, "/tunnel_sessions"
);
list!(
    /// `EndpointList` (`GET /endpoints`).
    EndpointList, Endpoint, endpoints, "/endpoints"
);

/// ngrok's error body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiError {
    /// e.g. `ERR_NGROK_218`.
    #[serde(deserialize_with = "null_as_default")]
    pub error_code: String,
    /// The HTTP status.
    pub status_code: u16,
    /// What went wrong.
    #[serde(deserialize_with = "null_as_default")]
    pub msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_ngroks_names_and_nulls() {
        let page: CredentialList = serde_json::from_str(
            r#"{"credentials":[{"id":"cr_1","uri":"https://api.ngrok.com/credentials/cr_1","created_at":"2026-01-01T00:00:00Z","description":null,"metadata":"{}","token":null,"acl":null,"owner_id":"bot_1"}],"uri":"https://api.ngrok.com/credentials","next_page_uri":null}"#,
        )
        .unwrap();
        assert_eq!(page.credentials[0].owner_id, "bot_1");
        assert!(page.credentials[0].acl.is_empty());
        assert_eq!(page.next_page_uri(), None);
        let keys: ApiKeyList = serde_json::from_str(r#"{"keys":[{"id":"ak_1"}],"next_page_uri":"https://api.ngrok.com/api_keys?before_id=ak_1&limit=1"}"#).unwrap();
        assert_eq!(keys.into_items()[0].id, "ak_1");
        let endpoint: Endpoint =
            serde_json::from_str(r#"{"id":"ep_1","type":"ephemeral","port":443}"#).unwrap();
        assert_eq!(
            (endpoint.kind.as_str(), endpoint.port),
            ("ephemeral", Some(443))
        );
    }

    #[test]
    fn tokens_never_print() {
        let key = ApiKey {
            id: "ak_1".into(),
            token: Some(Token("secret-value".into())),
            ..ApiKey::default()
        };
        assert!(!format!("{key:?}").contains("secret-value"));
        assert!(serde_json::to_string(&key)
            .unwrap()
            .contains("secret-value"));
    }
}
