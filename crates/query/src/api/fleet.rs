//! `GET /v1/fleet`: which devices are online, per owner and per credential, as the audit log and
//! the attributed usage in ClickHouse knew it at a time `at` (default now). Nothing is one
//! instance's own state, so every instance answers the same, before and after a restart: a
//! request is answered from the fleet timeline ([`timeline`], rebuilt from ClickHouse every
//! [`FLEET_GAUGES_INTERVAL`]) when `at` is not after its last refresh nor before its horizon (the
//! oldest traffic its memory budget keeps, see [`traffic`]), else read for the request
//! from the fleet state tables of migration 0013 (one row per credential, session, endpoint; fed
//! by materialized views) and, for an `at` before a credential's latest traffic, its traffic
//! before `at` from the raw usage rows. Both give the same answer for the same rows.
//!
//! What each field means, exactly (`crates/query/sql/fleet_*.sql` read the rows):
//! - The fleet is every authtoken and SSH key (the credentials an agent starts a session with; API
//!   keys never do) created before `at` and live at `at`: neither it nor its bot user deleted
//!   before `at` (deleting a bot user revokes its credentials).
//! - An agent is online at `at` when its (first) `agent_session_start.v0` came before `at` and
//!   its first `agent_session_stop.v0` did not. Its region, OS and user agent are those its start event
//!   carries (empty when absent); `agent_version` is the version of an `ngrok/…`, `ngrok-go/…` or
//!   any `name/version` user agent, empty otherwise. Its endpoints online are the endpoints whose
//!   `endpoint_created.v0` names it as `tunnel_session`, created before `at` and not deleted before
//!   `at`.
//! - `last_seen_at`: the later of its latest session start and its latest traffic (the usage time
//!   of an attributed usage row of it with sign +1) before `at`.
//! - `state`: `online` (an agent online), `never_seen` (no session ever started with it),
//!   otherwise its last session stopped at `dropped_at` and it is `reconnecting` while `at` is at
//!   most `drop_grace_seconds` after that, `dropped` once it is longer (`gone_seconds` says how
//!   long).
//! - `unseen_days`: whole days (86 400 s) from its last sighting (or, never seen, its creation) to
//!   `at`; 0 while online. `idle`: not online and `unseen_days` at least `idle_days` (rotation
//!   candidates).
//!
//! The summary and the per-owner counts cover every credential of the scope; `state`, `idle` and
//! `limit` only cut the credential list. Tenancy: a `customer:<id>` key sees the fleet of that
//! customer's bot users only (as of `at`, by [`super::tenancy`]); naming another owner or
//! customer answers 404. `customer=<id>` narrows an account-wide key the same way.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::Utc;
use clickhouse::Row;
use model::OwnerKind;
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::ToSchema;

mod timeline;
mod traffic;

pub use timeline::FleetTimeline;
pub(crate) use timeline::TrafficReader;

use super::auth::Access;
use super::params::{rfc3339, rfc3339_us, rfc3339_us_if_set, Choice, QueryParams};
use super::tenancy;
use super::{ApiError, AppState};

/// Placeholders: at (µs) three times, all, owners.
pub(super) const FLEET_CREDENTIALS_SQL: &str = include_str!("../../sql/fleet_credentials.sql");
/// Placeholders: at (µs) twice.
pub(super) const FLEET_SESSION_TOTALS_SQL: &str =
    include_str!("../../sql/fleet_session_totals.sql");
/// Placeholders: at (µs) four times.
pub(super) const FLEET_ONLINE_SESSIONS_SQL: &str =
    include_str!("../../sql/fleet_online_sessions.sql");
/// Placeholders: at (s), all, credential ids.
pub(super) const FLEET_TRAFFIC_BEFORE_SQL: &str =
    include_str!("../../sql/fleet_traffic_before.sql");

/// Most credentials whose traffic before `at` is read by id; more are read all at once.
const MAX_LISTED_CREDENTIALS: usize = 1_000;

/// Default of `serve --fleet-drop-grace-seconds`: how long a credential with no agent online is
/// `reconnecting` before it counts as `dropped`.
pub const DEFAULT_FLEET_DROP_GRACE_SECONDS: u32 = 300;

/// Default memory (MiB) for the fleet timeline's traffic: about 40M credential-seconds with
/// traffic (12 bytes each, plus a checkpoint of 8 bytes per credential every segment of at
/// least 8 entries per credential).
pub const DEFAULT_FLEET_TIMELINE_MAX_MIB: u64 = 512;
/// Smallest budget accepted for the fleet timeline's traffic.
pub const MIN_FLEET_TIMELINE_MAX_MIB: u64 = 16;
/// Largest budget accepted for the fleet timeline's traffic (1 TiB).
pub const MAX_FLEET_TIMELINE_MAX_MIB: u64 = 1 << 20;

/// Longest drop grace a request or the server may set (30 days).
pub const MAX_FLEET_DROP_GRACE_SECONDS: u32 = 30 * 86_400;

/// Default `idle_days`: credentials unseen this long are rotation candidates.
pub const DEFAULT_FLEET_IDLE_DAYS: u32 = 30;

/// Longest `idle_days` (100 years).
const MAX_IDLE_DAYS: u32 = 36_500;

/// Most credentials one answer lists (`limit`).
pub const MAX_FLEET_LIMIT: u32 = 10_000;

/// Credentials listed when `limit` is not given.
const DEFAULT_FLEET_LIMIT: u32 = 1_000;

const DAY_US: i64 = 86_400 * 1_000_000;

