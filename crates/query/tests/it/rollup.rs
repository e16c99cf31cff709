//! The usage rollup against the raw rows on a real ClickHouse (invariant 6): every report query
//! answered from `usage_rollup` equals the same query over `usage_events` — every time zone kind
//! (whole-hour, half-hour and quarter-hour offsets), granularity and grouping —, `rollups::check`
//! finds a damaged key, `rollups::rebuild` repairs it and is idempotent, and `migrate` fills the
//! rollup from rows written before it existed. The rows are seeded random: both signs (restated
//! rows), every status, times to the second across two months.

use botmeter_query::migrate::migrations;
use botmeter_query::rollup;
use botmeter_query::rows::{status, UsageRow};
use clickhouse::Row;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use crate::common::{self, TestDb};

const USAGE_BUCKETS_SQL: &str = include_str!("../../sql/usage_buckets.sql");
const USAGE_BUCKETS_ROLLUP_SQL: &str = include_str!("../../sql/usage_buckets_rollup.sql");
const OWNER_TOTALS_SQL: &str = include_str!("../../sql/owner_totals.sql");
const OWNER_TOTALS_ROLLUP_SQL: &str = include_str!("../../sql/owner_totals_rollup.sql");
const OWNER_TOTALS_TOP_SQL: &str = include_str!("../../sql/owner_totals_top.sql");

/// 2026-01-31T00:00:00Z: the rows span the end of January and the start of February.
const START: u32 = 1_769_817_600;
const SPAN: u32 = 3 * 86_400;

fn rows(seed: u64, count: usize) -> Vec<UsageRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let event_time = START + rng.gen_range(0..SPAN);
        let owner = rng.gen_range(0..6);
        let unattributed = rng.gen_bool(0.1);
        let mut row = UsageRow {
            event_id: format!("ev_{seed}_{}", out.len()),
            event_type: "tcp_connection_closed.v0".to_owned(),
            event_time,
            event_time_us: i64::from(event_time) * 1_000_000 + rng.gen_range(0..1_000_000),
            account_id: "ac_1".to_owned(),
            status: if unattributed {
                status::UNATTRIBUTED
            } else {
                status::ATTRIBUTED
            }
            .to_owned(),
            unattributed_reason: if unattributed {
                "unknown_endpoint".to_owned()
            } else {
                String::new()
            },
            flags: Vec::new(),
            owner_id: if unattributed {
                String::new()
            } else {
                format!("bot_{owner}")
            },
            owner_kind: if unattributed {
                String::new()
            } else {
                "bot_user".to_owned()
            },
            credential_id: if unattributed {
                String::new()
            } else {
                format!("cr_{owner}_{}", rng.gen_range(0..2))
            },
            credential_kind: "authtoken".to_owned(),
            session_id: "ts_1".to_owned(),
            endpoint_id: if rng.gen_bool(0.05) {
                String::new()
            } else {
                format!("ep_{}", rng.gen_range(0..8))
            },
            hostname: "a.example.com".to_owned(),
            port: 0,
            bytes_in: rng.gen_range(0..5_000),
            bytes_out: if rng.gen_bool(0.2) {
                0
            } else {
                rng.gen_range(0..50_000)
            },
            http_requests: rng.gen_range(0..3),
            tcp_connections: rng.gen_range(0..2),
            status_code: 200,
            request_body_bytes: 0,
            response_body_bytes: 0,
            kafka_topic: "traffic".to_owned(),
            kafka_partition: 0,
            kafka_offset: out.len() as i64,
            ingested_at: event_time,
            sign: 1,
        };
        // A restated row: cancelled (sign -1) and written again under another owner.
        if rng.gen_bool(0.05) {
            let mut cancel = row.clone();
            cancel.sign = -1;
            out.push(cancel);
            row.owner_id = format!("bot_{}", (owner + 1) % 6);
            row.status = status::ATTRIBUTED.to_owned();
            row.owner_kind = "bot_user".to_owned();
            row.unattributed_reason.clear();
        }
        out.push(row);
    }
    out
}

