//! The API cannot starve the database: a query past its deadline or whose client went away is
//! killed on the server, every query carries a server-side `max_execution_time`, requests beyond
//! the concurrency limit are shed with 503 + `Retry-After`, `serve` works as the read-only user, and
//! a range with ragged ends reads the rollup for its whole quarter hours.
//!
//! Queries that would never end come from a database whose `usage_events` is a view over
//! `system.numbers` with a filter nothing passes; each test's owner id is unique, so its queries are
//! found in `system.processes` by that id (it is in their text), and killed when the test ends.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use botmeter_query::api::{router, AppState, UsageReport, REQUEST_ID_HEADER};
use botmeter_query::rows::{status, UsageRow};
use chrono::DateTime;
use clickhouse::Row;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

use crate::common::{server_client, TestDb};

/// A client of the server for `system.processes` and `KILL`: responses uncompressed (ClickHouse
/// 18.16 answers `compress=1` with an empty body).
fn processes_client() -> clickhouse::Client {
    server_client().with_compression(clickhouse::Compression::None)
}

/// `BOTMETER_CLICKHOUSE_READER_USER`, default `botmeter_reader` (`scripts/services.sh` creates it).
fn reader_user() -> String {
    std::env::var("BOTMETER_CLICKHOUSE_READER_USER")
        .unwrap_or_else(|_| "botmeter_reader".to_owned())
}

/// A database whose reports never end, and the owner id that marks this test's queries.
struct Endless {
    db: TestDb,
    owner: String,
}

impl Endless {
    async fn new(name: &str) -> Self {
        let db = TestDb::migrated(&format!("limits_{name}")).await;
        let client = db.client();
        client
            .query("RENAME TABLE usage_events TO usage_events_raw")
            .execute()
            .await
            .unwrap();
        client
            .query(
                // Every column depends on `number`: constant ones let ClickHouse fold the report's
                // filter away and answer at once.
                "CREATE VIEW usage_events AS SELECT toDateTime(1714521900 + number % 1) AS event_time, \
                 concat('ep', toString(number % 1)) AS endpoint_id, \
                 concat('cr', toString(number % 1)) AS credential_id, \
                 concat('nobody', toString(number % 1)) AS owner_id, \
                 concat('attributed', toString(number % 1)) AS status, toUInt64(number) AS bytes_in, \
                 toUInt64(0) AS bytes_out, toUInt32(0) AS http_requests, toUInt32(0) AS tcp_connections, \
                 toInt8(1) AS sign FROM system.numbers WHERE number = 18446744073709551615",
            )
            .execute()
            .await
            .unwrap();
        let owner = format!("bot_endless_{name}_{}", std::process::id());
        Self { db, owner }
    }

    /// A raw-rows report of the owner (no whole quarter hour, so no rollup), which never ends.
    fn uri(&self) -> String {
        format!(
            "/v1/owners/{}/usage?from=2024-05-01T00:00:01Z&to=2024-05-01T00:10:00Z",
            self.owner
        )
    }

    /// The test's never-ending queries running on the server: those that read the endless
    /// `usage_events`. A report's sessions query reads the control log, ends at once, and is
    /// sometimes caught running: it is not counted.
    async fn running(&self) -> Vec<Process> {
        processes_client()
            .query(
                "SELECT query_id, user, Settings.Names, Settings.Values FROM system.processes \
                 WHERE query LIKE ? AND query LIKE '%usage_events%' \
                 AND query NOT LIKE '%system.processes%'",
            )
            .bind(format!("%{}%", self.owner))
            .fetch_all::<Process>()
            .await
            .unwrap()
    }

