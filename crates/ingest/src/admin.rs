//! Topic set-up: creates botmeter's topics when they are missing, so a fresh broker works.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// Creates each `(topic, partitions)` that does not exist yet; existing topics are left alone.
pub async fn ensure_topics(brokers: &str, topics: &[(&str, i32)]) -> Result<()> {
    for (name, partitions) in topics {
        if *partitions < 1 {
            return Err(Error::Config {
                setting: "partitions",
                reason: format!("{partitions} for topic {name}: expected at least 1"),
            });
        }
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(Error::kafka("create the admin client"))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(Error::kafka("create topics"))?;
    for result in results {
        match result {
            Ok(topic) => info!(topic, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka {
                    context: format!("create topic {topic}"),
                    source: rdkafka::error::KafkaError::AdminOp(code),
                })
            }
        }
    }
    Ok(())
}

/// Creates botmeter's three topics when missing: the control and dead-letter topics with one
/// partition each (the control plane is read in order, in full, by every instance), the traffic
/// topic with `traffic_partitions`.
pub async fn ensure_pipeline_topics(config: &KafkaConfig, traffic_partitions: i32) -> Result<()> {
    ensure_topics(
        &config.brokers,
        &[
            (&config.control_topic, 1),
            (&config.traffic_topic, traffic_partitions),
            (&config.dead_letter_topic, 1),
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partition_counts_are_checked_before_any_io() {
        let err = ensure_topics("127.0.0.1:1", &[("botmeter.traffic", 0)])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("botmeter.traffic") && err.to_string().contains("0 for topic"),
            "{err}"
        );
    }
}
