//! How every API read reaches ClickHouse, so that no request can leave work behind on the server.
//!
//! - Each request gets an id (tower-http's request-id layers: the client's `x-request-id` when it
//!   is a usable query id prefix, else a fresh one), logged on the request's span by the access log
//!   ([`access_log`], tower-http's `TraceLayer`) and returned as `x-request-id`; each of its
//!   queries runs with the ClickHouse `query_id` `<request id>-<n>`.
//! - Each query carries `max_execution_time` (whole seconds, the query deadline rounded up), so
//!   the server stops it by itself — unless the user is `readonly = 1`, which may not change any
//!   setting in a request: then the user's profile must set `max_execution_time`
//!   (`scripts/services.sh` gives `botmeter_reader` one), and [`ReadMode`] says which applies.
//! - A query whose future is dropped before it answered — the deadline passed, or the client went
//!   away and axum dropped the handler — is cancelled on the server with
//!   `KILL QUERY WHERE query_id = … ASYNC` (ClickHouse 18.16 does not notice a closed HTTP
//!   connection while a query produces nothing). A user may kill its own queries, read-only or not.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use clickhouse::{Client, Row};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::request_id::{MakeRequestId, RequestId};
use tower_http::trace::TraceLayer;
use tracing::{info, warn, Span};

use super::AppState;
use crate::error::{with_deadline, Error, Result};
use crate::query_id;

/// The response header naming the request id (the prefix of its ClickHouse query ids).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// How long the kill of an abandoned query may take before botmeter gives up on it.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

tokio::task_local! {
    static REQUEST: RequestReads;
}

/// The longest request id taken from a client's `x-request-id`.
const MAX_REQUEST_ID_LEN: usize = 64;

/// One request's id and the count and time of the queries it has sent.
#[derive(Debug, Clone)]
struct RequestReads {
    id: Arc<str>,
    queries: Arc<AtomicU32>,
    /// Microseconds its reads waited for ClickHouse, summed.
    clickhouse_us: Arc<AtomicU64>,
}

impl RequestReads {
    fn new(id: &str) -> Self {
        Self {
            id: Arc::from(id),
            queries: Arc::new(AtomicU32::new(0)),
            clickhouse_us: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The next query id of this request.
    fn next_query_id(&self) -> String {
        let n = self.queries.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}-{n}", self.id)
    }
}

/// A fresh request id: 16 random hex digits (std's hasher keys are random per process and per
/// call).
fn fresh_request_id() -> String {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", hasher.finish())
}

/// Whether a client's `x-request-id` can be this request's id, and so the prefix of its ClickHouse
/// query ids: 1 to [`MAX_REQUEST_ID_LEN`] letters, digits, `-`, `_` and `.`.
fn usable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Makes the id of a request that came without a usable one (tower-http's `SetRequestId`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FreshRequestId;

impl MakeRequestId for FreshRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&fresh_request_id())
            .ok()
            .map(RequestId::new)
    }
}

/// Middleware, before the request id is set: drops a client's `x-request-id` that cannot be a
/// ClickHouse query id prefix (a fresh one is made instead). A usable one is kept, so a proxy's
/// request id leads from its log to botmeter's and into ClickHouse's `system.query_log`.
pub(super) async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let unusable = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|id| !usable_request_id(id.as_bytes()));
    if unusable {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(request).await
}

/// What the access log and the metrics need to know of an answered request, which only the
/// handler's side sees: set on the response by [`count_reads`], read by [`access_log`].
#[derive(Debug, Clone)]
struct Answered {
    route: String,
    queries: u32,
    clickhouse: Duration,
}

