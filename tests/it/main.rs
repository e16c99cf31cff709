//! botmeter's real-service tests, in one binary (`cargo test --test it`; one module per former
//! test file, so `cargo test --test it delivery::` runs what `tests/delivery.rs` used to).
//!
//! Every test here needs the services:
//! - ClickHouse at `BOTMETER_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`);
//! - a Kafka-compatible broker at `BOTMETER_KAFKA_BROKERS` (default `127.0.0.1:9092`).
//!
//! `scripts/services.sh up` starts both on those defaults (`eval "$(scripts/services.sh env)"`
//! exports the variables), and `scripts/test.sh` starts them and then runs everything. Some tests
//! need more: `delivery` starts private ClickHouse servers with `/usr/sbin/clickhouse-server`, and
//! `report_html` renders in Debian's headless Chromium (`BOTMETER_CHROMIUM`, default
//! `/usr/bin/chromium`). Each test works in its own database and topics, so they run in parallel.
//!
//! The tests that need no service are the unit tests (`cargo test --workspace --lib`) and
//! `crates/model/tests`.

mod browser;
mod firehose_client;
mod support;

mod alerts;
mod api_access;
mod api_docs;
mod attribution;
mod attribution_fleet;
mod bad_feed;
mod cluster;
mod dashboards;
mod dead_letters;
mod delivery;
mod fleet_status;
mod hardening;
mod ngrok_account;
mod pipeline_e2e;
mod receive;
mod reconcile;
mod repeats;
mod report_html;
mod reports_fleet;
mod serve_gauges;
mod sync;
