//! Who may read what, on the real services: a fresh ClickHouse database holding two customers'
//! usage (acme: bot user `bot_a`; globex: bot user `bot_g`; by the `customer` key of the bot users'
//! metadata), and the `botmeter serve` binary with admin, reader and customer-scoped API keys.
//!
//! Every route comes from the served `/openapi.json`, not from a list kept here, so a route added
//! later is checked too: a customer key reads its own report and its bot users' usage, and gets a
//! 403 or 404 JSON error, never data, from every other route or for the other customer; a reader
//! reads everything but the audit trail; an admin reads everything; no key or a wrong one is a
//! 401 JSON error with `WWW-Authenticate`. A parameter this file has no value for fails the test
//! until one is added.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{self, free_port, BotmeterProcess, TestEnv};

const ADMIN: &str = "admin-key-0123";
const READER: &str = "reader-key-4567";
const ACME: &str = "acme-key-89ab";
const GLOBEX: &str = "globex-key-cdef";

/// The routes that never need a key and hold no customer's data.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// One customer's objects in the fixture.
struct Customer {
    id: &'static str,
    bot: &'static str,
    bot_name: &'static str,
    credential: &'static str,
    api_key: &'static str,
    endpoint: &'static str,
    hostname: &'static str,
    bytes_out: u64,
}

const ACME_DATA: Customer = Customer {
    id: "acme",
    bot: "bot_acme1",
    bot_name: "acme-deployer",
    credential: "cr_acme1",
    api_key: "ak_acme1",
    endpoint: "ep_acme1",
    hostname: "acme.example.com",
    bytes_out: 1_234_567,
};

const GLOBEX_DATA: Customer = Customer {
    id: "globex",
    bot: "bot_globex1",
    bot_name: "globex-scraper",
    credential: "cr_globex1",
    api_key: "ak_globex1",
    endpoint: "ep_globex1",
    hostname: "globex.example.com",
    bytes_out: 7_654_321,
};

fn us(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&format!("{}Z", time.replace(' ', "T")))
        .unwrap()
        .timestamp()
        * 1_000_000
}

fn usage_rows(c: &Customer) -> Vec<Value> {
    ["2024-05-02 10:00:00", "2024-05-03 11:30:00"]
        .iter()
        .enumerate()
        .map(|(i, time)| {
            json!({
                "event_id": format!("ev_{}_{i}", c.id), "event_type": "tcp_connection_closed.v0",
                "event_time": time, "event_time_us": us(time), "account_id": "ac_1", "status": "attributed",
                "owner_id": c.bot, "owner_kind": "bot_user", "credential_id": c.credential,
                "credential_kind": "authtoken", "endpoint_id": c.endpoint, "hostname": c.hostname,
                "bytes_in": 10, "bytes_out": c.bytes_out, "tcp_connections": 1, "kafka_topic": "traffic",
                "ingested_at": time, "sign": 1, "flags": if i == 1 { vec!["owner_inactive"] } else { vec![] },
            })
        })
        .collect()
}

/// A control-plane event made by `usr_admin` without an API key.
fn control_row(
    event_id: String,
    event_type: &str,
    time: &str,
    object_id: &str,
    owner: &str,
    object: Value,
) -> Value {
    json!({
        "event_id": event_id, "event_type": event_type, "event_time": time, "event_time_us": us(time),
        "account_id": "ac_1", "principal_id": "usr_admin", "principal_credential_id": "",
        "object_id": object_id, "owner_id": owner, "object": object.to_string(), "kafka_topic": "control",
        "ingested_at": time, "anomalies": [],
    })
}

/// The same event made by `principal` with `api_key`.
fn acted_by(mut row: Value, principal: &str, api_key: &str) -> Value {
    row["principal_id"] = json!(principal);
    row["principal_credential_id"] = json!(api_key);
    row
}

