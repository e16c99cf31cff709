//! The usage engine behind the owner, customer and overage reports: attributed usage of a
//! [`Scope`] (owners and/or credentials) per time bucket in a time zone, optionally per credential
//! or endpoint, with agent sessions and session-hours.
//!
//! - Traffic metrics come from `crates/query/sql/usage_buckets.sql`, summed times `sign` (or its
//!   rollup variants, same numbers). A scope's owners count over the whole range, or, for a
//!   customer's bot user whose metadata named the customer for part of it ([`super::tenancy`]),
//!   within spans: `usage_buckets_spans.sql` reads those (the rollup for the quarter hours inside
//!   a span, the raw rows for those a span's end cuts) and sums them with the rest per (local
//!   hour, endpoint, credential) before endpoints and endpoint-hours are counted.
//! - Sessions come from `crates/query/sql/agent_sessions.sql` (the audit log); a session lasts from
//!   its start to its stop, or to the end of the range (and never past now) when it has not
//!   stopped, cut to the spans of a partly counted owner. Its overlap with each bucket, clipped to
//!   the range, is its session-hours there; a session counts in every bucket it overlaps, and once
//!   in the totals.
//! - Bucket boundaries are the ones ClickHouse computes for the same zone (`toStartOfHour`,
//!   `toStartOfDay`, `toStartOfMonth` of `toTimeZone(event_time, tz)`); this module computes the
//!   same starts for sessions, so both line up (a test runs both on the real server).

mod buckets;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::params::{rfc3339_in, Choice, TimeRange};
use super::{ApiError, AppState};
use crate::rows::status;
use buckets::session_buckets;

/// Placeholders: tz, granularity, group, owners, credentials, status, from, to.
const USAGE_BUCKETS_SQL: &str = include_str!("../../sql/usage_buckets.sql");
/// The same query over the rollup, for ranges on whole quarter hours; the same placeholders.
const USAGE_BUCKETS_ROLLUP_SQL: &str = include_str!("../../sql/usage_buckets_rollup.sql");
/// The same query for a range with ragged ends: the rollup for its whole quarter hours, the raw
/// rows for the edges; see the file for its placeholders.
const USAGE_BUCKETS_RAGGED_SQL: &str = include_str!("../../sql/usage_buckets_ragged.sql");
/// The same query for a scope with partly counted owners: the ragged query for the rest, the raw
/// rows within their spans for them; see the file for its placeholders.
const USAGE_BUCKETS_SPANS_SQL: &str = include_str!("../../sql/usage_buckets_spans.sql");
/// The `usage_buckets.sql` group of (credential, endpoint) pairs, keyed `"<credential> <endpoint>"`.
pub(super) const GROUP_CREDENTIAL_ENDPOINT: &str = "credential_endpoint";
/// Placeholders: to (seconds), all, owners, credentials, from (microseconds).
const AGENT_SESSIONS_SQL: &str = include_str!("../../sql/agent_sessions.sql");

const MICROS_PER_HOUR: f64 = 3_600_000_000.0;

/// How long a bucket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Granularity {
    /// A local hour.
    Hour,
    /// A local day.
    Day,
    /// A local calendar month.
    Month,
}

impl Choice for Granularity {
    const ALL: &'static [(&'static str, Self)] = &[
        ("hour", Self::Hour),
        ("day", Self::Day),
        ("month", Self::Month),
    ];
}

/// What a report may be split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupBy {
    /// Per credential.
    Credential,
    /// Per endpoint.
    Endpoint,
}

impl Choice for GroupBy {
    const ALL: &'static [(&'static str, Self)] = &[
        ("credential", Self::Credential),
        ("endpoint", Self::Endpoint),
    ];
}

/// Whose usage: rows whose owner or credential is listed, over the whole range; and rows of the
/// partly counted owners (or of their credentials) whose event time is in one of their spans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Scope {
    /// Owner ids, counted over the whole range.
    pub(super) owners: Vec<String>,
    /// Credential ids, counted over the whole range.
    pub(super) credentials: Vec<String>,
    /// Owners counted in some spans of the range only (a customer's bot user whose metadata named
    /// the customer for part of it). A row matching `owners` or `credentials` counts once, there.
    pub(super) partial: Vec<PartialOwner>,
}

impl Scope {
    /// One owner.
    pub(super) fn owner(owner_id: &str) -> Self {
        Self {
            owners: vec![owner_id.to_owned()],
            ..Self::default()
        }
    }

