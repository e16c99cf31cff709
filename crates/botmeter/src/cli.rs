//! The command line: `migrate`, `run`, `serve` and `simulate`, every flag also readable from a
//! `BOTMETER_*` environment variable. Configuration is validated before any IO.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ingest::{KafkaArgs, KafkaConfig, ValidKafkaConfig};
use query::{ClickHouseConfig, ValidClickHouseConfig};
use tracing::info;

use crate::pipeline::{self, RunSettings, RunStats};

/// Attributes ngrok usage (bandwidth, requests, connections) to the bot user or user that owns the
/// credential behind it, as of the event's time, and answers reports on it.
///
/// Typical use: `botmeter migrate`, then `botmeter run` (Kafka → ClickHouse) beside
/// `botmeter serve` (HTTP API). `botmeter simulate` publishes a seeded fleet with a ground truth.
#[derive(Debug, Parser)]
#[command(name = "botmeter", version, propagate_version = true)]
pub struct Cli {
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Logging flags.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, env = "BOTMETER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `botmeter=debug,info` (tracing's EnvFilter syntax).
    #[arg(long, env = "BOTMETER_LOG", default_value = "info", global = true)]
    pub log: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database and apply pending schema migrations (also done by `run` at start-up).
    Migrate {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
    },
    /// Consume the control and traffic topics, attribute traffic, and write it to ClickHouse.
    Run(RunArgs),
    /// Re-resolve unattributed usage in a time window once the missing control events have
    /// arrived, without double counting (restated rows are cancelled, not rewritten).
    Reattribute {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
        /// The control topic whose audit log the ownership state is rebuilt from.
        #[arg(long, env = "BOTMETER_CONTROL_TOPIC", default_value = model::topics::CONTROL)]
        control_topic: String,
        /// Start of the window (inclusive, RFC 3339), by usage time.
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End of the window (exclusive, RFC 3339).
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// Do not draw a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Check that every consumed Kafka message ends in exactly one net row in ClickHouse, per
    /// partition of the traffic and control topics; exits 1 on a mismatch.
    #[command(long_about = crate::reconcile::LONG_ABOUT)]
    Reconcile(crate::reconcile::ReconcileArgs),
    /// Check that the usage rollup (what reports read) equals the raw rows, or rebuild months of
    /// it from them.
    Rollups(crate::rollups::RollupsArgs),
    /// Publish a seeded, deterministic fleet (users, bot users, credentials, sessions, endpoints,
    /// traffic) to the topics, and write the ground truth of what each owner used.
    Simulate(simulate::SimulateArgs),
    /// Read the fleet from the ngrok API (bot users, credentials, sessions, endpoints) and
    /// publish it, then each poll's changes, to the control topic.
    #[command(long_about = crate::sync::LONG_ABOUT)]
    Sync(crate::sync::SyncArgs),
    /// Receive ngrok's event logs from an Amazon Data Firehose stream (HTTP endpoint delivery)
    /// and publish each event to the control or traffic topic; 200 only once Kafka has them all.
    Receive(crate::receive::ReceiveArgs),
    /// Serve the HTTP API (usage reports) from ClickHouse.
    Serve {
        #[command(flatten)]
        clickhouse: ClickHouseArgs,
        /// Address to listen on.
        #[arg(long, env = "BOTMETER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Plan quotas and unit prices for /v1/overage (TOML, or JSON when it ends in .json).
        #[arg(long, env = "BOTMETER_PLAN")]
        plan: Option<std::path::PathBuf>,
        /// API keys (SHA-256 digests with roles admin, reader, customer:ID; TOML or .json): at
        /// least one, each digest once, else serve refuses to start. Without it the API is open
        /// to anyone who can reach it.
        #[arg(long, env = "BOTMETER_API_KEYS_FILE")]
        api_keys_file: Option<std::path::PathBuf>,
        /// Key at the top level of bot users' JSON metadata whose value names their customer
        /// (/v1/customers/VALUE/report), as of each event's time (a bot user moved mid-month
        /// counts on each side for its own part); a customer's credentials are those its bot users
        /// own. Customers are bot user ids only without it.
        #[arg(long, env = "BOTMETER_CUSTOMER_METADATA_KEY")]
        customer_metadata_key: Option<String>,
        /// Whole days after which a live credential is reported due for rotation by
        /// /v1/credentials (a request may ask for another period with rotation_days).
        #[arg(long, env = "BOTMETER_CREDENTIAL_ROTATION_DAYS",
            default_value_t = query::api::DEFAULT_CREDENTIAL_ROTATION_DAYS,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(query::api::MAX_ROTATION_DAYS)))]
        credential_rotation_days: u32,
        /// Seconds a credential may have no agent online (its last session stopped) before
        /// /v1/fleet reports it dropped rather than reconnecting (a request may ask for another
        /// grace with drop_grace_seconds).
        #[arg(long, env = "BOTMETER_FLEET_DROP_GRACE_SECONDS",
            default_value_t = query::api::DEFAULT_FLEET_DROP_GRACE_SECONDS,
            value_parser = clap::value_parser!(u32).range(0..=i64::from(query::api::MAX_FLEET_DROP_GRACE_SECONDS)))]
        fleet_drop_grace_seconds: u32,
        /// Answer every /v1/fleet request by reading ClickHouse (about a second at 100k
        /// credentials) instead of from the fleet timeline this server keeps in memory (rebuilt
        /// from ClickHouse every 10 s).
        #[arg(long, env = "BOTMETER_NO_FLEET_TIMELINE")]
        no_fleet_timeline: bool,
        /// Memory for the fleet timeline's traffic, in MiB: 12 bytes per credential and second
        /// with traffic, plus 8 bytes per credential per segment. Past it the oldest seconds are
        /// dropped; /v1/fleet?at= before the oldest second kept (the gauge
        /// botmeter_fleet_timeline_horizon_seconds) reads ClickHouse instead, exact but slower.
        #[arg(long, env = "BOTMETER_FLEET_TIMELINE_MAX_MIB", value_name = "MIB",
            default_value_t = query::api::DEFAULT_FLEET_TIMELINE_MAX_MIB,
            value_parser = clap::value_parser!(u64)
                .range(query::api::MIN_FLEET_TIMELINE_MAX_MIB..=query::api::MAX_FLEET_TIMELINE_MAX_MIB))]
        fleet_timeline_max_mib: u64,
        /// Report requests answered at once; one more is answered 503 with `Retry-After` at once
        /// (shed, not queued), so the API cannot pile queries onto ClickHouse.
        #[arg(long, env = "BOTMETER_MAX_CONCURRENT_REQUESTS",
            default_value_t = query::api::DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = parse_at_least_one)]
        max_concurrent_requests: usize,
        /// Serve the API's Prometheus `/metrics` (requests by route and status, latency,
        /// ClickHouse time per request, requests shed, queries killed) on this address, apart
        /// from the API so that it is not exposed with it.
        #[arg(
            long,
            env = "BOTMETER_METRICS_LISTEN",
            default_value = "127.0.0.1:9465"
        )]
        metrics_listen: SocketAddr,
    },
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

