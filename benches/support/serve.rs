//! `botmeter serve` for the report harnesses (`reports`, `fleet`): started on a free loopback port
//! against a bench database, waited for until `/readyz` answers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `botmeter serve` on `database` at `url`; returns the process, an HTTP client and the
/// API's base URL once it is ready.
pub(crate) async fn start(database: &str, url: &str) -> (Child, reqwest::Client, String) {
    start_with(database, url, &[]).await
}

/// [`start`] with more `serve` arguments.
#[allow(dead_code, reason = "only some harnesses pass more arguments")]
pub(crate) async fn start_with(
    database: &str,
    url: &str,
    more: &[&str],
) -> (Child, reqwest::Client, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
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
            "127.0.0.1:0",
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
    (serve, http, base)
}
