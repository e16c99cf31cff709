//! `botmeter sync`: keeps the control topic in step with an ngrok account by reading ngrok's REST
//! API. ngrok's event destinations send no event when a bot user or an endpoint is created,
//! changed or deleted, and an account that existed before botmeter needs a starting state; sync
//! publishes both, marked `"source": "botmeter-sync"`.
//!
//! Each poll reads the six lists whole (`client`), builds a view of the account (`fleet`), and
//! publishes the difference from what sync last published (`topic`): on the first run, the whole
//! fleet at its objects' creation times. A poll that cannot read every list publishes nothing
//! (no half a difference) and is tried again at the next interval. What sync last published is
//! rebuilt from the control topic at start and after a failed publish, never kept in a file.
//!
//! The API key comes from `NGROK_API_KEY` or `--api-key-file`, never from a flag (a command line
//! is visible to every user of the machine), and is never logged, published or stored.

mod client;
mod fleet;
mod topic;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use model::ngrok_api::{
    ApiKeyList, BotUserList, CredentialList, EndpointList, SshCredentialList, TunnelSessionList,
};
use tracing::{info, warn};

pub use client::{ClientError, ClientSettings, NgrokClient};
pub use fleet::{FleetView, Kind, Lists, SyncEvent};

/// The environment variable holding the ngrok API key (the name ngrok's own tools read).
pub const API_KEY_ENV: &str = "NGROK_API_KEY";

/// Long help of `botmeter sync`.
pub const LONG_ABOUT: &str = "\
Read bot users, authtokens, API keys, SSH credentials, tunnel sessions and endpoints from the \
ngrok API and publish them to the control topic as botmeter control events marked \
\"source\": \"botmeter-sync\".

The first run publishes the whole fleet, each object at its created_at (sessions at started_at), \
so usage of sessions that started before botmeter existed is attributed. Each later poll \
publishes the difference: new objects at their creation time; changes (active, name, acl, \
metadata, description) and disappearances (a gone session is agent_session_stop) at the time the \
poll finished reading. A restart rebuilds what was published from the control topic and \
publishes nothing twice.

The API key is read from NGROK_API_KEY or --api-key-file (never a flag); it needs read access to \
bot users, credentials, API keys, SSH credentials, tunnel sessions and endpoints (an admin's key; \
ngrok API keys carry their owner's permissions).";

/// Flags of `botmeter sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub kafka: ingest::KafkaArgs,
    /// Base URL of the ngrok API.
    #[arg(
        long,
        env = "BOTMETER_NGROK_API_URL",
        default_value = "https://api.ngrok.com"
    )]
    pub ngrok_api_url: String,
    /// File holding the ngrok API key (one line). Without it, the key is read from the
    /// NGROK_API_KEY environment variable.
    #[arg(long, env = "BOTMETER_NGROK_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// The ngrok account id (`ac_…`) stamped on the events' `account_id`; a restart reads back
    /// only this account's events, so several accounts can share a control topic.
    #[arg(long, env = "BOTMETER_NGROK_ACCOUNT_ID", default_value = "")]
    pub account_id: String,
    /// Seconds between polls (from the start of one to the start of the next).
    #[arg(long, env = "BOTMETER_SYNC_POLL_INTERVAL_SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub poll_interval_secs: u64,
    /// Poll once and exit: 0 when it published its difference, 1 when it could not.
    #[arg(long)]
    pub once: bool,
    /// Attempts per API page before a poll fails (429, 5xx, garbage and network errors retry).
    #[arg(long, env = "BOTMETER_SYNC_MAX_ATTEMPTS", default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// First wait after a 5xx or garbage (ms), doubling per attempt.
    #[arg(long, env = "BOTMETER_SYNC_FIRST_BACKOFF_MS", default_value_t = 1_000)]
    pub first_backoff_ms: u64,
    /// Longest wait between attempts (ms), a 429's Retry-After included.
    #[arg(long, env = "BOTMETER_SYNC_MAX_BACKOFF_MS", default_value_t = 60_000)]
    pub max_backoff_ms: u64,
    /// Create the control topic when missing, with one partition.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topic: bool,
}

/// What [`SyncArgs`] asks for, checked.
#[derive(Debug)]
struct SyncConfig {
    base: reqwest::Url,
    settings: ClientSettings,
    poll_interval: Duration,
}