    /// Waits up to `within` for at least `n` of the test's queries to run; returns them.
    async fn wait_running(&self, n: usize, within: Duration) -> Vec<Process> {
        let started = Instant::now();
        loop {
            let running = self.running().await;
            if running.len() >= n || started.elapsed() > within {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `within` for none of the test's queries to run; returns those still running.
    async fn wait_gone(&self, within: Duration) -> Vec<Process> {
        let started = Instant::now();
        loop {
            let running = self.running().await;
            if running.is_empty() || started.elapsed() > within {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        // Whatever the outcome, leave no endless query behind (the database drops after this).
        let pattern = format!("%{}%", self.owner);
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let _ = processes_client()
                        .query("KILL QUERY WHERE query LIKE ? AND query NOT LIKE 'KILL%' SYNC")
                        .bind(pattern)
                        .execute()
                        .await;
                });
        })
        .join()
        .unwrap();
    }
}

#[derive(Debug, Row, Deserialize)]
struct Process {
    query_id: String,
    user: String,
    setting_names: Vec<String>,
    setting_values: Vec<String>,
}

impl Process {
    fn setting(&self, name: &str) -> Option<&str> {
        let i = self.setting_names.iter().position(|n| n == name)?;
        Some(self.setting_values[i].as_str())
    }
}

async fn get(state: AppState, uri: impl AsRef<str>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let request = Request::builder()
        .uri(uri.as_ref())
        .body(Body::empty())
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn state_with(db: &TestDb, edit: impl FnOnce(&mut botmeter_query::ClickHouseConfig)) -> AppState {
    let mut config = botmeter_query::ClickHouseConfig::clone(&db.config);
    edit(&mut config);
    AppState::new(&config.validate().unwrap()).unwrap()
}

#[tokio::test]
async fn a_query_past_its_deadline_is_killed_on_the_server() {
    let endless = Endless::new("deadline").await;
    let state = state_with(&endless.db, |c| c.query_timeout_ms = 1_000);
    let started = Instant::now();
    let (status, headers, body) = get(state, &endless.uri()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let left = endless.wait_gone(Duration::from_secs(3)).await;
    assert!(left.is_empty(), "still running 3s after the 503: {left:?}");
    assert!(headers.contains_key(REQUEST_ID_HEADER), "{headers:?}");
}

#[tokio::test]
async fn a_query_is_killed_when_the_client_goes_away_and_carries_max_execution_time() {
    let endless = Endless::new("disconnect").await;
    let state = state_with(&endless.db, |c| c.query_timeout_ms = 60_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(botmeter_query::api::serve_listener(
        listener,
        state,
        async {
            let _ = stopped.await;
        },
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {} HTTP/1.1\r\nhost: x\r\n\r\n", endless.uri());
    stream.write_all(request.as_bytes()).await.unwrap();
    let running = endless.wait_running(1, Duration::from_secs(5)).await;
    assert!(!running.is_empty(), "the report never started");
    drop(stream);
    let left = endless.wait_gone(Duration::from_secs(3)).await;
    assert!(
        left.is_empty(),
        "still running 3s after the client left: {left:?}"
    );
    for process in &running {
        assert_eq!(
            process.setting("max_execution_time"),
            Some("60"),
            "{process:?}"
        );
        // `<request id>-<n>`: the request's 16 hex digits, then the query's number.
        let (request, n) = process.query_id.split_once('-').unwrap();
        assert!(
            request.len() == 16 && n.parse::<u32>().is_ok(),
            "{process:?}"
        );
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_with_retry_after() {
    let endless = Endless::new("shed").await;
    let state =
        state_with(&endless.db, |c| c.query_timeout_ms = 20_000).with_max_concurrent_requests(2);
    let in_flight: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get(state.clone(), endless.uri())))
        .collect();
    // Each report runs 2 bucket queries (per hour and the totals) that never end: 4 when both
    // requests are in.
    let running = endless.wait_running(4, Duration::from_secs(5)).await;
    assert_eq!(running.len(), 4, "{running:?}");
    let (status, headers, body) = get(state.clone(), &endless.uri()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // Liveness is not counted.
    let (status, _, _) = get(state.clone(), "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    for task in in_flight {
        task.abort();
    }
    // A freed permit admits the next request.
    let left = endless.wait_gone(Duration::from_secs(3)).await;
    assert!(left.is_empty(), "{left:?}");
    let (status, _, body) = get(state, "/v1/owners/x/usage?from=2024-05-01&to=2024-05-02").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn serve_reads_as_the_read_only_user_whose_profile_limits_queries() {
    let endless = Endless::new("readonly").await;
    let reader = reader_user();
    let state = state_with(&endless.db, |c| {
        c.user = reader.clone();
        c.query_timeout_ms = 1_500;
    });
    // Reports answer as the reader ...
    let (status, _, body) = get(
        state.clone(),
        "/v1/owners/x/usage?from=2024-05-01&to=2024-05-02",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // ... whose queries carry its profile's limit, and are killed at the deadline all the same.
    let request = tokio::spawn(get(state.clone(), endless.uri()));
    let running = endless.wait_running(1, Duration::from_secs(5)).await;
    let (status, _, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!running.is_empty());
    for process in &running {
        assert_eq!(process.user, reader);
        assert_eq!(process.setting("readonly"), Some("1"), "{process:?}");
        assert_eq!(
            process.setting("max_execution_time"),
            Some("10"),
            "{process:?}"
        );
    }
    let left = endless.wait_gone(Duration::from_secs(3)).await;
    assert!(left.is_empty(), "{left:?}");
    // The reader cannot write.
    let mut config = botmeter_query::ClickHouseConfig::clone(&endless.db.config);
    config.user = reader;
    let err = config
        .validate()
        .unwrap()
        .client()
        .query("CREATE TABLE t (x UInt8) ENGINE = Memory")
        .execute()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}

fn secs(time: &str) -> u32 {
    u32::try_from(DateTime::parse_from_rfc3339(time).unwrap().timestamp()).unwrap()
}

/// A row of `bot_r`: bytes in and out, +1 or -1 (a restated pair cancels).
fn ragged_row(n: u32, time: &str, endpoint: &str, bytes: (u64, u64), sign: i8) -> UsageRow {
    UsageRow {
        event_id: format!("ev_{n}"),
        event_type: "tcp_connection_closed.v0".to_owned(),
        event_time: secs(time),
        event_time_us: i64::from(secs(time)) * 1_000_000,
        account_id: "ac_1".to_owned(),
        status: status::ATTRIBUTED.to_owned(),
        unattributed_reason: String::new(),
        flags: Vec::new(),
        owner_id: "bot_r".to_owned(),
        owner_kind: "bot_user".to_owned(),
        credential_id: if n.is_multiple_of(2) {
            "cr_even"
        } else {
            "cr_odd"
        }
        .to_owned(),
        credential_kind: "authtoken".to_owned(),
        session_id: String::new(),
        endpoint_id: endpoint.to_owned(),
        hostname: "app.example.com".to_owned(),
        port: 0,
        bytes_in: bytes.0,
        bytes_out: bytes.1,
        http_requests: 0,
        tcp_connections: 1,
        status_code: 0,
        request_body_bytes: 0,
        response_body_bytes: 0,
        kafka_topic: "traffic".to_owned(),
        kafka_partition: 0,
        kafka_offset: i64::from(n),
        ingested_at: secs(time),
        sign,
    }
}

/// Rows on both sides of each end of 00:07:30–05:50:00, in the edge quarters and the middle, and
/// an endpoint active only in an edge quarter and a middle quarter of the same hour.
fn ragged_rows() -> Vec<UsageRow> {
    let at = |n, t: &str, ep, b| ragged_row(n, &format!("2024-05-01T{t}Z"), ep, b, 1);
    vec![
        at(1, "00:03:00", "ep_a", (1, 10)), // before `from`, in its quarter
        at(2, "00:07:29", "ep_a", (2, 20)), // before `from` by a second
        at(3, "00:07:30", "ep_a", (4, 40)), // the first second
        at(4, "00:14:59", "ep_b", (8, 0)),  // edge, no bytes out ...
        at(5, "00:15:00", "ep_b", (16, 160)), // ... middle of the same hour, bytes out
        at(6, "01:30:00", "ep_c", (32, 320)),
        ragged_row(7, "2024-05-01T03:00:00Z", "ep_d", (64, 640), 1),
        ragged_row(7, "2024-05-01T03:00:00Z", "ep_d", (64, 640), -1), // restated: nothing
        at(8, "05:44:59", "ep_a", (128, 1280)),                       // the middle's last second
        at(9, "05:45:00", "ep_e", (256, 0)),                          // edge
        at(10, "05:49:59", "ep_e", (512, 5120)),                      // the last second
        at(11, "05:50:00", "ep_e", (1024, 10240)),                    // `to`: excluded
        at(12, "05:55:00", "ep_a", (2048, 20480)),                    // after `to`, in its quarter
    ]
}

/// One row of `usage_buckets.sql`, the all-raw answer.
#[derive(Debug, Row, Deserialize, PartialEq)]
struct RawBucket {
    bucket_start: u32,
    group_key: String,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
    endpoints: u64,
    active_endpoint_hours: u64,
}

/// (start, bytes in, bytes out, tcp connections, endpoints, active endpoint hours)
type Figures = (u32, u64, u64, u64, u64, u64);

async fn all_raw(db: &TestDb, tz: &str, granularity: &str, from: &str, to: &str) -> Vec<Figures> {
    db.client()
        .query(include_str!("../../sql/usage_buckets.sql"))
        .bind(tz)
        .bind(granularity)
        .bind("")
        .bind(vec!["bot_r"])
        .bind(Vec::<String>::new())
        .bind(status::ATTRIBUTED)
        .bind(secs(from))
        .bind(secs(to))
        .fetch_all::<RawBucket>()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let _ = (&r.group_key, r.http_requests);
            (
                r.bucket_start,
                r.bytes_in,
                r.bytes_out,
                r.tcp_connections,
                r.endpoints,
                r.active_endpoint_hours,
            )
        })
        .collect()
}

fn figures(start: &str, m: &botmeter_query::api::UsageMetrics) -> Figures {
    let start = u32::try_from(DateTime::parse_from_rfc3339(start).unwrap().timestamp()).unwrap();
    (
        start,
        m.bytes_in,
        m.bytes_out,
        m.tcp_connections,
        m.endpoints,
        m.active_endpoint_hours,
    )
}

async fn report(
    state: &AppState,
    tz: &str,
    granularity: &str,
    from: &str,
    to: &str,
) -> UsageReport {
    let uri = format!(
        "/v1/owners/bot_r/usage?from={from}&to={to}&granularity={granularity}&timezone={tz}"
    );
    let (status, _, body) = get(state.clone(), &uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    serde_json::from_value(body).unwrap()
}

#[tokio::test]
async fn a_ragged_range_reads_the_rollup_for_its_middle_and_raw_rows_for_its_edges() {
    let db = TestDb::migrated("limits_ragged").await;
    db.writer().insert_usage(&ragged_rows()).await.unwrap();
    let state = db.state();
    let (from, to) = ("2024-05-01T00:07:30Z", "2024-05-01T05:50:00Z");
    for tz in ["UTC", "Asia/Kathmandu"] {
        for granularity in ["hour", "day"] {
            let got = report(&state, tz, granularity, from, to).await;
            let buckets: Vec<Figures> = got
                .buckets
                .iter()
                .map(|b| figures(&b.start, &b.metrics))
                .collect();
            assert_eq!(
                buckets,
                all_raw(&db, tz, granularity, from, to).await,
                "{tz} {granularity}"
            );
            let mut totals = all_raw(&db, tz, "all", from, to).await;
            totals[0].0 = 0;
            assert_eq!(
                vec![figures("1970-01-01T00:00:00Z", &got.totals)],
                totals,
                "{tz}"
            );
        }
    }
    // The whole quarter hours come from the rollup: a row only the rollup has is counted ...
    db.client()
        .query(
            "INSERT INTO usage_rollup (quarter, status, owner_id, owner_kind, credential_id, \
             endpoint_id, net_bytes_in, net_bytes_out, net_http_requests, net_tcp_connections, \
             net_rows) VALUES (toDateTime('2024-05-01 02:00:00'), 'attributed', 'bot_r', \
             'bot_user', 'cr_odd', 'ep_c', 1000000, 0, 0, 0, 0)",
        )
        .execute()
        .await
        .unwrap();
    let before = all_raw(&db, "UTC", "all", from, to).await[0].1;
    let got = report(&state, "UTC", "hour", from, to).await;
    assert_eq!(
        got.totals.bytes_in,
        before + 1_000_000,
        "the middle was not read from the rollup"
    );
    // ... and a range inside one quarter hour is all raw rows.
    let inside = report(
        &state,
        "UTC",
        "hour",
        "2024-05-01T00:07:30Z",
        "2024-05-01T00:14:00Z",
    )
    .await;
    assert_eq!(inside.totals.bytes_in, 4);
}

/// `GET uri` with `x-request-id: id`, in a task (the report never ends before its deadline).
fn spawn_get_with_request_id(
    state: AppState,
    uri: String,
    id: &'static str,
) -> tokio::task::JoinHandle<axum::http::HeaderMap> {
    tokio::spawn(async move {
        let request = Request::builder()
            .uri(uri)
            .header(REQUEST_ID_HEADER, id)
            .body(Body::empty())
            .unwrap();
        router(state)
            .oneshot(request)
            .await
            .unwrap()
            .headers()
            .clone()
    })
}

#[tokio::test]
async fn a_usable_client_request_id_names_the_queries_and_an_unusable_one_is_replaced() {
    let endless = Endless::new("request_id").await;
    let state = state_with(&endless.db, |c| c.query_timeout_ms = 1_500);
    // A proxy's id: kept, echoed, and the prefix of the ClickHouse query id.
    let answered = spawn_get_with_request_id(state.clone(), endless.uri(), "edge-7f3a.b_2");
    let running = endless.wait_running(1, Duration::from_secs(5)).await;
    assert!(!running.is_empty(), "the report never started");
    assert!(
        running
            .iter()
            .all(|p| p.query_id.starts_with("edge-7f3a.b_2-")),
        "{running:?}"
    );
    let headers = answered.await.unwrap();
    assert_eq!(headers[REQUEST_ID_HEADER], "edge-7f3a.b_2");
    assert!(endless.wait_gone(Duration::from_secs(3)).await.is_empty());
    // Not a usable query id prefix: a fresh id instead, on the queries and the response alike.
    let answered = spawn_get_with_request_id(state, endless.uri(), "x' OR 1=1 --");
    let running = endless.wait_running(1, Duration::from_secs(5)).await;
    assert!(!running.is_empty(), "the report never started");
    let headers = answered.await.unwrap();
    let id = headers[REQUEST_ID_HEADER].to_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert!(
        running
            .iter()
            .all(|p| p.query_id.starts_with(&format!("{id}-"))),
        "{running:?}"
    );
}
