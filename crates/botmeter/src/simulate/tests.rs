//! The simulator's guarantees, checked by decoding what it generates with botmeter's own decoder
//! and recounting independently of the generator's bookkeeping.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use model::{decode, BindRule, CredentialKind, Event, EventBody, OwnerKind};

use super::*;

fn config() -> FleetConfig {
    FleetConfig { traffic_events: 4_000, ..FleetConfig::default() }
}

fn decoded(messages: &[SimMessage]) -> Vec<Event> {
    messages
        .iter()
        .map(|m| decode(&m.payload).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.payload))))
        .collect()
}

fn hour(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:00:00Z").to_string()
}

/// An `endpoint_created.v0`: (endpoint id, session id, principal id, created at).
type Announced = (String, String, String, DateTime<Utc>);

/// What the control plane says, rebuilt from decoded events only.
#[derive(Default)]
struct Control {
    owner_created: HashMap<String, DateTime<Utc>>,
    credential: HashMap<String, (String, CredentialKind, DateTime<Utc>, Vec<BindRule>)>,
    session: HashMap<String, (String, DateTime<Utc>)>,
    endpoint: HashMap<(String, u16), Announced>,
    audits: HashMap<String, u64>,
}

fn control_of(fleet: &Fleet) -> Control {
    let mut c = Control::default();
    for (message, event) in fleet.control.iter().zip(decoded(&fleet.control)) {
        let at = event.event_timestamp;
        assert_eq!(at, message.event_time, "event {}: event_time is the event_timestamp", event.event_id);
        match event.body {
            EventBody::BotUser { bot_user, .. } => {
                assert_eq!(message.key, bot_user.id);
                assert_eq!(bot_user.created_at, Some(at));
                assert!(c.owner_created.insert(bot_user.id, at).is_none(), "bot created twice");
            }
            EventBody::Credential { kind, credential, .. } => {
                assert_eq!(message.key, credential.owner_id, "control messages are keyed by owner");
                if credential.owner_id.starts_with("bot_") {
                    let created =
                        c.owner_created.get(&credential.owner_id).expect("bot user created before its credential");
                    assert!(*created < at);
                } else {
                    c.owner_created.entry(credential.owner_id.clone()).or_insert(fleet.truth.window_start);
                }
                let fresh = c
                    .credential
                    .insert(credential.id.clone(), (credential.owner_id, kind, at, credential.bind_rules))
                    .is_none();
                assert!(fresh, "credential {} created twice", credential.id);
            }
            EventBody::AgentSession { session, .. } => {
                let (owner, kind, created, _) =
                    c.credential.get(&session.credential.id).expect("credential created before its session");
                assert_ne!(*kind, CredentialKind::ApiKey, "API keys start no agent session");
                assert!(*created < at);
                assert_eq!(&message.key, owner);
                assert_eq!(session.started_at, Some(at));
                assert!(c.session.insert(session.session.id.clone(), (session.credential.id, at)).is_none());
            }
            EventBody::Endpoint { endpoint, .. } => {
                let session_id = endpoint.session_id().expect("endpoint names its session").to_owned();
                let (cred_id, started) = c.session.get(&session_id).expect("session started before its endpoint");
                assert!(*started < at);
                let (owner, _, _, rules) = &c.credential[cred_id];
                let principal = endpoint.principal.as_ref().expect("endpoint names its principal").id.clone();
                assert_eq!(&principal, owner, "endpoint principal is the credential's owner");
                assert_eq!(&message.key, owner);
                let host = endpoint.hostname().expect("endpoint has a host");
                let port = endpoint.port_number().expect("endpoint has a port");
                assert!(
                    BindRule::permits(rules, &host, Some(port), &endpoint.labels),
                    "{host}:{port} not allowed by {rules:?}"
                );
                let previous = c.endpoint.insert((host.clone(), port), (endpoint.id, session_id, principal, at));
                assert!(previous.is_none(), "address {host}:{port} used by two endpoints");
            }
            EventBody::Audit => {
                let principal = event.principal.expect("audit events name their principal");
                let key = principal.credential.expect("bots act with an API key").id;
                let (owner, kind, created, _) = c.credential.get(&key).expect("API key created before it is used");
                assert_eq!(*kind, CredentialKind::ApiKey);
                assert_eq!(owner, &principal.id, "the API key belongs to the principal");
                assert!(*created < at);
                assert_eq!(message.key, principal.id);
                *c.audits.entry(principal.id).or_default() += 1;
            }
            other => panic!("unexpected control event {other:?}"),
        }
    }
    c
}

