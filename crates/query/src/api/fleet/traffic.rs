//! The fleet's traffic over time, held in memory by `botmeter serve` within a byte budget: each
//! credential's latest attributed traffic per second, in segments of consecutive seconds, each
//! opening with a checkpoint of every credential's latest traffic before it.
//!
//! Every credential's latest traffic before a whole second `at` is then the checkpoint of the
//! segment holding `at`, updated by that segment's entries of the seconds before `at`: one copy of
//! a dense array and one scan front to back of fewer than twice [`seal_entries`] entries (however
//! rows arrive, segments are cut at second boundaries to stay near that size), with no search per
//! credential. The result is exact (a time of an earlier second is before `at`, one of the
//! second `at` or later is not).
//!
//! Memory is bounded: when the entries and checkpoints pass the budget, the oldest segments are
//! dropped. The next segment's checkpoint already holds everything before it, so every `at` from
//! the first kept second on (the *horizon*) is still answered exactly; an `at` before it is not
//! answered here (the API reads ClickHouse). The floor is one checkpoint: 8 bytes per credential.
//!
//! Rows are maxima, so adding one twice, or adding an older time of a second already held,
//! changes nothing, and a late row (of a second already sealed in an older segment) is merged
//! into its segment and raises the checkpoints after it. Segments are shared with the timelines
//! built from them ([`TrafficLog::view`]); a segment is copied only when a row changes it.

use std::collections::HashMap;
use std::sync::Arc;

const SECOND_US: i64 = 1_000_000;

/// Bytes one entry takes (its key and its microseconds).
const ENTRY_BYTES: usize = 12;

/// The fewest entries a segment holds before it is sealed and a new one opened.
const MIN_SEAL_ENTRIES: usize = 1 << 19;

/// Entries after which the open segment is sealed for `credentials` credentials: at least
/// [`MIN_SEAL_ENTRIES`], and at least 8 per credential so that checkpoints (8 bytes per
/// credential) stay under a tenth of the entries' bytes.
pub(crate) fn seal_entries(credentials: usize) -> usize {
    MIN_SEAL_ENTRIES.max(credentials.saturating_mul(8))
}

/// Consecutive seconds of traffic, from `first_second` to the next segment's first second (the
/// last segment, the open one, has no end).
#[derive(Debug, Clone)]
struct Segment {
    first_second: u32,
    /// Each credential's latest traffic (µs) before `first_second`, by credential index; 0 when
    /// none, and none for those past its end.
    before: Vec<i64>,
    /// Ascending `(second << 32) | credential index`, one per credential and second.
    keys: Vec<u64>,
    /// The microseconds into its second of each key's latest traffic.
    micros: Vec<u32>,
}

impl Segment {
    fn empty(first_second: u32, before: Vec<i64>) -> Self {
        Self {
            first_second,
            before,
            keys: Vec::new(),
            micros: Vec::new(),
        }
    }

    fn bytes(&self) -> usize {
        self.keys.len() * ENTRY_BYTES + self.before.len() * 8
    }

    /// The checkpoint after every entry: each credential's latest traffic before the segment's
    /// last second plus one.
    fn after(&self, credentials: usize) -> Vec<i64> {
        let mut latest = self.before.clone();
        latest.resize(credentials.max(latest.len()), 0);
        for (&key, &micros) in self.keys.iter().zip(&self.micros) {
            let (second, credential) = split(key);
            latest[credential] = time_us(second, micros);
        }
        latest
    }

    /// The first entry index at or after `index` that opens a second (`keys.len()` when none):
    /// where the segment may be cut.
    fn second_boundary(&self, mut index: usize) -> usize {
        while index > 0
            && index < self.keys.len()
            && split(self.keys[index]).0 == split(self.keys[index - 1]).0
        {
            index += 1;
        }
        index.min(self.keys.len())
    }

