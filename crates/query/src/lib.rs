//! botmeter's ClickHouse side: the schema migrations, the write side (rows, the writer, the insert
//! retry policy, the lost-response filter, the rollup check), the read side of its bookkeeping
//! (positions, the control-event history), and the HTTP API that answers reports from the tables.
//!
//! Every client is built by [`ValidClickHouseConfig::client`], with row validation off: ClickHouse 18.16
//! has no `RowBinaryWithNamesAndTypes`, so rows travel as plain `RowBinary`, positional, and the
//! struct field order in [`rows`] must equal the table's column order (a real-service test guards it).

pub mod alerts;
pub mod api;
pub mod cluster;
pub mod config;
pub mod error;
pub mod migrate;
pub mod query_id;
pub mod read;
pub mod rollup;
pub mod rows;
pub mod write;

pub use api::{router, serve, AppState};
pub use config::{is_loopback_url, parse_shard_urls, ClickHouseConfig, ValidClickHouseConfig};
pub use error::{Error, Result};
pub use migrate::{migrate, server_version, MigrationReport};
pub use read::Reader;
pub use write::Writer;