const PARAMETERS: &[&str] = &[
    "at",
    "owner_id",
    "customer",
    "state",
    "idle",
    "idle_days",
    "drop_grace_seconds",
    "limit",
];

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/fleet", get(fleet))
}

/// One live credential, positional row of `fleet_credentials.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct CredentialRow {
    credential_id: String,
    kind: String,
    owner_id: String,
    created_us: i64,
    /// Of all time (then, by [`traffic_before`], before `at`); 0 when none.
    last_traffic_us: i64,
}

/// A credential's latest traffic before `at`, positional row of `fleet_traffic_before.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct TrafficBeforeRow {
    credential_id: String,
    last_traffic_us: i64,
}

/// A credential's sessions, positional row of `fleet_session_totals.sql`.
#[derive(Debug, Clone, Default, Row, Deserialize)]
struct SessionTotalsRow {
    credential_id: String,
    sessions: u64,
    last_start_us: i64,
    /// 0 when none stopped.
    last_stop_us: i64,
}

/// One online session, positional row of `fleet_online_sessions.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct OnlineSessionRow {
    session_id: String,
    credential_id: String,
    start_us: i64,
    region: String,
    os: String,
    user_agent: String,
    endpoints: u64,
}

/// Where a credential's devices are (`state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FleetState {
    /// At least one agent online.
    Online,
    /// None online; its last session stopped at most the drop grace ago.
    Reconnecting,
    /// None online for longer than the drop grace.
    Dropped,
    /// No session ever started with it.
    NeverSeen,
}

impl Choice for FleetState {
    const ALL: &'static [(&'static str, Self)] = &[
        ("online", Self::Online),
        ("reconnecting", Self::Reconnecting),
        ("dropped", Self::Dropped),
        ("never_seen", Self::NeverSeen),
    ];
}

/// The fleet report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetReport {
    /// The time described, RFC 3339 UTC (events before it count).
    pub at: String,
    /// A credential with no agent online is `dropped` once its last session stopped longer ago
    /// than this.
    pub drop_grace_seconds: u32,
    /// A credential not online and unseen this many whole days is `idle`.
    pub idle_days: u32,
    /// Every credential of the scope.
    pub summary: FleetCounts,
    /// Per owner with a credential in the scope, by owner id.
    pub owners: Vec<FleetOwner>,
    /// Credentials matching `state` and `idle`, before `limit`.
    pub matched: u64,
    /// The matching credentials by owner id then credential id, at most `limit`.
    pub credentials: Vec<FleetCredential>,
}

/// Counts over a set of credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FleetCounts {
    /// Live authtokens and SSH keys.
    pub credentials: u64,
    /// Agents online (sessions), over all credentials.
    pub agents_online: u64,
    /// Endpoints served by the agents online.
    pub endpoints_online: u64,
    /// Credentials `online`.
    pub online: u64,
    /// Credentials `reconnecting`.
    pub reconnecting: u64,
    /// Credentials `dropped`.
    pub dropped: u64,
    /// Credentials `never_seen`.
    pub never_seen: u64,
    /// Credentials `idle`.
    pub idle: u64,
}

impl FleetCounts {
    fn add(&mut self, c: &Class) {
        self.credentials += 1;
        self.agents_online += c.agents_online;
        self.endpoints_online += c.endpoints_online;
        match c.state {
            FleetState::Online => self.online += 1,
            FleetState::Reconnecting => self.reconnecting += 1,
            FleetState::Dropped => self.dropped += 1,
            FleetState::NeverSeen => self.never_seen += 1,
        }
        self.idle += u64::from(c.idle);
    }
}

/// One owner's fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetOwner {
    /// The owner.
    pub owner_id: String,
    /// `user` or `bot_user`; empty for an id of neither form.
    pub owner_kind: String,
    /// Its credentials' counts.
    #[serde(flatten)]
    pub counts: FleetCounts,
    /// The latest `last_seen_at` of its credentials, if any was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
}

/// One credential's devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetCredential {
    /// The credential.
    pub credential_id: String,
    /// `authtoken` or `ssh_key`.
    pub kind: String,
    /// Its owner.
    pub owner_id: String,
    /// `user` or `bot_user`; empty for an id of neither form.
    pub owner_kind: String,
    /// Its first event, RFC 3339.
    pub created_at: String,
    /// `online`, `reconnecting`, `dropped` or `never_seen`.
    pub state: FleetState,
    /// Sessions online with it.
    pub agents_online: u64,
    /// Endpoints those sessions serve.
    pub endpoints_online: u64,
    /// The sessions online, by session id.
    pub agents: Vec<FleetAgent>,
    /// The later of its latest session start and its latest traffic, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
    /// Its latest session start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_session_start_at: Option<String>,
    /// Its latest attributed traffic, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_traffic_at: Option<String>,
    /// When its last session stopped, when none is online (`reconnecting` or `dropped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_at: Option<String>,
    /// Whole seconds from `dropped_at` to `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_seconds: Option<i64>,
    /// Whole days from its last sighting (never seen: its creation) to `at`; 0 while online.
    pub unseen_days: i64,
    /// Not online and `unseen_days` at least `idle_days`: a rotation candidate.
    pub idle: bool,
}

/// One agent online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetAgent {
    /// Its tunnel session.
    pub session_id: String,
    /// Its `agent_session_start.v0`, RFC 3339.
    pub started_at: String,
    /// As its start event says; empty when absent.
    pub region: String,
    /// As its start event says; empty when absent.
    pub os: String,
    /// As its start event says (`ngrok/3.18.4`); empty when absent.
    pub user_agent: String,
    /// The version in `user_agent` (`3.18.4`); empty when it has none.
    pub agent_version: String,
    /// Endpoints it serves.
    pub endpoints_online: u64,
}

