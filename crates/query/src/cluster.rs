//! botmeter on a ClickHouse cluster (shards × replicas, coordinated by ZooKeeper): how the
//! single-node migrations become the cluster schema ([`ClusterSchema::translate`]), and the
//! positions a consumer resumes from, each partition's read from every replica of the shard that
//! owns it ([`replica_positions`]).
//!
//! The cluster schema keeps every name readers use. Each table `T` of the migrations becomes
//!
//! - `T_local` on every server (`ON CLUSTER`), its engine's `Replicated` variant (a
//!   `ReplacingMergeTree` becomes a `ReplicatedReplacingMergeTree`, and so on), replicated within
//!   its shard through ZooKeeper path `/clickhouse/tables/{shard}/<database>/T_local`;
//! - `T`, a `Distributed` table over the `T_local` of every shard, sharded by `kafka_partition`
//!   when `T` has that column (so all of a Kafka partition's rows live on one shard, shard
//!   `kafka_partition % shards`), else by `rand()` (tables only views write).
//!
//! Views read the local tables of their own shard: a view `V` becomes `V_local` over the `_local`
//! tables and a `Distributed` `V` over them, and a materialized view writes its shard's local
//! target. So every report, dashboard and check reads the same names as on one node and gets the
//! whole cluster. `ALTER`s apply to both `T_local` and `T`, `DROP`s drop both. Any other statement
//! is refused with its version, so a migration no rule covers is noticed, not half-applied.
//!
//! `schema_migrations` is one `ReplicatedMergeTree` replicated to every server (one ZooKeeper path
//! for all shards): the applied versions are recorded once, cluster-wide.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;

use clickhouse::Row;
use regex::Regex;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::migrate::Migration;
use crate::read::{PositionRow, POSITIONS_SQL};

/// What a table's shard-local counterpart is called: `usage_events` → `usage_events_local`.
pub const LOCAL_SUFFIX: &str = "_local";

/// The statements of one migration file on a cluster.
#[derive(Debug, Clone)]
pub struct ClusterSchema {
    cluster: String,
    database: String,
    /// Names created by `CREATE TABLE` or `CREATE VIEW` in any migration: each has a `_local`.
    storage: BTreeSet<String>,
    /// Each name's `Distributed` engine, by the version that created it: an `ALTER` recreates the
    /// `Distributed` table in front of the altered local one.
    distributed: BTreeMap<(String, u32), String>,
}

/// Where a replicated table's copies live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// One copy per shard (its replicas), a `Distributed` table in front.
    Sharded,
    /// The same rows on every server: `schema_migrations`.
    Everywhere,
}

static CREATE_TABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?is)^CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)\s*\((.*)\)\s*ENGINE\s*=\s*(\w*MergeTree)\s*(?:\(([^)]*)\))?(.*)$",
    )
    .expect("valid regex")
});
static CREATE_VIEW: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)^CREATE\s+VIEW\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+AS\s+(.*)$")
        .expect("valid regex")
});
static CREATE_MATERIALIZED_VIEW: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?is)^CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+(\w+)\s+TO\s+(\w+)\s+AS\s+(.*)$",
    )
    .expect("valid regex")
});
static ALTER_TABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)^ALTER\s+TABLE\s+(\w+)\s+(.*)$").expect("valid regex"));
static DROP_TABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)^DROP\s+TABLE\s+IF\s+EXISTS\s+(\w+)\s*$").expect("valid regex")
});
static INSERT_SELECT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)^INSERT\s+INTO\s+\w+").expect("valid regex"));
static FROM_OR_JOIN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(FROM|JOIN)(\s+)(\w+)\b").expect("valid regex"));
static KAFKA_PARTITION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^\s*kafka_partition\s").expect("valid regex"));

