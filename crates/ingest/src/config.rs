//! What the user sets for Kafka, validated before any IO.

use serde::Deserialize;

use crate::error::{Error, Result};

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
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "botmeter".into(),
            control_topic: model::topics::CONTROL.into(),
            traffic_topic: model::topics::TRAFFIC.into(),
            dead_letter_topic: model::topics::DEAD_LETTER.into(),
            session_timeout_ms: 6000,
            max_poll_interval_ms: 6000,
            resume_rewind_messages: 10_000,
        }
    }
}

impl KafkaConfig {
    /// Checks every setting without touching the network.
    pub fn validate(&self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        KafkaConfig::default().validate().unwrap();
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