/// What a request asks for, checked.
#[derive(Debug, Clone)]
struct Request {
    at: u32,
    /// Whether `at` was asked for (else it is now, and a fresh snapshot may answer).
    explicit_at: bool,
    owner_id: Option<String>,
    customer: Option<String>,
    state: Option<FleetState>,
    idle: Option<bool>,
    idle_days: u32,
    drop_grace_seconds: u32,
    limit: u32,
}

impl Request {
    fn parse(query: Option<&str>, default_drop_grace_seconds: u32) -> Result<Self, ApiError> {
        let params = QueryParams::parse(query, PARAMETERS)?;
        let now = u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX);
        let at = params.time("at")?;
        Ok(Self {
            at: at.unwrap_or(now),
            explicit_at: at.is_some(),
            owner_id: params.id("owner_id")?,
            customer: params.id("customer")?,
            state: params.choice("state")?,
            idle: params.boolean("idle")?,
            idle_days: params.integer("idle_days", 1, MAX_IDLE_DAYS, DEFAULT_FLEET_IDLE_DAYS)?,
            drop_grace_seconds: params.integer(
                "drop_grace_seconds",
                0,
                MAX_FLEET_DROP_GRACE_SECONDS,
                default_drop_grace_seconds,
            )?,
            limit: params.integer("limit", 1, MAX_FLEET_LIMIT, DEFAULT_FLEET_LIMIT)?,
        })
    }

    fn keeps(&self, c: &Class) -> bool {
        self.state.is_none_or(|s| s == c.state) && self.idle.is_none_or(|idle| idle == c.idle)
    }
}

/// The schema of a `/v1/fleet` query parameter of this module's own (see
/// `openapi::parameter_schema`); `None` for the names every route shares.
pub(super) fn parameter_schema(name: &str) -> Option<Schema> {
    let integer = |min: u32, max: u32| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(min))
            .maximum(Some(max))
    };
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let schema = match name {
        "state" => string().enum_values(Some(FleetState::ALL.iter().map(|(name, _)| *name))),
        "idle" => string().enum_values(Some(["true", "false"])),
        "idle_days" => integer(1, MAX_IDLE_DAYS),
        "drop_grace_seconds" => integer(0, MAX_FLEET_DROP_GRACE_SECONDS),
        "limit" => integer(1, MAX_FLEET_LIMIT),
        "customer" => string()
            .pattern(Some(super::params::ID_PATTERN))
            .min_length(Some(1))
            .max_length(Some(super::params::MAX_ID_LEN)),
        _ => return None,
    };
    Some(Schema::Object(schema.build()))
}

/// The fleet status report.
#[utoipa::path(
    get,
    path = "/v1/fleet",
    tag = "fleet",
    params(
        ("at" = Option<String>, Query, description = "The time described (RFC 3339 or YYYY-MM-DD); events before it count. Default now"),
        ("owner_id" = Option<String>, Query, description = "Only this owner's credentials"),
        ("customer" = Option<String>, Query, description = "Only the credentials of this customer's bot users (as of at); a customer key may name only its own"),
        ("state" = Option<String>, Query, description = "List only credentials online, reconnecting, dropped or never_seen (the summary counts all)"),
        ("idle" = Option<String>, Query, description = "true: list only idle credentials (rotation candidates); false: only the others"),
        ("idle_days" = Option<i32>, Query, description = "Whole days unseen after which a credential not online is idle, 1..=36500, default 30"),
        ("drop_grace_seconds" = Option<i32>, Query, description = "Seconds with no agent online before a credential counts as dropped, 0..=2592000 (default: serve --fleet-drop-grace-seconds, 300 unless set)"),
        ("limit" = Option<i32>, Query, description = "At most this many credentials, 1..=10000, default 1000 (matched counts them all)"),
    ),
    responses(
        (status = 200, description = "The fleet", body = FleetReport),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, description = "An owner or customer that is not this customer key's", body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn fleet(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<FleetReport>, ApiError> {
    let request = Request::parse(query.as_deref(), state.fleet_drop_grace_seconds)?;
    // A customer key reads its own customer only; `customer` narrows an account-wide key.
    let customer = match (access.customer(), &request.customer) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiError::Missing {
                what: format!("customer {asked:?}"),
            })
        }
        (Some(own), _) => Some(own.to_owned()),
        (None, asked) => asked.clone(),
    };
    let (all, owners) = match (customer, &request.owner_id) {
        (None, None) => (true, Vec::new()),
        (None, Some(owner)) => (false, vec![owner.clone()]),
        (Some(customer), owner) => {
            let mut bots = tenancy::bots_at(&state, &customer, request.at).await?;
            if let Some(owner) = owner {
                if !bots.contains(owner) {
                    return Err(ApiError::Missing {
                        what: format!("owner {owner:?}"),
                    });
                }
                bots = vec![owner.clone()];
            }
            (false, bots)
        }
    };
    Ok(Json(fleet_report(&state, &request, all, &owners).await?))
}

