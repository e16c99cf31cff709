//! The librdkafka settings every botmeter client starts from, in one place: the readers of
//! `run`, `reconcile`'s reader, and the producers of `simulate`, `receive`-style publishers and
//! the dead-letter topic.

use rdkafka::config::ClientConfig;

use crate::config::ValidKafkaConfig;

/// A consumer that never commits or stores offsets by itself (botmeter's position is what
/// ClickHouse holds), tuned for low latency and a bounded prefetch, with the user's extra
/// properties applied last. The caller sets `group.id`.
pub fn consumer_config(config: &ValidKafkaConfig) -> ClientConfig {
    let mut client = reader_config(&config.brokers);
    client
        // Low latency from publish to attribution: do not let the broker hold a fetch long.
        .set("fetch.wait.max.ms", "100")
        // librdkafka postpones a partition's next fetch by this long once its local queue is
        // full (default 1000 ms): with a backlog the queue then runs dry for most of a second
        // every ~200k messages. 20 ms keeps it fed (BENCHMARKS.md: +35% end to end).
        .set("fetch.queue.backoff.ms", "20")
        // Prefetch at most 16 MiB (default 64 MiB): under a backlog the queue stays full, and at
        // 250k+ events/s 16 MiB is still ~60 ms of messages. Peak RSS draining a 1M backlog
        // 263–289 → 187–192 MiB, throughput unchanged (BENCHMARKS.md). Overridable with
        // `--kafka-consumer-property queued.max.messages.kbytes=…`.
        .set("queued.max.messages.kbytes", "16384")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "max.poll.interval.ms",
            config.max_poll_interval_ms.to_string(),
        );
    for (key, value) in &config.consumer_properties {
        client.set(key, value);
    }
    client
}

/// A reader of `brokers` that commits nothing and starts a partition without a position at its
/// beginning: the base of [`consumer_config`], and what `reconcile` reads the topics with.
pub fn reader_config(brokers: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", brokers)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    client
}

/// A producer to `brokers` whose sends count only once every in-sync replica has them
/// (`acks=all`); callers add batching and timeouts of their own.
pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers).set("acks", "all");
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KafkaConfig;

    #[test]
    fn user_properties_come_last_and_offsets_stay_manual() {
        let config = KafkaConfig {
            consumer_properties: vec![("queued.max.messages.kbytes".into(), "1024".into())],
            ..KafkaConfig::default()
        }
        .validate()
        .unwrap();
        let client = consumer_config(&config);
        assert_eq!(client.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        assert_eq!(client.get("bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(producer_config("h:1").get("acks"), Some("all"));
    }
}