    /// Whether a row or session of this owner and credential counts over the whole range.
    fn whole(&self, owner_id: &str, credential_id: &str) -> bool {
        self.owners.iter().any(|o| o == owner_id)
            || self.credentials.iter().any(|c| c == credential_id)
    }
}

/// An owner whose usage counts within some spans only. Its credentials' usage follows it: the
/// owner of every attributed row and session of a credential is the credential's owner
/// (ownership never changes), so rows and sessions are matched by owner id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartialOwner {
    pub(super) owner_id: String,
    /// Disjoint, in order, inside the range.
    pub(super) spans: Vec<Span>,
}

/// `[from_us, to_us)`, Unix microseconds as `event_time_us` counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) from_us: i64,
    pub(super) to_us: i64,
}

impl Span {
    /// The whole of a range.
    pub(super) fn of(range: TimeRange) -> Self {
        Self {
            from_us: range.start_us(),
            to_us: range.end_us(),
        }
    }
}

/// The binds of `usage_buckets_spans.sql` for the partly counted owners.
#[derive(Debug, Default, PartialEq, Eq)]
struct SpanBinds {
    /// Their ids.
    owners: Vec<String>,
    /// Every span, as owner, start and end.
    span_owners: Vec<String>,
    span_from_us: Vec<i64>,
    span_to_us: Vec<i64>,
    /// The quarter hours (Unix seconds of their start, in order, once each) that a span's end cuts:
    /// the only ones read from the raw rows, the rest from the rollup.
    cut_quarters: Vec<i64>,
}

impl SpanBinds {
    fn of(partial: &[PartialOwner]) -> Self {
        const QUARTER_US: i64 = 900 * 1_000_000;
        let mut binds = Self::default();
        let mut cut = BTreeSet::new();
        for owner in partial {
            binds.owners.push(owner.owner_id.clone());
            for span in &owner.spans {
                binds.span_owners.push(owner.owner_id.clone());
                binds.span_from_us.push(span.from_us);
                binds.span_to_us.push(span.to_us);
                for end_us in [span.from_us, span.to_us] {
                    if end_us.rem_euclid(QUARTER_US) != 0 {
                        cut.insert(end_us.div_euclid(QUARTER_US) * 900);
                    }
                }
            }
        }
        binds.cut_quarters = cut.into_iter().collect();
        binds
    }
}

/// Sums over a bucket or a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageMetrics {
    /// Bytes that arrived at the endpoints (connection events).
    pub bytes_in: u64,
    /// Bytes that left the endpoints (connection events): ngrok's "data transfer out".
    pub bytes_out: u64,
    /// HTTP requests.
    pub http_requests: u64,
    /// TCP connections.
    pub tcp_connections: u64,
    /// Distinct endpoints with usage.
    #[serde(default)]
    pub endpoints: u64,
    /// Endpoint-hours with outgoing bytes (an endpoint active in an hour of the report's time
    /// zone counts once for that hour), which is how ngrok bills endpoints.
    #[serde(default)]
    pub active_endpoint_hours: u64,
    /// Agent sessions running at some time in the bucket. Absent per endpoint (a session serves
    /// several endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_sessions: Option<u64>,
    /// Hours of agent sessions within the bucket. Absent per endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_hours: Option<f64>,
}

/// One bucket of usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageBucket {
    /// Start of the bucket, RFC 3339 (in the report's time zone: `Z` for UTC, else its offset).
    pub start: String,
    /// The sums.
    #[serde(flatten)]
    pub metrics: UsageMetrics,
}

/// Usage of one credential, endpoint or metadata value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageGroup {
    /// The credential or endpoint id, or the metadata value (`(none)` for credentials without
    /// one).
    pub key: String,
    /// Its buckets with traffic, in order.
    pub buckets: Vec<UsageBucket>,
    /// Its buckets with agent sessions but no traffic, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_only_buckets: Vec<UsageBucket>,
    /// Its sums over the range.
    pub totals: UsageMetrics,
    /// A credential's description as of the end of the range (`group_by=credential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A credential's metadata as of the end of the range, as ngrok sends it (a string;
    /// `group_by=credential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// A report asked for.
#[derive(Debug, Clone)]
pub(super) struct SeriesSpec {
    pub(super) scope: Scope,
    pub(super) range: TimeRange,
    pub(super) tz: Tz,
    pub(super) granularity: Granularity,
    pub(super) group_by: Option<GroupBy>,
}