impl SyncArgs {
    fn config(&self) -> anyhow::Result<SyncConfig> {
        let base = reqwest::Url::parse(&self.ngrok_api_url)
            .with_context(|| format!("invalid --ngrok-api-url {:?}", self.ngrok_api_url))?;
        anyhow::ensure!(
            matches!(base.scheme(), "http" | "https") && base.host().is_some(),
            "invalid --ngrok-api-url {:?}: expected an http(s) URL with a host",
            self.ngrok_api_url
        );
        anyhow::ensure!(
            base.username().is_empty() && base.password().is_none() && base.query().is_none(),
            "invalid --ngrok-api-url: it must hold no credentials or query (the key goes in NGROK_API_KEY or --api-key-file)"
        );
        anyhow::ensure!(
            self.first_backoff_ms >= 1 && self.first_backoff_ms <= self.max_backoff_ms,
            "--first-backoff-ms ({}) must be from 1 to --max-backoff-ms ({})",
            self.first_backoff_ms,
            self.max_backoff_ms
        );
        Ok(SyncConfig {
            base,
            settings: ClientSettings {
                max_attempts: self.max_attempts,
                first_backoff: Duration::from_millis(self.first_backoff_ms),
                max_backoff: Duration::from_millis(self.max_backoff_ms),
                request_timeout: Duration::from_secs(30),
            },
            poll_interval: Duration::from_secs(self.poll_interval_secs),
        })
    }

    /// The API key: `--api-key-file`'s first line, else `NGROK_API_KEY`.
    fn api_key(&self) -> anyhow::Result<String> {
        let key = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("failed to read --api-key-file {}", path.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            None => std::env::var(API_KEY_ENV)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        anyhow::ensure!(
            !key.is_empty(),
            "no ngrok API key: set {API_KEY_ENV} or pass --api-key-file (the file was empty)"
        );
        Ok(key)
    }
}

/// Reads all six lists. Any list failing fails the poll.
async fn read_lists(client: &NgrokClient) -> Result<Lists, ClientError> {
    Ok(Lists {
        bot_users: client.list::<BotUserList>().await?,
        credentials: client.list::<CredentialList>().await?,
        api_keys: client.list::<ApiKeyList>().await?,
        ssh_credentials: client.list::<SshCredentialList>().await?,
        tunnel_sessions: client.list::<TunnelSessionList>().await?,
        endpoints: client.list::<EndpointList>().await?,
    })
}

/// Runs `botmeter sync` until a signal (or one poll with `--once`).
pub async fn execute(
    args: SyncArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = args.config()?;
    let api_key = args.api_key()?;
    let kafka = args.kafka.config();
    let (brokers, topic) = (kafka.brokers.as_str(), kafka.control_topic.as_str());
    let client = NgrokClient::new(config.base.clone(), &api_key, config.settings.clone())?;
    drop(api_key);
    if args.create_topic {
        ingest::admin::ensure_topics(brokers, &[(topic, 1)])
            .await
            .with_context(|| format!("failed to create the control topic {topic}"))?;
    }
    let producer = topic::producer(brokers)?;
    let mut published = restore(brokers, topic, &args.account_id).await?;

    tokio::pin!(shutdown);
    let mut ticks = tokio::time::interval(config.poll_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                info!("stopping");
                return Ok(());
            }
            _ = ticks.tick() => {}
        }
        let lists = match read_lists(&client).await {
            Ok(lists) => lists,
            Err(e) if args.once => {
                return Err(anyhow::Error::new(e)
                    .context("failed to read the ngrok API; published nothing"))
            }
            Err(e) => {
                warn!(error = %e, "failed to read the ngrok API; published nothing, trying again at the next poll");
                continue;
            }
        };
        let observed_at = chrono::Utc::now();
        let mut next = FleetView::from_lists(&lists);
        let rejected = next.keep_decodable(&published);
        if let Some((kind, id, reason)) = rejected.first() {
            warn!(
                objects = rejected.len(),
                first_kind = ?kind,
                first_id = %id,
                first_reason = %reason,
                "objects botmeter cannot read were not published (kept as last published, if ever)"
            );
        }
        let events = published.diff(&next, observed_at);
        match topic::publish(&producer, topic, &args.account_id, &events).await {
            Ok(()) => {
                let count = |suffix: &str| {
                    events
                        .iter()
                        .filter(|e| e.event_type.contains(suffix))
                        .count()
                };
                info!(
                    objects = next.len(),
                    published = events.len(),
                    created = count("_created") + count("_start"),
                    updated = count("_updated"),
                    deleted = count("_deleted") + count("_stop"),
                    "poll published"
                );
                published = next;
            }
            Err(e) => {
                // Some events may have landed: read back what did, so none is sent twice.
                if args.once {
                    return Err(e.context("failed to publish the poll's events"));
                }
                warn!(error = %format!("{e:#}"), "failed to publish the poll's events; rebuilding from the control topic");
                published = restore(brokers, topic, &args.account_id).await?;
            }
        }
        if args.once {
            return Ok(());
        }
    }
}

/// What sync last published, from the control topic.
async fn restore(brokers: &str, topic: &str, account_id: &str) -> anyhow::Result<FleetView> {
    let started = std::time::Instant::now();
    let (view, read) = topic::restore(brokers, topic, account_id)
        .await
        .with_context(|| format!("failed to rebuild sync's state from {topic}"))?;
    info!(
        topic,
        messages = read.messages,
        own_events = read.own_events,
        objects = view.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "rebuilt what sync published from the control topic"
    );
    Ok(view)
}
