//! The HTTP side of `botmeter receive`: one handler for Firehose's `POST` (any path, so the URL
//! configured on the stream may carry one), `/healthz` and `/readyz`. Per request, in order:
//! request id, access key (before the body is read), the concurrency limit (429 beyond it, never
//! queued), the request window (a completed id answers 200 at once; one being processed 409),
//! the body (413 past `--max-body-bytes`, gunzipped or not), decoding every record (any error
//! refuses the whole request: nothing is published), publishing, waiting for every
//! acknowledgement, logging the request as completed, and only then 200.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::firehose::{self, FirehoseResponse, Reject};
use super::keys::AccessKeys;
use super::metrics as m;
use super::publish::Publisher;
use super::window::{now_ms, Completed, RequestWindow};

/// Everything a request needs; cheap to clone.
#[derive(Clone)]
pub struct ReceiveState {
    pub(crate) keys: Arc<AccessKeys>,
    pub(crate) publisher: Publisher,
    pub(crate) window: Arc<Mutex<RequestWindow>>,
    pub(crate) in_progress: Arc<Mutex<HashSet<String>>>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_concurrent_requests: usize,
    /// Set once the request window is rebuilt.
    pub(crate) window_rebuilt: Arc<AtomicBool>,
    /// Set when shutting down (in-flight requests finish, no new ones are taken).
    pub(crate) stopping: Arc<AtomicBool>,
}

impl std::fmt::Debug for ReceiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveState")
            .field("keys", &self.keys)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// The router.
pub fn router(state: ReceiveState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(receive)
        .with_state(state)
}

async fn ready(State(state): State<ReceiveState>) -> Response {
    if state.window_rebuilt.load(Ordering::Relaxed) && !state.stopping.load(Ordering::Relaxed) {
        (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not_ready", "reason": "rebuilding the request window from the request log, or shutting down"})),
        )
            .into_response()
    }
}

/// The Firehose response: `requestId`, `timestamp`, and `errorMessage` unless 200.
fn answer(status: StatusCode, request_id: &str, error_message: Option<String>) -> Response {
    metrics::counter!(m::REQUESTS, "status" => status.as_u16().to_string()).increment(1);
    let body = FirehoseResponse {
        request_id: request_id.to_owned(),
        timestamp: now_ms(),
        error_message,
    };
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

fn reject(request_id: &str, reject: Reject) -> Response {
    metrics::counter!(m::REJECTS, "reason" => reject.reason).increment(1);
    // The message names fields and values of the request, never the access key.
    warn!(request_id, status = reject.status.as_u16(), reason = reject.reason, message = %reject.message, "firehose request refused");
    answer(reject.status, request_id, Some(reject.message))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Removes a request id from the in-progress set when its request ends, however it ends.
struct InProgress {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.id);
        }
    }
}

async fn receive(State(state): State<ReceiveState>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let raw_id = header_str(&parts.headers, firehose::REQUEST_ID_HEADER).unwrap_or_default();
    let request_id = if firehose::check_request_id(raw_id).is_ok() {
        raw_id.to_owned()
    } else {
        String::new()
    };
    if parts.method != Method::POST {
        return reject(
            &request_id,
            Reject::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("method {}: Firehose delivers with POST", parts.method),
            ),
        );
    }
    if parts.headers.get(firehose::REQUEST_ID_HEADER).is_none() {
        return reject(
            "",
            Reject::bad_request(
                "missing_request_id",
                "header X-Amz-Firehose-Request-Id: missing",
            ),
        );
    }
    if let Err(bad) = firehose::check_request_id(raw_id) {
        return reject("", bad);
    }
    match header_str(&parts.headers, firehose::ACCESS_KEY_HEADER) {
        None => {
            return reject(
                &request_id,
                Reject::new(
                    StatusCode::UNAUTHORIZED,
                    "access_key_missing",
                    "header X-Amz-Firehose-Access-Key: missing; configure the access key on the Firehose stream's HTTP endpoint destination",
                ),
            )
        }
        Some(key) if state.keys.check(key).is_none() => {
            return reject(
                &request_id,
                Reject::new(
                    StatusCode::UNAUTHORIZED,
                    "access_key_invalid",
                    "header X-Amz-Firehose-Access-Key: not a configured access key",
                ),
            )
        }
        Some(_) => {}
    }
    if let Some(version) = parts.headers.get(firehose::PROTOCOL_VERSION_HEADER) {
        if version.as_bytes() != b"1.0" {
            return reject(
                &request_id,
                Reject::bad_request(
                    "unsupported_protocol_version",
                    format!(
                        "header X-Amz-Firehose-Protocol-Version: expected 1.0, found {version:?}"
                    ),
                ),
            );
        }
    }
    if let Some(attributes) = parts.headers.get(firehose::COMMON_ATTRIBUTES_HEADER) {
        let well_formed = serde_json::from_slice::<serde_json::Value>(attributes.as_bytes())
            .is_ok_and(|v| {
                v.get("commonAttributes")
                    .is_some_and(serde_json::Value::is_object)
            });
        if !well_formed {
            return reject(
                &request_id,
                Reject::bad_request(
                    "invalid_common_attributes",
                    "header X-Amz-Firehose-Common-Attributes: expected JSON {\"commonAttributes\": {…}}",
                ),
            );
        }
    }
    let gzip = match header_str(&parts.headers, header::CONTENT_ENCODING.as_str()) {
        None | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return reject(
                &request_id,
                Reject::bad_request(
                    "unsupported_encoding",
                    format!("header Content-Encoding: expected gzip or none, found {other:?}"),
                ),
            )
        }
    };
    // The concurrency limit bounds memory: at most this many bodies are held at once.
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return reject(
            &request_id,
            Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!(
                    "{} requests are being processed (--max-concurrent-requests); retry later",
                    state.max_concurrent_requests
                ),
            ),
        );
    };
    metrics::gauge!(m::IN_FLIGHT).increment(1.0);
    let response = accept(&state, &request_id, gzip, &parts.headers, body).await;
    metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
    metrics::histogram!(m::REQUEST_SECONDS).record(started.elapsed().as_secs_f64());
    response
}

