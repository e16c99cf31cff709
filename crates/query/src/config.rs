//! How botmeter reaches ClickHouse: what the user sets, checked purely by [`ClickHouseConfig::validate`]
//! before anything touches the network, then turned into a client by [`ValidClickHouseConfig::client`].
//!
//! Every client this crate builds has row validation off (`RowBinary`, not
//! `RowBinaryWithNamesAndTypes`, which ClickHouse 18.16 does not know). Inserts are LZ4-compressed
//! ([`ValidClickHouseConfig::insert_client`]); reads are not ([`ValidClickHouseConfig::client`]): ClickHouse
//! 18.16 answers `compress=1` with an empty body (its compressed response buffer is finalized after
//! the response is sent), and what botmeter reads back is small (report buckets, positions).

use std::fmt;
use std::time::Duration;

use clickhouse::{Client, Compression};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default HTTP interface: a server on this machine.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8123";
/// Default database holding botmeter's tables.
pub const DEFAULT_DATABASE: &str = "botmeter";
/// Default user.
pub const DEFAULT_USER: &str = "default";
/// Default deadline for one insert, in milliseconds.
pub const DEFAULT_INSERT_TIMEOUT_MS: u64 = 30_000;

/// The ClickHouse connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP interface of the server, e.g. `http://127.0.0.1:8123`. Plain `http` only: this build's
    /// client has no TLS, so put a TLS-terminating proxy in front for `https`.
    pub url: String,
    /// Database holding botmeter's tables; `botmeter migrate` creates it when missing. Letters,
    /// digits and `_`, not starting with a digit.
    pub database: String,
    /// User to authenticate as.
    pub user: String,
    /// That user's password; empty for none. Never logged.
    pub password: String,
    /// Deadline for one read (a report query, the readiness check), in milliseconds.
    pub query_timeout_ms: u64,
    /// Deadline for ClickHouse to acknowledge one insert once its rows are sent, in milliseconds.
    pub insert_timeout_ms: u64,
    /// Deadline for one schema statement (a migration step), in milliseconds.
    pub ddl_timeout_ms: u64,
    /// LZ4-compress insert bodies. Saves bandwidth across a network; on one host it costs CPU on
    /// both ends for nothing (BENCHMARKS.md measures both).
    pub compress_inserts: bool,
    /// The ClickHouse cluster (a `remote_servers` name) holding the database, or empty for one
    /// server. Set, `migrate` creates the cluster schema (replicated local tables behind
    /// `Distributed` ones, see [`crate::cluster`]), inserts go per shard
    /// ([`Self::shard_urls`]) or through the `Distributed` tables synchronously, and positions
    /// are read once every live replica has caught up.
    pub cluster: String,
    /// On a cluster, the HTTP URLs of each shard's replicas, in the cluster's shard order
    /// (`system.clusters.shard_num`): traffic is then inserted per shard, straight into the
    /// shard's `_local` tables through one of its replicas (see [`crate::write`]), so a shard that
    /// is down holds only its own Kafka partitions. Empty: inserts go through the `Distributed`
    /// tables. Parse the command-line form with [`parse_shard_urls`].
    pub shard_urls: Vec<Vec<String>>,
}

/// One replica of a shard, as [`ValidClickHouseConfig::shard_replicas`] builds it.
#[derive(Clone)]
pub struct ReplicaClients {
    /// Its HTTP URL (for messages).
    pub url: String,
    /// For inserts (bodies compressed like [`ValidClickHouseConfig::insert_client`]'s).
    pub insert: Client,
    /// For queries (`KILL QUERY`, `system.processes`).
    pub plain: Client,
}

