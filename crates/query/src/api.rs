//! The HTTP API: reports answered from ClickHouse, plus liveness, readiness and the OpenAPI
//! description ([`ROUTES`] lists every route).
//!
//! Each resource module has its own `router()`, merged by [`router`]; `auth` establishes who is
//! asking (API keys and roles, or open when none are configured) before any handler runs. Every
//! failure goes through [`ApiError`], so every response that is not a report is a JSON body
//! `{"error": {"code": "...", "message": "..."}}`: bad input is a 400 naming the parameter and its
//! value, a missing or unknown key a 401, a route outside the key's role a 403, an unknown route or
//! thing a 404, a ClickHouse failure a 503 (logged; its text never reaches the client). Nothing a
//! client sends can produce a 500. Every value reaches SQL as a bound parameter; the one value that
//! SQL needs as a constant, the time zone, is bound as a literal only after it was found in the tz
//! database, in that database's own spelling.

mod alert_gauges;
mod alerts;
mod anomalies;
mod audit;
mod auth;
mod catalog;
mod customer_render;
mod customers;
mod error;
mod fleet;
mod health;
mod hygiene;
mod metadata_groups;
mod openapi;
mod overage;
mod overage_forecast;
mod owners;
pub(crate) mod params;
mod plan;
mod reads;
mod report;
mod settings;
mod tenancy;
mod top;
mod usage;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{Method, Uri};
use axum::Router;
use clickhouse::Client;
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, Semaphore};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::{info, warn};

use crate::config::ValidClickHouseConfig;
use crate::error::{Error, Result};

pub use alert_gauges::{
    refresh_alert_gauges, run_alert_gauges, AlertGauges, ALERTS_FIRING, ALERT_GAUGES_INTERVAL,
};
pub use alerts::{AlertList, MAX_ALERTS};
pub use anomalies::{
    AnomalyReport, ControlAnomaly, FlaggedUsage, TrafficSums, UnattributedUsage,
    MAX_CONTROL_ANOMALIES,
};
pub use audit::{
    AuditAlert, AuditEvent, AuditReport, CredentialAudit, ALERTS_SOURCE, MAX_AUDIT_EVENTS,
};
pub use auth::{key_digest, Access, ApiKeyEntry, ApiKeys, ApiKeysFile, Role};
pub use catalog::CredentialCounts;
pub use customers::{CustomerBotUser, CustomerCredential, CustomerReport};
pub use error::ApiError;
pub(crate) use fleet::dropped_credentials;
pub use fleet::{
    fleet_gauge, refresh_fleet, run_fleet_gauges, FleetAgent, FleetCounts, FleetCredential,
    FleetGauges, FleetOwner, FleetReport, FleetState, FleetTimeline,
    DEFAULT_FLEET_DROP_GRACE_SECONDS, DEFAULT_FLEET_IDLE_DAYS, DEFAULT_FLEET_TIMELINE_MAX_MIB,
    FLEET_GAUGES_INTERVAL, FLEET_SNAPSHOT_MAX_AGE_SECS, MAX_FLEET_DROP_GRACE_SECONDS,
    MAX_FLEET_LIMIT, MAX_FLEET_TIMELINE_MAX_MIB, MIN_FLEET_TIMELINE_MAX_MIB,
};
pub use hygiene::{
    CredentialHygiene, CredentialHygieneReport, DEFAULT_CREDENTIAL_ROTATION_DAYS,
    MAX_CREDENTIALS_LIMIT, MAX_ROTATION_DAYS,
};
pub use openapi::{ApiDoc, ErrorBody, ErrorDetail};
pub use overage::{
    CredentialShare, EndpointShare, MetricOverage, OverageReport, OwnerShare, Share,
};
pub(crate) use overage_forecast::forecast_now;
pub use overage_forecast::{MetricForecast, OverageForecast, OwnerForecast, FORECAST_METHOD};
pub use owners::{Owner, OwnerList};
pub use params::{parse_time, MAX_RANGE_DAYS};
pub use plan::{Metric, MetricPlan, MetricPlanFile, Plan, PlanFile};
pub use reads::{describe_metrics, metric, REQUEST_ID_HEADER};
pub use settings::{Format as SettingsFormat, SettingsError};
pub use top::{TopGroup, TopOwner, TopReport, MAX_TOP_LIMIT};
pub use usage::{UsageBucket, UsageGroup, UsageMetrics, UsageReport};

