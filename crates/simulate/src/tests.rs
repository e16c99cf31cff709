//! The simulator's guarantees, checked by decoding what it generates with botmeter's own decoder
//! and recounting independently of the generator's bookkeeping: a clean fleet against its own
//! control events, every fleet against the resolution rules re-applied by brute force to the
//! decoded control events ([`Rules`]), and against botmeter's resolver
//! (`enrich::OwnershipState`), event by event.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use enrich::{ApplyOutcome, OwnershipState};
use model::{decode, BindRule, CredentialKind, EndpointAction, Event, EventBody, OwnerKind};

use super::*;

fn config() -> FleetConfig {
    FleetConfig {
        traffic_events: 4_000,
        ..FleetConfig::default()
    }
}

fn decoded(messages: &[SimMessage]) -> Vec<Event> {
    messages
        .iter()
        .map(|m| {
            decode(&m.payload)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&m.payload)))
        })
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
        assert_eq!(
            at, message.event_time,
            "event {}: event_time is the event_timestamp",
            event.event_id
        );
        match event.body {
            EventBody::BotUser { bot_user, .. } => {
                assert_eq!(message.key, bot_user.id);
                assert_eq!(bot_user.created_at, Some(at));
                assert!(
                    c.owner_created.insert(bot_user.id, at).is_none(),
                    "bot created twice"
                );
            }
            EventBody::Credential {
                kind, credential, ..
            } => {
                assert_eq!(
                    message.key, credential.owner_id,
                    "control messages are keyed by owner"
                );
                if credential.owner_id.starts_with("bot_") {
                    let created = c
                        .owner_created
                        .get(&credential.owner_id)
                        .expect("bot user created before its credential");
                    assert!(*created < at);
                } else {
                    c.owner_created
                        .entry(credential.owner_id.clone())
                        .or_insert(fleet.truth.window_start);
                }
                let fresh = c
                    .credential
                    .insert(
                        credential.id.clone(),
                        (credential.owner_id, kind, at, credential.bind_rules),
                    )
                    .is_none();
                assert!(fresh, "credential {} created twice", credential.id);
            }
            EventBody::AgentSession { session, .. } => {
                let (owner, kind, created, _) = c
                    .credential
                    .get(&session.credential.id)
                    .expect("credential created before its session");
                assert_ne!(
                    *kind,
                    CredentialKind::ApiKey,
                    "API keys start no agent session"
                );
                assert!(*created < at);
                assert_eq!(&message.key, owner);
                assert_eq!(session.started_at, Some(at));
                assert!(c
                    .session
                    .insert(session.session.id.clone(), (session.credential.id, at))
                    .is_none());
            }
            EventBody::Endpoint { endpoint, .. } => {
                let session_id = endpoint
                    .session_id()
                    .expect("endpoint names its session")
                    .to_owned();
                let (cred_id, started) = c
                    .session
                    .get(&session_id)
                    .expect("session started before its endpoint");
                assert!(*started < at);
                let (owner, _, _, rules) = &c.credential[cred_id];
                let principal = endpoint
                    .principal
                    .as_ref()
                    .expect("endpoint names its principal")
                    .id
                    .clone();
                assert_eq!(
                    &principal, owner,
                    "endpoint principal is the credential's owner"
                );
                assert_eq!(&message.key, owner);
                let host = endpoint.hostname().expect("endpoint has a host");
                let port = endpoint.port_number().expect("endpoint has a port");
                assert!(
                    BindRule::permits(rules, &host, Some(port), &endpoint.labels),
                    "{host}:{port} not allowed by {rules:?}"
                );
                let previous = c.endpoint.insert(
                    (host.clone(), port),
                    (endpoint.id, session_id, principal, at),
                );
                assert!(
                    previous.is_none(),
                    "address {host}:{port} used by two endpoints"
                );
            }
            EventBody::Audit => {
                let principal = event.principal.expect("audit events name their principal");
                let key = principal.credential.expect("bots act with an API key").id;
                let (owner, kind, created, _) = c
                    .credential
                    .get(&key)
                    .expect("API key created before it is used");
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
    let b = generate(&FleetConfig {
        seed: 43,
        ..config()
    });
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
        assert!(
            messages
                .windows(2)
                .all(|w| w[0].event_time <= w[1].event_time),
            "{name} is in time order"
        );
        for (message, event) in messages.iter().zip(&events) {
            assert_eq!(
                event.kind().is_traffic(),
                name == "traffic",
                "{} on the {name} topic",
                event.event_type
            );
            assert_eq!(event.account_id, fleet.truth.account_id);
            assert!(event.event_id.starts_with("ev_"));
            assert!(
                message.event_time >= fleet.truth.window_start
                    && message.event_time < fleet.truth.window_end
            );
        }
    }
    let mut ids = HashSet::new();
    for event in decoded(&fleet.control)
        .into_iter()
        .chain(decoded(&fleet.traffic))
    {
        assert!(
            ids.insert(event.event_id.clone()),
            "event id {} repeated",
            event.event_id
        );
    }
}

#[test]
fn the_fleet_has_every_kind_of_event() {
    let fleet = generate(&config());
    let types: HashSet<String> = decoded(&fleet.control)
        .into_iter()
        .chain(decoded(&fleet.traffic))
        .map(|e| e.event_type)
        .collect();
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
    let kinds: HashSet<OwnerKind> = fleet
        .truth
        .owners
        .values()
        .filter(|o| o.usage.bytes_out > 0)
        .map(|o| o.owner_kind)
        .collect();
    assert_eq!(kinds.len(), 2, "users and bot users both have traffic");
    let inventory = fleet.truth.inventory;
    let cfg = config();
    assert_eq!(inventory.users, cfg.users as u64);
    assert_eq!(inventory.bot_users, cfg.bot_users as u64);
    assert_eq!(
        inventory.credentials,
        (cfg.owners() * cfg.credentials_per_owner * 3) as u64
    );
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
        let expects_token = matches!(
            event_type,
            "tunnel_credential_created.v0" | "api_key_created.v0"
        );
        assert_eq!(has_token, expects_token, "{event_type}");
        if has_token {
            with_token += 1;
            assert!(raw["object"]["token"]
                .as_str()
                .unwrap()
                .starts_with(TOKEN_MARKER));
            let event = decode(&message.payload).unwrap();
            assert!(
                !format!("{event:?}").contains(TOKEN_MARKER),
                "decoded event keeps no token"
            );
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
            EventBody::Http(http) => (
                &http.conn,
                Usage {
                    http_requests: 1,
                    ..Usage::default()
                },
            ),
            other => panic!("unexpected traffic {other:?}"),
        };
        assert_eq!(
            event.usage_time(),
            message.event_time,
            "event_time is the usage time"
        );
        let port = conn.server_port.expect("traffic names its port");
        let (_, session, owner, created) = control
            .endpoint
            .get(&(conn.server_name.clone(), port))
            .unwrap_or_else(|| {
                panic!(
                    "traffic on {}:{port}, which no endpoint_created.v0 announced",
                    conn.server_name
                )
            });
        assert!(
            *created < conn.start_ts.expect("start_ts"),
            "traffic starts after its endpoint came up"
        );
        assert!(*created < event.usage_time());
        let (cred, _) = &control.session[session];
        assert_eq!(&control.credential[cred].0, owner);
        let expected_key = if port == 443 {
            conn.server_name.clone()
        } else {
            format!("{}:{port}", conn.server_name)
        };
        assert_eq!(
            message.key, expected_key,
            "traffic is keyed by the endpoint's address"
        );
        owners.entry(owner.clone()).or_default().add(&usage);
        hourly
            .entry(owner.clone())
            .or_default()
            .entry(hour(event.usage_time()))
            .or_default()
            .add(&usage);
        totals.add(&usage);
    }
    let truth = &fleet.truth;
    assert_eq!(truth.totals, totals);
    assert_eq!(truth.hourly, hourly);
    for (owner, usage) in &owners {
        assert_eq!(truth.owners[owner].usage, *usage, "owner {owner}");
    }
    for (owner, entry) in &truth.owners {
        assert_eq!(
            entry.usage,
            owners.get(owner).copied().unwrap_or_default(),
            "owner {owner}"
        );
        assert_eq!(
            entry.audit_events,
            control.audits.get(owner).copied().unwrap_or(0),
            "owner {owner}"
        );
        assert_eq!(Some(entry.owner_kind), OwnerKind::of(owner));
    }
    assert_eq!(truth.traffic_events, fleet.traffic.len() as u64);
    assert_eq!(truth.control_events, fleet.control.len() as u64);
    assert_eq!(
        truth.total_events,
        truth.control_events + truth.traffic_events
    );
    assert_eq!(
        truth.totals.http_requests + truth.totals.tcp_connections,
        truth.traffic_events
    );
    assert_eq!(truth.inventory.endpoints as usize, control.endpoint.len());
}

