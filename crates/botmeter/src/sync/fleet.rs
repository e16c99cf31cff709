//! What `botmeter sync` knows of an ngrok account, and the events that turn one view of it into
//! the next ([`FleetView::diff`]). Pure: no IO, time passed in.
//!
//! A [`FleetView`] maps each object (bot user, authtoken, API key, SSH key, tunnel session,
//! endpoint) to the `object` its event carries: the API resource without its token (for a
//! session, the `agent_session_*` object). The same view is built from the API's lists
//! ([`FleetView::from_lists`]) and from sync's own events read back from the control topic
//! ([`FleetView::apply`]), so a restarted sync compares the API with what it has published.
//!
//! Event times (the README's *Connect your ngrok account* says the same):
//! - an object sync sees for the first time is announced at its own `created_at` (a session at
//!   its `started_at`), also on the first run: attribution then covers what existed before
//!   botmeter did;
//! - a change (`active`, `name`, `acl`, `metadata`, `description`, `owner_id`) and a disappearance
//!   are stamped `observed_at`, when the poll finished reading the lists: the API says neither when
//!   a bot user was deactivated nor when a credential was deleted, only that it happened before
//!   that instant (and after the previous poll). An endpoint that changed what it serves is
//!   deleted and created again at its `updated_at` when the API gives one later than its
//!   creation, else at `observed_at`.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use model::ngrok_api::{ApiKey, BotUser, Credential, Endpoint, SshCredential, TunnelSession};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The kinds of object sync follows, in the order their creations are published (each needs the
/// ones before it: bot user → credential → session → endpoint). Deletions go in reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `bot_user_*`
    BotUser,
    /// `tunnel_credential_*`
    Authtoken,
    /// `ssh_public_key_*`
    SshKey,
    /// `api_key_*`
    ApiKey,
    /// `agent_session_start` / `_stop`
    Session,
    /// `endpoint_*`
    Endpoint,
}

impl Kind {
    /// The event type of each lifecycle step: created, updated, deleted.
    fn event_types(self) -> [&'static str; 3] {
        match self {
            Self::BotUser => [
                "bot_user_created.v0",
                "bot_user_updated.v0",
                "bot_user_deleted.v0",
            ],
            Self::Authtoken => [
                "tunnel_credential_created.v0",
                "tunnel_credential_updated.v0",
                "tunnel_credential_deleted.v0",
            ],
            Self::SshKey => [
                "ssh_public_key_created.v0",
                "ssh_public_key_updated.v0",
                "ssh_public_key_deleted.v0",
            ],
            Self::ApiKey => [
                "api_key_created.v0",
                "api_key_updated.v0",
                "api_key_deleted.v0",
            ],
            // A session never changes: a new credential is a new session.
            Self::Session => [
                "agent_session_start.v0",
                "agent_session_start.v0",
                "agent_session_stop.v0",
            ],
            // No endpoint_updated.v0: a changed endpoint is deleted and created again.
            Self::Endpoint => [
                "endpoint_created.v0",
                "endpoint_created.v0",
                "endpoint_deleted.v0",
            ],
        }
    }

    /// The kind and step an event type is, if sync makes it.
    fn of_event_type(event_type: &str) -> Option<(Self, Step)> {
        [
            Self::BotUser,
            Self::Authtoken,
            Self::SshKey,
            Self::ApiKey,
            Self::Session,
            Self::Endpoint,
        ]
        .into_iter()
        .find_map(|kind| {
            let [created, updated, deleted] = kind.event_types();
            if event_type == deleted {
                Some((kind, Step::Deleted))
            } else if event_type == created || event_type == updated {
                Some((kind, Step::Present))
            } else {
                None
            }
        })
    }

    /// The fields whose change sync publishes (others, such as `uri`, are not news).
    fn watched_fields(self) -> &'static [&'static str] {
        match self {
            Self::BotUser => &["name", "active"],
            Self::Authtoken | Self::SshKey => &["description", "metadata", "acl", "owner_id"],
            Self::ApiKey => &["description", "metadata", "owner_id"],
            Self::Session => &[],
            Self::Endpoint => &[
                "url",
                "public_url",
                "hostport",
                "host",
                "port",
                "proto",
                "tunnel_session",
                "principal",
            ],
        }
    }

    /// Where its creation time is in its object.
    fn created_field(self) -> &'static str {
        match self {
            Self::Session => "started_at",
            _ => "created_at",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Present,
    Deleted,
}

/// Every object of the account as its event's `object`, by kind and id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetView {
    objects: BTreeMap<(Kind, String), Value>,
}

