//! The crate's error type. Messages are lowercase, name the thing and the value, and never carry a
//! password (the config's `Debug` redacts it, and no variant holds it).

use std::time::Duration;

/// A result whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong on botmeter's ClickHouse side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is unusable; found before any IO.
    #[error("clickhouse config: field {field}: {message}")]
    Config {
        /// The field, as spelled in the config file.
        field: &'static str,
        /// What is wrong, quoting the value.
        message: String,
    },

    /// ClickHouse refused a statement or could not be reached.
    #[error("clickhouse: failed to {action}: {source}")]
    ClickHouse {
        /// What botmeter was doing (`insert into usage_events`, `apply migration 0002`, …).
        action: String,
        /// The client's error, which includes the server's message.
        #[source]
        source: clickhouse::error::Error,
    },

    /// A ClickHouse call did not answer in time.
    #[error("clickhouse: failed to {action}: no answer within {}ms", .after.as_millis())]
    Timeout {
        /// What botmeter was doing.
        action: String,
        /// How long it waited.
        after: Duration,
    },

    /// A migration that was already applied has been edited since.
    #[error(
        "migration {version:04} ({name}): checksum changed since it was applied \
         (recorded {recorded}, embedded {embedded}); applied migrations must not be edited, \
         add a new migration instead"
    )]
    MigrationChanged {
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: String,
        /// The checksum in `schema_migrations`.
        recorded: String,
        /// The checksum of the file built into this binary.
        embedded: String,
    },

    /// An embedded migration file is malformed (a build-time mistake, caught by the unit tests).
    #[error("migration file {file}: {message}")]
    MigrationFile {
        /// The file name.
        file: String,
        /// What is wrong with it.
        message: String,
    },

    /// The database holds the other layout: a single-node schema migrated with `--cluster`, or a
    /// cluster schema without it.
    #[error(
        "database {database}: usage_events is a {engine} table, {expected}; see README \"Running \
         on a cluster\" to move a single-node database to a cluster"
    )]
    Layout {
        /// The database.
        database: String,
        /// The engine `usage_events` has.
        engine: String,
        /// What the configuration expected.
        expected: &'static str,
    },

    /// The HTTP server could not bind or failed while serving.
    #[error("http server on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps a client error with what botmeter was doing when it happened.
    pub(crate) fn clickhouse(action: impl Into<String>, source: clickhouse::error::Error) -> Self {
        Self::ClickHouse {
            action: action.into(),
            source,
        }
    }

    /// Whether the error comes from ClickHouse being down, slow or refusing (as opposed to
    /// botmeter's own configuration or files).
    pub fn is_clickhouse(&self) -> bool {
        matches!(self, Self::ClickHouse { .. } | Self::Timeout { .. })
    }
}

/// Runs a ClickHouse call with a deadline, naming the action in either error.
pub(crate) async fn with_deadline<T>(
    action: impl Into<String>,
    after: Duration,
    call: impl std::future::Future<Output = clickhouse::error::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(after, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::clickhouse(action, source)),
        Err(_) => Err(Error::Timeout {
            action: action.into(),
            after,
        }),
    }
}
