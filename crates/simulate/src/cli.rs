//! `botmeter simulate`: its flags ([`SimulateArgs`], every one as before the simulator left the
//! `botmeter` crate) and [`run`], which generates the fleet, creates the topics, publishes the
//! fleet and writes its ground truth.

use anyhow::Context as _;
use clap::Args;

use crate::{generate, publish, FleetConfig, Scenarios};

/// Flags of `botmeter simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub kafka: ingest::KafkaArgs,
    /// Seed: the same seed and sizes publish byte-identical events.
    #[arg(long, env = "BOTMETER_SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// People (`usr_…`) owning credentials.
    #[arg(long, default_value_t = 3)]
    pub users: usize,
    /// Bot users (`bot_…`) owning credentials.
    #[arg(long, default_value_t = 5)]
    pub bot_users: usize,
    /// Credentials of each kind (authtoken, SSH key, API key) per owner.
    #[arg(long, default_value_t = 1)]
    pub credentials_per_owner: usize,
    /// Agent sessions per authtoken and SSH key.
    #[arg(long, default_value_t = 2)]
    pub sessions_per_credential: usize,
    /// Endpoints per agent session.
    #[arg(long, default_value_t = 2)]
    pub endpoints_per_session: usize,
    /// HTTP requests plus TCP connections in the whole window.
    #[arg(long, env = "BOTMETER_SIM_TRAFFIC_EVENTS", default_value_t = 10_000)]
    pub traffic_events: usize,
    /// Start of the simulated window (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: chrono::DateTime<chrono::Utc>,
    /// Length of the window in hours.
    #[arg(long, default_value_t = 6)]
    pub duration_hours: u32,
    /// Messages per second to publish at (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Traffic partitions of the topics this creates when missing.
    #[arg(long, env = "BOTMETER_TRAFFIC_PARTITIONS", default_value_t = ingest::config::DEFAULT_TRAFFIC_PARTITIONS)]
    pub traffic_partitions: i32,
    /// Where to write the ground truth (JSON): per owner and per owner-hour usage.
    #[arg(long, default_value = "ground-truth.json")]
    pub truth_file: std::path::PathBuf,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Include every anomaly scenario, one or two of each: rotated authtokens, deactivated and
    /// deleted bot users (one deleted without its credentials' deletions), hostname reuse, ACL
    /// violations, endpoint owner mismatches, unknown hostnames, sessions, credentials and owners,
    /// wildcard sites and credential metadata that changes; the ground truth has each event's
    /// expected owner, reason and flags. Without it the fleet is clean.
    #[arg(long)]
    pub anomalies: bool,
}

impl SimulateArgs {
    /// The fleet these flags ask for (not yet validated).
    pub fn fleet_config(&self) -> FleetConfig {
        FleetConfig {
            seed: self.seed,
            users: self.users,
            bot_users: self.bot_users,
            credentials_per_owner: self.credentials_per_owner,
            sessions_per_credential: self.sessions_per_credential,
            endpoints_per_session: self.endpoints_per_session,
            traffic_events: self.traffic_events,
            start: self.start,
            duration_hours: self.duration_hours,
            scenarios: if self.anomalies {
                Scenarios::standard()
            } else {
                Scenarios::default()
            },
            ..FleetConfig::default()
        }
    }
}

/// Runs `botmeter simulate`: generates the fleet, creates the topics when missing, publishes the
/// fleet and writes its ground truth to `--truth-file`.
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let config = args.fleet_config();
    config.validate().context("invalid fleet")?;
    anyhow::ensure!(
        args.rate != Some(0),
        "--rate must be at least 1 message per second, got 0"
    );
    let fleet = generate(&config);
    ingest::admin::ensure_pipeline_topics(&args.kafka.config(), args.traffic_partitions)
        .await
        .context("failed to create the topics")?;
    let report = publish(
        &fleet,
        &args.kafka.brokers,
        &args.kafka.control_topic,
        &args.kafka.traffic_topic,
        args.rate,
        !args.no_progress,
    )
    .await
    .context("failed to publish the fleet")?;
    std::fs::write(&args.truth_file, fleet.truth.to_json_pretty()).with_context(|| {
        format!(
            "failed to write the ground truth to {}",
            args.truth_file.display()
        )
    })?;
    let truth = &fleet.truth;
    println!(
        "published {} control and {} traffic events ({:.0} msg/s) for {} owners; ground truth in {}",
        truth.control_events,
        truth.traffic_events,
        report.messages_per_sec,
        truth.owners.len(),
        args.truth_file.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Command {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn anomalies_asks_for_every_scenario_and_the_default_fleet_is_clean() {
        let parse = |flags: &[&str]| {
            Command::try_parse_from(std::iter::once("simulate").chain(flags.iter().copied()))
                .unwrap()
                .args
                .fleet_config()
        };
        let clean = parse(&[]);
        assert_eq!(clean.scenarios, Scenarios::default());
        let anomalies = parse(&["--anomalies"]);
        assert_eq!(anomalies.scenarios, Scenarios::standard());
        // The default sizes can hold every scenario.
        anomalies.validate().unwrap();
        let fleet = generate(&anomalies);
        assert!(!fleet.truth.unattributed.is_empty());
    }
}
