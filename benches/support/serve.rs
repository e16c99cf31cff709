//! `botmeter serve` for the report harnesses (`reports`, `fleet`): started on a free loopback port
//! against a bench database, waited for until `/readyz` answers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A ready `botmeter serve`.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) http: reqwest::Client,
    /// The API's base URL.
    pub(crate) base: String,
    /// Its Prometheus text (`/metrics` on `--metrics-listen`).
    #[allow(dead_code, reason = "only some harnesses read the metrics")]
    pub(crate) metrics: String,
}

fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Starts `botmeter serve` on `database` at `url`; returns it once it is ready.
pub(crate) async fn start(database: &str, url: &str) -> Serve {
    start_with(database, url, &[]).await
}

/// [`start`] with more `serve` arguments.
#[allow(dead_code, reason = "only some harnesses pass more arguments")]
pub(crate) async fn start_with(database: &str, url: &str, more: &[&str]) -> Serve {
    let (addr, metrics_addr) = (free_addr(), free_addr());
    let serve = Command::new(env!("CARGO_BIN_EXE_botmeter"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--clickhouse-database",
            database,
            "--clickhouse-url",
            url,
            "--metrics-listen",
            &metrics_addr.to_string(),
        ])
        .args(more)
        .env("BOTMETER_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn botmeter serve");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let ready = Instant::now();
    while http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success())
    {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "botmeter serve never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Serve {
        child: serve,
        http,
        base,
        metrics: format!("http://{metrics_addr}/metrics"),
    }
}
