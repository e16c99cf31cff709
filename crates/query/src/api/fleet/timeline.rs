//! The fleet's timeline: every credential, agent session and endpoint with the times it began and
//! ended, and every credential's latest traffic per second, held in memory by `botmeter serve` so
//! that `/v1/fleet` as of any past time is answered without reading ClickHouse.
//!
//! It is state rebuilt from ClickHouse, never written by this instance: every refresh
//! ([`super::refresh_fleet`], every [`super::FLEET_GAUGES_INTERVAL`]) reads the whole of the 0013
//! state tables again (the begin and end times are minimums over the audit log, the same numbers
//! `crates/query/sql/fleet_*.sql` filter by `at`), and the traffic table of migration 0017 once
//! whole, then only the rows inserted since the previous read, once an hour whole again. So every
//! instance, restarted or not, holds the same timeline once it has read the same rows, and it
//! answers any `at` up to the instant its refresh began exactly as a read of ClickHouse at that
//! moment would (tests/it/fleet_status.rs and crates/query/tests/it/fleet.rs compare both).
//!
//! The latest traffic before a whole second `at` is exact from per-second maxima: an event of a
//! second before `at` is before it, one of the second `at` or later is not. Memory: 8 bytes per
//! credential and second with traffic (80 MB for the 10M sparse usage rows of benches/fleet.rs),
//! plus the control rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use clickhouse::Row;
use serde::Deserialize;

use super::{AgentsAt, CredentialAt, CredentialRow, OnlineSessionRow, SessionTotals};
use crate::api::{ApiError, AppState};

/// Placeholders: none.
pub(in crate::api) const FLEET_TIMELINE_CREDENTIALS_SQL: &str =
    include_str!("../../../sql/fleet_timeline_credentials.sql");
/// Placeholders: none.
pub(in crate::api) const FLEET_TIMELINE_SESSIONS_SQL: &str =
    include_str!("../../../sql/fleet_timeline_sessions.sql");
/// Placeholders: none.
pub(in crate::api) const FLEET_TIMELINE_ENDPOINTS_SQL: &str =
    include_str!("../../../sql/fleet_timeline_endpoints.sql");
/// Placeholders: since (Unix seconds).
pub(in crate::api) const FLEET_TRAFFIC_SECONDS_SQL: &str =
    include_str!("../../../sql/fleet_traffic_seconds.sql");

const SECOND_US: i64 = 1_000_000;

/// Refreshes between two whole reads of the traffic (an hour at the 10 s interval): they pick up
/// rows an incremental read missed (an insert that became visible more than
/// [`INSERT_SLACK_SECS`] after its view ran).
const FULL_TRAFFIC_READ_EVERY: u64 = 360;

/// How far before the previous read's start (ClickHouse's clock) an incremental read begins.
const INSERT_SLACK_SECS: u32 = 60;

/// A credential, positional row of `fleet_timeline_credentials.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct TimelineCredentialRow {
    credential_id: String,
    kind: String,
    owner_id: String,
    created_us: i64,
    deleted_us: i64,
    owner_deleted_us: i64,
}

/// A session, positional row of `fleet_timeline_sessions.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct TimelineSessionRow {
    session_id: String,
    credential_id: String,
    start_us: i64,
    stop_us: i64,
    region: String,
    os: String,
    user_agent: String,
}

/// An endpoint, positional row of `fleet_timeline_endpoints.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct TimelineEndpointRow {
    session_id: String,
    created_us: i64,
    deleted_us: i64,
}

/// A credential's latest traffic in one second, positional row of `fleet_traffic_seconds.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct TrafficSecondRow {
    credential_id: String,
    last_us: i64,
}

/// The whole fleet over time, as ClickHouse held it when a refresh began.
#[derive(Debug)]
pub struct FleetTimeline {
    /// The refresh's start (Unix seconds): the timeline answers any `at` up to it.
    at: u32,
    /// In owner, credential order.
    credentials: Vec<TimelineCredential>,
}

#[derive(Debug)]
struct TimelineCredential {
    /// Its `last_traffic_us` is not used (see `traffic`).
    row: CredentialRow,
    /// 0 when never.
    deleted_us: i64,
    /// Its bot user's deletion; 0 when never.
    owner_deleted_us: i64,
    /// By session id (the order agents are listed in).
    sessions: Vec<TimelineSession>,
    /// The latest traffic of each second with traffic, ascending.
    traffic: Arc<Vec<i64>>,
}

/// One session over time.
#[derive(Debug)]
pub(super) struct TimelineSession {
    /// Its `endpoints` is not used (see `endpoints`).
    row: OnlineSessionRow,
    /// 0 when it never stopped.
    stop_us: i64,
    /// Its endpoints' creation and deletion (0 when never).
    endpoints: Vec<(i64, i64)>,
}

impl TimelineSession {
    /// Whether it is online at `at_us`.
    fn online_at(&self, at_us: i64) -> bool {
        self.row.start_us < at_us && (self.stop_us == 0 || self.stop_us >= at_us)
    }

