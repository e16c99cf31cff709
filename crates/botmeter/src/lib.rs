//! The `botmeter` binary's library side: the command-line interface and the pipeline that wires
//! ingest → enrich → query together (the fleet simulator is the `simulate` crate). It holds no
//! domain logic of its own.

pub mod alerts;
pub mod cli;
pub mod ops;
pub mod pipeline;
pub mod reattribute;
pub mod receive;
pub mod reconcile;
pub mod rollups;
pub mod sync;
