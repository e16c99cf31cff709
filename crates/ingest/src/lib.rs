//! botmeter's Kafka side, everything that touches Kafka: configuration and the one base client
//! configuration every reader and producer starts from, the control-topic reader (every instance
//! reads all of it, by assignment), the traffic-topic reader (one consumer group, resuming from
//! positions the caller supplies — ClickHouse's, not Kafka's — with the rebalance fence and
//! pause/seek/resume), decoding a message into an event or a dead letter, the dead-letter
//! producer, the window that recognizes repeated deliveries of one event, and topic set-up.

pub mod admin;
pub mod client;
pub mod config;
pub mod control;
pub mod dead_letter;
pub mod decode;
mod error;
pub mod repeats;
pub mod traffic;

pub use config::{KafkaArgs, KafkaConfig, ValidKafkaConfig};
pub use control::{high_watermarks, partitions_of, ControlSource};
pub use dead_letter::{DeadLetter, DeadLetterProducer};
pub use decode::{decode, decode_control, decode_traffic, EventTimeWindow, MAX_MESSAGE_BYTES};
pub use error::{Error, Result};
pub use repeats::{RepeatWindow, Seen};
pub use traffic::{Fence, Paused, PositionsFn, TrafficSource, WriteInFlight};
