//! The traffic-topic reader. The traffic topic is sharded by a consumer group; on each
//! assignment the reader starts every partition right after the last offset that is durable in
//! ClickHouse (supplied by [`PositionsFn`]), never from Kafka's committed offsets, so that a crash
//! between a write and a commit neither loses nor repeats a row.
//!
//! Everything that moves the reader lives here: the rebalance [`Fence`] (a batch polled before a
//! rebalance must not be written after it), the filter of messages already durable, and pause,
//! seek and resume ([`TrafficSource::pause`], [`TrafficSource::resume`],
//! [`TrafficSource::resume_from_stored`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::client::consumer_config;
use crate::config::ValidKafkaConfig;
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
struct TrafficContext {
    topic: String,
    positions: PositionsFn,
    rewind: i64,
    stored: Mutex<HashMap<i32, i64>>,
    generation: AtomicU64,
    writes: Arc<WritesInFlight>,
    /// Whether this member holds partition 0 now (set on assignment, cleared on revocation):
    /// the one instance of a group that evaluates alerts (`botmeter run --alert-rules`).
    holds_partition_zero: Arc<AtomicBool>,
}

/// Inserts of this reader's rows that have been started and have not ended yet.
#[derive(Debug, Default)]
struct WritesInFlight {
    count: Mutex<usize>,
    ended: std::sync::Condvar,
}

/// Held by an insert of rows from the traffic reader while it runs (see
/// `TrafficContext::write_started`); dropping it marks the insert ended.
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
    /// Counts rebalances: a batch polled under one generation must not be written after the
    /// partitions moved (another instance resumes them from ClickHouse).
    #[inline]
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// How many messages a resume rewinds (see the type's doc).
    fn rewind(&self) -> i64 {
        self.rewind
    }

    /// Records that `partition` is durable (or handed to a batch) up to `last`, inclusive, and
    /// returns the mark now in force. The mark never moves back: a position read right after a
    /// seek, before anything was fetched, names the seek's target, and lowering the mark to it
    /// would let messages already written be written again. (A new assignment replaces the marks
    /// with ClickHouse's positions instead.)
    #[inline]
    fn mark_stored(&self, partition: i32, last: i64) -> i64 {
        let mut stored = self.stored.lock().expect("stored lock");
        let mark = stored.entry(partition).or_insert(last);
        *mark = (*mark).max(last);
        *mark
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
    fn write_started(&self) -> WriteInFlight {
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
    fn resume_from_stored(&self, consumer: &BaseConsumer<Self>) -> KafkaResult<usize> {
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
    #[inline]
    fn already_stored(&self, partition: i32, offset: i64) -> bool {
        self.stored
            .lock()
            .expect("stored lock")
            .get(&partition)
            .is_some_and(|&last| offset <= last)
    }
}

/// Where to start reading a partition whose last durable offset is `last` (inclusive).
fn start_offset(last: Option<i64>, rewind: i64) -> Offset {
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
        self.generation.fetch_add(1, Ordering::SeqCst);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let positions = self.adopt_stored_positions();
                let mut assigned = BTreeSet::new();
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
                self.holds_partition_zero
                    .store(assigned.contains(&0), Ordering::SeqCst);
                info!(topic = %self.topic, partitions = ?assigned, resume = ?positions, "traffic partitions assigned");
                if let Err(e) = base_consumer.assign(tpl) {
                    warn!(error = %e, "assign failed");
                }
                // An application pause survives a new assignment: a partition this instance
                // paused in a hold or a control wait, then lost and got back, would stay paused
                // for good when the loop that paused it had already resumed "the current
                // assignment" while it was empty (tansu runs a rebalance as a revoke, then an
                // assign seconds later). A fresh assignment starts where ClickHouse says, running:
                // a loop still paused notices the new generation and positions it again.
                if let Err(e) = base_consumer.resume(tpl) {
                    warn!(error = %e, "resume of the assigned partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.holds_partition_zero.store(false, Ordering::SeqCst);
                info!(topic = %self.topic, "traffic partitions revoked");
                if let Err(e) = base_consumer.unassign() {
                    warn!(error = %e, "unassign failed");
                }
            }
            other => {
                self.holds_partition_zero.store(false, Ordering::SeqCst);
                warn!(error = ?other, "rebalance error");
                let _ = base_consumer.unassign();
            }
        }
    }
}

/// A place in the traffic reader's history: the assignment a batch was polled under. Once a
/// rebalance has run, the fence no longer [holds](TrafficSource::holds) and the batch must not be
/// written (the partitions' new owner resumes them from ClickHouse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence(u64);

/// Partitions paused by [`TrafficSource::pause`], to hand back to [`TrafficSource::resume`].
#[derive(Debug)]
pub struct Paused(TopicPartitionList);

impl Paused {
    /// The paused partitions.
    pub fn partitions(&self) -> Vec<i32> {
        self.0.elements().iter().map(|e| e.partition()).collect()
    }

    /// These, without the partitions `keep_paused` says stay paused (held elsewhere): what to
    /// resume.
    pub fn except(&self, keep_paused: impl Fn(i32) -> bool) -> Paused {
        let mut rest = TopicPartitionList::new();
        for element in self.0.elements() {
            if !keep_paused(element.partition()) {
                rest.add_partition(element.topic(), element.partition());
            }
        }
        Paused(rest)
    }
}

/// The traffic reader: a consumer-group member whose positions come from ClickHouse.
pub struct TrafficSource {
    consumer: BaseConsumer<TrafficContext>,
}

impl std::fmt::Debug for TrafficSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficSource")
            .field("context", self.consumer.context())
            .finish_non_exhaustive()
    }
}