/// The six lists of one poll.
#[derive(Debug, Clone, Default)]
pub struct Lists {
    /// `/bot_users`
    pub bot_users: Vec<BotUser>,
    /// `/credentials`
    pub credentials: Vec<Credential>,
    /// `/api_keys`
    pub api_keys: Vec<ApiKey>,
    /// `/ssh_credentials`
    pub ssh_credentials: Vec<SshCredential>,
    /// `/tunnel_sessions`
    pub tunnel_sessions: Vec<TunnelSession>,
    /// `/endpoints`
    pub endpoints: Vec<Endpoint>,
}

/// One event sync publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncEvent {
    /// Deterministic: the same change of the same object at the same time has the same id.
    pub event_id: String,
    /// e.g. `bot_user_updated.v0`.
    pub event_type: &'static str,
    /// When it happened, as well as the API tells (see the module docs).
    pub event_time: DateTime<Utc>,
    /// The object's id (the Kafka key).
    pub object_id: String,
    /// The event's `object`.
    pub object: Value,
}

#[derive(Serialize)]
struct Envelope<'a> {
    event_id: &'a str,
    event_type: &'a str,
    event_timestamp: String,
    account_id: &'a str,
    object: &'a Value,
    source: &'static str,
}

impl SyncEvent {
    /// The event in ngrok's envelope, marked `"source": "botmeter-sync"`.
    pub fn to_json(&self, account_id: &str) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            event_id: &self.event_id,
            event_type: self.event_type,
            event_timestamp: self.event_time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            account_id,
            object: &self.object,
            source: model::SOURCE_SYNC,
        })
        .expect("a JSON value serializes")
    }
}

/// The object of a resource: its JSON without `token` (ngrok sends it once; botmeter never
/// keeps it, invariant 4).
fn resource<T: Serialize>(item: &T) -> Value {
    let mut value = serde_json::to_value(item).expect("API resources serialize");
    if let Value::Object(map) = &mut value {
        map.remove("token");
    }
    value
}

/// The `agent_session_start.v0` object of a live session.
fn session_object(session: &TunnelSession) -> Value {
    json!({
        "session": {"id": session.id, "uri": session.uri},
        "credential": session.credential,
        "agent_ip": session.ip,
        "region": session.region,
        "os": session.os,
        "metadata": session.metadata,
        "transport": session.transport,
        "user_agent": session.agent_version,
        "started_at": session.started_at,
    })
}

