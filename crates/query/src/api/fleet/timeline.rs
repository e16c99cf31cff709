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
//! The traffic is a [`TrafficLog`] (module `traffic`): every credential's latest traffic per
//! second, bounded by `--fleet-timeline-max-mib`; an `at` before its horizon (the oldest second it
//! still holds) is not answered here but read from ClickHouse. The control rows take what the 0013
//! tables hold (a few hundred bytes per credential, session and endpoint).

use std::borrow::Cow;
use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;

use super::traffic::{TrafficLog, TrafficView};
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
/// Placeholders: since (Unix seconds), parts, part.
pub(in crate::api) const FLEET_TRAFFIC_SECONDS_SQL: &str =
    include_str!("../../../sql/fleet_traffic_seconds.sql");

/// Refreshes between two whole reads of the traffic (an hour at the 10 s interval): they pick up
/// rows an incremental read missed (an insert that became visible more than
/// [`INSERT_SLACK_SECS`] after its view ran).
const FULL_TRAFFIC_READ_EVERY: u64 = 360;

/// Queries a whole read of the traffic is split into (by credential), each within the query
/// deadline: about 600k rows each for the 10M of benches/fleet.rs.
const WHOLE_READ_PARTS: u64 = 16;

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

/// The whole fleet over time, as ClickHouse held it when a refresh began. Laid out for one pass
/// over every credential per request: the sessions, endpoints and traffic times are contiguous,
/// in credential order (a request reads them front to back instead of chasing a pointer per
/// credential).
#[derive(Debug)]
pub struct FleetTimeline {
    /// The refresh's start (Unix seconds): the timeline answers any `at` up to it.
    at: u32,
    /// In owner, credential order.
    credentials: Vec<TimelineCredential>,
    /// Each credential's sessions in turn, by session id (the order agents are listed in).
    sessions: Vec<SessionSpan>,
    /// What each session's start event says (`endpoints` unused), parallel to `sessions`.
    session_rows: Vec<OnlineSessionRow>,
    /// Each session's endpoints in turn: creation, deletion (0 when never).
    endpoints: Vec<(i64, i64)>,
    /// The traffic as the refresh read it.
    traffic: TrafficView,
    /// Each credential's latest traffic before `at`, by traffic index (what most requests ask);
    /// `None` when `at` is before the traffic's horizon.
    latest_at: Option<Vec<i64>>,
}

#[derive(Debug)]
struct TimelineCredential {
    /// Its `last_traffic_us` is not used (see `traffic`).
    row: CredentialRow,
    /// 0 when never.
    deleted_us: i64,
    /// Its bot user's deletion; 0 when never.
    owner_deleted_us: i64,
    /// Its range of [`FleetTimeline::sessions`].
    sessions: (u32, u32),
    /// Its index in [`FleetTimeline::traffic`]; [`NO_TRAFFIC`] when it has none.
    traffic: u32,
}

/// The traffic index of a credential without traffic.
const NO_TRAFFIC: u32 = u32::MAX;

/// One session over time.
#[derive(Debug, Clone, Copy)]
struct SessionSpan {
    start_us: i64,
    /// 0 when it never stopped.
    stop_us: i64,
    /// Its range of [`FleetTimeline::endpoints`].
    endpoints: (u32, u32),
}

impl SessionSpan {
    /// Whether it is online at `at_us`.
    fn online_at(&self, at_us: i64) -> bool {
        self.start_us < at_us && (self.stop_us == 0 || self.stop_us >= at_us)
    }
}

/// `range` of `items` (a range the timeline recorded).
fn slice<T>(items: &[T], range: (u32, u32)) -> &[T] {
    &items[range.0 as usize..range.1 as usize]
}

/// The range from `start` to the end of `items`.
fn range_from<T>(start: usize, items: &[T]) -> (u32, u32) {
    let index = |i: usize| u32::try_from(i).expect("fewer than 4 billion timeline items");
    (index(start), index(items.len()))
}

