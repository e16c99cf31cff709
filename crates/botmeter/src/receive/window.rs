//! The window of recently completed Firehose requests, so that a retried request (Firehose retries
//! with the same request id, e.g. when our 200 was lost on the way back) is answered 200 without
//! being published a second time.
//!
//! Persisted in Kafka, rebuildable anywhere: once every message of a request is acknowledged,
//! `receive` publishes `{request_id, acked_at_ms, …}` to the request-log topic (key: the request
//! id) and only then answers 200. A reader thread reads that topic from the first message within
//! the window (by timestamp) and keeps reading, so the window survives restarts and is shared by
//! every instance behind one load balancer. Bounded twice: ids older than `--request-window-ms`
//! are forgotten, and at most `--request-window-max-ids` are kept (the oldest go first).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// What the request log holds per completed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// Firehose's request id.
    pub request_id: String,
    /// When its last message was acknowledged, ms since the epoch.
    pub acked_at_ms: i64,
    /// Records in the request.
    pub records: u64,
    /// Kafka messages published for it (events and dead letters).
    pub messages: u64,
}

/// Request ids completed within the window.
#[derive(Debug)]
pub struct RequestWindow {
    window_ms: i64,
    max_ids: usize,
    acked_at: HashMap<String, i64>,
    /// Insertion order, for eviction; an id re-inserted later appears twice (the stale entry is
    /// skipped when it comes up).
    order: VecDeque<(i64, String)>,
}

