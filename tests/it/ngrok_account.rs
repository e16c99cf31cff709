//! A real ngrok account, end to end (issue 14's "done when"): the stand-in ngrok API holds a fleet
//! that existed before botmeter; `botmeter sync` (polling every second) backfills it; ngrok's
//! traffic arrives the way Firehose delivers it, through `botmeter receive` (gzipped batches, a
//! request first refused for a stale key and retried, every request sent a second time with the
//! same request id), and `botmeter run` attributes it. Then the fleet changes while traffic keeps
//! arriving: a bot user deactivated, an authtoken rotated (its sessions end with their endpoints;
//! a new token, session and endpoint), an endpoint deleted. Per-owner totals read back equal the
//! truth exactly: the simulator's for the first part, and for the second part what each change
//! means (the rotated endpoint's bytes go to its owner, the deactivated bot's are its own and
//! flagged `owner_inactive`, the deleted endpoint's are unattributed). No API key, access key or
//! credential token (which this stand-in API serves, as a misbehaving one would) is stored or
//! logged anywhere.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use model::ngrok_api::{Credential, Endpoint, Ref, TunnelSession};
use simulate::ngrok_api::{ApiFleet, StandInApi};
use simulate::{generate, Fleet, FleetConfig, TOKEN_MARKER};

use crate::firehose_client::FirehoseClient;
use crate::receive::{start_receive, ACCESS_KEY};
/// The rotated credential's new endpoint.
const ROTATED_HOST: &str = "rotated-e2e.example.com";

use crate::support::{assert_no_secret_stored, read_topic_all, truth_totals, OwnerTotals, TestEnv};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Sends `events` through `receive` as Firehose would: gzipped batches of 200 records, each
/// delivered (retried with its request id until answered 200) and then sent once more with the
/// same request id, as Firehose does when our 200 is lost on the way back.
async fn deliver_twice(client: &FirehoseClient, events: &[Vec<u8>]) -> usize {
    let batches = client.batches(events.iter().map(Vec::as_slice));
    for batch in &batches {
        client
            .deliver(batch, 10)
            .await
            .unwrap_or_else(|reply| panic!("request {} refused: {reply:?}", batch.request_id));
        let again = client.send(batch).await.expect("send again");
        assert_eq!(again.status, 200, "a repeated request: {again:?}");
    }
    batches.len()
}

