//! A stand-in for ngrok's REST API, for tests: an axum server on loopback serving the six lists
//! `botmeter sync` reads (`/bot_users`, `/credentials`, `/api_keys`, `/ssh_credentials`,
//! `/tunnel_sessions`, `/endpoints`) from a mutable [`ApiFleet`], in the shapes of ngrok's
//! OpenAPI description ([`model::ngrok_api`]).
//!
//! As ngrok does:
//! - every request needs `Authorization: Bearer <the API key>` (else 401) and `Ngrok-Version: 2`
//!   (else 400), with ngrok's error body (`error_code`, `status_code`, `msg`);
//! - lists are paged newest id first: `limit` (1..=100, default 100) items with ids below
//!   `before_id`, and `next_page_uri` naming the next page (`…?before_id=<last id>&limit=<limit>`)
//!   while items remain, `null` on the last;
//! - a credential's `token` is `null` in lists (ngrok shows it once, at creation), unless
//!   [`ApiFleet::serve_tokens`] asks for a misbehaving API that sends it anyway.
//!
//! Faults are injected per request ([`StandInApi::push_fault`]): `429` with `Retry-After`, `500`,
//! or a `200` whose body is not JSON. The fleet is seeded from a simulated fleet's control events
//! up to an instant ([`ApiFleet::from_control`]), so the truth of what the API lists is known.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use model::ngrok_api::{
    ApiError, ApiKey, ApiKeyList, BotUser, BotUserList, Credential, CredentialList, Endpoint,
    EndpointList, Page, Ref, SshCredential, SshCredentialList, Token, TunnelSession,
    TunnelSessionList,
};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::SimMessage;

/// Most items on a page, and the default `limit`.
pub const MAX_LIMIT: usize = 100;

/// What the stand-in API lists, by id. Lists serve ids in descending order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiFleet {
    /// `/bot_users`
    pub bot_users: BTreeMap<String, BotUser>,
    /// `/credentials` (tunnel authtokens)
    pub credentials: BTreeMap<String, Credential>,
    /// `/api_keys`
    pub api_keys: BTreeMap<String, ApiKey>,
    /// `/ssh_credentials`
    pub ssh_credentials: BTreeMap<String, SshCredential>,
    /// `/tunnel_sessions` (live sessions only, as ngrok lists them)
    pub tunnel_sessions: BTreeMap<String, TunnelSession>,
    /// `/endpoints` (live endpoints only)
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Send credentials' tokens in lists (ngrok sends `null`): a misbehaving API, for tests
    /// that prove a token read from it is never published.
    pub serve_tokens: bool,
}

impl ApiFleet {
    /// The fleet the API would list at `at`: the simulated control events up to and including
    /// `at` replayed in order (created and updated objects listed as their latest event shows
    /// them, deleted ones and stopped sessions gone, with their endpoints; a deleted bot user's
    /// credentials go with it, as ngrok revokes them). Tokens are kept as the creation events
    /// carried them (served only with [`ApiFleet::serve_tokens`]).
    pub fn from_control(messages: &[SimMessage], at: DateTime<Utc>) -> Self {
        let mut fleet = Self::default();
        for message in messages.iter().filter(|m| m.event_time <= at) {
            let envelope: serde_json::Value =
                serde_json::from_slice(&message.payload).expect("simulated events are JSON");
            let event_type = envelope["event_type"].as_str().unwrap_or_default();
            fleet.apply(event_type, &envelope["object"]);
        }
        fleet
    }