/// The credentials dropped as of `at` (no agent online for longer than `drop_grace_seconds`),
/// classified exactly as `/v1/fleet?state=dropped` classifies them, at most [`MAX_FLEET_LIMIT`]:
/// what the `device_dropped` alert rule reads (crate::alerts).
pub(crate) async fn dropped_credentials(
    state: &AppState,
    at: u32,
    drop_grace_seconds: u32,
) -> Result<Vec<FleetCredential>, ApiError> {
    let request = Request {
        at,
        explicit_at: true,
        owner_id: None,
        customer: None,
        state: Some(FleetState::Dropped),
        idle: None,
        idle_days: DEFAULT_FLEET_IDLE_DAYS,
        drop_grace_seconds,
        limit: MAX_FLEET_LIMIT,
    };
    Ok(fleet_report(state, &request, true, &[]).await?.credentials)
}

/// The report for `request` over every credential (`all`) or those of `owners`: from the fleet
/// timeline when it is fresh and reaches `at` (without `at`: as of the timeline's instant), else
/// read from ClickHouse now.
async fn fleet_report(
    state: &AppState,
    request: &Request,
    all: bool,
    owners: &[String],
) -> Result<FleetReport, ApiError> {
    let keep = |c: &CredentialRow| all || owners.contains(&c.owner_id);
    if let Some(timeline) = state.fresh_fleet_timeline() {
        let at = if request.explicit_at {
            request.at
        } else {
            timeline.at()
        };
        if let Some(latest_traffic) = timeline.traffic_at(at) {
            let request = Request {
                at,
                ..request.clone()
            };
            let at_us = i64::from(at) * 1_000_000;
            metrics::counter!(fleet_gauge::ANSWERS, "source" => "timeline").increment(1);
            return Ok(report(
                &request,
                timeline.credentials_at(at_us, &latest_traffic, keep),
            ));
        }
    }
    metrics::counter!(fleet_gauge::ANSWERS, "source" => "clickhouse").increment(1);
    let rows = read_rows(state, request.at, all, owners).await?;
    Ok(report(request, rows.credentials_at(keep)))
}

/// The fleet's rows as of one instant, read from ClickHouse for one request (when the timeline
/// does not answer).
#[derive(Debug, Default)]
struct FleetSnapshot {
    /// In owner, credential order, each with its sessions.
    credentials: Vec<FleetRow>,
}

/// One credential's rows.
#[derive(Debug)]
struct FleetRow {
    credential: CredentialRow,
    sessions: SessionTotalsRow,
    online: Vec<OnlineSessionRow>,
}

impl FleetSnapshot {
    /// Each credential `keep` keeps, as [`report`] reads it.
    fn credentials_at(
        &self,
        keep: impl Fn(&CredentialRow) -> bool,
    ) -> impl Iterator<Item = CredentialAt<'_>> {
        self.credentials
            .iter()
            .filter(move |row| keep(&row.credential))
            .map(|row| CredentialAt {
                credential: &row.credential,
                last_traffic_us: row.credential.last_traffic_us,
                sessions: SessionTotals {
                    sessions: row.sessions.sessions,
                    last_start_us: row.sessions.last_start_us,
                    last_stop_us: row.sessions.last_stop_us,
                },
                agents_online: row.online.len() as u64,
                endpoints_online: row.online.iter().map(|s| s.endpoints).sum(),
                agents: AgentsAt::Rows(&row.online),
            })
    }

    /// Each credential with its sessions (those of credentials not listed are dropped).
    fn join(
        credentials: Vec<CredentialRow>,
        totals: Vec<SessionTotalsRow>,
        online: Vec<OnlineSessionRow>,
    ) -> Self {
        let mut totals: HashMap<String, SessionTotalsRow> = totals
            .into_iter()
            .map(|row| (row.credential_id.clone(), row))
            .collect();
        let mut agents: HashMap<String, Vec<OnlineSessionRow>> = HashMap::new();
        for row in online {
            agents
                .entry(row.credential_id.clone())
                .or_default()
                .push(row);
        }
        let credentials = credentials
            .into_iter()
            .map(|credential| FleetRow {
                sessions: totals.remove(&credential.credential_id).unwrap_or_default(),
                online: agents.remove(&credential.credential_id).unwrap_or_default(),
                credential,
            })
            .collect();
        Self { credentials }
    }
}

/// The rows as of `at` for every credential (`all`) or those of `owners`.
async fn read_rows(
    state: &AppState,
    at: u32,
    all: bool,
    owners: &[String],
) -> Result<FleetSnapshot, ApiError> {
    let at_us = i64::from(at) * 1_000_000;
    let credentials = state.read("read the fleet's credentials", |client| {
        client
            .query(FLEET_CREDENTIALS_SQL)
            .bind(at_us)
            .bind(at_us)
            .bind(at_us)
            .bind(u8::from(all))
            .bind(owners)
            .fetch_all::<CredentialRow>()
    });
    let totals = state.read("read the fleet's sessions", |client| {
        client
            .query(FLEET_SESSION_TOTALS_SQL)
            .bind(at_us)
            .bind(at_us)
            .fetch_all::<SessionTotalsRow>()
    });
    let online = state.read("read the fleet's agents online", |client| {
        client
            .query(FLEET_ONLINE_SESSIONS_SQL)
            .bind(at_us)
            .bind(at_us)
            .bind(at_us)
            .bind(at_us)
            .fetch_all::<OnlineSessionRow>()
    });
    let (mut credentials, totals, online) = tokio::try_join!(credentials, totals, online)?;
    traffic_before(state, at, &mut credentials).await?;
    Ok(FleetSnapshot::join(credentials, totals, online))
}

