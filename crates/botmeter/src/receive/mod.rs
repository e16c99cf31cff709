//! `botmeter receive`: the HTTP endpoint an Amazon Data Firehose stream delivers ngrok's event
//! logs to (HTTP endpoint delivery, protocol 1.0), publishing each event to the control or the
//! traffic topic — and whatever is not an ngrok event to the dead-letter topic — and answering
//! 200 only once Kafka acknowledged every message of the request.
//!
//! - [`firehose`]: the protocol and the decoding of a body into messages (all or nothing);
//! - [`keys`]: the access keys (SHA-256 digests, constant-time comparison, several for rotation);
//! - [`publish`]: the idempotent `acks=all` producer and the wait for every acknowledgement;
//! - [`window`]: completed request ids, persisted in the request-log topic, so a retried request
//!   is not published twice;
//! - [`server`]: the HTTP handler, the concurrency limit, health;
//! - [`metrics`]: what it counts.

pub mod firehose;
pub mod keys;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod window;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tracing::info;

/// Default address (loopback: put it behind a TLS-terminating proxy, or give it certificates).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Default address of `/metrics`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9466";
/// Default request-log topic.
pub const DEFAULT_REQUEST_LOG_TOPIC: &str = "botmeter.firehose-requests";
/// Default largest body, on the wire and gunzipped: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;
/// Default requests processed at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4;
/// Default request window: Firehose retries for at most 2 hours (its retry duration, 0–7200 s)
/// after a buffer of at most 15 minutes; 3 hours covers both.
pub const DEFAULT_REQUEST_WINDOW_MS: u64 = 3 * 3_600_000;
/// Default most request ids remembered (about 100 bytes each).
pub const DEFAULT_REQUEST_WINDOW_MAX_IDS: usize = 1_000_000;
/// Default longest wait for Kafka to acknowledge a request's messages (Firehose waits 3 minutes
/// for an answer).
pub const DEFAULT_KAFKA_TIMEOUT_MS: u64 = 60_000;

/// Flags of `botmeter receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub kafka: ingest::KafkaArgs,
    /// Address to listen on. Firehose calls only `https://…:443`: give `--tls-cert`/`--tls-key`
    /// and listen on :443, or keep this on loopback behind a proxy that terminates TLS.
    #[arg(long, env = "BOTMETER_RECEIVE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Access keys accepted in `X-Amz-Firehose-Access-Key`: a TOML file of `[[keys]]` with `name`
    /// and `sha256` (the key's SHA-256 digest, never the key). Several keys may be live, for
    /// rotation. Required: receive never runs open.
    #[arg(long, env = "BOTMETER_RECEIVE_ACCESS_KEYS_FILE")]
    pub access_keys_file: PathBuf,
    /// TLS certificate chain (PEM) to serve HTTPS with rustls; needs `--tls-key`.
    #[arg(long, env = "BOTMETER_RECEIVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1); needs `--tls-cert`.
    #[arg(long, env = "BOTMETER_RECEIVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body in bytes, on the wire and again once gunzipped; a larger one is
    /// answered 413 (final for Firehose: keep its buffer size at or below 3/4 of this, since
    /// records travel base64-encoded).
    #[arg(long, env = "BOTMETER_RECEIVE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES, value_parser = parse_at_least_one)]
    pub max_body_bytes: usize,
    /// Requests processed at once; one more is answered 429 at once (Firehose retries it).
    /// Memory is bounded by about this times 3 × `--max-body-bytes` (BENCHMARKS.md).
    #[arg(long, env = "BOTMETER_RECEIVE_MAX_CONCURRENT_REQUESTS", default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = parse_at_least_one)]
    pub max_concurrent_requests: usize,
    /// Longest wait (ms) for Kafka to acknowledge every message of a request; past it the
    /// request is answered 503 and Firehose retries it.
    #[arg(long, env = "BOTMETER_RECEIVE_KAFKA_TIMEOUT_MS", default_value_t = DEFAULT_KAFKA_TIMEOUT_MS)]
    pub kafka_timeout_ms: u64,
    /// Topic where completed requests are recorded (created with one partition when missing);
    /// read back at start and while running, so a retried request is not published twice,
    /// across restarts and instances.
    #[arg(long, env = "BOTMETER_RECEIVE_REQUEST_LOG_TOPIC", default_value = DEFAULT_REQUEST_LOG_TOPIC)]
    pub request_log_topic: String,
    /// How long (ms) a completed request id is remembered.
    #[arg(long, env = "BOTMETER_RECEIVE_REQUEST_WINDOW_MS", default_value_t = DEFAULT_REQUEST_WINDOW_MS)]
    pub request_window_ms: u64,
    /// Most request ids remembered (the oldest are forgotten first).
    #[arg(long, env = "BOTMETER_RECEIVE_REQUEST_WINDOW_MAX_IDS", default_value_t = DEFAULT_REQUEST_WINDOW_MAX_IDS)]
    pub request_window_max_ids: usize,
    /// Create missing topics with this many traffic partitions (control, dead letters and the
    /// request log get 1), as `botmeter run` does.
    #[arg(long, env = "BOTMETER_TRAFFIC_PARTITIONS", default_value_t = ingest::config::DEFAULT_TRAFFIC_PARTITIONS)]
    pub traffic_partitions: i32,
    /// Serve Prometheus `/metrics` (requests by status, messages by topic, rejects by reason,
    /// Kafka latency) on this address, apart from the Firehose endpoint.
    #[arg(long, env = "BOTMETER_RECEIVE_METRICS_LISTEN", default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
}