/// `KEY=VALUE` → `(KEY, VALUE)`.
fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected KEY=VALUE (a librdkafka property), found {text:?}"
        )),
    }
}

/// Where ClickHouse is.
#[derive(Debug, Clone, Args)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(
        long = "clickhouse-url",
        env = "BOTMETER_CLICKHOUSE_URL",
        default_value = query::config::DEFAULT_URL
    )]
    pub url: String,
    /// Database holding botmeter's tables.
    #[arg(
        long = "clickhouse-database",
        env = "BOTMETER_CLICKHOUSE_DATABASE",
        default_value = query::config::DEFAULT_DATABASE
    )]
    pub database: String,
    /// ClickHouse user. `serve` should use a read-only one (`readonly = 1`, with
    /// `max_execution_time` in its profile): `scripts/services.sh` creates `botmeter_reader`.
    #[arg(
        long = "clickhouse-user",
        env = "BOTMETER_CLICKHOUSE_USER",
        default_value = query::config::DEFAULT_USER
    )]
    pub user: String,
    /// ClickHouse password (prefer the environment variable).
    #[arg(
        long = "clickhouse-password",
        env = "BOTMETER_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
    /// Compression of insert bodies. `auto`: `none` when the URL names this machine (localhost,
    /// 127.0.0.0/8, ::1; compressing only costs CPU on both ends, ~8% of the pipeline's), `lz4`
    /// otherwise (across a network it saves bandwidth).
    #[arg(long = "clickhouse-insert-compression", env = "BOTMETER_CLICKHOUSE_INSERT_COMPRESSION", value_enum, default_value_t = InsertCompression::Auto)]
    pub insert_compression: InsertCompression,
    /// Deadline for ClickHouse to acknowledge one insert (ms). An insert past it is retried;
    /// the one that timed out is first made sure to be finished or killed on the server.
    #[arg(long = "clickhouse-insert-timeout-ms", env = "BOTMETER_CLICKHOUSE_INSERT_TIMEOUT_MS", default_value_t = query::config::DEFAULT_INSERT_TIMEOUT_MS)]
    pub insert_timeout_ms: u64,
    /// The ClickHouse cluster (its `remote_servers` name) the database lives on; empty for one
    /// server. `migrate` then creates every table `ON CLUSTER` as a Replicated*MergeTree
    /// `<table>_local` with a `Distributed` `<table>` in front (reads keep their names); `run`
    /// inserts each Kafka partition's rows on shard `partition % shards` (per shard with
    /// `--clickhouse-shard-urls`, else through the Distributed tables synchronously) and relies
    /// on replication's block deduplication to retry an insert whose answer was lost. Every command of one deployment needs the same value.
    #[arg(
        long = "clickhouse-cluster",
        visible_alias = "cluster",
        env = "BOTMETER_CLICKHOUSE_CLUSTER",
        default_value = ""
    )]
    pub cluster: String,
    /// On a cluster, the HTTP URLs of each shard's replicas, in the cluster's shard order
    /// (`system.clusters`): shards separated by `;`, a shard's replicas by `,`, e.g.
    /// `http://ch1:8123,http://ch2:8123;http://ch3:8123,http://ch4:8123`. `run` then inserts
    /// each Kafka partition's usage straight into shard `partition % shards` (its `_local`
    /// table, through the first replica that takes it), so a shard that is down pauses only its
    /// own partitions. Checked against the cluster at start. Empty: usage goes through the
    /// `Distributed` tables, and a shard down pauses every partition of the instance.
    #[arg(
        long = "clickhouse-shard-urls",
        env = "BOTMETER_CLICKHOUSE_SHARD_URLS",
        default_value = ""
    )]
    pub shard_urls: String,
}

