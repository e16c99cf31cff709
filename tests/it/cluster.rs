//! botmeter on a real ClickHouse cluster: the local one of `scripts/services.sh cluster up`
//! (ZooKeeper, 2 shards × 2 replicas of ClickHouse 18.16 on loopback). Runs only when
//! `BOTMETER_CLUSTER` is set (`eval "$(scripts/services.sh cluster env)"`; `scripts/test.sh` does
//! both), and says so when it skips.
//!
//! A simulated fleet is ingested by two `botmeter run` instances while, at seeded moments, a
//! replica is killed (SIGKILL) and restarted, ZooKeeper is paused for 30 s (SIGSTOP/SIGCONT:
//! every replicated table goes read-only, inserts fail) and a whole shard is down for 30 s. Then
//! the proof of the delivery tests, read through the `Distributed` tables: per-owner totals equal
//! the simulator's truth exactly, every Kafka position nets to one row across all shards with no
//! gap, `botmeter rollups check` and `botmeter reconcile --expect-caught-up` exit 0. And each
//! partition's rows live on one shard, `partition % 2`. The instances insert per shard
//! (`--clickhouse-shard-urls`, from `BOTMETER_CLUSTER_SHARD_URLS`); a second test checks that
//! while one shard is down the other's partitions keep flowing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::delivery::{
    assert_exactly_once, clean_up, fleet, positions_sql, publish_copies, rows_sql,
    spawn_assigned_with, wait_for_both_assigned, wait_until, DeleteTopicsOnDrop,
};
use crate::support::TestEnv;

/// The cluster's servers and ZooKeeper, from `scripts/services.sh cluster env`.
struct Cluster {
    /// Node name (`s1r1`, …) → its HTTP URL.
    nodes: BTreeMap<String, String>,
    /// Node name → its pid file.
    pid_files: BTreeMap<String, String>,
    zookeeper_pid_file: String,
}

fn pairs(variable: &str) -> BTreeMap<String, String> {
    let text = std::env::var(variable)
        .unwrap_or_else(|_| panic!("{variable} (eval \"$(scripts/services.sh cluster env)\")"));
    text.split(',')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

fn pid_in(file: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("read pid file {file}: {e}"))
        .trim()
        .to_owned()
}