/// A statement without its whole-line `--` comments, trimmed.
fn code_of(statement: &str) -> String {
    statement
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

impl ClusterSchema {
    /// The translation for `cluster` and `database`, knowing every statement of the migrations
    /// (to tell which names have a local table).
    pub fn new(cluster: &str, database: &str, migrations: &[Migration]) -> Self {
        let mut schema = Self {
            cluster: cluster.to_owned(),
            database: database.to_owned(),
            storage: BTreeSet::new(),
            distributed: BTreeMap::new(),
        };
        for migration in migrations {
            for statement in migration.statements() {
                let code = code_of(statement);
                let (name, key) = if let Some(c) = CREATE_TABLE.captures(&code) {
                    let key = if KAFKA_PARTITION.is_match(&c[2]) {
                        ", kafka_partition"
                    } else {
                        ", rand()"
                    };
                    (c[1].to_owned(), key)
                } else if let Some(c) = CREATE_VIEW.captures(&code) {
                    (c[1].to_owned(), "")
                } else {
                    continue;
                };
                let engine =
                    format!("Distributed({cluster}, {database}, {name}{LOCAL_SUFFIX}{key})");
                schema.storage.insert(name.clone());
                schema.distributed.insert((name, migration.version), engine);
            }
        }
        schema
    }

    /// `CREATE TABLE` of the `Distributed` table `name` as of migration `version`.
    fn create_distributed(&self, name: &str, version: u32) -> Option<String> {
        let engine = self
            .distributed
            .range((name.to_owned(), 0)..=(name.to_owned(), version))
            .next_back()?
            .1;
        let (db, cluster) = (&self.database, &self.cluster);
        Some(format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{name}{LOCAL_SUFFIX} \
             ENGINE = {engine}"
        ))
    }

    /// `CREATE DATABASE` on every server.
    pub fn create_database(&self) -> String {
        format!(
            "CREATE DATABASE IF NOT EXISTS {} ON CLUSTER {}",
            self.database, self.cluster
        )
    }

    /// The migrations table, replicated to every server (see the module docs).
    pub fn create_migrations_table(&self, single_node: &str) -> Result<String> {
        let code = code_of(single_node);
        let c = CREATE_TABLE
            .captures(&code)
            .ok_or_else(|| Error::MigrationFile {
                file: "schema_migrations.sql".to_owned(),
                message: "expected CREATE TABLE IF NOT EXISTS ... ENGINE = MergeTree".to_owned(),
            })?;
        Ok(self.replicated_table(&c, &c[1], Placement::Everywhere))
    }

    /// The cluster statements for one single-node statement of migration `version`, in order.
    pub fn translate(&self, version: u32, statement: &str) -> Result<Vec<String>> {
        let code = code_of(statement);
        let (db, cluster) = (&self.database, &self.cluster);
        if let Some(c) = CREATE_TABLE.captures(&code) {
            let table = &c[1];
            let local = format!("{table}{LOCAL_SUFFIX}");
            return Ok(vec![
                self.replicated_table(&c, &local, Placement::Sharded),
                self.distributed_of(table, version)?,
            ]);
        }
        if let Some(c) = CREATE_VIEW.captures(&code) {
            let view = &c[1];
            return Ok(vec![
                format!(
                    "CREATE VIEW IF NOT EXISTS {db}.{view}{LOCAL_SUFFIX} ON CLUSTER {cluster} AS {}",
                    self.local_reads(&c[2])
                ),
                self.distributed_of(view, version)?,
            ]);
        }
        if let Some(c) = CREATE_MATERIALIZED_VIEW.captures(&code) {
            let (view, target) = (&c[1], &c[2]);
            return Ok(vec![format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{view} ON CLUSTER {cluster} \
                 TO {db}.{} AS {}",
                self.local_name(target),
                self.local_reads(&c[3])
            )]);
        }
        if let Some(c) = ALTER_TABLE.captures(&code) {
            // ClickHouse 18.16 refuses `ALTER ... ON CLUSTER` of a Distributed table when the
            // shards replicate internally; the Distributed table is recreated over the altered
            // local table instead (a moment in which reads of it fail).
            let (table, rest) = (&c[1], &c[2]);
            return Ok(vec![
                format!("ALTER TABLE {db}.{table}{LOCAL_SUFFIX} ON CLUSTER {cluster} {rest}"),
                format!("DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"),
                self.distributed_of(table, version)?,
            ]);
        }
        if let Some(c) = DROP_TABLE.captures(&code) {
            let table = &c[1];
            let mut out = vec![format!(
                "DROP TABLE IF EXISTS {db}.{table} ON CLUSTER {cluster}"
            )];
            if self.storage.contains(table) {
                out.push(format!(
                    "DROP TABLE IF EXISTS {db}.{table}{LOCAL_SUFFIX} ON CLUSTER {cluster}"
                ));
            }
            return Ok(out);
        }
        if INSERT_SELECT.is_match(&code) {
            // Runs on the server migrate talks to, through the Distributed tables (inserted
            // synchronously, see `migrate`): rows land on the shard of their Kafka partition.
            return Ok(vec![code]);
        }
        Err(Error::MigrationFile {
            file: format!("{version:04}"),
            message: format!(
                "no cluster translation for the statement starting {:?}; supported: CREATE TABLE \
                 IF NOT EXISTS ... ENGINE = *MergeTree, CREATE [MATERIALIZED] VIEW IF NOT EXISTS, \
                 ALTER TABLE, DROP TABLE IF EXISTS, INSERT INTO ... SELECT",
                code.lines().next().unwrap_or_default()
            ),
        })
    }

    /// [`Self::create_distributed`], or the error of a name no migration up to `version` creates.
    fn distributed_of(&self, name: &str, version: u32) -> Result<String> {
        self.create_distributed(name, version)
            .ok_or_else(|| Error::MigrationFile {
                file: format!("{version:04}"),
                message: format!("no migration up to this one creates table {name}"),
            })
    }

    /// `name_local` for names with a local table, else `name`.
    fn local_name(&self, name: &str) -> String {
        if self.storage.contains(name) {
            format!("{name}{LOCAL_SUFFIX}")
        } else {
            name.to_owned()
        }
    }

    /// A view's query reading its shard's local tables, qualified with the database (a view runs
    /// wherever it is read, whatever that session's database).
    fn local_reads(&self, select: &str) -> String {
        FROM_OR_JOIN
            .replace_all(select, |c: &regex::Captures<'_>| {
                let name = &c[3];
                if self.storage.contains(name) {
                    format!(
                        "{}{}{}.{}",
                        &c[1],
                        &c[2],
                        self.database,
                        self.local_name(name)
                    )
                } else {
                    c[0].to_owned()
                }
            })
            .into_owned()
    }

    /// `CREATE TABLE` of `name` from a single-node `CREATE TABLE` match, with the `Replicated`
    /// variant of its engine.
    fn replicated_table(
        &self,
        c: &regex::Captures<'_>,
        name: &str,
        placement: Placement,
    ) -> String {
        let (db, cluster) = (&self.database, &self.cluster);
        let (columns, engine, rest) = (&c[2], &c[3], c[5].trim());
        let shard = match placement {
            Placement::Sharded => "{shard}",
            Placement::Everywhere => "all",
        };
        let mut arguments = format!("'/clickhouse/tables/{shard}/{db}/{name}', '{{replica}}'");
        if let Some(extra) = c
            .get(4)
            .map(|m| m.as_str().trim())
            .filter(|a| !a.is_empty())
        {
            arguments.push_str(", ");
            arguments.push_str(extra);
        }
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster}\n({columns})\n\
             ENGINE = Replicated{engine}({arguments})\n{rest}"
        )
    }
}