fn parse_time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl FleetView {
    /// The view of one poll's lists.
    pub fn from_lists(lists: &Lists) -> Self {
        let mut objects = BTreeMap::new();
        let mut put = |kind: Kind, id: &str, object: Value| {
            objects.insert((kind, id.to_owned()), object);
        };
        lists
            .bot_users
            .iter()
            .for_each(|b| put(Kind::BotUser, &b.id, resource(b)));
        lists
            .credentials
            .iter()
            .for_each(|c| put(Kind::Authtoken, &c.id, resource(c)));
        lists
            .ssh_credentials
            .iter()
            .for_each(|c| put(Kind::SshKey, &c.id, resource(c)));
        lists
            .api_keys
            .iter()
            .for_each(|c| put(Kind::ApiKey, &c.id, resource(c)));
        lists
            .tunnel_sessions
            .iter()
            .for_each(|s| put(Kind::Session, &s.id, session_object(s)));
        lists
            .endpoints
            .iter()
            .for_each(|e| put(Kind::Endpoint, &e.id, resource(e)));
        Self { objects }
    }

    /// Applies one of sync's own events read back from the control topic; other events are
    /// ignored. Returns whether it was one of sync's.
    pub fn apply(&mut self, event_type: &str, object: &Value) -> bool {
        let Some((kind, step)) = Kind::of_event_type(event_type) else {
            return false;
        };
        let id = match kind {
            Kind::Session => &object["session"]["id"],
            _ => &object["id"],
        };
        let Some(id) = id.as_str() else {
            return false;
        };
        let key = (kind, id.to_owned());
        match step {
            Step::Present => {
                self.objects.insert(key, object.clone());
            }
            Step::Deleted => {
                self.objects.remove(&key);
            }
        }
        true
    }

    /// Keeps out of `self` (a poll's view) every object whose event botmeter could not decode
    /// (an endpoint naming no host, a session naming no credential, a credential with no owner or
    /// an ACL rule that does not parse): `botmeter run` would dead-letter it, and sync, not
    /// finding it in what it published, would send it again every poll. Such an object keeps the
    /// version `published` holds, if any, so a bad change is not mistaken for a deletion. Returns
    /// what was kept out, with the decoder's reason (it names the field and the value).
    pub fn keep_decodable(&mut self, published: &FleetView) -> Vec<(Kind, String, String)> {
        let mut rejected = Vec::new();
        for ((kind, id), object) in &mut self.objects {
            let probe_time = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01");
            let (_, probe) = event(*kind, 0, id, probe_time, object.clone());
            if let Err(e) = model::decode(&probe.to_json("")) {
                rejected.push((*kind, id.clone(), e.to_string()));
                if let Some(before) = published.objects.get(&(*kind, id.clone())) {
                    object.clone_from(before);
                }
            }
        }
        for (kind, id, _) in &rejected {
            if !published.objects.contains_key(&(*kind, id.clone())) {
                self.objects.remove(&(*kind, id.clone()));
            }
        }
        rejected
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The events that take `self` (what sync last published) to `next` (what the API lists
    /// now), in publishing order: creations (bot users first, endpoints last), changes, then
    /// disappearances (endpoints first, bot users last). See the module docs for their times.
    pub fn diff(&self, next: &FleetView, observed_at: DateTime<Utc>) -> Vec<SyncEvent> {
        let mut created = Vec::new();
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        for ((kind, id), object) in &next.objects {
            match self.objects.get(&(*kind, id.clone())) {
                None => {
                    let at = parse_time(&object[kind.created_field()]).unwrap_or(observed_at);
                    created.push(event(*kind, 0, id, at, object.clone()));
                }
                Some(before) => {
                    let differs = kind
                        .watched_fields()
                        .iter()
                        .any(|field| before.get(field) != object.get(field));
                    if !differs {
                        continue;
                    }
                    if *kind == Kind::Endpoint {
                        let at = parse_time(&object["updated_at"])
                            .filter(|t| parse_time(&object["created_at"]).is_none_or(|c| *t > c))
                            .unwrap_or(observed_at);
                        changed.push(event(*kind, 2, id, at, before.clone()));
                        changed.push(event(*kind, 0, id, at, object.clone()));
                    } else {
                        changed.push(event(*kind, 1, id, observed_at, object.clone()));
                    }
                }
            }
        }
        for ((kind, id), before) in self.objects.iter().rev() {
            if !next.objects.contains_key(&(*kind, id.clone())) {
                let mut object = before.clone();
                if *kind == Kind::Session {
                    object["stopped_at"] =
                        json!(observed_at.to_rfc3339_opts(SecondsFormat::AutoSi, true));
                }
                gone.push(event(*kind, 2, id, observed_at, object));
            }
        }
        // Creations by kind (each needs the kinds before it), then time; BTreeMap order made
        // `gone` already endpoints-first.
        created.sort_by_key(|(kind, event)| (*kind, event.event_time));
        created
            .into_iter()
            .chain(changed)
            .chain(gone)
            .map(|(_, e)| e)
            .collect()
    }
}

/// One lifecycle step (0 created, 1 updated, 2 deleted) of an object, with its deterministic id.
fn event(kind: Kind, step: usize, id: &str, at: DateTime<Utc>, object: Value) -> (Kind, SyncEvent) {
    let event_type = kind.event_types()[step];
    let mut hash = Sha256::new();
    for part in [
        event_type,
        id,
        &at.timestamp_micros().to_string(),
        &object.to_string(),
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest: String = hash.finalize()[..13]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        kind,
        SyncEvent {
            event_id: format!("ev_sync_{digest}"),
            event_type,
            event_time: at,
            object_id: id.to_owned(),
            object,
        },
    )
}

#[cfg(test)]
mod tests {
    use model::ngrok_api::{Ref, Token};

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn lists() -> Lists {
        Lists {
            bot_users: vec![BotUser {
                id: "bot_1".into(),
                name: "ci".into(),
                active: Some(true),
                created_at: "2025-01-01T00:00:00Z".into(),
                ..BotUser::default()
            }],
            credentials: vec![Credential {
                id: "cr_1".into(),
                owner_id: "bot_1".into(),
                created_at: "2025-01-02T00:00:00Z".into(),
                token: Some(Token("secret-token".into())),
                acl: vec!["bind:a.example.com".into()],
                ..Credential::default()
            }],
            tunnel_sessions: vec![TunnelSession {
                id: "ts_1".into(),
                credential: Some(Ref {
                    id: "cr_1".into(),
                    uri: String::new(),
                }),
                started_at: "2025-01-03T00:00:00Z".into(),
                ..TunnelSession::default()
            }],
            endpoints: vec![Endpoint {
                id: "ep_1".into(),
                url: "https://a.example.com".into(),
                host: "a.example.com".into(),
                created_at: "2025-01-03T00:00:01Z".into(),
                tunnel_session: Some(Ref {
                    id: "ts_1".into(),
                    uri: String::new(),
                }),
                ..Endpoint::default()
            }],
            ..Lists::default()
        }
    }

    #[test]
    fn the_first_poll_announces_everything_at_its_creation_in_chain_order_without_tokens() {
        let now = t("2026-06-01T00:00:00Z");
        let events = FleetView::default().diff(&FleetView::from_lists(&lists()), now);
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.event_type, e.event_time))
            .collect();
        assert_eq!(
            seen,
            [
                ("bot_user_created.v0", t("2025-01-01T00:00:00Z")),
                ("tunnel_credential_created.v0", t("2025-01-02T00:00:00Z")),
                ("agent_session_start.v0", t("2025-01-03T00:00:00Z")),
                ("endpoint_created.v0", t("2025-01-03T00:00:01Z")),
            ]
        );
        for event in &events {
            let bytes = event.to_json("ac_1");
            assert!(!String::from_utf8_lossy(&bytes).contains("secret-token"));
            let decoded = model::decode(&bytes).unwrap();
            assert_eq!(decoded.source.as_deref(), Some(model::SOURCE_SYNC));
            assert_eq!(decoded.event_timestamp, event.event_time);
        }
    }

    #[test]
    fn changes_and_disappearances_are_stamped_when_observed_and_replay_to_the_same_view() {
        let before = FleetView::from_lists(&lists());
        let mut next = lists();
        next.bot_users[0].active = Some(false);
        next.credentials[0].metadata = r#"{"site":"b"}"#.into();
        next.credentials[0].uri = "changed but not news".into();
        next.tunnel_sessions.clear();
        next.endpoints.clear();
        let now = t("2026-06-01T00:00:00Z");
        let after = FleetView::from_lists(&next);
        let events = before.diff(&after, now);
        let seen: Vec<_> = events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            seen,
            [
                "bot_user_updated.v0",
                "tunnel_credential_updated.v0",
                "endpoint_deleted.v0",
                "agent_session_stop.v0",
            ]
        );
        assert!(events.iter().all(|e| e.event_time == now));
        let stop = model::decode(&events[3].to_json("")).unwrap();
        match stop.body {
            model::EventBody::AgentSession { session, .. } => {
                assert_eq!(session.stopped_at, Some(now));
            }
            other => panic!("{other:?}"),
        }
        // Replaying the published events onto the old view gives the new one (watched fields).
        let mut replayed = before.clone();
        for event in &events {
            assert!(replayed.apply(event.event_type, &event.object));
        }
        assert!(replayed.diff(&after, now).is_empty());
        // Nothing new: nothing to publish, and ids are deterministic.
        assert!(after.diff(&after, now).is_empty());
        assert_eq!(before.diff(&after, now), events);
    }

    #[test]
    fn objects_botmeter_cannot_decode_are_kept_out_and_a_bad_change_is_not_a_deletion() {
        let published = FleetView::from_lists(&lists());
        let mut next = lists();
        next.credentials[0].acl = vec!["bind:bad host".into()];
        next.endpoints.push(Endpoint {
            id: "ep_nohost".into(),
            ..Endpoint::default()
        });
        let mut view = FleetView::from_lists(&next);
        let rejected = view.keep_decodable(&published);
        let reasons: Vec<_> = rejected.iter().map(|(_, id, r)| (id.as_str(), r)).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons[0].0 == "cr_1" && reasons[0].1.contains("bind:bad host"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].0 == "ep_nohost" && reasons[1].1.contains("object.host"),
            "{reasons:?}"
        );
        // Nothing to publish: the credential keeps its published version, the endpoint is out.
        assert_eq!(published.diff(&view, t("2026-06-01T00:00:00Z")), Vec::new());
    }

    #[test]
    fn a_moved_endpoint_is_deleted_and_created_at_its_updated_at() {
        let before = FleetView::from_lists(&lists());
        let mut next = lists();
        next.endpoints[0].tunnel_session = Some(Ref {
            id: "ts_2".into(),
            uri: String::new(),
        });
        next.endpoints[0].updated_at = "2026-05-31T12:00:00Z".into();
        let events = before.diff(&FleetView::from_lists(&next), t("2026-06-01T00:00:00Z"));
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e.event_type, e.event_time))
            .collect();
        let at = t("2026-05-31T12:00:00Z");
        assert_eq!(
            seen,
            [("endpoint_deleted.v0", at), ("endpoint_created.v0", at)]
        );
    }
}
