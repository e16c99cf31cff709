//! Shared pieces of the real-service tests: a fresh ClickHouse database and fresh topics per test
//! (so tests run in parallel and leave nothing behind), the `botmeter` binary as a child process,
//! and small ClickHouse/HTTP helpers. Addresses come from `BOTMETER_CLICKHOUSE_URL` and
//! `BOTMETER_KAFKA_BROKERS`, defaulting to the loopback services of `scripts/services.sh`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One test's private world: database, topics, consumer group.
pub(crate) struct TestEnv {
    pub(crate) clickhouse_url: String,
    pub(crate) brokers: String,
    pub(crate) database: String,
    pub(crate) control_topic: String,
    pub(crate) traffic_topic: String,
    pub(crate) dead_letter_topic: String,
    pub(crate) group_id: String,
    pub(crate) log_dir: PathBuf,
    /// The ClickHouse cluster the database lives on ([`TestEnv::on_cluster`]), or `None` for one
    /// server.
    pub(crate) cluster: Option<String>,
    http: reqwest::Client,
}

impl TestEnv {
    pub(crate) fn new(name: &str) -> Self {
        let unique = format!(
            "{name}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000_000
        );
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&unique);
        std::fs::create_dir_all(&log_dir).unwrap();
        let env = Self {
            clickhouse_url: std::env::var("BOTMETER_CLICKHOUSE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
            brokers: std::env::var("BOTMETER_KAFKA_BROKERS")
                .unwrap_or_else(|_| "127.0.0.1:9092".into()),
            database: format!("botmeter_it_{unique}"),
            control_topic: format!("it.{unique}.control"),
            traffic_topic: format!("it.{unique}.traffic"),
            dead_letter_topic: format!("it.{unique}.dead-letter"),
            group_id: format!("it-{unique}"),
            log_dir,
            cluster: None,
            http: reqwest::Client::new(),
        };
        if std::env::var("BOTMETER_IT_ON_CLUSTER").is_ok_and(|v| v == "1") {
            return env.into_cluster();
        }
        env
    }

    /// This world moved to the local cluster (see [`TestEnv::on_cluster`]).
    fn into_cluster(mut self) -> Self {
        let cluster = std::env::var("BOTMETER_CLUSTER")
            .expect("BOTMETER_CLUSTER (eval \"$(scripts/services.sh cluster env)\")");
        self.clickhouse_url = std::env::var("BOTMETER_CLUSTER_CLICKHOUSE_URL").expect(
            "BOTMETER_CLUSTER_CLICKHOUSE_URL (eval \"$(scripts/services.sh cluster env)\")",
        );
        self.cluster = Some(cluster);
        self
    }

    /// A test's world on the local ClickHouse cluster of `scripts/services.sh cluster up`, from
    /// `BOTMETER_CLUSTER` (its name) and `BOTMETER_CLUSTER_CLICKHOUSE_URL` (the server botmeter and
    /// the test talk to); `None` when `BOTMETER_CLUSTER` is unset. [`TestEnv::new`] gives the same
    /// to every test when `BOTMETER_IT_ON_CLUSTER=1`: the report and dashboard tests then run
    /// against the cluster, with the same expectations.
    pub(crate) fn on_cluster(name: &str) -> Option<Self> {
        std::env::var("BOTMETER_CLUSTER")
            .ok()
            .filter(|c| !c.is_empty())?;
        let env = Self::new(name);
        Some(if env.cluster.is_some() {
            env
        } else {
            env.into_cluster()
        })
    }

    /// Creates this test's topics: one control partition, `traffic_partitions` traffic ones, one
    /// dead-letter partition.
    pub(crate) async fn create_topics(&self, traffic_partitions: i32) {
        ingest::admin::ensure_topics(
            &self.brokers,
            &[
                (&self.control_topic, 1),
                (&self.traffic_topic, traffic_partitions),
                (&self.dead_letter_topic, 1),
            ],
        )
        .await
        .expect("create the test's topics");
    }

