//! Shared pieces of the real-service tests: a fresh ClickHouse database and fresh topics per test
//! (so tests run in parallel and leave nothing behind), the `botmeter` binary as a child process,
//! and small ClickHouse/HTTP helpers. Addresses come from `BOTMETER_CLICKHOUSE_URL` and
//! `BOTMETER_KAFKA_BROKERS`, defaulting to the loopback services of `scripts/services.sh`.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One test's private world: database, topics, consumer group.
pub struct TestEnv {
    pub clickhouse_url: String,
    pub brokers: String,
    pub database: String,
    pub control_topic: String,
    pub traffic_topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub log_dir: PathBuf,
    http: reqwest::Client,
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        let unique = format!(
            "{name}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 1_000_000_000
        );
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&unique);
        std::fs::create_dir_all(&log_dir).unwrap();
        Self {
            clickhouse_url: std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
            brokers: std::env::var("BOTMETER_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
            database: format!("botmeter_it_{unique}"),
            control_topic: format!("it.{unique}.control"),
            traffic_topic: format!("it.{unique}.traffic"),
            dead_letter_topic: format!("it.{unique}.dead-letter"),
            group_id: format!("it-{unique}"),
            log_dir,
            http: reqwest::Client::new(),
        }
    }

    /// Environment for a `botmeter` child process pointed at this test's world.
    pub fn command(&self, args: &[&str]) -> Command {
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
            .env("BOTMETER_LOG", "info");
        command
    }

    /// Starts `botmeter <args>` in the background, its output in `log_dir/<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> BotmeterProcess {
        let log = self.log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(args)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn botmeter");
        BotmeterProcess { child: Some(child), log }
    }

    /// Runs a ClickHouse query over HTTP and returns the body (TSV), panicking with the server's
    /// message on an error.
    pub async fn clickhouse(&self, sql: &str) -> String {
        let response = self.http.post(&self.clickhouse_url).body(sql.to_owned()).send().await.expect("reach ClickHouse");
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "ClickHouse rejected {sql:?}: {body}");
        body
    }

    /// A single number from ClickHouse.
    pub async fn clickhouse_u64(&self, sql: &str) -> u64 {
        let body = self.clickhouse(sql).await;
        body.trim().parse().unwrap_or_else(|_| panic!("{sql:?} returned {body:?}"))
    }

    /// Polls `sql` until it returns `expected`, or panics after `timeout` with the last value.
    pub async fn wait_for_count(&self, sql: &str, expected: u64, timeout: Duration, process: &mut BotmeterProcess) {
        let started = Instant::now();
        let mut last = 0;
        while started.elapsed() < timeout {
            process.assert_running();
            // The database may not exist yet while botmeter starts and migrates.
            last = match self.http.post(&self.clickhouse_url).body(sql.to_owned()).send().await {
                Ok(response) if response.status().is_success() => response.text().await.unwrap().trim().parse().unwrap_or(0),
                _ => 0,
            };
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("{sql:?} reached {last}, not {expected}, in {timeout:?}\n{}", process.log_tail());
    }

    pub async fn drop_database(&self) {
        self.clickhouse(&format!("DROP DATABASE IF EXISTS {}", self.database)).await;
    }
}

/// A `botmeter` child process, killed on drop.
pub struct BotmeterProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl BotmeterProcess {
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("--- last lines of {} ---\n{}", self.log.display(), lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("botmeter exited early with {status}\n{}", self.log_tail());
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                panic!("botmeter did not stop within {timeout:?} of SIGTERM\n{}", self.log_tail());
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
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Every message of partition 0 of `topic`, with its headers, read from the beginning until
/// nothing new arrives for `quiet` (fetch-based, not watermark-based: tansu's high watermark is
/// the start of the last record batch).
pub fn read_topic(brokers: &str, topic: &str, quiet: Duration) -> Vec<(Vec<u8>, Vec<(String, String)>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "it-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
                .unwrap_or_default();
            out.push((message.payload().unwrap_or_default().to_vec(), headers));
            last = Instant::now();
        }
    }
    out
}