/// What the engine answers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Series {
    /// Buckets with traffic (what the usage report always listed), with their session figures.
    pub(super) buckets: Vec<UsageBucket>,
    /// Buckets with sessions and no traffic.
    pub(super) session_only: Vec<UsageBucket>,
    pub(super) totals: UsageMetrics,
    pub(super) groups: Option<Vec<UsageGroup>>,
    /// The sessions counted, clipped to the range.
    pub(super) sessions: Vec<Session>,
}

/// One row of `usage_buckets.sql`, positional.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct BucketRow {
    pub(super) bucket_start: u32,
    pub(super) group_key: String,
    pub(super) sum_bytes_in: u64,
    pub(super) sum_bytes_out: u64,
    pub(super) sum_http_requests: u64,
    pub(super) sum_tcp_connections: u64,
    pub(super) endpoints: u64,
    pub(super) active_endpoint_hours: u64,
}

impl BucketRow {
    pub(super) fn metrics(&self) -> UsageMetrics {
        UsageMetrics {
            bytes_in: self.sum_bytes_in,
            bytes_out: self.sum_bytes_out,
            http_requests: self.sum_http_requests,
            tcp_connections: self.sum_tcp_connections,
            endpoints: self.endpoints,
            active_endpoint_hours: self.active_endpoint_hours,
            agent_sessions: None,
            session_hours: None,
        }
    }
}

/// One row of `agent_sessions.sql`, positional.
#[derive(Debug, Clone, Row, Deserialize)]
struct SessionRow {
    session_id: String,
    credential_id: String,
    owner_id: String,
    starts: u64,
    start_us: i64,
    stops: u64,
    stop_us: i64,
    started_at: String,
}

/// A session clipped to a range: `[start_us, end_us)`, non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) id: String,
    pub(super) credential_id: String,
    pub(super) owner_id: String,
    pub(super) start_us: i64,
    pub(super) end_us: i64,
}

impl Session {
    /// Its length in microseconds.
    pub(super) fn micros(&self) -> i64 {
        self.end_us - self.start_us
    }

    /// Its length in hours.
    pub(super) fn hours(&self) -> f64 {
        hours(self.micros())
    }
}

/// Which sessions to read.
#[derive(Debug, Clone, Copy)]
pub(super) enum SessionScope<'a> {
    /// Every owner's.
    All,
    /// Those of these owners or credentials.
    Of(&'a Scope),
}

/// Runs `usage_buckets_spans.sql` when the scope has partly counted owners; else
/// `usage_buckets_rollup.sql` when the range is on quarter hours; `usage_buckets_ragged.sql`
/// (rollup for the whole quarter hours, raw rows for the edges) when it holds at least one;
/// else `usage_buckets.sql`. All give the answer of the raw rows.
pub(super) async fn fetch_buckets(
    state: &AppState,
    scope: &Scope,
    range: TimeRange,
    tz: Tz,
    granularity: Option<Granularity>,
    group: Option<&str>,
) -> Result<Vec<BucketRow>, ApiError> {
    let granularity = granularity.map_or("all", |g| g.name());
    let group = group.unwrap_or("");
    let query = |client: clickhouse::Client| {
        let head = |sql: &str| {
            client
                .query(sql)
                .bind(tz.name())
                .bind(granularity)
                .bind(group)
        };
        let filter = |query: clickhouse::query::Query| {
            query
                .bind(&scope.owners)
                .bind(&scope.credentials)
                .bind(status::ATTRIBUTED)
        };
        if !scope.partial.is_empty() {
            // An aligned range is all middle; one without a whole quarter hour, all edge.
            let middle = if range.on_quarter_hours() {
                range
            } else {
                range.aligned_middle().unwrap_or(TimeRange {
                    from: range.from,
                    to: range.from,
                })
            };
            let spans = SpanBinds::of(&scope.partial);
            return filter(
                filter(head(USAGE_BUCKETS_SPANS_SQL).bind(tz.name()))
                    .bind(range.from)
                    .bind(middle.from)
                    .bind(middle.to)
                    .bind(range.to)
                    .bind(tz.name()),
            )
            .bind(middle.from)
            .bind(middle.to)
            .bind(tz.name())
            .bind(&spans.owners)
            .bind(&scope.owners)
            .bind(&scope.credentials)
            .bind(status::ATTRIBUTED)
            .bind(range.from)
            .bind(range.to)
            .bind(&spans.cut_quarters)
            .bind(&spans.span_owners)
            .bind(&spans.span_from_us)
            .bind(&spans.span_to_us)
            .bind(tz.name())
            .bind(&spans.owners)
            .bind(&scope.owners)
            .bind(&scope.credentials)
            .bind(status::ATTRIBUTED)
            .bind(range.from)
            .bind(range.to)
            .bind(&spans.span_owners)
            .bind(&spans.span_from_us)
            .bind(&spans.span_to_us);
        }
        match range.aligned_middle() {
            _ if range.on_quarter_hours() => filter(head(USAGE_BUCKETS_ROLLUP_SQL))
                .bind(range.from)
                .bind(range.to),
            // The raw edges ([from, middle) and [middle end, to)), then the rollup's middle.
            Some(middle) => filter(
                filter(head(USAGE_BUCKETS_RAGGED_SQL).bind(tz.name()))
                    .bind(range.from)
                    .bind(middle.from)
                    .bind(middle.to)
                    .bind(range.to)
                    .bind(tz.name()),
            )
            .bind(middle.from)
            .bind(middle.to),
            None => filter(head(USAGE_BUCKETS_SQL))
                .bind(range.from)
                .bind(range.to),
        }
    };
    state
        .read(
            format!("read usage per {granularity} of {scope:?}"),
            |client| query(client).fetch_all::<BucketRow>(),
        )
        .await
        .map_err(|err| timezone_error(err, tz))
}