    /// Publishes a simulated fleet to this test's topics, as fast as the broker takes it.
    pub(crate) async fn publish(&self, fleet: &simulate::Fleet) -> simulate::PublishReport {
        simulate::publish(
            fleet,
            &self.brokers,
            &self.control_topic,
            &self.traffic_topic,
            None,
            false,
        )
        .await
        .expect("publish the fleet")
    }

    /// Environment for a `botmeter` child process pointed at this test's world.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_botmeter"));
        command
            .args(args)
            .env("BOTMETER_CLICKHOUSE_URL", &self.clickhouse_url)
            .env("BOTMETER_CLICKHOUSE_DATABASE", &self.database)
            .env("BOTMETER_KAFKA_BROKERS", &self.brokers)
            .env("BOTMETER_CONTROL_TOPIC", &self.control_topic)
            .env("BOTMETER_TRAFFIC_TOPIC", &self.traffic_topic)
            .env("BOTMETER_DEAD_LETTER_TOPIC", &self.dead_letter_topic)
            .env("BOTMETER_GROUP_ID", &self.group_id)
            .env("BOTMETER_LOG", "info")
            // Tests run many pipelines at once: each gets its own operations port.
            .env("BOTMETER_OPS_LISTEN", "127.0.0.1:0")
            .env("BOTMETER_METRICS_LISTEN", "127.0.0.1:0");
        match &self.cluster {
            Some(cluster) => {
                command.env("BOTMETER_CLICKHOUSE_CLUSTER", cluster);
                // Per-shard inserts (`run --clickhouse-shard-urls`), as a deployment would run.
                match std::env::var("BOTMETER_CLUSTER_SHARD_URLS") {
                    Ok(urls) => command.env("BOTMETER_CLICKHOUSE_SHARD_URLS", urls),
                    Err(_) => command.env_remove("BOTMETER_CLICKHOUSE_SHARD_URLS"),
                }
            }
            None => command
                .env_remove("BOTMETER_CLICKHOUSE_CLUSTER")
                .env_remove("BOTMETER_CLICKHOUSE_SHARD_URLS"),
        };
        if args.first() == Some(&"serve") {
            // The API reads as the read-only user `scripts/services.sh` creates, as it should in
            // production.
            command.env("BOTMETER_CLICKHOUSE_USER", reader_user());
        }
        command
    }

    /// Starts `botmeter <args>` in the background, its output in `log_dir/<name>.log`.
    pub(crate) fn spawn(&self, name: &str, args: &[&str]) -> BotmeterProcess {
        let log = self.log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(args)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn botmeter");
        BotmeterProcess {
            child: Some(child),
            log,
        }
    }

    /// Runs a ClickHouse query over HTTP and returns the body (TSV), panicking with the server's
    /// message on an error.
    pub(crate) async fn clickhouse(&self, sql: &str) -> String {
        let response = self
            .http
            .post(&self.clickhouse_url)
            .body(sql.to_owned())
            .send()
            .await
            .expect("reach ClickHouse");
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "ClickHouse rejected {sql:?}: {body}");
        body
    }

    /// A single number from ClickHouse.
    pub(crate) async fn clickhouse_u64(&self, sql: &str) -> u64 {
        let body = self.clickhouse(sql).await;
        body.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql:?} returned {body:?}"))
    }

    /// Polls `sql` until it returns `expected`, or panics after `timeout` with the last value.
    pub(crate) async fn wait_for_count(
        &self,
        sql: &str,
        expected: u64,
        timeout: Duration,
        process: &mut BotmeterProcess,
    ) {
        let started = Instant::now();
        let mut last = 0;
        while started.elapsed() < timeout {
            process.assert_running();
            // The database may not exist yet while botmeter starts and migrates.
            last = match self
                .http
                .post(&self.clickhouse_url)
                .body(sql.to_owned())
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    response.text().await.unwrap().trim().parse().unwrap_or(0)
                }
                _ => 0,
            };
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "{sql:?} reached {last}, not {expected}, in {timeout:?}\n{}",
            process.log_tail()
        );
    }

    pub(crate) async fn drop_database(&self) {
        let on_cluster = self
            .cluster
            .as_ref()
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default();
        self.clickhouse(&format!(
            "DROP DATABASE IF EXISTS {}{on_cluster}",
            self.database
        ))
        .await;
    }
}