/// Every route: method and path, as the router and the OpenAPI description name them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/owners"),
    ("GET", "/v1/owners/{owner_id}/usage"),
    ("GET", "/v1/usage/top"),
    ("GET", "/v1/anomalies"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/overage"),
    ("GET", "/v1/customers/{customer_id}/report"),
    ("GET", "/v1/credentials"),
    ("GET", "/v1/fleet"),
    ("GET", "/v1/alerts"),
];

/// Default for [`AppState::with_max_concurrent_requests`]: requests answered at once before the
/// API sheds load (503 with `Retry-After`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 16;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    client: Client,
    query_timeout: Duration,
    /// Whether queries may carry settings, learned from the server on the first read.
    read_mode: Arc<OnceCell<reads::ReadMode>>,
    /// Permits of the requests in flight; one more is shed.
    concurrency: Arc<Semaphore>,
    max_concurrent_requests: usize,
    api_keys: ApiKeys,
    plan: Option<Arc<Plan>>,
    customer_metadata_key: Arc<str>,
    /// Days after which a live credential is due for rotation in `/v1/credentials`.
    credential_rotation_days: u32,
    /// Seconds with no agent online before `/v1/fleet` calls a credential dropped.
    fleet_drop_grace_seconds: u32,
    /// The whole fleet over time as of a recent refresh, for `/v1/fleet`.
    fleet_timeline: Arc<std::sync::RwLock<Option<Arc<FleetTimeline>>>>,
    /// Whether the fleet refresh builds the timeline (else every `/v1/fleet` reads ClickHouse).
    fleet_timeline_enabled: bool,
    /// The traffic the timeline is built with, kept between refreshes.
    fleet_traffic: Arc<tokio::sync::Mutex<fleet::TrafficReader>>,
}