impl FleetTimeline {
    /// The instant (Unix seconds) up to which it answers.
    pub fn at(&self) -> u32 {
        self.at
    }

    /// The first second whose `at` it answers (its traffic's horizon).
    pub fn horizon(&self) -> u32 {
        self.traffic.horizon()
    }

    /// Each credential's latest traffic before second `at` (µs, by traffic index), when `at` is
    /// within the timeline: from its horizon to its refresh.
    pub(super) fn traffic_at(&self, at: u32) -> Option<Cow<'_, [i64]>> {
        if at == self.at {
            return self.latest_at.as_deref().map(Cow::Borrowed);
        }
        if at > self.at {
            return None;
        }
        self.traffic.latest_before(at).map(Cow::Owned)
    }

    fn endpoints_at(&self, session: &SessionSpan, at_us: i64) -> u64 {
        slice(&self.endpoints, session.endpoints)
            .iter()
            .filter(|(created, deleted)| *created < at_us && (*deleted == 0 || *deleted >= at_us))
            .count() as u64
    }

    /// The sessions of `range` online at `at_us`, as `fleet_online_sessions.sql` reads them.
    pub(super) fn online_rows(&self, range: (u32, u32), at_us: i64) -> Vec<OnlineSessionRow> {
        let first = range.0 as usize;
        slice(&self.sessions, range)
            .iter()
            .enumerate()
            .filter(|(_, s)| s.online_at(at_us))
            .map(|(i, s)| OnlineSessionRow {
                endpoints: self.endpoints_at(s, at_us),
                ..self.session_rows[first + i].clone()
            })
            .collect()
    }

    /// The credentials `keep` keeps in the fleet at `at_us` (created before it, neither it nor
    /// its bot user deleted before it), in owner, credential order, as of `at_us`, with the
    /// latest traffic of [`Self::traffic_at`] for its second.
    pub(super) fn credentials_at<'a>(
        &'a self,
        at_us: i64,
        latest_traffic: &'a [i64],
        keep: impl Fn(&CredentialRow) -> bool + 'a,
    ) -> impl Iterator<Item = CredentialAt<'a>> {
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
                for s in slice(&self.sessions, c.sessions)
                    .iter()
                    .filter(|s| s.start_us < at_us)
                {
                    sessions.sessions += 1;
                    sessions.last_start_us = sessions.last_start_us.max(s.start_us);
                    if s.stop_us < at_us {
                        sessions.last_stop_us = sessions.last_stop_us.max(s.stop_us);
                    }
                    if s.online_at(at_us) {
                        agents_online += 1;
                        endpoints_online += self.endpoints_at(s, at_us);
                    }
                }
                let last_traffic_us = latest_traffic.get(c.traffic as usize).copied().unwrap_or(0);
                CredentialAt {
                    credential: &c.row,
                    last_traffic_us,
                    sessions,
                    agents_online,
                    endpoints_online,
                    agents: AgentsAt::Timeline(self, c.sessions),
                }
            })
    }

    /// Joins the rows read by a refresh begun at `at`.
    fn join(
        at: u32,
        credentials: Vec<TimelineCredentialRow>,
        sessions: Vec<TimelineSessionRow>,
        endpoints: Vec<TimelineEndpointRow>,
        traffic: &TrafficLog,
    ) -> Self {
        let mut by_session: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
        for e in endpoints {
            by_session
                .entry(e.session_id)
                .or_default()
                .push((e.created_us, e.deleted_us));
        }
        // In credential, session id order (the SQL's): each credential's are one run.
        let mut runs: HashMap<String, (usize, usize)> = HashMap::new();
        for (i, s) in sessions.iter().enumerate() {
            runs.entry(s.credential_id.clone())
                .and_modify(|run| run.1 = i + 1)
                .or_insert((i, i + 1));
        }
        let mut sessions: Vec<Option<TimelineSessionRow>> =
            sessions.into_iter().map(Some).collect();
        let mut timeline = Self {
            at,
            credentials: Vec::with_capacity(credentials.len()),
            sessions: Vec::new(),
            session_rows: Vec::new(),
            endpoints: Vec::new(),
            traffic: traffic.view(),
            latest_at: None,
        };
        for c in credentials {
            let first_session = timeline.sessions.len();
            if let Some(&(from, to)) = runs.get(&c.credential_id) {
                for s in sessions[from..to].iter_mut().filter_map(Option::take) {
                    let first_endpoint = timeline.endpoints.len();
                    timeline
                        .endpoints
                        .extend(by_session.remove(&s.session_id).unwrap_or_default());
                    timeline.sessions.push(SessionSpan {
                        start_us: s.start_us,
                        stop_us: s.stop_us,
                        endpoints: range_from(first_endpoint, &timeline.endpoints),
                    });
                    timeline.session_rows.push(OnlineSessionRow {
                        session_id: s.session_id,
                        credential_id: s.credential_id,
                        start_us: s.start_us,
                        region: s.region,
                        os: s.os,
                        user_agent: s.user_agent,
                        endpoints: 0,
                    });
                }
            }
            timeline.credentials.push(TimelineCredential {
                sessions: range_from(first_session, &timeline.sessions),
                traffic: traffic
                    .credential_index(&c.credential_id)
                    .unwrap_or(NO_TRAFFIC),
                deleted_us: c.deleted_us,
                owner_deleted_us: c.owner_deleted_us,
                row: CredentialRow {
                    credential_id: c.credential_id,
                    kind: c.kind,
                    owner_id: c.owner_id,
                    created_us: c.created_us,
                    last_traffic_us: 0,
                },
            });
        }
        timeline.latest_at = timeline.traffic.latest_before(at);
        timeline
    }
}