/// Replaces the latest traffic of all time by the latest before `at` where they may differ: for
/// the credentials whose latest traffic is not before `at` (an `at` in the past), read from the
/// raw rows; the others' is already the answer.
async fn traffic_before(
    state: &AppState,
    at: u32,
    credentials: &mut [CredentialRow],
) -> Result<(), ApiError> {
    let at_us = i64::from(at) * 1_000_000;
    let later: Vec<String> = credentials
        .iter()
        .filter(|c| c.last_traffic_us >= at_us)
        .map(|c| c.credential_id.clone())
        .collect();
    if later.is_empty() {
        return Ok(());
    }
    // A long list is slower to send and match than reading every credential's rows.
    let all = later.len() > MAX_LISTED_CREDENTIALS;
    let listed = if all { Vec::new() } else { later };
    let rows = state
        .read("read the fleet's traffic before at", |client| {
            client
                .query(FLEET_TRAFFIC_BEFORE_SQL)
                .bind(at)
                .bind(u8::from(all))
                .bind(&listed)
                .fetch_all::<TrafficBeforeRow>()
        })
        .await?;
    let before: BTreeMap<String, i64> = rows
        .into_iter()
        .map(|row| (row.credential_id, row.last_traffic_us))
        .collect();
    for credential in credentials
        .iter_mut()
        .filter(|c| c.last_traffic_us >= at_us)
    {
        credential.last_traffic_us = before.get(&credential.credential_id).copied().unwrap_or(0);
    }
    Ok(())
}

/// The gauges `botmeter serve` exports on its `/metrics` ([`run_fleet_gauges`]).
pub mod fleet_gauge {
    /// Agents (sessions) online now, over the whole fleet.
    pub const AGENTS_ONLINE: &str = "botmeter_fleet_agents_online";
    /// Agents online now, by the owner kind of their credential (`user`, `bot_user`, `other`).
    pub const AGENTS_ONLINE_BY_OWNER_KIND: &str = "botmeter_fleet_agents_online_by_owner_kind";
    /// Credentials `dropped` now (the server's drop grace).
    pub const DROPPED: &str = "botmeter_fleet_dropped_devices";
    /// Credentials `reconnecting` now.
    pub const RECONNECTING: &str = "botmeter_fleet_reconnecting_devices";
    /// `/v1/fleet` answers, by `source`: `timeline` (this instance's timeline, rebuilt from
    /// ClickHouse) or `clickhouse` (read for the request).
    pub const ANSWERS: &str = "botmeter_fleet_answers_total";
    /// Bytes the fleet timeline's traffic holds (at most `--fleet-timeline-max-mib`).
    pub const TIMELINE_TRAFFIC_BYTES: &str = "botmeter_fleet_timeline_traffic_bytes";
    /// The oldest second (Unix time) the fleet timeline answers `at` from; earlier ones read
    /// ClickHouse.
    pub const TIMELINE_HORIZON: &str = "botmeter_fleet_timeline_horizon_seconds";
}

/// How often [`run_fleet_gauges`] reads the fleet (the snapshot and the gauges).
pub const FLEET_GAUGES_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Oldest timeline (seconds from its refresh to the request) that answers a request; an older
/// one (the refresher is behind or failing) is passed over for a read.
pub const FLEET_SNAPSHOT_MAX_AGE_SECS: u32 = 30;

/// The fleet's low-cardinality figures now, as the gauges show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetGauges {
    /// Agents online.
    pub agents_online: u64,
    /// Agents online by owner kind: always `user` and `bot_user`, `other` when any.
    pub agents_online_by_owner_kind: BTreeMap<String, u64>,
    /// Credentials dropped.
    pub dropped: u64,
    /// Credentials reconnecting.
    pub reconnecting: u64,
}

impl FleetGauges {
    /// Sets the gauges of [`fleet_gauge`] to these figures.
    pub fn set(&self) {
        metrics::gauge!(fleet_gauge::AGENTS_ONLINE).set(self.agents_online as f64);
        for (kind, agents) in &self.agents_online_by_owner_kind {
            metrics::gauge!(fleet_gauge::AGENTS_ONLINE_BY_OWNER_KIND, "owner_kind" => kind.clone())
                .set(*agents as f64);
        }
        metrics::gauge!(fleet_gauge::DROPPED).set(self.dropped as f64);
        metrics::gauge!(fleet_gauge::RECONNECTING).set(self.reconnecting as f64);
    }
}

/// `HELP` text of the fleet gauges.
pub(super) fn describe_gauges() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!(
        fleet_gauge::AGENTS_ONLINE,
        Unit::Count,
        "Agent sessions online now (started, not stopped), read from ClickHouse"
    );
    describe_gauge!(
        fleet_gauge::AGENTS_ONLINE_BY_OWNER_KIND,
        Unit::Count,
        "Agent sessions online now, by the owner kind of their credential"
    );
    describe_gauge!(
        fleet_gauge::DROPPED,
        Unit::Count,
        "Credentials with no agent online for longer than --fleet-drop-grace-seconds"
    );
    metrics::describe_counter!(
        fleet_gauge::ANSWERS,
        Unit::Count,
        "/v1/fleet answers by source: timeline (in memory, rebuilt from ClickHouse) or clickhouse"
    );
    describe_gauge!(
        fleet_gauge::TIMELINE_TRAFFIC_BYTES,
        Unit::Bytes,
        "Bytes of traffic the /v1/fleet timeline holds in memory (at most --fleet-timeline-max-mib)"
    );
    describe_gauge!(
        fleet_gauge::TIMELINE_HORIZON,
        Unit::Seconds,
        "Oldest second (Unix time) /v1/fleet?at= answers from memory; earlier ones read ClickHouse"
    );
    describe_gauge!(
        fleet_gauge::RECONNECTING,
        Unit::Count,
        "Credentials with no agent online, within --fleet-drop-grace-seconds of their last stop"
    );
}

