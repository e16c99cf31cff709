//! Versioned schema migrations, built into the binary from `schemas/clickhouse/NNNN_name.sql`.
//!
//! [`migrate`] creates the database when missing, keeps a `schema_migrations` table of what it has
//! applied (version, name, SHA-256 of the file, time), and applies every newer file in version order,
//! one statement at a time (statements are separated by lines holding only `;`), recording a file once
//! all its statements succeeded. Guarantees:
//! - idempotent: a second run applies nothing;
//! - an applied migration whose file changed since is refused, naming its version, before anything
//!   else is applied;
//! - a file that failed half-way is applied again from its first statement on the next run, so every
//!   statement must be safe to repeat (`CREATE TABLE IF NOT EXISTS`, `ADD COLUMN IF NOT EXISTS`, …).
//!
//! On a cluster ([`crate::ClickHouseConfig::cluster`]) each statement runs as its translation to
//! the cluster schema ([`crate::cluster::ClusterSchema`]), `schema_migrations` is replicated to
//! every server, and a database of the other layout is refused ([`Error::Layout`]).
//!
//! Concurrent runs (instances of one deployment starting together) may both apply a pending file,
//! which the rule above makes harmless but records twice. When one run's statement fails because
//! the other got there first (an `ALTER` of a table the other has already replaced by a view), the
//! run waits, re-reads `schema_migrations` and skips the file once the other has recorded it.

use std::collections::BTreeMap;

use clickhouse::sql::Identifier;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::cluster::ClusterSchema;
use crate::config::ValidClickHouseConfig;
use crate::error::{with_deadline, Error, Result};

/// The migration files, by file name. Adding a file under `schemas/clickhouse/` means adding it here;
/// a unit test fails when the two disagree.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../../../schemas/clickhouse/0001_initial.sql"),
    ),
    (
        "0002_usage_sign.sql",
        include_str!("../../../schemas/clickhouse/0002_usage_sign.sql"),
    ),
    (
        "0003_control_anomalies.sql",
        include_str!("../../../schemas/clickhouse/0003_control_anomalies.sql"),
    ),
    (
        "0004_control_events_log.sql",
        include_str!("../../../schemas/clickhouse/0004_control_events_log.sql"),
    ),
    (
        "0005_control_events_view.sql",
        include_str!("../../../schemas/clickhouse/0005_control_events_view.sql"),
    ),
    (
        "0006_usage_rollup.sql",
        include_str!("../../../schemas/clickhouse/0006_usage_rollup.sql"),
    ),
    (
        "0007_usage_rollup_view.sql",
        include_str!("../../../schemas/clickhouse/0007_usage_rollup_view.sql"),
    ),
    (
        "0008_usage_rollup_daily.sql",
        include_str!("../../../schemas/clickhouse/0008_usage_rollup_daily.sql"),
    ),
    (
        "0009_usage_rollup_daily_view.sql",
        include_str!("../../../schemas/clickhouse/0009_usage_rollup_daily_view.sql"),
    ),
    (
        "0010_usage_rollup_hourly.sql",
        include_str!("../../../schemas/clickhouse/0010_usage_rollup_hourly.sql"),
    ),
    (
        "0011_usage_rollup_hourly_view.sql",
        include_str!("../../../schemas/clickhouse/0011_usage_rollup_hourly_view.sql"),
    ),
    (
        "0012_control_events_source.sql",
        include_str!("../../../schemas/clickhouse/0012_control_events_source.sql"),
    ),
    (
        "0013_fleet_state.sql",
        include_str!("../../../schemas/clickhouse/0013_fleet_state.sql"),
    ),
    (
        "0015_alerts.sql",
        include_str!("../../../schemas/clickhouse/0015_alerts.sql"),
    ),
    (
        "0016_usage_alert_evidence.sql",
        include_str!("../../../schemas/clickhouse/0016_usage_alert_evidence.sql"),
    ),
    (
        "0017_fleet_traffic_seconds.sql",
        include_str!("../../../schemas/clickhouse/0017_fleet_traffic_seconds.sql"),
    ),
];

/// Where applied migrations are recorded, inside the configured database.
const MIGRATIONS_TABLE: &str = "schema_migrations";

