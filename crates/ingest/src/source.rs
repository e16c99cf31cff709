//! The two readers. The control topic is broadcast: every instance assigns itself all of its
//! partitions and reads them in full. The traffic topic is sharded by a consumer group; on each
//! assignment the reader starts every partition right after the last offset that is durable in
//! ClickHouse (supplied by [`PositionsFn`]), never from Kafka's committed offsets, so that a crash
//! between a write and a commit neither loses nor repeats a row.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Last durable offset per partition of a topic (inclusive: the next message to read is `+ 1`).
/// Called from the consumer's rebalance callback, on the polling thread: it may block.
pub type PositionsFn = Arc<dyn Fn(&str) -> HashMap<i32, i64> + Send + Sync>;

/// Consumer context of the traffic reader: positions partitions from ClickHouse on assignment.
///
/// Each partition is started `rewind` messages before its resume point and the messages up to the
/// stored position are skipped by the reader ([`TrafficContext::already_stored`]): some brokers
/// (tansu 0.6) skip the rest of a record batch when a fetch starts inside it, so starting exactly
/// at the resume point could lose the messages after it in that batch. `rewind` must be at least
/// the producers' largest batch in records (librdkafka's `batch.num.messages`, 10000 by default).
pub struct TrafficContext {
    topic: String,
    positions: PositionsFn,
    rewind: i64,
    assigned: Mutex<BTreeSet<i32>>,
    stored: Mutex<HashMap<i32, i64>>,
    generation: std::sync::atomic::AtomicU64,
    writes: Arc<WritesInFlight>,
}

/// Inserts of this reader's rows that have been started and have not ended yet.
#[derive(Debug, Default)]
struct WritesInFlight {
    count: Mutex<usize>,
    ended: std::sync::Condvar,
}

/// Held by an insert of rows from the traffic reader while it runs (see
/// [`TrafficContext::write_started`]); dropping it marks the insert ended.
#[derive(Debug)]
pub struct WriteInFlight(Arc<WritesInFlight>);

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().expect("writes lock");
        *count = count.saturating_sub(1);
        self.0.ended.notify_all();
    }
}

impl std::fmt::Debug for TrafficContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficContext")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl TrafficContext {
    /// The partitions this instance holds now.
    pub fn assigned(&self) -> BTreeSet<i32> {
        self.assigned.lock().expect("assigned lock").clone()
    }

    /// Counts rebalances: a batch polled under one generation must not be written after the
    /// partitions moved (another instance resumes them from ClickHouse).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many messages a resume rewinds (see the type's doc).
    pub fn rewind(&self) -> i64 {
        self.rewind
    }

    /// Records that `partition` is durable up to `last` (inclusive), before re-positioning it.
    pub fn mark_stored(&self, partition: i32, last: i64) {
        self.stored
            .lock()
            .expect("stored lock")
            .insert(partition, last);
    }

    /// Marks an insert of this reader's rows as running until the returned guard is dropped.
    ///
    /// The reader may poll (and so serve a rebalance) while an insert runs in the background. A
    /// rebalance waits for every running insert to end before it lets partitions go or reads
    /// the positions to resume from: an insert that lands after another instance read
    /// ClickHouse's positions would be written twice. This holds as long as the insert ends (or
    /// times out) within the group's rebalance timeout (`max.poll.interval.ms`): a member that
    /// takes longer is dropped from the group and its partitions move anyway, as they would
    /// with a synchronous insert (README, Limits).
    pub fn write_started(&self) -> WriteInFlight {
        *self.writes.count.lock().expect("writes lock") += 1;
        WriteInFlight(self.writes.clone())
    }

    /// Reads the last durable offset per partition from ClickHouse (the [`PositionsFn`]; it may
    /// block while ClickHouse is down) and takes it as what is stored (see
    /// [`Self::already_stored`]).
    fn adopt_stored_positions(&self) -> HashMap<i32, i64> {
        let positions = (self.positions)(&self.topic);
        positions.clone_into(&mut self.stored.lock().expect("stored lock"));
        positions
    }

    /// Resumes every partition of the current assignment and seeks each to where a fresh
    /// assignment would start it (after what ClickHouse holds, rewound): for a reader that
    /// paused partitions or dropped polled messages around a rebalance. Returns how many
    /// partitions it positioned.
    pub fn resume_from_stored(&self, consumer: &BaseConsumer<Self>) -> KafkaResult<usize> {
        let assignment = consumer.assignment()?;
        consumer.resume(&assignment)?;
        let positions = self.adopt_stored_positions();
        for element in assignment.elements() {
            let start = start_offset(positions.get(&element.partition()).copied(), self.rewind);
            if let Err(e) = consumer.seek(
                element.topic(),
                element.partition(),
                start,
                Duration::from_secs(10),
            ) {
                warn!(partition = element.partition(), error = %e, "seek to the stored position failed");
            }
        }
        Ok(assignment.count())
    }

    /// Blocks until no insert started with [`Self::write_started`] is running.
    fn wait_for_writes(&self) {
        let mut count = self.writes.count.lock().expect("writes lock");
        if *count > 0 {
            info!(writes = *count, "rebalance waits for the inserts in flight");
        }
        while *count > 0 {
            count = self.writes.ended.wait(count).expect("writes lock");
        }
    }

    /// Whether this message's row is already durable (it was re-read because of the rewind).
    pub fn already_stored(&self, partition: i32, offset: i64) -> bool {
        self.stored
            .lock()
            .expect("stored lock")
            .get(&partition)
            .is_some_and(|&last| offset <= last)
    }
}