impl fmt::Debug for ReplicaClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaClients")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The shards' replica URLs from their command-line form: shards separated by `;`, each shard's
/// replicas by `,`, shards in the cluster's order: `http://a:8123,http://b:8123;http://c:8123`.
/// Empty text is no shards. The URLs themselves are checked by [`ClickHouseConfig::validate`].
pub fn parse_shard_urls(text: &str) -> Vec<Vec<String>> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    text.split(';')
        .map(|shard| {
            shard
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Whether `url` names this machine (`localhost`, 127.0.0.0/8, `::1`): an insert body then never
/// crosses a network, and compressing it only costs CPU on both ends.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.to_owned(),
            database: DEFAULT_DATABASE.to_owned(),
            user: DEFAULT_USER.to_owned(),
            password: String::new(),
            query_timeout_ms: 10_000,
            insert_timeout_ms: DEFAULT_INSERT_TIMEOUT_MS,
            ddl_timeout_ms: 60_000,
            compress_inserts: true,
            cluster: String::new(),
            shard_urls: Vec::new(),
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("query_timeout_ms", &self.query_timeout_ms)
            .field("insert_timeout_ms", &self.insert_timeout_ms)
            .field("ddl_timeout_ms", &self.ddl_timeout_ms)
            .field("compress_inserts", &self.compress_inserts)
            .field("cluster", &self.cluster)
            .field("shard_urls", &self.shard_urls)
            .finish()
    }
}

/// A [`ClickHouseConfig`] that passed [`ClickHouseConfig::validate`]: what every client builder
/// of this crate takes ([`crate::Writer`], [`crate::Reader`], [`crate::AppState`], the
/// migrations, the rollup tools), so that settings are checked once, before any IO.
#[derive(Clone, PartialEq, Eq)]
pub struct ValidClickHouseConfig(ClickHouseConfig);

impl std::ops::Deref for ValidClickHouseConfig {
    type Target = ClickHouseConfig;

    fn deref(&self) -> &ClickHouseConfig {
        &self.0
    }
}

impl fmt::Debug for ValidClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ClickHouseConfig {
    /// Checks every field without any IO; the checked config is what the builders take.
    pub fn validate(self) -> Result<ValidClickHouseConfig> {
        self.check()?;
        Ok(ValidClickHouseConfig(self))
    }

