//! The `botmeter` binary's library side: the command-line interface, the pipeline that wires
//! ingest → enrich → query together, and the fleet simulator. It holds no domain logic of its own.

pub mod cli;
pub mod ops;
pub mod pipeline;
pub mod reattribute;
pub mod reconcile;
pub mod rollups;
pub mod simulate;