const CREATE_MIGRATIONS_TABLE: &str = include_str!("../sql/schema_migrations.sql");

/// One embedded migration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// From the file name's leading number.
    pub version: u32,
    /// From the file name, between the number and `.sql`.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

impl Migration {
    /// Lowercase hex SHA-256 of the file's bytes: what `schema_migrations` records.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The file's statements, in order, without the blank or comment-only pieces.
    pub fn statements(&self) -> Vec<&'static str> {
        split_statements(self.sql)
    }
}

/// What one [`migrate`] run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// The database migrated.
    pub database: String,
    /// `SELECT version()` of the server.
    pub server_version: String,
    /// Migrations this run applied, in order.
    pub applied: Vec<AppliedMigration>,
    /// Versions that were already applied before this run.
    pub already_applied: Vec<u32>,
}

/// A migration applied by this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedMigration {
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// How many statements it ran.
    pub statements: usize,
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct MigrationRecord {
    version: u32,
    name: String,
    checksum: String,
    applied_at: u32,
}

#[derive(Debug, Row, Deserialize)]
struct RecordedMigration {
    version: u32,
    name: String,
    checksum: String,
}

/// Whether a statement (after its comment lines) adds a column.
fn is_add_column(statement: &str) -> bool {
    let code: String = statement
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ");
    let code = code.to_ascii_uppercase();
    code.trim_start().starts_with("ALTER TABLE") && code.contains("ADD COLUMN")
}

/// The embedded migrations, sorted by version.
pub fn migrations() -> Result<Vec<Migration>> {
    let mut out = Vec::with_capacity(EMBEDDED.len());
    for (file, sql) in EMBEDDED {
        let (version, name) = parse_file_name(file)?;
        out.push(Migration { version, name, sql });
    }
    out.sort_by_key(|m| m.version);
    for pair in out.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(Error::MigrationFile {
                file: format!("{:04}_{}.sql", pair[1].version, pair[1].name),
                message: format!(
                    "version {} is also used by {:04}_{}.sql",
                    pair[1].version, pair[0].version, pair[0].name
                ),
            });
        }
    }
    Ok(out)
}

/// Asks the server its version; also the readable connectivity check (works before the database
/// exists).
pub async fn server_version(config: &ValidClickHouseConfig) -> Result<String> {
    with_deadline(
        format!("ask {} for its version", config.url),
        config.query_timeout(),
        config
            .server_client()
            .query("SELECT version()")
            .fetch_one::<String>(),
    )
    .await
}

/// Creates the database if needed and applies every pending migration; see the module docs.
pub async fn migrate(config: &ValidClickHouseConfig) -> Result<MigrationReport> {
    let migrations = migrations()?;
    let server_version = server_version(config).await?;
    let cluster = config
        .cluster()
        .map(|name| ClusterSchema::new(name, &config.database, &migrations));
    let client = create_database_and_table(config, cluster.as_ref()).await?;
    check_layout(&client, config).await?;
    let applied = read_recorded(&client, config).await?;
    check_history(&migrations, &applied)?;

    let mut report = MigrationReport {
        database: config.database.clone(),
        server_version,
        applied: Vec::new(),
        already_applied: Vec::new(),
    };
    for migration in &migrations {
        if applied.contains_key(&migration.version) {
            report.already_applied.push(migration.version);
            continue;
        }
        match run_statements(&client, config, cluster.as_ref(), migration).await? {
            AppliedBy::AnotherRun => report.already_applied.push(migration.version),
            AppliedBy::ThisRun => {
                let statements = migration.statements().len();
                record(&client, config, migration, statements).await?;
                report.applied.push(AppliedMigration {
                    version: migration.version,
                    name: migration.name.to_owned(),
                    statements,
                });
            }
        }
    }
    if cluster.is_none() {
        fill_new_rollups(config, &report).await?;
    }
    Ok(report)
}