/// The rest of a request that passed the checks on its headers and holds a permit.
async fn accept(
    state: &ReceiveState,
    request_id: &str,
    gzip: bool,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let _in_progress = {
        let mut set = state.in_progress.lock().expect("in-progress lock");
        if !set.insert(request_id.to_owned()) {
            drop(set);
            return reject(
                request_id,
                Reject::new(
                    StatusCode::CONFLICT,
                    "request_in_progress",
                    format!("request {request_id} is being processed by an earlier attempt; retry later"),
                ),
            );
        }
        InProgress {
            set: state.in_progress.clone(),
            id: request_id.to_owned(),
        }
    };
    // Checked while holding the request id: an earlier attempt puts its id in the window before
    // letting go of it, so an attempt sees one or the other, never neither.
    if state
        .window
        .lock()
        .expect("window lock")
        .contains(request_id, now_ms())
    {
        metrics::counter!(m::DUPLICATES).increment(1);
        info!(
            request_id,
            "firehose request already published; answered without publishing again"
        );
        return answer(StatusCode::OK, request_id, None);
    }
    let limit = state.max_body_bytes;
    let declared =
        header_str(headers, header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return reject(request_id, Reject::too_large("the body", limit));
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return reject(
                request_id,
                if too_large {
                    Reject::too_large("the body", limit)
                } else {
                    Reject::bad_request("unreadable_body", format!("body: could not be read: {e}"))
                },
            );
        }
    };
    let id = request_id.to_owned();
    // Gunzipping and parsing up to --max-body-bytes is CPU work: off the async threads.
    let decoded = tokio::task::spawn_blocking(move || {
        let json = firehose::decompress(&bytes, gzip, limit)?;
        firehose::decode(&json, &id)
    })
    .await;
    let decoded = match decoded {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(bad)) => return reject(request_id, bad),
        Err(e) => {
            return reject(
                request_id,
                Reject::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("decoding failed: {e}"),
                ),
            )
        }
    };
    let kafka_started = Instant::now();
    let published = match state.publisher.publish(request_id, &decoded).await {
        Ok(published) => published,
        Err(e) => {
            return reject(
                request_id,
                Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kafka_unavailable",
                    format!("not every record was acknowledged by Kafka; retry: {e:#}"),
                ),
            )
        }
    };
    metrics::histogram!(m::KAFKA_SECONDS).record(kafka_started.elapsed().as_secs_f64());
    let records = decoded.records.len() as u64;
    let completed = Completed {
        request_id: request_id.to_owned(),
        acked_at_ms: now_ms(),
        records,
        messages: published.control + published.traffic + published.dead_letters,
    };
    if let Err(e) = state.publisher.log_completed(&completed).await {
        // Every record is in Kafka: answer 200. Only a retry after a restart would repeat it
        // (and `botmeter run` marks repeated events as duplicates).
        metrics::counter!(m::LOG_ERRORS).increment(1);
        warn!(request_id, error = %format!("{e:#}"), "could not record the request as completed");
    }
    {
        let mut window = state.window.lock().expect("window lock");
        window.insert(request_id, completed.acked_at_ms, completed.acked_at_ms);
        metrics::gauge!(m::WINDOW_IDS).set(window.len() as f64);
    }
    metrics::counter!(m::RECORDS).increment(records);
    for (topic, n) in [
        ("control", published.control),
        ("traffic", published.traffic),
        ("dead_letter", published.dead_letters),
    ] {
        metrics::counter!(m::MESSAGES, "topic" => topic).increment(n);
    }
    info!(
        request_id,
        records,
        control = published.control,
        traffic = published.traffic,
        dead_letters = published.dead_letters,
        kafka_ms = kafka_started.elapsed().as_millis() as u64,
        "firehose request published"
    );
    answer(StatusCode::OK, request_id, None)
}
