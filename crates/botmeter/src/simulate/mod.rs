//! `botmeter::simulate`: a deterministic generator of ngrok-format events for a synthetic
//! account — users, bot users, their credentials, agent sessions, endpoints, API activity and
//! traffic — with the ground truth botmeter must report for it, and a Kafka publisher.
//!
//! ```text
//! FleetConfig ─generate()─► Fleet { control, traffic, truth }
//!                                    │        │        └─► ground truth JSON (compare with reports)
//!                                    └────────┴─publish()─► control topic, then traffic topic
//! ```
//!
//! The same [`FleetConfig`] (seed included) always yields byte-identical messages, so a failing
//! end-to-end run can be replayed exactly. Every message decodes with [`model::decode`].

mod config;
mod encode;
mod generate;
mod publish;
mod truth;

#[cfg(test)]
mod tests;

pub use config::{ConfigError, FleetConfig};
pub use generate::{generate, Fleet, SimMessage, TOKEN_MARKER};
pub use publish::{publish, PublishReport};
pub use truth::{hour_bucket, GroundTruth, Inventory, OwnerTruth, Usage};
