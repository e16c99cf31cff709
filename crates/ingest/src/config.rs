//! What the user sets for Kafka, validated before any IO.

use clap::Args;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Default bootstrap servers: a broker on this machine (`127.0.0.1`: tansu does not answer on
/// `localhost`'s IPv6 address).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// Default consumer group of the traffic readers.
pub const DEFAULT_GROUP_ID: &str = "botmeter";
/// Default consumer-group session timeout, ms (tansu needs at least 6000 for a stable group).
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 6000;
/// Default max time between polls, ms (tansu's JoinGroup waits this long on every (re)join).
pub const DEFAULT_MAX_POLL_INTERVAL_MS: u32 = 6000;
/// Default resume rewind, in messages: librdkafka's default `batch.num.messages` (see
/// [`KafkaConfig::resume_rewind_messages`]).
pub const DEFAULT_RESUME_REWIND_MESSAGES: i64 = 10_000;
/// Default traffic partitions of a topic botmeter creates (control and dead letters get 1).
pub const DEFAULT_TRAFFIC_PARTITIONS: i32 = 4;

/// Kafka settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list. Use `127.0.0.1`, not `localhost`, for a local broker.
    pub brokers: String,
    /// Consumer group of the traffic readers; instances in one group share the traffic partitions.
    pub group_id: String,
    /// Control-plane topic (credentials, bot users, sessions, endpoints, audit events).
    pub control_topic: String,
    /// Traffic topic (`http_request_complete.v0`, `tcp_connection_closed.v0`).
    pub traffic_topic: String,
    /// Where undecodable messages go, with the reason and their source position.
    pub dead_letter_topic: String,
    /// Consumer-group session timeout. tansu needs ≥ 6000 to keep a stable group.
    pub session_timeout_ms: u32,
    /// Max time between polls before the group evicts a consumer. tansu's JoinGroup waits this
    /// long, so it is also how long a (re)join takes there.
    pub max_poll_interval_ms: u32,
    /// On resume, start this many messages before the stored position and skip what is stored.
    /// Needed with brokers that drop the rest of a record batch when a fetch starts inside it
    /// (tansu 0.6); at least the producers' `batch.num.messages`. 0 is right for Apache Kafka.
    pub resume_rewind_messages: i64,
    /// Extra librdkafka properties for botmeter's consumers, applied after its own (fetch and
    /// queue sizes, e.g. `max.partition.fetch.bytes`). Those that botmeter's delivery depends on
    /// (offset handling, the group, the brokers) are refused.
    pub consumer_properties: Vec<(String, String)>,
}

/// librdkafka properties botmeter sets itself because exactly-once delivery depends on them.
pub const RESERVED_CONSUMER_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "session.timeout.ms",
    "max.poll.interval.ms",
    "isolation.level",
];

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: DEFAULT_BROKERS.into(),
            group_id: DEFAULT_GROUP_ID.into(),
            control_topic: model::topics::CONTROL.into(),
            traffic_topic: model::topics::TRAFFIC.into(),
            dead_letter_topic: model::topics::DEAD_LETTER.into(),
            session_timeout_ms: DEFAULT_SESSION_TIMEOUT_MS,
            max_poll_interval_ms: DEFAULT_MAX_POLL_INTERVAL_MS,
            resume_rewind_messages: DEFAULT_RESUME_REWIND_MESSAGES,
            consumer_properties: Vec::new(),
        }
    }
}

/// A [`KafkaConfig`] that passed [`KafkaConfig::validate`]: what every Kafka client builder of
/// this crate takes, so no client is built from settings nobody checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidKafkaConfig(KafkaConfig);

impl std::ops::Deref for ValidKafkaConfig {
    type Target = KafkaConfig;

    fn deref(&self) -> &KafkaConfig {
        &self.0
    }
}

impl KafkaConfig {
    /// Checks every setting without touching the network; the checked config is what the
    /// client builders take.
    pub fn validate(self) -> Result<ValidKafkaConfig> {
        self.check()?;
        Ok(ValidKafkaConfig(self))
    }