    fn endpoints_at(&self, at_us: i64) -> u64 {
        self.endpoints
            .iter()
            .filter(|(created, deleted)| *created < at_us && (*deleted == 0 || *deleted >= at_us))
            .count() as u64
    }

    /// The session as `fleet_online_sessions.sql` reads it as of `at_us`.
    pub(super) fn online_row(&self, at_us: i64) -> OnlineSessionRow {
        OnlineSessionRow {
            endpoints: self.endpoints_at(at_us),
            ..self.row.clone()
        }
    }
}

/// The sessions of one credential online at a time, for rendering.
pub(super) fn online_sessions(
    sessions: &[TimelineSession],
    at_us: i64,
) -> impl Iterator<Item = &TimelineSession> {
    sessions.iter().filter(move |s| s.online_at(at_us))
}

impl FleetTimeline {
    /// The instant (Unix seconds) up to which it answers.
    pub fn at(&self) -> u32 {
        self.at
    }

    /// The credentials `keep` keeps in the fleet at `at_us` (created before it, neither it nor
    /// its bot user deleted before it), in owner, credential order, as of `at_us`.
    pub(super) fn credentials_at(
        &self,
        at_us: i64,
        keep: impl Fn(&CredentialRow) -> bool,
    ) -> impl Iterator<Item = CredentialAt<'_>> {
        self.credentials
            .iter()
            .filter(move |c| {
                keep(&c.row)
                    && c.row.created_us < at_us
                    && (c.deleted_us == 0 || c.deleted_us >= at_us)
                    && (c.owner_deleted_us == 0 || c.owner_deleted_us >= at_us)
            })
            .map(move |c| {
                let mut sessions = SessionTotals::default();
                let (mut agents_online, mut endpoints_online) = (0, 0);
                for s in c.sessions.iter().filter(|s| s.row.start_us < at_us) {
                    sessions.sessions += 1;
                    sessions.last_start_us = sessions.last_start_us.max(s.row.start_us);
                    if s.stop_us < at_us {
                        sessions.last_stop_us = sessions.last_stop_us.max(s.stop_us);
                    }
                    if s.online_at(at_us) {
                        agents_online += 1;
                        endpoints_online += s.endpoints_at(at_us);
                    }
                }
                let before = c.traffic.partition_point(|&t| t < at_us);
                CredentialAt {
                    credential: &c.row,
                    last_traffic_us: before.checked_sub(1).map_or(0, |i| c.traffic[i]),
                    sessions,
                    agents_online,
                    endpoints_online,
                    agents: AgentsAt::Timeline(&c.sessions),
                }
            })
    }

    /// Joins the rows read by a refresh begun at `at`.
    fn join(
        at: u32,
        credentials: Vec<TimelineCredentialRow>,
        sessions: Vec<TimelineSessionRow>,
        endpoints: Vec<TimelineEndpointRow>,
        traffic: &TrafficTimes,
    ) -> Self {
        let mut by_session: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for e in endpoints {
            by_session
                .entry(e.session_id)
                .or_default()
                .push((e.created_us, e.deleted_us));
        }
        let mut by_credential: HashMap<String, Vec<TimelineSession>> = HashMap::new();
        for s in sessions {
            let session = TimelineSession {
                endpoints: by_session.remove(&s.session_id).unwrap_or_default(),
                stop_us: s.stop_us,
                row: OnlineSessionRow {
                    session_id: s.session_id,
                    credential_id: s.credential_id.clone(),
                    start_us: s.start_us,
                    region: s.region,
                    os: s.os,
                    user_agent: s.user_agent,
                    endpoints: 0,
                },
            };
            by_credential
                .entry(s.credential_id)
                .or_default()
                .push(session);
        }
        let credentials = credentials
            .into_iter()
            .map(|c| TimelineCredential {
                sessions: by_credential.remove(&c.credential_id).unwrap_or_default(),
                traffic: traffic.of(&c.credential_id),
                deleted_us: c.deleted_us,
                owner_deleted_us: c.owner_deleted_us,
                row: CredentialRow {
                    credential_id: c.credential_id,
                    kind: c.kind,
                    owner_id: c.owner_id,
                    created_us: c.created_us,
                    last_traffic_us: 0,
                },
            })
            .collect();
        Self { at, credentials }
    }
}

/// Every credential's latest traffic per second, kept between refreshes and read incrementally.
#[derive(Debug, Default)]
pub(crate) struct TrafficTimes {
    index: HashMap<String, usize>,
    /// By index; shared with the timelines built from it (a read copies only what it changes).
    times: Vec<Arc<Vec<i64>>>,
    empty: Arc<Vec<i64>>,
    /// ClickHouse's clock when the previous read began; `None` before the first.
    read_since: Option<u32>,
    reads: u64,
    /// Credentials added to since they were last sorted (a read cut short leaves some).
    unsettled: HashSet<usize>,
}

