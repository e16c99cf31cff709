//! The operations endpoint of `botmeter run`: Prometheus `/metrics`, `/healthz` (the process is
//! up) and `/readyz` (200 while the pipeline writes; 503 with the reason while ClickHouse writes
//! fail and the partitions are paused, or before the pipeline has started).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::pipeline::RunStats;

/// Metric names, one per question an operator asks.
pub mod names {
    /// Messages consumed and written, by topic kind and event kind.
    pub const EVENTS: &str = "botmeter_events_total";
    /// Dead letters, by reason.
    pub const DEAD_LETTERS: &str = "botmeter_dead_letters_total";
    /// Unattributed traffic events, by reason.
    pub const UNATTRIBUTED: &str = "botmeter_unattributed_total";
    /// Attributed traffic events with a flag, by flag.
    pub const FLAGGED: &str = "botmeter_flagged_total";
    /// Rows per traffic batch.
    pub const BATCH_ROWS: &str = "botmeter_batch_rows";
    /// Seconds to write one traffic batch (all its inserts).
    pub const BATCH_SECONDS: &str = "botmeter_batch_write_seconds";
    /// Failed ClickHouse writes (each retried).
    pub const CLICKHOUSE_ERRORS: &str = "botmeter_clickhouse_errors_total";
    /// Messages behind the end of each traffic partition, by topic and partition.
    pub const LAG: &str = "botmeter_consumer_lag_messages";
    /// 1 while ClickHouse writes fail and partitions are paused.
    pub const DEGRADED: &str = "botmeter_degraded";
    /// Ended sessions, endpoints and names evicted from the ownership state.
    pub const EVICTED: &str = "botmeter_state_evicted_total";
    /// Entries in the ownership state, by kind.
    pub const STATE_ENTRIES: &str = "botmeter_state_entries";
    /// Times a failed insert left the rollups short of the raw rows (`botmeter rollups rebuild`
    /// repairs them; the error log names the months).
    pub const ROLLUP_DAMAGE: &str = "botmeter_rollup_damage_total";
    /// Batches whose wait for the control plane ran out (`--max-control-wait-ms`): their traffic
    /// after what the control plane covered is written unattributed (`control_plane_behind`).
    pub const CONTROL_WAIT_BOUNDED: &str = "botmeter_control_wait_bounded_total";
    /// Repeated deliveries of an event id already written (status `duplicate`, counted nowhere).
    pub const REPEATED_EVENTS: &str = "botmeter_repeated_events_total";
    /// Event ids the repeat window remembers now (`--repeat-window-ms`, `--repeat-window-max-ids`).
    pub const REPEAT_WINDOW_IDS: &str = "botmeter_repeat_window_ids";
    /// Event ids the repeat window forgot before their window ended, because it held
    /// `--repeat-window-max-ids`: a repeat of one of them would be counted.
    pub const REPEAT_WINDOW_EVICTED: &str = "botmeter_repeat_window_evicted_total";
    /// Always 1, labeled with the version: which build runs.
    pub const BUILD_INFO: &str = "botmeter_build_info";
}

/// Buckets of `botmeter_batch_rows`: a batch holds 1 to `--batch-max-rows` (50,000 by default)
/// messages.
const ROW_BUCKETS: &[f64] = &[
    1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0, 250_000.0,
];
/// Buckets of every histogram in seconds.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// `HELP` text and unit of every metric `botmeter run` publishes.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        names::EVENTS,
        Unit::Count,
        "Messages consumed and written, by topic (control, traffic) and event kind"
    );
    describe_counter!(
        names::DEAD_LETTERS,
        Unit::Count,
        "Messages that could not be decoded, by reason and source topic"
    );
    describe_counter!(
        names::UNATTRIBUTED,
        Unit::Count,
        "Traffic events written unattributed, by reason (the missing link)"
    );
    describe_counter!(
        names::FLAGGED,
        Unit::Count,
        "Attributed traffic events with an anomaly flag, by flag"
    );
    describe_histogram!(
        names::BATCH_ROWS,
        Unit::Count,
        "Messages per traffic batch (one atomic insert with its Kafka positions)"
    );
    describe_histogram!(
        names::BATCH_SECONDS,
        Unit::Seconds,
        "Seconds to write one traffic batch to ClickHouse (all its inserts)"
    );
    describe_counter!(
        names::CLICKHOUSE_ERRORS,
        Unit::Count,
        "Failed ClickHouse writes (each retried with backoff)"
    );
    describe_gauge!(
        names::LAG,
        Unit::Count,
        "Messages between the consumer's position and the end of each assigned traffic partition"
    );
    describe_gauge!(
        names::DEGRADED,
        "1 while ClickHouse writes fail and the traffic partitions are paused, else 0"
    );
    describe_counter!(
        names::EVICTED,
        Unit::Count,
        "Ended sessions, endpoints and names evicted from the ownership state"
    );
    describe_gauge!(
        names::STATE_ENTRIES,
        Unit::Count,
        "Entries in the in-memory ownership state, by kind"
    );
    describe_counter!(
        names::ROLLUP_DAMAGE,
        Unit::Count,
        "Failed inserts that left the rollups short of the raw rows (botmeter rollups rebuild)"
    );
    describe_counter!(
        names::CONTROL_WAIT_BOUNDED,
        Unit::Count,
        "Traffic batches whose wait for the control plane ran out (--max-control-wait-ms)"
    );
    describe_counter!(
        names::REPEATED_EVENTS,
        Unit::Count,
        "Repeated deliveries of an event id already written (status duplicate, counted nowhere)"
    );
    describe_gauge!(
        names::REPEAT_WINDOW_IDS,
        Unit::Count,
        "Event ids the repeat window remembers"
    );
    describe_counter!(
        names::REPEAT_WINDOW_EVICTED,
        Unit::Count,
        "Event ids forgotten before their window ended (--repeat-window-max-ids reached)"
    );
    describe_gauge!(
        names::BUILD_INFO,
        "Always 1; the version label names the build"
    );
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(names::BATCH_ROWS.to_owned()), ROW_BUCKETS)?
        .install_recorder()?;
    describe();
    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

#[derive(Clone)]
struct OpsState {
    stats: Arc<RunStats>,
    prometheus: PrometheusHandle,
}

/// The operations router.
pub fn router(stats: Arc<RunStats>, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(OpsState { stats, prometheus })
}

/// `botmeter serve`'s metrics endpoint: `/metrics` only (its health is on the API's own
/// `/healthz` and `/readyz`).
pub fn metrics_router(prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(prometheus): State<PrometheusHandle>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    prometheus.render(),
                )
            }),
        )
        .with_state(prometheus)
}

async fn metrics_text(State(state): State<OpsState>) -> impl IntoResponse {
    metrics::gauge!(names::DEGRADED).set(if state.stats.degraded.load(Ordering::Relaxed) {
        1.0
    } else {
        0.0
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}

async fn ready(State(state): State<OpsState>) -> impl IntoResponse {
    let (status, reason) = if state.stats.degraded.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "clickhouse writes are failing; traffic partitions are paused and retried",
        )
    } else if !state.stats.started.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: rebuilding the ownership state",
        )
    } else {
        (StatusCode::OK, "ready")
    };
    (
        status,
        Json(
            serde_json::json!({ "status": if status == StatusCode::OK { "ready" } else { "degraded" }, "reason": reason }),
        ),
    )
}
