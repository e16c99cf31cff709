//! Publishing a fleet to Kafka: the control events first, all acknowledged before the first
//! traffic event is sent (so a consumer's control-plane watermark can never trail the traffic it
//! must resolve), then the traffic, then the late control events, if any (those do arrive after
//! the traffic that needs them). Each message's Kafka timestamp is its event time. Optional
//! pacing to a fixed rate, an optional progress bar, and a flush at the end; the first failed
//! delivery stops the run with the topic, message index and key in the error.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;
use tokio::time::Instant;

use super::generate::{Fleet, SimMessage};

/// Deliveries awaited at most at once; past this, sending waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 100_000;
/// How long a message may wait for delivery, retries included, before it counts as failed.
const MESSAGE_TIMEOUT_MS: u64 = 60_000;
/// How long the brokers may take to answer the first metadata request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`publish`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PublishReport {
    /// Messages acknowledged on the control topic.
    pub control_messages: u64,
    /// Messages acknowledged on the traffic topic.
    pub traffic_messages: u64,
    /// Late control messages acknowledged on the control topic, after the traffic.
    pub late_control_messages: u64,
    /// Payload bytes sent (keys excluded).
    pub payload_bytes: u64,
    /// Wall time from the first send to the end of the flush.
    pub elapsed_ms: u64,
    /// Acknowledged messages per second over `elapsed_ms`.
    pub messages_per_sec: f64,
}

/// Publishes `fleet.control` to `control_topic`, waits until all of it is acknowledged, then
/// publishes `fleet.traffic` to `traffic_topic`, then `fleet.late_control` to `control_topic`.
/// `rate_per_sec` paces all of them (messages per second); `progress` draws a progress bar on
/// stderr.
pub async fn publish(
    fleet: &Fleet,
    brokers: &str,
    control_topic: &str,
    traffic_topic: &str,
    rate_per_sec: Option<u64>,
    progress: bool,
) -> anyhow::Result<PublishReport> {
    if rate_per_sec == Some(0) {
        bail!("invalid rate_per_sec 0: expected at least 1 message per second, or no limit");
    }
    let producer = producer(brokers)?;

    // Fail fast and readably when the brokers cannot be reached, rather than after every message
    // has timed out.
    check_connectivity(&producer, brokers, CONNECT_TIMEOUT).await?;

    let total = (fleet.control.len() + fleet.traffic.len() + fleet.late_control.len()) as u64;
    let bar = progress_bar(total, progress);

    let started = Instant::now();
    let mut pacer = Pacer::new(rate_per_sec, started);
    // (progress label, topic, messages, what they are), in publishing order.
    let mut phases = vec![
        ("control", control_topic, &fleet.control, "control events"),
        ("traffic", traffic_topic, &fleet.traffic, "traffic events"),
    ];
    if !fleet.late_control.is_empty() {
        phases.push((
            "late",
            control_topic,
            &fleet.late_control,
            "late control events",
        ));
    }
    for (label, topic, messages, what) in phases {
        bar.set_message(label);
        send_all(&producer, topic, messages, &mut pacer, &bar)
            .await
            .with_context(|| format!("failed to publish the {what} to {topic} on {brokers}"))?;
    }

    // Every delivery is already acknowledged; flush is a formality, but it blocks, so not here.
    let flusher = producer.clone();
    tokio::task::spawn_blocking(move || flusher.flush(Duration::from_millis(MESSAGE_TIMEOUT_MS)))
        .await
        .context("failed to join the flush task")?
        .with_context(|| format!("failed to flush the producer for {brokers}"))?;
    bar.finish_with_message("done");

    Ok(report(fleet, started.elapsed()))
}

/// The producer [`publish`] sends with: every message acknowledged by all in-sync replicas.
fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ingest::client::producer_config(brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .create()
        .with_context(|| format!("failed to create a Kafka producer for {brokers}"))
}

/// A progress bar on stderr over `total` messages, or a hidden one without `progress`.
fn progress_bar(total: u64, progress: bool) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>8} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta})",
        )
        .expect("a valid template"),
    );
    bar
}

