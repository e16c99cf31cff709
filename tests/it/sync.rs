//! `botmeter sync` against the stand-in ngrok API (`simulate::ngrok_api`) on the real services: a
//! fleet that existed before botmeter is backfilled and `botmeter run` attributes the traffic of
//! sessions that started before; then the fleet changes (a bot user deactivated, an authtoken
//! rotated with its sessions and endpoints, an endpoint deleted) and the next poll publishes
//! exactly those events; a restart publishes nothing; `429`, `500`, garbage and a wrong key give a
//! clear error and publish nothing half; and neither the API key nor any credential token (which
//! this stand-in sends, as a misbehaving API would) reaches a log, a topic or a table.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use model::ngrok_api::{Credential, Endpoint, Ref, TunnelSession};
use simulate::ngrok_api::{ApiFleet, Fault, StandInApi};
use simulate::{generate, Fleet, FleetConfig, TOKEN_MARKER};

use crate::support::{
    assert_no_secret_stored, read_topic_all, truth_totals, TestEnv, TopicMessage,
};

/// One decoded message of the control topic: (event type, object id, event time, source).
type Published = (String, String, DateTime<Utc>, Option<String>);

fn decode_all(messages: &[TopicMessage]) -> Vec<Published> {
    messages
        .iter()
        .map(|m| {
            let event = model::decode(m.payload.as_deref().unwrap()).unwrap();
            let id = match &event.body {
                model::EventBody::AgentSession { session, .. } => session.session.id.clone(),
                _ => event.object.as_ref().unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            };
            (event.event_type, id, event.event_timestamp, event.source)
        })
        .collect()
}

struct Sync<'a> {
    env: &'a TestEnv,
    api: &'a StandInApi,
    api_key: &'a str,
    account_id: String,
    /// Every sync's stderr, to search for secrets.
    logs: String,
}