impl TrafficSource {
    /// Subscribes to the traffic topic in the consumer group; `positions` says where each
    /// assigned partition resumes.
    pub fn new(config: &ValidKafkaConfig, positions: PositionsFn) -> Result<Self> {
        Self::with_partition_zero_flag(config, positions, Arc::default())
    }

    /// [`Self::new`], keeping `holds_partition_zero` set while this member is assigned the
    /// traffic topic's partition 0 (leadership that follows the group's assignment).
    pub fn with_partition_zero_flag(
        config: &ValidKafkaConfig,
        positions: PositionsFn,
        holds_partition_zero: Arc<AtomicBool>,
    ) -> Result<Self> {
        let context = TrafficContext {
            holds_partition_zero,
            topic: config.traffic_topic.clone(),
            positions,
            rewind: config.resume_rewind_messages,
            stored: Mutex::default(),
            generation: AtomicU64::new(0),
            writes: Arc::default(),
        };
        let consumer: BaseConsumer<TrafficContext> = consumer_config(config)
            .set("group.id", &config.group_id)
            .create_with_context(context)
            .map_err(Error::kafka("create the traffic consumer"))?;
        consumer
            .subscribe(&[&config.traffic_topic])
            .map_err(Error::kafka(format!(
                "subscribe to {}",
                config.traffic_topic
            )))?;
        Ok(Self { consumer })
    }