/// Reads the whole fleet again into the timeline that answers requests (without `at`, and with an
/// `at` up to the refresh), and returns its figures now (with the server's drop grace).
pub async fn refresh_fleet(state: &AppState) -> Result<FleetGauges, ApiError> {
    let started = std::time::Instant::now();
    let mut request = Request::parse(Some("limit=1"), state.fleet_drop_grace_seconds)?;
    let report = if state.fleet_timeline_enabled() {
        let timeline = Arc::new(timeline::read_timeline(state).await?);
        request.at = timeline.at();
        let at_us = i64::from(request.at) * 1_000_000;
        let report = match timeline.traffic_at(request.at) {
            Some(latest_traffic) => report(
                &request,
                timeline.credentials_at(at_us, &latest_traffic, |_| true),
            ),
            // Traffic after now trimmed what is before it (event times ahead of this clock):
            // the figures are read instead.
            None => {
                let rows = read_rows(state, request.at, true, &[]).await?;
                report(&request, rows.credentials_at(|_| true))
            }
        };
        state.set_fleet_timeline(timeline);
        report
    } else {
        let rows = read_rows(state, request.at, true, &[]).await?;
        report(&request, rows.credentials_at(|_| true))
    };
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        timeline = state.fleet_timeline_enabled(),
        "refreshed the fleet"
    );
    let mut by_kind: BTreeMap<String, u64> = ["user", "bot_user"]
        .into_iter()
        .map(|kind| (kind.to_owned(), 0))
        .collect();
    for owner in &report.owners {
        let kind = if owner.owner_kind.is_empty() {
            "other"
        } else {
            owner.owner_kind.as_str()
        };
        *by_kind.entry(kind.to_owned()).or_default() += owner.counts.agents_online;
    }
    Ok(FleetGauges {
        agents_online: report.summary.agents_online,
        agents_online_by_owner_kind: by_kind,
        dropped: report.summary.dropped,
        reconnecting: report.summary.reconnecting,
    })
}

/// Refreshes the fleet timeline and gauges every [`FLEET_GAUGES_INTERVAL`] until the task is
/// dropped; a read that fails leaves them as they were (a timeline older than
/// [`FLEET_SNAPSHOT_MAX_AGE_SECS`] no longer answers) and is logged.
pub async fn run_fleet_gauges(state: AppState) {
    let mut ticks = tokio::time::interval(FLEET_GAUGES_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match refresh_fleet(&state).await {
            Ok(gauges) => gauges.set(),
            Err(error) => tracing::warn!(?error, "could not read the fleet for its gauges"),
        }
    }
}

/// One credential as of a time: what [`report`] reads, from a timeline or from rows read for the
/// time.
struct CredentialAt<'a> {
    /// Its `last_traffic_us` is not read (see `last_traffic_us`).
    credential: &'a CredentialRow,
    /// Its latest traffic before the time; 0 when none.
    last_traffic_us: i64,
    sessions: SessionTotals,
    agents_online: u64,
    endpoints_online: u64,
    agents: AgentsAt<'a>,
}

/// A credential's sessions before a time, in numbers.
#[derive(Debug, Clone, Copy, Default)]
struct SessionTotals {
    /// Started before the time.
    sessions: u64,
    last_start_us: i64,
    /// The latest stop before the time; 0 when none.
    last_stop_us: i64,
}

/// Where a listed credential's agents online are rendered from.
enum AgentsAt<'a> {
    /// Read as of the time.
    Rows(&'a [OnlineSessionRow]),
    /// Its range of the timeline's sessions, those online at the time kept.
    Timeline(&'a FleetTimeline, (u32, u32)),
}

impl AgentsAt<'_> {
    fn online(&self, at_us: i64) -> Vec<OnlineSessionRow> {
        match self {
            Self::Rows(rows) => rows.to_vec(),
            Self::Timeline(timeline, sessions) => timeline.online_rows(*sessions, at_us),
        }
    }
}

/// The report of the credentials (in owner, credential order). Every credential is classified
/// from its numbers; only the listed ones are rendered (times as text, agents).
fn report<'a>(request: &Request, rows: impl Iterator<Item = CredentialAt<'a>>) -> FleetReport {
    let at_us = i64::from(request.at) * 1_000_000;
    let mut summary = FleetCounts::default();
    let mut owners: Vec<FleetOwner> = Vec::new();
    let mut owner_seen_us: Vec<i64> = Vec::new();
    let mut listed = Vec::new();
    let mut matched = 0_u64;
    for credential in rows {
        let row = credential.credential;
        let class = Class::of(request, at_us, &credential);
        summary.add(&class);
        if owners.last().is_none_or(|o| o.owner_id != row.owner_id) {
            owners.push(FleetOwner {
                owner_id: row.owner_id.clone(),
                owner_kind: owner_kind(&row.owner_id),
                counts: FleetCounts::default(),
                last_seen_at: None,
            });
            owner_seen_us.push(0);
        }
        let owner = owners.last_mut().expect("pushed above");
        owner.counts.add(&class);
        let seen = owner_seen_us.last_mut().expect("pushed with the owner");
        *seen = (*seen).max(class.last_seen_us);
        if request.keeps(&class) {
            matched += 1;
            if listed.len() < request.limit as usize {
                listed.push(fleet_credential(at_us, &credential, &class));
            }
        }
    }
    for (owner, seen_us) in owners.iter_mut().zip(owner_seen_us) {
        owner.last_seen_at = rfc3339_us_if_set(seen_us);
    }
    FleetReport {
        at: rfc3339(request.at),
        drop_grace_seconds: request.drop_grace_seconds,
        idle_days: request.idle_days,
        summary,
        owners,
        matched,
        credentials: listed,
    }
}

