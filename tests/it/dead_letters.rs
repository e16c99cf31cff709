//! Dead letters on the real services (invariant 1: every message ends in exactly one place). Every
//! kind of bad message, on both topics, interleaved with good ones: each ends as exactly one
//! `dead_letters` row (reason, original bytes, source position), once on the dead-letter topic
//! (headers), and for traffic also as a `dead_letter` usage row; the good messages around them are
//! attributed, so no partition stalls on a poison pill.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use simulate::{generate, FleetConfig, Usage};

use crate::support::{self, TestEnv};

/// Above the pipeline's 1 MiB limit.
const OVERSIZED_BYTES: usize = (1 << 20) + 200_000;

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        // The oversized message must reach the broker.
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap()
}

/// Sends one message to an explicit partition (`None` payload: a tombstone); returns its offset.
async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    payload: Option<&[u8]>,
) -> i64 {
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .partition(partition)
        .key("it");
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    let (p, offset) = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    assert_eq!(p, partition);
    offset
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    Control,
    Traffic,
}

/// One bad message and what its dead letter must say.
#[derive(Debug)]
struct Bad {
    name: &'static str,
    payload: Option<Vec<u8>>,
    reason_kind: &'static str,
    /// Another reason_kind tolerated here because a dedicated test below pins the right one.
    tolerated_kind: Option<&'static str>,
    /// Substrings of the reason (the field and the value, where there are any).
    reason_has: Vec<String>,
}

fn bad(
    name: &'static str,
    payload: Option<Vec<u8>>,
    reason_kind: &'static str,
    reason_has: &[&str],
) -> Bad {
    Bad {
        name,
        payload,
        reason_kind,
        tolerated_kind: None,
        reason_has: reason_has.iter().map(|s| (*s).to_owned()).collect(),
    }
}

const TS: &str = "2026-01-01T01:00:00Z";

fn tcp_json(event_id: &str, conn: &str) -> String {
    format!(
        r#"{{"event_id":"{event_id}","event_type":"tcp_connection_closed.v0","event_timestamp":"{TS}","account_id":"ac_dl","object":{{"conn":{conn}}}}}"#
    )
}