/// The fleet's traffic, kept between refreshes and read incrementally.
#[derive(Debug)]
pub(crate) struct TrafficReader {
    log: TrafficLog,
    /// ClickHouse's clock when the previous read began; `None` before the first.
    read_since: Option<u32>,
    reads: u64,
}

impl TrafficReader {
    /// Nothing read yet; the log keeps at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            log: TrafficLog::new(max_bytes),
            read_since: None,
            reads: 0,
        }
    }

    /// Reads the rows inserted since the previous read (all of them the first time and every
    /// [`FULL_TRAFFIC_READ_EVERY`] reads) into the log.
    async fn read(&mut self, state: &AppState) -> crate::Result<()> {
        let clickhouse_now: u32 = state
            .read("read clickhouse's clock", |client| {
                client.query("SELECT toUInt32(now())").fetch_one::<u32>()
            })
            .await?;
        let (since, parts) = match self.read_since {
            Some(previous) if !self.reads.is_multiple_of(FULL_TRAFFIC_READ_EVERY) => {
                (previous.saturating_sub(INSERT_SLACK_SECS), 1)
            }
            _ => (0, WHOLE_READ_PARTS),
        };
        for part in 0..parts {
            let mut rows = Vec::new();
            let read = state
                .read("read the fleet's traffic by second", |client| {
                    let rows = &mut rows;
                    async move {
                        let mut cursor = client
                            .query(FLEET_TRAFFIC_SECONDS_SQL)
                            .bind(since)
                            .bind(parts)
                            .bind(part)
                            .fetch::<TrafficSecondRow>()?;
                        while let Some(row) = cursor.next().await? {
                            rows.push((row.credential_id, row.last_us));
                        }
                        Ok(())
                    }
                })
                .await;
            // What was read is kept (a maximum is the same added twice); the next read starts
            // where this one did.
            self.log.add(rows);
            read?;
        }
        self.read_since = Some(clickhouse_now);
        self.reads += 1;
        metrics::gauge!(super::fleet_gauge::TIMELINE_TRAFFIC_BYTES).set(self.log.bytes() as f64);
        metrics::gauge!(super::fleet_gauge::TIMELINE_HORIZON).set(f64::from(self.log.horizon()));
        tracing::debug!(
            since,
            credentials = self.log.credentials(),
            bytes = self.log.bytes(),
            horizon = self.log.horizon(),
            "read the fleet's traffic"
        );
        Ok(())
    }
}

