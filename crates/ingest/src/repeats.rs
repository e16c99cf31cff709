//! Repeated deliveries of one event. ngrok's event destinations (Firehose, Kinesis) deliver at
//! least once, so the same `event_id` can arrive at two Kafka positions. [`RepeatWindow`]
//! remembers the event ids seen within a window of event time, and where each was first seen, so
//! that a repeat (same id, another position) is told apart from a re-read of the same message
//! (same id, same position: after a rebalance or a rewind), which is not a repeat.
//!
//! Memory is bounded twice: by event time (ids older than the newest event time seen minus the
//! window are forgotten) and by count (beyond `max_ids`, the ids remembered longest are forgotten
//! early, and [`RepeatWindow::evicted_early`] counts them). Each id is kept as a 128-bit SipHash
//! of it, not as its text: about 60–120 bytes per id in all (BENCHMARKS.md, "repeat window").
//! Two distinct ids collide with probability about n²/2¹²⁹ (n ids in the window): never, in
//! practice.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Duration;

use siphasher::sip128::{Hasher128 as _, SipHasher13};

/// Default window of event time within which a repeated event id is recognized.
pub const DEFAULT_WINDOW_MS: u64 = 60 * 60 * 1000;
/// Default most event ids remembered (about 120–240 MB at the worst).
pub const DEFAULT_MAX_IDS: usize = 2_000_000;

/// An event id as remembered: its 128-bit SipHash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdHash(u64, u64);

impl Hash for IdHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a hash: the map takes half of it as is (see `TakeHash`).
        state.write_u64(self.0);
    }
}

/// The map's hasher: an [`IdHash`] is already a SipHash, so hashing it again would only cost.
#[derive(Debug, Default)]
struct TakeHash(u64);

impl Hasher for TakeHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached (`IdHash` writes one u64); folded in for completeness.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A Kafka position (partition, offset) of the topic the window serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// What [`RepeatWindow::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first delivery of this id within the window (or a re-read of that same message, or an
    /// event too old for the window to tell): counted.
    First,
    /// Another delivery of an id first seen at `first`: counted nowhere.
    Repeat {
        /// Where the id was first seen.
        first: Position,
    },
}

/// The event ids seen within a window of event time.
#[derive(Debug)]
pub struct RepeatWindow {
    window_us: i64,
    max_ids: usize,
    first_seen: HashMap<IdHash, Position, BuildHasherDefault<TakeHash>>,
    /// Remembered ids in the order they were remembered, with their event time.
    order: VecDeque<(i64, IdHash)>,
    /// The newest event time seen; the window ends here.
    newest_us: i64,
    evicted_early: u64,
}

impl RepeatWindow {
    /// A window of `window` of event time holding at most `max_ids` ids (0: remembers nothing,
    /// every event is [`Seen::First`]).
    pub fn new(window: Duration, max_ids: usize) -> Self {
        Self {
            window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            max_ids,
            first_seen: HashMap::default(),
            order: VecDeque::new(),
            newest_us: i64::MIN,
            evicted_early: 0,
        }
    }

    /// Whether `event_id`, delivered at `position` with event time `time_us`, repeats an event
    /// already seen at another position; remembers it if it is new.
    pub fn check(&mut self, event_id: &str, time_us: i64, position: Position) -> Seen {
        if self.max_ids == 0 || event_id.is_empty() {
            return Seen::First;
        }
        let id = hash(event_id);
        if let Some(&first) = self.first_seen.get(&id) {
            return if first == position {
                Seen::First
            } else {
                Seen::Repeat { first }
            };
        }
        if time_us < self.window_start() {
            // Older than the window: whatever it repeats is forgotten, so it is counted.
            return Seen::First;
        }
        self.first_seen.insert(id, position);
        self.order.push_back((time_us, id));
        if time_us > self.newest_us {
            self.newest_us = time_us;
        }
        self.forget_old();
        Seen::First
    }

    /// Event ids remembered now.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    /// Whether no event id is remembered.
    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }

    /// Ids forgotten before their window ended, because `max_ids` were remembered.
    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }

    /// The earliest event time the window still covers.
    fn window_start(&self) -> i64 {
        self.newest_us.saturating_sub(self.window_us)
    }

    /// Forgets ids older than the window (in the order they were remembered: an id remembered
    /// after a newer one waits for it, at most until `max_ids` pushes it out), then the oldest
    /// ids beyond `max_ids`.
    fn forget_old(&mut self) {
        let start = self.window_start();
        while let Some(&(time_us, id)) = self.order.front() {
            let early = self.order.len() > self.max_ids;
            if time_us >= start && !early {
                break;
            }
            if early && time_us >= start {
                self.evicted_early += 1;
            }
            self.order.pop_front();
            self.first_seen.remove(&id);
        }
    }
}