/// `mib` MiB in bytes (all of memory when that does not fit).
pub fn mib_bytes(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("query_timeout", &self.query_timeout)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("api_keys", &self.api_keys)
            .field("plan", &self.plan.as_ref().map(|p| p.name.as_str()))
            .field("customer_metadata_key", &self.customer_metadata_key)
            .field("credential_rotation_days", &self.credential_rotation_days)
            .field("fleet_drop_grace_seconds", &self.fleet_drop_grace_seconds)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State reading the configured database (validates the config; no IO). Open (no API keys),
    /// no plan, customers by bot user id only, until the `with_*` methods say otherwise.
    pub fn new(config: &ValidClickHouseConfig) -> Result<Self> {
        Ok(Self {
            client: config.client(),
            query_timeout: config.query_timeout(),
            read_mode: Arc::new(OnceCell::new()),
            concurrency: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENT_REQUESTS)),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            api_keys: ApiKeys::default(),
            plan: None,
            customer_metadata_key: Arc::from(""),
            credential_rotation_days: DEFAULT_CREDENTIAL_ROTATION_DAYS,
            fleet_drop_grace_seconds: DEFAULT_FLEET_DROP_GRACE_SECONDS,
            fleet_timeline: Arc::default(),
            fleet_timeline_enabled: true,
            fleet_traffic: Arc::new(tokio::sync::Mutex::new(fleet::TrafficReader::new(
                mib_bytes(DEFAULT_FLEET_TIMELINE_MAX_MIB),
            ))),
        })
    }

    /// Answers at most `max` requests at once (at least 1); one more is answered 503 with
    /// `Retry-After` at once rather than queued. Liveness, readiness and the OpenAPI description
    /// are not counted.
    pub fn with_max_concurrent_requests(mut self, max: usize) -> Self {
        let max = max.max(1);
        self.concurrency = Arc::new(Semaphore::new(max));
        self.max_concurrent_requests = max;
        self
    }

    /// Requires these API keys (an empty set leaves the API open).
    pub fn with_api_keys(mut self, keys: ApiKeys) -> Self {
        self.api_keys = keys;
        self
    }

    /// Prices overage with this plan (`/v1/overage` answers 404 without one).
    pub fn with_plan(mut self, plan: Plan) -> Self {
        self.plan = Some(Arc::new(plan));
        self
    }

    /// Also finds a customer's bot users by this key at the top level of their JSON metadata (as of
    /// each event's time); credentials are the customer's by ownership only. The key
    /// is letters, digits, `_`, `-` and `.`, at most 64 characters.
    pub fn with_customer_metadata_key(mut self, key: &str) -> std::result::Result<Self, String> {
        let valid = !key.is_empty()
            && key.len() <= 64
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            return Err(format!(
                "customer metadata key: expected letters, digits, _, - and . (at most 64), found {key:?}"
            ));
        }
        self.customer_metadata_key = Arc::from(key);
        Ok(self)
    }

    /// Reports a live credential as due for rotation in `/v1/credentials` once it is this many
    /// whole days old (1 to [`MAX_ROTATION_DAYS`]; a request may ask for another period).
    pub fn with_credential_rotation_days(mut self, days: u32) -> std::result::Result<Self, String> {
        if !(1..=MAX_ROTATION_DAYS).contains(&days) {
            return Err(format!(
                "credential rotation days: expected 1 to {MAX_ROTATION_DAYS}, found {days}"
            ));
        }
        self.credential_rotation_days = days;
        Ok(self)
    }

    /// Calls a credential dropped in `/v1/fleet` once it has had no agent online for longer than
    /// this many seconds (0 to [`MAX_FLEET_DROP_GRACE_SECONDS`]; a request may ask for another).
    pub fn with_fleet_drop_grace_seconds(
        mut self,
        seconds: u32,
    ) -> std::result::Result<Self, String> {
        if seconds > MAX_FLEET_DROP_GRACE_SECONDS {
            return Err(format!(
                "fleet drop grace: expected 0 to {MAX_FLEET_DROP_GRACE_SECONDS} seconds, found {seconds}"
            ));
        }
        self.fleet_drop_grace_seconds = seconds;
        Ok(self)
    }

    /// Whether [`fleet::refresh_fleet`] keeps the fleet timeline that answers `/v1/fleet` (the
    /// default); without it every request reads ClickHouse and only the gauges are refreshed.
    pub fn with_fleet_timeline(mut self, enabled: bool) -> Self {
        self.fleet_timeline_enabled = enabled;
        self
    }

    pub(crate) fn fleet_timeline_enabled(&self) -> bool {
        self.fleet_timeline_enabled
    }

    /// The fleet timeline, when its refresh began at most [`FLEET_SNAPSHOT_MAX_AGE_SECS`] before
    /// now.
    pub(crate) fn fresh_fleet_timeline(&self) -> Option<Arc<FleetTimeline>> {
        let now = u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX);
        let timeline = self
            .fleet_timeline
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()?;
        (now.saturating_sub(timeline.at()) <= FLEET_SNAPSHOT_MAX_AGE_SECS).then_some(timeline)
    }

    /// The first second the current fleet timeline answers `at` from (earlier ones are read from
    /// ClickHouse); `None` before its first refresh.
    pub fn fleet_timeline_horizon(&self) -> Option<u32> {
        self.fleet_timeline
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|timeline| timeline.horizon())
    }

    pub(crate) fn set_fleet_timeline(&self, timeline: Arc<FleetTimeline>) {
        *self
            .fleet_timeline
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(timeline);
    }

    /// The traffic the fleet timeline is built with.
    pub(crate) fn fleet_traffic(&self) -> Arc<tokio::sync::Mutex<fleet::TrafficReader>> {
        self.fleet_traffic.clone()
    }

    /// Bounds the fleet timeline's traffic to `max_bytes` (default
    /// [`DEFAULT_FLEET_TIMELINE_MAX_MIB`] MiB; `botmeter serve --fleet-timeline-max-mib` accepts
    /// [`MIN_FLEET_TIMELINE_MAX_MIB`]..=[`MAX_FLEET_TIMELINE_MAX_MIB`]): past it the oldest
    /// seconds are dropped and an `at` before what is kept reads ClickHouse. Set before serving
    /// (it starts the traffic empty).
    pub fn with_fleet_timeline_max_bytes(mut self, max_bytes: usize) -> Self {
        self.fleet_traffic = Arc::new(tokio::sync::Mutex::new(fleet::TrafficReader::new(
            max_bytes,
        )));
        self
    }

    /// The customer metadata key, empty when none.
    pub(crate) fn metadata_key(&self) -> &str {
        &self.customer_metadata_key
    }

    /// Whether API keys are required.
    pub fn is_open(&self) -> bool {
        self.api_keys.is_empty()
    }
}

