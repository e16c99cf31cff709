//! The fleet dashboard's panels and the `device dropped` Grafana alert rule, timed on ClickHouse
//! (not a timed test): every panel's SQL of `dashboards/fleet.json` and the rule's query of
//! `dashboards/provisioning/alerting/botmeter.yaml`, expanded as Grafana and the ClickHouse plugin
//! expand them, sent over HTTP to the 100,000-credential fleet the `fleet` harness generates
//! (10M usage rows over October 2026), at two ends of the range:
//! - the month's end, after every traffic: each credential's last traffic comes from the fleet
//!   state table (what a dashboard showing "now" reads);
//! - day 25: a past end, before the latest traffic of most credentials, whose traffic before it is
//!   read from the raw usage rows.
//!
//! The range starts at the month's start, with a 30-minute interval (Grafana's for a month on a
//! wide panel): 1,488 points per time series. Only ClickHouse works here, so the harness may run
//! in any profile.
//!
//! Run: `scripts/services.sh up`, then once `BOTMETER_BENCH_FLEET_KEEP=1 cargo bench --bench fleet`
//! (it keeps `botmeter_bench_fleet`), then `cargo bench --bench fleet_dashboard`.
//! `BOTMETER_BENCH_FLEET_DASHBOARD_RUNS` sets the runs per query (default 20). Results go to
//! BENCHMARKS.md by hand, with the machine.

use std::time::{Duration, Instant};

use serde_json::Value;

const DATABASE: &str = "botmeter_bench_fleet";
/// 2026-10-01T00:00:00Z, as in `benches/fleet.rs`.
const MONTH_START: i64 = 1_790_812_800;
const DAY_SECS: i64 = 86_400;
const INTERVAL_SECS: i64 = 1_800;

/// A panel's SQL with the dashboard's variables set (all owner kinds, every owner, a 300 s drop
/// grace, 30 idle days) and the plugin's macros expanded for `from`..`to`.
fn expand(sql: &str, from: i64, to: i64) -> String {
    let expanded = sql
        .replace("${owner_kind:singlequote}", "'bot_user','user'")
        .replace("${owner:singlequote}", "'*'")
        .replace("${drop_grace_seconds}", "300")
        .replace("${idle_days}", "30")
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", &INTERVAL_SECS.to_string());
    assert!(!expanded.contains('$'), "unexpanded: {expanded}");
    expanded
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url =
        std::env::var("BOTMETER_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let runs: usize = std::env::var("BOTMETER_BENCH_FLEET_DASHBOARD_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let http = reqwest::Client::new();
    let query = |sql: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let started = Instant::now();
            let response = http
                .post(&url)
                .query(&[("database", DATABASE)])
                .body(format!("{sql}\nFORMAT JSONCompact"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            assert!(status.is_success(), "{text}\n{sql}");
            let rows = serde_json::from_str::<Value>(&text).unwrap()["rows"]
                .as_u64()
                .unwrap();
            (started.elapsed(), rows)
        }
    };
    let (_, credentials) =
        query("SELECT 1 FROM fleet_credentials GROUP BY credential_id".into()).await;
    assert!(
        credentials > 0,
        "no fleet in {DATABASE}: run `BOTMETER_BENCH_FLEET_KEEP=1 cargo bench --bench fleet` first"
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dashboards/fleet.json")).unwrap())
            .unwrap();
    let mut queries: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|panel| {
            (
                panel["title"].as_str().unwrap().to_owned(),
                panel["targets"][0]["rawSql"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let rules: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(root.join("dashboards/provisioning/alerting/botmeter.yaml"))
            .unwrap(),
    )
    .unwrap();
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter(|r| r["uid"] == "botmeter-device-dropped")
    {
        queries.push((
            "alert rule: device dropped".to_owned(),
            rule["data"][0]["model"]["rawSql"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }

    println!("{credentials} credentials in {DATABASE}; {runs} runs per query");
    for (end, to) in [
        ("month's end", MONTH_START + 31 * DAY_SECS),
        ("day 25", MONTH_START + 24 * DAY_SECS),
    ] {
        for (title, sql) in &queries {
            let sql = expand(sql, MONTH_START, to);
            let mut samples: Vec<Duration> = Vec::with_capacity(runs);
            let mut rows = 0;
            for _ in 0..runs {
                let (elapsed, n) = query(sql.clone()).await;
                samples.push(elapsed);
                rows = n;
            }
            samples.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "{end:<12} {title:<32} rows {rows:>6}  p50 {:>8.1} ms  max {:>8.1} ms",
                ms(samples[samples.len() / 2]),
                ms(*samples.last().unwrap())
            );
        }
    }
}
