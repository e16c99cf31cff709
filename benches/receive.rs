//! `botmeter receive` under load (not a timed test): the records/s a Firehose-shaped client gets
//! through the release `botmeter receive` into Kafka (every request answered 200, so every record
//! acknowledged), beside the broker's own bare produce rate of the same events in the same run
//! (the same producer settings, keys and header, straight from this process), and the peak
//! memory of `receive` when more requests of near the body limit arrive than it takes at once.
//!
//! Run: `scripts/services.sh up && cargo bench --bench receive`. Settings:
//! BOTMETER_BENCH_RECEIVE_EVENTS (traffic events, default 300,000), BOTMETER_BENCH_RUNS (runs of
//! bare + receive, alternating; the median ratio is judged, default 3),
//! BOTMETER_BENCH_RECEIVE_CONCURRENCY (senders and `--max-concurrent-requests`, default 4),
//! BOTMETER_BENCH_RECEIVE_RECORDS (records per request, default 500). Request bodies are built
//! and gzipped before the clock starts, so the client's own work is mostly sending. Results go
//! to BENCHMARKS.md by hand, with the machine and the load average this prints.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use simulate::{generate, FleetConfig};

#[path = "../tests/it/firehose_client.rs"]
mod firehose_client;
#[path = "support/metrics.rs"]
mod metrics;
#[path = "support/proc.rs"]
mod proc;
#[path = "support/targets.rs"]
#[expect(
    dead_code,
    reason = "this harness reports only some kinds of target line"
)]
mod targets;
use firehose_client::{Batch, FirehoseClient};
use proc::{cpu_seconds, status_mb};
use targets::{report, Bar};

const KEY: &str = "bench-firehose-key";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unique() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000_000
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `botmeter receive`.
struct Receive {
    child: Child,
    url: String,
    metrics: String,
}