impl Sync<'_> {
    /// `botmeter sync --once` with `extra` flags and `key` as `NGROK_API_KEY`.
    fn once_with_key(&mut self, key: &str, extra: &[&str]) -> Output {
        let base_url = self.api.base_url();
        let mut args = vec![
            "sync",
            "--once",
            "--ngrok-api-url",
            &base_url,
            "--account-id",
            &self.account_id,
        ];
        args.extend_from_slice(extra);
        let output = self
            .env
            .command(&args)
            .env("NGROK_API_KEY", key)
            .output()
            .expect("run botmeter sync");
        self.logs.push_str(&String::from_utf8_lossy(&output.stdout));
        self.logs.push_str(&String::from_utf8_lossy(&output.stderr));
        output
    }

    /// A poll that must succeed; returns what it newly published.
    fn poll(&mut self, before: usize, extra: &[&str]) -> Vec<Published> {
        let output = self.once_with_key(self.api_key, extra);
        assert!(
            output.status.success(),
            "sync failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let all = self.control();
        decode_all(&all[before..])
    }

    fn control(&self) -> Vec<TopicMessage> {
        read_topic_all(
            &self.env.brokers,
            &self.env.control_topic,
            Duration::from_millis(1500),
        )
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// (event type, object id) pairs, sorted, for comparing what was published with what should be.
fn kinds(events: &[Published]) -> Vec<(String, String)> {
    let mut out: Vec<_> = events
        .iter()
        .map(|(t, id, _, _)| (t.clone(), id.clone()))
        .collect();
    out.sort();
    out
}

fn expected(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = pairs
        .iter()
        .map(|(t, id)| ((*t).to_owned(), (*id).to_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_backfills_a_fleet_then_publishes_exactly_its_changes() {
    let env = TestEnv::new("sync");
    env.create_topics(2).await;
    let fleet: Fleet = generate(&FleetConfig {
        traffic_events: 3_000,
        ..FleetConfig::default()
    });
    let account_id = serde_json::from_slice::<serde_json::Value>(&fleet.control[0].payload)
        .unwrap()["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The fleet as it stood before botmeter: every control event has happened.
    let control_end = fleet.control.last().unwrap().event_time;
    let mut seeded = ApiFleet::from_control(&fleet.control, control_end);
    seeded.serve_tokens = true;
    let tokens_held = seeded
        .credentials
        .values()
        .filter(|c| c.token.is_some())
        .count()
        + seeded
            .api_keys
            .values()
            .filter(|c| c.token.is_some())
            .count();
    assert!(tokens_held > 0, "the stand-in must hold tokens to leak");
    let objects = seeded.bot_users.len()
        + seeded.credentials.len()
        + seeded.api_keys.len()
        + seeded.ssh_credentials.len()
        + seeded.tunnel_sessions.len()
        + seeded.endpoints.len();
    let api_key = format!("itngrokkey{}", std::process::id());
    let api = StandInApi::start(&api_key, seeded.clone()).await.unwrap();
    let mut sync = Sync {
        env: &env,
        api: &api,
        api_key: &api_key,
        account_id,
        logs: String::new(),
    };

    // 1. First run: the whole fleet, each object at its own creation time, marked synthesized.
    let snapshot = sync.poll(0, &[]);
    assert_eq!(snapshot.len(), objects);
    assert!(snapshot
        .iter()
        .all(|(_, _, _, source)| source.as_deref() == Some(model::SOURCE_SYNC)));
    let at: BTreeMap<&str, DateTime<Utc>> = snapshot
        .iter()
        .map(|(_, id, t, _)| (id.as_str(), *t))
        .collect();
    for session in seeded.tunnel_sessions.values() {
        assert_eq!(
            ts(at[session.id.as_str()]),
            session.started_at,
            "{session:?}"
        );
    }
    for credential in seeded.credentials.values() {
        assert_eq!(ts(at[credential.id.as_str()]), credential.created_at);
    }
    for endpoint in seeded.endpoints.values() {
        assert_eq!(ts(at[endpoint.id.as_str()]), endpoint.created_at);
    }

    // 2. Traffic of sessions that started before botmeter existed: attributed as the truth says.
    let traffic_only = Fleet {
        control: Vec::new(),
        late_control: Vec::new(),
        ..fleet.clone()
    };
    env.publish(&traffic_only).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        fleet.truth.traffic_events,
        Duration::from_secs(180),
        &mut run,
    )
    .await;
    assert_eq!(env.attributed_totals().await, truth_totals(&fleet.truth));

    // 3. A restart with nothing changed publishes nothing.
    assert_eq!(sync.poll(objects, &[]), Vec::new());

    // 4. The fleet changes: a bot user deactivated, an authtoken rotated (its sessions end with
    //    their endpoints, a new token starts a new session serving a new endpoint), an
    //    unrelated endpoint deleted.
    // Whole milliseconds, as the API writes it.
    let created = DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 30_000).unwrap();
    let (bot_id, old_credential, stopped, stopped_endpoints, deleted_endpoint) =
        api.with_fleet(|f| {
            let bot_id = f
                .bot_users
                .values()
                .find(|b| b.active != Some(false))
                .unwrap()
                .id
                .clone();
            f.bot_users.get_mut(&bot_id).unwrap().active = Some(false);
            let old = f
                .credentials
                .values()
                .find(|c| {
                    f.tunnel_sessions
                        .values()
                        .any(|s| s.credential.as_ref().unwrap().id == c.id)
                })
                .unwrap()
                .clone();
            let stopped: Vec<String> = f
                .tunnel_sessions
                .values()
                .filter(|s| s.credential.as_ref().unwrap().id == old.id)
                .map(|s| s.id.clone())
                .collect();
            let stopped_endpoints: Vec<String> = f
                .endpoints
                .values()
                .filter(|e| stopped.contains(&e.tunnel_session.as_ref().unwrap().id))
                .map(|e| e.id.clone())
                .collect();
            for session in &stopped {
                f.stop_session(session);
            }
            f.credentials.remove(&old.id);
            let template = f.endpoints.values().next().unwrap().clone();
            let deleted = template.id.clone();
            f.endpoints.remove(&deleted);
            f.credentials.insert(
                "cr_itrotated".into(),
                Credential {
                    id: "cr_itrotated".into(),
                    created_at: ts(created),
                    owner_id: old.owner_id.clone(),
                    token: Some(model::ngrok_api::Token(format!("{TOKEN_MARKER}rotated"))),
                    ..old.clone()
                },
            );
            f.tunnel_sessions.insert(
                "ts_itrotated".into(),
                TunnelSession {
                    id: "ts_itrotated".into(),
                    credential: Some(Ref {
                        id: "cr_itrotated".into(),
                        uri: String::new(),
                    }),
                    started_at: ts(created + chrono::Duration::seconds(1)),
                    ..TunnelSession::default()
                },
            );
            f.endpoints.insert(
                "ep_itrotated".into(),
                Endpoint {
                    id: "ep_itrotated".into(),
                    created_at: ts(created + chrono::Duration::seconds(2)),
                    url: "https://rotated.example.com".into(),
                    host: "rotated.example.com".into(),
                    tunnel_session: Some(Ref {
                        id: "ts_itrotated".into(),
                        uri: String::new(),
                    }),
                    ..template
                },
            );
            (bot_id, old.id, stopped, stopped_endpoints, deleted)
        });
    let poll_started = Utc::now();
    let changes = sync.poll(objects, &[]);
    let poll_ended = Utc::now();
    let mut want = vec![
        ("bot_user_updated.v0", bot_id.as_str()),
        ("tunnel_credential_deleted.v0", old_credential.as_str()),
        ("tunnel_credential_created.v0", "cr_itrotated"),
        ("agent_session_start.v0", "ts_itrotated"),
        ("endpoint_created.v0", "ep_itrotated"),
        ("endpoint_deleted.v0", deleted_endpoint.as_str()),
    ];
    want.extend(
        stopped
            .iter()
            .map(|s| ("agent_session_stop.v0", s.as_str())),
    );
    want.extend(
        stopped_endpoints
            .iter()
            .filter(|e| **e != deleted_endpoint)
            .map(|e| ("endpoint_deleted.v0", e.as_str())),
    );
    assert_eq!(kinds(&changes), expected(&want));
    for (event_type, id, t, _) in &changes {
        if event_type.ends_with("_created.v0") || event_type.ends_with("_start.v0") {
            // New objects at their own creation time.
            assert!(
                *t >= created && *t < poll_started,
                "{event_type} {id} at {t}"
            );
        } else {
            // What the API cannot date: when the poll saw it.
            assert!(
                *t >= poll_started && *t <= poll_ended,
                "{event_type} {id} at {t}"
            );
        }
    }
    let mut published = objects + changes.len();

    // 5. A restart publishes nothing twice.
    assert_eq!(sync.poll(published, &[]), Vec::new());

    // 6. 500 then 429 (Retry-After: 1): retried, and the poll publishes its change once.
    api.with_fleet(|f| f.bot_users.get_mut(&bot_id).unwrap().active = Some(true));
    api.push_fault(Some("/bot_users"), Fault::ServerError);
    api.push_fault(
        Some("/credentials"),
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let bot_requests = api.requests("/bot_users");
    let started = std::time::Instant::now();
    let retried = sync.poll(published, &["--first-backoff-ms", "100"]);
    assert_eq!(
        kinds(&retried),
        expected(&[("bot_user_updated.v0", bot_id.as_str())])
    );
    assert_eq!(api.pending_faults(), 0);
    assert_eq!(api.requests("/bot_users"), bot_requests + 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not waited"
    );
    published += 1;

    // 7. Garbage on the last list, past every attempt: a clear error naming the URL, and
    //    nothing published, not even the lists read before it.
    let api_key_id = api.with_fleet(|f| {
        let id = f.api_keys.keys().next().unwrap().clone();
        f.api_keys.remove(&id);
        f.bot_users.get_mut(&bot_id).unwrap().name = "renamed".into();
        id
    });
    for _ in 0..2 {
        api.push_fault(Some("/endpoints"), Fault::Garbage);
    }
    let failed = sync.once_with_key(
        &api_key,
        &["--max-attempts", "2", "--first-backoff-ms", "50"],
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("GET {}/endpoints?limit=100", api.base_url()))
            && stderr.contains("not a page of /endpoints")
            && stderr.contains("published nothing"),
        "{stderr}"
    );
    assert_eq!(sync.control().len(), published, "a failed poll published");
    // The next poll publishes both changes, once.
    let recovered = sync.poll(published, &[]);
    assert_eq!(
        kinds(&recovered),
        expected(&[
            ("api_key_deleted.v0", api_key_id.as_str()),
            ("bot_user_updated.v0", bot_id.as_str()),
        ])
    );
    published += 2;

    // 8. A wrong key fails at once with ngrok's error, and the key it sent is in no output.
    let refused = sync.once_with_key("wrongkeyvalue", &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("401") && stderr.contains("ERR_NGROK_205"),
        "{stderr}"
    );
    assert!(!sync.logs.contains("wrongkeyvalue"), "{stderr}");
    assert_eq!(api.refused(), 1);

    // 9. botmeter run stored every synthesized event with its source; usage is unchanged (the
    //    changes are stamped now, after all of the fleet's traffic).
    env.wait_for_count(
        &format!(
            "SELECT count() FROM {}.control_events WHERE source = 'botmeter-sync'",
            env.database
        ),
        published as u64,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    assert_eq!(env.attributed_totals().await, truth_totals(&fleet.truth));
    let (_serve, base) = env.serve().await;
    let audit: serde_json::Value = reqwest::get(format!("{base}/v1/audit?owner_id={bot_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lifecycle = audit["lifecycle"].as_array().unwrap();
    let deactivated: Vec<&serde_json::Value> = lifecycle
        .iter()
        .filter(|e| e["action"] == "deactivated")
        .collect();
    assert_eq!(deactivated.len(), 1, "{audit}");
    assert!(
        lifecycle.iter().all(|e| e["source"] == model::SOURCE_SYNC),
        "{audit}"
    );

    // 10. No token and no API key anywhere: topic, logs, tables.
    for message in sync.control() {
        let text = String::from_utf8_lossy(message.payload.as_deref().unwrap()).into_owned();
        assert!(
            !text.contains(TOKEN_MARKER) && !text.contains(&api_key),
            "{text}"
        );
    }
    let run_log = std::fs::read_to_string(&run.log).unwrap();
    for log in [&sync.logs, &run_log] {
        assert!(!log.contains(TOKEN_MARKER) && !log.contains(&api_key));
    }
    assert_no_secret_stored(&env, &[TOKEN_MARKER, &api_key]).await;

    drop(run);
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_keeps_polling_survives_a_failed_poll_and_stops_on_sigterm() {
    let env = TestEnv::new("sync_loop");
    env.create_topics(1).await;
    let mut fleet = ApiFleet::default();
    fleet.bot_users.insert(
        "bot_loop".into(),
        model::ngrok_api::BotUser {
            id: "bot_loop".into(),
            name: "loop".into(),
            active: Some(true),
            created_at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        },
    );
    let api_key = format!("itloopkey{}", std::process::id());
    let api = StandInApi::start(&api_key, fleet).await.unwrap();
    let key_file = env.log_dir.join("ngrok-api-key");
    std::fs::write(&key_file, format!("{api_key}\n")).unwrap();
    let base_url = api.base_url();
    let mut sync = env.spawn(
        "sync",
        &[
            "sync",
            "--ngrok-api-url",
            &base_url,
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--poll-interval-secs",
            "1",
            "--max-attempts",
            "1",
        ],
    );
    let wait_for = |count: usize, sync: &mut crate::support::BotmeterProcess| {
        let started = std::time::Instant::now();
        loop {
            sync.assert_running();
            let messages =
                read_topic_all(&env.brokers, &env.control_topic, Duration::from_millis(500));
            if messages.len() >= count || started.elapsed() > Duration::from_secs(30) {
                return decode_all(&messages);
            }
        }
    };
    let first = wait_for(1, &mut sync);
    assert_eq!(
        kinds(&first),
        expected(&[("bot_user_created.v0", "bot_loop")])
    );

    // The next poll fails (garbage, one attempt): it publishes nothing, and the one after
    // publishes the change.
    api.push_fault(None, Fault::Garbage);
    api.with_fleet(|f| f.bot_users.get_mut("bot_loop").unwrap().active = Some(false));
    let second = wait_for(2, &mut sync);
    assert_eq!(
        kinds(&second),
        expected(&[
            ("bot_user_created.v0", "bot_loop"),
            ("bot_user_updated.v0", "bot_loop"),
        ])
    );
    // More polls, nothing new to publish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        read_topic_all(&env.brokers, &env.control_topic, Duration::from_millis(500)).len(),
        2
    );
    assert!(api.requests("/bot_users") >= 5);
    assert!(sync.terminate(Duration::from_secs(10)).success());
    let log = std::fs::read_to_string(&sync.log).unwrap();
    assert!(log.contains("published nothing"), "{log}");
    assert!(!log.contains(&api_key), "{log}");
}