/// Refuses a database whose `usage_events` is not what the configuration expects: a
/// `Distributed` table on a cluster, anything else on one server.
async fn check_layout(client: &clickhouse::Client, config: &ValidClickHouseConfig) -> Result<()> {
    let engines = with_deadline(
        "read the engine of usage_events",
        config.query_timeout(),
        client
            .query("SELECT engine FROM system.tables WHERE database = ? AND name = 'usage_events'")
            .bind(config.database.as_str())
            .fetch_all::<String>(),
    )
    .await?;
    let Some(engine) = engines.into_iter().next() else {
        return Ok(());
    };
    let distributed = engine == "Distributed";
    let expected = match (config.cluster().is_some(), distributed) {
        (true, false) => "expected Distributed on a cluster (--cluster)",
        (false, true) => "expected a MergeTree on one server: pass --cluster NAME",
        _ => return Ok(()),
    };
    Err(Error::Layout {
        database: config.database.clone(),
        engine,
        expected,
    })
}

/// Creates the database and [`MIGRATIONS_TABLE`] in it when missing; a client of the database.
/// On a cluster, both on every server, and the client inserts into `Distributed` tables
/// synchronously (a migration's `INSERT ... SELECT` is done when it returns).
async fn create_database_and_table(
    config: &ValidClickHouseConfig,
    cluster: Option<&ClusterSchema>,
) -> Result<clickhouse::Client> {
    let ddl_timeout = config.ddl_timeout();
    let server = config.server_client();
    let create_database = match cluster {
        Some(cluster) => server.query(&cluster.create_database()),
        None => server
            .query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(Identifier(&config.database)),
    };
    with_deadline(
        format!("create database {}", config.database),
        ddl_timeout,
        create_database.execute(),
    )
    .await?;

    let mut client = config.client();
    let create_table = match cluster {
        Some(cluster) => {
            client = client.with_option("insert_distributed_sync", "1");
            cluster.create_migrations_table(CREATE_MIGRATIONS_TABLE)?
        }
        None => CREATE_MIGRATIONS_TABLE.to_owned(),
    };
    with_deadline(
        format!("create table {MIGRATIONS_TABLE}"),
        ddl_timeout,
        client.query(&create_table).execute(),
    )
    .await?;
    Ok(client)
}

/// Checks every applied file before applying anything: an edited history stops the run whole.
/// Versions this binary does not know are only warned about.
fn check_history(
    migrations: &[Migration],
    applied: &BTreeMap<u32, Vec<RecordedMigration>>,
) -> Result<()> {
    for migration in migrations {
        let Some(rows) = applied.get(&migration.version) else {
            continue;
        };
        let embedded = migration.checksum();
        if let Some(row) = rows.iter().find(|row| row.checksum != embedded) {
            return Err(Error::MigrationChanged {
                version: migration.version,
                name: migration.name.to_owned(),
                recorded: row.checksum.clone(),
                embedded,
            });
        }
    }
    for (version, rows) in applied {
        if !migrations.iter().any(|m| m.version == *version) {
            warn!(
                version,
                name = %rows[0].name,
                "database has a migration this binary does not know (is a newer botmeter running?)"
            );
        }
    }
    Ok(())
}

/// Who applied a pending migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppliedBy {
    /// This run, every statement; not yet recorded.
    ThisRun,
    /// A concurrent run, which recorded it.
    AnotherRun,
}

/// Runs a pending migration's statements in order.
/// On a cluster, each statement's translation (see [`crate::cluster`]).
async fn run_statements(
    client: &clickhouse::Client,
    config: &ValidClickHouseConfig,
    cluster: Option<&ClusterSchema>,
    migration: &Migration,
) -> Result<AppliedBy> {
    let statements: Vec<String> = match cluster {
        Some(cluster) => {
            let mut out = Vec::new();
            for statement in migration.statements() {
                out.extend(cluster.translate(migration.version, statement)?);
            }
            out
        }
        None => migration
            .statements()
            .into_iter()
            .map(str::to_owned)
            .collect(),
    };
    for (index, statement) in statements.iter().enumerate() {
        let action = format!(
            "apply migration {:04} ({}), statement {} of {}",
            migration.version,
            migration.name,
            index + 1,
            statements.len()
        );
        if run_statement(client, config, migration, statement, &action).await?
            == AppliedBy::AnotherRun
        {
            return Ok(AppliedBy::AnotherRun);
        }
    }
    Ok(AppliedBy::ThisRun)
}

