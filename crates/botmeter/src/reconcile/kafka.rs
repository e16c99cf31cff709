//! Reading Kafka's side: the low watermark and the true end of every partition of the topics.
//!
//! It only reads: it assigns partitions (never joins a group) and commits nothing. The end is the
//! last offset seen + 1, read from each partition's last batch, because some brokers' high
//! watermark is not the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::compare::KafkaPartition;

/// Kafka's side of each topic read: partition → low watermark and true end.
pub(super) type KafkaEnds = BTreeMap<String, BTreeMap<i32, KafkaPartition>>;

/// Longest wait for a partition's last batch to start arriving.
const TAIL_FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(10);

/// Longest the tail read may take in all (a topic still being written keeps delivering).
const TAIL_MAX: Duration = Duration::from_secs(60);

/// [`read_kafka`] on a blocking thread: rdkafka polls block, so they stay off the async workers.
pub(super) async fn read_kafka_off_async(
    brokers: String,
    topics: Vec<String>,
    quiet: Duration,
) -> anyhow::Result<KafkaEnds> {
    tokio::task::spawn_blocking(move || read_kafka(&brokers, &topics, quiet))
        .await
        .context("the Kafka reader panicked")?
}

/// Low watermark and true end of every partition of `topics`.
///
/// The high watermark is not the end everywhere: tansu 0.6 reports the start of the last record
/// batch + 1. So each non-empty partition is read from `max(low, high - 1)` (the start of its last
/// batch there, the last message on Kafka) until nothing arrives for `quiet`, and the end is the
/// last offset seen + 1. Only the last batch is read. No group is joined and nothing is committed.
fn read_kafka(brokers: &str, topics: &[String], quiet: Duration) -> anyhow::Result<KafkaEnds> {
    let consumer = tail_consumer(brokers)?;
    let mut out = KafkaEnds::new();
    let mut tpl = TopicPartitionList::new();
    let mut pending = BTreeSet::new();
    for topic in topics {
        read_watermarks(&consumer, topic, &mut out, &mut tpl, &mut pending)?;
    }
    if tpl.count() == 0 {
        return Ok(out);
    }
    consumer
        .assign(&tpl)
        .context("failed to assign the partitions' tails")?;
    read_tails(&consumer, &mut out, &mut pending, quiet);
    Ok(out)
}

/// The consumer that reads the partitions' tails: assigned, never joined, nothing committed.
fn tail_consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    ingest::client::reader_config(brokers)
        // Required by librdkafka even for assign(); never joined, nothing committed.
        .set("group.id", "botmeter-reconcile")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("failed to create the Kafka consumer")
}

/// Records the watermarks of every partition of `topic` in `out` (the end the high watermark, for
/// now) and, for each non-empty one, adds the start of its last batch to `tpl` and to `pending`.
fn read_watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    out: &mut KafkaEnds,
    tpl: &mut TopicPartitionList,
    pending: &mut BTreeSet<(String, i32)>,
) -> anyhow::Result<()> {
    let partitions = ingest::partitions_of(consumer, topic)
        .with_context(|| format!("failed to list the partitions of {topic}"))?;
    let sides = out.entry(topic.to_owned()).or_default();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| {
                format!("failed to read the watermarks of {topic} partition {partition}")
            })?;
        debug!(topic, partition, low, high, "watermarks");
        sides.insert(
            partition,
            KafkaPartition {
                low,
                end: high.max(low),
            },
        );
        if high > low {
            tpl.add_partition_offset(topic, partition, Offset::Offset((high - 1).max(low)))
                .with_context(|| format!("failed to position {topic} partition {partition}"))?;
            pending.insert((topic.to_owned(), partition));
        }
    }
    Ok(())
}

/// Polls the assigned tails, moving each partition's end in `out` past every message seen, until
/// every `pending` partition delivered and nothing arrived for `quiet` (or the waits run out).
fn read_tails(
    consumer: &BaseConsumer,
    out: &mut KafkaEnds,
    pending: &mut BTreeSet<(String, i32)>,
    quiet: Duration,
) {
    let started = Instant::now();
    let mut last_arrival = started;
    loop {
        let waited = last_arrival.elapsed();
        if (pending.is_empty() && waited >= quiet)
            || waited >= TAIL_FIRST_MESSAGE_WAIT.max(quiet)
            || started.elapsed() >= TAIL_MAX
        {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let (topic, partition) = (message.topic(), message.partition());
                if let Some(side) = out
                    .get_mut(topic)
                    .and_then(|sides| sides.get_mut(&partition))
                {
                    side.end = side.end.max(message.offset() + 1);
                }
                pending.remove(&(topic.to_owned(), partition));
                last_arrival = Instant::now();
            }
            Some(Err(e)) => warn!(error = %e, "error while reading the partitions' tails"),
            None => {}
        }
    }
    for (topic, partition) in pending.iter() {
        warn!(
            topic,
            partition, "no message arrived from the last batch; its end is the high watermark"
        );
    }
    debug!(elapsed_ms = started.elapsed().as_millis() as u64, ends = ?out, "kafka ends read");
}