/// How insert bodies travel to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InsertCompression {
    /// `none` for a ClickHouse on this machine, `lz4` for one across a network.
    Auto,
    /// LZ4 (ClickHouse's native block compression).
    Lz4,
    /// Uncompressed.
    None,
}

impl InsertCompression {
    /// Whether inserts to `url` are compressed.
    pub fn compresses(self, url: &str) -> bool {
        match self {
            Self::Auto => !query::is_loopback_url(url),
            Self::Lz4 => true,
            Self::None => false,
        }
    }
}

impl ClickHouseArgs {
    /// The validated ClickHouse configuration.
    pub fn config(&self) -> anyhow::Result<ValidClickHouseConfig> {
        let config = ClickHouseConfig {
            url: self.url.clone(),
            database: self.database.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            compress_inserts: self.insert_compression.compresses(&self.url),
            insert_timeout_ms: self.insert_timeout_ms,
            cluster: self.cluster.clone(),
            shard_urls: query::parse_shard_urls(&self.shard_urls),
            ..ClickHouseConfig::default()
        };
        config.validate().context("invalid ClickHouse settings")
    }
}

/// Flags of `botmeter run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group of the traffic readers; instances in one group share the partitions.
    #[arg(long, env = "BOTMETER_GROUP_ID", default_value = ingest::config::DEFAULT_GROUP_ID)]
    pub group_id: String,
    /// Consumer-group session timeout (ms). tansu needs at least 6000.
    #[arg(long, env = "BOTMETER_SESSION_TIMEOUT_MS", default_value_t = ingest::config::DEFAULT_SESSION_TIMEOUT_MS)]
    pub session_timeout_ms: u32,
    /// Max time between polls (ms); tansu's JoinGroup waits this long on every (re)join.
    #[arg(long, env = "BOTMETER_MAX_POLL_INTERVAL_MS", default_value_t = ingest::config::DEFAULT_MAX_POLL_INTERVAL_MS)]
    pub max_poll_interval_ms: u32,
    /// On resume, re-read this many messages before the stored position (skipping what is
    /// stored): tansu drops the rest of a record batch when a fetch starts inside it. 0 for Kafka.
    #[arg(
        long,
        env = "BOTMETER_RESUME_REWIND_MESSAGES",
        default_value_t = ingest::config::DEFAULT_RESUME_REWIND_MESSAGES
    )]
    pub resume_rewind_messages: i64,
    /// Extra librdkafka property for the consumers, `KEY=VALUE`; repeat for more (env: separate
    /// with `;`). For tuning, e.g. `max.partition.fetch.bytes=4194304`; the properties delivery
    /// depends on (offsets, group, brokers, timeouts) are refused.
    #[arg(long, env = "BOTMETER_KAFKA_CONSUMER_PROPERTIES", value_delimiter = ';', value_parser = parse_property)]
    pub kafka_consumer_property: Vec<(String, String)>,
    /// Largest traffic batch written in one insert, in messages.
    #[arg(long, env = "BOTMETER_BATCH_MAX_ROWS", default_value_t = pipeline::DEFAULT_BATCH_MAX_ROWS)]
    pub batch_max_rows: usize,
    /// Longest a batch waits to fill, in milliseconds.
    #[arg(long, env = "BOTMETER_BATCH_MAX_WAIT_MS", default_value_t = pipeline::DEFAULT_BATCH_MAX_WAIT_MS)]
    pub batch_max_wait_ms: u64,
    /// How late (ms) a control event may be published after traffic that depends on it: traffic
    /// this recent waits for the control plane even when its topic is read to the end.
    #[arg(long, env = "BOTMETER_CONTROL_LATENESS_MS", default_value_t = pipeline::DEFAULT_CONTROL_LATENESS_MS)]
    pub control_lateness_ms: u64,
    /// Keep ended sessions and endpoints this long (ms, by traffic time) before evicting them from
    /// memory; traffic arriving later than that on them is unattributed.
    #[arg(long, env = "BOTMETER_EVICTION_GRACE_MS", default_value_t = enrich::DEFAULT_EVICTION_GRACE_MS)]
    pub eviction_grace_ms: u64,
    /// Longest a traffic batch waits for the control plane to be read past its time (ms); then
    /// its traffic after what the control plane covers is written unattributed with reason
    /// `control_plane_behind`, for `botmeter reattribute` to restate. Meanwhile the partitions
    /// are paused and polled, so the consumer stays in its group.
    #[arg(long, env = "BOTMETER_MAX_CONTROL_WAIT_MS", default_value_t = pipeline::DEFAULT_MAX_CONTROL_WAIT_MS)]
    pub max_control_wait_ms: u64,
    /// How far ahead of this machine's clock a traffic event may be stamped (ms). Traffic beyond
    /// it is dead-lettered (`event_time_out_of_range`) instead of waited on, and traffic within
    /// it is waited on only up to now. (A control event stamped in the future is applied, but
    /// counts for the control watermark only as of when it was read.)
    #[arg(long, env = "BOTMETER_MAX_CLOCK_SKEW_MS", default_value_t = pipeline::DEFAULT_MAX_CLOCK_SKEW_MS)]
    pub max_clock_skew_ms: u64,
    /// Traffic stamped before this time (RFC 3339) is dead-lettered (`event_time_out_of_range`).
    #[arg(long, env = "BOTMETER_MIN_EVENT_TIME", default_value = pipeline::DEFAULT_MIN_EVENT_TIME)]
    pub min_event_time: chrono::DateTime<chrono::Utc>,
    /// A traffic event whose `event_id` was already written at another Kafka position, within
    /// this much event time (ms) of the newest event, is a repeated delivery (ngrok's event
    /// destinations deliver at least once): written with status `duplicate` so that its position
    /// is covered, and counted in no report (`/v1/anomalies` and `reconcile` list repeats).
    #[arg(long, env = "BOTMETER_REPEAT_WINDOW_MS", default_value_t = ingest::repeats::DEFAULT_WINDOW_MS)]
    pub repeat_window_ms: u64,
    /// Most event ids the repeat window remembers (about 60–120 bytes each); beyond it the
    /// oldest are forgotten early (`botmeter_repeat_window_evicted_total`). 0 turns repeat
    /// detection off.
    #[arg(long, env = "BOTMETER_REPEAT_WINDOW_MAX_IDS", default_value_t = ingest::repeats::DEFAULT_MAX_IDS)]
    pub repeat_window_max_ids: usize,
    /// Testing only: the control reader starts reading this long after the pipeline (ms), to
    /// exercise `--max-control-wait-ms`.
    #[arg(
        long,
        env = "BOTMETER_HOLD_CONTROL_READER_MS",
        default_value_t = 0,
        hide = true
    )]
    pub hold_control_reader_ms: u64,
    /// Create missing topics with this many traffic partitions (control and dead letters get 1).
    #[arg(long, env = "BOTMETER_TRAFFIC_PARTITIONS", default_value_t = ingest::config::DEFAULT_TRAFFIC_PARTITIONS)]
    pub traffic_partitions: i32,
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this address.
    #[arg(long, env = "BOTMETER_OPS_LISTEN", default_value = "127.0.0.1:9464")]
    pub ops_listen: SocketAddr,
    /// Alert rules (TOML; see `deploy/alert-rules.example.toml` and README, Alerts): evaluated
    /// against ClickHouse every `evaluate_every_seconds` (`revoked_credential_used`,
    /// `acl_violation`, `inactive_owner_used`, `unattributed_spike`, `device_dropped`,
    /// `overage_forecast`, `usage_spike`), each state change
    /// (firing, resolved) delivered to the Kafka topic `botmeter.alerts` and the webhooks named
    /// in `[delivery]`, and listed by `botmeter serve` at `/v1/alerts`. Checked before any IO.
    #[arg(long, env = "BOTMETER_ALERT_RULES")]
    pub alert_rules: Option<std::path::PathBuf>,
    /// Stop after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, env = "BOTMETER_RUN_FOR_SECS", default_value_t = 0)]
    pub run_for_secs: u64,
}