fn control_rows(c: &Customer) -> Vec<Value> {
    let metadata = json!({ "customer": c.id }).to_string();
    let credential = |kind: &str, id: &str| {
        control_row(
            format!("ev_{id}"),
            &format!("{kind}_created.v0"),
            "2024-04-01 00:00:00",
            id,
            c.bot,
            json!({"id": id, "owner_id": c.bot, "description": format!("{} of {}", id, c.bot_name)}),
        )
    };
    vec![
        control_row(
            format!("ev_bot_{}", c.id),
            "bot_user_created.v0",
            "2024-03-01 00:00:00",
            c.bot,
            c.bot,
            json!({"id": c.bot, "name": c.bot_name, "active": true, "metadata": metadata}),
        ),
        credential("tunnel_credential", c.credential),
        credential("api_key", c.api_key),
        // The bot acting through the ngrok API with its key: in its audit trail.
        acted_by(
            control_row(
                format!("ev_act_{}", c.id),
                "domain_created.v0",
                "2024-05-02 09:00:00",
                "rd_1",
                "",
                json!({"id": "rd_1"}),
            ),
            c.bot,
            c.api_key,
        ),
        control_row(
            format!("ev_session_{}", c.id),
            "agent_session_start.v0",
            "2024-05-02 09:30:00",
            &format!("ts_{}", c.id),
            "",
            json!({"session": {"id": format!("ts_{}", c.id)}, "credential": {"id": c.credential}}),
        ),
    ]
}

/// What of `c` must never reach another customer's key: values that are not in any URL.
fn secrets(c: &Customer) -> Vec<String> {
    vec![
        c.bot_name.to_owned(),
        c.credential.to_owned(),
        c.api_key.to_owned(),
        c.hostname.to_owned(),
        c.bytes_out.to_string(),
    ]
}

async fn insert(env: &TestEnv, table: &str, rows: &[Value]) {
    let body: Vec<String> = rows.iter().map(Value::to_string).collect();
    env.clickhouse(&format!(
        "INSERT INTO {}.{table} FORMAT JSONEachRow\n{}",
        env.database,
        body.join("\n")
    ))
    .await;
}

struct Server {
    base: String,
    http: reqwest::Client,
    _process: BotmeterProcess,
}

struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A JSON error with this status and code, naming nothing of `hidden`.
    fn assert_error(&self, status: u16, codes: &[&str], hidden: &[String], what: &str) {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        assert!(
            self.content_type.starts_with("application/json"),
            "{what}: {}",
            self.content_type
        );
        let body = self.json();
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(codes.contains(&code), "{what}: code {code}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
        assert_eq!(
            body.as_object().unwrap().len(),
            1,
            "{what}: an error carries nothing else: {body}"
        );
        for secret in hidden {
            assert!(
                !self.body.contains(secret.as_str()),
                "{what}: leaks {secret:?}: {}",
                self.body
            );
        }
    }
}

