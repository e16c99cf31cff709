//! `botmeter sync`'s side of the control topic: [`restore`] rebuilds what sync last published
//! by reading its own events back (marked `"source": "botmeter-sync"`, of its `--account-id`),
//! so a restarted or moved sync publishes nothing twice and keeps no local file; [`publish`]
//! sends a poll's events in order and waits for every acknowledgement (`acks=all`, one request
//! in flight, so a retried send cannot overtake the next).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::fleet::{FleetView, SyncEvent};

/// How long a send may take, retries included.
const MESSAGE_TIMEOUT_MS: u64 = 30_000;
/// After the high watermarks are reached, read on until nothing arrives for this long: tansu's
/// high watermark can be the start of the last record batch rather than its end.
const QUIET: Duration = Duration::from_millis(500);

/// What [`restore`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Restored {
    /// Messages read.
    pub(super) messages: u64,
    /// Of them, sync's own events for this account.
    pub(super) own_events: u64,
}

/// Reads the whole control topic and replays sync's own events for `account_id` into a view.
pub(super) async fn restore(
    brokers: &str,
    topic: &str,
    account_id: &str,
) -> anyhow::Result<(FleetView, Restored)> {
    let (brokers, topic, account_id) =
        (brokers.to_owned(), topic.to_owned(), account_id.to_owned());
    tokio::task::spawn_blocking(move || restore_blocking(&brokers, &topic, &account_id))
        .await
        .context("the restore task failed")?
}

fn restore_blocking(
    brokers: &str,
    topic: &str,
    account_id: &str,
) -> anyhow::Result<(FleetView, Restored)> {
    let consumer: BaseConsumer = ingest::client::reader_config(brokers)
        .set("group.id", "botmeter-sync-restore")
        .create()
        .with_context(|| format!("failed to create a Kafka reader for {brokers}"))?;
    let partitions = ingest::partitions_of(&consumer, topic)
        .with_context(|| format!("failed to read the partitions of {topic} on {brokers}"))?;
    let highs = ingest::high_watermarks(&consumer, topic, &partitions)
        .with_context(|| format!("failed to read the end of {topic} on {brokers}"))?;
    let mut tpl = TopicPartitionList::new();
    for &partition in &partitions {
        tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;

    let mut view = FleetView::default();
    let mut read = Restored::default();
    let mut next: std::collections::HashMap<i32, i64> =
        partitions.iter().map(|&p| (p, 0)).collect();
    let mut last_message = Instant::now();
    loop {
        let reached = highs.iter().all(|(p, high)| next[p] >= *high);
        if reached && last_message.elapsed() >= QUIET {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.with_context(|| format!("failed to read {topic}"))?;
        last_message = Instant::now();
        next.insert(message.partition(), message.offset() + 1);
        read.messages += 1;
        let Some(payload) = message.payload() else {
            continue;
        };
        // What does not decode was never sync's (its events always do).
        let Ok(event) = model::decode(payload) else {
            continue;
        };
        if event.source.as_deref() != Some(model::SOURCE_SYNC) || event.account_id != account_id {
            continue;
        }
        if let Some(object) = &event.object {
            if view.apply(&event.event_type, object) {
                read.own_events += 1;
            }
        }
    }
    Ok((view, read))
}

/// A producer for sync's events: every send acknowledged by all in-sync replicas, one request in
/// flight so that order holds through retries.
pub(super) fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ingest::client::producer_config(brokers)
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string())
        .create()
        .with_context(|| format!("failed to create a Kafka producer for {brokers}"))
}

/// Sends `events` in order to `topic`, keyed by object id, and waits for every acknowledgement.
/// On an error, some of them may be on the topic: the caller rebuilds its view with [`restore`]
/// before the next poll, so what landed is not sent again and what did not is.
pub(super) async fn publish(
    producer: &FutureProducer,
    topic: &str,
    account_id: &str,
    events: &[SyncEvent],
) -> anyhow::Result<()> {
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let payload = event.to_json(account_id);
        let record = FutureRecord::to(topic)
            .key(event.object_id.as_str())
            .payload(&payload)
            .timestamp(event.event_time.timestamp_millis());
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .with_context(|| {
                format!(
                    "failed to enqueue {} ({})",
                    event.event_id, event.event_type
                )
            })?;
        deliveries.push((event, delivery));
    }
    for (event, delivery) in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "failed to deliver {} ({}) to {topic}",
                    event.event_id, event.event_type
                )))
            }
            Err(_) => anyhow::bail!(
                "the producer dropped {} ({}) for {topic} undelivered",
                event.event_id,
                event.event_type
            ),
        }
    }
    Ok(())
}