/// Where to start reading a partition whose last durable offset is `last` (inclusive).
pub fn start_offset(last: Option<i64>, rewind: i64) -> Offset {
    match last {
        None => Offset::Beginning,
        Some(last) => Offset::Offset((last + 1 - rewind).max(0)),
    }
}

impl ClientContext for TrafficContext {}

impl ConsumerContext for TrafficContext {
    fn rebalance(
        &self,
        base_consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        self.wait_for_writes();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.adopt_stored_positions();
                let mut assigned = self.assigned.lock().expect("assigned lock");
                assigned.clear();
                for mut elem in tpl.elements_for_topic(&self.topic) {
                    let partition = elem.partition();
                    // Stored offsets are inclusive (the last row written); resume one past it,
                    // rewound (see the type's doc) and filtered by `already_stored`.
                    let offset = start_offset(positions.get(&partition).copied(), self.rewind);
                    if let Err(e) = elem.set_offset(offset) {
                        warn!(partition, error = %e, "cannot set the resume offset");
                    }
                    assigned.insert(partition);
                }
                info!(topic = %self.topic, partitions = ?*assigned, resume = ?positions, "traffic partitions assigned");
                if let Err(e) = base_consumer.assign(tpl) {
                    warn!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                info!(topic = %self.topic, "traffic partitions revoked");
                self.assigned.lock().expect("assigned lock").clear();
                if let Err(e) = base_consumer.unassign() {
                    warn!(error = %e, "unassign failed");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error");
                self.assigned.lock().expect("assigned lock").clear();
                let _ = base_consumer.unassign();
            }
        }
    }
}

fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // Low latency from publish to attribution: do not let the broker hold a fetch long.
        .set("fetch.wait.max.ms", "100")
        // librdkafka postpones a partition's next fetch by this long once its local queue is
        // full (default 1000 ms): with a backlog the queue then runs dry for most of a second
        // every ~200k messages. 20 ms keeps it fed (BENCHMARKS.md: +35% end to end).
        .set("fetch.queue.backoff.ms", "20")
        // Prefetch at most 16 MiB (default 64 MiB): under a backlog the queue stays full, and at
        // 250k+ events/s 16 MiB is still ~60 ms of messages. Peak RSS draining a 1M backlog
        // 263–289 → 187–192 MiB, throughput unchanged (BENCHMARKS.md). Overridable with
        // `--kafka-consumer-property queued.max.messages.kbytes=…`.
        .set("queued.max.messages.kbytes", "16384")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "max.poll.interval.ms",
            config.max_poll_interval_ms.to_string(),
        );
    for (key, value) in &config.consumer_properties {
        client.set(key, value);
    }
    client
}

/// The traffic reader, subscribed to the traffic topic in the consumer group.
pub fn traffic_consumer(
    config: &KafkaConfig,
    positions: PositionsFn,
) -> Result<BaseConsumer<TrafficContext>> {
    let context = TrafficContext {
        topic: config.traffic_topic.clone(),
        positions,
        rewind: config.resume_rewind_messages,
        assigned: Mutex::default(),
        stored: Mutex::default(),
        generation: std::sync::atomic::AtomicU64::new(0),
        writes: Arc::default(),
    };
    let consumer: BaseConsumer<TrafficContext> = base_config(config)
        .set("group.id", &config.group_id)
        .create_with_context(context)
        .map_err(Error::kafka("create the traffic consumer"))?;
    consumer
        .subscribe(&[&config.traffic_topic])
        .map_err(Error::kafka(format!(
            "subscribe to {}",
            config.traffic_topic
        )))?;
    Ok(consumer)
}

/// The control reader: all partitions of the control topic, each from the given start offset
/// (absent: the beginning). Returns the consumer and the partitions it reads.
pub fn control_consumer(
    config: &KafkaConfig,
    start: &HashMap<i32, i64>,
) -> Result<(BaseConsumer, Vec<i32>)> {
    let consumer: BaseConsumer<DefaultConsumerContext> = base_config(config)
        // No group membership: assign() only. A group id is still required by librdkafka.
        .set("group.id", format!("{}-control", config.group_id))
        .create()
        .map_err(Error::kafka("create the control consumer"))?;
    let partitions = partitions_of(&consumer, &config.control_topic)?;
    let mut tpl = TopicPartitionList::new();
    for &partition in &partitions {
        let offset = start
            .get(&partition)
            .map_or(Offset::Beginning, |&next| Offset::Offset(next));
        tpl.add_partition_offset(&config.control_topic, partition, offset)
            .map_err(Error::kafka(format!(
                "position {}/{partition}",
                config.control_topic
            )))?;
    }
    consumer
        .assign(&tpl)
        .map_err(Error::kafka(format!("assign {}", config.control_topic)))?;
    Ok((consumer, partitions))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_starts_after_the_stored_offset_rewound_but_never_before_zero() {
        assert_eq!(start_offset(None, 100), Offset::Beginning);
        assert_eq!(start_offset(Some(41), 0), Offset::Offset(42));
        assert_eq!(start_offset(Some(41), 10), Offset::Offset(32));
        assert_eq!(start_offset(Some(5), 10_000), Offset::Offset(0));
    }
}
