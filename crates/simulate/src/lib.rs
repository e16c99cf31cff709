//! botmeter's fleet simulator: a deterministic generator of ngrok-format events for a synthetic
//! account — users, bot users, their credentials, agent sessions, endpoints, API activity and
//! traffic — with the ground truth botmeter must report for it, and a Kafka publisher.
//!
//! ```text
//! FleetConfig ─generate()─► Fleet { control, traffic, late_control, truth }
//!                                    │        │          │           └─► ground truth JSON
//!                                    └────────┴──────────┴─publish()─► control topic, then
//!                                                                     traffic, then late control
//! ```
//!
//! The same [`FleetConfig`] (seed included) always yields byte-identical messages, so a failing
//! end-to-end run can be replayed exactly. Every message decodes with [`model::decode`].
//!
//! [`FleetConfig::default()`] is a clean fleet: every traffic event attributes, unflagged.
//! [`Scenarios`] add the anomalies botmeter must flag or leave unattributed (rotated and revoked
//! credentials, deactivated and deleted bot users — with or without their credentials'
//! deletions —, reused hostnames, ACL violations, principal mismatches, unknown hostnames,
//! sessions, credentials and owners), wildcard sites (device hostnames under wildcard
//! endpoints, some with exact endpoints of their own for a while), credential metadata with
//! device and site keys, and [`FleetConfig::late_control`] chains whose control events arrive
//! after their traffic; the ground truth names every traffic event's owner, flags, endpoint and
//! credential, or its unattributed reason, and groups attributed usage by credential metadata.
//!
//! [`ngrok_api`] is a stand-in for ngrok's REST API, for tests, seeded from a fleet's control
//! events.
//!
//! [`cli`] is the `botmeter simulate` command ([`SimulateArgs`], [`run`]).

pub mod cli;
mod config;
mod control;
mod draw;
mod edits;
mod encode;
mod expected_alerts;
mod fleet_truth;
mod generate;
mod late_control;
pub mod ngrok_api;
mod plan;
mod publish;
mod scenarios;
mod traffic;
mod truth;
mod usage_spikes;
mod wildcard_sites;
mod world;

#[cfg(test)]
mod tests;

pub use cli::{run, SimulateArgs};
pub use config::{ConfigError, FleetConfig, Scenarios, RECORD_EVENTS_UP_TO};
pub use expected_alerts::{ExpectedAlert, ExpectedAlertsError};
pub use fleet_truth::ExpectedFleetCredential;
pub use generate::{generate, Fleet, SimMessage, TOKEN_MARKER};
pub use late_control::{late_control_scenario, LATE_SCENARIO_TRAFFIC_EVENTS};
pub use publish::{publish, PublishReport};
pub use truth::{
    hour_bucket, metadata_values, ExpectedEvent, FleetCredential, FleetSession, GroundTruth,
    Inventory, MetadataUsage, OwnerTruth, Usage, METADATA_KEYS, NO_METADATA_VALUE,
};
pub use usage_spikes::{SPIKE_BYTES_OUT, SPIKE_CONNECTIONS};
