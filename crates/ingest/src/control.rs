//! The control-topic reader. The control topic is broadcast: every instance assigns itself all of
//! its partitions (no group membership) and reads them in full, from the positions the caller
//! supplies (the audit log's, in ClickHouse).

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::consumer_config;
use crate::config::ValidKafkaConfig;
use crate::error::{Error, Result};

/// Reads every partition of the control topic.
pub struct ControlSource {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl std::fmt::Debug for ControlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSource")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl ControlSource {
    /// Assigns all partitions of the control topic, each from its offset in `start` (the next
    /// message to read; absent: the beginning).
    pub fn new(config: &ValidKafkaConfig, start: &HashMap<i32, i64>) -> Result<Self> {
        let topic = config.control_topic.clone();
        let consumer: BaseConsumer = consumer_config(config)
            // No group membership: assign() only. A group id is still required by librdkafka.
            .set("group.id", format!("{}-control", config.group_id))
            .create()
            .map_err(Error::kafka("create the control consumer"))?;
        let partitions = partitions_of(&consumer, &topic)?;
        let mut tpl = TopicPartitionList::new();
        for &partition in &partitions {
            let offset = start
                .get(&partition)
                .map_or(Offset::Beginning, |&next| Offset::Offset(next));
            tpl.add_partition_offset(&topic, partition, offset)
                .map_err(Error::kafka(format!("position {topic}/{partition}")))?;
        }
        consumer
            .assign(&tpl)
            .map_err(Error::kafka(format!("assign {topic}")))?;
        Ok(Self {
            consumer,
            topic,
            partitions,
        })
    }

    /// The partitions it reads.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// The control topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message, waiting up to `timeout`.
    pub fn poll(&self, timeout: Duration) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        self.consumer.poll(timeout)
    }

    /// The application position of each partition: one past the last message `poll` returned
    /// (whether or not the partition had messages). `None` when librdkafka cannot say.
    pub fn next_offsets(&self) -> Option<HashMap<i32, i64>> {
        let assignment = self.consumer.position().ok()?;
        let next = assignment
            .elements_for_topic(&self.topic)
            .iter()
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some((element.partition(), offset)),
                _ => None,
            })
            .collect();
        Some(next)
    }
}

/// Partition ids of a topic, from the broker's metadata.
pub fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(Error::kafka(format!("fetch metadata of {topic}")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Error::Config {
            setting: "topic",
            reason: format!("{topic:?} does not exist or has no partitions"),
        });
    }
    Ok(partitions)
}

/// High watermarks (the offset the next message will get) of every given partition.
pub fn high_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: &[i32],
) -> KafkaResult<HashMap<i32, i64>> {
    partitions
        .iter()
        .map(|&p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| (p, high))
        })
        .collect()
}