impl RunArgs {
    fn kafka_config(&self) -> anyhow::Result<ValidKafkaConfig> {
        let config = KafkaConfig {
            group_id: self.group_id.clone(),
            session_timeout_ms: self.session_timeout_ms,
            max_poll_interval_ms: self.max_poll_interval_ms,
            resume_rewind_messages: self.resume_rewind_messages,
            consumer_properties: self.kafka_consumer_property.clone(),
            ..self.kafka.config()
        };
        config.validate().context("invalid Kafka settings")
    }

    fn settings(&self) -> anyhow::Result<RunSettings> {
        anyhow::ensure!(
            self.batch_max_rows > 0,
            "--batch-max-rows must be at least 1, got 0"
        );
        anyhow::ensure!(
            self.max_control_wait_ms > 0,
            "--max-control-wait-ms must be at least 1, got 0"
        );
        anyhow::ensure!(
            self.traffic_partitions > 0,
            "--traffic-partitions must be at least 1, got {}",
            self.traffic_partitions
        );
        Ok(RunSettings {
            batch_max_rows: self.batch_max_rows,
            batch_max_wait_ms: self.batch_max_wait_ms,
            control_lateness_ms: self.control_lateness_ms,
            eviction_grace_ms: self.eviction_grace_ms,
            max_control_wait_ms: self.max_control_wait_ms,
            max_clock_skew_ms: self.max_clock_skew_ms,
            min_event_time: self.min_event_time,
            hold_control_reader_ms: self.hold_control_reader_ms,
            repeat_window_ms: self.repeat_window_ms,
            repeat_window_max_ids: self.repeat_window_max_ids,
            ..RunSettings::default()
        })
    }
}