#[test]
fn hourly_buckets_sum_to_the_owner_totals() {
    let fleet = generate(&FleetConfig {
        duration_hours: 30,
        ..config()
    });
    let truth = &fleet.truth;
    let mut all = Usage::default();
    for (owner, entry) in &truth.owners {
        let mut sum = Usage::default();
        for (bucket, usage) in truth.hourly.get(owner).into_iter().flatten() {
            assert!(bucket.ends_with(":00:00Z"), "{bucket}");
            let start: DateTime<Utc> = bucket.parse().unwrap();
            assert!(
                start >= hour(truth.window_start).parse::<DateTime<Utc>>().unwrap()
                    && start < truth.window_end
            );
            sum.add(usage);
        }
        assert_eq!(sum, entry.usage, "owner {owner}");
        all.add(&sum);
    }
    assert_eq!(all, truth.totals);
    assert!(
        truth.hourly.values().map(BTreeMap::len).max().unwrap() > 20,
        "traffic spreads over the window"
    );
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
        "unattributed",
        "by_metadata",
        "events",
    ] {
        assert!(json.get(field).is_some(), "no {field}");
    }
    let (owner, entry) = json["owners"].as_object().unwrap().iter().next().unwrap();
    let fields = [
        "owner_kind",
        "bytes_in",
        "bytes_out",
        "http_requests",
        "tcp_connections",
        "audit_events",
        "flagged",
        "by_metadata",
    ];
    for field in fields {
        assert!(entry.get(field).is_some(), "owner entry has no {field}");
    }
    assert!(["user", "bot_user"].contains(&entry["owner_kind"].as_str().unwrap()));
    let (bucket, usage) = json["hourly"][owner]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(bucket.len(), "2026-01-01T00:00:00Z".len());
    assert_eq!(usage.as_object().unwrap().len(), 4);
    let back: GroundTruth = serde_json::from_value(json).unwrap();
    assert_eq!(back, truth);
}