/// What a credential is at `at`, in numbers: what the counts and the filters need.
#[derive(Debug, Clone, Copy)]
struct Class {
    state: FleetState,
    agents_online: u64,
    endpoints_online: u64,
    /// The later of its latest session start and its latest traffic; 0 when never seen.
    last_seen_us: i64,
    unseen_days: i64,
    idle: bool,
}

impl Class {
    fn of(request: &Request, at_us: i64, credential: &CredentialAt<'_>) -> Self {
        let (row, sessions) = (credential.credential, &credential.sessions);
        let last_seen_us = credential.last_traffic_us.max(sessions.last_start_us);
        let agents_online = credential.agents_online;
        let state = if agents_online > 0 {
            FleetState::Online
        } else if sessions.sessions == 0 {
            FleetState::NeverSeen
        } else if at_us - sessions.last_stop_us > i64::from(request.drop_grace_seconds) * 1_000_000
        {
            FleetState::Dropped
        } else {
            FleetState::Reconnecting
        };
        let unseen_days = if state == FleetState::Online {
            0
        } else {
            (at_us - last_seen_us.max(row.created_us)).max(0) / DAY_US
        };
        Self {
            state,
            agents_online,
            endpoints_online: credential.endpoints_online,
            last_seen_us,
            unseen_days,
            idle: state != FleetState::Online && unseen_days >= i64::from(request.idle_days),
        }
    }
}

/// `user` or `bot_user` by the id's prefix; empty for any other id.
fn owner_kind(owner_id: &str) -> String {
    OwnerKind::of(owner_id)
        .map(|k| k.as_str().to_owned())
        .unwrap_or_default()
}

/// One listed credential, rendered.
fn fleet_credential(at_us: i64, credential: &CredentialAt<'_>, class: &Class) -> FleetCredential {
    let (row, sessions) = (credential.credential, &credential.sessions);
    let gone = matches!(class.state, FleetState::Dropped | FleetState::Reconnecting);
    let agents: Vec<FleetAgent> = credential
        .agents
        .online(at_us)
        .into_iter()
        .map(|s| FleetAgent {
            agent_version: agent_version(&s.user_agent).to_owned(),
            session_id: s.session_id,
            started_at: rfc3339_us(s.start_us),
            region: s.region,
            os: s.os,
            user_agent: s.user_agent,
            endpoints_online: s.endpoints,
        })
        .collect();
    FleetCredential {
        credential_id: row.credential_id.clone(),
        kind: row.kind.clone(),
        owner_id: row.owner_id.clone(),
        owner_kind: owner_kind(&row.owner_id),
        created_at: rfc3339_us(row.created_us),
        state: class.state,
        agents_online: class.agents_online,
        endpoints_online: class.endpoints_online,
        agents,
        last_seen_at: rfc3339_us_if_set(class.last_seen_us),
        last_session_start_at: rfc3339_us_if_set(sessions.last_start_us),
        last_traffic_at: rfc3339_us_if_set(credential.last_traffic_us),
        dropped_at: gone.then(|| rfc3339_us(sessions.last_stop_us)),
        gone_seconds: gone.then(|| (at_us - sessions.last_stop_us) / 1_000_000),
        unseen_days: class.unseen_days,
        idle: class.idle,
    }
}