/// A count of at least 1.
fn parse_at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of at least 1, found {text:?}"
        )),
    }
}

/// Runs `botmeter receive` until SIGINT/SIGTERM, then finishes the requests in flight.
pub async fn run(args: ReceiveArgs) -> anyhow::Result<()> {
    // Everything that can be checked without IO first.
    let kafka = args
        .kafka
        .config()
        .validate()
        .context("invalid Kafka settings")?;
    ingest::KafkaConfig {
        control_topic: args.request_log_topic.clone(),
        ..ingest::KafkaConfig::default()
    }
    .validate()
    .context("invalid --request-log-topic")?;
    anyhow::ensure!(
        args.traffic_partitions > 0,
        "--traffic-partitions must be at least 1, got {}",
        args.traffic_partitions
    );
    anyhow::ensure!(
        args.kafka_timeout_ms > 0,
        "--kafka-timeout-ms must be at least 1, got 0"
    );
    let keys =
        keys::AccessKeys::load(&args.access_keys_file).context("invalid --access-keys-file")?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "invalid TLS certificate {} or key {}",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
        _ => None,
    };

    ingest::admin::ensure_topics(
        &kafka.brokers,
        &[
            (&kafka.control_topic, 1),
            (&kafka.traffic_topic, args.traffic_partitions),
            (&kafka.dead_letter_topic, 1),
            (&args.request_log_topic, 1),
        ],
    )
    .await
    .context("failed to create the topics")?;
    let publisher = publish::Publisher::new(
        &kafka.brokers,
        publish::Topics {
            control: kafka.control_topic.clone(),
            traffic: kafka.traffic_topic.clone(),
            dead_letter: kafka.dead_letter_topic.clone(),
            request_log: args.request_log_topic.clone(),
        },
        args.kafka_timeout_ms,
    )?;
    publisher.check(Duration::from_secs(10)).await?;

    let prometheus =
        crate::ops::install_recorder().context("failed to install the metrics recorder")?;
    metrics::describe();
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "failed to listen on --metrics-listen {}",
                args.metrics_listen
            )
        })?;
    info!(addr = %metrics_listener.local_addr().unwrap_or(args.metrics_listen), "receive metrics listening (/metrics)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, crate::ops::metrics_router(prometheus)).await
        {
            tracing::error!(error = %e, "receive metrics endpoint failed");
        }
    });

    let window = Arc::new(Mutex::new(window::RequestWindow::new(
        args.request_window_ms,
        args.request_window_max_ids,
    )));
    let ready = Arc::new(AtomicBool::new(false));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = window::spawn_reader(
        &kafka.brokers,
        &args.request_log_topic,
        args.request_window_ms,
        window.clone(),
        ready.clone(),
        stop_reader.clone(),
    )?;
    // Serve only once the window is rebuilt: a retry of a request completed before the restart
    // must be recognized.
    while !ready.load(Ordering::Relaxed) {
        anyhow::ensure!(
            !reader.is_finished(),
            "the request-log reader stopped while rebuilding the window"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopping = Arc::new(AtomicBool::new(false));
    let state = server::ReceiveState {
        keys: Arc::new(keys),
        publisher: publisher.clone(),
        window,
        in_progress: Arc::new(Mutex::new(HashSet::new())),
        permits: Arc::new(tokio::sync::Semaphore::new(args.max_concurrent_requests)),
        max_body_bytes: args.max_body_bytes,
        max_concurrent_requests: args.max_concurrent_requests,
        window_rebuilt: ready.clone(),
        stopping: stopping.clone(),
    };
    let handle = axum_server::Handle::new();
    {
        let (handle, stopping) = (handle.clone(), stopping.clone());
        // In flight requests may take up to the Kafka timeout; give them that and a little more.
        let grace = Duration::from_millis(args.kafka_timeout_ms) + Duration::from_secs(5);
        tokio::spawn(async move {
            crate::cli::shutdown_signal().await;
            info!("stopping: no new requests; finishing the ones in flight");
            stopping.store(true, Ordering::Relaxed);
            handle.graceful_shutdown(Some(grace));
        });
    }
    let app = server::router(state).into_make_service();
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(
        addr = %args.listen,
        scheme,
        access_keys = args.access_keys_file.display().to_string(),
        max_body_bytes = args.max_body_bytes,
        max_concurrent_requests = args.max_concurrent_requests,
        "receive listening for Firehose deliveries"
    );
    let served = match tls {
        Some(tls) => {
            axum_server::bind_rustls(args.listen, tls)
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            axum_server::bind(args.listen)
                .handle(handle)
                .serve(app)
                .await
        }
    };
    served.with_context(|| format!("the Firehose endpoint on {} failed", args.listen))?;
    stop_reader.store(true, Ordering::Relaxed);
    publisher.flush(Duration::from_secs(10));
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    info!("receive stopped");
    Ok(())
}