/// Every kind of bad message, for one topic (`t` tags the event ids).
fn bad_messages(topic: Topic) -> Vec<Bad> {
    let t = match topic {
        Topic::Control => "c",
        Topic::Traffic => "t",
    };
    let deep_array = {
        let mut v = vec![b'['; 10_000];
        v.extend(vec![b']'; 10_000]);
        v
    };
    let oversized = {
        let pad = "x".repeat(OVERSIZED_BYTES);
        format!(
            r#"{{"event_id":"ev_{t}_big","event_type":"tcp_connection_closed.v0","event_timestamp":"{TS}","account_id":"ac_dl","object":{{"conn":{{"server_name":"big.ngrok.app","bytes_out":1}},"pad":"{pad}"}}}}"#
        )
        .into_bytes()
    };
    let mut list = vec![
        bad("invalid JSON", Some(b"\xffnot json at all {".to_vec()), "malformed_json", &["field <payload>", "not valid JSON"]),
        bad("a JSON array", Some(b"[1, 2, 3]".to_vec()), "malformed_json", &["field <payload>", "not an ngrok event envelope"]),
        // Today decoded, so `malformed_json` ("EOF while parsing"): see
        // `a_zero_length_message_is_dead_lettered_as_empty`.
        Bad { tolerated_kind: Some("malformed_json"), ..bad("an empty payload", Some(Vec::new()), "empty", &[]) },
        bad("no payload (tombstone)", None, "empty", &["no payload"]),
        bad(
            "missing event_id",
            Some(format!(r#"{{"event_type":"tcp_connection_closed.v0","event_timestamp":"{TS}","object":{{"conn":{{"server_name":"x.ngrok.app"}}}}}}"#).into_bytes()),
            "missing_field",
            &["field event_id", "missing"],
        ),
        bad(
            "a bad event_timestamp",
            Some(format!(r#"{{"event_id":"ev_{t}_ts","event_type":"tcp_connection_closed.v0","event_timestamp":"yesterday","object":{{"conn":{{"server_name":"x.ngrok.app"}}}}}}"#).into_bytes()),
            "invalid_field",
            &[&format!("event ev_{t}_ts"), "field event_timestamp", "yesterday"],
        ),
        bad(
            "bytes_out of the wrong type",
            Some(tcp_json(&format!("ev_{t}_bytes"), r#"{"server_name":"x.ngrok.app","bytes_out":"-5"}"#).into_bytes()),
            "invalid_field",
            &[&format!("event ev_{t}_bytes (tcp_connection_closed.v0)"), "field object.conn.bytes_out", "\"-5\""],
        ),
        bad(
            "a credential with an unparseable ACL",
            Some(format!(r#"{{"event_id":"ev_{t}_acl","event_type":"tunnel_credential_created.v0","event_timestamp":"{TS}","object":{{"id":"cr_{t}_acl","owner_id":"bot_dl","acl":["bind:bad host"]}}}}"#).into_bytes()),
            "invalid_field",
            &[&format!("event ev_{t}_acl"), "field object.acl", "bind:bad host"],
        ),
        bad(
            "an owner_id that is not usr_/bot_",
            Some(format!(r#"{{"event_id":"ev_{t}_owner","event_type":"api_key_created.v0","event_timestamp":"{TS}","object":{{"id":"ak_{t}_owner","owner_id":"org_123"}}}}"#).into_bytes()),
            "invalid_field",
            &[&format!("event ev_{t}_owner"), "field object.owner_id", "org_123"],
        ),
        bad("10,000 levels of nested arrays", Some(deep_array), "malformed_json", &["field <payload>"]),
        bad("an oversized message", Some(oversized), "oversized", &[&format!("{}", OVERSIZED_BYTES + 200), "exceeds"]),
    ];
    // The oversized event's length: its text around the padding.
    let big = list
        .iter_mut()
        .find(|b| b.reason_kind == "oversized")
        .unwrap();
    let len = big.payload.as_ref().unwrap().len();
    big.reason_has[0] = format!("message of {len} bytes");
    match topic {
        Topic::Traffic => {
            list.push(bad(
                "a control-plane event on the traffic topic",
                Some(format!(r#"{{"event_id":"ev_t_wrong","event_type":"bot_user_created.v0","event_timestamp":"{TS}","object":{{"id":"bot_wrong","name":"w","active":true}}}}"#).into_bytes()),
                "wrong_topic",
                &["event ev_t_wrong (bot_user_created.v0)", "control-plane event on the traffic topic"],
            ));
            let mut deep_object = format!(r#"{{"event_id":"ev_t_deep","event_type":"tcp_connection_closed.v0","event_timestamp":"{TS}","object":"#).into_bytes();
            deep_object.extend(vec![b'['; 10_000]);
            deep_object.extend(vec![b']'; 10_000]);
            deep_object.push(b'}');
            list.push(bad(
                "an object nested 10,000 levels deep",
                Some(deep_object),
                "invalid_field",
                &["event ev_t_deep", "field object", "expected a JSON object"],
            ));
        }
        Topic::Control => {
            list.push(bad(
                "a traffic event on the control topic",
                Some(
                    tcp_json(
                        "ev_c_wrong",
                        r#"{"server_name":"x.ngrok.app","bytes_out":5}"#,
                    )
                    .into_bytes(),
                ),
                "wrong_topic",
                &[
                    "event ev_c_wrong (tcp_connection_closed.v0)",
                    "traffic event on the control topic",
                ],
            ));
            let mut deep_object =
                format!(r#"{{"event_id":"ev_c_deep","event_type":"domain_created.v0","event_timestamp":"{TS}","object":{{"id":"rd_deep","x":"#).into_bytes();
            for _ in 0..10_000 {
                deep_object.extend(br#"{"a":"#);
            }
            deep_object.push(b'1');
            deep_object.extend(vec![b'}'; 10_000]);
            deep_object.extend(b"}}");
            list.push(bad(
                "an audit object nested 10,000 levels deep",
                Some(deep_object),
                "invalid_field",
                &["event ev_c_deep", "field object", "recursion limit"],
            ));
        }
    }
    list
}

/// A good audit event (attributed to `owner`), for the control topic.
fn audit(n: u64, owner: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"ev_good_audit_{n}","event_type":"domain_created.v0","event_timestamp":"{TS}","account_id":"ac_dl","principal":{{"id":"{owner}"}},"object":{{"id":"rd_good_{n}","domain":"good{n}.example.com"}}}}"#
    )
    .into_bytes()
}

/// Where one published bad message went.
struct Sent<'a> {
    bad: &'a Bad,
    topic: String,
    partition: i32,
    offset: i64,
}

/// A `dead_letters` row: reason_kind, reason, payload_bytes, payload.
type StoredLetter = (String, String, u64, Vec<u8>);

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_message_is_dead_lettered_with_its_reason() {
    let env = TestEnv::new("deadletters");
    const TRAFFIC_PARTITIONS: i32 = 2;
    env.create_topics(TRAFFIC_PARTITIONS).await;
    // The good messages: a small fleet. Its control plane and a third of its traffic first, the
    // rest between and after the bad messages.
    let mut fleet = generate(&FleetConfig {
        seed: 404,
        traffic_events: 300,
        ..FleetConfig::default()
    });
    let truth = fleet.truth.clone();
    let mut good_traffic = fleet.traffic.split_off(100).into_iter();
    env.publish(&fleet).await;
    let owner = truth.owners.keys().next().unwrap().clone();

    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    let producer = producer(&env.brokers);
    let control_bad = bad_messages(Topic::Control);
    let traffic_bad = bad_messages(Topic::Traffic);
    let mut sent = Vec::new();
    let mut audits: u64 = 0;
    // Interleaved: each bad message is followed by a good one on the same partition.
    for (i, bad) in control_bad.iter().enumerate() {
        let offset = send(&producer, &env.control_topic, 0, bad.payload.as_deref()).await;
        sent.push(Sent {
            bad,
            topic: env.control_topic.clone(),
            partition: 0,
            offset,
        });
        send(
            &producer,
            &env.control_topic,
            0,
            Some(&audit(i as u64, &owner)),
        )
        .await;
        audits += 1;
    }
    for (i, bad) in traffic_bad.iter().enumerate() {
        let partition = i as i32 % TRAFFIC_PARTITIONS;
        let offset = send(
            &producer,
            &env.traffic_topic,
            partition,
            bad.payload.as_deref(),
        )
        .await;
        sent.push(Sent {
            bad,
            topic: env.traffic_topic.clone(),
            partition,
            offset,
        });
        let good = good_traffic.next().unwrap();
        send(
            &producer,
            &env.traffic_topic,
            partition,
            Some(&good.payload),
        )
        .await;
    }
    // The rest of the good traffic after all of them, on every partition; one more audit event.
    let mut last_good = BTreeMap::new();
    for (i, good) in good_traffic.enumerate() {
        let partition = i as i32 % TRAFFIC_PARTITIONS;
        last_good.insert(
            partition,
            send(
                &producer,
                &env.traffic_topic,
                partition,
                Some(&good.payload),
            )
            .await,
        );
    }
    let last_audit = send(
        &producer,
        &env.control_topic,
        0,
        Some(&audit(audits, &owner)),
    )
    .await;
    audits += 1;

    // Everything ends somewhere: usage rows for all traffic, control events for all good control.
    let db = &env.database;
    let traffic_rows = truth.traffic_events + traffic_bad.len() as u64;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.usage_events"),
        traffic_rows,
        Duration::from_secs(120),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.control_events"),
        truth.control_events + audits,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.dead_letters"),
        sent.len() as u64,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );

    // 1. ClickHouse: one row per bad message, at its position, with its reason and its bytes.
    let rows = env
        .clickhouse(&format!(
            "SELECT kafka_topic, kafka_partition, kafka_offset, reason_kind, hex(reason), payload_bytes, hex(payload) \
             FROM {db}.dead_letters ORDER BY kafka_topic, kafka_partition, kafka_offset FORMAT TSV"
        ))
        .await;
    let mut stored: BTreeMap<(String, i32, i64), Vec<StoredLetter>> = BTreeMap::new();
    for line in rows.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 7, "{line:.300}");
        let reason = String::from_utf8(unhex(f[4])).unwrap();
        stored
            .entry((
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            ))
            .or_default()
            .push((f[3].to_owned(), reason, f[5].parse().unwrap(), unhex(f[6])));
    }
    let mut failures = Vec::new();
    for s in &sent {
        let key = (s.topic.clone(), s.partition, s.offset);
        let payload = s.bad.payload.clone().unwrap_or_default();
        match stored.get(&key).map(Vec::as_slice) {
            Some([(kind, reason, bytes, stored_payload)]) => {
                if kind != s.bad.reason_kind && Some(kind.as_str()) != s.bad.tolerated_kind {
                    failures.push(format!(
                        "{} on {}: reason_kind {kind:?}, expected {:?} (reason: {reason:.200})",
                        s.bad.name, s.topic, s.bad.reason_kind
                    ));
                }
                for part in &s.bad.reason_has {
                    if !reason.contains(part.as_str()) {
                        failures.push(format!(
                            "{} on {}: reason {reason:.200?} does not name {part:?}",
                            s.bad.name, s.topic
                        ));
                    }
                }
                if *stored_payload != payload || *bytes != payload.len() as u64 {
                    failures.push(format!(
                        "{} on {}: stored payload ({bytes} bytes) is not the original ({} bytes)",
                        s.bad.name,
                        s.topic,
                        payload.len()
                    ));
                }
            }
            Some(more) => failures.push(format!(
                "{} on {}: {} dead_letters rows at {key:?}",
                s.bad.name,
                s.topic,
                more.len()
            )),
            None => failures.push(format!(
                "{} on {}: no dead_letters row at {key:?}",
                s.bad.name, s.topic
            )),
        }
    }
    assert_eq!(
        stored.len(),
        sent.len(),
        "dead_letters holds only the bad messages: {:?}",
        stored.keys().collect::<Vec<_>>()
    );

    // 2. The dead-letter topic: the same set, original bytes, reason and source in headers.
    let letters =
        support::read_topic_all(&env.brokers, &env.dead_letter_topic, Duration::from_secs(3));
    assert_eq!(
        letters.len(),
        sent.len(),
        "one message per dead letter on {}",
        env.dead_letter_topic
    );
    for s in &sent {
        let (partition, offset) = (s.partition.to_string(), s.offset.to_string());
        let on_topic: Vec<_> = letters
            .iter()
            .filter(|m| {
                m.header("botmeter.source_topic") == Some(s.topic.as_str())
                    && m.header("botmeter.source_partition") == Some(partition.as_str())
                    && m.header("botmeter.source_offset") == Some(offset.as_str())
            })
            .collect();
        let [letter] = on_topic.as_slice() else {
            failures.push(format!(
                "{} on {}: {} messages on the dead-letter topic",
                s.bad.name,
                s.topic,
                on_topic.len()
            ));
            continue;
        };
        let stored_kind = stored
            .get(&(s.topic.clone(), s.partition, s.offset))
            .and_then(|v| v.first())
            .map(|r| r.0.as_str());
        if letter.header("botmeter.reason_kind").is_none()
            || letter.header("botmeter.reason_kind") != stored_kind
        {
            failures.push(format!(
                "{} on {}: header reason_kind {:?}",
                s.bad.name,
                s.topic,
                letter.header("botmeter.reason_kind")
            ));
        }
        let stored_reason = stored
            .get(&(s.topic.clone(), s.partition, s.offset))
            .and_then(|v| v.first())
            .map(|r| r.1.as_str());
        if letter.header("botmeter.reason").is_none()
            || letter.header("botmeter.reason") != stored_reason
        {
            failures.push(format!(
                "{} on {}: header reason {:?} differs from ClickHouse's {stored_reason:?}",
                s.bad.name,
                s.topic,
                letter.header("botmeter.reason")
            ));
        }
        if letter.payload.clone().unwrap_or_default() != s.bad.payload.clone().unwrap_or_default() {
            failures.push(format!(
                "{} on {}: the dead-letter topic has other bytes",
                s.bad.name, s.topic
            ));
        }
    }

    // 3. Traffic dead letters also end as a `dead_letter` usage row at their position.
    let dead_usage = env
        .clickhouse(&format!(
            "SELECT kafka_partition, kafka_offset, unattributed_reason, sum(sign) FROM {db}.usage_events WHERE status = 'dead_letter' \
             GROUP BY kafka_partition, kafka_offset, unattributed_reason ORDER BY kafka_partition, kafka_offset FORMAT TSV"
        ))
        .await;
    // Their reason is the dead letter's reason_kind (checked above).
    let mut want: Vec<(i32, i64, &str)> = sent
        .iter()
        .filter(|s| s.topic == env.traffic_topic)
        .map(|s| {
            let kind = stored
                .get(&(s.topic.clone(), s.partition, s.offset))
                .and_then(|v| v.first())
                .map_or("?", |r| r.0.as_str());
            (s.partition, s.offset, kind)
        })
        .collect();
    want.sort();
    let want: String = want
        .iter()
        .map(|(p, o, kind)| format!("{p}\t{o}\t{kind}\t1\n"))
        .collect();
    if dead_usage != want {
        failures.push(format!("dead_letter usage rows (partition, offset, reason, net):\n{dead_usage}expected:\n{want}"));
    }
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // 4. The good messages are attributed, every one, to the truth's owners ...
    let by_owner = env
        .clickhouse(&format!(
            "SELECT owner_id, sum(bytes_in * sign), sum(bytes_out * sign), sum(http_requests * sign), sum(tcp_connections * sign) \
             FROM {db}.usage_events WHERE status = 'attributed' GROUP BY owner_id ORDER BY owner_id FORMAT TSV"
        ))
        .await;
    let want: String = truth
        .owners
        .iter()
        .filter(|(_, o)| o.usage != Usage::default())
        .map(|(id, o)| {
            format!(
                "{id}\t{}\t{}\t{}\t{}\n",
                o.usage.bytes_in, o.usage.bytes_out, o.usage.http_requests, o.usage.tcp_connections
            )
        })
        .collect();
    assert_eq!(by_owner, want, "per-owner usage of the good traffic");
    let by_status = env.clickhouse(&format!("SELECT status, count() FROM {db}.usage_events GROUP BY status ORDER BY status FORMAT TSV")).await;
    assert_eq!(
        by_status,
        format!(
            "attributed\t{}\ndead_letter\t{}\n",
            truth.traffic_events,
            traffic_bad.len()
        )
    );
    // ... and the partitions did not stall: the last good message of each is stored, and every
    // good audit event.
    for (partition, offset) in &last_good {
        let n = env
            .clickhouse_u64(&format!(
                "SELECT count() FROM {db}.usage_events WHERE kafka_partition = {partition} AND kafka_offset = {offset} AND status = 'attributed'"
            ))
            .await;
        assert_eq!(n, 1, "the last good message of traffic partition {partition} (offset {offset}) is attributed");
    }
    let good_audits = env
        .clickhouse_u64(&format!(
            "SELECT count() FROM {db}.control_events WHERE event_id LIKE 'ev_good_audit_%'"
        ))
        .await;
    assert_eq!(
        good_audits, audits,
        "every good audit event between the bad ones is in the audit log"
    );
    let last = env
        .clickhouse_u64(&format!(
            "SELECT max(kafka_offset) FROM {db}.control_events"
        ))
        .await;
    assert_eq!(
        last as i64, last_audit,
        "the control partition was read to its last message"
    );
    env.drop_database().await;
}

/// A JSON array is not an event envelope, even when its elements line up with the envelope's
/// fields: serde's derived `Deserialize` accepts a sequence for a struct, positionally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_shaped_like_an_envelope_is_dead_lettered() {
    let env = TestEnv::new("dlarray");
    env.create_topics(1).await;
    let producer = producer(&env.brokers);
    let array = format!(
        r#"["ev_array","tcp_connection_closed.v0","{TS}",null,null,{{"conn":{{"server_name":"x.ngrok.app","bytes_out":5}}}}]"#
    );
    let offset = send(&producer, &env.traffic_topic, 0, Some(array.as_bytes())).await;
    send(
        &producer,
        &env.traffic_topic,
        0,
        Some(
            tcp_json(
                "ev_sentinel",
                r#"{"server_name":"y.ngrok.app","bytes_out":1}"#,
            )
            .as_bytes(),
        ),
    )
    .await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    let db = &env.database;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.usage_events"),
        2,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );
    let row = env
        .clickhouse(&format!("SELECT status, unattributed_reason, event_id, bytes_out FROM {db}.usage_events WHERE kafka_offset = {offset} FORMAT TSV"))
        .await;
    env.drop_database().await;
    assert_eq!(
        row, "dead_letter\tmalformed_json\t\t0\n",
        "the array {array} must be a dead letter, not usage"
    );
}

/// A message whose payload is zero bytes long is dead-lettered unread as `empty`, like a
/// tombstone (no payload at all), not handed to the JSON decoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_message_is_dead_lettered_as_empty() {
    let env = TestEnv::new("dlempty");
    env.create_topics(1).await;
    let producer = producer(&env.brokers);
    let traffic = send(&producer, &env.traffic_topic, 0, Some(b"")).await;
    let tombstone = send(&producer, &env.traffic_topic, 0, None).await;
    let control = send(&producer, &env.control_topic, 0, Some(b"")).await;
    let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
    let db = &env.database;
    env.wait_for_count(
        &format!("SELECT count() FROM {db}.dead_letters"),
        3,
        Duration::from_secs(60),
        &mut run,
    )
    .await;
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );
    let rows = env
        .clickhouse(&format!(
            "SELECT kafka_topic = '{}', kafka_offset, reason_kind, payload_bytes FROM {db}.dead_letters ORDER BY kafka_topic = '{}', kafka_offset FORMAT TSV",
            env.traffic_topic, env.traffic_topic
        ))
        .await;
    env.drop_database().await;
    assert_eq!(
        rows,
        format!("0\t{control}\tempty\t0\n1\t{traffic}\tempty\t0\n1\t{tombstone}\tempty\t0\n"),
        "(traffic topic?, offset, reason_kind, payload_bytes): a zero-length payload and a tombstone are both `empty`"
    );
}