#[derive(Debug, PartialEq, Row, Deserialize)]
struct Bucket {
    bucket_start: u32,
    group_key: String,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
    endpoints: u64,
    active_endpoint_hours: u64,
}

#[derive(Debug, PartialEq, Row, Deserialize)]
struct OwnerTotal {
    owner_id: String,
    owner_kind: String,
    bytes_in: u64,
    bytes_out: u64,
    http_requests: u64,
    tcp_connections: u64,
    endpoints: u64,
    active_endpoint_hours: u64,
}

async fn buckets(
    db: &TestDb,
    sql: &str,
    tz: &str,
    granularity: &str,
    group: &str,
    status: &str,
    (from, to): (u32, u32),
) -> Vec<Bucket> {
    let owners: Vec<String> = (0..4).map(|n| format!("bot_{n}")).collect();
    let credentials = vec!["cr_5_1".to_owned()];
    db.client()
        .query(sql)
        .bind(tz)
        .bind(granularity)
        .bind(group)
        .bind(&owners)
        .bind(&credentials)
        .bind(status)
        .bind(from)
        .bind(to)
        .fetch_all::<Bucket>()
        .await
        .unwrap_or_else(|e| panic!("{tz} {granularity} {group:?}: {e}"))
}

/// `owner_totals_top.sql`: ranked from the daily rollup (ranges on whole days).
async fn totals_top(
    db: &TestDb,
    metric: &str,
    (from, to): (u32, u32),
    limit: u32,
) -> Vec<OwnerTotal> {
    db.client()
        .query(OWNER_TOTALS_TOP_SQL)
        .bind(metric)
        .bind(status::ATTRIBUTED)
        .bind(from)
        .bind(to)
        .bind(status::ATTRIBUTED)
        .bind(from)
        .bind(to)
        .bind(metric)
        .bind(metric)
        .bind(metric)
        .bind(limit)
        .bind(limit)
        .fetch_all::<OwnerTotal>()
        .await
        .unwrap()
}

async fn totals(db: &TestDb, sql: &str, metric: &str, (from, to): (u32, u32)) -> Vec<OwnerTotal> {
    db.client()
        .query(sql)
        .bind(metric)
        .bind(status::ATTRIBUTED)
        .bind(from)
        .bind(to)
        .bind(100_u32)
        .fetch_all::<OwnerTotal>()
        .await
        .unwrap()
}

async fn assert_reports_match(db: &TestDb) {
    let ranges = [
        (START, START + SPAN),
        (START + 3_600 * 5 + 900, START + 86_400 + 2_700),
        (START + 86_400, START + 2 * 86_400),
    ];
    let mut compared = 0;
    let mut compared_top = 0;
    for range in ranges {
        for tz in ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"] {
            for granularity in ["hour", "day", "month", "all"] {
                for group in ["", "credential", "endpoint", "credential_endpoint"] {
                    let raw = buckets(
                        db,
                        USAGE_BUCKETS_SQL,
                        tz,
                        granularity,
                        group,
                        status::ATTRIBUTED,
                        range,
                    )
                    .await;
                    let rolled = buckets(
                        db,
                        USAGE_BUCKETS_ROLLUP_SQL,
                        tz,
                        granularity,
                        group,
                        status::ATTRIBUTED,
                        range,
                    )
                    .await;
                    assert!(
                        !raw.is_empty(),
                        "{range:?} {tz} {granularity} {group:?}: no rows to compare"
                    );
                    assert_eq!(rolled, raw, "{range:?} {tz} {granularity} {group:?}");
                    compared += raw.len();
                }
            }
        }
        for metric in [
            "bytes_in",
            "bytes_out",
            "http_requests",
            "tcp_connections",
            "active_endpoint_hours",
        ] {
            let raw = totals(db, OWNER_TOTALS_SQL, metric, range).await;
            assert_eq!(raw.len(), 6, "{range:?} {metric}");
            assert_eq!(
                totals(db, OWNER_TOTALS_ROLLUP_SQL, metric, range).await,
                raw,
                "{range:?} {metric}"
            );
            // Ranked from the daily rollup: whole days, summed metrics; the full list and a top 3.
            if range.0 % 86_400 == 0 && range.1 % 86_400 == 0 && metric != "active_endpoint_hours" {
                assert_eq!(
                    totals_top(db, metric, range, 100).await,
                    raw,
                    "{range:?} {metric} (daily)"
                );
                assert_eq!(
                    totals_top(db, metric, range, 3).await,
                    raw[..3],
                    "{range:?} {metric} (daily, top 3)"
                );
                compared_top += 1;
            }
        }
    }
    assert_eq!(compared_top, 8, "two whole-day ranges, four summed metrics");
    // Unattributed usage too.
    let all = (START, START + SPAN);
    let raw = buckets(
        db,
        USAGE_BUCKETS_SQL,
        "UTC",
        "hour",
        "",
        status::UNATTRIBUTED,
        all,
    )
    .await;
    assert_eq!(
        buckets(
            db,
            USAGE_BUCKETS_ROLLUP_SQL,
            "UTC",
            "hour",
            "",
            status::UNATTRIBUTED,
            all
        )
        .await,
        raw
    );
    assert!(compared > 1_000, "compared only {compared} buckets");
}