/// Middleware, inside the access log: runs the request with its id as the prefix of its ClickHouse
/// query ids, counts its queries and their time, and records the request metrics ([`metric`]).
pub(super) async fn count_reads(request: Request, next: Next) -> Response {
    let id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map_or_else(fresh_request_id, str::to_owned);
    let reads = RequestReads::new(&id);
    // The route as the router names it (`/v1/owners/{owner_id}/usage`), never the raw path: a
    // label per owner id would grow without bound.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let (queries, clickhouse_us) = (reads.queries.clone(), reads.clickhouse_us.clone());
    let started = Instant::now();
    let mut response = REQUEST.scope(reads, next.run(request)).await;
    let elapsed = started.elapsed();
    let clickhouse = Duration::from_micros(clickhouse_us.load(Ordering::Relaxed));
    let status = response.status().as_u16();
    let labels = [("route", route.clone()), ("status", status.to_string())];
    metrics::counter!(metric::REQUESTS, &labels).increment(1);
    let route_label = [("route", route.clone())];
    metrics::histogram!(metric::REQUEST_SECONDS, &route_label).record(elapsed.as_secs_f64());
    metrics::histogram!(metric::CLICKHOUSE_SECONDS, &route_label).record(clickhouse.as_secs_f64());
    response.extensions_mut().insert(Answered {
        route,
        queries: queries.load(Ordering::Relaxed),
        clickhouse,
    });
    response
}

/// The access log layer ([`access_log`]).
pub(super) type AccessLog = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    (),
    fn(&Response, Duration, &Span),
    (),
    (),
    (),
>;

/// The access log: tower-http's `TraceLayer`, a `request` span per request naming its id, method
/// and path (every log line of the request carries them), and one `request answered` line with the
/// status, the latency, the route and the time spent in ClickHouse. A 5xx is in that line; no
/// second, error-level line is written for it.
pub(super) fn access_log() -> AccessLog {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> Span)
        .on_request(())
        .on_response(log_answered as fn(&Response, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

fn request_span(request: &Request) -> Span {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", request_id = %id, method = %request.method(),
        path = %request.uri().path())
}

fn log_answered(response: &Response, latency: Duration, _: &Span) {
    let answered = response.extensions().get::<Answered>();
    info!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1e3,
        clickhouse_ms = answered.map_or(0.0, |a| a.clickhouse.as_secs_f64() * 1e3),
        queries = answered.map_or(0, |a| a.queries),
        route = %answered.map_or("unmatched", |a| a.route.as_str()),
        "request answered"
    );
}

/// The API's metrics, published by `botmeter serve --metrics-listen` ([`describe_metrics`]).
pub mod metric {
    /// Requests answered, by route (as the router names it) and HTTP status.
    pub const REQUESTS: &str = "botmeter_api_requests_total";
    /// Seconds from receiving a request to answering it, by route.
    pub const REQUEST_SECONDS: &str = "botmeter_api_request_seconds";
    /// Seconds a request spent waiting for ClickHouse (all its queries), by route.
    pub const CLICKHOUSE_SECONDS: &str = "botmeter_api_clickhouse_seconds";
    /// Requests shed with 503 because `--max-concurrent-requests` reports were running.
    pub const SHED: &str = "botmeter_api_shed_total";
    /// ClickHouse queries killed because their request went away or their deadline passed.
    pub const KILLED_QUERIES: &str = "botmeter_api_killed_queries_total";
}

/// `HELP` text and units of the API's metrics.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        metric::REQUESTS,
        Unit::Count,
        "API requests answered, by route and HTTP status"
    );
    describe_histogram!(
        metric::REQUEST_SECONDS,
        Unit::Seconds,
        "Seconds from receiving an API request to answering it, by route"
    );
    describe_histogram!(
        metric::CLICKHOUSE_SECONDS,
        Unit::Seconds,
        "Seconds an API request spent waiting for ClickHouse (all its queries), by route"
    );
    describe_counter!(
        metric::SHED,
        Unit::Count,
        "Report requests shed with 503 at the concurrency limit (--max-concurrent-requests)"
    );
    describe_counter!(
        metric::KILLED_QUERIES,
        Unit::Count,
        "ClickHouse queries killed because their request went away or their deadline passed"
    );
    super::fleet::describe_gauges();
    super::alert_gauges::describe_gauges();
}

/// Whether queries may carry settings: learned once per state from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadMode {
    /// Send `max_execution_time` with every query.
    WithSettings,
    /// The user is `readonly = 1`: send no settings; its profile's `max_execution_time` applies.
    ProfileOnly,
}