/// What publishing all of `fleet` in `elapsed` did.
fn report(fleet: &Fleet, elapsed: Duration) -> PublishReport {
    let total = (fleet.control.len() + fleet.traffic.len() + fleet.late_control.len()) as u64;
    let payload_bytes = fleet
        .control
        .iter()
        .chain(&fleet.traffic)
        .chain(&fleet.late_control)
        .map(|m| m.payload.len() as u64)
        .sum();
    PublishReport {
        control_messages: fleet.control.len() as u64,
        traffic_messages: fleet.traffic.len() as u64,
        late_control_messages: fleet.late_control.len() as u64,
        payload_bytes,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        messages_per_sec: if elapsed.is_zero() {
            0.0
        } else {
            total as f64 / elapsed.as_secs_f64()
        },
    }
}

/// Asks the brokers for metadata, so that an unreachable cluster is one readable error.
async fn check_connectivity(
    producer: &FutureProducer,
    brokers: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let probe = producer.clone();
    tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, timeout))
        .await
        .context("failed to join the metadata task")?
        .with_context(|| {
            format!("failed to reach the Kafka brokers at {brokers} within {timeout:?}")
        })?;
    Ok(())
}

/// Sends every message and waits for all of them to be acknowledged.
async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    messages: &[SimMessage],
    pacer: &mut Pacer,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut in_flight = FuturesUnordered::new();
    let settle = |(index, result): (
        usize,
        Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>,
    )| {
        let key = &messages[index].key;
        match result {
            Ok(Ok(_)) => {
                bar.inc(1);
                Ok(())
            }
            Ok(Err((err, _))) => Err(anyhow::Error::new(err).context(format!(
                "failed to deliver message {index} (key {key}) to topic {topic}"
            ))),
            Err(_canceled) => bail!(
                "the producer dropped message {index} (key {key}) for topic {topic} undelivered"
            ),
        }
    };
    for (index, message) in messages.iter().enumerate() {
        pacer.wait().await;
        let mut record = FutureRecord::to(topic)
            .key(message.key.as_str())
            .payload(message.payload.as_slice())
            .timestamp(message.event_time.timestamp_millis());
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery.map(move |result| (index, result)));
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // librdkafka's queue is full: wait for an acknowledgement to make room.
                    record = returned;
                    match in_flight.next().await {
                        Some(done) => settle(done)?,
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((err, _)) => {
                    return Err(anyhow::Error::new(err).context(format!(
                        "failed to enqueue message {index} (key {}) for topic {topic}",
                        message.key
                    )));
                }
            }
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            let done = in_flight.next().await.expect("in_flight is not empty");
            settle(done)?;
        }
        // Settle whatever has completed already, so an error surfaces early.
        while let Some(Some(done)) = in_flight.next().now_or_never() {
            settle(done)?;
        }
    }
    while let Some(done) = in_flight.next().await {
        settle(done)?;
    }
    Ok(())
}

/// Spaces sends so that message `n` leaves no earlier than `n / rate` seconds after the start.
#[derive(Debug)]
struct Pacer {
    rate_per_sec: Option<u64>,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate_per_sec: Option<u64>, started: Instant) -> Self {
        Self {
            rate_per_sec,
            started,
            sent: 0,
        }
    }

    async fn wait(&mut self) {
        if let Some(rate) = self.rate_per_sec {
            let due =
                self.started + Duration::from_nanos(self.sent.saturating_mul(1_000_000_000) / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
        }
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pacer_spaces_messages_at_the_rate() {
        let started = Instant::now();
        let mut pacer = Pacer::new(Some(1_000), started);
        for _ in 0..=100 {
            pacer.wait().await;
        }
        // Message 100 is due 100 ms after the start.
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );

        let started = Instant::now();
        let mut unpaced = Pacer::new(None, started);
        for _ in 0..100_000 {
            unpaced.wait().await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "no rate, no waiting"
        );
    }

    #[tokio::test]
    async fn bad_arguments_fail_before_any_io() {
        let fleet = super::super::generate(&super::super::FleetConfig {
            traffic_events: 1,
            ..Default::default()
        });
        let err = publish(&fleet, "127.0.0.1:1", "c", "t", Some(0), false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("rate_per_sec 0"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_a_readable_error() {
        let producer: FutureProducer = ingest::client::producer_config("127.0.0.1:1")
            .create()
            .expect("a producer");
        let err = check_connectivity(&producer, "127.0.0.1:1", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("failed to reach the Kafka brokers at 127.0.0.1:1"),
            "{err:#}"
        );
    }
}