#[tokio::test]
async fn reports_from_the_rollup_equal_reports_from_the_raw_rows() {
    let db = TestDb::migrated("rollup_reports").await;
    let writer = db.writer();
    // Several inserts, as the pipeline makes them: the view sums each block.
    for chunk in rows(7, 6_000).chunks(1_000) {
        writer.insert_usage(chunk).await.unwrap();
    }
    assert_eq!(
        rollup::check(&db.config, 0, u32::MAX, 10).await.unwrap(),
        vec![]
    );
    assert_reports_match(&db).await;
    // And after ClickHouse merged the parts (summed rows, cancelled keys dropped).
    db.client()
        .query("OPTIMIZE TABLE usage_rollup FINAL")
        .execute()
        .await
        .unwrap();
    assert_eq!(
        rollup::check(&db.config, 0, u32::MAX, 10).await.unwrap(),
        vec![]
    );
    assert_reports_match(&db).await;
}

#[tokio::test]
async fn check_finds_a_damaged_key_and_rebuild_repairs_it_idempotently() {
    let db = TestDb::migrated("rollup_repair").await;
    let writer = db.writer();
    let rows = rows(11, 2_000);
    writer.insert_usage(&rows).await.unwrap();
    let client = db.client();
    // A lost view write (ClickHouse crashed between the two parts) and a stray row.
    let damaged = &rows[0];
    client
        .query("ALTER TABLE usage_rollup DELETE WHERE owner_id = ? AND credential_id = ?")
        .bind(&damaged.owner_id)
        .bind(&damaged.credential_id)
        .execute()
        .await
        .unwrap();
    // Mutations are asynchronous on 18.16: wait until it is done.
    for _ in 0..100 {
        let pending: u64 = client.query("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0").fetch_one().await.unwrap();
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    client
        .query("INSERT INTO usage_rollup (quarter, status, owner_id, net_bytes_out, net_rows) VALUES (toDateTime(?), 'attributed', 'bot_stray', 5, 1)")
        .bind(START)
        .execute()
        .await
        .unwrap();
    client
        .query("INSERT INTO usage_rollup_daily (day, status, owner_id, net_http_requests, net_rows) VALUES (toDateTime(?), 'attributed', 'bot_daily_stray', 2, 1)")
        .bind(START)
        .execute()
        .await
        .unwrap();
    client
        .query("INSERT INTO usage_rollup_hourly (hour, status, owner_id, endpoint_id, net_bytes_in, net_rows) VALUES (toDateTime(?), 'attributed', 'bot_hourly_stray', 'ep_stray', 3, 1)")
        .bind(START + 3_600)
        .execute()
        .await
        .unwrap();
    let differences = rollup::check(&db.config, 0, u32::MAX, 1_000).await.unwrap();
    let hourly: Vec<_> = differences
        .iter()
        .filter(|d| d.table == "usage_rollup_hourly" && d.owner_id == "bot_hourly_stray")
        .collect();
    assert_eq!(hourly.len(), 1, "{differences:?}");
    assert_eq!(
        (
            hourly[0].endpoint_id.as_str(),
            hourly[0].bytes_in,
            hourly[0].rows,
            hourly[0].quarter
        ),
        ("ep_stray", -3, -1, START + 3_600)
    );
    let daily: Vec<_> = differences
        .iter()
        .filter(|d| d.table == "usage_rollup_daily")
        .collect();
    assert_eq!(daily.len(), 1, "{differences:?}");
    assert_eq!(
        (
            daily[0].owner_id.as_str(),
            daily[0].http_requests,
            daily[0].rows,
            daily[0].quarter
        ),
        ("bot_daily_stray", -2, -1, START)
    );
    assert!(
        differences.iter().any(|d| d.owner_id == damaged.owner_id
            && d.credential_id == damaged.credential_id
            && d.rows > 0),
        "{differences:?}"
    );
    let stray: Vec<_> = differences
        .iter()
        .filter(|d| d.owner_id == "bot_stray")
        .collect();
    assert_eq!(stray.len(), 1, "{differences:?}");
    assert_eq!(
        (stray[0].bytes_out, stray[0].rows, stray[0].quarter),
        (-5, -1, START)
    );

    let mut seen = Vec::new();
    let rebuilt = rollup::rebuild(&db.config, None, |month, done, total| {
        seen.push((month.month, done, total))
    })
    .await
    .unwrap();
    assert_eq!(
        rebuilt.iter().map(|m| m.month).collect::<Vec<_>>(),
        [202_601, 202_602]
    );
    assert_eq!(seen, [(202_601, 1, 2), (202_602, 2, 2)]);
    assert_eq!(
        rollup::check(&db.config, 0, u32::MAX, 10).await.unwrap(),
        vec![]
    );
    assert_reports_match(&db).await;
    let before: u64 = client
        .query("SELECT count() FROM usage_rollup")
        .fetch_one()
        .await
        .unwrap();
    let again = rollup::rebuild(&db.config, None, |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(
        again, rebuilt,
        "a second rebuild writes the same months, the same rows"
    );
    let after: u64 = client
        .query("SELECT count() FROM usage_rollup")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(after, before);
    assert_eq!(
        rollup::check(&db.config, 0, u32::MAX, 10).await.unwrap(),
        vec![]
    );
    // No scratch table is left behind.
    let scratch: u64 =
        client.query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name LIKE 'usage_rollup_rebuild%'").fetch_one().await.unwrap();
    assert_eq!(scratch, 0);
}

/// An older botmeter's database: usage written before the rollup existed is in it once
/// `migrate` has created the view.
#[tokio::test]
async fn migrate_fills_the_rollup_from_rows_written_before_it() {
    let db = TestDb::new("rollup_upgrade").await;
    common::server_client()
        .query("CREATE DATABASE ?")
        .bind(clickhouse::sql::Identifier(&db.config.database))
        .execute()
        .await
        .unwrap();
    let client = db.client();
    for migration in migrations().unwrap().iter().filter(|m| m.version <= 5) {
        for statement in migration.statements() {
            client
                .query(&statement.replace('?', "??"))
                .execute()
                .await
                .unwrap();
        }
    }
    db.writer().insert_usage(&rows(13, 3_000)).await.unwrap();
    botmeter_query::migrate(&db.config).await.unwrap();
    let rollup_rows: u64 = client
        .query("SELECT count() FROM usage_rollup")
        .fetch_one()
        .await
        .unwrap();
    assert!(rollup_rows > 100, "{rollup_rows}");
    assert_eq!(
        rollup::check(&db.config, 0, u32::MAX, 10).await.unwrap(),
        vec![]
    );
    assert_reports_match(&db).await;
}