#[test]
fn fleets_with_only_users_or_only_bots_and_no_traffic_generate() {
    for cfg in [
        FleetConfig {
            bot_users: 0,
            ..config()
        },
        FleetConfig {
            users: 0,
            ..config()
        },
        FleetConfig {
            traffic_events: 0,
            duration_hours: 1,
            ..config()
        },
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
        (
            FleetConfig {
                users: 0,
                bot_users: 0,
                ..config()
            },
            "users + bot_users",
            "0",
        ),
        (
            FleetConfig {
                credentials_per_owner: 0,
                ..config()
            },
            "credentials_per_owner",
            "0",
        ),
        (
            FleetConfig {
                sessions_per_credential: 5000,
                ..config()
            },
            "sessions_per_credential",
            "5000",
        ),
        (
            FleetConfig {
                endpoints_per_session: 0,
                ..config()
            },
            "endpoints_per_session",
            "0",
        ),
        (
            FleetConfig {
                users: 1000,
                endpoints_per_session: 100,
                ..config()
            },
            "endpoints_per_session",
            "100",
        ),
        (
            FleetConfig {
                traffic_events: 50_000_000,
                ..config()
            },
            "traffic_events",
            "50000000",
        ),
        (
            FleetConfig {
                duration_hours: 0,
                ..config()
            },
            "duration_hours",
            "0",
        ),
        (
            FleetConfig {
                scenarios: Scenarios {
                    rotations: 5000,
                    ..Scenarios::default()
                },
                ..config()
            },
            "scenarios.rotations",
            "5000",
        ),
        (
            FleetConfig {
                scenarios: Scenarios {
                    wildcard_sites: 1001,
                    ..Scenarios::default()
                },
                ..config()
            },
            "scenarios.wildcard_sites",
            "1001",
        ),
        (
            FleetConfig {
                late_control: 1001,
                ..config()
            },
            "late_control",
            "1001",
        ),
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
    generate(&FleetConfig {
        duration_hours: 0,
        ..config()
    });
}

#[test]
fn the_config_reads_from_json_with_defaults_and_rejects_unknown_fields() {
    let cfg: FleetConfig = serde_json::from_str(r#"{"seed": 7, "bot_users": 10}"#).unwrap();
    assert_eq!(
        cfg,
        FleetConfig {
            seed: 7,
            bot_users: 10,
            ..FleetConfig::default()
        }
    );
    assert!(serde_json::from_str::<FleetConfig>(r#"{"sead": 7}"#).is_err());
    let cfg: FleetConfig = serde_json::from_str(
        r#"{"scenarios": {"rotations": 3}, "late_control": 2, "record_events": false}"#,
    )
    .unwrap();
    let scenarios = Scenarios {
        rotations: 3,
        ..Scenarios::default()
    };
    assert_eq!(
        cfg,
        FleetConfig {
            scenarios,
            late_control: 2,
            record_events: Some(false),
            ..FleetConfig::default()
        }
    );
    assert!(serde_json::from_str::<FleetConfig>(r#"{"scenarios": {"rotation": 3}}"#).is_err());
}

// ---------------------------------------------------------------------------------------------
// Anomalies, late control, and the resolver.

/// A traffic event's time and the owner it attributes to.
type TimedOwner = (DateTime<Utc>, Option<String>);

fn anomalies() -> FleetConfig {
    FleetConfig {
        traffic_events: 6_000,
        late_control: 2,
        ..FleetConfig::with_anomalies()
    }
}

/// A larger fleet with several of everything, over more than a day.
fn many_anomalies() -> FleetConfig {
    FleetConfig {
        seed: 7,
        users: 4,
        bot_users: 9,
        credentials_per_owner: 2,
        sessions_per_credential: 3,
        endpoints_per_session: 2,
        traffic_events: 15_000,
        duration_hours: 30,
        scenarios: Scenarios {
            rotations: 3,
            bot_deactivations: 3,
            bot_deletions: 2,
            hostname_reuses: 3,
            acl_violations: 4,
            principal_mismatches: 2,
            unknown_hostnames: 3,
            unknown_sessions: 2,
            unknown_credentials: 2,
            unknown_owners: 2,
            bot_deletions_without_credential_deletes: 2,
            wildcard_sites: 3,
            credential_metadata: 3,
            device_drops: 2,
            usage_spikes: 2,
        },
        late_control: 3,
        ..FleetConfig::default()
    }
}

/// The usage a decoded traffic event carries.
fn usage_of(event: &Event) -> Usage {
    match &event.body {
        EventBody::Tcp(tcp) => Usage {
            bytes_in: tcp.conn.bytes_in,
            bytes_out: tcp.conn.bytes_out,
            http_requests: 0,
            tcp_connections: 1,
        },
        EventBody::Http(_) => Usage {
            http_requests: 1,
            ..Usage::default()
        },
        other => panic!("unexpected traffic {other:?}"),
    }
}

/// What botmeter's resolver concludes about each traffic event: every control event (the late
/// ones too when `with_late`) applied in time order, each traffic event resolved as of its usage
/// time, exactly as the pipeline calls it.
fn resolve_all(fleet: &Fleet, with_late: bool) -> Vec<(Event, ExpectedEvent)> {
    let mut state = OwnershipState::new();
    let mut control = decoded(&fleet.control);
    if with_late {
        control.extend(decoded(&fleet.late_control));
    }
    control.sort_by_key(|e| e.event_timestamp);
    for event in &control {
        let outcome = state.apply(event);
        assert!(
            matches!(outcome, ApplyOutcome::Applied | ApplyOutcome::Ignored),
            "{}: {outcome:?}",
            event.event_id
        );
    }
    decoded(&fleet.traffic)
        .into_iter()
        .map(|event| {
            let (conn, endpoint_id) = match &event.body {
                EventBody::Tcp(tcp) => (&tcp.conn, tcp.endpoint_id.as_deref()),
                EventBody::Http(http) => (&http.conn, http.endpoint_id.as_deref()),
                other => panic!("unexpected traffic {other:?}"),
            };
            let resolution = state.resolve(
                &conn.server_name,
                conn.server_port,
                endpoint_id,
                event.usage_time(),
            );
            let outcome = ExpectedEvent {
                owner_id: resolution.owner_id.clone(),
                unattributed_reason: resolution.unattributed.map(|r| r.as_str().to_owned()),
                flags: resolution
                    .flags
                    .iter()
                    .map(|f| f.as_str().to_owned())
                    .collect(),
                endpoint_id: resolution.endpoint_id.clone(),
                credential_id: resolution.credential_id.clone(),
                usage: usage_of(&event),
                usage_time: Some(event.usage_time()),
            };
            (event, outcome)
        })
        .collect()
}

/// Asserts that the resolver agrees with the truth on every event and that the truth's sums are
/// the sums of the resolver's outcomes. Returns how many events carry each flag and reason.
fn assert_resolver_agrees(fleet: &Fleet) -> BTreeMap<String, u64> {
    let truth = &fleet.truth;
    assert_eq!(
        truth.events.len(),
        fleet.traffic.len(),
        "every event is recorded"
    );
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut totals = Usage::default();
    let mut owners: BTreeMap<String, Usage> = BTreeMap::new();
    let mut flagged: BTreeMap<String, BTreeMap<String, Usage>> = BTreeMap::new();
    let mut hourly: BTreeMap<String, BTreeMap<String, Usage>> = BTreeMap::new();
    let mut unattributed: BTreeMap<String, Usage> = BTreeMap::new();
    for (event, resolved) in resolve_all(fleet, true) {
        let expected = truth
            .events
            .get(&event.event_id)
            .unwrap_or_else(|| panic!("{} not in the truth", event.event_id));
        let conn = match &event.body {
            EventBody::Tcp(tcp) => &tcp.conn,
            EventBody::Http(http) => &http.conn,
            _ => unreachable!(),
        };
        assert_eq!(
            &resolved,
            expected,
            "event {} ({}) on {}:{:?} at {}: the resolver (left) and the truth (right) disagree",
            event.event_id,
            event.event_type,
            conn.server_name,
            conn.server_port,
            event.usage_time()
        );
        assert!(resolved.owner_id.is_some() != resolved.unattributed_reason.is_some());
        totals.add(&resolved.usage);
        match (&resolved.owner_id, &resolved.unattributed_reason) {
            (Some(owner), None) => {
                owners
                    .entry(owner.clone())
                    .or_default()
                    .add(&resolved.usage);
                hourly
                    .entry(owner.clone())
                    .or_default()
                    .entry(hour(event.usage_time()))
                    .or_default()
                    .add(&resolved.usage);
                for flag in &resolved.flags {
                    flagged
                        .entry(owner.clone())
                        .or_default()
                        .entry(flag.clone())
                        .or_default()
                        .add(&resolved.usage);
                    *counts.entry(flag.clone()).or_default() += 1;
                }
            }
            (None, Some(reason)) => {
                assert!(resolved.flags.is_empty());
                unattributed
                    .entry(reason.clone())
                    .or_default()
                    .add(&resolved.usage);
                *counts.entry(reason.clone()).or_default() += 1;
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(truth.totals, totals, "totals are all traffic");
    assert_eq!(truth.unattributed, unattributed);
    assert_eq!(truth.hourly, hourly);
    for (owner, entry) in &truth.owners {
        assert_eq!(
            entry.usage,
            owners.remove(owner).unwrap_or_default(),
            "owner {owner}"
        );
        assert_eq!(
            entry.flagged,
            flagged.remove(owner).unwrap_or_default(),
            "owner {owner}"
        );
    }
    assert!(
        owners.is_empty(),
        "usage attributed to owners the truth does not list: {owners:?}"
    );
    let mut sum = Usage::default();
    truth.owners.values().for_each(|o| sum.add(&o.usage));
    truth.unattributed.values().for_each(|u| sum.add(u));
    assert_eq!(
        sum, truth.totals,
        "owners plus unattributed make the totals"
    );
    counts
}

/// The fleets every event of which is checked: anomalies of every kind, with only users, with
/// only bot users, with little to build on, with few events, over one hour, and a clean one.
fn checked_fleets() -> Vec<FleetConfig> {
    vec![
        anomalies(),
        many_anomalies(),
        FleetConfig {
            bot_users: 0,
            users: 5,
            ..anomalies()
        },
        FleetConfig {
            users: 0,
            bot_users: 6,
            ..anomalies()
        },
        FleetConfig {
            sessions_per_credential: 1,
            endpoints_per_session: 1,
            ..anomalies()
        },
        FleetConfig {
            traffic_events: 40,
            ..anomalies()
        },
        FleetConfig {
            duration_hours: 1,
            seed: 3,
            ..anomalies()
        },
        config(),
    ]
}

#[test]
fn the_resolver_agrees_with_the_truth_on_every_event() {
    for cfg in checked_fleets() {
        let fleet = generate(&cfg);
        let counts = assert_resolver_agrees(&fleet);
        if cfg.scenarios.is_none() {
            assert!(
                counts.is_empty(),
                "a clean fleet has no flag and no unattributed event: {counts:?}"
            );
        }
    }
}

#[test]
fn the_truth_follows_the_resolution_rules_on_every_event() {
    for cfg in checked_fleets() {
        let fleet = generate(&cfg);
        let counts = assert_rules_agree(&fleet);
        if cfg.scenarios.is_none() {
            assert!(
                counts.is_empty(),
                "a clean fleet has no flag and no unattributed event: {counts:?}"
            );
        }
    }
}

#[test]
fn every_scenario_occurs() {
    for cfg in [FleetConfig::with_anomalies(), anomalies(), many_anomalies()] {
        let fleet = generate(&cfg);
        let counts = assert_rules_agree(&fleet);
        for kind in [
            "credential_deleted",
            "owner_inactive",
            "owner_deleted",
            "acl_violation",
            "principal_mismatch",
            "no_endpoint",
            "unknown_session",
            "unknown_credential",
            "unknown_owner",
        ] {
            assert!(
                counts.get(kind).copied().unwrap_or(0) > 0,
                "seed {}: no {kind} in {counts:?}",
                cfg.seed
            );
        }
        let types: HashSet<String> = decoded(&fleet.control)
            .into_iter()
            .map(|e| e.event_type)
            .collect();
        for expected in [
            "bot_user_updated.v0",
            "bot_user_deleted.v0",
            "tunnel_credential_deleted.v0",
            "ssh_public_key_deleted.v0",
            "api_key_deleted.v0",
            "agent_session_stop.v0",
            "endpoint_deleted.v0",
            "tunnel_credential_updated.v0",
            "ssh_public_key_updated.v0",
            "api_key_updated.v0",
        ] {
            assert!(types.contains(expected), "no {expected} in {types:?}");
        }

        let events = decoded(&fleet.traffic);
        let outcome = |e: &Event| &fleet.truth.events[&e.event_id];
        let flags_of = |e: &Event| {
            outcome(e)
                .flags
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        };
        // A rotation's straggler: the deleted credential and nothing else.
        assert!(
            events.iter().any(|e| flags_of(e) == ["credential_deleted"]),
            "no rotation straggler"
        );
        // A deleted bot user: its revoked credential and itself.
        assert!(
            events
                .iter()
                .any(|e| flags_of(e) == ["credential_deleted", "owner_deleted"]),
            "no deleted bot"
        );
        // A reactivated bot user: inactive, then unflagged again.
        let mut first_inactive: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        let mut last_unflagged: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for event in &events {
            let Some(owner) = outcome(event).owner_id.as_deref() else {
                continue;
            };
            let t = event.usage_time();
            if flags_of(event) == ["owner_inactive"] {
                first_inactive
                    .entry(owner)
                    .and_modify(|f| *f = (*f).min(t))
                    .or_insert(t);
            } else if flags_of(event).is_empty() {
                last_unflagged
                    .entry(owner)
                    .and_modify(|l| *l = (*l).max(t))
                    .or_insert(t);
            }
        }
        let reactivated = first_inactive
            .iter()
            .any(|(owner, inactive)| last_unflagged.get(owner).is_some_and(|l| l > inactive));
        assert!(reactivated, "no reactivated bot user");
        // A reused hostname: two owners, and no endpoint in between.
        let mut by_host: BTreeMap<String, Vec<TimedOwner>> = BTreeMap::new();
        for event in &events {
            let host = match &event.body {
                EventBody::Tcp(tcp) => {
                    format!("{}:{:?}", tcp.conn.server_name, tcp.conn.server_port)
                }
                EventBody::Http(http) => {
                    format!("{}:{:?}", http.conn.server_name, http.conn.server_port)
                }
                _ => unreachable!(),
            };
            by_host
                .entry(host)
                .or_default()
                .push((event.usage_time(), outcome(event).owner_id.clone()));
        }
        // Owner A, then no endpoint, then owner B, in time order.
        let reused = by_host.values_mut().any(|history| {
            history.sort();
            let owners: Vec<&Option<String>> = history.iter().map(|(_, owner)| owner).collect();
            let Some(gap) = owners.iter().position(|o| o.is_none()) else {
                return false;
            };
            let before = owners[..gap].iter().rev().find_map(|o| o.as_ref());
            let after = owners[gap..].iter().find_map(|o| o.as_ref());
            matches!((before, after), (Some(a), Some(b)) if a != b)
        });
        assert!(reused, "no hostname reused by another owner after a gap");
    }
}

#[test]
fn anomaly_fleets_are_deterministic_and_decode_in_order_within_the_window() {
    let cfg = anomalies();
    let fleet = generate(&cfg);
    assert_eq!(fleet, generate(&cfg));
    assert_eq!(
        fleet.truth.to_json_pretty(),
        generate(&cfg).truth.to_json_pretty()
    );
    assert_ne!(
        fleet.truth,
        generate(&FleetConfig {
            seed: 43,
            ..cfg.clone()
        })
        .truth
    );

    let mut ids = HashSet::new();
    let mut created = HashMap::<&str, u64>::new();
    for (name, messages) in [
        ("control", &fleet.control),
        ("late", &fleet.late_control),
        ("traffic", &fleet.traffic),
    ] {
        assert!(
            messages
                .windows(2)
                .all(|w| w[0].event_time <= w[1].event_time),
            "{name} is in time order"
        );
        for (message, event) in messages.iter().zip(decoded(messages)) {
            assert_eq!(
                event.kind().is_traffic(),
                name == "traffic",
                "{} on the {name} topic",
                event.event_type
            );
            assert_eq!(event.event_timestamp, message.event_time);
            assert_eq!(event.account_id, fleet.truth.account_id);
            assert!(
                message.event_time >= fleet.truth.window_start
                    && message.event_time < fleet.truth.window_end
            );
            assert!(
                ids.insert(event.event_id.clone()),
                "event id {} repeated",
                event.event_id
            );
            let raw: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let has_token = raw["object"].get("token").is_some();
            let expects_token = matches!(
                event.event_type.as_str(),
                "tunnel_credential_created.v0" | "api_key_created.v0"
            );
            assert_eq!(has_token, expects_token, "{}", event.event_type);
            let kind = match event.event_type.as_str() {
                "bot_user_created.v0" => "bot_users",
                "tunnel_credential_created.v0"
                | "ssh_public_key_created.v0"
                | "api_key_created.v0" => "credentials",
                "agent_session_start.v0" => "agent_sessions",
                "endpoint_created.v0" => "endpoints",
                _ => continue,
            };
            *created.entry(kind).or_default() += 1;
        }
    }
    let inventory = fleet.truth.inventory;
    assert_eq!(created["bot_users"], inventory.bot_users);
    assert_eq!(created["credentials"], inventory.credentials);
    assert_eq!(created["agent_sessions"], inventory.agent_sessions);
    assert_eq!(created["endpoints"], inventory.endpoints);
    assert_eq!(
        fleet.truth.control_events,
        (fleet.control.len() + fleet.late_control.len()) as u64
    );
    assert_eq!(
        fleet.truth.total_events,
        fleet.truth.control_events + fleet.truth.traffic_events
    );
}

#[test]
fn late_control_is_what_attributes_the_late_chains() {
    let cfg = FleetConfig {
        late_control: 3,
        ..anomalies()
    };
    let fleet = generate(&cfg);
    let late = decoded(&fleet.late_control);
    let types: Vec<&str> = late.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types.len(),
        9,
        "a credential, a session and an endpoint per late chain: {types:?}"
    );
    for expected in [
        "tunnel_credential_created.v0",
        "agent_session_start.v0",
        "endpoint_created.v0",
    ] {
        assert_eq!(
            types.iter().filter(|t| **t == expected).count(),
            3,
            "{expected} in {types:?}"
        );
    }
    // Each late endpoint gets its first traffic a few milliseconds after it came up.
    let traffic = decoded(&fleet.traffic);
    for event in &late {
        let EventBody::Endpoint {
            action: EndpointAction::Created,
            endpoint,
        } = &event.body
        else {
            continue;
        };
        let host = endpoint.hostname().unwrap();
        let first = traffic
            .iter()
            .filter(|t| {
                matches!(&t.body, EventBody::Http(h) if h.conn.server_name == host)
                    || matches!(&t.body, EventBody::Tcp(c) if c.conn.server_name == host)
            })
            .map(Event::usage_time)
            .min()
            .expect("traffic on a late endpoint");
        let lead_ms = (first - event.event_timestamp).num_milliseconds();
        assert!(
            (2..=5).contains(&lead_ms),
            "{host}: first traffic {lead_ms} ms after the endpoint"
        );
    }
    // With the late events the resolver agrees with the truth; without them, exactly the late
    // chains' traffic fails to attribute.
    assert_resolver_agrees(&fleet);
    let mut missed = 0;
    for ((event, without), (_, with)) in resolve_all(&fleet, false)
        .into_iter()
        .zip(resolve_all(&fleet, true))
    {
        if without != with {
            assert_eq!(
                without.unattributed_reason.as_deref(),
                Some("no_endpoint"),
                "{}",
                event.event_id
            );
            assert!(
                with.owner_id.is_some() && with.flags.is_empty(),
                "{}",
                event.event_id
            );
            missed += 1;
        }
    }
    assert!(
        missed >= 9,
        "the late chains' traffic needs their control events ({missed})"
    );
}

#[test]
fn the_late_control_scenario_attributes_everything_once_its_control_arrives() {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
        + chrono::Duration::microseconds(123_456);
    let fleet = late_control_scenario(now, 5);
    assert_eq!(fleet, late_control_scenario(now, 5));
    assert!(fleet.control.is_empty(), "every control event is late");
    let types: Vec<String> = decoded(&fleet.late_control)
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "bot_user_created.v0",
            "tunnel_credential_created.v0",
            "agent_session_start.v0",
            "endpoint_created.v0"
        ]
    );
    assert_eq!(fleet.traffic.len(), LATE_SCENARIO_TRAFFIC_EVENTS);
    let last_control = fleet.late_control.last().unwrap().event_time;
    for message in &fleet.traffic {
        let ahead_ms = (message.event_time - last_control).num_milliseconds();
        assert!(
            (3..=30).contains(&ahead_ms),
            "traffic {ahead_ms} ms after the endpoint"
        );
        assert!(
            message.event_time < now
                && now - message.event_time < chrono::Duration::milliseconds(50)
        );
    }
    let truth = &fleet.truth;
    let bot = truth.owners.keys().next().unwrap().clone();
    assert_eq!(truth.owners.len(), 1);
    assert!(truth
        .events
        .values()
        .all(|e| e.owner_id.as_ref() == Some(&bot) && e.flags.is_empty()));
    assert_eq!(truth.owners[&bot].usage, truth.totals);
    assert_resolver_agrees(&fleet);
    assert!(resolve_all(&fleet, false)
        .iter()
        .all(|(_, r)| r.unattributed_reason.as_deref() == Some("no_endpoint")));
}

#[test]
fn the_default_fleet_is_clean_and_anomalies_are_opt_in() {
    assert!(FleetConfig::default().scenarios.is_none());
    assert_eq!(FleetConfig::default().late_control, 0);
    assert_eq!(
        FleetConfig::with_anomalies(),
        FleetConfig {
            scenarios: Scenarios::standard(),
            ..FleetConfig::default()
        }
    );
    let fleet = generate(&FleetConfig::default());
    assert!(fleet.late_control.is_empty());
    assert!(fleet.truth.unattributed.is_empty());
    assert!(fleet.truth.owners.values().all(|o| o.flagged.is_empty()));
    assert!(fleet
        .truth
        .events
        .values()
        .all(|e| e.owner_id.is_some() && e.flags.is_empty()));
    let types: HashSet<String> = decoded(&fleet.control)
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert!(
        types
            .iter()
            .all(|t| t.ends_with("_created.v0") || t == "agent_session_start.v0"),
        "{types:?}"
    );
}

#[test]
fn events_are_recorded_as_configured() {
    let small = FleetConfig {
        traffic_events: 100,
        ..FleetConfig::with_anomalies()
    };
    assert_eq!(generate(&small).truth.events.len(), 100);
    assert!(generate(&FleetConfig {
        record_events: Some(false),
        ..small.clone()
    })
    .truth
    .events
    .is_empty());
    assert!(!FleetConfig {
        traffic_events: RECORD_EVENTS_UP_TO + 1,
        ..small.clone()
    }
    .records_events());
    assert!(FleetConfig {
        traffic_events: RECORD_EVENTS_UP_TO + 1,
        record_events: Some(true),
        ..small
    }
    .records_events());
}

#[test]
fn expected_events_have_the_documented_json_shape() {
    let truth = generate(&anomalies()).truth;
    let json: serde_json::Value = serde_json::from_str(&truth.to_json_pretty()).unwrap();
    let events = json["events"].as_object().unwrap();
    assert_eq!(events.len() as u64, truth.traffic_events);
    let fields = [
        "owner_id",
        "unattributed_reason",
        "flags",
        "endpoint_id",
        "credential_id",
        "bytes_in",
        "bytes_out",
        "http_requests",
        "tcp_connections",
        "usage_time",
    ];
    for event in events.values() {
        let keys: HashSet<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, fields.into_iter().collect(), "{event}");
    }
    let flagged = json["owners"]
        .as_object()
        .unwrap()
        .values()
        .find(|o| !o["flagged"].as_object().unwrap().is_empty());
    assert_eq!(
        flagged.unwrap()["flagged"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_object()
            .unwrap()
            .len(),
        4
    );
    assert!(json["unattributed"]["no_endpoint"]["http_requests"].is_u64());
    let back: GroundTruth = serde_json::from_value(json).unwrap();
    assert_eq!(back, truth);
}

// ---------------------------------------------------------------------------------------------
// Issue 15: wildcard sites, bot deletions that revoke, metadata. The truth against the
// resolution rules applied by brute force to the decoded control events.

/// The metadata keys the truth groups by, and the value of a credential without one: the
/// contract botmeter's `group_by=metadata.<key>` is held to.
const GROUPED_KEYS: [&str; 4] = ["device_id", "environment", "site", "team"];
const NO_VALUE: &str = "(none)";

/// One endpoint's life, as its `endpoint_created.v0` and `endpoint_deleted.v0` tell it.
#[derive(Debug)]
struct EndpointLife {
    id: String,
    host: String,
    port: Option<u16>,
    session: Option<String>,
    principal: Option<String>,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
}

impl EndpointLife {
    fn serves_at(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && self.end.is_none_or(|end| t < end)
    }

    /// How well its name covers `host` (and `port`): exact above any wildcard, a wildcard by
    /// the length of its suffix; `None` when it does not.
    fn covers(&self, host: &str, port: Option<u16>) -> Option<usize> {
        if matches!((port, self.port), (Some(a), Some(b)) if a != b) {
            return None;
        }
        if self.host == host {
            return Some(usize::MAX);
        }
        let suffix = self.host.strip_prefix("*.")?;
        host.strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            .then_some(suffix.len())
    }
}

/// A value from some instant on.
type History<T> = Vec<(DateTime<Utc>, T)>;

/// The value of `history` as of `t`: the last from at or before `t`.
fn as_of<T>(history: &History<T>, t: DateTime<Utc>) -> Option<&T> {
    history
        .iter()
        .take_while(|(since, _)| *since <= t)
        .last()
        .map(|(_, value)| value)
}

#[derive(Debug)]
struct CredentialLife {
    owner: String,
    deleted: Option<DateTime<Utc>>,
    rules: History<Vec<BindRule>>,
    metadata: History<String>,
}

#[derive(Debug)]
struct BotLife {
    active: History<bool>,
    deleted: Option<DateTime<Utc>>,
}

/// The control plane of a fleet rebuilt from its decoded control events (late ones included),
/// to resolve traffic by the rules of issue 15, brute force: the endpoint serving a hostname at
/// `t` is an exact one of that name if one serves then, else the serving wildcard `*.suffix`
/// with the longest suffix the hostname ends in (`.suffix`, at any depth); a bot user's deletion
/// revokes its credentials.
#[derive(Debug, Default)]
struct Rules {
    endpoints: Vec<EndpointLife>,
    sessions: HashMap<String, String>,
    credentials: HashMap<String, CredentialLife>,
    bots: HashMap<String, BotLife>,
}

/// What the rules conclude about one traffic event, and the metadata its usage is grouped by.
#[derive(Debug)]
struct RuledEvent {
    expected: ExpectedEvent,
    metadata: Option<String>,
}

impl Rules {
    fn of(fleet: &Fleet) -> Self {
        let mut control = decoded(&fleet.control);
        control.extend(decoded(&fleet.late_control));
        control.sort_by_key(|e| e.event_timestamp);
        let mut rules = Self::default();
        for event in control {
            let at = event.event_timestamp;
            match event.body {
                EventBody::BotUser { action, bot_user } => match action {
                    model::CredentialAction::Created => {
                        rules.bots.insert(
                            bot_user.id,
                            BotLife {
                                active: vec![(at, bot_user.active)],
                                deleted: None,
                            },
                        );
                    }
                    model::CredentialAction::Updated => {
                        rules
                            .bots
                            .get_mut(&bot_user.id)
                            .unwrap()
                            .active
                            .push((at, bot_user.active));
                    }
                    model::CredentialAction::Deleted => {
                        rules.bots.get_mut(&bot_user.id).unwrap().deleted = Some(at);
                    }
                },
                EventBody::Credential {
                    action, credential, ..
                } => match action {
                    model::CredentialAction::Created => {
                        rules.credentials.insert(
                            credential.id,
                            CredentialLife {
                                owner: credential.owner_id,
                                deleted: None,
                                rules: vec![(at, credential.bind_rules)],
                                metadata: vec![(at, credential.metadata)],
                            },
                        );
                    }
                    model::CredentialAction::Updated => {
                        let life = rules.credentials.get_mut(&credential.id).unwrap();
                        assert_eq!(life.owner, credential.owner_id, "an owner never changes");
                        life.rules.push((at, credential.bind_rules));
                        life.metadata.push((at, credential.metadata));
                    }
                    model::CredentialAction::Deleted => {
                        rules.credentials.get_mut(&credential.id).unwrap().deleted = Some(at);
                    }
                },
                EventBody::AgentSession {
                    action: model::SessionAction::Start,
                    session,
                } => {
                    rules
                        .sessions
                        .insert(session.session.id, session.credential.id);
                }
                EventBody::Endpoint {
                    action: EndpointAction::Created,
                    endpoint,
                } => rules.endpoints.push(EndpointLife {
                    host: endpoint.hostname().expect("an endpoint names its host"),
                    port: endpoint.port_number(),
                    session: endpoint.session_id().map(str::to_owned),
                    principal: endpoint.principal.as_ref().map(|p| p.id.clone()),
                    id: endpoint.id,
                    start: at,
                    end: None,
                }),
                EventBody::Endpoint {
                    action: EndpointAction::Deleted,
                    endpoint,
                } => {
                    let life = rules
                        .endpoints
                        .iter_mut()
                        .find(|e| e.id == endpoint.id && e.end.is_none())
                        .expect("an endpoint is deleted once, after its creation");
                    life.end = Some(at);
                }
                _ => {}
            }
        }
        rules
    }

    /// The endpoint serving `host`:`port` at `t`, by brute force over every endpoint.
    fn serving(&self, host: &str, port: Option<u16>, t: DateTime<Utc>) -> Option<&EndpointLife> {
        self.endpoints
            .iter()
            .filter(|e| e.serves_at(t))
            .filter_map(|e| e.covers(host, port).map(|rank| (rank, e.start, e)))
            .max_by_key(|(rank, start, _)| (*rank, *start))
            .map(|(_, _, e)| e)
    }

    /// What botmeter must conclude about a decoded traffic event.
    fn resolve(&self, event: &Event) -> RuledEvent {
        let conn = match &event.body {
            EventBody::Tcp(tcp) => &tcp.conn,
            EventBody::Http(http) => &http.conn,
            other => panic!("unexpected traffic {other:?}"),
        };
        let t = event.usage_time();
        let mut expected = ExpectedEvent {
            usage: usage_of(event),
            usage_time: Some(t),
            ..ExpectedEvent::default()
        };
        let missing = |expected: ExpectedEvent, reason: &str| RuledEvent {
            expected: ExpectedEvent {
                unattributed_reason: Some(reason.to_owned()),
                ..expected
            },
            metadata: None,
        };
        let Some(endpoint) = self.serving(&conn.server_name, conn.server_port, t) else {
            return missing(expected, "no_endpoint");
        };
        expected.endpoint_id = Some(endpoint.id.clone());
        let Some(cred_id) = endpoint.session.as_ref().and_then(|s| self.sessions.get(s)) else {
            return missing(expected, "unknown_session");
        };
        expected.credential_id = Some(cred_id.clone());
        let Some(cred) = self.credentials.get(cred_id) else {
            return missing(expected, "unknown_credential");
        };
        let bot = self.bots.get(&cred.owner);
        if cred.owner.starts_with("bot_") && bot.is_none() {
            return missing(expected, "unknown_owner");
        }
        let owner_deleted = bot.and_then(|b| b.deleted).is_some_and(|d| d <= t);
        let flags = &mut expected.flags;
        // Deleting a bot user revokes its credentials, whether or not their deletions arrive.
        if owner_deleted || cred.deleted.is_some_and(|d| d <= t) {
            flags.push("credential_deleted".to_owned());
        }
        if owner_deleted {
            flags.push("owner_deleted".to_owned());
        } else if bot.is_some_and(|b| as_of(&b.active, t) == Some(&false)) {
            flags.push("owner_inactive".to_owned());
        }
        // The endpoint's own name: `*.suffix` for a wildcard.
        let rules = as_of(&cred.rules, t).expect("a credential's rules from its creation");
        if !BindRule::permits(rules, &endpoint.host, endpoint.port, &BTreeMap::new()) {
            flags.push("acl_violation".to_owned());
        }
        if endpoint
            .principal
            .as_ref()
            .is_some_and(|p| *p != cred.owner)
        {
            flags.push("principal_mismatch".to_owned());
        }
        expected.owner_id = Some(cred.owner.clone());
        RuledEvent {
            expected,
            metadata: as_of(&cred.metadata, t).cloned(),
        }
    }
}

/// What `metadata` holds under `key`, or [`NO_VALUE`].
fn metadata_value(metadata: &str, key: &str) -> String {
    serde_json::from_str::<serde_json::Value>(metadata)
        .ok()
        .and_then(|v| v.get(key).and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_else(|| NO_VALUE.to_owned())
}

fn add_by_key(groups: &mut MetadataUsage, metadata: &str, usage: &Usage) {
    for key in GROUPED_KEYS {
        groups
            .entry(key.to_owned())
            .or_default()
            .entry(metadata_value(metadata, key))
            .or_default()
            .add(usage);
    }
}

/// Asserts that the truth is what the rules conclude, event by event, and that its sums (per
/// owner, flag, hour, reason and metadata value) are the sums of those conclusions. Returns how
/// many events carry each flag and reason.
fn assert_rules_agree(fleet: &Fleet) -> BTreeMap<String, u64> {
    let truth = &fleet.truth;
    let rules = Rules::of(fleet);
    assert_eq!(
        truth.events.len(),
        fleet.traffic.len(),
        "every event is recorded"
    );
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut totals = Usage::default();
    let mut owners: BTreeMap<String, Usage> = BTreeMap::new();
    let mut flagged: BTreeMap<String, BTreeMap<String, Usage>> = BTreeMap::new();
    let mut hourly: BTreeMap<String, BTreeMap<String, Usage>> = BTreeMap::new();
    let mut unattributed: BTreeMap<String, Usage> = BTreeMap::new();
    let mut by_metadata = MetadataUsage::new();
    let mut owner_metadata: BTreeMap<String, MetadataUsage> = BTreeMap::new();
    for event in decoded(&fleet.traffic) {
        let RuledEvent { expected, metadata } = rules.resolve(&event);
        let recorded = &truth.events[&event.event_id];
        assert_eq!(
            &expected,
            recorded,
            "event {} at {}: the rules (left) and the truth (right) disagree",
            event.event_id,
            event.usage_time()
        );
        let usage = expected.usage;
        totals.add(&usage);
        match (&expected.owner_id, &expected.unattributed_reason) {
            (Some(owner), None) => {
                owners.entry(owner.clone()).or_default().add(&usage);
                hourly
                    .entry(owner.clone())
                    .or_default()
                    .entry(hour(event.usage_time()))
                    .or_default()
                    .add(&usage);
                for flag in &expected.flags {
                    flagged
                        .entry(owner.clone())
                        .or_default()
                        .entry(flag.clone())
                        .or_default()
                        .add(&usage);
                    *counts.entry(flag.clone()).or_default() += 1;
                }
                let metadata = metadata.expect("an attributed event has a credential");
                add_by_key(&mut by_metadata, &metadata, &usage);
                add_by_key(
                    owner_metadata.entry(owner.clone()).or_default(),
                    &metadata,
                    &usage,
                );
            }
            (None, Some(reason)) => {
                unattributed.entry(reason.clone()).or_default().add(&usage);
                *counts.entry(reason.clone()).or_default() += 1;
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(truth.totals, totals);
    assert_eq!(truth.unattributed, unattributed);
    assert_eq!(truth.hourly, hourly);
    assert_eq!(truth.by_metadata, by_metadata);
    for (owner, entry) in &truth.owners {
        assert_eq!(
            entry.usage,
            owners.remove(owner).unwrap_or_default(),
            "{owner}"
        );
        assert_eq!(
            entry.flagged,
            flagged.remove(owner).unwrap_or_default(),
            "{owner}"
        );
        assert_eq!(
            entry.by_metadata,
            owner_metadata.remove(owner).unwrap_or_default(),
            "{owner}"
        );
    }
    assert!(
        owners.is_empty(),
        "usage on owners the truth does not list: {owners:?}"
    );
    counts
}

/// Whether an event's hostname is under the wildcard sites' domain.
fn under_fleet_domain(event: &Event) -> Option<String> {
    let host = match &event.body {
        EventBody::Http(http) => &http.conn.server_name,
        EventBody::Tcp(tcp) => &tcp.conn.server_name,
        _ => return None,
    };
    host.ends_with(".factory.example.com").then(|| host.clone())
}

#[test]
fn wildcard_sites_exercise_every_resolution_rule() {
    for cfg in [FleetConfig::with_anomalies(), anomalies(), many_anomalies()] {
        let fleet = generate(&cfg);
        let rules = Rules::of(&fleet);
        let wildcards: Vec<&EndpointLife> = rules
            .endpoints
            .iter()
            .filter(|e| e.host.starts_with("*."))
            .collect();
        assert_eq!(
            wildcards.len(),
            cfg.scenarios.wildcard_sites + 1,
            "a wildcard per site and the catch-all"
        );
        let wildcard_owner = |e: &EndpointLife| {
            let cred = &rules.credentials[&rules.sessions[e.session.as_ref().unwrap()]];
            (cred.owner.clone(), cred.rules[0].1.clone())
        };
        for wildcard in &wildcards {
            let (owner, acl) = wildcard_owner(wildcard);
            assert_eq!(
                acl,
                [BindRule::WildcardDomain("factory.example.com".into())],
                "{}",
                wildcard.host
            );
            assert!(
                BindRule::permits(&acl, &wildcard.host, Some(443), &BTreeMap::new()),
                "the ACL allows the wildcard's own name"
            );
            assert!(
                fleet.truth.owners.contains_key(&owner),
                "{owner} is announced"
            );
        }
        let site_owners: HashSet<String> = wildcards
            .iter()
            .filter(|w| w.host != "*.factory.example.com")
            .map(|w| wildcard_owner(w).0)
            .collect();
        if cfg.bot_users > 0 {
            assert!(
                site_owners.iter().all(|o| o.starts_with("bot_")),
                "site wildcards are owned through bot users' authtokens: {site_owners:?}"
            );
        }

        let mut seen: BTreeMap<&str, u64> = BTreeMap::new();
        let mut served_by: BTreeMap<String, BTreeSet<(bool, String)>> = BTreeMap::new();
        for event in decoded(&fleet.traffic) {
            let Some(host) = under_fleet_domain(&event) else {
                continue;
            };
            let t = event.usage_time();
            let expected = &fleet.truth.events[&event.event_id];
            let covering: Vec<&EndpointLife> = rules
                .endpoints
                .iter()
                .filter(|e| e.serves_at(t) && e.covers(&host, Some(443)).is_some())
                .collect();
            let Some(endpoint_id) = &expected.endpoint_id else {
                assert!(covering.is_empty(), "{host} at {t}: an endpoint serves it");
                *seen.entry("no endpoint left").or_default() += 1;
                continue;
            };
            let served = covering
                .iter()
                .find(|e| &e.id == endpoint_id)
                .unwrap_or_else(|| panic!("{host} at {t}: {endpoint_id} does not cover it"));
            assert!(
                !expected.flags.contains(&"acl_violation".to_owned()),
                "{host}: the wildcard ACLs allow their endpoints"
            );
            let exact = served.host == host;
            served_by
                .entry(host.clone())
                .or_default()
                .insert((exact, expected.owner_id.clone().unwrap_or_default()));
            let wildcards_live = covering.iter().filter(|e| e.host.starts_with("*.")).count();
            if exact && wildcards_live > 0 {
                *seen.entry("exact over a live wildcard").or_default() += 1;
            }
            if !exact && wildcards_live > 1 {
                assert_ne!(served.host, "*.factory.example.com", "{host} at {t}");
                *seen.entry("longest suffix over a shorter one").or_default() += 1;
            }
            if !exact && served.host == "*.factory.example.com" && host.contains(".site") {
                *seen.entry("catch-all for a site device").or_default() += 1;
            }
            let depth = host.len() - served.host.len() + 1;
            if !exact && host[..depth].matches('.').count() > 1 {
                *seen.entry("nested name under a wildcard").or_default() += 1;
            }
        }
        for case in [
            "exact over a live wildcard",
            "longest suffix over a shorter one",
            "catch-all for a site device",
            "nested name under a wildcard",
            "no endpoint left",
        ] {
            assert!(
                seen.get(case).is_some_and(|n| *n > 0),
                "seed {}: no {case} in {seen:?}",
                cfg.seed
            );
        }
        // A device name on its own exact endpoint for part of the window, on a wildcard outside
        // it, with different owners.
        assert!(
            served_by.values().any(|served| {
                served.iter().any(|(exact, _)| *exact)
                    && served.iter().any(|(exact, _)| !exact)
                    && served.iter().map(|(_, o)| o).collect::<BTreeSet<_>>().len() > 1
            }),
            "no device name that changes hands between its exact endpoint and a wildcard"
        );
    }
}

#[test]
fn a_bot_deleted_without_its_credential_deletes_revokes_them_all_the_same() {
    for cfg in [
        FleetConfig {
            scenarios: Scenarios {
                bot_deletions_without_credential_deletes: 1,
                ..Scenarios::default()
            },
            traffic_events: 4_000,
            ..FleetConfig::default()
        },
        FleetConfig::with_anomalies(),
        many_anomalies(),
    ] {
        let fleet = generate(&cfg);
        let control = decoded(&fleet.control);
        let mut owner_of: HashMap<String, String> = HashMap::new();
        let mut credential_deletes: HashSet<String> = HashSet::new();
        let mut bot_deleted: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for event in &control {
            match &event.body {
                EventBody::Credential {
                    action, credential, ..
                } => {
                    owner_of.insert(credential.id.clone(), credential.owner_id.clone());
                    if *action == model::CredentialAction::Deleted {
                        credential_deletes.insert(credential.owner_id.clone());
                    }
                }
                EventBody::BotUser {
                    action: model::CredentialAction::Deleted,
                    bot_user,
                } => {
                    bot_deleted.insert(bot_user.id.clone(), event.event_timestamp);
                }
                _ => {}
            }
        }
        let silent: BTreeMap<&String, &DateTime<Utc>> = bot_deleted
            .iter()
            .filter(|(bot, _)| !credential_deletes.contains(*bot))
            .collect();
        assert_eq!(
            silent.len(),
            cfg.scenarios.bot_deletions_without_credential_deletes,
            "bots deleted without a single credential deletion"
        );
        let traffic = decoded(&fleet.traffic);
        for (bot, deleted_at) in silent {
            let (mut before, mut after) = (0, 0);
            for event in &traffic {
                let expected = &fleet.truth.events[&event.event_id];
                if expected.owner_id.as_ref() != Some(bot) {
                    continue;
                }
                let credential = expected.credential_id.as_ref().unwrap();
                assert_eq!(&owner_of[credential], bot);
                let flags: Vec<&str> = expected.flags.iter().map(String::as_str).collect();
                if event.usage_time() >= *deleted_at {
                    assert_eq!(
                        flags[..2],
                        ["credential_deleted", "owner_deleted"],
                        "{}: after its bot user's deletion",
                        event.event_id
                    );
                    after += 1;
                } else {
                    assert!(
                        !flags.contains(&"credential_deleted") && !flags.contains(&"owner_deleted"),
                        "{}: before the deletion {flags:?}",
                        event.event_id
                    );
                    before += 1;
                }
            }
            assert!(
                before > 0 && after > 0,
                "{bot}: traffic on each side ({before}, {after})"
            );
            let revoked = &fleet.truth.owners[bot].flagged["credential_deleted"];
            let deleted = &fleet.truth.owners[bot].flagged["owner_deleted"];
            assert_eq!(
                revoked, deleted,
                "{bot}: every use after the deletion is on a revoked credential"
            );
            assert_eq!(revoked.http_requests + revoked.tcp_connections, after);
        }
        assert_rules_agree(&fleet);
    }
}

#[test]
fn usage_by_metadata_follows_each_credentials_metadata_at_the_events_time() {
    for cfg in [FleetConfig::with_anomalies(), many_anomalies()] {
        let fleet = generate(&cfg);
        let truth = &fleet.truth;
        assert_rules_agree(&fleet);
        // Each key's groups add up to the attributed usage, overall and per owner.
        let mut attributed = Usage::default();
        truth.owners.values().for_each(|o| attributed.add(&o.usage));
        for key in GROUPED_KEYS {
            let mut sum = Usage::default();
            truth.by_metadata[key].values().for_each(|u| sum.add(u));
            assert_eq!(sum, attributed, "{key}");
            for (owner, entry) in truth
                .owners
                .iter()
                .filter(|(_, o)| o.usage != Usage::default())
            {
                let mut sum = Usage::default();
                entry.by_metadata[key].values().for_each(|u| sum.add(u));
                assert_eq!(sum, entry.usage, "{owner} {key}");
            }
        }
        let sites = &truth.by_metadata["site"];
        assert!(
            sites.contains_key(NO_VALUE),
            "credentials without a site: {sites:?}"
        );
        assert!(
            sites.keys().filter(|s| s.starts_with("site")).count() >= 2,
            "{sites:?}"
        );
        let devices = &truth.by_metadata["device_id"];
        assert!(devices.contains_key(NO_VALUE));
        assert!(devices.keys().any(|d| d.starts_with("dev")), "{devices:?}");
        assert!(truth.by_metadata["team"].keys().any(|t| t != NO_VALUE));

        // Each kind has a credential whose metadata changes; those with traffic are grouped
        // under the old site before the change and under the new one after.
        let mut changes: Vec<(String, DateTime<Utc>, String, String)> = Vec::new();
        let mut metadata: HashMap<String, String> = HashMap::new();
        let mut kinds = HashSet::new();
        for event in decoded(&fleet.control) {
            let EventBody::Credential {
                kind,
                action,
                credential,
            } = event.body
            else {
                continue;
            };
            match action {
                model::CredentialAction::Created => {
                    metadata.insert(credential.id, credential.metadata);
                }
                model::CredentialAction::Updated => {
                    kinds.insert(kind);
                    let old = metadata[&credential.id].clone();
                    let (from, to) = (
                        metadata_value(&old, "site"),
                        metadata_value(&credential.metadata, "site"),
                    );
                    assert_ne!(
                        from, to,
                        "the update moves {} to another site",
                        credential.id
                    );
                    assert_eq!(
                        metadata_value(&old, "environment"),
                        metadata_value(&credential.metadata, "environment")
                    );
                    changes.push((credential.id, event.event_timestamp, from, to));
                }
                model::CredentialAction::Deleted => {}
            }
        }
        assert_eq!(kinds.len(), 3, "a metadata change of each kind: {kinds:?}");
        let traffic = decoded(&fleet.traffic);
        let mut moved = 0;
        for (credential, at, from, to) in &changes {
            let mut sides = (Usage::default(), Usage::default());
            for event in &traffic {
                let expected = &truth.events[&event.event_id];
                if expected.credential_id.as_ref() == Some(credential)
                    && expected.owner_id.is_some()
                {
                    let side = if event.usage_time() < *at {
                        &mut sides.0
                    } else {
                        &mut sides.1
                    };
                    side.add(&expected.usage);
                }
            }
            if sides != (Usage::default(), Usage::default()) {
                assert!(
                    sides.0 != Usage::default() && sides.1 != Usage::default(),
                    "{credential}: usage on both sides of its change from {from} to {to}"
                );
                moved += 1;
            }
        }
        assert!(
            moved >= 2,
            "the authtoken's and the SSH key's changes have traffic"
        );
    }
}

#[test]
fn fleets_without_the_new_scenarios_have_none_of_their_traces() {
    let fleet = generate(&FleetConfig {
        scenarios: Scenarios {
            wildcard_sites: 0,
            bot_deletions_without_credential_deletes: 0,
            credential_metadata: 0,
            ..Scenarios::standard()
        },
        ..anomalies()
    });
    for event in decoded(&fleet.control)
        .iter()
        .chain(&decoded(&fleet.traffic))
    {
        assert!(
            !event.event_type.ends_with("_updated.v0") || event.event_type == "bot_user_updated.v0"
        );
        assert!(under_fleet_domain(event).is_none());
    }
    assert_eq!(
        fleet.truth.by_metadata["device_id"]
            .keys()
            .collect::<Vec<_>>(),
        [NO_VALUE]
    );
}

/// The fleet truth against the published control events read as raw JSON (independent of the
/// generator's world): at several instants, each credential's agents online, endpoints online and
/// last session start, and devices that drop and come back do.
#[test]
fn the_fleet_truth_equals_the_published_sessions_and_drops_come_back() {
    let config = FleetConfig {
        scenarios: Scenarios {
            device_drops: 3,
            ..Scenarios::standard()
        },
        ..anomalies()
    };
    let fleet = generate(&config);
    let truth = &fleet.truth;
    // Per session: (credential, start, stop); per endpoint: (session, created, deleted).
    type Times = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let mut sessions: BTreeMap<String, (String, Times)> = BTreeMap::new();
    let mut endpoints: BTreeMap<String, (String, Times)> = BTreeMap::new();
    for message in fleet.control.iter().chain(&fleet.late_control) {
        let json: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let object = &json["object"];
        let at = Some(message.event_time);
        match json["event_type"].as_str().unwrap() {
            "agent_session_start.v0" | "agent_session_stop.v0" => {
                let entry = sessions
                    .entry(object["session"]["id"].as_str().unwrap().to_owned())
                    .or_insert_with(|| {
                        (
                            object["credential"]["id"].as_str().unwrap().to_owned(),
                            (None, None),
                        )
                    });
                if json["event_type"] == "agent_session_start.v0" {
                    entry.1 .0 = at;
                } else {
                    entry.1 .1 = at;
                }
            }
            "endpoint_created.v0" => {
                let session = object["tunnel_session"]["id"].as_str().unwrap().to_owned();
                endpoints.insert(
                    object["id"].as_str().unwrap().to_owned(),
                    (session, (at, None)),
                );
            }
            "endpoint_deleted.v0" => {
                endpoints
                    .get_mut(object["id"].as_str().unwrap())
                    .unwrap()
                    .1
                     .1 = at;
            }
            _ => {}
        }
    }
    let window = truth.window_end - truth.window_start;
    let grace = chrono::Duration::minutes(5);
    let mut states_seen: BTreeMap<&str, usize> = BTreeMap::new();
    for percent in [20, 40, 50, 80, 99] {
        let at = truth.window_start + window * percent / 100;
        let expected = truth.fleet_at(at, grace);
        assert!(!expected.is_empty());
        for (id, state) in &expected {
            let live = |(start, stop): &Times| {
                start.is_some_and(|s| s < at) && stop.is_none_or(|s| s >= at)
            };
            let mut online: Vec<String> = sessions
                .iter()
                .filter(|(_, (cred, times))| cred == id && live(times))
                .map(|(session, _)| session.clone())
                .collect();
            online.sort();
            assert_eq!(state.agents_online, online, "{id} at {at}");
            let served = endpoints
                .values()
                .filter(|(session, times)| online.contains(session) && live(times))
                .count() as u64;
            assert_eq!(state.endpoints_online, served, "{id} at {at}");
            let last_start = sessions
                .values()
                .filter(|(cred, (start, _))| cred == id && start.is_some_and(|s| s < at))
                .filter_map(|(_, (start, _))| *start)
                .max();
            assert!(state.last_seen_at >= last_start, "{id} at {at}");
            *states_seen.entry(state.state).or_default() += 1;
        }
    }
    assert!(
        states_seen.contains_key("online") && states_seen.contains_key("dropped"),
        "{states_seen:?}"
    );
    // The dropped devices: dropped at 50%, the first and third back online at 80%, the second not.
    let mid = truth.fleet_at(truth.window_start + window / 2, grace);
    let late = truth.fleet_at(truth.window_start + window * 4 / 5, grace);
    let dropped: Vec<&String> = mid
        .iter()
        .filter(|(_, s)| s.state == "dropped")
        .map(|(id, _)| id)
        .collect();
    assert!(dropped.len() >= 3, "{mid:?}");
    let back = dropped
        .iter()
        .filter(|id| late[**id].state == "online")
        .count();
    assert!(back >= 2, "two of three come back");
    assert!(
        dropped.iter().any(|id| late[*id].state == "dropped"),
        "one stays dropped"
    );
}