/// Installs the tracing subscriber.
pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid --log filter {:?} ({e}); using info",
            args.log
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs one command.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Migrate { clickhouse } => migrate(&clickhouse).await?,
        Command::Serve {
            clickhouse,
            listen,
            plan,
            api_keys_file,
            customer_metadata_key,
            credential_rotation_days,
            fleet_drop_grace_seconds,
            no_fleet_timeline,
            fleet_timeline_max_mib,
            max_concurrent_requests,
            metrics_listen,
        } => {
            let config = clickhouse.config()?;
            let state = api_state(&config, plan, api_keys_file, customer_metadata_key)?
                .with_credential_rotation_days(credential_rotation_days)
                .map_err(anyhow::Error::msg)
                .context("invalid --credential-rotation-days")?
                .with_fleet_drop_grace_seconds(fleet_drop_grace_seconds)
                .map_err(anyhow::Error::msg)
                .context("invalid --fleet-drop-grace-seconds")?
                .with_fleet_timeline(!no_fleet_timeline)
                .with_fleet_timeline_max_bytes(query::api::mib_bytes(fleet_timeline_max_mib))
                .with_max_concurrent_requests(max_concurrent_requests);
            serve_metrics(metrics_listen).await?;
            tokio::spawn(query::api::run_fleet_gauges(state.clone()));
            tokio::spawn(query::api::run_alert_gauges(state.clone()));
            println!(
                "botmeter API on http://{listen}/ (try /v1/owners/<owner_id>/usage?from=…&to=…)"
            );
            query::serve(listen, state, shutdown_signal())
                .await
                .context("the HTTP API failed")?;
        }
        Command::Run(args) => run(args).await?,
        Command::Receive(args) => crate::receive::run(args).await?,
        Command::Simulate(args) => simulate::run(args).await?,
        Command::Sync(args) => crate::sync::execute(args, shutdown_signal()).await?,
        Command::Reconcile(args) => return crate::reconcile::execute(args).await,
        Command::Rollups(args) => return crate::rollups::execute(args).await,
        Command::Reattribute {
            clickhouse,
            control_topic,
            from,
            to,
            no_progress,
        } => reattribute(&clickhouse, &control_topic, from, to, !no_progress).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `botmeter migrate`: applies the pending migrations and lists them.