/// The version of a `name/version` user agent (`ngrok/3.18.4` → `3.18.4`, the first word only);
/// empty for any other form (`SSH-2.0-OpenSSH_9.6`).
fn agent_version(user_agent: &str) -> &str {
    let first = user_agent.split_whitespace().next().unwrap_or_default();
    match first.split_once('/') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => version,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;

    const AT_US: i64 = 100 * DAY_US;

    fn request() -> Request {
        let mut request = Request::parse(None, DEFAULT_FLEET_DROP_GRACE_SECONDS).unwrap();
        request.at = u32::try_from(AT_US / 1_000_000).unwrap();
        request
    }

    /// The report of these rows for every owner.
    fn report_of(
        request: &Request,
        credentials: Vec<CredentialRow>,
        totals: Vec<SessionTotalsRow>,
        online: Vec<OnlineSessionRow>,
    ) -> FleetReport {
        let rows = FleetSnapshot::join(credentials, totals, online);
        report(request, rows.credentials_at(|_| true))
    }

    fn credential(id: &str, owner: &str, last_traffic_us: i64) -> CredentialRow {
        CredentialRow {
            credential_id: id.to_owned(),
            kind: "authtoken".to_owned(),
            owner_id: owner.to_owned(),
            created_us: 10 * DAY_US,
            last_traffic_us,
        }
    }

    fn totals(id: &str, sessions: u64, start_us: i64, stop_us: i64) -> SessionTotalsRow {
        SessionTotalsRow {
            credential_id: id.to_owned(),
            sessions,
            last_start_us: start_us,
            last_stop_us: stop_us,
        }
    }

    fn session(id: &str, credential: &str, endpoints: u64) -> OnlineSessionRow {
        OnlineSessionRow {
            session_id: id.to_owned(),
            credential_id: credential.to_owned(),
            start_us: 50 * DAY_US,
            region: "eu".to_owned(),
            os: "linux".to_owned(),
            user_agent: "ngrok/3.18.4".to_owned(),
            endpoints,
        }
    }

    #[test]
    fn states_follow_the_sessions_and_the_grace() {
        let grace_us = i64::from(DEFAULT_FLEET_DROP_GRACE_SECONDS) * 1_000_000;
        let report = report_of(
            &request(),
            vec![
                credential("cr_a", "bot_1", 0),
                credential("cr_b", "bot_1", AT_US - 1),
                credential("cr_c", "bot_1", 0),
                credential("cr_d", "usr_1", 0),
                credential("cr_e", "usr_1", 0),
            ],
            vec![
                totals("cr_a", 2, 50 * DAY_US, 0),
                // Stopped exactly the grace ago: still reconnecting; a microsecond more: dropped.
                totals("cr_b", 1, 40 * DAY_US, AT_US - grace_us),
                totals("cr_c", 1, 40 * DAY_US, AT_US - grace_us - 1),
                // A session of a credential not in the fleet is ignored.
                totals("cr_z", 1, 40 * DAY_US, 0),
            ],
            vec![
                session("ts_1", "cr_a", 2),
                session("ts_2", "cr_a", 1),
                session("ts_9", "cr_z", 5),
            ],
        );
        let by_id: BTreeMap<&str, &FleetCredential> = report
            .credentials
            .iter()
            .map(|c| (c.credential_id.as_str(), c))
            .collect();
        let a = by_id["cr_a"];
        assert_eq!(
            (a.state, a.agents_online, a.endpoints_online),
            (FleetState::Online, 2, 3)
        );
        assert_eq!(a.agents[0].agent_version, "3.18.4");
        assert_eq!(
            (a.unseen_days, a.idle, a.dropped_at.as_deref()),
            (0, false, None)
        );
        let b = by_id["cr_b"];
        assert_eq!(b.state, FleetState::Reconnecting);
        assert_eq!(b.gone_seconds, Some(300));
        assert_eq!(
            b.last_seen_at.as_deref(),
            Some(rfc3339_us(AT_US - 1).as_str())
        );
        assert_eq!(by_id["cr_c"].state, FleetState::Dropped);
        // Last seen 60 days ago (its session start): idle at 30 days.
        assert_eq!((by_id["cr_c"].unseen_days, by_id["cr_c"].idle), (60, true));
        let d = by_id["cr_d"];
        assert_eq!(
            (d.state, d.unseen_days, d.idle),
            (FleetState::NeverSeen, 90, true)
        );
        assert_eq!(report.summary.credentials, 5);
        assert_eq!(
            (
                report.summary.agents_online,
                report.summary.endpoints_online
            ),
            (2, 3)
        );
        assert_eq!(
            (
                report.summary.online,
                report.summary.reconnecting,
                report.summary.dropped,
                report.summary.never_seen,
                report.summary.idle
            ),
            (1, 1, 1, 2, 3)
        );
        assert_eq!(report.owners.len(), 2);
        assert_eq!(report.owners[0].owner_kind, "bot_user");
        assert_eq!(report.owners[0].counts.credentials, 3);
        assert_eq!(
            report.owners[0].last_seen_at.as_deref(),
            Some(rfc3339_us(AT_US - 1).as_str())
        );
        assert_eq!(report.owners[1].last_seen_at, None);
    }

    #[test]
    fn filters_cut_the_list_not_the_counts() {
        let mut request = request();
        request.state = Some(FleetState::NeverSeen);
        request.limit = 1;
        let report = report_of(
            &request,
            vec![
                credential("cr_a", "bot_1", 0),
                credential("cr_b", "bot_1", 0),
                credential("cr_c", "bot_1", AT_US - 1),
            ],
            vec![totals("cr_c", 1, 50 * DAY_US, 0)],
            vec![session("ts_1", "cr_c", 0)],
        );
        assert_eq!(report.summary.credentials, 3);
        assert_eq!(report.matched, 2);
        assert_eq!(report.credentials.len(), 1);
        assert_eq!(report.credentials[0].credential_id, "cr_a");
    }

    #[test]
    fn agent_versions() {
        assert_eq!(agent_version("ngrok/3.18.4"), "3.18.4");
        assert_eq!(agent_version("ngrok-go/1.12.0 (linux)"), "1.12.0");
        assert_eq!(agent_version("SSH-2.0-OpenSSH_9.6"), "");
        assert_eq!(agent_version(""), "");
        assert_eq!(agent_version("/1.0"), "");
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_them() {
        assert_each_is_a_400_naming(&[
            ("/v1/fleet?state=gone", "state", "gone"),
            ("/v1/fleet?idle=yes", "idle", "yes"),
            ("/v1/fleet?idle_days=0", "idle_days", "0"),
            (
                "/v1/fleet?drop_grace_seconds=-5",
                "drop_grace_seconds",
                "-5",
            ),
            (
                "/v1/fleet?drop_grace_seconds=2592001",
                "drop_grace_seconds",
                "2592001",
            ),
            ("/v1/fleet?limit=10001", "limit", "10001"),
            ("/v1/fleet?at=soon", "at", "soon"),
            ("/v1/fleet?owner_id=a%20b", "owner_id", "a b"),
            ("/v1/fleet?customer=a'b", "customer", "a'b"),
            ("/v1/fleet?owner=bot_1", "owner", "owner"),
        ])
        .await;
        // Good parameters reach ClickHouse (down here: 503).
        let (status, _, _) = call(
            unreachable_state(),
            "GET",
            "/v1/fleet?at=2024-05-01&owner_id=bot_1&state=dropped&idle=false&idle_days=7&drop_grace_seconds=0&limit=5",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