/// A replica's replication state (`system.replicas`).
#[derive(Debug, Row, Deserialize)]
struct ReplicaState {
    log_pointer: u64,
    log_max_index: u64,
    inserts_in_queue: u32,
    zookeeper_path: String,
}

/// A server of a cluster (`system.clusters`).
#[derive(Debug, Row, Deserialize)]
pub(crate) struct ReplicaAddress {
    pub(crate) shard_num: u32,
    pub(crate) host_address: String,
    pub(crate) port: u16,
}

/// The highest Kafka offset stored per partition of `topic` (as [`crate::Reader::positions`]),
/// each partition's from the replicas of the shard that owns it (`partition % shards`, where
/// its rows are written), each replica read directly (`remote()` of its local tables): a replica
/// that has not fetched the latest insert yet cannot hide it, and no ZooKeeper is needed.
///
/// A replica that does not answer may hold parts no other replica has fetched yet; they are then
/// in the others' replication queues, so the positions are given only once every answering
/// replica has fetched every part ZooKeeper knows of (`lagging`), and never while a shard has
/// no replica answering (its partitions' positions are unknown): an error the callers retry.
pub async fn replica_positions(
    client: &clickhouse::Client,
    cluster: &str,
    database: &str,
    topic: &str,
) -> std::result::Result<HashMap<i32, i64>, clickhouse::error::Error> {
    let replicas = client
        .query("SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = ?")
        .bind(cluster)
        .fetch_all::<ReplicaAddress>()
        .await?;
    if replicas.is_empty() {
        return Err(custom(format!("no cluster {cluster} in system.clusters")));
    }
    // Shard i (0-based, in shard_num order) owns the partitions p with p % shards == i: the
    // Distributed tables' sharding key and the per-shard inserts place them there, so a
    // partition's position is read from its shard only.
    let shard_index: BTreeMap<u32, i32> = replicas
        .iter()
        .map(|replica| replica.shard_num)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .zip(0..)
        .collect();
    let shards = shard_index.len() as i32;
    let mut positions: HashMap<i32, i64> = HashMap::new();
    let mut answering: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut silent = Vec::new();
    for replica in &replicas {
        let address = format!("{}:{}", replica.host_address, replica.port);
        answering.entry(replica.shard_num).or_default();
        let sql = POSITIONS_SQL
            .replace(
                "FROM usage_events WHERE",
                &format!("FROM remote('{address}', {database}, usage_events{LOCAL_SUFFIX}) WHERE"),
            )
            .replace(
                "FROM control_events_log WHERE",
                &format!(
                    "FROM remote('{address}', {database}, control_events_log{LOCAL_SUFFIX}) WHERE"
                ),
            );
        match client
            .query(&sql)
            .bind(topic)
            .bind(topic)
            .fetch_all::<PositionRow>()
            .await
        {
            Ok(rows) => {
                let owned = shard_index[&replica.shard_num];
                for row in rows
                    .into_iter()
                    .filter(|row| row.kafka_partition.rem_euclid(shards) == owned)
                {
                    let max = positions
                        .entry(row.kafka_partition)
                        .or_insert(row.max_offset);
                    *max = (*max).max(row.max_offset);
                }
                answering
                    .entry(replica.shard_num)
                    .or_default()
                    .push(address);
            }
            Err(e) if is_unreachable(&e) => silent.push(address),
            Err(e) => return Err(e),
        }
    }
    if let Some((shard, _)) = answering.iter().find(|(_, live)| live.is_empty()) {
        return Err(custom(format!(
            "no replica of shard {shard} of cluster {cluster} answers ({}): its partitions' positions are unknown",
            silent.join(", ")
        )));
    }
    if !silent.is_empty() {
        for address in answering.values().flatten() {
            for table in ["usage_events", "control_events_log"] {
                let local = format!("{table}{LOCAL_SUFFIX}");
                if lagging(client, address, database, &local).await? {
                    return Err(custom(format!(
                        "replica {address} has not fetched every part of {local} yet while {} do not answer",
                        silent.join(", ")
                    )));
                }
            }
        }
    }
    Ok(positions)
}