/// A `botmeter` child process, killed on drop.
pub(crate) struct BotmeterProcess {
    child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl BotmeterProcess {
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ---\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("botmeter exited early with {status}\n{}", self.log_tail());
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                panic!(
                    "botmeter did not stop within {timeout:?} of SIGTERM\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for BotmeterProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port (bound then released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// --- Helpers of the delivery and dead-letter tests ----------------------------------------------

impl BotmeterProcess {
    /// Sends SIGKILL (`kill -9 <pid>`: no flush, no clean-up) and reaps the process.
    pub(crate) fn kill9(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap()
    }

    /// Every line of the log.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …), `None` once the process is gone.
pub(crate) fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// A private ClickHouse server (same binary and settings as `scripts/services.sh` generates, on
/// free loopback ports, its data under `CARGO_TARGET_TMPDIR`), for tests that stop and restart it
/// without disturbing the shared one. Killed on drop.
pub(crate) struct ClickHouseServer {
    child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) http_port: u16,
    starts: u32,
}

impl ClickHouseServer {
    /// Writes the config and starts the server; returns once it answers `/ping`.
    pub(crate) fn start(name: &str) -> Self {
        let unique = format!(
            "clickhouse_{name}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                % 1_000_000_000
        );
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique);
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let (http_port, tcp_port) = loop {
            let (a, b) = (free_port(), free_port());
            if a != b {
                break (a, b);
            }
        };
        let d = dir.display();
        std::fs::write(
            dir.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{d}/log/clickhouse-server.log</log>
        <errorlog>{d}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("users.xml"),
            r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#,
        )
        .unwrap();
        let mut server = Self {
            child: None,
            dir,
            http_port,
            starts: 0,
        };
        server.restart();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn ping(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.http_port).into(),
            Duration::from_millis(500),
        ) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.ends_with("Ok.\n")
    }

    fn port_open(&self) -> bool {
        std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.http_port).into(),
            Duration::from_millis(200),
        )
        .is_ok()
    }

    /// The running server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Starts the server (again) on the same data directory and ports; returns once it answers.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let out = std::fs::File::create(self.dir.join(format!("log/stdout-{}.log", self.starts)))
            .unwrap();
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={}", self.dir.join("config.xml").display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start clickhouse-server (is ClickHouse installed? scripts/services.sh installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while !self.ping() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "private clickhouse-server exited with {status}; see {}",
                    self.dir.join("log").display()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "private clickhouse-server did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
        }
    }
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicMessage {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// `None` for a message without a payload (a tombstone).
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, String)>,
}

impl TopicMessage {
    pub(crate) fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every message of every partition of `topic`, from the beginning until nothing new arrives for
/// `quiet` (fetch-based, not watermark-based: tansu's high watermark is the start of the last record
/// batch), with fetch limits large enough for messages over 1 MiB.
pub(crate) fn read_topic_all(brokers: &str, topic: &str, quiet: Duration) -> Vec<TopicMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "it-reader")
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", "16777216")
        .set("fetch.max.bytes", "67108864")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(TopicMessage {
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().map(<[u8]>::to_vec),
                headers,
            });
            last = Instant::now();
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

/// Deletes topics, best effort (frees the broker's memory after a large test).
pub(crate) async fn delete_topics(brokers: &str, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    let Ok(admin) = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<rdkafka::client::DefaultClientContext>>()
    else {
        return;
    };
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let _ = admin.delete_topics(topics, &options).await;
}

/// Publishes one raw message (any bytes) and waits for the broker's acknowledgement.
pub(crate) async fn send_raw(brokers: &str, topic: &str, payload: &[u8]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::<(), [u8]>::to(topic).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce a raw message");
}