/// Runs `agent_sessions.sql` and clips the sessions to `range` and to now.
pub(super) async fn fetch_sessions(
    state: &AppState,
    scope: SessionScope<'_>,
    range: TimeRange,
) -> Result<Vec<Session>, ApiError> {
    let (all, owners, credentials) = match scope {
        SessionScope::All => (1_u8, Vec::new(), Vec::new()),
        // The partly counted owners' sessions too, cut to their spans below.
        SessionScope::Of(scope) => (
            0_u8,
            [scope.owners.clone(), SpanBinds::of(&scope.partial).owners].concat(),
            scope.credentials.clone(),
        ),
    };
    let rows = state
        .read(
            format!("read agent sessions of owners {owners:?} and credentials {credentials:?}"),
            |client| {
                client
                    .query(AGENT_SESSIONS_SQL)
                    .bind(range.to)
                    .bind(all)
                    .bind(&owners)
                    .bind(&credentials)
                    .bind(range.start_us())
                    .fetch_all::<SessionRow>()
            },
        )
        .await?;
    let sessions = clip_sessions(rows, range, Utc::now().timestamp_micros());
    Ok(match scope {
        SessionScope::All => sessions,
        SessionScope::Of(scope) => cut_to_spans(sessions, scope),
    })
}

/// The sessions as `scope` counts them: whole for its whole-range owners and credentials; for a
/// partly counted owner, the pieces within its spans (one session may leave several pieces, all
/// with its id); none for anyone else.
fn cut_to_spans(sessions: Vec<Session>, scope: &Scope) -> Vec<Session> {
    let mut out = Vec::with_capacity(sessions.len());
    for session in sessions {
        if scope.whole(&session.owner_id, &session.credential_id) {
            out.push(session);
            continue;
        }
        let Some(owner) = scope
            .partial
            .iter()
            .find(|p| p.owner_id == session.owner_id)
        else {
            continue;
        };
        for span in &owner.spans {
            let (start_us, end_us) = (
                session.start_us.max(span.from_us),
                session.end_us.min(span.to_us),
            );
            if start_us < end_us {
                out.push(Session {
                    start_us,
                    end_us,
                    ..session.clone()
                });
            }
        }
    }
    out
}

/// A ClickHouse that does not know a zone chrono-tz knows (an older tz database) is the client's
/// problem to hear about, not a 503.
fn timezone_error(err: crate::Error, tz: Tz) -> ApiError {
    if let crate::Error::ClickHouse { source, .. } = &err {
        let text = source.to_string();
        if text.contains("time zone") || text.contains("timezone") {
            return ApiError::bad(
                "invalid_parameter",
                "timezone",
                format!(
                    "query parameter timezone: {:?} is not known to the usage store's time zone \
                     database; use another name for the same zone",
                    tz.name()
                ),
            );
        }
    }
    ApiError::from(err)
}