impl RequestWindow {
    /// An empty window of `window_ms` holding at most `max_ids` ids.
    pub fn new(window_ms: u64, max_ids: usize) -> Self {
        Self {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            max_ids,
            acked_at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `request_id` completed within the window before `now_ms`.
    pub fn contains(&self, request_id: &str, now_ms: i64) -> bool {
        self.acked_at
            .get(request_id)
            .is_some_and(|&at| now_ms.saturating_sub(at) <= self.window_ms)
    }

    /// Records a completed request (idempotent) and evicts what the bounds exclude.
    pub fn insert(&mut self, request_id: &str, acked_at_ms: i64, now_ms: i64) {
        if self.max_ids == 0 {
            return;
        }
        match self.acked_at.get_mut(request_id) {
            Some(at) if *at >= acked_at_ms => {}
            Some(at) => {
                *at = acked_at_ms;
                self.order.push_back((acked_at_ms, request_id.to_owned()));
            }
            None => {
                self.acked_at.insert(request_id.to_owned(), acked_at_ms);
                self.order.push_back((acked_at_ms, request_id.to_owned()));
            }
        }
        self.evict(now_ms);
    }

    fn evict(&mut self, now_ms: i64) {
        while let Some((at, id)) = self.order.front() {
            let too_old = now_ms.saturating_sub(*at) > self.window_ms;
            let too_many = self.acked_at.len() > self.max_ids;
            let stale = self.acked_at.get(id) != Some(at);
            if !(too_old || too_many || stale) {
                break;
            }
            let (at, id) = self.order.pop_front().expect("front exists");
            if self.acked_at.get(&id) == Some(&at) {
                self.acked_at.remove(&id);
            }
        }
    }

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.acked_at.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.acked_at.is_empty()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Starts the thread that reads the request log into `window`: from the first message within the
/// window to the end (then `caught_up` is set), then whatever other instances add, until `stop`.
pub fn spawn_reader(
    brokers: &str,
    topic: &str,
    window_ms: u64,
    window: Arc<Mutex<RequestWindow>>,
    caught_up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let consumer: BaseConsumer = ingest::client::reader_config(brokers)
        // assign() only; librdkafka still wants a group id.
        .set("group.id", "botmeter-receive-request-log")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("failed to create the request-log reader")?;
    let partitions = ingest::partitions_of(&consumer, topic)
        .with_context(|| format!("failed to read the partitions of the request log {topic}"))?;
    let since = now_ms().saturating_sub(i64::try_from(window_ms).unwrap_or(i64::MAX));
    let mut by_time = TopicPartitionList::new();
    for &partition in &partitions {
        by_time
            .add_partition_offset(topic, partition, Offset::Offset(since))
            .context("failed to build the request-log assignment")?;
    }
    // The first offset at or after `since` per partition; a broker that cannot answer is read
    // from the beginning (entries older than the window are then skipped as they are read).
    let start = match consumer.offsets_for_times(by_time, Duration::from_secs(10)) {
        Ok(list) => list,
        Err(e) => {
            warn!(topic, error = %e, "request log: offsets by time unavailable; reading it from the beginning");
            let mut list = TopicPartitionList::new();
            for &partition in &partitions {
                list.add_partition_offset(topic, partition, Offset::Beginning)
                    .context("failed to build the request-log assignment")?;
            }
            list
        }
    };
    let mut assignment = TopicPartitionList::new();
    for element in start.elements_for_topic(topic) {
        let offset = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            // No message at or after `since`: start at the end.
            Offset::End => Offset::End,
            _ => Offset::Beginning,
        };
        assignment
            .add_partition_offset(topic, element.partition(), offset)
            .context("failed to build the request-log assignment")?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("failed to assign the request log {topic}"))?;
    let highs = ingest::high_watermarks(&consumer, topic, &partitions)
        .with_context(|| format!("failed to read the end of the request log {topic}"))?;
    // The partitions with something to read before the window is complete: not those starting at
    // their end (nothing within the window) or already past their high watermark.
    let highs: HashMap<i32, i64> = highs
        .into_iter()
        .filter(|(partition, high)| {
            let start = assignment
                .find_partition(topic, *partition)
                .map_or(Offset::Beginning, |p| p.offset());
            *high > 0
                && match start {
                    Offset::Offset(o) => o < *high,
                    Offset::End => false,
                    _ => true,
                }
        })
        .collect();
    let topic = topic.to_owned();
    let thread = std::thread::Builder::new()
        .name("request-log".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let mut read = 0u64;
            let check_caught_up = |consumer: &BaseConsumer, read: u64| {
                if caught_up.load(Ordering::Relaxed) {
                    return;
                }
                let done = consumer.position().is_ok_and(|position| {
                    highs.iter().all(|(&partition, &high)| {
                        position
                            .find_partition(&topic, partition)
                            .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= high))
                    })
                });
                if done {
                    let ids = window.lock().map(|w| w.len()).unwrap_or(0);
                    info!(
                        topic,
                        messages = read,
                        ids,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "request window rebuilt from the request log"
                    );
                    caught_up.store(true, Ordering::Relaxed);
                }
            };
            check_caught_up(&consumer, read);
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        read += 1;
                        match message.payload().map(serde_json::from_slice::<Completed>) {
                            Some(Ok(done)) => {
                                let mut window = window.lock().expect("window lock");
                                window.insert(&done.request_id, done.acked_at_ms, now_ms());
                                metrics::gauge!(super::metrics::WINDOW_IDS)
                                    .set(window.len() as f64);
                            }
                            _ => warn!(
                                topic,
                                partition = message.partition(),
                                offset = message.offset(),
                                "request log: skipping a message that is not a completed request"
                            ),
                        }
                    }
                    Some(Err(e)) => warn!(topic, error = %e, "request log: read failed; retrying"),
                    None => {}
                }
                check_caught_up(&consumer, read);
            }
        })
        .context("failed to start the request-log reader")?;
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_within_the_window_only() {
        let mut window = RequestWindow::new(1_000, 10);
        window.insert("a", 100, 100);
        assert!(window.contains("a", 1_100));
        assert!(!window.contains("a", 1_101), "older than the window");
        assert!(!window.contains("b", 100));
        window.insert("b", 2_000, 2_000);
        assert_eq!(window.len(), 1, "a was evicted by age");
    }

    #[test]
    fn at_most_max_ids_are_kept_oldest_first() {
        let mut window = RequestWindow::new(u64::MAX / 2, 3);
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            window.insert(id, i as i64, 10);
        }
        assert_eq!(window.len(), 3);
        assert!(!window.contains("a", 10));
        assert!(window.contains("d", 10));
        // Re-inserting (the reader sees our own completions again) changes nothing.
        window.insert("d", 3, 10);
        window.insert("b", 1, 10);
        assert_eq!(window.len(), 3);
        assert!(window.contains("b", 10));
        assert!(RequestWindow::new(1, 0).is_empty());
    }
}