    fn check(&self) -> Result<()> {
        validate_url(&self.url)?;
        validate_identifier(&self.database).map_err(|message| Error::Config {
            field: "database",
            message,
        })?;
        if !self.cluster.is_empty() {
            validate_identifier(&self.cluster).map_err(|message| Error::Config {
                field: "cluster",
                message,
            })?;
        }
        self.check_shard_urls()?;
        if self.user.is_empty() {
            return Err(Error::Config {
                field: "user",
                message: "must not be empty (ClickHouse's default user is \"default\")".to_owned(),
            });
        }
        for (field, value) in [
            ("query_timeout_ms", self.query_timeout_ms),
            ("insert_timeout_ms", self.insert_timeout_ms),
            ("ddl_timeout_ms", self.ddl_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::Config {
                    field,
                    message: "must be greater than 0, found 0".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// [`Self::shard_urls`]: only with a cluster, every shard with a replica, every URL valid.
    fn check_shard_urls(&self) -> Result<()> {
        let invalid = |message: String| Error::Config {
            field: "shard_urls",
            message,
        };
        if self.shard_urls.is_empty() {
            return Ok(());
        }
        if self.cluster.is_empty() {
            return Err(invalid(
                "shard URLs are for a cluster; set cluster too (or no shard URLs)".to_owned(),
            ));
        }
        for (index, shard) in self.shard_urls.iter().enumerate() {
            if shard.is_empty() {
                return Err(invalid(format!(
                    "shard {} has no replica URL (shards are separated by ';', replicas by ',')",
                    index + 1
                )));
            }
            for url in shard {
                validate_url(url).map_err(|e| match e {
                    Error::Config { message, .. } => {
                        invalid(format!("shard {}: {message}", index + 1))
                    }
                    other => other,
                })?;
            }
        }
        Ok(())
    }

    /// [`Self::query_timeout_ms`] as a duration.
    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    /// [`Self::insert_timeout_ms`] as a duration.
    pub fn insert_timeout(&self) -> Duration {
        Duration::from_millis(self.insert_timeout_ms)
    }

    /// [`Self::ddl_timeout_ms`] as a duration.
    pub fn ddl_timeout(&self) -> Duration {
        Duration::from_millis(self.ddl_timeout_ms)
    }
}

impl ValidClickHouseConfig {
    /// The cluster's name, when the database lives on a cluster.
    pub fn cluster(&self) -> Option<&str> {
        Some(self.cluster.as_str()).filter(|name| !name.is_empty())
    }

    /// The client for queries and schema statements on the database: responses uncompressed
    /// (see the module docs). Builds only: no request is sent.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }

    /// The client for inserts into the database: request bodies LZ4-compressed when
    /// [`ClickHouseConfig::compress_inserts`]. Use it for inserts only; its queries would ask for
    /// compressed responses.
    pub fn insert_client(&self) -> Client {
        let client = self.compressed_inserts(self.client());
        if self.cluster().is_some() {
            // A Distributed table's insert returns once every shard has stored its rows (the
            // default queues them on this server and returns at once), so that a successful
            // insert means durable, as on one server, and a failed one can be sent again.
            client.with_option("insert_distributed_sync", "1")
        } else {
            client
        }
    }

    /// Clients of each shard's replicas ([`ClickHouseConfig::shard_urls`]), in the configured
    /// order, for per-shard inserts into the shard's own tables. Builds only: no request is sent.
    pub fn shard_replicas(&self) -> Vec<Vec<ReplicaClients>> {
        self.shard_urls
            .iter()
            .map(|shard| {
                shard
                    .iter()
                    .map(|url| {
                        let plain = self.client_at(url).with_database(&self.database);
                        ReplicaClients {
                            url: url.clone(),
                            insert: self.compressed_inserts(plain.clone()),
                            plain,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    fn compressed_inserts(&self, client: Client) -> Client {
        client.with_compression(if self.compress_inserts {
            Compression::Lz4
        } else {
            Compression::None
        })
    }

    /// A client with no database selected, for statements that must run before the database
    /// exists (`CREATE DATABASE`, `SELECT version()`).
    pub(crate) fn server_client(&self) -> Client {
        self.client_at(&self.url)
    }

    /// A client of the server at `url`, no database selected.
    fn client_at(&self, url: &str) -> Client {
        Client::default()
            .with_url(url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_compression(Compression::None)
            // `RowBinaryWithNamesAndTypes` does not exist on ClickHouse 18.16.
            .with_validation(false)
    }
}

fn validate_url(raw: &str) -> Result<()> {
    let invalid = |message: String| Error::Config {
        field: "url",
        message,
    };
    let url = url::Url::parse(raw)
        .map_err(|e| invalid(format!("expected an http URL, found {raw:?} ({e})")))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(invalid(format!(
                "https is not supported by this build (its ClickHouse client has no TLS); \
                 use http, through a TLS-terminating proxy if needed, found {raw:?}"
            )))
        }
        other => {
            return Err(invalid(format!(
                "expected an http URL, found scheme {other:?} in {raw:?}"
            )))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("expected a host, found {raw:?}")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        // The client replaces the query string with its own settings: refuse rather than drop it.
        return Err(invalid(format!(
            "expected no query string or fragment, found {raw:?}"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials in the URL are not used; set user and password instead".to_owned(),
        ));
    }
    Ok(())
}

/// ClickHouse identifiers that need no quoting: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 bytes.
pub(crate) fn validate_identifier(name: &str) -> std::result::Result<(), String> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || first == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.len() <= 64
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "expected an identifier (letters, digits and _, not starting with a digit, \
             at most 64 characters), found {name:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for url in [
            "http://127.0.0.1:8123",
            "http://localhost:8123/",
            "https://user:pw@127.0.0.2:8443/?database=x",
            "http://[::1]:8123",
            "LOCALHOST",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8123",
            "https://clickhouse.example.com",
            "http://[2001:db8::1]:8123",
            "http://localhost.example.com:8123",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    fn with(edit: impl FnOnce(&mut ClickHouseConfig)) -> ClickHouseConfig {
        let mut config = ClickHouseConfig::default();
        edit(&mut config);
        config
    }

    fn field_of<T: std::fmt::Debug>(result: Result<T>) -> &'static str {
        match result {
            Err(Error::Config { field, .. }) => field,
            other => panic!("expected a config error, found {other:?}"),
        }
    }

    #[test]
    fn default_is_valid() {
        let config = ClickHouseConfig::default().validate().unwrap();
        let _ = (config.client(), config.insert_client());
    }

    #[test]
    fn shard_urls_parse_by_shard_and_are_checked() {
        assert_eq!(
            parse_shard_urls(" http://a:1 , http://b:1;http://c:1 "),
            [vec!["http://a:1", "http://b:1"], vec!["http://c:1"]]
        );
        assert!(parse_shard_urls("  ").is_empty());
        let on_cluster = |urls: &str| {
            with(|c| {
                c.cluster = "c".to_owned();
                c.shard_urls = parse_shard_urls(urls);
            })
            .validate()
        };
        on_cluster("http://a:1,http://b:1;http://c:1").unwrap();
        for bad in [
            "http://a:1;;http://c:1",
            "http://a:1;ftp://c",
            "http://a:1;",
        ] {
            let error = on_cluster(bad).unwrap_err().to_string();
            assert!(
                error.contains("shard_urls") && error.contains("shard 2"),
                "{bad}: {error}"
            );
        }
        let without_cluster = with(|c| c.shard_urls = parse_shard_urls("http://a:1")).validate();
        assert_eq!(field_of(without_cluster), "shard_urls");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "",
            "127.0.0.1:8123",
            "ftp://host",
            "https://host:8443",
            "http://host?x=1",
            "http://u:p@host",
        ] {
            let result = with(|c| c.url = url.to_owned()).validate();
            assert_eq!(field_of(result), "url", "url {url:?}");
        }
        with(|c| c.url = "http://clickhouse.internal:8123/".to_owned())
            .validate()
            .unwrap();
    }

    #[test]
    fn rejects_bad_database_names() {
        for db in ["", "1abc", "a-b", "a b", "db;drop", "`x`", &"x".repeat(65)] {
            let result = with(|c| c.database = db.to_owned()).validate();
            assert_eq!(field_of(result), "database", "database {db:?}");
        }
        for db in ["botmeter", "_x", "botmeter_test_1"] {
            with(|c| c.database = db.to_owned()).validate().unwrap();
        }
    }

    #[test]
    fn rejects_zero_timeouts_and_empty_user() {
        assert_eq!(
            field_of(with(|c| c.query_timeout_ms = 0).validate()),
            "query_timeout_ms"
        );
        assert_eq!(field_of(with(|c| c.user.clear()).validate()), "user");
    }

    #[test]
    fn message_names_field_and_value() {
        let err = with(|c| c.database = "a-b".to_owned())
            .validate()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("field database") && text.contains("\"a-b\""),
            "{text}"
        );
    }

    #[test]
    fn denies_unknown_fields_and_defaults_the_rest() {
        let config: ClickHouseConfig =
            serde_json::from_str(r#"{"url": "http://ch:8123", "database": "bm"}"#).unwrap();
        assert_eq!(config.user, "default");
        assert_eq!(config.database, "bm");
        let err = serde_json::from_str::<ClickHouseConfig>(r#"{"databse": "bm"}"#).unwrap_err();
        assert!(err.to_string().contains("databse"), "{err}");
    }

    #[test]
    fn debug_redacts_the_password() {
        let config = with(|c| c.password = "hunter2".to_owned());
        let text = format!("{config:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