    /// Cuts it before entry `cut` (a [`Self::second_boundary`], below `keys.len()` unless it
    /// ends with an entry) and returns the later part: from the second of entry `cut` (or, for
    /// `cut == keys.len()`, the second after its last entry; empty then), opening with the
    /// checkpoint after the entries kept here.
    fn split_off(&mut self, cut: usize, credentials: usize) -> Self {
        let first_second = match self.keys.get(cut) {
            Some(&key) => split(key).0,
            None => self
                .keys
                .last()
                .map_or(self.first_second, |&last| split(last).0.saturating_add(1)),
        };
        let (keys, micros) = (self.keys.split_off(cut), self.micros.split_off(cut));
        Self {
            first_second,
            before: self.after(credentials),
            keys,
            micros,
        }
    }

    /// Whether merging `entries` (ascending keys) would change it.
    fn changed_by(&self, entries: &[(u64, u32)]) -> bool {
        entries
            .iter()
            .any(|&(key, micros)| match self.keys.binary_search(&key) {
                Ok(i) => self.micros[i] < micros,
                Err(_) => true,
            })
    }

    /// Merges `entries` (ascending keys, one per key) in, keeping the later time of a key held
    /// twice.
    fn merge(&mut self, entries: &[(u64, u32)]) {
        let mut keys = Vec::with_capacity(self.keys.len() + entries.len());
        let mut micros = Vec::with_capacity(keys.capacity());
        let (mut held, mut added) = (0, 0);
        while held < self.keys.len() || added < entries.len() {
            let next_held = self.keys.get(held).copied();
            let next_added = entries.get(added).copied();
            match (next_held, next_added) {
                (Some(key), Some((added_key, added_micros))) if key == added_key => {
                    keys.push(key);
                    micros.push(self.micros[held].max(added_micros));
                    held += 1;
                    added += 1;
                }
                (Some(key), Some((added_key, _))) if key < added_key => {
                    keys.push(key);
                    micros.push(self.micros[held]);
                    held += 1;
                }
                (Some(key), None) => {
                    keys.push(key);
                    micros.push(self.micros[held]);
                    held += 1;
                }
                (_, Some((added_key, added_micros))) => {
                    keys.push(added_key);
                    micros.push(added_micros);
                    added += 1;
                }
                (None, None) => unreachable!("the loop runs while either has more"),
            }
        }
        self.keys = keys;
        self.micros = micros;
    }
}

fn split(key: u64) -> (u32, usize) {
    ((key >> 32) as u32, (key & u64::from(u32::MAX)) as usize)
}

fn time_us(second: u32, micros: u32) -> i64 {
    i64::from(second) * SECOND_US + i64::from(micros)
}

/// Raises `before`'s entries to `latest` (credential index, time), copying the segment only when
/// one rises.
fn raise_before(segment: &mut Arc<Segment>, latest: &HashMap<usize, i64>) {
    let rises = |before: &[i64]| {
        latest
            .iter()
            .any(|(&credential, &time)| before.get(credential).copied().unwrap_or(0) < time)
    };
    if !rises(&segment.before) {
        return;
    }
    let segment = Arc::make_mut(segment);
    for (&credential, &time) in latest {
        if segment.before.len() <= credential {
            segment.before.resize(credential + 1, 0);
        }
        let held = &mut segment.before[credential];
        *held = (*held).max(time);
    }
}

/// Every credential's latest traffic per second over time, within a byte budget.
#[derive(Debug)]
pub(crate) struct TrafficLog {
    /// Credential id → index (in order of first appearance).
    index: HashMap<String, u32>,
    /// Ascending, consecutive; never empty (the first starts at second 0 until it is dropped).
    segments: Vec<Arc<Segment>>,
    max_bytes: usize,
}