/// A client error carrying botmeter's own message.
fn custom(message: String) -> clickhouse::error::Error {
    clickhouse::error::Error::Custom(message)
}

/// Whether `error` says the replica could not be reached: codes 210 NETWORK_ERROR, 209
/// SOCKET_TIMEOUT, 279 ALL_CONNECTION_TRIES_FAILED.
fn is_unreachable(error: &clickhouse::error::Error) -> bool {
    matches!(error, clickhouse::error::Error::BadResponse(text)
        if ["Code: 210", "Code: 209", "Code: 279"].iter().any(|code| text.contains(code)))
}

/// Whether the replica at `address` has not fetched every part of `local_table` committed to
/// ZooKeeper yet: its replication log not read to the end, or an insert waiting in its queue.
async fn lagging(
    client: &clickhouse::Client,
    address: &str,
    database: &str,
    local_table: &str,
) -> std::result::Result<bool, clickhouse::error::Error> {
    let states = client
        .query(
            "SELECT log_pointer, log_max_index, inserts_in_queue, zookeeper_path \
             FROM remote(?, system.replicas) WHERE database = ? AND table = ?",
        )
        .bind(address)
        .bind(database)
        .bind(local_table)
        .fetch_all::<ReplicaState>()
        .await?;
    for state in states {
        if state.inserts_in_queue > 0 {
            return Ok(true);
        }
        // The pointer is the next log entry to read: past the last one when caught up. Both are
        // 0 with an empty log and with one entry not read yet: ZooKeeper tells which.
        if state.log_pointer > state.log_max_index {
            continue;
        }
        if state.log_pointer == 0 && state.log_max_index == 0 {
            let entries = client
                .query("SELECT count() FROM system.zookeeper WHERE path = ?")
                .bind(format!("{}/log", state.zookeeper_path))
                .fetch_one::<u64>()
                .await?;
            if entries == 0 {
                continue;
            }
        }
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::migrations;

    fn schema() -> ClusterSchema {
        ClusterSchema::new("c", "db", &migrations().unwrap())
    }

    #[test]
    fn every_migration_statement_translates() {
        let schema = schema();
        for m in migrations().unwrap() {
            for statement in m.statements() {
                let out = schema.translate(m.version, statement).unwrap();
                assert!(!out.is_empty());
                for sql in out {
                    assert!(
                        sql.contains("ON CLUSTER c") || sql.starts_with("INSERT"),
                        "{sql}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_alert_evidence_follows_its_usage_rows_shard() {
        let s = schema();
        let migration = migrations()
            .unwrap()
            .into_iter()
            .find(|m| m.version == 16)
            .unwrap();
        let out: Vec<String> = migration
            .statements()
            .iter()
            .flat_map(|statement| s.translate(16, statement).unwrap())
            .collect();
        assert_eq!(out.len(), 4, "{out:#?}");
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS db.usage_alert_evidence_local ON CLUSTER c")
                && out[0].contains("ReplicatedMergeTree('/clickhouse/tables/{shard}/db/usage_alert_evidence_local', '{replica}')"),
            "{}",
            out[0]
        );
        // Sharded like `usage_events`, so the backfill puts rows where the view puts them.
        assert!(
            out[1].ends_with("Distributed(c, db, usage_alert_evidence_local, kafka_partition)"),
            "{}",
            out[1]
        );
        assert!(
            out[2].starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS db.usage_alert_evidence_mv ON CLUSTER c TO db.usage_alert_evidence_local AS")
                && out[2].contains("FROM db.usage_events_local"),
            "{}",
            out[2]
        );
        assert!(
            out[3].starts_with("INSERT INTO usage_alert_evidence")
                && out[3].contains("FROM usage_events"),
            "{}",
            out[3]
        );
    }

    #[test]
    fn tables_become_replicated_local_tables_behind_distributed_ones() {
        let out = schema()
            .translate(
                1,
                "-- x\nCREATE TABLE IF NOT EXISTS dead_letters\n(\n    kafka_partition Int32,\n    t DateTime('UTC')\n)\nENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(t)\nORDER BY (kafka_partition)",
            )
            .unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS db.dead_letters_local ON CLUSTER c\n("),
            "{}",
            out[0]
        );
        assert!(
            out[0].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/dead_letters_local', '{replica}')\nPARTITION BY toYYYYMM(t)\nORDER BY (kafka_partition)"),
            "{}",
            out[0]
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS db.dead_letters ON CLUSTER c AS db.dead_letters_local ENGINE = Distributed(c, db, dead_letters_local, kafka_partition)"
        );
        let rollup = schema()
            .translate(6, "CREATE TABLE IF NOT EXISTS usage_rollup (a Int64) ENGINE = SummingMergeTree(a) ORDER BY a")
            .unwrap();
        assert!(rollup[0].contains("ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db/usage_rollup_local', '{replica}', a)"), "{}", rollup[0]);
        assert!(
            rollup[1].ends_with("usage_rollup_local, rand())"),
            "{}",
            rollup[1]
        );
    }

    #[test]
    fn views_read_local_tables_and_alters_change_both() {
        let s = schema();
        let mv = s
            .translate(7, "CREATE MATERIALIZED VIEW IF NOT EXISTS usage_rollup_mv TO usage_rollup AS\nSELECT a FROM usage_events GROUP BY a")
            .unwrap();
        assert_eq!(
            mv,
            ["CREATE MATERIALIZED VIEW IF NOT EXISTS db.usage_rollup_mv ON CLUSTER c TO db.usage_rollup_local AS SELECT a FROM db.usage_events_local GROUP BY a"]
        );
        let view = s
            .translate(5, "CREATE VIEW IF NOT EXISTS control_events AS\nSELECT a\nFROM control_events_log FINAL")
            .unwrap();
        assert_eq!(view[0], "CREATE VIEW IF NOT EXISTS db.control_events_local ON CLUSTER c AS SELECT a\nFROM db.control_events_log_local FINAL");
        assert!(
            view[1].ends_with("Distributed(c, db, control_events_local)"),
            "{}",
            view[1]
        );
        let alter = s
            .translate(2, "ALTER TABLE usage_events ADD COLUMN sign Int8 DEFAULT 1")
            .unwrap();
        assert_eq!(
            alter,
            [
                "ALTER TABLE db.usage_events_local ON CLUSTER c ADD COLUMN sign Int8 DEFAULT 1",
                "DROP TABLE IF EXISTS db.usage_events ON CLUSTER c",
                "CREATE TABLE IF NOT EXISTS db.usage_events ON CLUSTER c AS db.usage_events_local ENGINE = Distributed(c, db, usage_events_local, kafka_partition)"
            ]
        );
        // As of 0003, control_events is still the table of 0001 (0005 makes it a view).
        let alter = s
            .translate(
                3,
                "ALTER TABLE control_events ADD COLUMN anomalies Array(String)",
            )
            .unwrap();
        assert!(
            alter[2].ends_with("control_events_local, kafka_partition)"),
            "{}",
            alter[2]
        );
        let drop = s
            .translate(5, "DROP TABLE IF EXISTS control_events")
            .unwrap();
        assert_eq!(drop.len(), 2);
        assert!(drop[1].contains("control_events_local ON CLUSTER c"));
    }

    #[test]
    fn the_fleet_traffic_seconds_migration_translates() {
        let s = schema();
        let m = migrations()
            .unwrap()
            .into_iter()
            .find(|m| m.version == 17)
            .expect("migration 0017");
        let out: Vec<Vec<String>> = m
            .statements()
            .into_iter()
            .map(|statement| s.translate(17, statement).unwrap())
            .collect();
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(
            out[0][0].contains(
                "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/fleet_traffic_seconds_local', '{replica}')"
            ),
            "{}",
            out[0][0]
        );
        assert_eq!(
            out[0][1],
            "CREATE TABLE IF NOT EXISTS db.fleet_traffic_seconds ON CLUSTER c AS db.fleet_traffic_seconds_local ENGINE = Distributed(c, db, fleet_traffic_seconds_local, rand())"
        );
        // Each shard's view writes its local table from its local usage rows.
        assert!(
            out[1][0].starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS db.fleet_traffic_seconds_mv ON CLUSTER c TO db.fleet_traffic_seconds_local AS SELECT"),
            "{}",
            out[1][0]
        );
        assert!(
            out[1][0].contains("FROM db.usage_events_local"),
            "{}",
            out[1][0]
        );
        // The backfill runs once, through the Distributed tables.
        assert!(
            out[2][0].starts_with("INSERT INTO fleet_traffic_seconds"),
            "{}",
            out[2][0]
        );
    }

    #[test]
    fn an_unknown_statement_is_refused_with_its_version() {
        let err = schema()
            .translate(14, "RENAME TABLE a TO b")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0014") && err.contains("RENAME TABLE a TO b"),
            "{err}"
        );
    }

    #[test]
    fn positions_sql_names_the_tables_read_per_replica() {
        for table in ["FROM usage_events WHERE", "FROM control_events_log WHERE"] {
            assert!(POSITIONS_SQL.contains(table), "{table}");
        }
    }

    #[test]
    fn the_migrations_table_is_replicated_everywhere() {
        let sql = schema()
            .create_migrations_table(include_str!("../sql/schema_migrations.sql"))
            .unwrap();
        assert!(
            sql.starts_with("CREATE TABLE IF NOT EXISTS db.schema_migrations ON CLUSTER c"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "ReplicatedMergeTree('/clickhouse/tables/all/db/schema_migrations', '{replica}')"
            ),
            "{sql}"
        );
    }
}