/// Runs one statement of `migration`, tolerating what a concurrent run may have done first.
async fn run_statement(
    client: &clickhouse::Client,
    config: &ValidClickHouseConfig,
    migration: &Migration,
    statement: &str,
    action: &str,
) -> Result<AppliedBy> {
    // The client treats `?` as a bind placeholder; `??` is a literal `?`.
    let sql = statement.replace('?', "??");
    let mut attempt = 0;
    loop {
        match with_deadline(action, config.ddl_timeout(), client.query(&sql).execute()).await {
            Ok(()) => return Ok(AppliedBy::ThisRun),
            // ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`: a column that exists already
            // means this statement ran before (another instance migrating at the same time,
            // or a crash before the migration was recorded). Treat it as applied.
            Err(e) if is_add_column(statement) && e.to_string().contains("already exists") => {
                info!(
                    version = migration.version,
                    name = migration.name,
                    "column already exists; statement counted as applied"
                );
                return Ok(AppliedBy::ThisRun);
            }
            // Another run migrating the same database (instances starting together) can
            // make a statement fail by getting there first: an `ALTER` of what it has
            // turned into a view, a copy from a table it has dropped. Once that run records
            // the migration, it is applied; until then, wait and try again.
            Err(e) if attempt < CONCURRENT_RETRIES => {
                attempt += 1;
                warn!(version = migration.version, name = migration.name, attempt, error = %e, "migration statement failed; checking whether another run applied it");
                tokio::time::sleep(CONCURRENT_RETRY_WAIT * attempt).await;
                let now = read_recorded(client, config).await?;
                if now.contains_key(&migration.version) {
                    info!(
                        version = migration.version,
                        name = migration.name,
                        "another run applied this migration"
                    );
                    return Ok(AppliedBy::AnotherRun);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Records `migration` in [`MIGRATIONS_TABLE`] as applied now.
async fn record(
    client: &clickhouse::Client,
    config: &ValidClickHouseConfig,
    migration: &Migration,
    statements: usize,
) -> Result<()> {
    let record = MigrationRecord {
        version: migration.version,
        name: migration.name.to_owned(),
        checksum: migration.checksum(),
        applied_at: now_secs(),
    };
    let action = format!(
        "record migration {:04} ({})",
        migration.version, migration.name
    );
    with_deadline(action, config.ddl_timeout(), async {
        let mut insert = client.insert::<MigrationRecord>(MIGRATIONS_TABLE).await?;
        insert.write(&record).await?;
        insert.end().await
    })
    .await?;
    info!(
        database = %config.database,
        version = migration.version,
        name = migration.name,
        statements,
        "migration applied"
    );
    Ok(())
}

/// The rollups' views see only what is inserted after they exist: fills them from the raw rows
/// when this run created one (a database that had usage before the upgrade).
async fn fill_new_rollups(config: &ValidClickHouseConfig, report: &MigrationReport) -> Result<()> {
    if report
        .applied
        .iter()
        .any(|m| ROLLUP_VIEW_VERSIONS.contains(&m.version))
    {
        let months = crate::rollup::rebuild(config, None, |_, _, _| {}).await?;
        if !months.is_empty() {
            info!(
                months = months.len(),
                "usage rollup filled from the rows written before it existed"
            );
        }
    }
    Ok(())
}

/// The migrations that create the rollups' materialized views (0007_usage_rollup_view.sql,
/// 0009_usage_rollup_daily_view.sql, 0011_usage_rollup_hourly_view.sql).
const ROLLUP_VIEW_VERSIONS: [u32; 3] = [7, 9, 11];

/// How often a failed statement is tried again while another run may be migrating, and the
/// first wait (the n-th retry waits n times as long).
const CONCURRENT_RETRIES: u32 = 5;
const CONCURRENT_RETRY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// What `schema_migrations` records, by version. A concurrent run may have recorded a version
/// twice; any of its rows must match.
async fn read_recorded(
    client: &clickhouse::Client,
    config: &ValidClickHouseConfig,
) -> Result<BTreeMap<u32, Vec<RecordedMigration>>> {
    let recorded = with_deadline(
        format!("read {MIGRATIONS_TABLE}"),
        config.query_timeout(),
        client
            .query("SELECT ?fields FROM schema_migrations ORDER BY version")
            .fetch_all::<RecordedMigration>(),
    )
    .await?;
    let mut applied: BTreeMap<u32, Vec<RecordedMigration>> = BTreeMap::new();
    for row in recorded {
        applied.entry(row.version).or_default().push(row);
    }
    Ok(applied)
}

fn now_secs() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX)
}

/// `0001_initial.sql` → `(1, "initial")`.
fn parse_file_name(file: &'static str) -> Result<(u32, &'static str)> {
    let bad = |message: &str| Error::MigrationFile {
        file: file.to_owned(),
        message: message.to_owned(),
    };
    let stem = file
        .strip_suffix(".sql")
        .ok_or_else(|| bad("expected a name ending in .sql"))?;
    let (number, name) = stem
        .split_once('_')
        .ok_or_else(|| bad("expected NNNN_name.sql"))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("expected NNNN_name.sql with NNNN a version number"));
    }
    let version: u32 = number
        .parse()
        .map_err(|_| bad("version number out of range"))?;
    if version == 0 {
        return Err(bad("versions start at 1"));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(bad("expected a name of lowercase letters, digits and _"));
    }
    Ok((version, name))
}

/// Splits on lines holding only `;` and drops pieces that hold nothing but whitespace and `--`
/// comments.
fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        if line.trim() == ";" {
            out.push(&sql[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|piece| {
            piece
                .lines()
                .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_add_column_statements_tolerate_an_existing_column() {
        assert!(is_add_column(
            "-- why\nALTER TABLE usage_events ADD COLUMN sign Int8 DEFAULT 1"
        ));
        assert!(!is_add_column(
            "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory"
        ));
        assert!(!is_add_column(
            "-- ALTER TABLE x ADD COLUMN y\nDROP TABLE z"
        ));
    }

    #[test]
    fn every_schema_file_is_embedded_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/clickhouse");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = migrations()
            .unwrap()
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(
            embedded, on_disk,
            "add new schema files to EMBEDDED in migrate.rs"
        );
        for (file, sql) in EMBEDDED {
            let on_disk = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            assert_eq!(*sql, on_disk, "{file}");
        }
    }

    #[test]
    fn initial_migration_has_three_tables() {
        let initial = migrations().unwrap()[0];
        assert_eq!((initial.version, initial.name), (1, "initial"));
        let statements = initial.statements();
        assert_eq!(statements.len(), 3);
        for (statement, table) in
            statements
                .iter()
                .zip(["usage_events", "control_events", "dead_letters"])
        {
            assert!(
                statement.contains(&format!("CREATE TABLE IF NOT EXISTS {table}")),
                "{statement}"
            );
            assert!(!statement.trim_end().ends_with(';'), "{statement}");
        }
    }

    #[test]
    fn splits_on_lines_holding_only_a_semicolon() {
        let sql = "-- header\n\nCREATE TABLE a (x UInt8) ENGINE = Memory\n;\n  ;  \nSELECT 'a;b'\n;\n-- trailing comment\n";
        assert_eq!(
            split_statements(sql),
            [
                "-- header\n\nCREATE TABLE a (x UInt8) ENGINE = Memory",
                "SELECT 'a;b'"
            ]
        );
        assert_eq!(split_statements("SELECT 1"), ["SELECT 1"]);
        assert!(split_statements("").is_empty());
    }

    #[test]
    fn parses_file_names() {
        assert_eq!(parse_file_name("0001_initial.sql").unwrap(), (1, "initial"));
        assert_eq!(
            parse_file_name("0012_add_rollups.sql").unwrap(),
            (12, "add_rollups")
        );
        for bad in [
            "initial.sql",
            "0001_initial.txt",
            "x001_a.sql",
            "0000_a.sql",
            "0002_.sql",
            "0002_Bad.sql",
        ] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksum_is_sha256_hex() {
        let m = Migration {
            version: 1,
            name: "x",
            sql: "abc",
        };
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn changed_checksum_error_names_the_version() {
        let err = Error::MigrationChanged {
            version: 1,
            name: "initial".to_owned(),
            recorded: "aa".to_owned(),
            embedded: "bb".to_owned(),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("migration 0001 (initial): checksum changed"),
            "{text}"
        );
    }
}