    /// The next message, waiting up to `timeout`; serves rebalances (see [`Self::holds`]).
    #[inline]
    pub fn poll(&self, timeout: Duration) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        self.consumer.poll(timeout)
    }

    /// The current assignment's fence.
    #[inline]
    pub fn fence(&self) -> Fence {
        Fence(self.consumer.context().generation())
    }

    /// Whether no rebalance ran since `fence` was taken.
    #[inline]
    pub fn holds(&self, fence: Fence) -> bool {
        self.fence() == fence
    }

    /// Whether the message at `partition`/`offset` is new: not durable already (re-read by the
    /// resume rewind) and not handed out before (tansu may deliver offsets again after a seek
    /// into a record batch). A new message is remembered, so a repeat is never written twice; a
    /// batch dropped at a rebalance is re-read after it, which resets this from ClickHouse.
    #[inline]
    pub fn claim(&self, partition: i32, offset: i64) -> bool {
        let context = self.consumer.context();
        if context.already_stored(partition, offset) {
            return false;
        }
        context.mark_stored(partition, offset);
        true
    }

    /// Marks an insert of this reader's rows as running until the guard is dropped: a rebalance
    /// waits for it (see [`WriteInFlight`]).
    pub fn write_started(&self) -> WriteInFlight {
        self.consumer.context().write_started()
    }

    /// Pauses every assigned partition: polling then serves heartbeats and rebalances and
    /// fetches nothing, so the group keeps the member and memory stays bounded.
    pub fn pause(&self) -> Result<Paused> {
        self.pause_where(|_| true)
    }

    /// Pauses the assigned partitions `which` selects (those of one ClickHouse shard), as
    /// [`Self::pause`]; the others keep being fetched.
    pub fn pause_where(&self, which: impl Fn(i32) -> bool) -> Result<Paused> {
        let assignment = self
            .consumer
            .assignment()
            .map_err(Error::kafka("read the assignment"))?;
        let selected = Paused(assignment).except(|partition| !which(partition)).0;
        if selected.count() > 0 {
            self.consumer
                .pause(&selected)
                .map_err(Error::kafka("pause the traffic partitions"))?;
        }
        Ok(Paused(selected))
    }

    /// Resumes paused partitions from what is durable: one past the last message handed out,
    /// rewound and filtered like a fresh assignment. Only the partitions of `paused` move.
    pub fn resume(&self, paused: Paused) -> Result<()> {
        let positions = self
            .consumer
            .position()
            .map_err(Error::kafka("read positions"))?;
        self.consumer
            .resume(&paused.0)
            .map_err(Error::kafka("resume the traffic partitions"))?;
        let context = self.consumer.context();
        let resumed = paused.partitions();
        for element in positions.elements() {
            if !resumed.contains(&element.partition()) {
                continue; // still paused (held elsewhere), or not paused at all
            }
            if let Offset::Offset(next) = element.offset() {
                let last = context.mark_stored(element.partition(), next - 1);
                let start = start_offset(Some(last), context.rewind());
                self.seek(element.topic(), element.partition(), start);
            }
        }
        Ok(())
    }

    /// Resumes the whole current assignment and starts every partition again from what
    /// ClickHouse holds, as a fresh assignment would: after a rebalance ran in a paused poll (an
    /// application pause survives a new assignment, and a partition assigned in it was not
    /// paused, so messages of it may have been polled and dropped). Returns how many partitions
    /// it positioned.
    pub fn resume_from_stored(&self) -> Result<usize> {
        self.consumer
            .context()
            .resume_from_stored(&self.consumer)
            .map_err(Error::kafka(
                "resume the traffic partitions from ClickHouse's positions",
            ))
    }

    fn seek(&self, topic: &str, partition: i32, offset: Offset) {
        if let Err(e) = self
            .consumer
            .seek(topic, partition, offset, Duration::from_secs(10))
        {
            warn!(partition, error = %e, "seek failed");
        }
    }

    /// Commits `next` (partition → next offset to read) of `topic` to Kafka, asynchronously.
    /// Informative only, for lag tools: the resume point is what ClickHouse holds.
    pub fn commit_informative(&self, topic: &str, next: &HashMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (&partition, &offset) in next {
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(offset));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "offset commit failed (informative only)");
        }
    }

    /// Messages between each assigned partition's position and its end, as
    /// `(topic, partition, lag)`: the broker's high watermark minus the position (approximate on
    /// tansu, whose high watermark is the start of the last record batch).
    pub fn lag(&self) -> Vec<(String, i32, i64)> {
        let Ok(positions) = self.consumer.position() else {
            return Vec::new();
        };
        positions
            .elements()
            .iter()
            .filter_map(|element| {
                let Offset::Offset(position) = element.offset() else {
                    return None;
                };
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(
                        element.topic(),
                        element.partition(),
                        Duration::from_millis(500),
                    )
                    .ok()?;
                Some((
                    element.topic().to_owned(),
                    element.partition(),
                    (high - position).max(0),
                ))
            })
            .collect()
    }

    /// High watermarks of `partitions` of another `topic` (the control topic's ends, which
    /// traffic waits for), through this reader's connection.
    pub fn high_watermarks(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> KafkaResult<HashMap<i32, i64>> {
        crate::control::high_watermarks(&self.consumer, topic, partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_mark_never_moves_back() {
        let context = TrafficContext {
            topic: "t".into(),
            positions: Arc::new(|_: &str| HashMap::new()),
            rewind: 10,
            stored: Mutex::default(),
            generation: AtomicU64::new(0),
            writes: Arc::default(),
            holds_partition_zero: Arc::default(),
        };
        assert_eq!(context.mark_stored(1, 999), 999);
        // A position read just after a seek to the partition's start: not a step back.
        assert_eq!(context.mark_stored(1, -1), 999);
        assert!(context.already_stored(1, 49));
        assert!(!context.already_stored(1, 1000));
    }

    #[test]
    fn resume_starts_after_the_stored_offset_rewound_but_never_before_zero() {
        assert_eq!(start_offset(None, 100), Offset::Beginning);
        assert_eq!(start_offset(Some(41), 0), Offset::Offset(42));
        assert_eq!(start_offset(Some(41), 10), Offset::Offset(32));
        assert_eq!(start_offset(Some(5), 10_000), Offset::Offset(0));
    }
}
