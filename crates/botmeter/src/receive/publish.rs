//! Publishing one request's messages to Kafka and waiting until the brokers acknowledged every
//! one (idempotent producer, `acks=all`): the request is answered 200 only then. Events go to the
//! control or traffic topic with their routing key; dead letters to the dead-letter topic with
//! the headers every botmeter dead letter has. Every message carries the Firehose request id in
//! the `botmeter.firehose_request_id` header.

use std::time::Duration;

use anyhow::Context as _;
use futures::stream::{FuturesUnordered, StreamExt};
use model::route::Destination;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::firehose::{Decoded, Outgoing};
use super::window::Completed;

/// The header naming the Firehose request a message came in.
pub const REQUEST_ID_HEADER: &str = "botmeter.firehose_request_id";

/// Where messages go.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Control events.
    pub control: String,
    /// Traffic events.
    pub traffic: String,
    /// Dead letters.
    pub dead_letter: String,
    /// Completed requests (the request window's log).
    pub request_log: String,
}

/// The producer of `botmeter receive`.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    topics: Topics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// The librdkafka configuration of [`Publisher`] (and of the bench's bare producer, so that the
/// two are compared like for like): idempotent, every in-sync replica acknowledges, small linger
/// for batching across concurrent requests, LZ4.
pub fn producer_config(brokers: &str, timeout_ms: u64) -> rdkafka::ClientConfig {
    let mut config = ingest::client::producer_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "10000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", timeout_ms.to_string());
    config
}

/// What publishing one request did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Control events.
    pub control: u64,
    /// Traffic events.
    pub traffic: u64,
    /// Dead letters.
    pub dead_letters: u64,
}

impl Publisher {
    /// A producer to `brokers`; a message not acknowledged within `timeout_ms` fails its request.
    pub fn new(brokers: &str, topics: Topics, timeout_ms: u64) -> anyhow::Result<Self> {
        let producer = producer_config(brokers, timeout_ms)
            .create()
            .with_context(|| format!("failed to create the Kafka producer for {brokers}"))?;
        Ok(Self { producer, topics })
    }

    /// Asks the brokers for the topics' metadata: an unreachable cluster or a missing topic is
    /// one readable error at start.
    pub async fn check(&self, timeout: Duration) -> anyhow::Result<()> {
        let producer = self.producer.clone();
        let topics = self.topics.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            for topic in [
                &topics.control,
                &topics.traffic,
                &topics.dead_letter,
                &topics.request_log,
            ] {
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(topic), timeout)
                    .with_context(|| format!("failed to reach Kafka for topic {topic}"))?;
                let ok = metadata.topics().iter().any(|t| {
                    t.name() == topic && t.error().is_none() && !t.partitions().is_empty()
                });
                anyhow::ensure!(ok, "topic {topic} does not exist");
            }
            Ok(())
        })
        .await
        .context("failed to join the metadata task")?
    }

    /// Publishes every message of `decoded` and waits for all acknowledgements. The first
    /// failure is the error, but only once every message is settled: nothing is left in flight.
    pub async fn publish(&self, request_id: &str, decoded: &Decoded) -> anyhow::Result<Published> {
        let mut in_flight = FuturesUnordered::new();
        let mut first_error: Option<anyhow::Error> = None;
        let mut published = Published::default();
        let settle =
            |result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>,
             first_error: &mut Option<anyhow::Error>| {
                let error = match result {
                    Ok(Ok(_)) => return,
                    Ok(Err((e, _))) => {
                        anyhow::Error::new(e).context("Kafka did not acknowledge a message")
                    }
                    Err(_canceled) => anyhow::anyhow!("the producer dropped a message undelivered"),
                };
                first_error.get_or_insert(error);
            };
        for message in &decoded.messages {
            let payload = decoded.payload(message);
            let (topic, key, headers) = match message {
                Outgoing::Event {
                    destination, key, ..
                } => {
                    let topic = match destination {
                        Destination::Control => {
                            published.control += 1;
                            &self.topics.control
                        }
                        Destination::Traffic => {
                            published.traffic += 1;
                            &self.topics.traffic
                        }
                    };
                    (topic, key.clone(), OwnedHeaders::new_with_capacity(1))
                }
                Outgoing::DeadLetter(letter) => {
                    published.dead_letters += 1;
                    (
                        &self.topics.dead_letter,
                        format!("{request_id}/{}", letter.offset),
                        ingest::dead_letter::headers(letter),
                    )
                }
            };
            let headers = headers.insert(Header {
                key: REQUEST_ID_HEADER,
                value: Some(request_id),
            });
            let mut record = FutureRecord::to(topic)
                .key(key.as_str())
                .payload(payload)
                .headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        in_flight.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                        // librdkafka's queue is full: wait for an acknowledgement to make room.
                        record = returned;
                        match in_flight.next().await {
                            Some(done) => settle(done, &mut first_error),
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => {
                        first_error.get_or_insert(
                            anyhow::Error::new(e)
                                .context(format!("failed to queue a message for {topic}")),
                        );
                        break;
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            settle(done, &mut first_error);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(published),
        }
    }

    /// Records a completed request in the request log and waits for the acknowledgement.
    pub async fn log_completed(&self, completed: &Completed) -> anyhow::Result<()> {
        let payload =
            serde_json::to_vec(completed).context("failed to encode the request log entry")?;
        let record = FutureRecord::to(&self.topics.request_log)
            .key(completed.request_id.as_str())
            .payload(&payload);
        self.producer
            .send(record, Duration::from_secs(0))
            .await
            .map_err(|(e, _)| anyhow::Error::new(e))
            .with_context(|| {
                format!(
                    "failed to log request {} as completed",
                    completed.request_id
                )
            })?;
        Ok(())
    }

    /// Waits for whatever is still queued (shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}