    fn check(&self) -> Result<()> {
        let bad = |setting, reason: String| Err(Error::Config { setting, reason });
        if self.brokers.trim().is_empty() {
            return bad(
                "brokers",
                "is empty; expected host:port[,host:port…]".into(),
            );
        }
        for broker in self.brokers.split(',') {
            let broker = broker.trim();
            match broker.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return bad("brokers", format!("{broker:?} is not host:port")),
            }
        }
        for (setting, topic) in [
            ("control_topic", &self.control_topic),
            ("traffic_topic", &self.traffic_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ] {
            if topic.is_empty()
                || topic.len() > 249
                || !topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return bad(
                    setting,
                    format!("{topic:?} is not a valid topic name ([a-zA-Z0-9._-], 1..=249 chars)"),
                );
            }
        }
        if self.control_topic == self.traffic_topic {
            return bad(
                "traffic_topic",
                format!("{:?} is also the control topic", self.traffic_topic),
            );
        }
        if self.group_id.trim().is_empty() {
            return bad("group_id", "is empty".into());
        }
        if self.resume_rewind_messages < 0 {
            return bad(
                "resume_rewind_messages",
                format!("{} is negative", self.resume_rewind_messages),
            );
        }
        if self.session_timeout_ms < 1000 {
            return bad(
                "session_timeout_ms",
                format!("{} is below 1000", self.session_timeout_ms),
            );
        }
        for (key, _) in &self.consumer_properties {
            if key.trim().is_empty() {
                return bad("consumer_properties", "a property has an empty name".into());
            }
            if RESERVED_CONSUMER_PROPERTIES.contains(&key.as_str()) {
                return bad(
                    "consumer_properties",
                    format!("{key:?} is set by botmeter (delivery depends on it); use its own setting instead"),
                );
            }
        }
        if self.max_poll_interval_ms < self.session_timeout_ms {
            return bad(
                "max_poll_interval_ms",
                format!(
                    "{} is below session_timeout_ms ({})",
                    self.max_poll_interval_ms, self.session_timeout_ms
                ),
            );
        }
        Ok(())
    }
}

/// Where Kafka is and which topics to use.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, `host:port[,host:port]`.
    #[arg(
        long = "kafka-brokers",
        env = "BOTMETER_KAFKA_BROKERS",
        default_value = DEFAULT_BROKERS
    )]
    pub brokers: String,
    /// Control-plane topic.
    #[arg(long, env = "BOTMETER_CONTROL_TOPIC", default_value = model::topics::CONTROL)]
    pub control_topic: String,
    /// Traffic topic.
    #[arg(long, env = "BOTMETER_TRAFFIC_TOPIC", default_value = model::topics::TRAFFIC)]
    pub traffic_topic: String,
    /// Dead-letter topic.
    #[arg(long, env = "BOTMETER_DEAD_LETTER_TOPIC", default_value = model::topics::DEAD_LETTER)]
    pub dead_letter_topic: String,
}

impl KafkaArgs {
    /// These topics and brokers, with every other Kafka setting at its default.
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.brokers.clone(),
            control_topic: self.control_topic.clone(),
            traffic_topic: self.traffic_topic.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            ..KafkaConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        KafkaConfig::default().validate().unwrap();
    }

    #[test]
    fn consumer_properties_may_tune_but_not_change_delivery() {
        let with = |key: &str| KafkaConfig {
            consumer_properties: vec![(key.to_owned(), "1".to_owned())],
            ..KafkaConfig::default()
        };
        with("max.partition.fetch.bytes").validate().unwrap();
        for reserved in RESERVED_CONSUMER_PROPERTIES {
            let err = with(reserved).validate().unwrap_err().to_string();
            assert!(
                err.contains("consumer_properties") && err.contains(reserved),
                "{err}"
            );
        }
        assert!(with(" ").validate().is_err());
    }

    #[test]
    fn errors_name_the_setting_and_value() {
        let config = KafkaConfig {
            brokers: "127.0.0.1".into(),
            ..KafkaConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("brokers") && err.contains("127.0.0.1"),
            "{err}"
        );
        let config = KafkaConfig {
            traffic_topic: "bad topic".into(),
            ..KafkaConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("\"bad topic\""));
        let config = KafkaConfig {
            max_poll_interval_ms: 10,
            ..KafkaConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_poll_interval_ms"));
    }
}
