//! The query crate's real-service tests, in one binary (`cargo test -p botmeter-query --test it`;
//! one module per former test file, so `cargo test -p botmeter-query --test it rollup::` runs what
//! `tests/rollup.rs` used to).
//!
//! Every test here needs ClickHouse at `BOTMETER_CLICKHOUSE_URL` (default
//! `http://127.0.0.1:8123`); none needs Kafka. `scripts/services.sh up` starts ClickHouse (and
//! Kafka) on the defaults, `scripts/services.sh up clickhouse` only ClickHouse, and
//! `scripts/test.sh` starts both and then runs everything. Each test works in its own database,
//! dropped at the end, so they run in parallel.
//!
//! The crate's tests that need no service are its unit tests (`cargo test -p botmeter-query --lib`).

mod common;

mod alert_gauges;
mod clickhouse;
mod credentials;
mod fleet;
mod limits;
mod metadata_groups;
mod overage_forecast;
mod reports;
mod rollup;
mod tenancy;