impl ClickHouseServer {
    /// SIGTERM; if the server is still running after `grace`, SIGKILL (as a service manager's stop
    /// timeout would). ClickHouse 18.16 keeps serving requests on open keep-alive connections
    /// after SIGTERM until they go idle, so under a steady writer a graceful stop can take longer
    /// than the writer needs to finish. Returns once the process is gone and its port closed;
    /// `true` if it had to be killed.
    pub(crate) fn stop_within(&mut self, grace: Duration) -> bool {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        let mut killed = false;
        while child.try_wait().unwrap().is_none() {
            if !killed && started.elapsed() > grace {
                Command::new("kill")
                    .args(["-KILL", &child.id().to_string()])
                    .status()
                    .unwrap();
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        while self.port_open() {
            assert!(
                started.elapsed() < grace + Duration::from_secs(30),
                "port {} still open after the server stopped",
                self.http_port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        killed
    }
}

/// `botmeter rollups check` over everything: the usage rollup equals the raw rows for every key
/// and metric (invariant 6), or the test fails with the differences it printed.
pub(crate) fn assert_rollup_equals_raw(env: &TestEnv) {
    let output = env
        .command(&["rollups", "check"])
        .output()
        .expect("run botmeter rollups check");
    assert!(
        output.status.success(),
        "botmeter rollups check exited with {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `BOTMETER_CLICKHOUSE_READER_USER`, default `botmeter_reader` (`scripts/services.sh` creates it,
/// `readonly = 1`): the user every `botmeter serve` of the tests connects as.
pub(crate) fn reader_user() -> String {
    std::env::var("BOTMETER_CLICKHOUSE_READER_USER")
        .unwrap_or_else(|_| "botmeter_reader".to_owned())
}

/// Asserts that no `secret` is in any String (or Array(String)) column of any table of the test's
/// database.
pub(crate) async fn assert_no_secret_stored(env: &TestEnv, secrets: &[&str]) {
    let columns = env
        .clickhouse(&format!(
            "SELECT table, name, type FROM system.columns WHERE database = '{}' AND type LIKE '%String%' AND table NOT LIKE '.inner%' FORMAT TSV",
            env.database
        ))
        .await;
    let mut scanned = 0;
    for line in columns.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let (table, column, kind) = (fields[0], fields[1], fields[2]);
        for secret in secrets {
            let test = if kind.starts_with("Array") {
                format!("arrayExists(x -> position(x, '{secret}') > 0, `{column}`)")
            } else if kind.starts_with("AggregateFunction") {
                // A state (the fleet tables' `any`, `argMinIf`…): what it holds is its value.
                format!("position(toString(finalizeAggregation(`{column}`)), '{secret}') > 0")
            } else {
                format!("position(`{column}`, '{secret}') > 0")
            };
            let found = env
                .clickhouse_u64(&format!(
                    "SELECT count() FROM {}.`{table}` WHERE {test}",
                    env.database
                ))
                .await;
            assert_eq!(found, 0, "{secret} in {table}.{column}");
        }
        scanned += 1;
    }
    assert!(scanned > 10, "too few columns scanned: {columns}");
}

/// Asserts that every dead letter names its reason and that no `secret` is in any payload or
/// header of `letters`.
pub(crate) fn assert_no_secret_on_topic(letters: &[TopicMessage], secrets: &[&str]) {
    for letter in letters {
        let payload = String::from_utf8_lossy(letter.payload.as_deref().unwrap_or_default());
        let text = format!("{payload} {:?}", letter.headers);
        assert!(letter.header("botmeter.reason").is_some(), "{text}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret} on the dead-letter topic: {text}"
            );
        }
    }
}

/// Checks a Prometheus text exposition the way a person reading it would: every metric has a
/// `# HELP` line, and every histogram that observed anything has its values inside its finite
/// buckets (the largest finite bucket holds every observation: none only in `+Inf`).
pub(crate) fn assert_metrics_readable(text: &str) {
    let mut types: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut fields = rest.split_whitespace();
            types.push((fields.next().unwrap(), fields.next().unwrap_or("")));
        }
    }
    assert!(!types.is_empty(), "no metric in {text}");
    for (name, kind) in &types {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("# HELP {name} "))),
            "no HELP for {name}\n{text}"
        );
        if *kind != "histogram" {
            continue;
        }
        // Per label set: the largest finite bucket's count equals the total count.
        let value = |line: &str| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        let counts: Vec<&str> = text
            .lines()
            .filter(|line| line.starts_with(&format!("{name}_count")))
            .collect();
        for count_line in counts {
            let count = value(count_line);
            let labels = count_line
                .strip_prefix(&format!("{name}_count"))
                .unwrap()
                .rsplit_once(' ')
                .unwrap()
                .0
                .trim_matches(|c| c == '{' || c == '}');
            let finite_max = text
                .lines()
                .filter(|line| line.starts_with(&format!("{name}_bucket{{")))
                .filter(|line| line.contains(labels) && !line.contains("le=\"+Inf\""))
                .map(value)
                .fold(0.0, f64::max);
            assert_eq!(
                finite_max, count,
                "{name}{{{labels}}}: {count} observations, {finite_max} within the finite buckets\n{text}"
            );
        }
    }
}