fn hash(event_id: &str) -> IdHash {
    // Fixed keys: the hash only has to tell event ids apart, and stays the same across restarts.
    let mut hasher = SipHasher13::new_with_keys(0x626f_746d_6574_6572, 0x7265_7065_6174_7321);
    hasher.write(event_id.as_bytes());
    let hash = hasher.finish128();
    IdHash(hash.h1, hash.h2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    const SECOND: i64 = 1_000_000;

    #[test]
    fn a_second_delivery_at_another_position_is_a_repeat_of_the_first() {
        let mut window = RepeatWindow::new(Duration::from_secs(60), 100);
        assert_eq!(window.check("ev_1", 10 * SECOND, at(0, 5)), Seen::First);
        assert_eq!(
            window.check("ev_1", 10 * SECOND, at(1, 2)),
            Seen::Repeat { first: at(0, 5) }
        );
        assert_eq!(
            window.check("ev_1", 10 * SECOND, at(0, 9)),
            Seen::Repeat { first: at(0, 5) }
        );
        assert_eq!(window.check("ev_2", 10 * SECOND, at(0, 6)), Seen::First);
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn a_re_read_of_the_same_message_is_not_a_repeat() {
        let mut window = RepeatWindow::new(Duration::from_secs(60), 100);
        assert_eq!(window.check("ev_1", SECOND, at(3, 7)), Seen::First);
        assert_eq!(window.check("ev_1", SECOND, at(3, 7)), Seen::First);
    }

    #[test]
    fn ids_older_than_the_window_are_forgotten() {
        let mut window = RepeatWindow::new(Duration::from_secs(60), 100);
        window.check("ev_old", 0, at(0, 0));
        window.check("ev_new", 61 * SECOND, at(0, 1));
        assert_eq!(window.len(), 1);
        // Forgotten, and too old to be remembered again: counted.
        assert_eq!(window.check("ev_old", 0, at(0, 2)), Seen::First);
        assert_eq!(window.len(), 1);
        assert_eq!(window.evicted_early(), 0);
    }

    #[test]
    fn at_most_max_ids_are_remembered_the_longest_remembered_go_first() {
        let mut window = RepeatWindow::new(Duration::from_secs(3600), 3);
        for n in 0..5 {
            window.check(&format!("ev_{n}"), SECOND, at(0, n));
        }
        assert_eq!(window.len(), 3);
        assert_eq!(window.evicted_early(), 2);
        assert_eq!(window.check("ev_0", SECOND, at(0, 10)), Seen::First);
        assert_eq!(
            window.check("ev_4", SECOND, at(0, 11)),
            Seen::Repeat { first: at(0, 4) }
        );
    }

    #[test]
    fn empty_ids_and_a_zero_size_window_remember_nothing() {
        let mut window = RepeatWindow::new(Duration::from_secs(60), 100);
        assert_eq!(window.check("", 0, at(0, 0)), Seen::First);
        assert_eq!(window.check("", 0, at(0, 1)), Seen::First);
        let mut off = RepeatWindow::new(Duration::from_secs(60), 0);
        assert_eq!(off.check("ev_1", 0, at(0, 0)), Seen::First);
        assert_eq!(off.check("ev_1", 0, at(0, 1)), Seen::First);
        assert!(off.is_empty());
    }

    proptest::proptest! {
        /// Against a model that remembers every id forever: within the window and under the cap,
        /// the window answers exactly as the model does.
        #[test]
        fn within_window_and_cap_it_matches_a_model(
            deliveries in proptest::collection::vec((0u8..20, 0i64..30), 1..200)
        ) {
            let mut window = RepeatWindow::new(Duration::from_secs(3600), 1000);
            let mut model: HashMap<String, Position> = HashMap::new();
            for (offset, (id, second)) in deliveries.into_iter().enumerate() {
                let event_id = format!("ev_{id}");
                let position = at(i32::from(id % 3), offset as i64);
                let expected = match model.get(&event_id) {
                    Some(&first) => Seen::Repeat { first },
                    None => {
                        model.insert(event_id.clone(), position);
                        Seen::First
                    }
                };
                proptest::prop_assert_eq!(window.check(&event_id, second * SECOND, position), expected);
            }
        }
    }
}