/// The whole API. The reports share one concurrency limit ([`AppState::with_max_concurrent_requests`]):
/// beyond it a request is shed (503, `Retry-After`), never queued.
pub fn router(state: AppState) -> Router {
    let limit = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            metrics::counter!(reads::metric::SHED).increment(1);
            ApiError::Overloaded
        }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(
            state.concurrency.clone(),
        ));
    let reports = Router::new()
        .merge(usage::router())
        .merge(owners::router())
        .merge(top::router())
        .merge(anomalies::router())
        .merge(alerts::router())
        .merge(audit::router())
        .merge(overage::router())
        .merge(customers::router())
        .merge(hygiene::router())
        .merge(fleet::router())
        .route_layer(limit);
    Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .merge(reports)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        // Outermost last: a usable client id is kept or a fresh one made, echoed on the response,
        // named by the access log's span, and made the prefix of the request's query ids.
        .layer(axum::middleware::from_fn(reads::count_reads))
        .layer(reads::access_log())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(reads::FreshRequestId))
        .layer(axum::middleware::from_fn(reads::drop_unusable_request_id))
        .with_state(state)
}

/// Serves the API on `addr` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    addr: SocketAddr,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    serve_listener(listener, state, shutdown).await
}

/// Like [`serve`], on a listener already bound (for port 0 in tests, or socket activation).
pub async fn serve_listener(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    if state.is_open() {
        warn!(%addr, "no API keys configured (--api-keys-file): the API is open to anyone who can reach it");
    }
    info!(%addr, "http api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    info!(%addr, "http api stopped");
    Ok(())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    /// State whose ClickHouse refuses every connection (nothing listens on port 1).
    pub(crate) fn unreachable_state() -> AppState {
        let config = crate::ClickHouseConfig {
            url: "http://127.0.0.1:1".to_owned(),
            query_timeout_ms: 2_000,
            ..crate::ClickHouseConfig::default()
        };
        AppState::new(&config.validate().unwrap()).unwrap()
    }

    pub(crate) async fn call(
        state: AppState,
        method: &str,
        uri: &str,
    ) -> (StatusCode, String, serde_json::Value) {
        let (status, content_type, body, _) = call_with(state, method, uri, None).await;
        (status, content_type, body)
    }

    /// Asserts that each `(uri, parameter, value)` is answered 400 with a message naming the
    /// parameter and quoting the value.
    pub(crate) async fn assert_each_is_a_400_naming(cases: &[(&str, &str, &str)]) {
        for (uri, parameter, value) in cases {
            let (status, _, body) = call(unreachable_state(), "GET", uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(parameter) && message.contains(value),
                "{uri}: {message}"
            );
        }
    }

    /// Like [`call`], with an `Authorization` header; also returns `WWW-Authenticate`.
    pub(crate) async fn call_with(
        state: AppState,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
    ) -> (StatusCode, String, serde_json::Value, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        let status = response.status();
        let www = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let json = if content_type.starts_with("application/json") {
            serde_json::from_slice(&body).unwrap()
        } else {
            serde_json::Value::String(String::from_utf8(body.to_vec()).unwrap())
        };
        (status, content_type, json, www)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn unknown_route_is_a_json_404() {
        let (status, content_type, body) = call(unreachable_state(), "GET", "/v2/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(content_type.starts_with("application/json"));
        assert_eq!(body["error"]["code"], "not_found");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v2/nothing"));
    }

    #[tokio::test]
    async fn every_route_is_in_the_openapi_description_and_answers() {
        use utoipa::OpenApi as _;
        let spec = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
        let paths = spec["paths"].as_object().unwrap();
        for (method, path) in super::ROUTES {
            let operation = &paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} is not in the OpenAPI description"))
                [method.to_lowercase()];
            assert!(
                operation.is_object(),
                "{method} {path} is not in the OpenAPI description"
            );
            assert!(
                operation["responses"]["200"].is_object(),
                "{method} {path}: no 200"
            );
            // The router has the route: whatever it answers, it is not the unknown-route 404.
            let uri = path
                .replace("{owner_id}", "bot_1")
                .replace("{customer_id}", "acme");
            let (_, _, body) = call(unreachable_state(), method, &uri).await;
            assert!(
                !body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("no route"),
                "{method} {uri}: {body}"
            );
        }
        assert_eq!(
            paths.len(),
            super::ROUTES.len(),
            "the description names a route the router lacks"
        );
        // The spec is served.
        let (status, content_type, served) =
            call(unreachable_state(), "GET", "/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/json"));
        assert_eq!(served, spec);
        assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    }

    #[tokio::test]
    async fn wrong_method_is_a_json_405() {
        let (status, _, body) = call(unreachable_state(), "POST", "/healthz").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
}
