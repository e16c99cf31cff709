//! `botmeter receive` on the real services: a simulated fleet delivered the way Firehose delivers
//! (batched, gzipped, retried with the same request id, some requests twice, one after a restart
//! of `receive`) ends in Kafka exactly once and, through `botmeter run`, in per-owner totals equal
//! to the ground truth; bad input is refused whole with a JSON error that names what is wrong;
//! the concurrency limit answers 429; a second instance learns the first's completed requests; TLS from certificate files; a request in flight at
//! SIGTERM is finished.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use simulate::{generate, FleetConfig};

use crate::firehose_client::{request_id, Batch, FirehoseClient};
use crate::support::{self, free_port, read_topic_all, BotmeterProcess, TestEnv};

pub(crate) const ACCESS_KEY: &str = "firehose-test-key-7f3a9c";
const ROTATED_KEY: &str = "firehose-test-key-next-51b2";

/// A running `botmeter receive` and where it listens.
pub(crate) struct Receive {
    pub(crate) process: BotmeterProcess,
    pub(crate) url: String,
    metrics: String,
}

/// The request-log topic of `env`.
pub(crate) fn request_log_topic(env: &TestEnv) -> String {
    format!("{}.requests", env.traffic_topic)
}

/// Starts `botmeter receive` for `env` with both test keys and `extra` flags; waits for
/// `/readyz`.
pub(crate) async fn start_receive(
    env: &TestEnv,
    name: &str,
    extra: &[&str],
    https: Option<&reqwest::Client>,
) -> Receive {
    let keys = env.log_dir.join("access-keys.toml");
    let digest = |key: &str| botmeter::receive::keys::digest_hex(key);
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"current\"\nsha256 = \"{}\"\n[[keys]]\nname = \"next\"\nsha256 = \"{}\"\n",
            digest(ACCESS_KEY),
            digest(ROTATED_KEY)
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let log_topic = request_log_topic(env);
    let mut args = vec![
        "receive",
        "--listen",
        &listen,
        "--metrics-listen",
        &metrics,
        "--access-keys-file",
        keys.to_str().unwrap(),
        "--request-log-topic",
        &log_topic,
        "--traffic-partitions",
        "3",
    ];
    args.extend_from_slice(extra);
    let mut process = env.spawn(name, &args);
    let scheme = if https.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{listen}/");
    let plain = reqwest::Client::new();
    let http = https.unwrap_or(&plain);
    for _ in 0..300 {
        process.assert_running();
        if let Ok(response) = http.get(format!("{url}readyz")).send().await {
            if response.status() == 200 {
                return Receive {
                    process,
                    url,
                    metrics: format!("http://{metrics}/metrics"),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("receive never became ready\n{}", process.log_tail());
}

/// A counter of `/metrics` (the sum over its labels matching `labels`).
async fn counter(metrics_url: &str, name: &str, labels: &str) -> f64 {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Payloads on `topic`, each with the request id header it carries.
fn topic_payloads(env: &TestEnv, topic: &str) -> Vec<(Vec<u8>, Option<String>)> {
    read_topic_all(&env.brokers, topic, Duration::from_secs(2))
        .into_iter()
        .map(|m| {
            let id = m.header("botmeter.firehose_request_id").map(str::to_owned);
            (m.payload.unwrap_or_default(), id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_through_receive_lands_once_and_equals_the_truth() {
    let env = TestEnv::new("receive_fleet");
    let fleet = generate(&FleetConfig {
        seed: 23,
        bot_users: 3,
        users: 2,
        traffic_events: 2_000,
        ..FleetConfig::default()
    });
    env.create_topics(3).await;
    let mut receive =
        start_receive(&env, "receive", &["--max-concurrent-requests", "2"], None).await;
    let mut client = FirehoseClient::new(&receive.url, ACCESS_KEY);
    client.max_records = 20;

    // The control plane first (as ngrok's audit stream would have it before the traffic that
    // needs it), one event per record; the first request is delivered twice.
    let control = client.batches(fleet.control.iter().map(|m| m.payload.as_slice()));
    assert!(control.len() > 2, "{} control requests", control.len());
    for batch in &control {
        client.deliver(batch, 50).await.unwrap_or_else(|reply| {
            panic!(
                "control batch refused: {reply:?}\n{}",
                receive.process.log_tail()
            )
        });
    }
    client
        .deliver(&control[0], 5)
        .await
        .expect("a repeated request is answered 200");

    // Traffic: three events per record, four senders against a limit of two (429s, retried
    // with the same request id), with the rotated key.
    let mut traffic_client = FirehoseClient::new(&receive.url, ROTATED_KEY);
    traffic_client.max_records = 50;
    traffic_client.events_per_record = 3;
    let traffic = traffic_client.batches(fleet.traffic.iter().map(|m| m.payload.as_slice()));
    assert!(traffic.len() > 10, "{} traffic requests", traffic.len());
    let (first, raced) = traffic.split_at(traffic.len() - 4);
    let attempts: Vec<u32> = futures::stream::iter(first.iter())
        .map(|batch| {
            let client = traffic_client.clone();
            async move { client.deliver(batch, 200).await }
        })
        .buffer_unordered(4)
        .map(|result| result.unwrap_or_else(|reply| panic!("traffic batch refused: {reply:?}")))
        .collect()
        .await;
    // Two attempts of one request at once (Firehose timed out on a slow one and retried): one
    // publishes, the other is told 409 and retried, or finds it done.
    for batch in raced {
        let (a, b) = futures::join!(
            traffic_client.deliver(batch, 200),
            traffic_client.deliver(batch, 200)
        );
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    }
    let retried = attempts.iter().filter(|&&a| a > 1).count();
    let overloaded = counter(
        &receive.metrics,
        "botmeter_receive_rejects_total",
        "overloaded",
    )
    .await;
    assert_eq!(
        overloaded > 0.0,
        retried > 0,
        "429s and retries go together"
    );

    // Firehose's retry of requests already answered (our 200 lost on the way): nothing twice,
    // also after a restart (the window is rebuilt from the request log).
    for batch in traffic.iter().take(3) {
        assert_eq!(client.deliver(batch, 5).await, Ok(1));
    }
    assert!(
        counter(
            &receive.metrics,
            "botmeter_receive_duplicate_requests_total",
            ""
        )
        .await
            >= 4.0
    );
    let status = receive.process.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", receive.process.log_tail());
    let receive = start_receive(&env, "receive-restarted", &[], None).await;
    let restarted = FirehoseClient::new(&receive.url, ACCESS_KEY);
    for batch in [&control[1], &traffic[traffic.len() - 1]] {
        assert_eq!(restarted.deliver(batch, 5).await, Ok(1));
    }
    assert_eq!(
        counter(
            &receive.metrics,
            "botmeter_receive_duplicate_requests_total",
            ""
        )
        .await,
        2.0,
        "the restarted instance knew both requests"
    );

    // Kafka holds every event exactly once, byte for byte, each with its request id.
    let count = |payloads: &[(Vec<u8>, Option<String>)]| {
        let mut counts: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for (payload, id) in payloads {
            assert!(id.is_some(), "every message names its request");
            *counts.entry(payload.clone()).or_default() += 1;
        }
        counts
    };
    let expected = |messages: &[simulate::SimMessage]| {
        let mut counts: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        for m in messages {
            *counts.entry(m.payload.clone()).or_default() += 1;
        }
        counts
    };
    assert_eq!(
        count(&topic_payloads(&env, &env.control_topic)),
        expected(&fleet.control)
    );
    assert_eq!(
        count(&topic_payloads(&env, &env.traffic_topic)),
        expected(&fleet.traffic)
    );
    assert!(topic_payloads(&env, &env.dead_letter_topic).is_empty());

    // Through `botmeter run`: per-owner totals equal the truth.
    let ops = format!("127.0.0.1:{}", free_port());
    let mut run = env.spawn(
        "run",
        &["run", "--batch-max-wait-ms", "100", "--ops-listen", &ops],
    );
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        fleet.truth.traffic_events,
        Duration::from_secs(120),
        &mut run,
    )
    .await;
    assert_eq!(
        env.attributed_totals().await,
        support::truth_totals(&fleet.truth)
    );
    assert_eq!(
        env.clickhouse_u64(&format!(
            "SELECT count() FROM {}.usage_events WHERE status = 'duplicate'",
            env.database
        ))
        .await,
        0,
        "receive published nothing twice, so run saw no repeats"
    );
    let log = std::fs::read_to_string(&receive.process.log).unwrap()
        + &std::fs::read_to_string(env.log_dir.join("receive.log")).unwrap();
    assert!(
        !log.contains(ACCESS_KEY) && !log.contains(ROTATED_KEY),
        "a key was logged"
    );
    drop(run);
    drop(receive);
    env.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_whole_with_a_json_error_and_nothing_is_lost() {
    let env = TestEnv::new("receive_bad");
    env.create_topics(1).await;
    let limit = 64 * 1024;
    let limit_text = limit.to_string();
    let receive = start_receive(
        &env,
        "receive",
        &[
            "--max-body-bytes",
            &limit_text,
            "--max-concurrent-requests",
            "1",
        ],
        None,
    )
    .await;
    let client = FirehoseClient::new(&receive.url, ACCESS_KEY);
    let event = |i: u32| {
        format!(
            r#"{{"event_id":"ev_bad_{i}","event_type":"tcp_connection_closed.v0","event_timestamp":"2026-01-01T00:00:00Z","object":{{"conn":{{"server_name":"h{i}.example","server_port":443,"bytes_out":{i}}}}}}}"#
        )
        .into_bytes()
    };
    let good = Batch {
        request_id: request_id(),
        records: vec![event(1), event(2)],
    };
    let json = FirehoseClient::body(&good);

    // (what is sent, status, reason in the message)
    let refused = [
        (client.send_raw(&good.request_id, Some("wrong-key"), false, json.clone()).await, 401, "not a configured access key"),
        (client.send_raw(&good.request_id, None, false, json.clone()).await, 401, "X-Amz-Firehose-Access-Key: missing"),
        (client.send_raw(&good.request_id, Some(ACCESS_KEY), false, b"{\"requestId\":".to_vec()).await, 400, "body: not a Firehose request"),
        (
            client
                .send_raw(
                    "r-b64",
                    Some(ACCESS_KEY),
                    false,
                    format!(
                        r#"{{"requestId":"r-b64","timestamp":1,"records":[{{"data":"{}"}},{{"data":"not base64!"}}]}}"#,
                        base64_of(&event(3))
                    )
                    .into_bytes(),
                )
                .await,
            400,
            "records[1].data is not base64",
        ),
        (client.send_raw(&good.request_id, Some(ACCESS_KEY), true, b"\x1f\x8bnot really gzip".to_vec()).await, 400, "not valid gzip"),
        (
            client.send_raw("r-big", Some(ACCESS_KEY), false, big_body("r-big", limit + 1)).await,
            413,
            "larger than the limit",
        ),
        (
            client
                .send_raw("r-bomb", Some(ACCESS_KEY), true, FirehoseClient::gzip(&big_body("r-bomb", limit * 20)))
                .await,
            413,
            "the gunzipped body is larger than the limit",
        ),
    ];
    for (reply, status, message) in refused {
        let reply = reply.expect("an answer");
        assert_eq!(reply.status, status, "{reply:?}");
        assert!(
            reply.error_message().contains(message),
            "{message}: {reply:?}"
        );
        assert!(reply.body["timestamp"].is_i64(), "{reply:?}");
        assert!(reply.body["requestId"].is_string(), "{reply:?}");
    }
    // Nothing of a refused request was published, not even the good record before the bad one.
    assert!(topic_payloads(&env, &env.traffic_topic).is_empty());

    // 429 at the limit: one request holds the only permit while its body trickles in.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let held = Batch {
        request_id: request_id(),
        records: vec![event(4)],
    };
    let held_json = FirehoseClient::body(&held);
    let slow = {
        let (url, id) = (receive.url.clone(), held.request_id.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("X-Amz-Firehose-Request-Id", id)
                .header("X-Amz-Firehose-Access-Key", ACCESS_KEY)
                .body(reqwest::Body::wrap_stream(rx))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tx.try_send(Ok(held_json[..10].to_vec())).unwrap();
    let mut waited = 0;
    while counter(&receive.metrics, "botmeter_receive_in_flight_requests", "").await < 1.0 {
        waited += 1;
        assert!(
            waited < 200,
            "the held request never started\n{}",
            receive.process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let overloaded = client.send(&good).await.unwrap();
    assert_eq!(overloaded.status, 429, "{overloaded:?}");
    assert!(
        overloaded
            .error_message()
            .contains("--max-concurrent-requests"),
        "{overloaded:?}"
    );
    tx.try_send(Ok(held_json[10..].to_vec())).unwrap();
    drop(tx);
    assert_eq!(slow.await.unwrap(), 200);

    // Nothing lost: Firehose retries; the good request and the held one are in Kafka once each.
    assert_eq!(client.deliver(&good, 20).await, Ok(1));

    // A second instance behind the same load balancer learns from the request log what the
    // first completed: a retry that lands there is not published again.
    let second = start_receive(&env, "receive-b", &[], None).await;
    let window_ids = |metrics: String| async move {
        counter(&metrics, "botmeter_receive_request_window_ids", "").await
    };
    let shared = Batch {
        request_id: request_id(),
        records: vec![event(5)],
    };
    assert_eq!(client.deliver(&shared, 5).await, Ok(1));
    let known = window_ids(receive.metrics.clone()).await;
    let mut waited = 0;
    while window_ids(second.metrics.clone()).await < known {
        waited += 1;
        assert!(
            waited < 200,
            "the second instance never learned the first's requests\n{}",
            second.process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let via_second = FirehoseClient::new(&second.url, ACCESS_KEY);
    assert_eq!(via_second.deliver(&shared, 5).await, Ok(1));
    assert_eq!(
        counter(
            &second.metrics,
            "botmeter_receive_duplicate_requests_total",
            ""
        )
        .await,
        1.0
    );

    let traffic = topic_payloads(&env, &env.traffic_topic);
    let mut payloads: Vec<Vec<u8>> = traffic.into_iter().map(|(p, _)| p).collect();
    payloads.sort();
    assert_eq!(payloads, vec![event(1), event(2), event(4), event(5)]);

    // Records that are not ngrok events are accepted and dead-lettered with the reason.
    let odd = Batch {
        request_id: request_id(),
        records: vec![b"hello".to_vec(), b"{\"event_type\":\"x\"}\n".to_vec()],
    };
    assert_eq!(client.deliver(&odd, 5).await, Ok(1));
    let letters = read_topic_all(&env.brokers, &env.dead_letter_topic, Duration::from_secs(2));
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0].payload.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        letters[0].header("botmeter.reason_kind"),
        Some("malformed_json")
    );
    assert_eq!(letters[0].header("botmeter.source_topic"), Some("firehose"));
    assert_eq!(
        letters[0].header("botmeter.firehose_request_id"),
        Some(odd.request_id.as_str())
    );
    assert!(
        letters[1]
            .header("botmeter.reason")
            .unwrap()
            .contains("record 1: not an ngrok event: field event_id"),
        "{letters:?}"
    );
    let log = receive.process.log_text();
    assert!(!log.contains(ACCESS_KEY), "the key was logged");
    assert!(
        log.contains("access_key_invalid") && log.contains("invalid_base64"),
        "{log}"
    );
    drop(second);
    drop(receive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_certificate_files_and_a_graceful_stop() {
    let env = TestEnv::new("receive_tls");
    env.create_topics(1).await;
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (env.log_dir.join("cert.pem"), env.log_dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut receive = start_receive(
        &env,
        "receive",
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
        Some(&https),
    )
    .await;
    let client = FirehoseClient::with_http(https.clone(), &receive.url, ACCESS_KEY);
    let event = br#"{"event_id":"ev_tls","event_type":"http_request_complete.v0","object":{"conn":{"server_name":"tls.example"}}}"#;
    let batch = Batch {
        request_id: request_id(),
        records: vec![event.to_vec()],
    };
    assert_eq!(client.deliver(&batch, 5).await, Ok(1));
    // Plain HTTP to the TLS port gets no Firehose answer.
    let plain = FirehoseClient::new(&receive.url.replace("https", "http"), ACCESS_KEY);
    assert!(plain
        .send(&batch)
        .await
        .map(|r| r.status != 200)
        .unwrap_or(true));

    // SIGTERM while a request's body is still arriving: it is finished and answered 200.
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let late = Batch {
        request_id: request_id(),
        records: vec![
            br#"{"event_id":"ev_late","event_type":"http_request_complete.v0","object":{}}"#
                .to_vec(),
        ],
    };
    let json = FirehoseClient::body(&late);
    let slow = {
        let (url, id, https) = (receive.url.clone(), late.request_id.clone(), https.clone());
        tokio::spawn(async move {
            https
                .post(url)
                .header("X-Amz-Firehose-Request-Id", id)
                .header("X-Amz-Firehose-Access-Key", ACCESS_KEY)
                .body(reqwest::Body::wrap_stream(rx))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tx.try_send(Ok(json[..5].to_vec())).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::process::Command::new("kill")
        .args(["-TERM", &receive.process.pid().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.try_send(Ok(json[5..].to_vec())).unwrap();
    drop(tx);
    assert_eq!(slow.await.unwrap(), 200, "{}", receive.process.log_tail());
    let status = receive.process.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let payloads: Vec<Vec<u8>> = topic_payloads(&env, &env.traffic_topic)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(payloads.len(), 2, "both requests published");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A well-formed request body of about `bytes` bytes (one big record).
fn big_body(request_id: &str, bytes: usize) -> Vec<u8> {
    let record = vec![b' '; bytes * 3 / 4];
    FirehoseClient::body(&Batch {
        request_id: request_id.to_owned(),
        records: vec![record],
    })
}