async fn migrate(clickhouse: &ClickHouseArgs) -> anyhow::Result<()> {
    let config = clickhouse.config()?;
    let report = query::migrate(&config).await.context("failed to migrate")?;
    println!(
        "ClickHouse {} database {:?}: server {}",
        config.url, config.database, report.server_version
    );
    for m in &report.applied {
        println!(
            "  applied {:04}_{} ({} statements)",
            m.version, m.name, m.statements
        );
    }
    println!(
        "  {} already applied, {} applied now",
        report.already_applied.len(),
        report.applied.len()
    );
    Ok(())
}

/// Installs the metrics recorder and serves `/metrics` on `addr` in the background.
async fn serve_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    let prometheus =
        crate::ops::install_recorder().context("failed to install the metrics recorder")?;
    query::api::describe_metrics();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("failed to listen on --metrics-listen {addr}"))?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "API metrics listening (/metrics)");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, crate::ops::metrics_router(prometheus)).await {
            tracing::error!(error = %e, "API metrics endpoint failed");
        }
    });
    Ok(())
}

/// The API's state from `botmeter serve`'s flags (files read and checked before listening).
fn api_state(
    config: &ValidClickHouseConfig,
    plan: Option<std::path::PathBuf>,
    api_keys_file: Option<std::path::PathBuf>,
    customer_metadata_key: Option<String>,
) -> anyhow::Result<query::AppState> {
    let mut state = query::AppState::new(config).context("failed to build the API state")?;
    if let Some(path) = plan {
        state = state.with_plan(query::api::Plan::load(&path).context("invalid --plan")?);
    }
    if let Some(path) = api_keys_file {
        let keys = query::api::ApiKeys::load(&path).context("invalid --api-keys-file")?;
        info!(keys = keys.len(), "api keys loaded");
        state = state.with_api_keys(keys);
    }
    if let Some(key) = customer_metadata_key {
        state = state
            .with_customer_metadata_key(&key)
            .map_err(anyhow::Error::msg)
            .context("invalid --customer-metadata-key")?;
    }
    Ok(state)
}

