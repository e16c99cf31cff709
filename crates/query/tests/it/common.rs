//! What the query crate's real-service tests share: the server's address and a database per test
//! that is dropped when the test ends, panics included.

use botmeter_query::api::AppState;
use botmeter_query::{migrate, ClickHouseConfig, Reader, ValidClickHouseConfig, Writer};

/// `BOTMETER_CLICKHOUSE_URL`, defaulting to the local server of `scripts/services.sh`.
pub(crate) fn clickhouse_url() -> String {
    std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".to_owned())
}

/// A client of the server, not bound to a database.
pub(crate) fn server_client() -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
}

/// A database for one test; dropped when this goes out of scope, panics included.
pub(crate) struct TestDb {
    pub(crate) config: ValidClickHouseConfig,
}

impl TestDb {
    /// An empty database named after the test (created by the first migration or query).
    pub(crate) async fn new(name: &str) -> Self {
        let config = ClickHouseConfig {
            url: clickhouse_url(),
            database: format!("botmeter_test_{name}_{}", std::process::id()),
            ..ClickHouseConfig::default()
        }
        .validate()
        .expect("a valid test config");
        drop_database(&config.database).await;
        Self { config }
    }

    /// A database with every migration applied.
    pub(crate) async fn migrated(name: &str) -> Self {
        let db = Self::new(name).await;
        migrate(&db.config).await.expect("migrate");
        db
    }

    pub(crate) fn client(&self) -> clickhouse::Client {
        self.config.client()
    }

    pub(crate) fn writer(&self) -> Writer {
        Writer::new(&self.config).unwrap()
    }

    pub(crate) fn reader(&self) -> Reader {
        Reader::new(&self.config).unwrap()
    }

    pub(crate) fn state(&self) -> AppState {
        AppState::new(&self.config).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // No async drop: run the DROP on a runtime of its own, off the test's runtime thread.
        let database = self.config.database.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(drop_database(&database));
        })
        .join()
        .unwrap();
    }
}

pub(crate) async fn drop_database(database: &str) {
    server_client()
        .query("DROP DATABASE IF EXISTS ?")
        .bind(clickhouse::sql::Identifier(database))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("drop database {database} at {}: {e}", clickhouse_url()));
}