/// A `tcp_connection_closed.v0` like `template`, to `host` and `port`, at `at`, moving
/// `bytes_out`.
fn connection(
    template: &serde_json::Value,
    id: &str,
    (host, port): (&str, Option<i64>),
    at: DateTime<Utc>,
    bytes_out: u64,
) -> Vec<u8> {
    let mut event = template.clone();
    event["event_id"] = id.into();
    event["event_timestamp"] = ts(at).into();
    let conn = &mut event["object"]["conn"];
    conn["server_name"] = host.into();
    conn["server_port"] = port.unwrap_or(443).into();
    conn["bytes_out"] = bytes_out.into();
    conn["bytes_in"] = 10.into();
    conn["start_ts"] = ts(at - chrono::Duration::seconds(1)).into();
    conn["end_ts"] = ts(at).into();
    serde_json::to_vec(&event).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ngrok_account_through_sync_and_receive_equals_the_truth() {
    let env = TestEnv::new("ngrok_account");
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

    // The fleet as it stood before botmeter, tokens included (a misbehaving API).
    let control_end = fleet.control.last().unwrap().event_time;
    let mut seeded = ApiFleet::from_control(&fleet.control, control_end);
    seeded.serve_tokens = true;
    let mut secrets: Vec<String> = seeded
        .credentials
        .values()
        .filter_map(|c| c.token.as_ref().map(|t| t.0.clone()))
        .chain(
            seeded
                .api_keys
                .values()
                .filter_map(|k| k.token.as_ref().map(|t| t.0.clone())),
        )
        .collect();
    assert!(!secrets.is_empty(), "the stand-in must hold tokens to leak");
    let objects = (seeded.bot_users.len()
        + seeded.credentials.len()
        + seeded.api_keys.len()
        + seeded.ssh_credentials.len()
        + seeded.tunnel_sessions.len()
        + seeded.endpoints.len()) as u64;
    let api_key = format!("itngrokaccountkey{}", std::process::id());
    secrets.push(api_key.clone());
    secrets.push(ACCESS_KEY.to_owned());
    let api = StandInApi::start(&api_key, seeded.clone()).await.unwrap();

    // 1. sync backfills the fleet, run stores it.
    let migrated = env.command(&["migrate"]).output().expect("run migrate");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
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
            "--account-id",
            &account_id,
            "--poll-interval-secs",
            "1",
        ],
    );
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    let control_count = format!("SELECT count() FROM {}.control_events", env.database);
    let started = std::time::Instant::now();
    while env.clickhouse_u64(&control_count).await < objects {
        sync.assert_running();
        run.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the backfill never reached ClickHouse\n{}\n{}",
            sync.log_tail(),
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 2. The fleet's traffic through receive: one request refused for a stale key and retried,
    //    every request sent twice.
    let receive = start_receive(&env, "receive", &[], None).await;
    let mut client = FirehoseClient::new(&receive.url, ACCESS_KEY);
    client.gzip = true;
    client.max_records = 200;
    let traffic: Vec<Vec<u8>> = fleet.traffic.iter().map(|m| m.payload.clone()).collect();
    let stale = FirehoseClient::new(&receive.url, "a-key-rotated-out-last-week");
    let first = client.batches(traffic.iter().take(50).map(Vec::as_slice));
    let refused = stale.send(&first[0]).await.unwrap();
    assert_eq!(refused.status, 401, "{refused:?}");
    let requests = deliver_twice(&client, &traffic).await;
    assert!(requests >= 10, "{requests} requests");
    let usage_count = format!("SELECT count() FROM {}.usage_events", env.database);
    env.wait_for_count(
        &usage_count,
        fleet.truth.traffic_events,
        Duration::from_secs(180),
        &mut run,
    )
    .await;
    assert_eq!(env.attributed_totals().await, truth_totals(&fleet.truth));

    // 3. The fleet changes. A credential with live sessions is rotated; a bot user of another
    //    credential, with a live endpoint that has carried connections, is deactivated; an endpoint
    //    of neither is deleted.
    let templates: Vec<serde_json::Value> = traffic
        .iter()
        .map(|p| serde_json::from_slice::<serde_json::Value>(p).unwrap())
        .filter(|e| e["event_type"] == "tcp_connection_closed.v0")
        .collect();
    let created = DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 30_000).unwrap();
    let (rotated_owner, bot_id, bot_address, rotated_address, deleted_address, template) = api
        .with_fleet(|f| {
            let owner_of_session = |f: &ApiFleet, session: &str| -> Option<String> {
                let credential = f
                    .tunnel_sessions
                    .get(session)?
                    .credential
                    .as_ref()?
                    .id
                    .clone();
                Some(f.credentials.get(&credential)?.owner_id.clone())
            };
            let live_bot = |f: &ApiFleet, owner: &str| {
                f.bot_users
                    .get(owner)
                    .is_some_and(|b| b.active != Some(false))
            };
            // The bot user's endpoint: live, on a session of an active bot user, with a connection
            // to copy.
            let (bot_endpoint, bot_id, template) = f
                .endpoints
                .values()
                .find_map(|e| {
                    let session = e.tunnel_session.as_ref()?.id.clone();
                    let owner = owner_of_session(f, &session)?;
                    if !live_bot(f, &owner) {
                        return None;
                    }
                    // TCP endpoints share a host: the port tells them apart.
                    let template = templates.iter().find(|t| {
                        let conn = &t["object"]["conn"];
                        conn["server_name"] == e.host.as_str()
                            && conn["server_port"].as_i64() == e.port
                    })?;
                    Some((e.clone(), owner, template.clone()))
                })
                .expect("a live endpoint of an active bot user with a connection");
            let bot_session = bot_endpoint.tunnel_session.clone().unwrap().id;
            let bot_credential = f.tunnel_sessions[&bot_session]
                .credential
                .clone()
                .unwrap()
                .id;
            // The rotated credential: another owner's, with live sessions.
            let old = f
                .credentials
                .values()
                .find(|c| {
                    c.id != bot_credential
                        && c.owner_id != bot_id
                        && f.tunnel_sessions
                            .values()
                            .any(|s| s.credential.as_ref().is_some_and(|r| r.id == c.id))
                })
                .expect("another credential with a live session")
                .clone();
            let stopped: Vec<String> = f
                .tunnel_sessions
                .values()
                .filter(|s| s.credential.as_ref().is_some_and(|r| r.id == old.id))
                .map(|s| s.id.clone())
                .collect();
            // The deleted endpoint: neither the bot user's nor one of the rotated sessions'.
            let deleted = f
                .endpoints
                .values()
                .find(|e| {
                    e.id != bot_endpoint.id
                        && e.tunnel_session
                            .as_ref()
                            .is_some_and(|s| !stopped.contains(&s.id) && s.id != bot_session)
                })
                .expect("a third endpoint")
                .clone();
            f.bot_users.get_mut(&bot_id).unwrap().active = Some(false);
            for session in &stopped {
                f.stop_session(session);
            }
            f.credentials.remove(&old.id);
            f.endpoints.remove(&deleted.id);
            f.credentials.insert(
                "cr_e2erotated".into(),
                Credential {
                    id: "cr_e2erotated".into(),
                    created_at: ts(created),
                    token: Some(model::ngrok_api::Token(format!("{TOKEN_MARKER}e2erotated"))),
                    acl: vec![format!("bind:{ROTATED_HOST}")],
                    ..old.clone()
                },
            );
            f.tunnel_sessions.insert(
                "ts_e2erotated".into(),
                TunnelSession {
                    id: "ts_e2erotated".into(),
                    credential: Some(Ref {
                        id: "cr_e2erotated".into(),
                        uri: String::new(),
                    }),
                    started_at: ts(created + chrono::Duration::seconds(1)),
                    ..TunnelSession::default()
                },
            );
            let host = ROTATED_HOST;
            f.endpoints.insert(
                "ep_e2erotated".into(),
                Endpoint {
                    id: "ep_e2erotated".into(),
                    created_at: ts(created + chrono::Duration::seconds(2)),
                    updated_at: ts(created + chrono::Duration::seconds(2)),
                    url: bot_endpoint.url.replace(&bot_endpoint.host, host),
                    public_url: bot_endpoint.public_url.replace(&bot_endpoint.host, host),
                    hostport: bot_endpoint.hostport.replace(&bot_endpoint.host, host),
                    host: host.into(),
                    principal: Some(Ref {
                        id: old.owner_id.clone(),
                        uri: String::new(),
                    }),
                    tunnel_session: Some(Ref {
                        id: "ts_e2erotated".into(),
                        uri: String::new(),
                    }),
                    ..bot_endpoint.clone()
                },
            );
            let rotated = (ROTATED_HOST.to_owned(), bot_endpoint.port);
            (
                old.owner_id,
                bot_id,
                (bot_endpoint.host, bot_endpoint.port),
                rotated,
                (deleted.host, deleted.port),
                template,
            )
        });
    secrets.push(format!("{TOKEN_MARKER}e2erotated"));
    // The next poll publishes the changes and run stores them (the rotated endpoint's creation
    // is the last of them, in chain order).
    let started = std::time::Instant::now();
    loop {
        let stored = env
            .clickhouse_u64(&format!(
                "SELECT count() FROM {}.control_events WHERE event_type = 'endpoint_created.v0' \
                 AND object_id = 'ep_e2erotated'",
                env.database
            ))
            .await;
        let deactivated = env
            .clickhouse_u64(&format!(
                "SELECT count() FROM {}.control_events WHERE event_type = 'bot_user_updated.v0' \
                 AND object_id = '{bot_id}'",
                env.database
            ))
            .await;
        if stored == 1 && deactivated == 1 {
            break;
        }
        sync.assert_running();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the changes never reached ClickHouse\n{}",
            sync.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 4. Traffic after the changes, through receive again (every request twice).
    let after = Utc::now();
    let mut events = Vec::new();
    let mut want: OwnerTotals = truth_totals(&fleet.truth);
    let mut add = |owner: &str, bytes: u64| {
        let entry = want.entry(owner.to_owned()).or_default();
        entry.0 += bytes;
        entry.2 += 1;
    };
    for i in 0..40u64 {
        let at = after - chrono::Duration::milliseconds(i64::try_from(i).unwrap());
        let bytes = 1_000 + i;
        events.push(connection(
            &template,
            &format!("ev_e2e_rot_{i}"),
            (&rotated_address.0, rotated_address.1),
            at,
            bytes,
        ));
        add(&rotated_owner, bytes);
        events.push(connection(
            &template,
            &format!("ev_e2e_bot_{i}"),
            (&bot_address.0, bot_address.1),
            at,
            2 * bytes,
        ));
        add(&bot_id, 2 * bytes);
        events.push(connection(
            &template,
            &format!("ev_e2e_del_{i}"),
            (&deleted_address.0, deleted_address.1),
            at,
            3 * bytes,
        ));
    }
    deliver_twice(&client, &events).await;
    env.wait_for_count(
        &usage_count,
        fleet.truth.traffic_events + 120,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    assert_eq!(env.attributed_totals().await, want);
    // The deactivated bot user's are flagged, the deleted endpoint's unattributed, none repeated.
    let by_kind = env
        .clickhouse(&format!(
            "SELECT substring(event_id, 1, 11) AS kind, status, has(flags, 'owner_inactive'), count() \
             FROM {}.usage_events WHERE event_id LIKE 'ev_e2e_%' GROUP BY kind, status, \
             has(flags, 'owner_inactive') ORDER BY kind FORMAT TSV",
            env.database
        ))
        .await;
    assert_eq!(
        by_kind,
        "ev_e2e_bot_\tattributed\t1\t40\nev_e2e_del_\tunattributed\t0\t40\nev_e2e_rot_\tattributed\t0\t40\n",
        "by kind"
    );
    let repeats = env
        .clickhouse_u64(&format!(
            "SELECT count() FROM {}.usage_events WHERE status = 'duplicate'",
            env.database
        ))
        .await;
    assert_eq!(repeats, 0, "a repeated request was published twice");
    // Every control event of the backfill and the changes is marked as sync's.
    let sources: BTreeSet<String> = env
        .clickhouse(&format!(
            "SELECT DISTINCT source FROM {}.control_events FORMAT TSV",
            env.database
        ))
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(sources, BTreeSet::from([model::SOURCE_SYNC.to_owned()]));

    // 5. No secret anywhere: tables, topics, logs.
    let secret_refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret_stored(&env, &secret_refs).await;
    for topic in [
        &env.control_topic,
        &env.traffic_topic,
        &env.dead_letter_topic,
    ] {
        for message in read_topic_all(&env.brokers, topic, Duration::from_millis(1500)) {
            let payload = String::from_utf8_lossy(message.payload.as_deref().unwrap_or_default());
            for secret in &secret_refs {
                assert!(!payload.contains(secret), "{topic} holds a secret");
            }
        }
    }
    let mut receive_process = receive.process;
    let status = receive_process.terminate(Duration::from_secs(30));
    assert!(status.success(), "receive exited with {status}");
    let status = sync.terminate(Duration::from_secs(30));
    assert!(status.success(), "sync exited with {status}");
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );
    for name in ["sync", "run", "receive"] {
        let log = std::fs::read_to_string(env.log_dir.join(format!("{name}.log"))).unwrap();
        for secret in &secret_refs {
            assert!(!log.contains(secret), "{name}'s log holds a secret");
        }
    }
    env.drop_database().await;
}