/// `botmeter reattribute`: restates unattributed usage in `[from, to)`.
async fn reattribute(
    clickhouse: &ClickHouseArgs,
    control_topic: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    progress: bool,
) -> anyhow::Result<()> {
    let config = clickhouse.config()?;
    let writer = query::Writer::new(&config).context("failed to build the ClickHouse writer")?;
    let reader = query::Reader::new(&config).context("failed to build the ClickHouse reader")?;
    let report =
        crate::reattribute::reattribute(&writer, &reader, control_topic, from, to, progress)
            .await?;
    println!(
        "{} unattributed rows in [{from}, {to}): {} now attributed, {} with another reason, still unattributed: {:?}",
        report.candidates, report.attributed, report.reason_changed, report.still_unattributed
    );
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let clickhouse = args.clickhouse.config()?;
    let kafka = args.kafka_config()?;
    let settings = args.settings()?;
    let alert_rules = args
        .alert_rules
        .as_deref()
        .map(query::alerts::AlertRules::load)
        .transpose()
        .context("invalid --alert-rules")?;
    // Built (and the CA file checked) before any network IO.
    let alert_sinks = alert_rules
        .as_ref()
        .map(|rules| crate::alerts::Sinks::new(rules, &kafka.brokers))
        .transpose()
        .context("invalid --alert-rules")?;
    let report = query::migrate(&clickhouse)
        .await
        .context("failed to migrate ClickHouse at start-up")?;
    info!(applied = report.applied.len(), "schema up to date");
    ingest::admin::ensure_pipeline_topics(&kafka, args.traffic_partitions)
        .await
        .context("failed to create the topics")?;
    let writer =
        query::Writer::new(&clickhouse).context("failed to build the ClickHouse writer")?;
    writer
        .verify_shards()
        .await
        .context("invalid --clickhouse-shard-urls")?;
    let reader =
        query::Reader::new(&clickhouse).context("failed to build the ClickHouse reader")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(RunStats::default());
    let prometheus =
        crate::ops::install_recorder().context("failed to install the metrics recorder")?;
    {
        let (stats, addr) = (stats.clone(), args.ops_listen);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("failed to listen on --ops-listen {addr}"))?;
        tokio::spawn(async move {
            info!(%addr, "operations endpoint listening (/metrics, /healthz, /readyz)");
            if let Err(e) = axum::serve(listener, crate::ops::router(stats, prometheus)).await {
                tracing::error!(error = %e, "operations endpoint failed");
            }
        });
    }
    {
        let stop = stop.clone();
        let run_for = args.run_for_secs;
        tokio::spawn(async move {
            if run_for > 0 {
                tokio::select! {
                    () = shutdown_signal() => {}
                    () = tokio::time::sleep(Duration::from_secs(run_for)) => {}
                }
            } else {
                shutdown_signal().await;
            }
            info!("stopping: finishing the batch in flight");
            stop.store(true, Ordering::SeqCst);
            // A second signal exits at once.
            shutdown_signal().await;
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        });
    }
    if let (Some(rules), Some(sinks)) = (alert_rules, alert_sinks) {
        if let Some(topic) = sinks.kafka_topic() {
            ingest::admin::ensure_topics(&kafka.brokers, &[(topic, 1)])
                .await
                .context("failed to create the alerts topic")?;
        }
        let fleet = query::AppState::new(&clickhouse)
            .context("failed to build the fleet reader of the device_dropped rules")?;
        tokio::spawn(crate::alerts::run(
            clickhouse.client(),
            fleet,
            Arc::new(rules),
            sinks,
            stats.holds_partition_zero.clone(),
            stop.clone(),
        ));
    }
    let (stop_run, stats_run) = (stop.clone(), stats.clone());
    tokio::task::spawn_blocking(move || {
        pipeline::run(kafka, writer, reader, settings, stop_run, stats_run)
    })
    .await
    .context("the pipeline panicked")??;
    let s = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    info!(
        traffic_in = s(&stats.traffic_in),
        control_in = s(&stats.control_in),
        attributed = s(&stats.attributed),
        unattributed = s(&stats.unattributed),
        repeated = s(&stats.repeated),
        dead_letters = s(&stats.dead_letters),
        "pipeline stopped"
    );
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve_budget(args: &[&str]) -> Result<u64, String> {
        let cli = Cli::try_parse_from([&["botmeter", "serve"], args].concat())
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Serve {
                fleet_timeline_max_mib,
                ..
            } => Ok(fleet_timeline_max_mib),
            _ => unreachable!("parsed serve"),
        }
    }

    #[test]
    fn the_fleet_timeline_budget_defaults_and_is_range_checked() {
        assert_eq!(serve_budget(&[]), Ok(512));
        assert_eq!(serve_budget(&["--fleet-timeline-max-mib", "64"]), Ok(64));
        let error = serve_budget(&["--fleet-timeline-max-mib", "8"]).unwrap_err();
        assert!(
            error.contains("--fleet-timeline-max-mib") && error.contains("16..=1048576"),
            "{error}"
        );
    }
}