/// Reads the whole fleet again (and the traffic inserted since the previous read) into a
/// timeline that answers any `at` up to now.
pub(super) async fn read_timeline(state: &AppState) -> Result<FleetTimeline, ApiError> {
    let at = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX);
    let traffic = state.fleet_traffic();
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
        &traffic.log,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, credential: &str, start_us: i64, stop_us: i64) -> TimelineSessionRow {
        TimelineSessionRow {
            session_id: id.to_owned(),
            credential_id: credential.to_owned(),
            start_us,
            stop_us,
            region: "eu".to_owned(),
            os: "linux".to_owned(),
            user_agent: "ngrok/3.18.4".to_owned(),
        }
    }

    #[test]
    fn each_credential_reads_its_own_sessions_endpoints_and_traffic() {
        let credential = |id: &str, owner: &str| TimelineCredentialRow {
            credential_id: id.to_owned(),
            kind: "authtoken".to_owned(),
            owner_id: owner.to_owned(),
            created_us: 1,
            deleted_us: 0,
            owner_deleted_us: 0,
        };
        let mut traffic = TrafficLog::new(usize::MAX);
        traffic.add([
            ("cr_b".to_owned(), 7_000_000),
            ("cr_b".to_owned(), 9_000_000),
        ]);
        let timeline = FleetTimeline::join(
            100,
            vec![credential("cr_b", "bot_1"), credential("cr_a", "bot_2")],
            // In the SQL's order (credential, session id); cr_z is not in the fleet.
            vec![
                session("ts_1", "cr_a", 2_000_000, 0),
                session("ts_2", "cr_a", 3_000_000, 8_000_000),
                session("ts_3", "cr_b", 4_000_000, 0),
                session("ts_9", "cr_z", 4_000_000, 0),
            ],
            vec![
                TimelineEndpointRow {
                    session_id: "ts_2".to_owned(),
                    created_us: 3_000_001,
                    deleted_us: 0,
                },
                TimelineEndpointRow {
                    session_id: "ts_3".to_owned(),
                    created_us: 4_000_001,
                    deleted_us: 6_000_000,
                },
            ],
            &traffic,
        );
        let at = |at_us: i64| {
            let second = u32::try_from(at_us / 1_000_000).unwrap();
            let latest = timeline.traffic_at(second).expect("within the timeline");
            timeline
                .credentials_at(at_us, &latest, |_| true)
                .map(|c| {
                    (
                        c.credential.credential_id.clone(),
                        c.last_traffic_us,
                        c.sessions.sessions,
                        c.agents_online,
                        c.endpoints_online,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            at(5_000_000),
            [
                ("cr_b".to_owned(), 0, 1, 1, 1),
                ("cr_a".to_owned(), 0, 2, 2, 1)
            ]
        );
        // ts_3's endpoint deleted at 6 s, ts_2 stopped at 8 s; cr_b's traffic at 7 s and 9 s.
        assert_eq!(
            at(9_000_000),
            [
                ("cr_b".to_owned(), 7_000_000, 1, 1, 0),
                ("cr_a".to_owned(), 0, 2, 1, 0)
            ]
        );
        let online = timeline.online_rows(timeline.credentials[1].sessions, 5_000_000);
        assert_eq!(
            online
                .iter()
                .map(|s| (s.session_id.as_str(), s.endpoints))
                .collect::<Vec<_>>(),
            [("ts_1", 0), ("ts_2", 1)]
        );
    }
}