impl TrafficTimes {
    fn of(&self, credential_id: &str) -> Arc<Vec<i64>> {
        self.index
            .get(credential_id)
            .map_or_else(|| self.empty.clone(), |&i| self.times[i].clone())
    }

    /// Adds one second's latest traffic ([`Self::settle`] sorts it in).
    fn add(&mut self, credential_id: String, last_us: i64) {
        let next = self.times.len();
        let index = *self.index.entry(credential_id).or_insert(next);
        if index == next {
            self.times.push(Arc::new(Vec::new()));
        }
        Arc::make_mut(&mut self.times[index]).push(last_us);
        self.unsettled.insert(index);
    }

    /// Sorts the times added to and keeps the latest of each second.
    fn settle(&mut self) {
        for index in std::mem::take(&mut self.unsettled) {
            keep_latest_per_second(Arc::make_mut(&mut self.times[index]));
        }
    }

    /// Reads the rows inserted since the previous read (all of them the first time and every
    /// [`FULL_TRAFFIC_READ_EVERY`] reads).
    async fn read(&mut self, state: &AppState) -> crate::Result<()> {
        let clickhouse_now: u32 = state
            .read("read clickhouse's clock", |client| {
                client.query("SELECT toUInt32(now())").fetch_one::<u32>()
            })
            .await?;
        let since = match self.read_since {
            Some(previous) if self.reads % FULL_TRAFFIC_READ_EVERY != 0 => {
                previous.saturating_sub(INSERT_SLACK_SECS)
            }
            _ => 0,
        };
        self.settle();
        let times = &mut *self;
        let read = state
            .read("read the fleet's traffic by second", |client| async move {
                let mut cursor = client
                    .query(FLEET_TRAFFIC_SECONDS_SQL)
                    .bind(since)
                    .fetch::<TrafficSecondRow>()?;
                while let Some(row) = cursor.next().await? {
                    times.add(row.credential_id, row.last_us);
                }
                Ok(())
            })
            .await;
        // What was read is kept (a maximum is the same read twice); the next read starts where
        // this one did.
        self.settle();
        read?;
        self.read_since = Some(clickhouse_now);
        self.reads += 1;
        tracing::debug!(
            since,
            credentials = self.times.len(),
            "read the fleet's traffic"
        );
        Ok(())
    }
}

/// Sorts `times` and keeps the latest of each second (microsecond times).
fn keep_latest_per_second(times: &mut Vec<i64>) {
    times.sort_unstable();
    times.dedup_by(|later, kept| {
        let same_second = later.div_euclid(SECOND_US) == kept.div_euclid(SECOND_US);
        if same_second {
            *kept = *later;
        }
        same_second
    });
}

/// Reads the whole fleet again (and the traffic inserted since the previous read) into a
/// timeline that answers any `at` up to now.
pub(super) async fn read_timeline(state: &AppState) -> Result<FleetTimeline, ApiError> {
    let at = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX);
    let traffic = state.fleet_traffic_times();
    let mut traffic = traffic.lock().await;
    let credentials = state.read("read the fleet's credentials", |client| {
        client
            .query(FLEET_TIMELINE_CREDENTIALS_SQL)
            .fetch_all::<TimelineCredentialRow>()
    });
    let sessions = state.read("read the fleet's sessions", |client| {
        client
            .query(FLEET_TIMELINE_SESSIONS_SQL)
            .fetch_all::<TimelineSessionRow>()
    });
    let endpoints = state.read("read the fleet's endpoints", |client| {
        client
            .query(FLEET_TIMELINE_ENDPOINTS_SQL)
            .fetch_all::<TimelineEndpointRow>()
    });
    let (credentials, sessions, endpoints, ()) =
        tokio::try_join!(credentials, sessions, endpoints, traffic.read(state))?;
    Ok(FleetTimeline::join(
        at,
        credentials,
        sessions,
        endpoints,
        &traffic,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_of_each_second_is_kept_in_order() {
        let mut times = vec![3_000_001, 1_500_000, 1_000_000, 3_999_999, 1_999_999, 7];
        keep_latest_per_second(&mut times);
        assert_eq!(times, [7, 1_999_999, 3_999_999]);
        let mut empty: Vec<i64> = Vec::new();
        keep_latest_per_second(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn a_read_copies_only_the_credentials_it_changes() {
        let mut traffic = TrafficTimes::default();
        traffic.add("cr_a".to_owned(), 2_000_000);
        traffic.add("cr_b".to_owned(), 5_000_000);
        traffic.settle();
        let (held_a, held_b) = (traffic.of("cr_a"), traffic.of("cr_b"));
        traffic.add("cr_a".to_owned(), 1_000_001);
        traffic.add("cr_a".to_owned(), 2_500_000);
        traffic.settle();
        assert_eq!(*traffic.of("cr_a"), [1_000_001, 2_500_000]);
        // A timeline built before keeps what it read.
        assert_eq!(*held_a, [2_000_000]);
        assert!(Arc::ptr_eq(&held_b, &traffic.of("cr_b")));
        assert!(traffic.of("cr_z").is_empty());
    }
}