#[test]
fn same_seed_gives_the_same_bytes() {
    let a = generate(&config());
    let b = generate(&config());
    assert_eq!(a, b);
    assert_eq!(a.truth.to_json_pretty(), b.truth.to_json_pretty());
}

#[test]
fn a_different_seed_gives_different_bytes() {
    let a = generate(&config());
    let b = generate(&FleetConfig { seed: 43, ..config() });
    assert_ne!(
        a.control.iter().map(|m| &m.payload).collect::<Vec<_>>(),
        b.control.iter().map(|m| &m.payload).collect::<Vec<_>>()
    );
    assert_ne!(
        a.traffic.iter().map(|m| &m.payload).collect::<Vec<_>>(),
        b.traffic.iter().map(|m| &m.payload).collect::<Vec<_>>()
    );
    assert_ne!(a.truth.owners, b.truth.owners);
}

#[test]
fn every_message_decodes_and_times_are_ordered_within_the_window() {
    let fleet = generate(&config());
    for (name, messages) in [("control", &fleet.control), ("traffic", &fleet.traffic)] {
        let events = decoded(messages);
        assert!(messages.windows(2).all(|w| w[0].event_time <= w[1].event_time), "{name} is in time order");
        for (message, event) in messages.iter().zip(&events) {
            assert_eq!(event.kind().is_traffic(), name == "traffic", "{} on the {name} topic", event.event_type);
            assert_eq!(event.account_id, fleet.truth.account_id);
            assert!(event.event_id.starts_with("ev_"));
            assert!(message.event_time >= fleet.truth.window_start && message.event_time < fleet.truth.window_end);
        }
    }
    let mut ids = HashSet::new();
    for event in decoded(&fleet.control).into_iter().chain(decoded(&fleet.traffic)) {
        assert!(ids.insert(event.event_id.clone()), "event id {} repeated", event.event_id);
    }
}

#[test]
fn the_fleet_has_every_kind_of_event() {
    let fleet = generate(&config());
    let types: HashSet<String> =
        decoded(&fleet.control).into_iter().chain(decoded(&fleet.traffic)).map(|e| e.event_type).collect();
    for expected in [
        "bot_user_created.v0",
        "tunnel_credential_created.v0",
        "ssh_public_key_created.v0",
        "api_key_created.v0",
        "agent_session_start.v0",
        "endpoint_created.v0",
        "domain_created.v0",
        "http_request_complete.v0",
        "tcp_connection_closed.v0",
    ] {
        assert!(types.contains(expected), "no {expected} in {types:?}");
    }
    let kinds: HashSet<OwnerKind> =
        fleet.truth.owners.values().filter(|o| o.usage.bytes_out > 0).map(|o| o.owner_kind).collect();
    assert_eq!(kinds.len(), 2, "users and bot users both have traffic");
    let inventory = fleet.truth.inventory;
    let cfg = config();
    assert_eq!(inventory.users, cfg.users as u64);
    assert_eq!(inventory.bot_users, cfg.bot_users as u64);
    assert_eq!(inventory.credentials, (cfg.owners() * cfg.credentials_per_owner * 3) as u64);
    assert_eq!(inventory.endpoints, cfg.endpoints());
}

#[test]
fn tokens_are_sent_at_creation_and_dropped_by_the_decoder() {
    let fleet = generate(&config());
    let mut with_token = 0;
    for message in &fleet.control {
        let raw: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let event_type = raw["event_type"].as_str().unwrap();
        let has_token = raw["object"].get("token").is_some();
        let expects_token = matches!(event_type, "tunnel_credential_created.v0" | "api_key_created.v0");
        assert_eq!(has_token, expects_token, "{event_type}");
        if has_token {
            with_token += 1;
            assert!(raw["object"]["token"].as_str().unwrap().starts_with(TOKEN_MARKER));
            let event = decode(&message.payload).unwrap();
            assert!(!format!("{event:?}").contains(TOKEN_MARKER), "decoded event keeps no token");
        }
    }
    assert!(with_token > 0);
}

