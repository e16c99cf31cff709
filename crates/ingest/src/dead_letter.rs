//! Dead letters: a message that cannot be decoded or validated is republished, with its original
//! bytes, to the dead-letter topic, its reason and source position in the headers, and recorded in
//! ClickHouse by the caller. A bad message never stalls its partition.

use std::time::Duration;

pub use model::DeadLetter;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::client::producer_config;
use crate::config::ValidKafkaConfig;
use crate::error::{Error, Result};

/// Publishes dead letters.
pub struct DeadLetterProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

impl std::fmt::Debug for DeadLetterProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl DeadLetterProducer {
    /// A producer to the configured dead-letter topic.
    pub fn new(config: &ValidKafkaConfig) -> Result<Self> {
        let producer = producer_config(&config.brokers)
            .set("message.max.bytes", "10000000")
            .create()
            .map_err(Error::kafka("create the dead-letter producer"))?;
        Ok(Self {
            producer,
            topic: config.dead_letter_topic.clone(),
        })
    }

    /// Queues one dead letter; [`Self::flush`] makes it durable.
    pub fn send(&self, letter: &DeadLetter) -> Result<()> {
        let key = key(letter);
        self.producer
            .send(
                BaseRecord::to(&self.topic)
                    .key(&key)
                    .payload(&letter.payload)
                    .headers(headers(letter)),
            )
            .map_err(|(e, _)| Error::Kafka {
                context: format!("queue dead letter {key}"),
                source: e,
            })
    }

    /// Waits until every queued dead letter is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer
            .flush(timeout)
            .map_err(Error::kafka("flush dead letters"))
    }
}

/// The message key of a dead letter: its source, `topic/partition/offset`.
pub fn key(letter: &DeadLetter) -> String {
    format!("{}/{}/{}", letter.topic, letter.partition, letter.offset)
}

/// The headers a dead letter is published with: its reason, reason class and source position
/// (`botmeter.reason`, `botmeter.reason_kind`, `botmeter.source_topic`, `…_partition`,
/// `…_offset`). Every producer of dead letters uses these, so one reader reads them all.
pub fn headers(letter: &DeadLetter) -> OwnedHeaders {
    let partition = letter.partition.to_string();
    let offset = letter.offset.to_string();
    OwnedHeaders::new()
        .insert(Header {
            key: "botmeter.reason",
            value: Some(letter.reason.as_str()),
        })
        .insert(Header {
            key: "botmeter.reason_kind",
            value: Some(letter.reason_kind.as_str()),
        })
        .insert(Header {
            key: "botmeter.source_topic",
            value: Some(letter.topic.as_str()),
        })
        .insert(Header {
            key: "botmeter.source_partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "botmeter.source_offset",
            value: Some(offset.as_str()),
        })
}