    /// Applies one control event's object, as ngrok's API would then list it.
    fn apply(&mut self, event_type: &str, object: &serde_json::Value) {
        fn parse<T: serde::de::DeserializeOwned>(object: &serde_json::Value) -> T {
            serde_json::from_value(object.clone()).expect("simulated objects are ngrok resources")
        }
        let id = object["id"].as_str().unwrap_or_default().to_owned();
        let (kind, action) = event_type
            .trim_end_matches(".v0")
            .rsplit_once('_')
            .unwrap_or((event_type, ""));
        match (kind, action) {
            ("bot_user", "created" | "updated") => {
                self.bot_users.insert(id, parse(object));
            }
            ("bot_user", "deleted") => {
                self.bot_users.remove(&id);
                self.credentials.retain(|_, c| c.owner_id != id);
                self.api_keys.retain(|_, c| c.owner_id != id);
                self.ssh_credentials.retain(|_, c| c.owner_id != id);
            }
            ("tunnel_credential", "created" | "updated") => {
                let previous = self.credentials.get(&id).and_then(|c| c.token.clone());
                let mut credential: Credential = parse(object);
                credential.token = credential.token.or(previous);
                self.credentials.insert(id, credential);
            }
            ("tunnel_credential", "deleted") => {
                self.credentials.remove(&id);
            }
            ("api_key", "created" | "updated") => {
                let previous = self.api_keys.get(&id).and_then(|c| c.token.clone());
                let mut key: ApiKey = parse(object);
                key.token = key.token.or(previous);
                self.api_keys.insert(id, key);
            }
            ("api_key", "deleted") => {
                self.api_keys.remove(&id);
            }
            ("ssh_public_key", "created" | "updated") => {
                self.ssh_credentials.insert(id, parse(object));
            }
            ("ssh_public_key", "deleted") => {
                self.ssh_credentials.remove(&id);
            }
            ("agent_session", "start") => {
                let session = session_of(object);
                self.tunnel_sessions.insert(session.id.clone(), session);
            }
            ("agent_session", "stop") => {
                let session_id = object["session"]["id"].as_str().unwrap_or_default();
                self.stop_session(session_id);
            }
            ("endpoint", "created") => {
                self.endpoints.insert(id, parse(object));
            }
            ("endpoint", "deleted") => {
                self.endpoints.remove(&id);
            }
            _ => {}
        }
    }

    /// Ends a session: it and its endpoints leave the lists, as when its agent disconnects.
    pub fn stop_session(&mut self, session_id: &str) {
        self.tunnel_sessions.remove(session_id);
        self.endpoints
            .retain(|_, e| e.tunnel_session.as_ref().map(|r| r.id.as_str()) != Some(session_id));
    }

    /// Deletes a bot user and, as ngrok does, every credential it owns.
    pub fn delete_bot_user(&mut self, bot_id: &str) {
        self.apply("bot_user_deleted.v0", &serde_json::json!({ "id": bot_id }));
    }
}

/// A `TunnelSession` from an `agent_session_start.v0` object.
fn session_of(object: &serde_json::Value) -> TunnelSession {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let id = text(&object["session"]["id"]);
    TunnelSession {
        agent_version: text(&object["user_agent"]),
        credential: Some(Ref {
            id: text(&object["credential"]["id"]),
            uri: text(&object["credential"]["uri"]),
        }),
        ip: text(&object["agent_ip"]),
        metadata: text(&object["metadata"]),
        os: text(&object["os"]),
        region: text(&object["region"]),
        started_at: text(&object["started_at"]),
        transport: text(&object["transport"]),
        uri: format!("https://api.ngrok.com/tunnel_sessions/{id}"),
        id,
    }
}

/// What the next matching request gets instead of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After: <seconds>`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// `500 Internal Server Error` with ngrok's error body.
    ServerError,
    /// `200 OK` whose body is HTML, not JSON.
    Garbage,
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FaultRule {
    /// Only requests to this list (e.g. `/endpoints`); any list when `None`.
    path: Option<String>,
    fault: Fault,
}

#[derive(Debug, Default)]
struct Shared {
    fleet: ApiFleet,
    faults: VecDeque<FaultRule>,
    /// Requests answered, per path (faults and refusals included).
    requests: HashMap<String, u64>,
    /// `Authorization` values that were refused (wrong key), to prove what a client sent.
    refused: u64,
}

type AppState = (Arc<Mutex<Shared>>, Arc<str>, Arc<str>);

/// The running stand-in API. Dropping it stops the server.
#[derive(Debug)]
pub struct StandInApi {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    server: JoinHandle<()>,
}

