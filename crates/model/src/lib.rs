//! botmeter's domain types: the ngrok event envelope, the typed objects botmeter understands
//! (credentials, bot users, endpoints, agent sessions, traffic), ACL bind rules, and the decoder
//! that turns raw Kafka payloads into them. No IO lives here.
//!
//! The decoder accepts unknown fields and the known quirks of ngrok's published examples
//! (`server_port: ""`, uppercase methods, extra timestamp fields), and rejects what cannot be meant
//! with an error naming the event, the field and the value.

mod bind;
mod dead_letter;
mod error;
mod event;
pub mod limits;
pub mod ngrok_api;
mod objects;
pub mod redact;
pub mod route;
mod traffic;

pub use bind::{BindRule, BindRuleError, LabelPattern};
pub use dead_letter::{DeadLetter, SourcePosition};
pub use error::{DecodeError, Result};
pub use event::{
    decode, CredentialAction, EndpointAction, Event, EventBody, EventType, Principal, PrincipalRef,
    SessionAction, SOURCE_SYNC,
};
pub use objects::{
    AgentSession, BotUser, Credential, CredentialKind, Endpoint, HttpRequestComplete, OwnerKind,
    TcpConnectionClosed, TrafficConn,
};
pub use traffic::{decode_traffic, TrafficKind, TrafficRef};

/// The topics botmeter reads by default.
pub mod topics {
    /// Credentials, bot users, agent sessions, endpoints and every other audit event.
    pub const CONTROL: &str = "botmeter.control";
    /// `http_request_complete.v0` and `tcp_connection_closed.v0`.
    pub const TRAFFIC: &str = "botmeter.traffic";
    /// Messages that could not be decoded or validated, with the reason in headers.
    pub const DEAD_LETTER: &str = "botmeter.dead-letter";
}