impl TrafficLog {
    /// An empty log that keeps at most `max_bytes` of entries and checkpoints (more only while
    /// one checkpoint alone is larger).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            index: HashMap::new(),
            segments: vec![Arc::new(Segment::empty(0, Vec::new()))],
            max_bytes,
        }
    }

    /// The index of `credential_id`, when it has traffic.
    pub(crate) fn credential_index(&self, credential_id: &str) -> Option<u32> {
        self.index.get(credential_id).copied()
    }

    /// Credentials with traffic.
    pub(crate) fn credentials(&self) -> usize {
        self.index.len()
    }

    /// The first second whose `at` it answers.
    pub(crate) fn horizon(&self) -> u32 {
        self.segments[0].first_second
    }

    /// Bytes of entries and checkpoints held.
    pub(crate) fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.bytes()).sum()
    }

    /// What a timeline reads: the segments as they are now (shared, not copied).
    pub(crate) fn view(&self) -> TrafficView {
        TrafficView {
            segments: self.segments.clone(),
            credentials: self.index.len(),
        }
    }

    /// Adds credentials' latest traffic (µs) in some seconds, in any order; a second may come more
    /// than once. Then seals the open segment when it is full and drops the oldest segments while
    /// over the budget.
    pub(crate) fn add(&mut self, rows: impl IntoIterator<Item = (String, i64)>) {
        let mut entries: Vec<(u64, u32)> = Vec::new();
        for (credential_id, last_us) in rows {
            let next = u32::try_from(self.index.len()).expect("fewer than 4 billion credentials");
            let credential = *self.index.entry(credential_id).or_insert(next);
            let second = u32::try_from(last_us.div_euclid(SECOND_US)).unwrap_or(0);
            let micros = last_us.rem_euclid(SECOND_US) as u32;
            entries.push(((u64::from(second) << 32) | u64::from(credential), micros));
        }
        // One per key, its latest time.
        entries.sort_unstable();
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.max(later.1);
            }
            same
        });
        let mut rest = entries.as_slice();
        // Below the horizon: only the checkpoints (every segment's).
        let below = rest.partition_point(|&(key, _)| split(key).0 < self.horizon());
        if below > 0 {
            let latest = latest_of(&rest[..below]);
            for segment in &mut self.segments {
                raise_before(segment, &latest);
            }
            rest = &rest[below..];
        }
        for k in 0..self.segments.len() {
            let end = self.segments.get(k + 1).map_or(rest.len(), |next| {
                rest.partition_point(|&(key, _)| split(key).0 < next.first_second)
            });
            let (own, later) = rest.split_at(end);
            rest = later;
            if own.is_empty() || !self.segments[k].changed_by(own) {
                continue;
            }
            Arc::make_mut(&mut self.segments[k]).merge(own);
            let latest = latest_of(own);
            for segment in &mut self.segments[k + 1..] {
                raise_before(segment, &latest);
            }
        }
        self.split_full_segments();
        self.trim();
    }

    /// Keeps every segment near [`seal_entries`] entries, so an answer scans at most about that
    /// many: the open segment is sealed once it holds that many (a new one opens after it), and
    /// any segment that grew past twice that (a large first read, late rows merged into a sealed
    /// segment) is cut at the second boundary after that many entries, the later part opening
    /// with the earlier part's checkpoint after.
    fn split_full_segments(&mut self) {
        let credentials = self.index.len();
        let seal = seal_entries(credentials);
        let mut k = 0;
        while k < self.segments.len() {
            let open = k + 1 == self.segments.len();
            let entries = self.segments[k].keys.len();
            if entries < seal || (!open && entries < 2 * seal) {
                k += 1;
                continue;
            }
            let cut = self.segments[k].second_boundary(seal);
            if cut < entries {
                let later = Arc::make_mut(&mut self.segments[k]).split_off(cut, credentials);
                self.segments.insert(k + 1, Arc::new(later));
            } else if open {
                self.seal();
            }
            k += 1;
        }
    }

    /// Seals the open segment (when it holds any entry), opening a new one after its last second.
    fn seal(&mut self) {
        let credentials = self.index.len();
        let open = self.segments.last_mut().expect("never empty");
        if open.keys.is_empty() {
            return;
        }
        let cut = open.keys.len();
        let next = Arc::make_mut(open).split_off(cut, credentials);
        self.segments.push(Arc::new(next));
    }

    /// Drops the oldest segments while over the budget; when the open segment alone is, drops
    /// its oldest seconds (into its checkpoint) until the rest fits.
    fn trim(&mut self) {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            self.segments.remove(0);
        }
        if self.bytes() <= self.max_bytes {
            return;
        }
        let credentials = self.index.len();
        let open = &self.segments[0];
        if open.keys.is_empty() {
            return;
        }
        let checkpoint_bytes = credentials.max(open.before.len()) * 8;
        let fit = self.max_bytes.saturating_sub(checkpoint_bytes) / ENTRY_BYTES;
        // The first entry of a second from which at most `fit` entries remain.
        let cut = open.second_boundary(open.keys.len().saturating_sub(fit));
        let kept = Arc::make_mut(&mut self.segments[0]).split_off(cut, credentials);
        self.segments = vec![Arc::new(kept)];
    }
}