/// Sessions as `[start, stop or min(to, now))` ∩ `[from, to)`; empty ones and those whose start is
/// unknown (a stop without start and without `started_at`) are dropped.
fn clip_sessions(rows: Vec<SessionRow>, range: TimeRange, now_us: i64) -> Vec<Session> {
    let to_us = range.end_us().min(now_us.max(range.start_us()));
    rows.into_iter()
        .filter_map(|row| {
            let start = if row.starts > 0 {
                row.start_us
            } else {
                DateTime::parse_from_rfc3339(&row.started_at)
                    .ok()?
                    .timestamp_micros()
            };
            let stop = if row.stops > 0 { row.stop_us } else { to_us };
            let (start_us, end_us) = (start.max(range.start_us()), stop.min(to_us));
            (start_us < end_us).then_some(Session {
                id: row.session_id,
                credential_id: row.credential_id,
                owner_id: row.owner_id,
                start_us,
                end_us,
            })
        })
        .collect()
}

fn hours(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_HOUR
}

/// Runs the report: buckets and totals (and per group when asked), sessions, all concurrently.
pub(super) async fn series(state: &AppState, spec: &SeriesSpec) -> Result<Series, ApiError> {
    let SeriesSpec {
        scope,
        range,
        tz,
        granularity,
        ..
    } = spec;
    let (buckets, totals, grouped, grouped_totals, sessions) = tokio::try_join!(
        fetch_buckets(state, scope, *range, *tz, Some(*granularity), None),
        fetch_buckets(state, scope, *range, *tz, None, None),
        fetch_grouped(state, spec, Some(*granularity)),
        fetch_grouped(state, spec, None),
        fetch_sessions(state, SessionScope::Of(scope), *range),
    )?;
    Ok(assemble(
        spec,
        buckets,
        totals,
        grouped,
        grouped_totals,
        sessions,
    ))
}

/// [`fetch_buckets`] per the spec's group, per bucket of `granularity` (or over the range);
/// nothing when the spec has no group.
async fn fetch_grouped(
    state: &AppState,
    spec: &SeriesSpec,
    granularity: Option<Granularity>,
) -> Result<Vec<BucketRow>, ApiError> {
    match spec.group_by {
        Some(g) => {
            fetch_buckets(
                state,
                &spec.scope,
                spec.range,
                spec.tz,
                granularity,
                Some(g.name()),
            )
            .await
        }
        None => Ok(Vec::new()),
    }
}

/// Merges the SQL rows and the sessions (pure: no IO, no clock).
fn assemble(
    spec: &SeriesSpec,
    buckets: Vec<BucketRow>,
    totals: Vec<BucketRow>,
    grouped: Vec<BucketRow>,
    grouped_totals: Vec<BucketRow>,
    sessions: Vec<Session>,
) -> Series {
    let all: Vec<&Session> = sessions.iter().collect();
    let (series_buckets, session_only) = with_sessions(spec, buckets.iter().collect(), &all);
    let series_totals = totals_with_sessions(totals.first(), &all);
    let groups = spec.group_by.map(|group_by| {
        let mut keys: BTreeSet<&str> = grouped.iter().map(|r| r.group_key.as_str()).collect();
        if group_by == GroupBy::Credential {
            keys.extend(sessions.iter().map(|s| s.credential_id.as_str()));
        }
        keys.into_iter()
            .map(|key| group(spec, group_by, key, &grouped, &grouped_totals, &sessions))
            .collect()
    });
    Series {
        buckets: series_buckets,
        session_only,
        totals: series_totals,
        groups,
        sessions,
    }
}

/// Traffic buckets with the sessions' figures, as (buckets with traffic, buckets with sessions
/// only), each in order.
fn with_sessions(
    spec: &SeriesSpec,
    traffic: Vec<&BucketRow>,
    sessions: &[&Session],
) -> (Vec<UsageBucket>, Vec<UsageBucket>) {
    let per_bucket = session_buckets(sessions.iter().copied(), spec.granularity, spec.tz);
    let mut merged: BTreeMap<u32, (bool, UsageMetrics)> = BTreeMap::new();
    for row in traffic {
        merged.insert(row.bucket_start, (true, row.metrics()));
    }
    for (start, (count, micros)) in per_bucket {
        let slot = &mut merged.entry(start).or_default().1;
        slot.agent_sessions = Some(count);
        slot.session_hours = Some(hours(micros));
    }
    let (mut with_traffic, mut session_only) = (Vec::new(), Vec::new());
    for (start, (has_traffic, mut metrics)) in merged {
        metrics.agent_sessions.get_or_insert(0);
        metrics.session_hours.get_or_insert(0.0);
        let bucket = UsageBucket {
            start: rfc3339_in(start, spec.tz),
            metrics,
        };
        if has_traffic {
            with_traffic.push(bucket);
        } else {
            session_only.push(bucket);
        }
    }
    (with_traffic, session_only)
}