impl Receive {
    async fn start(brokers: &str, topics: &str, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("bench-receive-{topics}"));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys.toml");
        std::fs::write(
            &keys,
            format!(
                "[[keys]]\nname = \"bench\"\nsha256 = \"{}\"\n",
                botmeter::receive::keys::digest_hex(KEY)
            ),
        )
        .unwrap();
        let (listen, metrics) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let log = std::fs::File::create(dir.join("receive.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_botmeter"))
            .args(["receive", "--listen", &listen, "--metrics-listen", &metrics])
            .arg("--access-keys-file")
            .arg(&keys)
            .args(["--traffic-partitions", "4"])
            .args(extra)
            .env("BOTMETER_KAFKA_BROKERS", brokers)
            .env("BOTMETER_CONTROL_TOPIC", format!("{topics}.control"))
            .env("BOTMETER_TRAFFIC_TOPIC", format!("{topics}.traffic"))
            .env(
                "BOTMETER_DEAD_LETTER_TOPIC",
                format!("{topics}.dead-letter"),
            )
            .env(
                "BOTMETER_RECEIVE_REQUEST_LOG_TOPIC",
                format!("{topics}.requests"),
            )
            .env("BOTMETER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn botmeter receive");
        let url = format!("http://{listen}/");
        for _ in 0..300 {
            if let Ok(r) = reqwest::get(format!("{url}readyz")).await {
                if r.status() == 200 {
                    return Self {
                        child,
                        url,
                        metrics: format!("http://{metrics}/metrics"),
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!("receive never became ready (log in {})", dir.display());
    }

    /// A counter's value, 0 before it is first counted.
    async fn counter(&self, name_and_labels: &str) -> f64 {
        metrics::scrape(&self.metrics, name_and_labels)
            .await
            .unwrap_or(0.0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Sends every prebuilt request with `concurrency` senders, each retried (same request id) until
/// 200; returns the elapsed time and the attempts refused at the limit (429 or connection closed).
async fn send_all(
    client: &FirehoseClient,
    requests: &[(String, Vec<u8>)],
    concurrency: usize,
) -> (Duration, u64) {
    let started = Instant::now();
    let overloaded: Vec<u64> = futures::stream::iter(requests.iter())
        .map(|(id, body)| async move {
            let mut overloaded = 0;
            loop {
                // A request refused at the limit is answered 429 before its body is read; a
                // client still writing a large body then sees the connection close instead
                // (Firehose retries either).
                match client
                    .send_raw(id, Some(KEY), client.gzip, body.clone())
                    .await
                {
                    Ok(reply) if reply.status == 200 => return overloaded,
                    Ok(reply) if reply.status == 429 => overloaded += 1,
                    Ok(reply) => panic!("request {id} answered {}: {reply:?}", reply.status),
                    Err(e) if e.is_request() => overloaded += 1,
                    Err(e) => panic!("request {id}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    (started.elapsed(), overloaded.iter().sum())
}

/// The broker's bare produce rate: every event with its routing key and a request-id header,
/// from one producer with `receive`'s settings, all acknowledged.
async fn bare_produce(brokers: &str, topic: &str, events: &[&[u8]]) -> Duration {
    ingest::admin::ensure_topics(brokers, &[(topic, 4)])
        .await
        .unwrap();
    let producer: FutureProducer = botmeter::receive::publish::producer_config(brokers, 60_000)
        .create()
        .unwrap();
    // Connect before the clock starts.
    let _ = producer
        .send(
            FutureRecord::<str, [u8]>::to(topic)
                .key("warm-up")
                .payload(b"{}"),
            Duration::from_secs(10),
        )
        .await;
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for event in events {
        let key = model::route::route(event).unwrap().key.into_owned();
        let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
            key: botmeter::receive::publish::REQUEST_ID_HEADER,
            value: Some("00000000-0000-0000-0000-000000000000"),
        });
        let mut record = FutureRecord::to(topic)
            .key(key.as_str())
            .payload(*event)
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    in_flight.next().await.unwrap().unwrap().unwrap();
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    while let Some(done) = in_flight.next().await {
        done.unwrap().map_err(|(e, _)| e).expect("acknowledged");
    }
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let brokers =
        std::env::var("BOTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let events_n: usize = env_or("BOTMETER_BENCH_RECEIVE_EVENTS", 300_000);
    let runs: usize = env_or("BOTMETER_BENCH_RUNS", 3);
    let concurrency: usize = env_or("BOTMETER_BENCH_RECEIVE_CONCURRENCY", 4);
    let records: usize = env_or("BOTMETER_BENCH_RECEIVE_RECORDS", 500);
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let fleet = generate(&FleetConfig {
        seed: 5,
        bot_users: 40,
        users: 10,
        traffic_events: events_n,
        ..FleetConfig::default()
    });
    let events: Vec<&[u8]> = fleet.traffic.iter().map(|m| m.payload.as_slice()).collect();
    let payload_bytes: usize = events.iter().map(|e| e.len()).sum();
    let mut client = FirehoseClient::new("http://unused/", KEY);
    client.max_records = records;
    let requests: Vec<(String, Vec<u8>)> = client
        .batches(events.iter().copied())
        .iter()
        .map(|b| {
            (
                b.request_id.clone(),
                FirehoseClient::gzip(&FirehoseClient::body(b)),
            )
        })
        .collect();
    let wire: usize = requests.iter().map(|(_, b)| b.len()).sum();
    println!(
        "{} traffic events ({} MB of JSON), {} requests of {records} records, gzipped to {} MB; {concurrency} senders, --max-concurrent-requests {concurrency}",
        events.len(),
        payload_bytes / 1_000_000,
        requests.len(),
        wire / 1_000_000
    );

    let mut ratios = Vec::new();
    for run in 1..=runs {
        let name = format!("bench.receive.{}", unique());
        let bare = bare_produce(&brokers, &format!("{name}.bare"), &events).await;
        let bare_rate = events.len() as f64 / bare.as_secs_f64();

        let concurrency_text = concurrency.to_string();
        let receive = Receive::start(
            &brokers,
            &name,
            &["--max-concurrent-requests", &concurrency_text],
        )
        .await;
        let pid = receive.child.id();
        let cpu_before = cpu_seconds(pid);
        client.url = receive.url.clone();
        let (elapsed, overloaded) = send_all(&client, &requests, concurrency).await;
        let cpu = cpu_seconds(pid) - cpu_before;
        let rate = events.len() as f64 / elapsed.as_secs_f64();
        let published = receive
            .counter("botmeter_receive_messages_total{topic=\"traffic\"}")
            .await;
        assert_eq!(
            published as usize,
            events.len(),
            "every event acknowledged once"
        );
        let peak = status_mb(pid, "VmHWM");
        receive.stop();
        let ratio = rate / bare_rate;
        ratios.push(ratio);
        println!(
            "run {run}: bare produce {} events/s ({:.2} s) | receive → Kafka {} events/s ({:.2} s, {:.2} µs CPU/event, peak RSS {peak:.0} MB, {overloaded} refused at the limit) | ratio {ratio:.2}",
            targets::number(bare_rate),
            bare.as_secs_f64(),
            targets::number(rate),
            elapsed.as_secs_f64(),
            cpu / events.len() as f64 * 1e6,
        );
        ingest_delete(&brokers, &name).await;
    }

    // Memory under the limit: 2× more senders than the limit, each body near --max-body-bytes.
    let limit_mb = 16;
    let limit_bytes = (limit_mb << 20).to_string();
    let name = format!("bench.receive.{}", unique());
    let receive = Receive::start(
        &brokers,
        &name,
        &[
            "--max-concurrent-requests",
            &concurrency_text(concurrency),
            "--max-body-bytes",
            &limit_bytes,
        ],
    )
    .await;
    let mut big = FirehoseClient::new(&receive.url, KEY);
    big.gzip = false;
    big.max_records = 10_000;
    big.events_per_record = 4;
    // About 11 MiB of records, 15 MiB once base64 in JSON: under the 16 MiB limit.
    big.max_record_bytes = 11 << 20;
    let big_requests: Vec<(String, Vec<u8>)> = big
        .batches(events.iter().copied())
        .into_iter()
        .filter(|b| b.records.iter().map(Vec::len).sum::<usize>() >= 10 << 20)
        .map(|b: Batch| (b.request_id.clone(), FirehoseClient::body(&b)))
        .collect();
    let largest = big_requests.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
    let (_, overloaded) = send_all(&big, &big_requests, concurrency * 2).await;
    let peak = status_mb(receive.child.id(), "VmHWM");
    receive.stop();
    ingest_delete(&brokers, &name).await;
    let bound = (concurrency * 3 * largest) as f64 / 1e6 + 100.0;
    println!(
        "memory: {} requests of up to {:.1} MB (limit {limit_mb} MiB) from {} senders against --max-concurrent-requests {concurrency}: {overloaded} attempts refused at the limit (429 or closed mid-body), peak RSS {peak:.0} MB (bound: {concurrency} × 3 × body + 100 MB = {bound:.0} MB)",
        big_requests.len(),
        largest as f64 / 1e6,
        concurrency * 2,
    );
    let ratio = median(ratios);
    println!("median ratio receive / bare produce: {ratio:.2}");
    report(
        "receive → Kafka records/s ÷ bare produce (median)",
        ratio,
        "×",
        Bar::AtLeast(0.7),
    );
    report(
        "receive peak RSS at the concurrency limit",
        peak,
        "MB",
        Bar::AtMost(bound),
    );
}

fn concurrency_text(concurrency: usize) -> String {
    concurrency.to_string()
}

/// Deletes a run's topics (best effort).
async fn ingest_delete(brokers: &str, name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topics: Vec<String> = ["bare", "control", "traffic", "dead-letter", "requests"]
        .iter()
        .map(|t| format!("{name}.{t}"))
        .collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
}
