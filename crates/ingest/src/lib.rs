//! botmeter's Kafka side: configuration, the control-topic reader (every instance reads all of
//! it, by assignment), the traffic-topic reader (one consumer group, resuming from positions
//! the caller supplies — ClickHouse's, not Kafka's), decoding, and the dead-letter producer.

pub mod admin;
pub mod config;
pub mod dead_letter;
mod error;
pub mod source;

pub use config::KafkaConfig;
pub use dead_letter::{DeadLetter, DeadLetterProducer};
pub use error::{Error, Result};
pub use source::{
    control_consumer, high_watermarks, partitions_of, start_offset, traffic_consumer, PositionsFn,
    TrafficContext, WriteInFlight,
};