/// The traffic totals with the sessions counted once each.
fn totals_with_sessions(traffic: Option<&BucketRow>, sessions: &[&Session]) -> UsageMetrics {
    let mut metrics = traffic.map(BucketRow::metrics).unwrap_or_default();
    let distinct: BTreeSet<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
    metrics.agent_sessions = Some(distinct.len() as u64);
    metrics.session_hours = Some(hours(sessions.iter().map(|s| s.micros()).sum()));
    metrics
}

/// The group `key`: a credential with its sessions, or an endpoint without.
fn group(
    spec: &SeriesSpec,
    group_by: GroupBy,
    key: &str,
    grouped: &[BucketRow],
    grouped_totals: &[BucketRow],
    sessions: &[Session],
) -> UsageGroup {
    let traffic: Vec<&BucketRow> = grouped.iter().filter(|r| r.group_key == key).collect();
    let total = grouped_totals.iter().find(|r| r.group_key == key);
    match group_by {
        GroupBy::Credential => {
            let mine: Vec<&Session> = sessions.iter().filter(|s| s.credential_id == key).collect();
            let (buckets, session_only_buckets) = with_sessions(spec, traffic, &mine);
            UsageGroup {
                key: key.to_owned(),
                buckets,
                session_only_buckets,
                totals: totals_with_sessions(total, &mine),
                description: None,
                metadata: None,
            }
        }
        GroupBy::Endpoint => UsageGroup {
            key: key.to_owned(),
            buckets: traffic
                .into_iter()
                .map(|row| UsageBucket {
                    start: rfc3339_in(row.bucket_start, spec.tz),
                    metrics: row.metrics(),
                })
                .collect(),
            session_only_buckets: Vec::new(),
            totals: total.map(BucketRow::metrics).unwrap_or_default(),
            description: None,
            metadata: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::buckets::{bucket_start, next_bucket};
    use super::*;

    fn secs(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp()
    }

    fn us(rfc3339: &str) -> i64 {
        secs(rfc3339) * 1_000_000
    }

    #[test]
    fn every_report_sql_has_as_many_placeholders_as_its_binds() {
        use crate::api::{anomalies, audit, catalog, top};
        for (name, sql, binds) in [
            ("usage_buckets", USAGE_BUCKETS_SQL, 8),
            ("usage_buckets_rollup", USAGE_BUCKETS_ROLLUP_SQL, 8),
            ("usage_buckets_ragged", USAGE_BUCKETS_RAGGED_SQL, 17),
            ("usage_buckets_spans", USAGE_BUCKETS_SPANS_SQL, 38),
            ("owner_totals_rollup", top::OWNER_TOTALS_ROLLUP_SQL, 5),
            ("owner_totals_top", top::OWNER_TOTALS_TOP_SQL, 12),
            ("agent_sessions", AGENT_SESSIONS_SQL, 5),
            ("credentials_catalog", catalog::CREDENTIALS_SQL, 3),
            ("bot_users_catalog", catalog::BOT_USERS_SQL, 2),
            ("bot_user_metadata", catalog::BOT_USER_METADATA_SQL, 3),
            ("principals", catalog::PRINCIPALS_SQL, 0),
            (
                "credential_metadata",
                crate::api::metadata_groups::CREDENTIAL_METADATA_SQL,
                2,
            ),
            (
                "usage_buckets_metadata",
                crate::api::metadata_groups::USAGE_BUCKETS_METADATA_SQL,
                23,
            ),
            ("owner_totals", top::OWNER_TOTALS_SQL, 5),
            ("flagged_usage", anomalies::FLAGGED_SQL, 3),
            ("unresolved_usage", anomalies::UNRESOLVED_SQL, 3),
            ("control_anomalies", anomalies::CONTROL_ANOMALIES_SQL, 3),
            ("audit_events", audit::AUDIT_EVENTS_SQL, 7),
            ("credential_use", audit::CREDENTIAL_USE_SQL, 4),
            ("alerts_audit", crate::alerts::AUDIT_SQL, 7),
        ] {
            // A `?` in a comment would be a placeholder too: the client binds by position.
            assert_eq!(sql.matches('?').count(), binds, "{name}.sql");
        }
    }

    #[test]
    fn bucket_starts_follow_the_zone() {
        let t = secs("2024-05-01T09:10:00Z");
        let kolkata = Tz::Asia__Kolkata;
        assert_eq!(
            bucket_start(t, Granularity::Hour, Tz::UTC),
            secs("2024-05-01T09:00:00Z")
        );
        assert_eq!(
            bucket_start(t, Granularity::Hour, kolkata),
            secs("2024-05-01T08:30:00Z")
        );
        assert_eq!(
            bucket_start(t, Granularity::Hour, Tz::Asia__Kathmandu),
            secs("2024-05-01T08:15:00Z")
        );
        assert_eq!(
            bucket_start(t, Granularity::Day, kolkata),
            secs("2024-04-30T18:30:00Z")
        );
        assert_eq!(
            bucket_start(t, Granularity::Month, kolkata),
            secs("2024-04-30T18:30:00Z")
        );
        assert_eq!(
            bucket_start(t, Granularity::Day, Tz::America__New_York),
            secs("2024-05-01T04:00:00Z")
        );
        // Days across a DST change are 23 or 25 hours long.
        let march = bucket_start(
            secs("2024-03-10T12:00:00Z"),
            Granularity::Day,
            Tz::America__New_York,
        );
        assert_eq!(march, secs("2024-03-10T05:00:00Z"));
        assert_eq!(
            next_bucket(march, Granularity::Day, Tz::America__New_York),
            secs("2024-03-11T04:00:00Z")
        );
        assert_eq!(
            next_bucket(secs("2024-12-01T00:00:00Z"), Granularity::Month, Tz::UTC),
            secs("2025-01-01T00:00:00Z")
        );
    }

    fn row(
        session_id: &str,
        start: Option<&str>,
        stop: Option<&str>,
        started_at: &str,
    ) -> SessionRow {
        SessionRow {
            session_id: session_id.to_owned(),
            credential_id: "cr_1".to_owned(),
            owner_id: "bot_a".to_owned(),
            starts: u64::from(start.is_some()),
            start_us: start.map_or(0, us),
            stops: u64::from(stop.is_some()),
            stop_us: stop.map_or(0, us),
            started_at: started_at.to_owned(),
        }
    }

    #[test]
    fn sessions_are_clipped_to_the_range_and_now() {
        let range = TimeRange {
            from: secs("2024-05-01T00:00:00Z") as u32,
            to: secs("2024-05-02T00:00:00Z") as u32,
        };
        let far_future = us("2030-01-01T00:00:00Z");
        let sessions = clip_sessions(
            vec![
                row(
                    "before",
                    Some("2024-04-30T23:00:00Z"),
                    Some("2024-05-01T00:30:00Z"),
                    "",
                ),
                row("open", Some("2024-05-01T23:00:00Z"), None, ""),
                row(
                    "stop_only",
                    None,
                    Some("2024-05-01T12:00:00Z"),
                    "2024-05-01T11:00:00.5Z",
                ),
                row("unknown_start", None, Some("2024-05-01T12:00:00Z"), ""),
                row(
                    "gone",
                    Some("2024-04-01T00:00:00Z"),
                    Some("2024-04-01T01:00:00Z"),
                    "",
                ),
            ],
            range,
            far_future,
        );
        let spans: Vec<(&str, i64, i64)> = sessions
            .iter()
            .map(|s| (s.id.as_str(), s.start_us, s.end_us))
            .collect();
        assert_eq!(
            spans,
            [
                (
                    "before",
                    us("2024-05-01T00:00:00Z"),
                    us("2024-05-01T00:30:00Z")
                ),
                (
                    "open",
                    us("2024-05-01T23:00:00Z"),
                    us("2024-05-02T00:00:00Z")
                ),
                (
                    "stop_only",
                    us("2024-05-01T11:00:00Z") + 500_000,
                    us("2024-05-01T12:00:00Z")
                ),
            ]
        );
        // An open session stops at now when the range reaches into the future.
        let now = us("2024-05-01T23:30:00Z");
        let open = clip_sessions(
            vec![row("open", Some("2024-05-01T23:00:00Z"), None, "")],
            range,
            now,
        );
        assert_eq!(open[0].end_us, now);
    }

    #[test]
    fn partly_counted_owners_bind_their_spans() {
        let q = 900 * 1_000_000;
        let span = |from_us, to_us| Span { from_us, to_us };
        let binds = SpanBinds::of(&[
            PartialOwner {
                owner_id: "bot_s".to_owned(),
                // From a quarter's start to the middle of a quarter; then within one quarter.
                spans: vec![span(0, 3 * q + q / 2), span(5 * q + 1, 5 * q + 2)],
            },
            PartialOwner {
                owner_id: "bot_t".to_owned(),
                // Whole quarters, and a cut one bot_s cuts too.
                spans: vec![span(q, 2 * q), span(3 * q + 7, 4 * q)],
            },
        ]);
        assert_eq!(
            binds,
            SpanBinds {
                owners: vec!["bot_s".to_owned(), "bot_t".to_owned()],
                span_owners: vec![
                    "bot_s".to_owned(),
                    "bot_s".to_owned(),
                    "bot_t".to_owned(),
                    "bot_t".to_owned()
                ],
                span_from_us: vec![0, 5 * q + 1, q, 3 * q + 7],
                span_to_us: vec![3 * q + q / 2, 5 * q + 2, 2 * q, 4 * q],
                cut_quarters: vec![3 * 900, 5 * 900],
            }
        );
    }

    #[test]
    fn sessions_of_partly_counted_owners_are_cut_to_their_spans() {
        let session = |id: &str, credential_id: &str, owner_id: &str, start_us, end_us| Session {
            id: id.to_owned(),
            credential_id: credential_id.to_owned(),
            owner_id: owner_id.to_owned(),
            start_us,
            end_us,
        };
        let scope = Scope {
            owners: vec!["bot_a".to_owned()],
            credentials: vec!["cr_a".to_owned()],
            partial: vec![PartialOwner {
                owner_id: "bot_s".to_owned(),
                spans: vec![
                    Span {
                        from_us: 10,
                        to_us: 20,
                    },
                    Span {
                        from_us: 30,
                        to_us: 40,
                    },
                ],
            }],
        };
        let cut = cut_to_spans(
            vec![
                session("whole", "cr_a", "bot_a", 0, 100),
                session("across", "cr_s", "bot_s", 15, 35),
                session("outside", "cr_s", "bot_s", 20, 30),
                session("other", "cr_x", "bot_x", 0, 100),
            ],
            &scope,
        );
        let spans: Vec<(&str, i64, i64)> = cut
            .iter()
            .map(|s| (s.id.as_str(), s.start_us, s.end_us))
            .collect();
        assert_eq!(
            spans,
            [("whole", 0, 100), ("across", 15, 20), ("across", 30, 35)]
        );
        // The two pieces of one session in one bucket are one session there.
        let hour = 3_600_000_000;
        let pieces = [
            session("ts", "cr_s", "bot_s", 0, hour / 4),
            session("ts", "cr_s", "bot_s", hour / 2, hour),
        ];
        assert_eq!(
            session_buckets(&pieces, Granularity::Hour, Tz::UTC),
            BTreeMap::from([(0, (1, 3 * hour / 4))])
        );
    }

    #[test]
    fn session_hours_split_across_buckets() {
        let session = Session {
            id: "ts_1".to_owned(),
            credential_id: "cr_1".to_owned(),
            owner_id: "bot_a".to_owned(),
            start_us: us("2024-05-01T09:15:00Z"),
            end_us: us("2024-05-01T10:45:00Z"),
        };
        let utc = session_buckets([&session], Granularity::Hour, Tz::UTC);
        assert_eq!(
            utc,
            BTreeMap::from([
                (secs("2024-05-01T09:00:00Z") as u32, (1, 2_700_000_000)),
                (secs("2024-05-01T10:00:00Z") as u32, (1, 2_700_000_000)),
            ])
        );
        let kolkata = session_buckets([&session], Granularity::Hour, Tz::Asia__Kolkata);
        assert_eq!(
            kolkata,
            BTreeMap::from([
                (secs("2024-05-01T08:30:00Z") as u32, (1, 900_000_000)),
                (secs("2024-05-01T09:30:00Z") as u32, (1, 3_600_000_000)),
                (secs("2024-05-01T10:30:00Z") as u32, (1, 900_000_000)),
            ])
        );
        let days = session_buckets([&session], Granularity::Day, Tz::UTC);
        assert_eq!(days.values().collect::<Vec<_>>(), [&(1, 5_400_000_000)]);
    }
}
