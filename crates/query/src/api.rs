//! The HTTP API: reports answered from ClickHouse, plus liveness and readiness.
//!
//! Each resource module has its own `router()`, merged by [`router`]. Every failure goes through
//! [`ApiError`], so every response that is not a report is a JSON body
//! `{"error": {"code": "...", "message": "..."}}`: bad input is a 400 naming the parameter and its
//! value, an unknown route a 404, a ClickHouse failure a 503 (logged; its text never reaches the
//! client). Nothing a client sends can produce a 500. Every value reaches SQL as a bound parameter.

mod error;
mod health;
mod usage;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, Uri};
use axum::Router;
use clickhouse::Client;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::ClickHouseConfig;
use crate::error::{Error, Result};

pub use error::ApiError;
pub use usage::{parse_time, UsageBucket, UsageMetrics, UsageReport, MAX_RANGE_DAYS};

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    client: Client,
    query_timeout: Duration,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State reading the configured database (validates the config; no IO).
    pub fn new(config: &ClickHouseConfig) -> Result<Self> {
        Ok(Self {
            client: config.client()?,
            query_timeout: config.query_timeout(),
        })
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(usage::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
        let config = ClickHouseConfig {
            url: "http://127.0.0.1:1".to_owned(),
            query_timeout_ms: 2_000,
            ..ClickHouseConfig::default()
        };
        AppState::new(&config).unwrap()
    }

    pub(crate) async fn call(
        state: AppState,
        method: &str,
        uri: &str,
    ) -> (StatusCode, String, serde_json::Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        let status = response.status();
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
        (status, content_type, json)
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
    async fn wrong_method_is_a_json_405() {
        let (status, _, body) = call(unreachable_state(), "POST", "/healthz").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }
}
