//! What the benches that fill a database of their own set up alike: a setting read from the
//! environment with a default ([`env_or`]), and the ClickHouse clients ([`bench_database`]) of the
//! bench's database and of the server's `system` database (to drop and create the former).

use query::{ClickHouseConfig, ValidClickHouseConfig};

/// The environment variable `name` parsed, or `default` when it is unset or does not parse.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bench's ClickHouse: `BOTMETER_CLICKHOUSE_URL` (default the loopback server; its URL is
/// `config.url`).
pub(crate) struct BenchDatabase {
    /// The validated config of database `database`.
    pub(crate) config: ValidClickHouseConfig,
    /// A client of the server's `system` database.
    pub(crate) server: clickhouse::Client,
    /// A client of database `database`.
    pub(crate) client: clickhouse::Client,
}

/// The clients of database `database` (which need not exist yet) on the bench's server.
pub(crate) fn bench_database(database: &str) -> BenchDatabase {
    let url =
        std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let config = ClickHouseConfig {
        url,
        database: database.into(),
        ..ClickHouseConfig::default()
    }
    .validate()
    .unwrap();
    let server = ClickHouseConfig {
        database: "system".into(),
        ..ClickHouseConfig::clone(&config)
    }
    .validate()
    .unwrap()
    .client();
    let client = config.client();
    BenchDatabase {
        config,
        server,
        client,
    }
}