fn signal(signal: &str, pid: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

impl Cluster {
    fn from_env() -> Self {
        Self {
            nodes: pairs("BOTMETER_CLUSTER_NODES"),
            pid_files: pairs("BOTMETER_CLUSTER_PIDS"),
            zookeeper_pid_file: std::env::var("BOTMETER_CLUSTER_ZOOKEEPER_PID")
                .expect("BOTMETER_CLUSTER_ZOOKEEPER_PID"),
        }
    }

    /// SIGKILLs a ClickHouse server: no flush, no clean shutdown.
    fn kill(&self, node: &str) {
        let pid = pid_in(&self.pid_files[node]);
        eprintln!("killing clickhouse {node} (pid {pid})");
        signal("KILL", &pid);
    }

    /// Starts every server that is not running (`scripts/services.sh cluster up`) and waits until
    /// they answer.
    fn restart_stopped(&self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh");
        let output = Command::new(script)
            .args(["cluster", "up"])
            .output()
            .expect("run scripts/services.sh cluster up");
        assert!(
            output.status.success(),
            "scripts/services.sh cluster up: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn zookeeper(&self, how: &str) {
        signal(how, &pid_in(&self.zookeeper_pid_file));
    }

    /// A query on one server, by name; the body (TSV), panicking with the server's message.
    async fn query(&self, node: &str, sql: &str) -> String {
        let response = reqwest::Client::new()
            .post(&self.nodes[node])
            .body(sql.to_owned())
            .send()
            .await
            .unwrap_or_else(|e| panic!("reach {node}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "{node} rejected {sql:?}: {body}");
        body
    }

    /// Waits until every replica of every table of `database` has fetched what the others hold
    /// (`SYSTEM SYNC REPLICA` on every server): then a read through `Distributed` sees every
    /// row, whichever replica it picks.
    async fn sync_replicas(&self, database: &str) {
        for node in self.nodes.keys() {
            let tables = self
                .query(
                    node,
                    &format!(
                        "SELECT name FROM system.tables WHERE database = '{database}' \
                         AND engine LIKE 'Replicated%' FORMAT TSV"
                    ),
                )
                .await;
            for table in tables.lines() {
                self.query(node, &format!("SYSTEM SYNC REPLICA {database}.{table}"))
                    .await;
            }
        }
    }
}

/// `botmeter migrate` of the test's database on the cluster, which must succeed.
fn migrate_cluster(env: &TestEnv) {
    let migrate = env.command(&["migrate"]).output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
}

/// The test database's ClickHouse config on the cluster, written through its `Distributed`
/// tables (no shard URLs), for tests that drive `query::Writer` directly.
fn cluster_config(env: &TestEnv) -> query::ValidClickHouseConfig {
    query::ClickHouseConfig {
        url: env.clickhouse_url.clone(),
        database: env.database.clone(),
        cluster: env.cluster.clone().unwrap(),
        ..query::ClickHouseConfig::default()
    }
    .validate()
    .unwrap()
}

/// Held by each test here: they share the cluster, and the fault test stops parts of it (under
/// nextest, .config/nextest.toml runs them one at a time instead).
static CLUSTER_IN_USE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts the stopped servers again when dropped: a failing test leaves the cluster whole.
struct RestartOnDrop<'a>(&'a Cluster);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        self.0.restart_stopped();
    }
}

/// Seconds to wait, drawn from `range`.
async fn pause(rng: &mut ChaCha8Rng, range: std::ops::Range<u64>) {
    tokio::time::sleep(Duration::from_secs(rng.gen_range(range))).await;
}

/// The faults, in order, at seeded moments once rows are flowing; returns when all are over.
async fn inject_faults(cluster: &Cluster, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A replica: s2r1 is the one shard 2's inserts and reads go to (load_balancing in_order), so
    // they move to s2r2 and back.
    pause(&mut rng, 2..6).await;
    cluster.kill("s2r1");
    pause(&mut rng, 5..10).await;
    cluster.restart_stopped();
    eprintln!("s2r1 restarted");
    // ZooKeeper: sessions expire after 10 s, every replicated table is read-only until ZooKeeper
    // answers again.
    pause(&mut rng, 3..8).await;
    eprintln!("pausing zookeeper for 30 s");
    cluster.zookeeper("STOP");
    tokio::time::sleep(Duration::from_secs(30)).await;
    cluster.zookeeper("CONT");
    eprintln!("zookeeper resumed");
    // A whole shard.
    pause(&mut rng, 3..8).await;
    cluster.kill("s2r1");
    cluster.kill("s2r2");
    tokio::time::sleep(Duration::from_secs(30)).await;
    cluster.restart_stopped();
    eprintln!("shard 2 restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_through_a_replica_kill_a_zookeeper_pause_and_a_shard_outage_count_exactly_once(
) {
    let Some(env) = TestEnv::on_cluster("cluster") else {
        eprintln!(
            "SKIPPED: BOTMETER_CLUSTER is not set; start the local cluster with \
             `scripts/services.sh cluster up` and `eval \"$(scripts/services.sh cluster env)\"` \
             (scripts/test.sh does both)"
        );
        return;
    };
    let _exclusive = CLUSTER_IN_USE.lock().await;
    let started = Instant::now();
    let cluster = Cluster::from_env();
    let _topics = DeleteTopicsOnDrop::new(&env);
    env.create_topics(4).await;
    let fleet = fleet(1717, 20_000);

    let migrate = env.command(&["migrate"]).output().unwrap();
    assert!(
        migrate.status.success(),
        "botmeter migrate --cluster: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let mut a = env.spawn("run-a", &["run"]);
    let mut b = env.spawn("run-b", &["run"]);
    wait_for_both_assigned(&mut a, &mut b).await;

    // Ten copies of the traffic, 8 s apart, while the faults happen.
    let publishing = publish_copies(&env, fleet, 10, 4, Duration::from_secs(8));
    let faults = async {
        wait_until(
            &env,
            &rows_sql(&env),
            |n| n > 0,
            Duration::from_secs(90),
            &mut [],
        )
        .await;
        inject_faults(&cluster, 0x17).await;
    };
    let (expected, ()) = tokio::join!(publishing, faults);

    wait_until(
        &env,
        &positions_sql(&env),
        |n| n >= expected.traffic,
        Duration::from_secs(300),
        &mut [&mut a, &mut b],
    )
    .await;
    for (name, process) in [("a", &mut a), ("b", &mut b)] {
        let log = process.log_text();
        let failures = log.matches("clickhouse write failed").count();
        eprintln!("{name}: {failures} failed writes retried");
        let status = process.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{name} exited with {status}\n{}",
            process.log_tail()
        );
    }
    let failed_writes = [&a, &b]
        .iter()
        .map(|p| p.log_text().matches("clickhouse write failed").count())
        .sum::<usize>();
    assert!(
        failed_writes > 0,
        "no insert failed: the faults missed the ingestion\n{}\n{}",
        a.log_tail(),
        b.log_tail()
    );

    cluster.sync_replicas(&env.database).await;
    // Each partition's rows are on one shard: partition % 2 (shard 1 holds 0 and 2).
    for (node, partitions) in [
        ("s1r1", "0\n2\n"),
        ("s1r2", "0\n2\n"),
        ("s2r1", "1\n3\n"),
        ("s2r2", "1\n3\n"),
    ] {
        let held = cluster
            .query(
                node,
                &format!(
                    "SELECT DISTINCT kafka_partition FROM {}.usage_events_local ORDER BY kafka_partition FORMAT TSV",
                    env.database
                ),
            )
            .await;
        assert_eq!(held, partitions, "traffic partitions stored on {node}");
    }
    assert_exactly_once(&env, &expected, 2).await;
    eprintln!("cluster test checked in {:.1?}", started.elapsed());
    clean_up(&env).await;
}

/// A shard down pauses only its own partitions (`run --clickhouse-shard-urls`): with shard 2's
/// servers both killed, the next copy of the traffic reaches shard 1 in full while shard 2 is
/// still down; once shard 2 is back its partitions resume, and the totals are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_shard_is_down_the_other_shards_partitions_keep_flowing() {
    let Some(env) = TestEnv::on_cluster("cluster_shard_down") else {
        eprintln!("SKIPPED: BOTMETER_CLUSTER is not set (scripts/services.sh cluster up)");
        return;
    };
    let _exclusive = CLUSTER_IN_USE.lock().await;
    let cluster = Cluster::from_env();
    let _topics = DeleteTopicsOnDrop::new(&env);
    env.create_topics(4).await;
    let fleet = fleet(4242, 4_000);
    let per_copy = fleet.truth.traffic_events;
    migrate_cluster(&env);
    let mut run = spawn_assigned_with(&env, "run", &["run"]).await;
    // Shard 1's rows of each copy (event ids end in -c<copy>), read on its first replica.
    let shard_1_sql = format!(
        "SELECT countIf(endsWith(event_id, '-c0')), countIf(endsWith(event_id, '-c1')) \
         FROM {}.usage_events_local FORMAT TSV",
        env.database
    );
    let shard_1 = || async {
        let text = cluster.query("s1r1", &shard_1_sql).await;
        let (first, second) = text.trim().split_once('\t').expect("two counts");
        (
            first.parse::<u64>().unwrap(),
            second.parse::<u64>().unwrap(),
        )
    };

    // Shard 2's rows all in each rollup, on the replica its inserts go to first.
    let shard_2_settled = format!(
        "SELECT (SELECT count() FROM {db}.usage_events_local) = \
         (SELECT sum(net_rows) FROM {db}.usage_rollup_local) \
         AND (SELECT count() FROM {db}.usage_events_local) = \
         (SELECT sum(net_rows) FROM {db}.usage_rollup_hourly_local) \
         AND (SELECT count() FROM {db}.usage_events_local) = \
         (SELECT sum(net_rows) FROM {db}.usage_rollup_daily_local) FORMAT TSV",
        db = env.database
    );
    // Two copies of the traffic, 20 s apart; shard 2 goes down once the first is written.
    let publishing = publish_copies(&env, fleet, 2, 4, Duration::from_secs(20));
    let outage = async {
        wait_until(
            &env,
            &positions_sql(&env),
            |n| n >= per_copy,
            Duration::from_secs(120),
            &mut [],
        )
        .await;
        // Shard 2 is killed once its insert is over, views included: a server killed between an
        // insert's part and its views' parts leaves the rollups short for good (README, Limits
        // on a cluster), which this test is not about. Positions count the part alone.
        let started = Instant::now();
        loop {
            let settled = cluster.query("s2r1", &shard_2_settled).await;
            if settled.trim() == "1" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "shard 2's rollups never caught up with its rows"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.kill("s2r1");
        cluster.kill("s2r2");
        eprintln!(
            "shard 2 down; shard 1 holds {:?} rows of each copy",
            shard_1().await
        );
    };
    let _restart = RestartOnDrop(&cluster);
    let (expected, ()) = tokio::join!(publishing, outage);

    // The second copy's rows of partitions 0 and 2 (as many as the first's) reach shard 1 while
    // shard 2 is down.
    let started = Instant::now();
    loop {
        run.assert_running();
        let (first, second) = shard_1().await;
        assert!(
            first > 0 && first < per_copy,
            "shard 1 holds {first} rows of the first copy, of {per_copy}"
        );
        if second >= first {
            assert_eq!(second, first, "shard 1's rows of the second copy");
            eprintln!("shard 1 took the second copy ({second} rows) {:.1?} after it was published, shard 2 down", started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "shard 1 holds {second} rows of the second copy, {first} expected, 60 s into shard 2's outage: the healthy shard's partitions did not keep flowing\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in ["s2r1", "s2r2"] {
        let answer = reqwest::Client::new()
            .get(format!("{}/ping", cluster.nodes[node]))
            .send()
            .await;
        assert!(answer.is_err(), "{node} was down all along");
    }
    assert!(
        run.log_text().contains("the shard's partitions paused"),
        "shard 2's inserts never failed\n{}",
        run.log_tail()
    );
    cluster.restart_stopped();
    eprintln!("shard 2 restarted");
    wait_until(
        &env,
        &positions_sql(&env),
        |n| n >= expected.traffic,
        Duration::from_secs(180),
        &mut [&mut run],
    )
    .await;
    // Logged right after the held rows are written, so a moment after they are visible.
    let started = Instant::now();
    while !run
        .log_text()
        .contains("clickhouse writes to the shard recovered")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "shard 2's writes never recovered\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );
    cluster.sync_replicas(&env.database).await;
    assert_exactly_once(&env, &expected, 1).await;
    clean_up(&env).await;
}

/// `botmeter migrate --cluster` builds the cluster schema on every server, records each version
/// once for the whole cluster, applies nothing the second time, and a single-node `migrate` of
/// that database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_on_a_cluster_is_recorded_cluster_wide_and_refuses_the_other_layout() {
    let Some(env) = TestEnv::on_cluster("cluster_migrate") else {
        eprintln!("SKIPPED: BOTMETER_CLUSTER is not set (scripts/services.sh cluster up)");
        return;
    };
    let _exclusive = CLUSTER_IN_USE.lock().await;
    let cluster = Cluster::from_env();
    let migrate = |extra: &[&str]| {
        let mut args = vec!["migrate"];
        args.extend_from_slice(extra);
        env.command(&args).output().unwrap()
    };
    let first = migrate(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let versions = query::migrate::migrations().unwrap().len();
    let second = migrate(&[]);
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success()
            && text.contains(&format!("{versions} already applied, 0 applied now")),
        "{text}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    for node in cluster.nodes.keys() {
        let engines = cluster
            .query(
                node,
                &format!(
                    "SELECT name, engine FROM system.tables WHERE database = '{}' AND name IN \
                     ('usage_events', 'usage_events_local', 'control_events', 'usage_rollup_local', 'schema_migrations') \
                     ORDER BY name FORMAT TSV",
                    env.database
                ),
            )
            .await;
        assert_eq!(
            engines,
            "control_events\tDistributed\nschema_migrations\tReplicatedMergeTree\nusage_events\tDistributed\n\
             usage_events_local\tReplicatedMergeTree\nusage_rollup_local\tReplicatedSummingMergeTree\n",
            "tables on {node}"
        );
    }
    cluster.sync_replicas(&env.database).await;
    for node in cluster.nodes.keys() {
        let recorded = cluster
            .query(
                node,
                &format!(
                    "SELECT uniqExact(version), count() FROM {}.schema_migrations FORMAT TSV",
                    env.database
                ),
            )
            .await;
        assert_eq!(
            recorded,
            format!("{versions}\t{versions}\n"),
            "versions recorded on {node}"
        );
    }
    let single = env
        .command(&["migrate"])
        .env_remove("BOTMETER_CLICKHOUSE_CLUSTER")
        .env_remove("BOTMETER_CLICKHOUSE_SHARD_URLS")
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&single.stderr);
    assert!(
        !single.status.success()
            && error.contains(
                "usage_events is a Distributed table, expected a MergeTree on one server"
            ),
        "{error}"
    );
    env.drop_database().await;
}

/// Replication's block deduplication, which the pipeline relies on instead of the lost-response
/// filter on a cluster: a batch's rows sent again unchanged, as a retry sends them, are stored
/// once on every shard, while the next batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_sent_again_unchanged_is_stored_once_on_the_cluster() {
    let Some(env) = TestEnv::on_cluster("cluster_dedup") else {
        eprintln!("SKIPPED: BOTMETER_CLUSTER is not set (scripts/services.sh cluster up)");
        return;
    };
    let _exclusive = CLUSTER_IN_USE.lock().await;
    let cluster = Cluster::from_env();
    migrate_cluster(&env);
    let db = &env.database;
    // 1000 rows over 4 partitions, inserted in number order: both shards get some.
    env.clickhouse(&format!(
        "INSERT INTO {db}.usage_events (event_id, event_time, owner_id, kafka_topic, kafka_partition, kafka_offset, bytes_out) \
         SELECT concat('ev_', toString(number)), toDateTime('2026-01-01 00:00:00', 'UTC') + number, \
         concat('bot_', toString(number % 7)), 'traffic', toInt32(number % 4), toInt64(intDiv(number, 4)), number \
         FROM system.numbers LIMIT 1000"
    ))
    .await;
    let config = cluster_config(&env);
    let stored: Vec<query::rows::UsageRow> = config
        .client()
        .query("SELECT ?fields FROM usage_events ORDER BY kafka_partition, kafka_offset")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(stored.len(), 1000);
    // The next batch: the messages after those, partition by partition.
    let batch: Vec<query::rows::UsageRow> = stored
        .into_iter()
        .map(|mut row| {
            row.kafka_offset += 250;
            row.event_id.push_str("-next");
            row
        })
        .collect();
    let writer = query::Writer::new(&config).unwrap();
    assert!(writer.deduplicates_retries());
    let count_sql = format!("SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM {db}.usage_events FORMAT TSV");
    let count = || env.clickhouse(&count_sql);
    writer.insert_usage(&batch).await.unwrap();
    assert_eq!(count().await, "2000\t2000\n", "the next batch is stored");
    // Its insert sent again unchanged, as after a lost answer; and in the other order (ClickHouse
    // hashes a block's rows as stored, sorted by the table's key).
    writer.insert_usage(&batch).await.unwrap();
    assert_eq!(
        count().await,
        "2000\t2000\n",
        "an insert sent again unchanged is stored once"
    );
    let reversed: Vec<_> = batch.iter().rev().cloned().collect();
    writer.insert_usage(&reversed).await.unwrap();
    assert_eq!(
        count().await,
        "2000\t2000\n",
        "the same rows in another order are stored once"
    );
    cluster.sync_replicas(db).await;
    for node in cluster.nodes.keys() {
        let held = cluster
            .query(
                node,
                &format!("SELECT count() FROM {db}.usage_events_local"),
            )
            .await;
        assert_eq!(
            held.trim(),
            "1000",
            "rows on {node} (two partitions of four)"
        );
    }
    env.drop_database().await;
}

/// A shard that is down holds neither the audit log nor the dead letters: with both servers of
/// shard 2 killed, audit rows and dead letters of partitions of both shards are taken (shard 1's
/// stored at once, shard 2's queued on the server written to), and once shard 2 is back its rows
/// arrive by themselves, each stored once, shard 1's too (the synchronous attempt had stored them
/// before failing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_shard_is_down_audit_rows_and_dead_letters_are_queued_for_it() {
    let Some(env) = TestEnv::on_cluster("cluster_queued") else {
        eprintln!("SKIPPED: BOTMETER_CLUSTER is not set (scripts/services.sh cluster up)");
        return;
    };
    let _exclusive = CLUSTER_IN_USE.lock().await;
    let cluster = Cluster::from_env();
    migrate_cluster(&env);
    let db = &env.database;
    let config = cluster_config(&env);
    let writer = query::Writer::new(&config).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .timestamp() as u32;
    // Partition 0 belongs to shard 1, partition 1 to shard 2 (`partition % shards`).
    let control: Vec<query::rows::ControlRow> = (0..2)
        .map(|partition| query::rows::ControlRow {
            event_id: format!("ev_queued_{partition}"),
            event_type: "tunnel_credential_created.v0".to_owned(),
            event_time: at,
            event_time_us: i64::from(at) * 1_000_000,
            account_id: "ac_it".to_owned(),
            principal_id: String::new(),
            principal_subject: String::new(),
            principal_credential_id: String::new(),
            object_id: format!("cr_queued_{partition}"),
            owner_id: "bot_queued".to_owned(),
            object: "{}".to_owned(),
            kafka_topic: env.control_topic.clone(),
            kafka_partition: partition,
            kafka_offset: 0,
            ingested_at: at,
            anomalies: Vec::new(),
            source: String::new(),
        })
        .collect();
    let letters: Vec<query::rows::DeadLetterRow> = (0..2)
        .map(|partition| query::rows::DeadLetterRow {
            kafka_topic: env.traffic_topic.clone(),
            kafka_partition: partition,
            kafka_offset: 7,
            reason_kind: "malformed_json".to_owned(),
            reason: "expected value at line 1 column 1".to_owned(),
            payload: b"\xff".to_vec(),
            payload_bytes: 1,
            received_at: at,
        })
        .collect();

    cluster.kill("s2r1");
    cluster.kill("s2r2");
    let _restart = RestartOnDrop(&cluster);
    writer
        .insert_control(&control)
        .await
        .expect("audit rows of a shard that is down are queued, not refused");
    writer
        .insert_dead_letters(&letters)
        .await
        .expect("dead letters of a shard that is down are queued, not refused");
    let on_shard_1 = |table: &str| {
        format!("SELECT count() FROM {db}.{table}_local WHERE kafka_partition = 0 FORMAT TSV")
    };
    for table in ["control_events_log", "dead_letters"] {
        assert_eq!(
            cluster.query("s1r1", &on_shard_1(table)).await.trim(),
            "1",
            "shard 1's row of {table} is stored while shard 2 is down"
        );
    }

    cluster.restart_stopped();
    let count_sql = |table: &str| {
        format!(
            "SELECT count(), uniqExact(kafka_partition, kafka_offset) FROM {db}.{table} FORMAT TSV"
        )
    };
    for table in ["control_events_log", "dead_letters"] {
        let started = Instant::now();
        loop {
            let text = env.clickhouse(&count_sql(table)).await;
            if text.starts_with("2\t") || text.starts_with("3\t") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{table} holds {text:?} 120 s after shard 2 is back: the queued row never arrived"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    cluster.sync_replicas(db).await;
    for table in ["control_events_log", "dead_letters"] {
        assert_eq!(
            env.clickhouse(&count_sql(table)).await,
            "2\t2\n",
            "{table}: each row stored once (rows, positions)"
        );
    }
    env.drop_database().await;
}