/// Net attributed usage per owner: (bytes out, HTTP requests, TCP connections).
pub(crate) type OwnerTotals = std::collections::BTreeMap<String, (u64, u64, u64)>;

impl TestEnv {
    /// Net attributed usage per owner as stored (owners whose rows net to nothing left out).
    pub(crate) async fn attributed_totals(&self) -> OwnerTotals {
        let body = self
            .clickhouse(&format!(
                "SELECT owner_id, sum(bytes_out * sign), sum(toInt64(http_requests) * sign), sum(toInt64(tcp_connections) * sign) \
                 FROM {}.usage_events WHERE status = 'attributed' GROUP BY owner_id HAVING sum(sign) != 0 ORDER BY owner_id FORMAT TSV",
                self.database
            ))
            .await;
        body.lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let n = |i: usize| f[i].parse::<u64>().unwrap();
                (f[0].to_owned(), (n(1), n(2), n(3)))
            })
            .collect()
    }

    /// Runs `botmeter reconcile --expect-caught-up`, asserts that it found everything agreeing
    /// (exit 0), and returns its report.
    pub(crate) fn reconcile_caught_up(&self) -> String {
        let output = self
            .command(&["reconcile", "--expect-caught-up"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }

    /// Starts `botmeter serve` on a free port and waits until it is ready; returns the process
    /// and the API's base URL.
    pub(crate) async fn serve(&self) -> (BotmeterProcess, String) {
        self.serve_with(&[]).await
    }

    /// [`Self::serve`] with more arguments.
    pub(crate) async fn serve_with(&self, more: &[&str]) -> (BotmeterProcess, String) {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["serve", "--listen", &listen];
        args.extend_from_slice(more);
        let mut serve = self.spawn("serve", &args);
        let http = reqwest::Client::new();
        let base = format!("http://{listen}");
        for _ in 0..200 {
            serve.assert_running();
            if let Ok(response) = http.get(format!("{base}/readyz")).send().await {
                if response.status() == 200 {
                    return (serve, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("serve never became ready\n{}", serve.log_tail());
    }
}

/// The truth's attributed usage per owner with any traffic, as [`TestEnv::attributed_totals`]
/// reads it.
pub(crate) fn truth_totals(truth: &simulate::GroundTruth) -> OwnerTotals {
    truth
        .owners
        .iter()
        .filter(|(_, o)| o.usage.http_requests + o.usage.tcp_connections > 0)
        .map(|(id, o)| {
            (
                id.clone(),
                (
                    o.usage.bytes_out,
                    o.usage.http_requests,
                    o.usage.tcp_connections,
                ),
            )
        })
        .collect()
}

/// Sends `payload` to one partition of `topic` and waits until the broker has it.
pub(crate) async fn send_to_partition(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    partition: i32,
    payload: &[u8],
) {
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}
