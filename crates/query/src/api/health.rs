//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: ClickHouse answers a
//! `SELECT 1` in the configured database, within the query deadline).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: ClickHouse answers `SELECT 1` within the query deadline.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "ready", content_type = "application/json"),
        (status = 503, description = "ClickHouse is unavailable", body = super::openapi::ErrorBody),
    ))]
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state
        .read("check readiness with SELECT 1", |client| {
            client.query("SELECT 1").execute()
        })
        .await?;
    Ok(Json(json!({ "status": "ready" })))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn healthz_is_ok_without_clickhouse() {
        let (status, _, body) = call(unreachable_state(), "GET", "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok");
    }

    #[tokio::test]
    async fn readyz_is_a_json_503_when_clickhouse_is_down() {
        let (status, content_type, body) = call(unreachable_state(), "GET", "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(content_type.starts_with("application/json"));
        assert_eq!(body["error"]["code"], "unavailable");
        // Internals (addresses, client errors) stay in the log.
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("127.0.0.1") && !message.contains("error"),
            "{message}"
        );
    }
}