impl Drop for StandInApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StandInApi {
    /// Serves `fleet` on a free loopback port, to clients presenting `api_key`.
    pub async fn start(api_key: &str, fleet: ApiFleet) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            fleet,
            ..Shared::default()
        }));
        let state: AppState = (
            shared.clone(),
            Arc::from(api_key),
            Arc::from(format!("http://{addr}").as_str()),
        );
        let app = Router::new()
            .route("/{collection}", get(list))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:<port>`: the base URL to point a client at.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Reads or changes the fleet; the next request sees the change.
    pub fn with_fleet<R>(&self, change: impl FnOnce(&mut ApiFleet) -> R) -> R {
        change(&mut self.shared.lock().expect("stand-in state").fleet)
    }

    /// The next request (to `path`, e.g. `/endpoints`, or to any list) gets `fault`. Faults
    /// queue: each applies to one request, in order.
    pub fn push_fault(&self, path: Option<&str>, fault: Fault) {
        self.shared
            .lock()
            .expect("stand-in state")
            .faults
            .push_back(FaultRule {
                path: path.map(str::to_owned),
                fault,
            });
    }

    /// Faults not yet served.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().expect("stand-in state").faults.len()
    }

    /// Requests answered to `path` (e.g. `/credentials`), faults and refusals included.
    pub fn requests(&self, path: &str) -> u64 {
        let shared = self.shared.lock().expect("stand-in state");
        shared.requests.get(path).copied().unwrap_or(0)
    }

    /// Requests refused for a missing or wrong API key.
    pub fn refused(&self) -> u64 {
        self.shared.lock().expect("stand-in state").refused
    }
}

fn error(status: StatusCode, error_code: &str, msg: String) -> Response {
    let body = ApiError {
        error_code: error_code.to_owned(),
        status_code: status.as_u16(),
        msg,
    };
    (status, Json(body)).into_response()
}

async fn list(
    State((shared, api_key, base)): State<AppState>,
    Path(collection): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/{collection}");
    let mut shared = shared.lock().expect("stand-in state");
    *shared.requests.entry(path.clone()).or_default() += 1;

    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(&*api_key) {
        shared.refused += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            "ERR_NGROK_205",
            "The API key you specified is not valid.".to_owned(),
        );
    }
    if headers.get("ngrok-version").and_then(|v| v.to_str().ok()) != Some("2") {
        return error(
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_226",
            "Missing or unsupported Ngrok-Version header; send 'Ngrok-Version: 2'.".to_owned(),
        );
    }
    if let Some(index) = shared
        .faults
        .iter()
        .position(|rule| rule.path.as_deref().is_none_or(|p| p == path))
    {
        let rule = shared.faults.remove(index).expect("a queued fault");
        return match rule.fault {
            Fault::TooManyRequests { retry_after_secs } => {
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "ERR_NGROK_229",
                    "You have exceeded the rate limit.".to_owned(),
                );
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    retry_after_secs
                        .to_string()
                        .parse()
                        .expect("a header value"),
                );
                response
            }
            Fault::ServerError => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ERR_NGROK_500",
                "An internal server error occurred.".to_owned(),
            ),
            Fault::Garbage => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html")],
                "<html><body>502 Bad Gateway</body></html>",
            )
                .into_response(),
        };
    }

    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => MAX_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "ERR_NGROK_211",
                format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}, got {:?}",
                    params["limit"]
                ),
            )
        }
    };
    let before_id = params.get("before_id").map(String::as_str);
    let fleet = &shared.fleet;
    let paging = Paging {
        base: &base,
        limit,
        before_id,
    };
    let scrub = !fleet.serve_tokens;
    match collection.as_str() {
        "bot_users" => paging.page::<BotUserList>(&fleet.bot_users, |_| {}),
        "credentials" => paging.page::<CredentialList>(&fleet.credentials, |c| {
            if scrub {
                c.token = None::<Token>;
            }
        }),
        "api_keys" => paging.page::<ApiKeyList>(&fleet.api_keys, |c| {
            if scrub {
                c.token = None;
            }
        }),
        "ssh_credentials" => paging.page::<SshCredentialList>(&fleet.ssh_credentials, |_| {}),
        "tunnel_sessions" => paging.page::<TunnelSessionList>(&fleet.tunnel_sessions, |_| {}),
        "endpoints" => paging.page::<EndpointList>(&fleet.endpoints, |_| {}),
        _ => error(
            StatusCode::NOT_FOUND,
            "ERR_NGROK_404",
            format!("{path} is not a list this stand-in serves"),
        ),
    }
}

/// One list request's paging: `limit` items with ids below `before_id`, newest first.
struct Paging<'a> {
    base: &'a str,
    limit: usize,
    before_id: Option<&'a str>,
}

impl Paging<'_> {
    fn page<P>(&self, items: &BTreeMap<String, P::Item>, edit: impl Fn(&mut P::Item)) -> Response
    where
        P: Page + Serialize,
        P::Item: Clone,
    {
        let mut below = items
            .iter()
            .rev()
            .filter(|(id, _)| self.before_id.is_none_or(|before| id.as_str() < before));
        let chosen: Vec<(&String, &P::Item)> = below.by_ref().take(self.limit).collect();
        let more = below.next().is_some();
        let next_page_uri = match chosen.last() {
            Some((last, _)) if more => Some(format!(
                "{}{}?before_id={last}&limit={}",
                self.base,
                P::PATH,
                self.limit
            )),
            _ => None,
        };
        let items = chosen
            .into_iter()
            .map(|(_, item)| {
                let mut item = item.clone();
                edit(&mut item);
                item
            })
            .collect();
        Json(P::new(
            items,
            format!("{}{}", self.base, P::PATH),
            next_page_uri,
        ))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, FleetConfig, Scenarios};

    fn fleet() -> crate::Fleet {
        generate(&FleetConfig {
            traffic_events: 10,
            scenarios: Scenarios::standard(),
            ..FleetConfig::default()
        })
    }

    #[test]
    fn the_seeded_fleet_is_the_control_events_replayed() {
        let fleet = fleet();
        let end = fleet.control.last().unwrap().event_time;
        let all = ApiFleet::from_control(&fleet.control, end);
        assert!(!all.bot_users.is_empty() && !all.credentials.is_empty());
        assert!(!all.tunnel_sessions.is_empty() && !all.endpoints.is_empty());
        // In a clean fleet every live endpoint's session is live and every session's
        // credential listed (the anomalies leave some links out on purpose).
        let clean = generate(&FleetConfig {
            traffic_events: 10,
            ..FleetConfig::default()
        });
        let listed = ApiFleet::from_control(&clean.control, end);
        assert!(!listed.endpoints.is_empty());
        for endpoint in listed.endpoints.values() {
            let session = &endpoint.tunnel_session.as_ref().unwrap().id;
            let credential = &listed.tunnel_sessions[session]
                .credential
                .as_ref()
                .unwrap()
                .id;
            assert!(
                listed.credentials.contains_key(credential)
                    || listed.ssh_credentials.contains_key(credential),
                "{endpoint:?}"
            );
        }
        // The standard scenarios stop sessions and delete things: fewer at the end than made.
        let starts = fleet
            .control
            .iter()
            .filter(|m| String::from_utf8_lossy(&m.payload).contains("agent_session_start"))
            .count();
        assert!(all.tunnel_sessions.len() < starts);
        let before = ApiFleet::from_control(&fleet.control, fleet.control[0].event_time);
        assert!(before.credentials.len() < all.credentials.len());
    }

    #[tokio::test]
    async fn pages_follow_next_page_uri_with_auth_and_faults() {
        let fleet = fleet();
        let end = fleet.control.last().unwrap().event_time;
        let seeded = ApiFleet::from_control(&fleet.control, end);
        let api = StandInApi::start("key-1", seeded.clone()).await.unwrap();
        let client = reqwest::Client::new();
        let get = |url: String, key: &'static str| {
            client
                .get(url)
                .bearer_auth(key)
                .header("Ngrok-Version", "2")
                .send()
        };
        // Paging: limit 3, ids descending, every credential once.
        let mut url = format!("{}/credentials?limit=3", api.base_url());
        let mut ids = Vec::new();
        loop {
            let page: CredentialList = get(url, "key-1").await.unwrap().json().await.unwrap();
            assert!(page.credentials.len() <= 3);
            assert!(page.credentials.iter().all(|c| c.token.is_none()));
            ids.extend(page.credentials.into_iter().map(|c| c.id));
            match page.next_page_uri {
                Some(next) => url = next,
                None => break,
            }
        }
        let mut expected: Vec<String> = seeded.credentials.keys().cloned().collect();
        expected.reverse();
        assert_eq!(ids, expected);

        let wrong = get(format!("{}/bot_users", api.base_url()), "nope")
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
        assert_eq!(api.refused(), 1);
        let unversioned = client
            .get(format!("{}/bot_users", api.base_url()))
            .bearer_auth("key-1")
            .send()
            .await
            .unwrap();
        assert_eq!(unversioned.status(), 400);
        let bad_limit = get(format!("{}/bot_users?limit=0", api.base_url()), "key-1")
            .await
            .unwrap();
        assert_eq!(bad_limit.status(), 400);

        api.push_fault(
            Some("/endpoints"),
            Fault::TooManyRequests {
                retry_after_secs: 2,
            },
        );
        api.push_fault(None, Fault::Garbage);
        let ok = get(format!("{}/bot_users", api.base_url()), "key-1")
            .await
            .unwrap();
        assert!(
            ok.text().await.unwrap().starts_with("<html>"),
            "the any-path fault"
        );
        let limited = get(format!("{}/endpoints", api.base_url()), "key-1")
            .await
            .unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "2");
        assert_eq!(api.pending_faults(), 0);

        api.with_fleet(|f| f.serve_tokens = true);
        let page: ApiKeyList = get(format!("{}/api_keys", api.base_url()), "key-1")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(page.keys.iter().any(|k| k.token.is_some()));
    }
}