/// Each credential's latest time in `entries` (ascending keys).
fn latest_of(entries: &[(u64, u32)]) -> HashMap<usize, i64> {
    let mut latest = HashMap::new();
    for &(key, micros) in entries {
        let (second, credential) = split(key);
        latest.insert(credential, time_us(second, micros));
    }
    latest
}

/// The traffic as a timeline was built with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrafficView {
    segments: Vec<Arc<Segment>>,
    credentials: usize,
}

impl TrafficView {
    /// The first second whose `at` it answers.
    pub(crate) fn horizon(&self) -> u32 {
        self.segments.first().map_or(0, |s| s.first_second)
    }

    /// Each credential's latest traffic (µs) before second `at`, by credential index (0 when
    /// none); `None` when `at` is before the horizon.
    pub(crate) fn latest_before(&self, at: u32) -> Option<Vec<i64>> {
        if self.segments.is_empty() {
            return Some(vec![0; self.credentials]);
        }
        let k = self
            .segments
            .partition_point(|s| s.first_second <= at)
            .checked_sub(1)?;
        let segment = &self.segments[k];
        let mut latest = segment.before.clone();
        latest.resize(self.credentials.max(latest.len()), 0);
        let end = segment.keys.partition_point(|&key| split(key).0 < at);
        for (&key, &micros) in segment.keys[..end].iter().zip(&segment.micros) {
            let (second, credential) = split(key);
            latest[credential] = time_us(second, micros);
        }
        Some(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The latest of `rows` of `credential` before second `at`, as a scan finds it.
    fn naive(rows: &[(String, i64)], credential: &str, at: u32) -> i64 {
        rows.iter()
            .filter(|(c, t)| c == credential && *t < i64::from(at) * SECOND_US)
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(0)
    }

    fn answers(log: &TrafficLog, at: u32) -> Option<HashMap<String, i64>> {
        let latest = log.view().latest_before(at)?;
        Some(
            log.index
                .iter()
                .map(|(id, &i)| (id.clone(), latest[i as usize]))
                .collect(),
        )
    }

    #[test]
    fn the_latest_before_each_second_is_the_latest_of_the_earlier_seconds() {
        let mut log = TrafficLog::new(usize::MAX);
        log.add([
            ("cr_a".to_owned(), 2_000_000),
            ("cr_a".to_owned(), 2_999_999),
            ("cr_b".to_owned(), 5_000_007),
        ]);
        // Late, repeated and older rows of a held second.
        log.add([
            ("cr_a".to_owned(), 1_000_001),
            ("cr_a".to_owned(), 2_500_000),
            ("cr_b".to_owned(), 5_000_007),
        ]);
        let at = |second| answers(&log, second).expect("no horizon");
        assert_eq!(at(1)["cr_a"], 0);
        assert_eq!(at(2)["cr_a"], 1_000_001);
        assert_eq!(at(3)["cr_a"], 2_999_999);
        assert_eq!(at(5)["cr_b"], 0);
        assert_eq!(at(6)["cr_b"], 5_000_007);
        assert_eq!(at(u32::MAX)["cr_a"], 2_999_999);
    }

    /// Asserts that `log` holds at most `budget` bytes, at least a third of it (the oldest
    /// segments went, not all), and no segment of more than twice [`seal_entries`] entries;
    /// returns its horizon.
    fn budget_kept(log: &TrafficLog, budget: usize) -> u32 {
        let bytes = log.bytes();
        assert!(bytes <= budget && bytes >= budget / 3, "{bytes} bytes held");
        let most = log.segments.iter().map(|s| s.keys.len()).max();
        assert!(
            most <= Some(2 * seal_entries(log.credentials())),
            "a segment of {most:?} entries"
        );
        log.horizon()
    }

    #[test]
    fn over_the_budget_the_oldest_seconds_go_and_the_rest_stay_exact() {
        // 200 credentials, one row a second each for 40,000 seconds (8M entries, 96 MB).
        let credentials = 200;
        let rows: Vec<(String, i64)> = (0..40_000_i64)
            .flat_map(|second| {
                (0..credentials).map(move |c| (format!("cr_{c}"), second * SECOND_US + c))
            })
            .collect();
        let budget = 20 << 20;
        // Added a chunk at a time (rows arrive by time), then all at once (a first read).
        for chunk_rows in [100_000, rows.len()] {
            let mut log = TrafficLog::new(budget);
            for chunk in rows.chunks(chunk_rows) {
                log.add(chunk.iter().cloned());
            }
            budget_kept(&log, budget);
        }
        // Read by credential (a whole read in parts): every part spans the whole time.
        let mut log = TrafficLog::new(budget);
        for part in 0..4 {
            log.add(
                rows.iter()
                    .filter(|(credential, _)| credential[3..].parse::<usize>().unwrap() % 4 == part)
                    .cloned(),
            );
        }
        let horizon = budget_kept(&log, budget);
        assert!(answers(&log, horizon - 1).is_none());
        for at in [horizon, horizon + 1, 39_000, 40_000, 50_000] {
            let answer = answers(&log, at).expect("at or after the horizon");
            assert_eq!(
                answer["cr_7"],
                (i64::from(at).min(40_000) - 1) * SECOND_US + 7
            );
        }
        // A late row below the horizon still counts for every later `at`.
        log.add([("cr_new".to_owned(), 5 * SECOND_US)]);
        assert_eq!(
            answers(&log, horizon).expect("kept")["cr_new"],
            5 * SECOND_US
        );
    }

    #[test]
    fn a_view_keeps_what_it_was_built_with() {
        let mut log = TrafficLog::new(usize::MAX);
        log.add([("cr_a".to_owned(), 2_000_000)]);
        let view = log.view();
        log.add([("cr_a".to_owned(), 3_000_000)]);
        assert_eq!(view.latest_before(10), Some(vec![2_000_000]));
        assert_eq!(log.view().latest_before(10), Some(vec![3_000_000]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any rows, added in any batches, under any budget: every `at` from the horizon on is what
        /// a scan of every row finds.
        #[test]
        fn every_answer_is_a_scans(
            rows in proptest::collection::vec((0_u8..12, 0_i64..600_000_000), 0..3_000),
            batches in 1_usize..6,
            budget in 0_usize..48_000,
            seal in proptest::bool::ANY,
        ) {
            let rows: Vec<(String, i64)> =
                rows.into_iter().map(|(c, t)| (format!("cr_{c}"), t)).collect();
            let mut log = TrafficLog::new(budget);
            let batch = rows.len().div_ceil(batches).max(1);
            for chunk in rows.chunks(batch) {
                log.add(chunk.iter().cloned());
                if seal {
                    log.seal();
                }
            }
            let horizon = log.horizon();
            for at in (0..=620_u32).step_by(7).chain([horizon, horizon + 1]) {
                match answers(&log, at) {
                    None => prop_assert!(at < horizon),
                    Some(answer) => {
                        prop_assert!(at >= horizon);
                        for (credential, latest) in answer {
                            prop_assert_eq!(latest, naive(&rows, &credential, at), "{} at {}", credential, at);
                        }
                    }
                }
            }
        }
    }
}