#[test]
fn ground_truth_equals_an_independent_recount_of_the_traffic() {
    let fleet = generate(&config());
    let control = control_of(&fleet);
    let mut owners: BTreeMap<String, Usage> = BTreeMap::new();
    let mut hourly: BTreeMap<String, BTreeMap<String, Usage>> = BTreeMap::new();
    let mut totals = Usage::default();
    for (message, event) in fleet.traffic.iter().zip(decoded(&fleet.traffic)) {
        let (conn, usage) = match &event.body {
            EventBody::Tcp(tcp) => {
                assert_eq!(
                    tcp.conn.end_ts,
                    Some(event.event_timestamp),
                    "a connection's event_timestamp is its end_ts"
                );
                (
                    &tcp.conn,
                    Usage {
                        bytes_in: tcp.conn.bytes_in,
                        bytes_out: tcp.conn.bytes_out,
                        http_requests: 0,
                        tcp_connections: 1,
                    },
                )
            }
            EventBody::Http(http) => (&http.conn, Usage { http_requests: 1, ..Usage::default() }),
            other => panic!("unexpected traffic {other:?}"),
        };
        assert_eq!(event.usage_time(), message.event_time, "event_time is the usage time");
        let port = conn.server_port.expect("traffic names its port");
        let (_, session, owner, created) =
            control.endpoint.get(&(conn.server_name.clone(), port)).unwrap_or_else(|| {
                panic!("traffic on {}:{port}, which no endpoint_created.v0 announced", conn.server_name)
            });
        assert!(*created < conn.start_ts.expect("start_ts"), "traffic starts after its endpoint came up");
        assert!(*created < event.usage_time());
        let (cred, _) = &control.session[session];
        assert_eq!(&control.credential[cred].0, owner);
        let expected_key = if port == 443 { conn.server_name.clone() } else { format!("{}:{port}", conn.server_name) };
        assert_eq!(message.key, expected_key, "traffic is keyed by the endpoint's address");
        owners.entry(owner.clone()).or_default().add(&usage);
        hourly.entry(owner.clone()).or_default().entry(hour(event.usage_time())).or_default().add(&usage);
        totals.add(&usage);
    }
    let truth = &fleet.truth;
    assert_eq!(truth.totals, totals);
    assert_eq!(truth.hourly, hourly);
    for (owner, usage) in &owners {
        assert_eq!(truth.owners[owner].usage, *usage, "owner {owner}");
    }
    for (owner, entry) in &truth.owners {
        assert_eq!(entry.usage, owners.get(owner).copied().unwrap_or_default(), "owner {owner}");
        assert_eq!(entry.audit_events, control.audits.get(owner).copied().unwrap_or(0), "owner {owner}");
        assert_eq!(Some(entry.owner_kind), OwnerKind::of(owner));
    }
    assert_eq!(truth.traffic_events, fleet.traffic.len() as u64);
    assert_eq!(truth.control_events, fleet.control.len() as u64);
    assert_eq!(truth.total_events, truth.control_events + truth.traffic_events);
    assert_eq!(truth.totals.http_requests + truth.totals.tcp_connections, truth.traffic_events);
    assert_eq!(truth.inventory.endpoints as usize, control.endpoint.len());
}

#[test]
fn hourly_buckets_sum_to_the_owner_totals() {
    let fleet = generate(&FleetConfig { duration_hours: 30, ..config() });
    let truth = &fleet.truth;
    let mut all = Usage::default();
    for (owner, entry) in &truth.owners {
        let mut sum = Usage::default();
        for (bucket, usage) in truth.hourly.get(owner).into_iter().flatten() {
            assert!(bucket.ends_with(":00:00Z"), "{bucket}");
            let start: DateTime<Utc> = bucket.parse().unwrap();
            assert!(start >= hour(truth.window_start).parse::<DateTime<Utc>>().unwrap() && start < truth.window_end);
            sum.add(usage);
        }
        assert_eq!(sum, entry.usage, "owner {owner}");
        all.add(&sum);
    }
    assert_eq!(all, truth.totals);
    assert!(truth.hourly.values().map(BTreeMap::len).max().unwrap() > 20, "traffic spreads over the window");
}