impl Server {
    async fn get(&self, path_and_query: &str, key: Option<&str>) -> Answer {
        let mut request = self.http.get(format!("{}{path_and_query}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let content_type = header("content-type").unwrap_or_default();
        let www_authenticate = header("www-authenticate");
        let status = response.status().as_u16();
        Answer {
            status,
            content_type,
            www_authenticate,
            body: response.text().await.unwrap(),
        }
    }
}

/// A request for `path` (an OpenAPI path template) about customer `c`: path parameters name `c`'s
/// objects, and every required query parameter (plus `owner_id`, which /v1/audit needs and
/// /v1/overage takes) has a value that makes the route answer 200 to an admin.
fn request_for(path: &str, operation: &Value, c: &Customer) -> String {
    let mut url = path.to_owned();
    let mut query = Vec::new();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap();
        let required = parameter["required"].as_bool().unwrap_or(false);
        let value = match name {
            "owner_id" => Some(c.bot),
            "customer_id" => Some(c.id),
            "from" => Some("2024-05-01"),
            "to" => Some("2024-06-01"),
            "month" => Some("2024-05"),
            _ => None,
        };
        match parameter["in"].as_str().unwrap() {
            "path" => {
                let value = value.unwrap_or_else(|| {
                    panic!("{path}: no value for path parameter {name}: add one to request_for")
                });
                url = url.replace(&format!("{{{name}}}"), value);
            }
            "query" => match value {
                Some(value) if required || name == "owner_id" => {
                    query.push(format!("{name}={value}"))
                }
                None if required => panic!(
                    "{path}: no value for required query parameter {name}: add one to request_for"
                ),
                _ => {}
            },
            other => panic!("{path}: parameter {name} in {other}: not handled here"),
        }
    }
    assert!(
        !url.contains('{'),
        "{url}: a path parameter without a value"
    );
    if query.is_empty() {
        url
    } else {
        format!("{url}?{}", query.join("&"))
    }
}

/// Whether a route is about one customer (its report), one owner (its usage) or the credentials of
/// one owner (the hygiene report and the fleet, `owner_id` in their query): the only routes a
/// customer key may read, for its own customer and bot users.
fn is_customer_route(path: &str) -> bool {
    path.contains("{customer_id}")
        || path.contains("{owner_id}")
        || path == "/v1/credentials"
        || path == "/v1/fleet"
}

/// What a customer's own answer on `path` must show of it: its bytes, or for the hygiene report
/// and the fleet (no usage figures) its credential.
fn own_mark(path: &str, mine: &Customer) -> String {
    if path == "/v1/credentials" || path == "/v1/fleet" {
        mine.credential.to_owned()
    } else {
        mine.bytes_out.to_string()
    }
}

async fn start(env: &TestEnv) -> Server {
    start_with(env, &[]).await
}

/// [`start`] with more `serve` flags.
async fn start_with(env: &TestEnv, extra: &[&str]) -> Server {
    let keys = [
        (ADMIN, "admin"),
        (READER, "reader"),
        (ACME, "customer:acme"),
        (GLOBEX, "customer:globex"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (key, role))| {
        format!(
            "[[keys]]\nname = \"key{i}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n",
            query::api::key_digest(key)
        )
    })
    .collect::<String>();
    let keys_file = env.log_dir.join("keys.toml");
    std::fs::write(&keys_file, keys).unwrap();
    let plan_file = env.log_dir.join("plan.toml");
    std::fs::write(&plan_file, "name = \"pro\"\n[metrics.bytes_out]\nincluded = 1000000\nunit = 1000\nprice_per_unit = 0.5\n").unwrap();

    let listen = format!("127.0.0.1:{}", free_port());
    let mut process = env.spawn(
        "serve",
        &[
            "serve",
            "--listen",
            &listen,
            "--api-keys-file",
            keys_file.to_str().unwrap(),
            "--plan",
            plan_file.to_str().unwrap(),
            "--customer-metadata-key",
            "customer",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    let http = reqwest::Client::new();
    for _ in 0..200 {
        process.assert_running();
        if let Ok(response) = http.get(format!("http://{listen}/readyz")).send().await {
            if response.status() == 200 {
                return Server {
                    base: format!("http://{listen}"),
                    http,
                    _process: process,
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("serve never became ready\n{}", process.log_tail());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_keeps_customers_apart() {
    let env = TestEnv::new("api_access");
    let status = env
        .command(&["migrate"])
        .output()
        .expect("run botmeter migrate");
    assert!(
        status.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    for c in [&ACME_DATA, &GLOBEX_DATA] {
        insert(&env, "usage_events", &usage_rows(c)).await;
        insert(&env, "control_events_log", &control_rows(c)).await;
    }
    let server = start(&env).await;

    // Every operation of the description, which must be the router's list.
    let spec = server.get("/openapi.json", None).await.json();
    let mut operations = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert_eq!(
                method, "get",
                "{method} {path}: only GET is checked here; extend this test"
            );
            operations.push((path.clone(), operation.clone()));
        }
    }
    let mut listed: Vec<String> = operations.iter().map(|(p, _)| p.clone()).collect();
    let mut routes: Vec<String> = query::api::ROUTES
        .iter()
        .map(|(_, p)| (*p).to_owned())
        .collect();
    listed.sort();
    routes.sort();
    assert_eq!(
        listed, routes,
        "the description and the router's routes differ"
    );
    assert!(operations.len() >= 10, "{operations:?}");

    let mut checked = 0;
    for (path, operation) in &operations {
        let own = request_for(path, operation, &ACME_DATA);
        let other = request_for(path, operation, &GLOBEX_DATA);

        if PUBLIC.contains(&path.as_str()) {
            // Open to anyone, and about nobody: no customer's data in them.
            for key in [None, Some(ACME), Some("wrong")] {
                let answer = server.get(&own, key).await;
                assert_eq!(answer.status, 200, "{own} with {key:?}: {}", answer.body);
                if path != "/openapi.json" {
                    for secret in secrets(&ACME_DATA).iter().chain(&secrets(&GLOBEX_DATA)) {
                        assert!(
                            !answer.body.contains(secret.as_str()),
                            "{own}: {}",
                            answer.body
                        );
                    }
                }
            }
            continue;
        }
        checked += 1;

        // No key, a wrong key, another scheme: 401 JSON with a Bearer challenge, no data.
        let everything: Vec<String> = secrets(&ACME_DATA)
            .into_iter()
            .chain(secrets(&GLOBEX_DATA))
            .collect();
        for key in [None, Some("wrong-key"), Some(&format!("{ADMIN}x")[..])] {
            let answer = server.get(&own, key).await;
            answer.assert_error(
                401,
                &["unauthorized"],
                &everything,
                &format!("{own} with {key:?}"),
            );
            assert!(
                answer
                    .www_authenticate
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("Bearer"),
                "{own}: {:?}",
                answer.www_authenticate
            );
        }
        let basic = server
            .http
            .get(format!("{}{own}", server.base))
            .header("authorization", format!("Basic {ADMIN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 401, "{own} with Basic");

        // Admin: everything. Reader: everything but the audit trail.
        for target in [&own, &other] {
            let answer = server.get(target, Some(ADMIN)).await;
            assert_eq!(answer.status, 200, "admin {target}: {}", answer.body);
            let answer = server.get(target, Some(READER)).await;
            if path == "/v1/audit" {
                answer.assert_error(
                    403,
                    &["forbidden"],
                    &everything,
                    &format!("reader {target}"),
                );
            } else {
                assert_eq!(answer.status, 200, "reader {target}: {}", answer.body);
            }
        }

        // A customer key: the other customer's report and bot users are 404 (their existence is not
        // confirmed), account-wide routes 403, and nothing of the other customer in any answer.
        for (key, mine, theirs) in [
            (ACME, &ACME_DATA, &GLOBEX_DATA),
            (GLOBEX, &GLOBEX_DATA, &ACME_DATA),
        ] {
            let hidden = secrets(theirs);
            let (own, other) = (
                request_for(path, operation, mine),
                request_for(path, operation, theirs),
            );
            let answer = server.get(&other, Some(key)).await;
            if is_customer_route(path) {
                answer.assert_error(
                    404,
                    &["not_found"],
                    &hidden,
                    &format!("{} key on {other}", mine.id),
                );
                let answer = server.get(&own, Some(key)).await;
                assert_eq!(
                    answer.status, 200,
                    "{} key on {own}: {}",
                    mine.id, answer.body
                );
                for secret in &hidden {
                    assert!(
                        !answer.body.contains(secret.as_str()),
                        "{own} with the {} key leaks {secret}: {}",
                        mine.id,
                        answer.body
                    );
                }
                assert!(
                    answer.body.contains(&own_mark(path, mine)),
                    "{own}: {}",
                    answer.body
                );
            } else {
                answer.assert_error(
                    403,
                    &["forbidden"],
                    &hidden,
                    &format!("{} key on {other}", mine.id),
                );
                let answer = server.get(&own, Some(key)).await;
                answer.assert_error(
                    403,
                    &["forbidden"],
                    &hidden,
                    &format!("{} key on {own}", mine.id),
                );
            }
        }
    }
    assert!(checked >= 7, "only {checked} keyed routes");

    // The customer's own report in every format, and its bot's usage, with its numbers only.
    let report = server
        .get("/v1/customers/acme/report?month=2024-05", Some(ACME))
        .await
        .json();
    assert_eq!(report["customer_id"], "acme");
    assert_eq!(report["bot_users"][0]["id"], ACME_DATA.bot);
    assert_eq!(report["totals"]["bytes_out"], 2 * ACME_DATA.bytes_out);
    let ids: Vec<&str> = report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ACME_DATA.api_key, ACME_DATA.credential]);
    for format in ["csv", "html"] {
        let answer = server
            .get(
                &format!("/v1/customers/acme/report?month=2024-05&format={format}"),
                Some(ACME),
            )
            .await;
        assert_eq!(answer.status, 200, "{format}: {}", answer.body);
        assert!(
            answer.content_type.starts_with(&format!("text/{format}")),
            "{}",
            answer.content_type
        );
        assert!(
            answer.body.contains(&(2 * ACME_DATA.bytes_out).to_string()) || format == "html",
            "{format}: {}",
            answer.body
        );
        for secret in secrets(&GLOBEX_DATA) {
            assert!(
                !answer.body.contains(secret.as_str()),
                "{format} leaks {secret}"
            );
        }
    }
    let usage = server
        .get(
            &format!(
                "/v1/owners/{}/usage?from=2024-05-01&to=2024-06-01&group_by=credential",
                ACME_DATA.bot
            ),
            Some(ACME),
        )
        .await
        .json();
    assert_eq!(usage["totals"]["bytes_out"], 2 * ACME_DATA.bytes_out);
    assert_eq!(usage["groups"][0]["key"], ACME_DATA.credential);

    // Other ways of naming what is not the key's: the other customer by its bot id, an owner that
    // is nobody's customer, an owner that does not exist; all 404 alike.
    let hidden = secrets(&GLOBEX_DATA);
    for uri in [
        format!("/v1/customers/{}/report?month=2024-05", GLOBEX_DATA.bot),
        "/v1/customers/nobody/report?month=2024-05".to_owned(),
        "/v1/owners/usr_admin/usage?from=2024-05-01&to=2024-06-01".to_owned(),
        "/v1/owners/bot_nobody/usage?from=2024-05-01&to=2024-06-01".to_owned(),
        format!(
            "/v1/owners/{}/usage?from=2024-05-01&to=2024-06-01&group_by=endpoint",
            GLOBEX_DATA.bot
        ),
    ] {
        server.get(&uri, Some(ACME)).await.assert_error(
            404,
            &["not_found"],
            &hidden,
            &format!("acme key on {uri}"),
        );
    }
    // An unknown route is a 404 for anyone with a key, and a 401 without one.
    server.get("/v1/customers", Some(ACME)).await.assert_error(
        404,
        &["not_found"],
        &hidden,
        "unknown route",
    );
    server.get("/v1/customers", None).await.assert_error(
        401,
        &["unauthorized"],
        &hidden,
        "unknown route without a key",
    );

    drop(server);
    env.drop_database().await;
}

/// `botmeter serve --api-keys-file <file>` with `text` in the file: its exit status and output, or
/// a panic if it is still serving after a few seconds.
fn serve_with_keys(env: &TestEnv, name: &str, text: &str) -> (std::process::ExitStatus, String) {
    let file = env.log_dir.join(name);
    std::fs::write(&file, text).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = env
        .command(&["serve", "--listen", &listen, "--api-keys-file"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn botmeter serve");
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return (output.status, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("botmeter serve started with the keys file {name}:\n{text}");
}

#[test]
fn serve_refuses_an_empty_or_ambiguous_keys_file() {
    let env = TestEnv::new("api_keys_refused");
    let (status, output) = serve_with_keys(&env, "empty.toml", "keys = []\n");
    assert!(!status.success());
    assert!(
        output.contains("empty.toml") && output.contains("no keys"),
        "{output}"
    );

    let digest = query::api::key_digest("shared-key");
    let twice = format!(
        "[[keys]]\nname = \"a\"\nsha256 = \"{digest}\"\nrole = \"admin\"\n\
         [[keys]]\nname = \"b\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n",
        digest.to_uppercase()
    );
    let (status, output) = serve_with_keys(&env, "twice.toml", &twice);
    assert!(!status.success());
    assert!(
        output.contains("twice.toml") && output.contains(&digest),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_metrics_count_every_request_by_route_and_status() {
    let env = TestEnv::new("api_metrics");
    let status = env
        .command(&["migrate"])
        .output()
        .expect("run botmeter migrate");
    assert!(
        status.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    for c in [&ACME_DATA, &GLOBEX_DATA] {
        insert(&env, "usage_events", &usage_rows(c)).await;
    }
    let metrics_listen = format!("127.0.0.1:{}", free_port());
    let server = start_with(&env, &["--metrics-listen", &metrics_listen]).await;
    let range = "from=2024-05-01&to=2024-06-01";
    // A burst: 6 answered, 3 bad requests, 2 without a key, 1 unknown route.
    for _ in 0..6 {
        let answer = server
            .get(&format!("/v1/usage/top?{range}"), Some(ADMIN))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    for _ in 0..3 {
        let answer = server
            .get("/v1/usage/top?from=yesterday&to=2024-06-01", Some(ADMIN))
            .await;
        assert_eq!(answer.status, 400, "{}", answer.body);
    }
    for _ in 0..2 {
        assert_eq!(
            server
                .get(&format!("/v1/usage/top?{range}"), None)
                .await
                .status,
            401
        );
    }
    assert_eq!(
        server.get("/v1/nothing/here", Some(ADMIN)).await.status,
        404
    );
    let text = reqwest::get(format!("http://{metrics_listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line_start: &str| -> u64 {
        text.lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}")) as u64
    };
    let requests = |route: &str, status: u16| {
        format!("botmeter_api_requests_total{{route=\"{route}\",status=\"{status}\"}} ")
    };
    assert_eq!(value(&requests("/v1/usage/top", 200)), 6);
    assert_eq!(value(&requests("/v1/usage/top", 400)), 3);
    assert_eq!(value(&requests("/v1/usage/top", 401)), 2);
    assert_eq!(value(&requests("unmatched", 404)), 1);
    // Latency per route, and the ClickHouse share of it, for the 11 requests of the route.
    assert_eq!(
        value("botmeter_api_request_seconds_count{route=\"/v1/usage/top\"} "),
        11
    );
    assert_eq!(
        value("botmeter_api_clickhouse_seconds_count{route=\"/v1/usage/top\"} "),
        11
    );
    support::assert_metrics_readable(&text);
    // The access log: one line per request with its status and route.
    let log = std::fs::read_to_string(env.log_dir.join("serve.log")).unwrap();
    let answered = log
        .lines()
        .filter(|line| line.contains("request answered") && line.contains("route=/v1/usage/top"))
        .count();
    assert_eq!(answered, 11, "{log}");
    // Each on the request's span, which names its id (what `x-request-id` and the ClickHouse query
    // ids carry).
    for line in log.lines().filter(|line| line.contains("request answered")) {
        let id = line
            .split("request_id=")
            .nth(1)
            .and_then(|rest| rest.split([' ', '}']).next())
            .unwrap_or_default();
        assert_eq!(id.len(), 16, "no request id on the access log line: {line}");
    }
    env.drop_database().await;
}