/// One row of the session probe.
#[derive(Debug, Row, Deserialize)]
struct SettingRow {
    name: String,
    value: String,
}

impl AppState {
    /// Runs one read: `run` gets a client whose queries carry this read's `query_id` (and
    /// `max_execution_time` when the user may set it); past the query deadline, or when the caller
    /// drops the returned future, the query is killed on the server.
    pub(crate) async fn read<T, F, Fut>(&self, action: impl Into<String>, run: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = clickhouse::error::Result<T>>,
    {
        let mode = self.read_mode().await;
        let query_id = REQUEST
            .try_with(RequestReads::next_query_id)
            .unwrap_or_else(|_| RequestReads::new(&fresh_request_id()).next_query_id());
        let mut client = self.client.clone().with_option("query_id", &query_id);
        if mode == ReadMode::WithSettings {
            client =
                client.with_option("max_execution_time", self.max_execution_secs().to_string());
        }
        let mut guard = KillOnDrop {
            client: Some(self.client.clone()),
            query_id,
        };
        let started = Instant::now();
        let result = with_deadline(action, self.query_timeout, run(client)).await;
        let _ = REQUEST.try_with(|request| {
            request
                .clickhouse_us
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed)
        });
        if !matches!(result, Err(Error::Timeout { .. })) {
            // It answered (or failed) on the server: nothing is left running there.
            guard.client = None;
        }
        result
    }

    /// [`Self::query_timeout`] in whole seconds, rounded up: the server's own deadline.
    pub(super) fn max_execution_secs(&self) -> u64 {
        self.query_timeout.as_millis().div_ceil(1000).max(1) as u64
    }

    /// Asks the server once whether this user may change settings (`readonly` other than 1). A
    /// failed probe is not remembered: the read goes ahead with settings, the next one asks again.
    async fn read_mode(&self) -> ReadMode {
        let cell: &OnceCell<ReadMode> = &self.read_mode;
        if let Some(mode) = cell.get() {
            return *mode;
        }
        let probe = with_deadline(
            "read the session's readonly and max_execution_time",
            self.query_timeout,
            self.client
                .query(
                    "SELECT name, value FROM system.settings \
                     WHERE name IN ('readonly', 'max_execution_time')",
                )
                .fetch_all::<SettingRow>(),
        )
        .await;
        let rows = match probe {
            Ok(rows) => rows,
            Err(err) => {
                warn!(error = %err, "could not read the clickhouse session's settings");
                return ReadMode::WithSettings;
            }
        };
        let setting = |name: &str| {
            rows.iter()
                .find(|r| r.name == name)
                .map_or("0", |r| r.value.as_str())
                .to_owned()
        };
        let (readonly, profile_limit) = (setting("readonly"), setting("max_execution_time"));
        let mode = if readonly == "1" {
            ReadMode::ProfileOnly
        } else {
            ReadMode::WithSettings
        };
        if mode == ReadMode::ProfileOnly && profile_limit == "0" {
            warn!(
                "the clickhouse user is readonly = 1 without max_execution_time in its profile: \
                   queries are killed at the deadline, but the server sets no limit of its own"
            );
        }
        info!(%readonly, profile_max_execution_time = %profile_limit, ?mode, "clickhouse session");
        *cell.get_or_init(|| async { mode }).await
    }
}

/// Kills its query on the server when dropped armed (`client` is `Some`).
struct KillOnDrop {
    client: Option<Client>,
    query_id: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let query_id = std::mem::take(&mut self.query_id);
        runtime.spawn(async move {
            let kill = query_id::kill(&client, &query_id, query_id::Wait::Async);
            match tokio::time::timeout(KILL_TIMEOUT, kill).await {
                Ok(Ok(())) => {
                    metrics::counter!(metric::KILLED_QUERIES).increment(1);
                    info!(%query_id, "abandoned query killed on clickhouse")
                }
                Ok(Err(err)) => warn!(%query_id, error = %err, "failed to kill an abandoned query"),
                Err(_) => warn!(%query_id, "failed to kill an abandoned query: no answer in 5s"),
            }
        });
    }
}