#[test]
fn ground_truth_json_has_the_documented_shape() {
    let truth = generate(&config()).truth;
    let json: serde_json::Value = serde_json::from_str(&truth.to_json_pretty()).unwrap();
    for field in [
        "seed",
        "account_id",
        "window_start",
        "window_end",
        "total_events",
        "control_events",
        "traffic_events",
        "inventory",
        "totals",
        "owners",
        "hourly",
    ] {
        assert!(json.get(field).is_some(), "no {field}");
    }
    let (owner, entry) = json["owners"].as_object().unwrap().iter().next().unwrap();
    for field in ["owner_kind", "bytes_in", "bytes_out", "http_requests", "tcp_connections", "audit_events"] {
        assert!(entry.get(field).is_some(), "owner entry has no {field}");
    }
    assert!(["user", "bot_user"].contains(&entry["owner_kind"].as_str().unwrap()));
    let (bucket, usage) = json["hourly"][owner].as_object().unwrap().iter().next().unwrap();
    assert_eq!(bucket.len(), "2026-01-01T00:00:00Z".len());
    assert_eq!(usage.as_object().unwrap().len(), 4);
    let back: GroundTruth = serde_json::from_value(json).unwrap();
    assert_eq!(back, truth);
}

#[test]
fn fleets_with_only_users_or_only_bots_and_no_traffic_generate() {
    for cfg in [
        FleetConfig { bot_users: 0, ..config() },
        FleetConfig { users: 0, ..config() },
        FleetConfig { traffic_events: 0, duration_hours: 1, ..config() },
    ] {
        let fleet = generate(&cfg);
        let control = control_of(&fleet);
        assert_eq!(control.endpoint.len() as u64, cfg.endpoints());
        assert_eq!(fleet.traffic.len(), cfg.traffic_events);
        decoded(&fleet.traffic);
    }
}

#[test]
fn validate_names_the_field_and_the_value() {
    assert_eq!(FleetConfig::default().validate(), Ok(()));
    let cases = [
        (FleetConfig { users: 0, bot_users: 0, ..config() }, "users + bot_users", "0"),
        (FleetConfig { credentials_per_owner: 0, ..config() }, "credentials_per_owner", "0"),
        (FleetConfig { sessions_per_credential: 5000, ..config() }, "sessions_per_credential", "5000"),
        (FleetConfig { endpoints_per_session: 0, ..config() }, "endpoints_per_session", "0"),
        (FleetConfig { users: 1000, endpoints_per_session: 100, ..config() }, "endpoints_per_session", "100"),
        (FleetConfig { traffic_events: 50_000_000, ..config() }, "traffic_events", "50000000"),
        (FleetConfig { duration_hours: 0, ..config() }, "duration_hours", "0"),
    ];
    for (cfg, field, value) in cases {
        let err = cfg.validate().unwrap_err();
        assert_eq!((err.field, err.value.as_str()), (field, value), "{err}");
        let text = err.to_string();
        assert!(text.contains(field) && text.contains(value), "{text}");
    }
}

#[test]
#[should_panic(expected = "duration_hours")]
fn generate_refuses_an_invalid_config() {
    generate(&FleetConfig { duration_hours: 0, ..config() });
}

#[test]
fn the_config_reads_from_json_with_defaults_and_rejects_unknown_fields() {
    let cfg: FleetConfig = serde_json::from_str(r#"{"seed": 7, "bot_users": 10}"#).unwrap();
    assert_eq!(cfg, FleetConfig { seed: 7, bot_users: 10, ..FleetConfig::default() });
    assert!(serde_json::from_str::<FleetConfig>(r#"{"sead": 7}"#).is_err());
}
