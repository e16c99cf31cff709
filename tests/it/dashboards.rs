//! The Grafana dashboards (`dashboards/*.json`) and the investigation queries (`queries/*.sql`)
//! against the real ClickHouse 18.16 server, on simulated fleets published through `botmeter run`.
//!
//! Every panel's `rawSql` and every query variable is expanded the way Grafana and the
//! `grafana-clickhouse-datasource` plugin expand it — Grafana's template variables (`${owner}`,
//! `${owner:singlequote}`) first, then the plugin's macros, as its `pkg/macros/macros.go` renders
//! them (`$__timeFilter(c)` → `c >= toDateTime(from) AND c <= toDateTime(to)`, `$__fromTime` →
//! `toDateTime(from)`, `$__toTime`, `$__interval_s`, and `$__timeInterval(c)` →
//! `toStartOfInterval(toDateTime(c), INTERVAL n second)`). ClickHouse 18.16 has no
//! `toStartOfInterval`, so the dashboards bucket with `$__interval_s` arithmetic instead, and the
//! test checks that the SQL it runs on 18.16 is byte for byte what the plugin sends (the 18.16
//! expansion of `$__timeInterval` exists only for SQL that would use it).
//!
//! Each result must have the columns its panel uses (the names its field overrides, label display
//! names and links refer to; a time column first for time series) and numbers equal to the
//! simulator's ground truth and to the HTTP API (`/v1/usage/top`, `/v1/owners/{id}/usage`,
//! `/v1/overage`, `/v1/anomalies`). Rows restated with `sign` (a -1 copy and a +1 copy) are added
//! before reading, so a panel that forgot `metric * sign` counts those rows three times and fails.
//! `tests/python/test_dashboards_chdb.py` runs the same SQL on current ClickHouse (chDB).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde_json::{json, Value};
use simulate::{generate, Fleet, FleetConfig, GroundTruth, Usage};

use crate::support::{self, free_port, BotmeterProcess, TestEnv};

// --- The dashboards ------------------------------------------------------------------------------

/// One dashboard file.
#[derive(Debug)]
struct Dashboard {
    file: String,
    uid: String,
    json: Value,
    panels: Vec<Panel>,
}

#[derive(Debug)]
struct Panel {
    title: String,
    kind: String,
    json: Value,
    targets: Vec<Target>,
}

#[derive(Debug)]
struct Target {
    format: u64,
    query_type: String,
    raw_sql: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The ClickHouse dashboards: those whose `datasource` variable picks a
/// `grafana-clickhouse-datasource`. The ops dashboard (`ops.json`, PromQL on botmeter's own
/// `/metrics`) has no SQL to run; `tests/python/test_compose.py` checks it.
fn load_dashboards() -> Vec<Dashboard> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let dashboards: Vec<(String, Value)> = files
        .iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            (file, json)
        })
        .filter(|(_, json)| {
            json["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["type"] == "datasource" && v["query"] == "grafana-clickhouse-datasource")
        })
        .collect();
    assert!(dashboards.len() >= 4, "ClickHouse dashboards: {files:?}");
    dashboards
        .into_iter()
        .map(|(file, json)| {
            let mut panels = Vec::new();
            collect_panels(&json["panels"], &mut panels);
            Dashboard {
                uid: json["uid"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{file}: uid"))
                    .to_owned(),
                file,
                json,
                panels,
            }
        })
        .collect()
}

/// Panels, including those nested in rows.
fn collect_panels(list: &Value, out: &mut Vec<Panel>) {
    for panel in list.as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            collect_panels(&panel["panels"], out);
            continue;
        }
        let targets = panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| Target {
                format: t["format"].as_u64().unwrap_or(u64::MAX),
                query_type: t["queryType"].as_str().unwrap_or_default().to_owned(),
                raw_sql: t["rawSql"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        out.push(Panel {
            title: panel["title"].as_str().unwrap_or_default().to_owned(),
            kind: panel["type"].as_str().unwrap_or_default().to_owned(),
            json: panel.clone(),
            targets,
        });
    }
}

impl Dashboard {
    fn variables(&self) -> &[Value] {
        self.json["templating"]["list"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }
}

impl Panel {
    /// Column names the panel's configuration refers to: field overrides by name, and the labels
    /// its display name reads (`${__field.labels.owner}` needs a string column `owner`).
    fn used_columns(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for o in self.json["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if o["matcher"]["id"] == "byName" {
                out.insert(o["matcher"]["options"].as_str().unwrap().to_owned());
            }
        }
        if let Some(label) = self.json["fieldConfig"]["defaults"]["displayName"]
            .as_str()
            .and_then(|d| d.strip_prefix("${__field.labels."))
            .and_then(|d| d.strip_suffix('}'))
        {
            out.insert(label.to_owned());
        }
        out
    }
}

// --- Expansion: Grafana's template variables, then the plugin's macros --------------------------

/// Which ClickHouse the plugin's macros are expanded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    /// Exactly what the plugin sends (current ClickHouse).
    Plugin,
    /// The same, except `$__timeInterval(c)`, which the plugin renders with `toStartOfInterval`
    /// (absent from 18.16), becomes the equivalent arithmetic.
    ClickHouse1816,
}

/// What a dashboard is expanded with: the time range (Unix seconds, as the plugin truncates it),
/// the interval, and each variable's selected values.
#[derive(Debug, Clone)]
struct Expansion {
    from: i64,
    to: i64,
    interval_s: i64,
    vars: BTreeMap<String, Vec<String>>,
}

impl Expansion {
    fn new(from: DateTime<Utc>, to: DateTime<Utc>, interval_s: i64) -> Self {
        Self {
            from: from.timestamp(),
            to: to.timestamp(),
            interval_s,
            vars: BTreeMap::new(),
        }
    }

    fn var(mut self, name: &str, values: &[&str]) -> Self {
        self.vars.insert(
            name.to_owned(),
            values.iter().map(|v| (*v).to_owned()).collect(),
        );
        self
    }

    fn expand(&self, sql: &str, flavor: Flavor) -> String {
        expand_macros(
            &interpolate(sql, &self.vars),
            self.from,
            self.to,
            self.interval_s,
            flavor,
        )
    }
}

/// Grafana's template variable interpolation: `${name}` (values joined by commas) and
/// `${name:singlequote}` (each value quoted, `'` escaped as `\'`, joined by commas). The plugin's
/// `$__` macros are left for the backend; a bare `$name` is refused (the dashboards spell
/// variables `${…}`).
fn interpolate(sql: &str, vars: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {sql}"));
            let (name, format) = body[..end]
                .split_once(':')
                .map_or((&body[..end], None), |(n, f)| (n, Some(f)));
            let values = vars
                .get(name)
                .unwrap_or_else(|| panic!("variable {name} has no value; SQL:\n{sql}"));
            let rendered: Vec<String> = match format {
                None => values.clone(),
                Some("singlequote") => values
                    .iter()
                    .map(|v| format!("'{}'", v.replace('\'', "\\'")))
                    .collect(),
                Some(other) => panic!("variable format {other} not supported here"),
            };
            out.push_str(&rendered.join(","));
            rest = &body[end + 1..];
        } else if after.starts_with("__") {
            out.push('$');
            rest = after;
        } else {
            assert!(
                !after.starts_with(|c: char| c.is_ascii_alphabetic()),
                "bare $variable in: {sql}"
            );
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The plugin's macros (grafana/clickhouse-datasource `pkg/macros/macros.go`).
fn expand_macros(sql: &str, from: i64, to: i64, interval_s: i64, flavor: Flavor) -> String {
    let n = interval_s.max(1);
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find("$__") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let mut tail = &after[name_len..];
        let mut args = Vec::new();
        if tail.starts_with('(') {
            let mut depth = 0;
            let mut start = 1;
            let mut close = None;
            for (i, c) in tail.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            args.push(tail[start..i].trim().to_owned());
                            close = Some(i);
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        args.push(tail[start..i].trim().to_owned());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            tail = &tail[close.unwrap_or_else(|| panic!("unclosed $__{name}( in {sql}")) + 1..];
        }
        let arg = |i: usize| -> &str {
            args.get(i)
                .map(String::as_str)
                .unwrap_or_else(|| panic!("$__{name} needs an argument"))
        };
        let rendered = match name {
            "timeFilter" => format!(
                "{c} >= toDateTime({from}) AND {c} <= toDateTime({to})",
                c = arg(0)
            ),
            "fromTime" => format!("toDateTime({from})"),
            "toTime" => format!("toDateTime({to})"),
            "interval_s" => n.to_string(),
            "timeInterval" => match flavor {
                Flavor::Plugin => format!(
                    "toStartOfInterval(toDateTime({}), INTERVAL {n} second)",
                    arg(0)
                ),
                Flavor::ClickHouse1816 => format!(
                    "toDateTime(intDiv(toUInt32(toDateTime({})), {n}) * {n})",
                    arg(0)
                ),
            },
            other => panic!(
                "macro $__{other} is not one the dashboards may use (see dashboards/README.md)"
            ),
        };
        out.push_str(&rendered);
        rest = tail;
    }
    out.push_str(rest);
    out
}

// --- ClickHouse ----------------------------------------------------------------------------------

/// A result in `JSONCompact`: column names and types, and rows.
#[derive(Debug, Clone)]
struct QueryResult {
    sql: String,
    columns: Vec<(String, String)>,
    data: Vec<Vec<Value>>,
}

/// One row of a result, read by column name.
#[derive(Clone, Copy)]
struct Row<'a> {
    result: &'a QueryResult,
    values: &'a [Value],
}

impl QueryResult {
    fn index(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| {
                panic!(
                    "no column {name:?} in {:?}; SQL:\n{}",
                    self.names(),
                    self.sql
                )
            })
    }

    fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.data.iter().map(move |values| Row {
            result: self,
            values,
        })
    }

    fn single(&self) -> Row<'_> {
        assert_eq!(self.data.len(), 1, "one row expected; SQL:\n{}", self.sql);
        self.rows().next().unwrap()
    }

    /// Sum of a numeric column over the rows where `keep` holds.
    fn sum_where(&self, column: &str, keep: impl Fn(Row<'_>) -> bool) -> f64 {
        self.rows()
            .filter(|r| keep(*r))
            .map(|r| r.f64(column))
            .sum()
    }
}

impl Row<'_> {
    fn value(&self, name: &str) -> &Value {
        &self.values[self.result.index(name)]
    }

    fn f64(&self, name: &str) -> f64 {
        match self.value(name) {
            Value::Number(n) => n.as_f64().unwrap(),
            // 18.16 quotes 64-bit integers in JSON.
            Value::String(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("{name} = {s:?} is not a number")),
            Value::Null => f64::NAN,
            other => panic!("{name} = {other} is not a number"),
        }
    }

    fn i64(&self, name: &str) -> i64 {
        match self.value(name) {
            Value::Number(n) => n
                .as_i64()
                .unwrap_or_else(|| panic!("{name} = {n} is not an integer")),
            Value::String(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("{name} = {s:?} is not an integer")),
            other => panic!("{name} = {other} is not an integer"),
        }
    }

    fn u64(&self, name: &str) -> u64 {
        u64::try_from(self.i64(name)).unwrap_or_else(|_| panic!("{name} is negative"))
    }

    fn str(&self, name: &str) -> String {
        match self.value(name) {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// A `DateTime` column (`YYYY-MM-DD hh:mm:ss`, UTC on our servers) as Unix seconds.
    fn time(&self, name: &str) -> i64 {
        let text = self.str(name);
        chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("{name} = {text:?}: {e}"))
            .and_utc()
            .timestamp()
    }
}

/// The test database over HTTP.
#[derive(Debug, Clone)]
struct Ch {
    http: reqwest::Client,
    url: String,
    database: String,
}

impl Ch {
    async fn try_query(&self, sql: &str) -> Result<QueryResult, String> {
        let body = format!(
            "{}\nFORMAT JSONCompact",
            sql.trim_end().trim_end_matches(';')
        );
        let response = self
            .http
            .post(&self.url)
            .query(&[("database", self.database.as_str())])
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(text);
        }
        let parsed: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        Ok(QueryResult {
            sql: sql.to_owned(),
            columns: parsed["meta"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        c["type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect(),
            data: parsed["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_array().unwrap().clone())
                .collect(),
        })
    }

    async fn query(&self, sql: &str) -> QueryResult {
        self.try_query(sql)
            .await
            .unwrap_or_else(|e| panic!("ClickHouse rejected:\n{sql}\n--- {e}"))
    }
}

// --- Running the dashboards ----------------------------------------------------------------------

/// Every panel's result, by panel title.
type PanelResults = BTreeMap<String, QueryResult>;

/// Runs every query variable and every panel of `dashboard` with `expansion`: on 18.16 with the
/// SQL the plugin would send, checking the columns each panel uses. Returns the panels' results.
async fn run_dashboard(ch: &Ch, dashboard: &Dashboard, expansion: &Expansion) -> PanelResults {
    let mut out = PanelResults::new();
    for variable in dashboard
        .variables()
        .iter()
        .filter(|v| v["type"] == "query")
    {
        let sql = variable["query"].as_str().unwrap();
        let result = ch.query(&expansion.expand(sql, Flavor::Plugin)).await;
        assert_eq!(
            result.columns.len(),
            1,
            "{}: variable {} returns one column",
            dashboard.file,
            variable["name"]
        );
        out.insert(
            format!("variable {}", variable["name"].as_str().unwrap()),
            result,
        );
    }
    for panel in dashboard.panels.iter().filter(|p| !p.targets.is_empty()) {
        assert_eq!(
            panel.targets.len(),
            1,
            "{}: {}: one query per panel",
            dashboard.file,
            panel.title
        );
        let target = &panel.targets[0];
        let sql = expansion.expand(&target.raw_sql, Flavor::ClickHouse1816);
        assert_eq!(
            sql,
            expansion.expand(&target.raw_sql, Flavor::Plugin),
            "{}: {}: 18.16 runs what the plugin sends",
            dashboard.file,
            panel.title
        );
        let result = ch.query(&sql).await;
        for column in panel.used_columns() {
            result.index(&column);
        }
        if target.format == 0 {
            assert_eq!(
                result.columns[0].0, "time",
                "{}: {}: a time series starts with its time column",
                dashboard.file, panel.title
            );
            assert!(
                result.columns[0].1.starts_with("DateTime"),
                "{}: {}: time is a DateTime",
                dashboard.file,
                panel.title
            );
            assert!(
                result
                    .columns
                    .iter()
                    .skip(1)
                    .any(|(_, t)| t.contains("Int") || t.contains("Float")),
                "{}: {}: a time series has a numeric column",
                dashboard.file,
                panel.title
            );
            let times: Vec<i64> = result.rows().map(|r| r.time("time")).collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{}: {}: sorted by time",
                dashboard.file,
                panel.title
            );
        }
        out.insert(panel.title.clone(), result);
    }
    out
}

// --- The investigation queries -------------------------------------------------------------------

/// `queries/NN_name.sql`, by file name.
fn load_queries() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("queries")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            out.insert(
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    assert!(out.len() >= 6, "queries/*.sql: {:?}", out.keys());
    out
}

/// Sets a parameter: replaces the expression of the one line `<expr> AS <name>[,] -- param…`.
fn set_param(sql: &str, name: &str, expr: &str) -> String {
    let mut hits = 0;
    let lines: Vec<String> = sql
        .lines()
        .map(|line| {
            let Some((code, comment)) = line.split_once("--") else {
                return line.to_owned();
            };
            if !comment.trim_start().starts_with("param") {
                return line.to_owned();
            }
            let code_trimmed = code.trim_end();
            let (code_body, comma) = code_trimmed
                .strip_suffix(',')
                .map_or((code_trimmed, ""), |c| (c.trim_end(), ","));
            let Some(at) = code_body.rfind(" AS ") else {
                return line.to_owned();
            };
            if code_body[at + 4..].trim() != name {
                return line.to_owned();
            }
            hits += 1;
            let indent = &code[..code.len() - code.trim_start().len()];
            format!("{indent}{expr} AS {name}{comma} --{comment}")
        })
        .collect();
    assert_eq!(
        hits, 1,
        "parameter {name}: expected one `… AS {name} -- param` line"
    );
    lines.join("\n")
}

fn with_params(sql: &str, params: &[(&str, &str)]) -> String {
    params.iter().fold(sql.to_owned(), |sql, (name, expr)| {
        set_param(&sql, name, expr)
    })
}

fn datetime_literal(t: DateTime<Utc>) -> String {
    format!("toDateTime('{}', 'UTC')", t.format("%Y-%m-%d %H:%M:%S"))
}

// --- The world: a fleet through `botmeter run`, and `botmeter serve` ----------------------------

/// Quotas set both as the overage dashboard's variables and in the API's plan.
#[derive(Debug, Clone, Copy)]
struct Quotas {
    data_out_gb: f64,
    requests: f64,
    tcp_connections: f64,
    endpoint_hours: f64,
}

struct World {
    env: TestEnv,
    ch: Ch,
    truth: GroundTruth,
    fleet: Fleet,
    run: BotmeterProcess,
    serve: BotmeterProcess,
    api: String,
    http: reqwest::Client,
    /// Dead letters sent besides the fleet: (topic, reason kind).
    dead_letters: Vec<(String, String)>,
}

impl World {
    /// Publishes the fleet and `extra_control` (and, `with_dead_letters`, two undecodable traffic
    /// messages and one control message), runs the pipeline until every message is stored,
    /// restates some rows (net zero), and serves the API with a plan holding `quotas`.
    async fn start(
        name: &str,
        fleet: Fleet,
        quotas: Quotas,
        extra_control: Vec<Value>,
        with_dead_letters: bool,
    ) -> Self {
        let env = TestEnv::new(name);
        env.create_topics(3).await;
        env.publish(&fleet).await;
        for event in &extra_control {
            support::send_raw(
                &env.brokers,
                &env.control_topic,
                event.to_string().as_bytes(),
            )
            .await;
        }
        let mut dead_letters = Vec::new();
        if with_dead_letters {
            support::send_raw(&env.brokers, &env.traffic_topic, b"\xffnot json").await;
            dead_letters.push((env.traffic_topic.clone(), "malformed_json".to_owned()));
            support::send_raw(
                &env.brokers,
                &env.traffic_topic,
                br#"{"event_id":"ev_dash_bad","event_type":"tcp_connection_closed.v0","event_timestamp":"2026-01-01T01:00:00Z","object":{"conn":{"server_name":"x.ngrok.app","bytes_out":-5}}}"#,
            )
            .await;
            dead_letters.push((env.traffic_topic.clone(), "invalid_field".to_owned()));
            support::send_raw(&env.brokers, &env.control_topic, b"{\"event_id\": ").await;
            dead_letters.push((env.control_topic.clone(), "malformed_json".to_owned()));
        }
        let mut run = env.spawn("run", &["run", "--batch-max-wait-ms", "100"]);
        let truth = fleet.truth.clone();
        let traffic_dead = dead_letters
            .iter()
            .filter(|(t, _)| *t == env.traffic_topic)
            .count() as u64;
        env.wait_for_count(
            &format!("SELECT count() FROM {}.usage_events", env.database),
            truth.traffic_events + traffic_dead,
            Duration::from_secs(180),
            &mut run,
        )
        .await;
        env.wait_for_count(
            &format!("SELECT count() FROM {}.control_events", env.database),
            truth.control_events + extra_control.len() as u64,
            Duration::from_secs(60),
            &mut run,
        )
        .await;
        env.wait_for_count(
            &format!("SELECT count() FROM {}.dead_letters FINAL", env.database),
            dead_letters.len() as u64,
            Duration::from_secs(60),
            &mut run,
        )
        .await;
        let ch = Ch {
            http: reqwest::Client::new(),
            url: env.clickhouse_url.clone(),
            database: env.database.clone(),
        };
        restate_some_rows(&ch).await;

        let plan = env.log_dir.join("plan.toml");
        std::fs::write(
            &plan,
            format!(
                "name = \"dashboards\"\n\
                 [metrics.bytes_out]\nincluded = {}\nunit = 1000000000\nprice_per_unit = 0.1\n\
                 [metrics.http_requests]\nincluded = {}\nprice_per_unit = 0.001\n\
                 [metrics.tcp_connections]\nincluded = {}\nprice_per_unit = 0.001\n\
                 [metrics.active_endpoint_hours]\nincluded = {}\nprice_per_unit = 0.02\n",
                quotas.data_out_gb * 1e9,
                quotas.requests,
                quotas.tcp_connections,
                quotas.endpoint_hours
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let mut serve = env.spawn(
            "serve",
            &[
                "serve",
                "--listen",
                &listen,
                "--plan",
                plan.to_str().unwrap(),
            ],
        );
        let http = reqwest::Client::new();
        let api = format!("http://{listen}");
        let mut ready = false;
        for _ in 0..200 {
            serve.assert_running();
            if http.get(format!("{api}/healthz")).send().await.is_ok() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "serve never answered\n{}", serve.log_tail());
        Self {
            env,
            ch,
            truth,
            fleet,
            run,
            serve,
            api,
            http,
            dead_letters,
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.api))
            .query(query)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(status.is_success(), "GET {path} {query:?}: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn window(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.truth.window_start, self.truth.window_end)
    }

    fn window_query(&self) -> [(&'static str, String); 2] {
        [
            ("from", self.truth.window_start.to_rfc3339()),
            ("to", self.truth.window_end.to_rfc3339()),
        ]
    }

    async fn stop(mut self) {
        assert!(
            self.run.terminate(Duration::from_secs(30)).success(),
            "run exited badly\n{}",
            self.run.log_tail()
        );
        assert!(
            self.serve.terminate(Duration::from_secs(30)).success(),
            "serve exited badly"
        );
        self.env.drop_database().await;
        support::delete_topics(
            &self.env.brokers,
            &[
                &self.env.control_topic,
                &self.env.traffic_topic,
                &self.env.dead_letter_topic,
            ],
        )
        .await;
    }

    /// Active endpoint hours per owner, computed here from the stored rows (the truth has no
    /// endpoint ids): (endpoint, UTC hour) pairs of attributed rows whose bytes out net above 0.
    async fn endpoint_hours(&self) -> BTreeMap<String, u64> {
        let rows = self
            .ch
            .query(
                "SELECT owner_id, endpoint_id, toUInt32(toStartOfHour(event_time)) AS hour, \
                 toInt64(bytes_out) AS out_b, toInt64(sign) AS s FROM usage_events \
                 WHERE status = 'attributed' AND endpoint_id != ''",
            )
            .await;
        let mut net: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
        for r in rows.rows() {
            *net.entry((r.str("owner_id"), r.str("endpoint_id"), r.i64("hour")))
                .or_default() += r.i64("out_b") * r.i64("s");
        }
        let mut out = BTreeMap::new();
        for ((owner, _, _), value) in net {
            if value > 0 {
                *out.entry(owner).or_default() += 1;
            }
        }
        out
    }
}

/// Restates about one row in seven: a -1 copy and a +1 copy of it, as `botmeter reattribute`
/// writes them. The totals do not change; a query that forgets `sign` counts those rows thrice.
async fn restate_some_rows(ch: &Ch) {
    let columns = ch
        .query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'usage_events'")
        .await;
    let names: Vec<String> = columns.rows().map(|r| r.str("name")).collect();
    assert!(names.iter().any(|n| n == "sign"));
    for sign in ["-1", "1"] {
        let select: Vec<String> = names
            .iter()
            .map(|n| {
                if n == "sign" {
                    format!("toInt8({sign})")
                } else {
                    n.clone()
                }
            })
            .collect();
        let sql = format!(
            "INSERT INTO usage_events ({}) SELECT {} FROM usage_events \
             WHERE sign = 1 AND status != 'dead_letter' AND cityHash64(event_id) % 7 = 0",
            names.join(", "),
            select.join(", ")
        );
        let response = ch
            .http
            .post(&ch.url)
            .query(&[("database", ch.database.as_str())])
            .body(sql)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }
    let restated = ch
        .query("SELECT count() AS n FROM usage_events WHERE sign = -1")
        .await;
    assert!(restated.single().u64("n") > 10, "some rows are restated");
}

// --- Ground-truth helpers ------------------------------------------------------------------------

fn metric(usage: &Usage, name: &str) -> u64 {
    match name {
        "bytes_in" => usage.bytes_in,
        "bytes_out" => usage.bytes_out,
        "http_requests" => usage.http_requests,
        "tcp_connections" => usage.tcp_connections,
        other => panic!("metric {other}"),
    }
}

/// The panel column holding each truth metric.
const METRIC_COLUMNS: [(&str, &str); 4] = [
    ("bytes_out", "data_out"),
    ("bytes_in", "data_in"),
    ("http_requests", "requests"),
    ("tcp_connections", "tcp_conns"),
];

fn total_attributed(truth: &GroundTruth) -> Usage {
    let mut total = Usage::default();
    for owner in truth.owners.values() {
        total.add(&owner.usage);
    }
    total
}

fn total_unattributed(truth: &GroundTruth) -> Usage {
    let mut total = Usage::default();
    for usage in truth.unattributed.values() {
        total.add(usage);
    }
    total
}

/// Owners ranked as the dashboards rank them: data out descending, then id.
fn ranked_owners(truth: &GroundTruth) -> Vec<String> {
    let mut owners: Vec<(&String, u64)> = truth
        .owners
        .iter()
        .filter(|(_, o)| o.usage != Usage::default())
        .map(|(id, o)| (id, o.usage.bytes_out))
        .collect();
    owners.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    owners.into_iter().map(|(id, _)| id.clone()).collect()
}

fn hour_start(key: &str) -> i64 {
    DateTime::parse_from_rfc3339(key).unwrap().timestamp()
}

/// Per owner, per UTC day (Unix seconds of its start), attributed usage.
fn daily(truth: &GroundTruth) -> BTreeMap<String, BTreeMap<i64, Usage>> {
    let mut out: BTreeMap<String, BTreeMap<i64, Usage>> = BTreeMap::new();
    for (owner, hours) in &truth.hourly {
        for (hour, usage) in hours {
            let day = hour_start(hour) / 86_400 * 86_400;
            out.entry(owner.clone())
                .or_default()
                .entry(day)
                .or_default()
                .add(usage);
        }
    }
    out
}

fn assert_close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: got {got}, want {want}"
    );
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

// --- The dashboards' JSON, without services ------------------------------------------------------

#[test]
fn dashboards_follow_the_plugin_query_model() {
    let dashboards = load_dashboards();
    let uids: BTreeSet<&str> = dashboards.iter().map(|d| d.uid.as_str()).collect();
    assert_eq!(uids.len(), dashboards.len(), "unique uids");
    for wanted in [
        "botmeter-overview",
        "botmeter-owner",
        "botmeter-overage",
        "botmeter-anomalies",
    ] {
        assert!(uids.contains(wanted), "{wanted} is shipped");
    }
    let ds = json!({"type": "grafana-clickhouse-datasource", "uid": "${datasource}"});
    for d in &dashboards {
        let vars = d.variables();
        let datasource = vars
            .iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{}: a datasource variable", d.file));
        assert_eq!(datasource["name"], "datasource", "{}", d.file);
        assert_eq!(
            datasource["query"], "grafana-clickhouse-datasource",
            "{}",
            d.file
        );
        let names: BTreeSet<&str> = vars.iter().map(|v| v["name"].as_str().unwrap()).collect();
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(
                v["datasource"], ds,
                "{}: variable {} reads through ${{datasource}}",
                d.file, v["name"]
            );
        }
        let titles: BTreeSet<&str> = d.panels.iter().map(|p| p.title.as_str()).collect();
        assert_eq!(
            titles.len(),
            d.panels.len(),
            "{}: unique panel titles",
            d.file
        );
        for p in d.panels.iter().filter(|p| p.kind != "text") {
            assert_eq!(
                p.json["datasource"], ds,
                "{}: {}: panel datasource",
                d.file, p.title
            );
            assert_eq!(p.targets.len(), 1, "{}: {}", d.file, p.title);
            let t = &p.json["targets"][0];
            assert_eq!(
                t["datasource"], ds,
                "{}: {}: target datasource",
                d.file, p.title
            );
            assert_eq!(t["editorType"], "sql", "{}: {}", d.file, p.title);
            let target = &p.targets[0];
            // sqlds: 0 = time series (long frames widened by their string columns), 1 = table.
            let (format, query_type) = if p.kind == "timeseries" {
                (0, "timeseries")
            } else {
                (1, "table")
            };
            assert_eq!(
                (target.format, target.query_type.as_str()),
                (format, query_type),
                "{}: {}",
                d.file,
                p.title
            );
            // 18.16 has no toStartOfInterval, which $__timeInterval expands to.
            assert!(
                !target.raw_sql.contains("$__timeInterval")
                    && !target.raw_sql.contains("toStartOfInterval"),
                "{}: {}",
                d.file,
                p.title
            );
            // Every metric is summed times sign.
            for column in ["bytes_out", "bytes_in", "http_requests", "tcp_connections"] {
                let mut rest = target.raw_sql.as_str();
                while let Some(at) = rest.find(&format!("sum({column}")) {
                    let after = &rest[at + 4 + column.len()..];
                    assert!(
                        after.starts_with(" * sign)"),
                        "{}: {}: sum({column} without * sign",
                        d.file,
                        p.title
                    );
                    rest = after;
                }
            }
            assert!(
                !target.raw_sql.contains("count()") || target.raw_sql.contains("dead_letters"),
                "{}: {}: count rows as sum(sign)",
                d.file,
                p.title
            );
            // Every ${variable} exists in the dashboard.
            let mut rest = target.raw_sql.as_str();
            while let Some(at) = rest.find("${") {
                let body = &rest[at + 2..];
                let end = body.find('}').unwrap();
                let name = body[..end].split(':').next().unwrap();
                assert!(
                    names.contains(name),
                    "{}: {}: unknown variable {name}",
                    d.file,
                    p.title
                );
                rest = &body[end..];
            }
            // And the SQL expands with nothing left over.
            let mut expansion = Expansion::new(Utc::now(), Utc::now(), 60);
            for name in &names {
                expansion = expansion.var(name, &["x"]);
            }
            let sql = expansion.expand(&target.raw_sql, Flavor::Plugin);
            assert!(!sql.contains('$'), "{}: {}: {sql}", d.file, p.title);
        }
    }
}

#[test]
fn macros_expand_like_the_plugin() {
    // The plugin's own test cases (pkg/macros/macros_test.go), seconds precision.
    let (from, to) = (1_415_792_726, 1_447_328_726);
    assert_eq!(
        expand_macros("$__timeFilter(time)", from, to, 20, Flavor::Plugin),
        "time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"
    );
    assert_eq!(
        expand_macros(
            "select $__fromTime, $__toTime",
            from,
            to,
            20,
            Flavor::Plugin
        ),
        "select toDateTime(1415792726), toDateTime(1447328726)"
    );
    assert_eq!(
        expand_macros("$__timeInterval(col)", from, to, 20, Flavor::Plugin),
        "toStartOfInterval(toDateTime(col), INTERVAL 20 second)"
    );
    assert_eq!(
        expand_macros(
            "INTERVAL $__interval_s second",
            from,
            to,
            20,
            Flavor::Plugin
        ),
        "INTERVAL 20 second"
    );
    assert_eq!(
        expand_macros("$__interval_s", from, to, 0, Flavor::Plugin),
        "1",
        "at least one second"
    );
    assert_eq!(
        expand_macros("$__timeInterval(col)", from, to, 20, Flavor::ClickHouse1816),
        "toDateTime(intDiv(toUInt32(toDateTime(col)), 20) * 20)"
    );
    let vars: BTreeMap<String, Vec<String>> = [
        ("owner".to_owned(), vec!["bot_o'x".to_owned()]),
        ("kind".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
    ]
    .into();
    assert_eq!(
        interpolate(
            "x = ${owner:singlequote} AND k IN (${kind:singlequote}) LIMIT ${kind}",
            &vars
        ),
        "x = 'bot_o\\'x' AND k IN ('a','b') LIMIT a,b"
    );
    assert_eq!(interpolate("$__timeFilter(t)", &vars), "$__timeFilter(t)");
}

#[test]
fn every_query_documents_its_parameters() {
    for (file, sql) in load_queries() {
        assert!(
            sql.starts_with("-- "),
            "{file}: starts with a header comment"
        );
        let header: String = sql
            .lines()
            .take_while(|l| l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            header.contains("Parameters") && header.contains("Run:") && header.contains("18.16"),
            "{file}: header\n{header}"
        );
        let params: Vec<&str> = sql
            .lines()
            .filter_map(|l| {
                l.split_once("--")
                    .filter(|(_, c)| c.trim_start().starts_with("param"))
                    .map(|(code, _)| code)
            })
            .map(|code| {
                code.trim()
                    .trim_end_matches(',')
                    .rsplit(" AS ")
                    .next()
                    .unwrap()
                    .trim()
            })
            .collect();
        assert!(!params.is_empty(), "{file}: parameters marked `-- param`");
        for p in &params {
            assert!(header.contains(p), "{file}: the header explains {p}");
        }
        assert!(
            sql.trim_end().ends_with(';'),
            "{file}: ends with ; for pasting"
        );
        let readme = std::fs::read_to_string(root().join("queries/README.md")).unwrap();
        assert!(readme.contains(&file), "queries/README.md lists {file}");
    }
}

// --- On a clean fleet ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_queries_agree_with_the_truth_and_the_api_on_a_clean_fleet() {
    let config = FleetConfig {
        seed: 31,
        bot_users: 4,
        users: 2,
        traffic_events: 4_000,
        duration_hours: 72,
        ..FleetConfig::default()
    };
    let fleet = generate(&config);
    let attributed = total_attributed(&fleet.truth);
    let quotas = Quotas {
        data_out_gb: (gb(attributed.bytes_out) / 2.0 * 1000.0).round() / 1000.0,
        requests: (attributed.http_requests / 2) as f64,
        tcp_connections: (attributed.tcp_connections * 10) as f64,
        endpoint_hours: 100.0,
    };
    let world = World::start("dash_clean", fleet, quotas, Vec::new(), false).await;
    let truth = &world.truth;
    let dashboards = load_dashboards();
    let by_uid = |uid: &str| dashboards.iter().find(|d| d.uid == uid).unwrap();
    let (from, to) = world.window();
    let endpoint_hours = world.endpoint_hours().await;

    // The oracle of active endpoint hours agrees with the truth: in a clean fleet an endpoint is
    // its address, and every traffic message's key is its endpoint's address.
    let mut by_address: BTreeMap<String, BTreeSet<(String, i64)>> = BTreeMap::new();
    for message in &world.fleet.traffic {
        let event_id = serde_json::from_slice::<Value>(&message.payload).unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let expected = &truth.events[&event_id];
        if expected.usage.bytes_out > 0 {
            let hour = message.event_time.timestamp() / 3600 * 3600;
            by_address
                .entry(expected.owner_id.clone().unwrap())
                .or_default()
                .insert((message.key.clone(), hour));
        }
    }
    let by_address: BTreeMap<String, u64> = by_address
        .into_iter()
        .map(|(o, s)| (o, s.len() as u64))
        .collect();
    assert_eq!(
        endpoint_hours, by_address,
        "active endpoint hours per owner"
    );
    let total_endpoint_hours: u64 = endpoint_hours.values().sum();

    check_overview(&world, by_uid("botmeter-overview"), &endpoint_hours).await;

    // Owner drill-down: the bot user with the most data out.
    let ranked = ranked_owners(truth);
    let top_bot = ranked
        .iter()
        .find(|o| o.starts_with("bot_"))
        .unwrap()
        .clone();
    let owner_dash = by_uid("botmeter-owner");
    let results = run_dashboard(
        &world.ch,
        owner_dash,
        &Expansion::new(from, to, 3600).var("owner", &[&top_bot]),
    )
    .await;
    let listed: BTreeSet<String> = results["variable owner"]
        .rows()
        .map(|r| r.str("owner_id"))
        .collect();
    for owner in truth.owners.keys() {
        assert!(listed.contains(owner), "the owner variable lists {owner}");
    }
    check_owner(&world, &results, &top_bot, &endpoint_hours).await;
    let info = results["Owner"].single();
    assert_eq!(info.str("state"), "active");
    assert_eq!(info.u64("credentials_revoked"), 0);
    assert_eq!(results["Flagged usage"].data.len(), 0);
    assert_eq!(results["Control-plane anomalies"].data.len(), 0);
    // A user's drill-down too: the user with the most data out.
    let top_user = ranked
        .iter()
        .find(|o| o.starts_with("usr_"))
        .unwrap()
        .clone();
    let results = run_dashboard(
        &world.ch,
        owner_dash,
        &Expansion::new(from, to, 3600).var("owner", &[&top_user]),
    )
    .await;
    check_owner(&world, &results, &top_user, &endpoint_hours).await;
    assert!(
        results["Owner"].single().str("name").contains('@'),
        "a user's name is its email"
    );

    check_overage(
        &world,
        by_uid("botmeter-overage"),
        quotas,
        total_endpoint_hours,
    )
    .await;

    // Nothing anomalous in a clean fleet.
    let results = run_dashboard(
        &world.ch,
        by_uid("botmeter-anomalies"),
        &Expansion::new(from, Utc::now() + chrono::Duration::hours(1), 3600),
    )
    .await;
    let stat = results["Flagged and unattributed"].single();
    for column in [
        "flagged_events",
        "flagged_data_out",
        "unattributed_events",
        "unattributed_data_out",
    ] {
        assert_eq!(stat.i64(column), 0, "{column}");
    }
    assert_eq!(results["Dead letters"].single().u64("dead_letters"), 0);
    for panel in [
        "Flagged data out by flag",
        "Unattributed data out by reason",
        "Flagged usage by flag and owner",
        "Unattributed by reason and hostname",
        "Dead letters by reason",
        "Control-plane anomalies",
    ] {
        assert_eq!(results[panel].data.len(), 0, "{panel}");
    }

    // Investigation queries.
    let queries = load_queries();
    let month = [
        ("month_start", "toDate('2026-01-01')"),
        ("until", &datetime_literal(to) as &str),
    ];
    let totals = world
        .ch
        .query(&with_params(&queries["01_month_totals.sql"], &month))
        .await;
    assert_eq!(totals.data.len(), 1, "only attributed rows in the span");
    let row = totals.single();
    assert_eq!(row.str("status"), "attributed");
    assert_eq!(row.i64("events"), truth.traffic_events as i64);
    assert_close(
        row.f64("data_out_gb"),
        gb(attributed.bytes_out),
        0.0005,
        "data_out_gb",
    );
    assert_eq!(row.u64("requests"), attributed.http_requests);
    assert_eq!(row.u64("tcp_conns"), attributed.tcp_connections);
    assert_eq!(row.u64("endpoint_hours"), total_endpoint_hours);
    for column in [
        "prev_events",
        "prev_requests",
        "prev_tcp_conns",
        "prev_endpoint_hours",
    ] {
        assert_eq!(row.i64(column), 0, "{column}: nothing in December");
    }

    let top = world
        .ch
        .query(&with_params(&queries["02_top_owners_month.sql"], &month))
        .await;
    let owners_in_order: Vec<String> = top.rows().map(|r| r.str("owner")).collect();
    assert_eq!(owners_in_order, ranked, "ranked by data out");
    for r in top.rows() {
        let owner = &truth.owners[&r.str("owner")];
        assert_close(
            r.f64("data_out_gb"),
            gb(owner.usage.bytes_out),
            0.0005,
            "data_out_gb",
        );
        assert_close(
            r.f64("share_of_data_out"),
            owner.usage.bytes_out as f64 / attributed.bytes_out as f64,
            0.00005,
            "share",
        );
        assert_close(
            r.f64("share_of_increase"),
            owner.usage.bytes_out as f64 / attributed.bytes_out as f64,
            0.00005,
            "share of increase",
        );
        assert_eq!(r.u64("requests"), owner.usage.http_requests);
        assert_eq!(r.u64("tcp_conns"), owner.usage.tcp_connections);
        assert_eq!(r.f64("prev_data_out_gb"), 0.0);
    }

    // Credentials and endpoints of the top bot: per credential, the API's groups.
    let sql = with_params(
        &queries["03_owner_credentials_endpoints.sql"],
        &[
            ("wanted_owner", &format!("'{top_bot}'")),
            ("from_time", &datetime_literal(from)),
            ("to_time", &datetime_literal(to)),
        ],
    );
    let pairs = world.ch.query(&sql).await;
    let mut query_params: Vec<(&str, String)> = world.window_query().to_vec();
    query_params.push(("group_by", "endpoint".to_owned()));
    let api = world
        .api(
            &format!("/v1/owners/{top_bot}/usage"),
            &query_params
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    let groups = api["groups"].as_array().unwrap();
    assert_eq!(
        pairs.data.len(),
        groups.len(),
        "one row per endpoint of the top bot"
    );
    for g in groups {
        let key = g["key"].as_str().unwrap();
        let r = pairs
            .rows()
            .find(|r| r.str("endpoint") == key)
            .unwrap_or_else(|| panic!("endpoint {key}"));
        assert_close(
            r.f64("data_out_gb"),
            gb(g["totals"]["bytes_out"].as_u64().unwrap()),
            0.0005,
            key,
        );
        assert_eq!(
            r.u64("requests"),
            g["totals"]["http_requests"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(
            r.u64("tcp_conns"),
            g["totals"]["tcp_connections"].as_u64().unwrap(),
            "{key}"
        );
        assert_eq!(
            r.u64("endpoint_hours"),
            g["totals"]["active_endpoint_hours"].as_u64().unwrap(),
            "{key}"
        );
    }
    assert_eq!(
        pairs.sum_where("requests", |_| true) as u64,
        truth.owners[&top_bot].usage.http_requests
    );

    // Day-over-day: every owner-day that grew by half and by 10 MB or 10 requests, exactly.
    let sql = with_params(
        &queries["04_daily_spikes.sql"],
        &[
            ("first_day", "toDate('2026-01-02')"),
            ("last_day", "toDate('2026-01-03')"),
            ("spike_ratio", "1.5"),
            ("min_increase_gb", "0.01"),
            ("min_increase_requests", "10"),
        ],
    );
    let spikes = world.ch.query(&sql).await;
    let mut expected = BTreeSet::new();
    for (owner, days) in daily(truth) {
        for (&day, usage) in &days {
            if !(day >= hour_start("2026-01-02T00:00:00Z")
                && day <= hour_start("2026-01-03T00:00:00Z"))
            {
                continue;
            }
            let prev = days.get(&(day - 86_400)).copied().unwrap_or_default();
            let (out, pout) = (usage.bytes_out as f64, prev.bytes_out as f64);
            let (req, preq) = (usage.http_requests as f64, prev.http_requests as f64);
            if (out >= 1.5 * pout && out - pout >= 0.01 * 1e9)
                || (req >= 1.5 * preq && req - preq >= 10.0)
            {
                expected.insert((owner.clone(), day));
            }
        }
    }
    let got: BTreeSet<(String, i64)> = spikes
        .rows()
        .map(|r| (r.str("owner"), day_of(&r.str("day"))))
        .collect();
    assert_eq!(got, expected, "spike days");
    assert!(!expected.is_empty(), "the thresholds select some days");
    let per_day = daily(truth);
    for r in spikes.rows() {
        let days = &per_day[&r.str("owner")];
        let day = day_of(&r.str("day"));
        assert_close(
            r.f64("data_out_gb"),
            gb(days[&day].bytes_out),
            0.0005,
            "spike data out",
        );
        assert_close(
            r.f64("prev_day_data_out_gb"),
            gb(days.get(&(day - 86_400)).map_or(0, |u| u.bytes_out)),
            0.0005,
            "previous day",
        );
        assert_eq!(r.u64("requests"), days[&day].http_requests);
        assert_eq!(
            r.u64("prev_day_requests"),
            days.get(&(day - 86_400)).map_or(0, |u| u.http_requests)
        );
    }
    for file in [
        "05_revoked_or_acl_violating_usage.sql",
        "06_unattributed_by_hostname.sql",
    ] {
        let result = world
            .ch
            .query(&with_params(
                &queries[file],
                &[
                    ("from_time", &datetime_literal(from)),
                    ("to_time", &datetime_literal(to)),
                ],
            ))
            .await;
        assert_eq!(result.data.len(), 0, "{file}: nothing in a clean fleet");
    }
    world.stop().await;
}

fn day_of(text: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

/// The overview against the truth and `/v1/usage/top`, hourly and daily, for all owners and for
/// bot users only.
async fn check_overview(
    world: &World,
    dashboard: &Dashboard,
    endpoint_hours: &BTreeMap<String, u64>,
) {
    let truth = &world.truth;
    let (from, to) = world.window();
    let ranked = ranked_owners(truth);
    let attributed = total_attributed(truth);
    let unattributed = total_unattributed(truth);
    let top_n = 3;
    for interval in [3600, 86_400] {
        let expansion = Expansion::new(from, to, interval)
            .var("owner_kind", &["bot_user", "user"])
            .var("top_n", &["3"]);
        let results = run_dashboard(&world.ch, dashboard, &expansion).await;
        let usage = results["Usage in range"].single();
        for (name, column) in METRIC_COLUMNS {
            assert_eq!(
                usage.u64(column),
                metric(&attributed, name),
                "Usage in range: {column}"
            );
        }
        assert_eq!(
            usage.u64("endpoint_hours"),
            endpoint_hours.values().sum::<u64>()
        );
        let not = results["Not attributed"].single();
        assert_eq!(not.u64("unattributed_data_out"), unattributed.bytes_out);
        assert_close(
            not.f64("unattributed_share"),
            unattributed.bytes_out as f64 / (attributed.bytes_out + unattributed.bytes_out) as f64,
            1e-9,
            "unattributed share",
        );

        // The ranked series: the top owners each, the rest as 'other owners', bucket by bucket.
        for (name, column) in METRIC_COLUMNS {
            let title = match column {
                "data_out" => "Data transfer out per owner",
                "data_in" => "Data transfer in per owner",
                "requests" => "HTTP requests per owner",
                _ => "TCP connections per owner",
            };
            let series = &results[title];
            let mut expected: BTreeMap<(i64, String), u64> = BTreeMap::new();
            for (owner, hours) in &truth.hourly {
                let label = if ranked[..top_n].contains(owner) {
                    owner.clone()
                } else {
                    "other owners".to_owned()
                };
                for (hour, u) in hours {
                    *expected
                        .entry((hour_start(hour) / interval * interval, label.clone()))
                        .or_default() += metric(u, name);
                }
            }
            let got: BTreeMap<(i64, String), u64> = series
                .rows()
                .map(|r| ((r.time("time"), r.str("owner")), r.u64(column)))
                .filter(|(_, v)| *v != 0)
                .collect();
            expected.retain(|_, v| *v != 0);
            assert_eq!(got, expected, "{title}, interval {interval}");
        }
        let series = &results["Active endpoint hours per owner"];
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for (owner, n) in endpoint_hours {
            let label = if ranked[..top_n].contains(owner) {
                owner.clone()
            } else {
                "other owners".to_owned()
            };
            *want.entry(label).or_default() += n;
        }
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for r in series.rows() {
            *got.entry(r.str("owner")).or_default() += r.u64("endpoint_hours");
        }
        got.retain(|_, n| *n != 0);
        assert_eq!(
            got, want,
            "active endpoint hours per owner, interval {interval}"
        );

        // The top owners table: the truth, and /v1/usage/top.
        let table = &results["Top owners"];
        assert_eq!(
            table.rows().map(|r| r.str("owner")).collect::<Vec<_>>(),
            ranked
        );
        let top = world
            .api(
                "/v1/usage/top",
                &[
                    ("metric", "bytes_out"),
                    ("limit", "1000"),
                    ("from", &from.to_rfc3339()),
                    ("to", &to.to_rfc3339()),
                ],
            )
            .await;
        let api_owners = top["owners"].as_array().unwrap();
        assert_eq!(api_owners.len(), table.data.len());
        for (r, api) in table.rows().zip(api_owners) {
            let owner = r.str("owner");
            assert_eq!(api["owner_id"], owner.as_str(), "same ranking as the API");
            let o = &truth.owners[&owner];
            for (name, column) in METRIC_COLUMNS {
                assert_eq!(r.u64(column), metric(&o.usage, name), "{owner} {column}");
                assert_eq!(
                    r.u64(column),
                    api["usage"][name].as_u64().unwrap(),
                    "{owner} {column} vs API"
                );
            }
            assert_eq!(
                r.u64("endpoint_hours"),
                endpoint_hours[&owner],
                "{owner} endpoint hours"
            );
            assert_eq!(
                r.u64("endpoint_hours"),
                api["usage"]["active_endpoint_hours"].as_u64().unwrap(),
                "{owner} endpoint hours vs API"
            );
            assert_eq!(r.str("owner_type"), api["owner_kind"].as_str().unwrap());
            assert_close(
                r.f64("share_of_data_out"),
                o.usage.bytes_out as f64 / attributed.bytes_out as f64,
                1e-9,
                "share",
            );
            let flagged: u64 = truth
                .events
                .values()
                .filter(|e| e.owner_id.as_deref() == Some(&owner) && !e.flags.is_empty())
                .map(|e| e.usage.bytes_out)
                .sum();
            assert_eq!(
                r.u64("flagged_data_out"),
                flagged,
                "{owner} flagged data out"
            );
            assert!(!r.str("name").is_empty(), "{owner} has a name");
        }
    }

    // Bot users only.
    let expansion = Expansion::new(from, to, 3600)
        .var("owner_kind", &["bot_user"])
        .var("top_n", &["50"]);
    let results = run_dashboard(&world.ch, dashboard, &expansion).await;
    let bots: u64 = truth
        .owners
        .iter()
        .filter(|(id, _)| id.starts_with("bot_"))
        .map(|(_, o)| o.usage.bytes_out)
        .sum();
    assert_eq!(results["Usage in range"].single().u64("data_out"), bots);
    assert!(results["Top owners"]
        .rows()
        .all(|r| r.str("owner_type") == "bot_user"));
    assert_eq!(
        results["Data transfer out per owner"]
            .sum_where("data_out", |r| r.str("owner") == "other owners"),
        0.0,
        "top 50 holds every bot"
    );
}

/// One owner's drill-down against the truth and `/v1/owners/{id}/usage`.
async fn check_owner(
    world: &World,
    results: &PanelResults,
    owner: &str,
    endpoint_hours: &BTreeMap<String, u64>,
) {
    let truth = &world.truth;
    let o = &truth.owners[owner];
    let info = results["Owner"].single();
    assert_eq!(info.str("owner"), owner);
    assert_eq!(info.str("owner_type"), o.owner_kind.as_str());
    assert!(!info.str("name").is_empty());
    assert_eq!(
        info.u64("credentials"),
        o.credentials,
        "{owner}: credentials"
    );

    let window = world.window_query();
    let mut params: Vec<(&str, &str)> = window.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = world
        .api(&format!("/v1/owners/{owner}/usage"), &params)
        .await;
    let usage = results["Usage in range"].single();
    for (name, column) in METRIC_COLUMNS {
        assert_eq!(
            usage.u64(column),
            metric(&o.usage, name),
            "{owner} {column}"
        );
        assert_eq!(
            usage.u64(column),
            api["totals"][name].as_u64().unwrap(),
            "{owner} {column} vs API"
        );
    }
    assert_eq!(
        usage.u64("endpoint_hours"),
        endpoint_hours.get(owner).copied().unwrap_or(0)
    );
    assert_eq!(
        usage.u64("endpoint_hours"),
        api["totals"]["active_endpoint_hours"].as_u64().unwrap()
    );
    let flagged: u64 = truth
        .events
        .values()
        .filter(|e| e.owner_id.as_deref() == Some(owner) && !e.flags.is_empty())
        .map(|e| e.usage.bytes_out)
        .sum();
    assert_eq!(usage.u64("flagged_data_out"), flagged);

    // The series, hour by hour: the truth and the API's buckets.
    let hourly = truth.hourly.get(owner).cloned().unwrap_or_default();
    for (title, columns) in [
        ("Data transfer", &METRIC_COLUMNS[..2]),
        ("Requests and TCP connections", &METRIC_COLUMNS[2..]),
    ] {
        let series = &results[title];
        for (name, column) in columns {
            let got: BTreeMap<i64, u64> = series
                .rows()
                .map(|r| (r.time("time"), r.u64(column)))
                .filter(|(_, v)| *v != 0)
                .collect();
            let want: BTreeMap<i64, u64> = hourly
                .iter()
                .map(|(h, u)| (hour_start(h), metric(u, name)))
                .filter(|(_, v)| *v != 0)
                .collect();
            assert_eq!(got, want, "{owner} {title} {column}");
            let from_api: BTreeMap<i64, u64> = api["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    (
                        DateTime::parse_from_rfc3339(b["start"].as_str().unwrap())
                            .unwrap()
                            .timestamp(),
                        b[*name].as_u64().unwrap(),
                    )
                })
                .filter(|(_, v)| *v != 0)
                .collect();
            assert_eq!(got, from_api, "{owner} {title} {column} vs API");
        }
    }

    // Credentials and endpoints: the API's groups.
    for (title, group_by, key_column) in [
        ("Credentials", "credential", "credential"),
        ("Endpoints", "endpoint", "endpoint"),
    ] {
        params.push(("group_by", group_by));
        let api = world
            .api(&format!("/v1/owners/{owner}/usage"), &params)
            .await;
        params.pop();
        let table = &results[title];
        for g in api["groups"].as_array().unwrap() {
            let key = g["key"].as_str().unwrap();
            let r = table
                .rows()
                .find(|r| r.str(key_column) == key)
                .unwrap_or_else(|| panic!("{owner}: {title}: {key}"));
            for (name, column) in METRIC_COLUMNS {
                assert_eq!(
                    r.u64(column),
                    g["totals"][name].as_u64().unwrap(),
                    "{owner}: {title}: {key}: {column}"
                );
            }
            assert_eq!(
                r.u64("endpoint_hours"),
                g["totals"]["active_endpoint_hours"].as_u64().unwrap(),
                "{owner}: {title}: {key}"
            );
            if title == "Credentials" {
                assert_eq!(
                    r.u64("endpoints"),
                    g["totals"]["endpoints"].as_u64().unwrap(),
                    "{owner}: {key}: endpoints"
                );
            }
        }
        let with_usage = table
            .rows()
            .filter(|r| r.u64("data_out") + r.u64("requests") + r.u64("tcp_conns") > 0)
            .count();
        assert_eq!(
            with_usage,
            api["groups"].as_array().unwrap().len(),
            "{owner}: {title} with usage"
        );
        assert_eq!(
            table.sum_where("data_out", |_| true) as u64,
            o.usage.bytes_out,
            "{owner}: {title}: data out adds up"
        );
    }
    assert_eq!(
        results["Credentials"].data.len() as u64,
        o.credentials,
        "{owner}: every credential is listed"
    );
    assert!(results["Credentials"]
        .rows()
        .all(|r| !r.str("created_at").is_empty()));

    // Credential hygiene: the API's report for this owner as of the end of the range, row for row,
    // and the flagged events of the truth.
    let at = world.window().1.to_rfc3339();
    let api = world
        .api(
            "/v1/credentials",
            &[("owner_id", owner), ("at", &at), ("deleted", "true")],
        )
        .await;
    let api = api["credentials"].as_array().unwrap();
    let hygiene = &results["Credential hygiene"];
    assert_eq!(hygiene.data.len(), api.len(), "{owner}: credential hygiene");
    assert_eq!(
        hygiene.data.len() as u64,
        o.credentials,
        "{owner}: credential hygiene"
    );
    for (r, c) in hygiene.rows().zip(api) {
        let id = r.str("credential");
        assert_eq!(id, c["credential_id"].as_str().unwrap(), "{owner}: order");
        assert_eq!(r.str("metadata"), c["metadata"].as_str().unwrap(), "{id}");
        assert_eq!(
            r.str("description"),
            c["description"].as_str().unwrap(),
            "{id}"
        );
        for column in [
            "age_days",
            "unused_days",
            "acl_violations",
            "used_after_owner_deactivated",
        ] {
            assert_eq!(r.i64(column), c[column].as_i64().unwrap(), "{id}: {column}");
        }
        for column in ["rotation_due", "no_acl", "wildcard_acl"] {
            assert_eq!(
                r.u64(column) == 1,
                c[column].as_bool().unwrap(),
                "{id}: {column}"
            );
        }
    }
    for (flag, column) in [
        ("acl_violation", "acl_violations"),
        ("owner_inactive", "used_after_owner_deactivated"),
    ] {
        let want = truth
            .events
            .values()
            .filter(|e| e.owner_id.as_deref() == Some(owner) && e.flags.iter().any(|f| f == flag))
            .count();
        assert_eq!(
            hygiene.sum_where(column, |_| true) as usize,
            want,
            "{owner}: {column} against the truth"
        );
    }
    assert!(
        !results["Audit trail"].data.is_empty(),
        "{owner}: audit trail"
    );
}

/// The overage dashboard against `/v1/overage` (same quotas in the plan and the variables).
async fn check_overage(
    world: &World,
    dashboard: &Dashboard,
    quotas: Quotas,
    total_endpoint_hours: u64,
) {
    let truth = &world.truth;
    let (_, to) = world.window();
    let attributed = total_attributed(truth);
    let expansion = Expansion::new(to - chrono::Duration::hours(1), to, 3600)
        .var("quota_data_out_gb", &[&quotas.data_out_gb.to_string()])
        .var("quota_requests", &[&quotas.requests.to_string()])
        .var(
            "quota_tcp_connections",
            &[&quotas.tcp_connections.to_string()],
        )
        .var(
            "quota_endpoint_hours",
            &[&quotas.endpoint_hours.to_string()],
        );
    let results = run_dashboard(&world.ch, dashboard, &expansion).await;
    let month = format!("{:04}-{:02}", to.year(), to.month());
    let api = world.api("/v1/overage", &[("month", &month)]).await;
    let api_metric = |name: &str| {
        api["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == name)
            .unwrap()
            .clone()
    };

    let table = &results["Month to date vs quota"];
    let row = |label: &str| {
        table
            .rows()
            .find(|r| r.str("metric") == label)
            .unwrap_or_else(|| panic!("metric {label}"))
    };
    for (label, api_name, scale, want) in [
        (
            "data transfer out (GB)",
            "bytes_out",
            1e9,
            attributed.bytes_out as f64,
        ),
        (
            "HTTP requests",
            "http_requests",
            1.0,
            attributed.http_requests as f64,
        ),
        (
            "TCP connections",
            "tcp_connections",
            1.0,
            attributed.tcp_connections as f64,
        ),
        (
            "active endpoint hours",
            "active_endpoint_hours",
            1.0,
            total_endpoint_hours as f64,
        ),
    ] {
        let r = row(label);
        let m = api_metric(api_name);
        assert_close(r.f64("used") * scale, want, 1e-3, label);
        assert_close(
            r.f64("used") * scale,
            m["usage"].as_f64().unwrap(),
            1e-3,
            label,
        );
        assert_close(
            r.f64("quota") * scale,
            m["included"].as_f64().unwrap(),
            1e-3,
            label,
        );
        assert_close(
            r.f64("overage") * scale,
            m["overage"].as_f64().unwrap(),
            1e-3,
            label,
        );
        assert_close(
            r.f64("used_of_quota"),
            want / (m["included"].as_f64().unwrap()),
            1e-9,
            label,
        );
    }
    assert!(
        row("data transfer out (GB)").f64("overage") > 0.0
            && row("TCP connections").f64("overage") == 0.0,
        "the quotas make one metric go over and another not"
    );

    let not = results["Not attributed this month"].single();
    assert_close(
        not.f64("unattributed_data_out_gb"),
        gb(total_unattributed(truth).bytes_out),
        1e-9,
        "unattributed this month",
    );

    let cumulative = &results["Quota used, month to date"];
    let last = cumulative.rows().last().unwrap();
    assert_close(
        last.f64("data_out"),
        gb(attributed.bytes_out) / quotas.data_out_gb,
        1e-9,
        "cumulative data out",
    );
    assert_close(
        last.f64("requests"),
        attributed.http_requests as f64 / quotas.requests,
        1e-9,
        "cumulative requests",
    );
    assert_close(
        last.f64("tcp_conns"),
        attributed.tcp_connections as f64 / quotas.tcp_connections,
        1e-9,
        "cumulative connections",
    );
    assert_close(
        last.f64("endpoint_hours"),
        total_endpoint_hours as f64 / quotas.endpoint_hours,
        1e-9,
        "cumulative endpoint hours",
    );
    for column in ["data_out", "requests", "tcp_conns", "endpoint_hours"] {
        let values: Vec<f64> = cumulative.rows().map(|r| r.f64(column)).collect();
        assert!(
            values.windows(2).all(|w| w[0] <= w[1] + 1e-12),
            "{column} only grows"
        );
    }
    let hours: BTreeSet<&String> = truth.hourly.values().flat_map(|h| h.keys()).collect();
    assert_eq!(
        cumulative.data.len(),
        hours.len(),
        "one point per hour with usage"
    );

    let shares = &results["Each owner's share, month to date"];
    let api_owners = api["owners"].as_array().unwrap();
    // The API also lists owners with agent sessions but no traffic; every owner with traffic is here.
    let with_traffic = api_owners
        .iter()
        .filter(|o| {
            ["bytes_out", "http_requests", "tcp_connections"]
                .iter()
                .any(|m| o["usage"][*m].as_f64() > Some(0.0))
        })
        .count();
    assert_eq!(shares.data.len(), with_traffic);
    for r in shares.rows() {
        let owner = r.str("owner");
        let a = api_owners
            .iter()
            .find(|o| o["owner_id"] == owner.as_str())
            .unwrap_or_else(|| panic!("{owner} in /v1/overage"));
        for (column, share_column, overage_column, api_name, scale) in [
            (
                "data_out_gb",
                "share_data_out",
                "overage_data_out_gb",
                "bytes_out",
                1e9,
            ),
            (
                "requests",
                "share_requests",
                "overage_requests",
                "http_requests",
                1.0,
            ),
            (
                "tcp_conns",
                "share_tcp_conns",
                "overage_tcp_conns",
                "tcp_connections",
                1.0,
            ),
            (
                "endpoint_hours",
                "share_endpoint_hours",
                "overage_endpoint_hours",
                "active_endpoint_hours",
                1.0,
            ),
        ] {
            assert_close(
                r.f64(column) * scale,
                a["usage"][api_name].as_f64().unwrap(),
                1e-3,
                &format!("{owner} {column}"),
            );
            assert_close(
                r.f64(share_column),
                a["share"][api_name].as_f64().unwrap(),
                1e-9,
                &format!("{owner} {share_column}"),
            );
            let overage = api_metric(api_name)["overage"].as_f64().unwrap() / scale;
            assert_close(
                r.f64(overage_column),
                a["share"][api_name].as_f64().unwrap() * overage,
                1e-6,
                &format!("{owner} {overage_column}"),
            );
        }
        assert_eq!(r.str("owner_type"), a["owner_kind"].as_str().unwrap());
    }
    let share_sum = shares.sum_where("share_data_out", |_| true);
    assert_close(share_sum, 1.0, 1e-9, "shares add up");
}

// --- On a fleet with every anomaly ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_dashboard_and_queries_agree_with_the_truth_and_the_api() {
    let config = FleetConfig {
        seed: 23,
        traffic_events: 8_000,
        ..FleetConfig::with_anomalies()
    };
    let fleet = generate(&config);
    let truth = fleet.truth.clone();

    // Two control-plane anomalies: an update that tries to move an authtoken to another owner,
    // and an audit event whose principal acts with an API key of someone else.
    let payloads: Vec<Value> = fleet
        .control
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let created = payloads
        .iter()
        .find(|p| {
            p["event_type"] == "tunnel_credential_created.v0"
                && truth
                    .owners
                    .contains_key(p["object"]["owner_id"].as_str().unwrap())
        })
        .unwrap();
    let victim = created["object"]["owner_id"].as_str().unwrap().to_owned();
    let thief = truth
        .owners
        .keys()
        .find(|o| **o != victim && o.starts_with("bot_"))
        .unwrap()
        .clone();
    let mut steal = created.clone();
    steal["event_id"] = json!("ev_dash_owner_change");
    steal["event_type"] = json!("tunnel_credential_updated.v0");
    steal["event_timestamp"] =
        json!((truth.window_start + chrono::Duration::minutes(50)).to_rfc3339());
    steal["object"]["owner_id"] = json!(thief);
    let audit = payloads
        .iter()
        .find(|p| {
            p["principal"]["credential"]["id"]
                .as_str()
                .is_some_and(|k| k.starts_with("ak_"))
                && !p["event_type"].as_str().unwrap().starts_with("api_key")
        })
        .expect("an audit event made with an API key");
    let key_owner = audit["principal"]["id"].as_str().unwrap().to_owned();
    let borrower = truth
        .owners
        .keys()
        .find(|o| **o != key_owner)
        .unwrap()
        .clone();
    let mut borrowed = audit.clone();
    borrowed["event_id"] = json!("ev_dash_key_mismatch");
    borrowed["event_timestamp"] =
        json!((truth.window_start + chrono::Duration::minutes(55)).to_rfc3339());
    borrowed["principal"]["id"] = json!(borrower);
    borrowed["principal"]["subject"] = Value::Null;
    let cred_id = created["object"]["id"].as_str().unwrap().to_owned();

    let attributed = total_attributed(&truth);
    let quotas = Quotas {
        data_out_gb: 1000.0,
        requests: 1e7,
        tcp_connections: 1e6,
        endpoint_hours: 720.0,
    };
    let world = World::start("dash_anomalies", fleet, quotas, vec![steal, borrowed], true).await;
    let truth = &world.truth;
    let (from, to) = world.window();
    let dashboards = load_dashboards();
    let by_uid = |uid: &str| dashboards.iter().find(|d| d.uid == uid).unwrap();
    let endpoint_hours = world.endpoint_hours().await;

    let flagged_events: Vec<_> = truth
        .events
        .values()
        .filter(|e| !e.flags.is_empty())
        .collect();
    let unattributed_events: Vec<_> = truth
        .events
        .values()
        .filter(|e| e.unattributed_reason.is_some())
        .collect();
    assert!(!flagged_events.is_empty() && !unattributed_events.is_empty());

    // Anomalies: from the window's start to after the dead letters arrived (they are timed by
    // their reception).
    let until = Utc::now() + chrono::Duration::hours(1);
    let results = run_dashboard(
        &world.ch,
        by_uid("botmeter-anomalies"),
        &Expansion::new(from, until, 3600),
    )
    .await;
    let stat = results["Flagged and unattributed"].single();
    assert_eq!(stat.u64("flagged_events"), flagged_events.len() as u64);
    assert_eq!(
        stat.u64("flagged_data_out"),
        flagged_events
            .iter()
            .map(|e| e.usage.bytes_out)
            .sum::<u64>()
    );
    assert_eq!(
        stat.u64("unattributed_events"),
        unattributed_events.len() as u64
    );
    assert_eq!(
        stat.u64("unattributed_data_out"),
        total_unattributed(truth).bytes_out
    );
    assert_eq!(
        results["Dead letters"].single().u64("dead_letters"),
        world.dead_letters.len() as u64
    );

    let mut flagged_truth: BTreeMap<(String, String), (Usage, i64)> = BTreeMap::new();
    for e in &flagged_events {
        for flag in &e.flags {
            let slot = flagged_truth
                .entry((flag.clone(), e.owner_id.clone().unwrap()))
                .or_default();
            slot.0.add(&e.usage);
            slot.1 += 1;
        }
    }
    for ((flag, owner), (usage, _)) in &flagged_truth {
        assert_eq!(
            *usage, truth.owners[owner].flagged[flag],
            "the truth's flagged usage"
        );
    }
    let by_flag = &results["Flagged data out by flag"];
    let flags: BTreeSet<&String> = flagged_truth.keys().map(|(f, _)| f).collect();
    for flag in &flags {
        let want: u64 = flagged_truth
            .iter()
            .filter(|((f, _), _)| f == *flag)
            .map(|(_, (u, _))| u.bytes_out)
            .sum();
        assert_eq!(
            by_flag.sum_where("data_out", |r| r.str("flag") == **flag) as u64,
            want,
            "{flag}"
        );
    }
    let by_reason = &results["Unattributed data out by reason"];
    for (reason, usage) in &truth.unattributed {
        assert_eq!(
            by_reason.sum_where("data_out", |r| r.str("reason") == *reason) as u64,
            usage.bytes_out,
            "{reason}"
        );
    }

    let api = world
        .api(
            "/v1/anomalies",
            &[("from", &from.to_rfc3339()), ("to", &until.to_rfc3339())],
        )
        .await;
    let table = &results["Flagged usage by flag and owner"];
    assert_eq!(table.data.len(), flagged_truth.len());
    assert_eq!(
        api["flagged"].as_array().unwrap().len(),
        flagged_truth.len()
    );
    for ((flag, owner), (usage, events)) in &flagged_truth {
        let r = table
            .rows()
            .find(|r| r.str("flag") == *flag && r.str("owner") == *owner)
            .unwrap_or_else(|| panic!("{flag} {owner}"));
        assert_eq!(r.i64("events"), *events, "{flag} {owner}");
        let a = api["flagged"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["flag"] == flag.as_str() && a["owner_id"] == owner.as_str())
            .unwrap();
        assert_eq!(r.i64("events"), a["events"].as_i64().unwrap());
        for (name, column) in METRIC_COLUMNS {
            assert_eq!(
                r.u64(column),
                metric(usage, name),
                "{flag} {owner} {column}"
            );
            assert_eq!(
                r.u64(column),
                a[name].as_u64().unwrap(),
                "{flag} {owner} {column} vs API"
            );
        }
    }
    let table = &results["Unattributed by reason and hostname"];
    for (reason, usage) in &truth.unattributed {
        for (name, column) in METRIC_COLUMNS {
            assert_eq!(
                table.sum_where(column, |r| r.str("reason") == *reason) as u64,
                metric(usage, name),
                "{reason} {column}"
            );
        }
        let events = unattributed_events
            .iter()
            .filter(|e| e.unattributed_reason.as_deref() == Some(reason))
            .count();
        assert_eq!(
            table.sum_where("events", |r| r.str("reason") == *reason) as usize,
            events,
            "{reason} events"
        );
    }
    for a in api["unattributed"].as_array().unwrap() {
        let reason = a["reason"].as_str().unwrap();
        let host = a["hostname"].as_str().unwrap_or_default();
        let port = a["port"].as_u64().unwrap_or(0);
        let keep = |r: Row<'_>| {
            r.str("reason") == reason
                && (reason != "no_endpoint"
                    || (r.str("host") == host && r.u64("host_port") == port))
        };
        assert_eq!(
            table.sum_where("data_out", keep) as u64,
            a["bytes_out"].as_u64().unwrap(),
            "{reason} {host}:{port} vs API"
        );
        assert_eq!(
            table.sum_where("events", keep) as i64,
            a["events"].as_i64().unwrap(),
            "{reason} {host}:{port} vs API"
        );
    }
    let letters = &results["Dead letters by reason"];
    for (topic, reason) in &world.dead_letters {
        let r = letters
            .rows()
            .find(|r| r.str("topic") == *topic && r.str("reason_kind") == *reason)
            .unwrap_or_else(|| panic!("{topic} {reason}"));
        assert_eq!(r.u64("letters"), 1);
        assert!(!r.str("example_reason").is_empty());
    }
    for a in api["dead_letters"].as_array().unwrap() {
        let reason = a["reason"].as_str().unwrap();
        assert_eq!(
            letters.sum_where("letters", |r| r.str("topic") == world.env.traffic_topic
                && r.str("reason_kind") == reason) as i64,
            a["events"].as_i64().unwrap(),
            "traffic dead letters {reason} vs API"
        );
    }
    let control = &results["Control-plane anomalies"];
    let got: BTreeSet<(String, String)> = control
        .rows()
        .map(|r| (r.str("event_id"), r.str("anomaly")))
        .collect();
    let from_api: BTreeSet<(String, String)> = api["control"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["event_id"].as_str().unwrap().to_owned(),
                a["anomaly"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, from_api, "control-plane anomalies vs API");
    assert!(
        got.contains(&(
            "ev_dash_owner_change".to_owned(),
            "owner_change_rejected".to_owned()
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "ev_dash_key_mismatch".to_owned(),
            "api_key_owner_mismatch".to_owned()
        )),
        "{got:?}"
    );

    // The overview counts flagged usage as the owner's, and shows what is not attributed.
    let results = run_dashboard(
        &world.ch,
        by_uid("botmeter-overview"),
        &Expansion::new(from, to, 3600)
            .var("owner_kind", &["bot_user", "user"])
            .var("top_n", &["10"]),
    )
    .await;
    let usage = results["Usage in range"].single();
    for (name, column) in METRIC_COLUMNS {
        assert_eq!(usage.u64(column), metric(&attributed, name), "{column}");
    }
    assert_eq!(
        usage.u64("endpoint_hours"),
        endpoint_hours.values().sum::<u64>()
    );
    assert_eq!(
        results["Not attributed"]
            .single()
            .u64("unattributed_data_out"),
        total_unattributed(truth).bytes_out
    );
    assert_eq!(
        results["Not attributed"]
            .single()
            .u64("unattributed_events"),
        unattributed_events.len() as u64
    );
    for r in results["Top owners"].rows() {
        let owner = r.str("owner");
        let flagged: u64 = flagged_events
            .iter()
            .filter(|e| e.owner_id.as_deref() == Some(&owner))
            .map(|e| e.usage.bytes_out)
            .sum();
        assert_eq!(r.u64("flagged_data_out"), flagged, "{owner}");
        assert_eq!(
            r.u64("data_out"),
            truth.owners[&owner].usage.bytes_out,
            "{owner}"
        );
        assert_eq!(r.u64("endpoint_hours"), endpoint_hours[&owner], "{owner}");
    }

    // Drill-downs: an owner with flags, the deleted bot user, and both ends of the owner change.
    let owner_dash = by_uid("botmeter-owner");
    let flagged_owner = flagged_truth.keys().map(|(_, o)| o.clone()).next().unwrap();
    let deleted = world
        .ch
        .query("SELECT object_id FROM control_events WHERE event_type = 'bot_user_deleted.v0'")
        .await;
    // One deleted with its credentials' deletions, one without: deleting revokes them all the same.
    let deleted_bots: Vec<String> = deleted.rows().map(|r| r.str("object_id")).collect();
    assert!(deleted_bots.len() >= 2, "{deleted_bots:?}");
    let owners = [
        flagged_owner.clone(),
        victim.clone(),
        thief.clone(),
        borrower.clone(),
    ];
    for owner in owners.into_iter().chain(deleted_bots.iter().cloned()) {
        assert!(
            truth.owners.contains_key(&owner),
            "{owner} is an announced owner"
        );
        let results = run_dashboard(
            &world.ch,
            owner_dash,
            &Expansion::new(from, to, 3600).var("owner", &[&owner]),
        )
        .await;
        check_owner(&world, &results, &owner, &endpoint_hours).await;
        let flags = &results["Flagged usage"];
        for (flag, usage) in &truth.owners[&owner].flagged {
            let r = flags
                .rows()
                .find(|r| r.str("flag") == *flag)
                .unwrap_or_else(|| panic!("{owner}: flag {flag}"));
            for (name, column) in METRIC_COLUMNS {
                assert_eq!(
                    r.u64(column),
                    metric(usage, name),
                    "{owner} {flag} {column}"
                );
            }
        }
        assert_eq!(
            flags.data.len(),
            truth.owners[&owner].flagged.len(),
            "{owner}: flags"
        );
        let info = results["Owner"].single();
        if deleted_bots.contains(&owner) {
            assert_eq!(info.str("state"), "deleted");
            assert_eq!(
                info.u64("credentials_revoked"),
                truth.owners[&owner].credentials,
                "deleting a bot user revokes its credentials"
            );
            assert!(results["Credentials"]
                .rows()
                .all(|r| !r.str("revoked_at").is_empty()));
        }
        let anomalies: BTreeSet<String> = results["Control-plane anomalies"]
            .rows()
            .map(|r| r.str("anomaly"))
            .collect();
        if owner == thief {
            assert!(
                anomalies.contains("owner_change_rejected"),
                "{owner}: {anomalies:?}"
            );
            assert!(
                results["Credentials"]
                    .rows()
                    .all(|r| r.str("credential") != cred_id),
                "a rejected owner change moves no credential"
            );
        }
        if owner == victim {
            assert!(
                results["Credentials"]
                    .rows()
                    .any(|r| r.str("credential") == cred_id),
                "the credential stays with its owner"
            );
        }
        if owner == borrower {
            assert!(
                anomalies.contains("api_key_owner_mismatch"),
                "{owner}: {anomalies:?}"
            );
        }
    }

    // The overage dashboard runs, and its shares still equal /v1/overage.
    check_overage_shares_only(&world, by_uid("botmeter-overage"), quotas).await;

    // Investigation queries.
    let queries = load_queries();
    let span = [
        ("from_time", datetime_literal(from)),
        ("to_time", datetime_literal(to)),
    ];
    let span: Vec<(&str, &str)> = span.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let revoked = world
        .ch
        .query(&with_params(
            &queries["05_revoked_or_acl_violating_usage.sql"],
            &span,
        ))
        .await;
    let wanted = ["credential_deleted", "acl_violation"];
    for ((flag, owner), (usage, events)) in flagged_truth
        .iter()
        .filter(|((f, _), _)| wanted.contains(&f.as_str()))
    {
        let keep = |r: Row<'_>| r.str("flag") == *flag && r.str("owner") == *owner;
        assert_eq!(
            revoked.sum_where("events", keep) as i64,
            *events,
            "{flag} {owner}"
        );
        assert_eq!(
            revoked.sum_where("requests", keep) as u64,
            usage.http_requests,
            "{flag} {owner}"
        );
        assert_eq!(
            revoked.sum_where("tcp_conns", keep) as u64,
            usage.tcp_connections,
            "{flag} {owner}"
        );
        assert_close(
            revoked.sum_where("data_out_gb", keep),
            gb(usage.bytes_out),
            0.0005 * revoked.data.len() as f64,
            "data out",
        );
    }
    assert!(revoked
        .rows()
        .all(|r| wanted.contains(&r.str("flag").as_str())));
    assert!(
        revoked
            .rows()
            .filter(|r| r.str("flag") == "credential_deleted")
            .all(|r| !r.str("revoked_at").is_empty()),
        "a revoked credential has its revocation time"
    );
    assert!(
        revoked
            .rows()
            .filter(|r| r.str("flag") == "acl_violation")
            .all(|r| r.str("acl").starts_with('[')),
        "an ACL violation shows the bind rules"
    );
    let others = world
        .ch
        .query(&with_params(
            &queries["05_revoked_or_acl_violating_usage.sql"],
            &[span[0], span[1], ("wanted_flags", "['owner_deleted']")],
        ))
        .await;
    assert_eq!(
        others.sum_where("events", |_| true) as i64,
        flagged_truth
            .iter()
            .filter(|((f, _), _)| f == "owner_deleted")
            .map(|(_, (_, n))| n)
            .sum::<i64>()
    );

    let unattributed = world
        .ch
        .query(&with_params(
            &queries["06_unattributed_by_hostname.sql"],
            &span,
        ))
        .await;
    for (reason, usage) in &truth.unattributed {
        let keep = |r: Row<'_>| r.str("reason") == *reason;
        assert_eq!(
            unattributed.sum_where("requests", keep) as u64,
            usage.http_requests,
            "{reason}"
        );
        assert_eq!(
            unattributed.sum_where("tcp_conns", keep) as u64,
            usage.tcp_connections,
            "{reason}"
        );
        let events = unattributed_events
            .iter()
            .filter(|e| e.unattributed_reason.as_deref() == Some(reason))
            .count();
        assert_eq!(
            unattributed.sum_where("events", keep) as usize,
            events,
            "{reason}"
        );
    }
    // A hostname reused by two owners: its gap traffic names both as having had the address.
    assert!(
        unattributed
            .rows()
            .any(|r| r.str("reason") == "no_endpoint" && r.u64("endpoints_on_address") >= 2),
        "the reused hostname's gap"
    );

    let month = [
        ("month_start", "toDate('2026-01-01')"),
        ("until", &datetime_literal(to) as &str),
    ];
    let totals = world
        .ch
        .query(&with_params(&queries["01_month_totals.sql"], &month))
        .await;
    let status = |s: &str| {
        totals
            .rows()
            .find(|r| r.str("status") == s)
            .unwrap_or_else(|| panic!("{s}"))
    };
    assert_eq!(
        status("attributed").u64("requests"),
        attributed.http_requests
    );
    assert_eq!(
        status("attributed").u64("endpoint_hours"),
        endpoint_hours.values().sum::<u64>()
    );
    assert_eq!(
        status("unattributed").i64("events"),
        unattributed_events.len() as i64
    );
    assert_eq!(
        status("unattributed").u64("tcp_conns"),
        total_unattributed(truth).tcp_connections
    );
    // Dead letters are timed by their reception: this month's.
    let now = Utc::now();
    let this_month = format!("toDate('{:04}-{:02}-01')", now.year(), now.month());
    let totals = world
        .ch
        .query(&with_params(
            &queries["01_month_totals.sql"],
            &[("month_start", &this_month), ("until", "now() + 3600")],
        ))
        .await;
    let traffic_letters = world
        .dead_letters
        .iter()
        .filter(|(t, _)| *t == world.env.traffic_topic)
        .count() as i64;
    assert_eq!(
        totals
            .rows()
            .find(|r| r.str("status") == "dead_letter")
            .map(|r| r.i64("events")),
        Some(traffic_letters)
    );

    let top = world
        .ch
        .query(&with_params(&queries["02_top_owners_month.sql"], &month))
        .await;
    let row = top
        .rows()
        .find(|r| r.str("owner") == "(unattributed)")
        .expect("an (unattributed) row");
    assert_close(
        row.f64("data_out_gb"),
        gb(total_unattributed(truth).bytes_out),
        0.0005,
        "unattributed",
    );
    assert_eq!(row.u64("requests"), total_unattributed(truth).http_requests);
    assert_close(
        top.sum_where("share_of_data_out", |_| true),
        1.0,
        0.0005 * top.data.len() as f64,
        "shares add up",
    );
    for r in top.rows().filter(|r| r.str("owner") != "(unattributed)") {
        assert_eq!(
            r.u64("tcp_conns"),
            truth.owners[&r.str("owner")].usage.tcp_connections
        );
    }
    world.stop().await;
}

/// The overage shares against `/v1/overage` (for a fleet whose usage stays under the quotas).
async fn check_overage_shares_only(world: &World, dashboard: &Dashboard, quotas: Quotas) {
    let (_, to) = world.window();
    let expansion = Expansion::new(to - chrono::Duration::hours(1), to, 3600)
        .var("quota_data_out_gb", &[&quotas.data_out_gb.to_string()])
        .var("quota_requests", &[&quotas.requests.to_string()])
        .var(
            "quota_tcp_connections",
            &[&quotas.tcp_connections.to_string()],
        )
        .var(
            "quota_endpoint_hours",
            &[&quotas.endpoint_hours.to_string()],
        );
    let results = run_dashboard(&world.ch, dashboard, &expansion).await;
    let api = world
        .api(
            "/v1/overage",
            &[("month", &format!("{:04}-{:02}", to.year(), to.month()))],
        )
        .await;
    for r in results["Month to date vs quota"].rows() {
        assert_eq!(r.f64("overage"), 0.0, "{}: under quota", r.str("metric"));
    }
    assert_close(
        results["Not attributed this month"]
            .single()
            .f64("unattributed_data_out_gb"),
        gb(total_unattributed(&world.truth).bytes_out),
        1e-9,
        "unattributed this month",
    );
    let shares = &results["Each owner's share, month to date"];
    for a in api["owners"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["usage"]["bytes_out"].as_f64() > Some(0.0))
    {
        let owner = a["owner_id"].as_str().unwrap();
        let r = shares
            .rows()
            .find(|r| r.str("owner") == owner)
            .unwrap_or_else(|| panic!("{owner}"));
        assert_close(
            r.f64("share_data_out"),
            a["share"]["bytes_out"].as_f64().unwrap(),
            1e-9,
            owner,
        );
        assert_close(
            r.f64("share_endpoint_hours"),
            a["share"]["active_endpoint_hours"].as_f64().unwrap(),
            1e-9,
            owner,
        );
    }
}

// --- The Grafana alert rules --------------------------------------------------------------------

/// The query (refId `A`) of one Grafana alert rule in `dashboards/provisioning/alerting/*.yaml`.
#[derive(Debug)]
struct AlertRule {
    uid: String,
    datasource_uid: String,
    /// Its `relativeTimeRange`: the query covers `now - from` to `now - to` (seconds).
    from_seconds: i64,
    to_seconds: i64,
    /// The ClickHouse rules' SQL (`None` for the Prometheus rules).
    raw_sql: Option<String>,
}

/// Every provisioned alert rule.
fn load_alert_rules() -> Vec<AlertRule> {
    let dir = root().join("dashboards/provisioning/alerting");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let document: Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for rule in document["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        {
            let uid = rule["uid"].as_str().unwrap().to_owned();
            let query = rule["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["refId"] == "A")
                .unwrap_or_else(|| panic!("{uid}: a query A"));
            out.push(AlertRule {
                datasource_uid: query["datasourceUid"].as_str().unwrap().to_owned(),
                from_seconds: query["relativeTimeRange"]["from"].as_i64().unwrap(),
                to_seconds: query["relativeTimeRange"]["to"].as_i64().unwrap(),
                raw_sql: query["model"]["rawSql"].as_str().map(str::to_owned),
                uid,
            });
        }
    }
    assert!(!out.is_empty(), "alert rules in {}", dir.display());
    out
}

impl AlertRule {
    /// Its query as the plugin runs it when Grafana evaluates the rule at `at`, on 18.16 (the
    /// same SQL: no `$__timeInterval`).
    async fn run(&self, ch: &Ch, at: DateTime<Utc>) -> QueryResult {
        let sql = self.raw_sql.as_deref().expect("a ClickHouse rule");
        let expansion = Expansion::new(
            at - chrono::Duration::seconds(self.from_seconds),
            at - chrono::Duration::seconds(self.to_seconds),
            60,
        );
        let plugin = expansion.expand(sql, Flavor::Plugin);
        assert_eq!(
            plugin,
            expansion.expand(sql, Flavor::ClickHouse1816),
            "{}: 18.16 runs what the plugin sends",
            self.uid
        );
        let result = ch.query(&plugin).await;
        let numeric: Vec<&str> = result
            .columns
            .iter()
            .filter(|(_, t)| !t.starts_with("String"))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            numeric.len(),
            1,
            "{}: one value column, the others labels: {:?}",
            self.uid,
            result.columns
        );
        result
    }
}

#[test]
fn alert_rules_query_clickhouse_like_the_dashboards() {
    let rules = load_alert_rules();
    let clickhouse: Vec<&AlertRule> = rules
        .iter()
        .filter(|r| r.datasource_uid == "botmeter-clickhouse")
        .collect();
    for uid in [
        "botmeter-device-dropped",
        "botmeter-revoked-credential-used",
        "botmeter-unattributed-bytes",
    ] {
        assert!(
            clickhouse.iter().any(|r| r.uid == uid),
            "{uid} reads ClickHouse"
        );
    }
    for rule in &clickhouse {
        let sql = rule.raw_sql.as_deref().unwrap();
        assert!(!sql.contains("${"), "{}: no dashboard variables", rule.uid);
        assert!(
            !sql.contains("$__timeInterval") && !sql.contains("toStartOfInterval"),
            "{}",
            rule.uid
        );
        assert!(
            !sql.contains("count()") && !sql.contains("sum(bytes_out)"),
            "{}: rows and metrics times sign",
            rule.uid
        );
        let expanded = Expansion::new(Utc::now(), Utc::now(), 60).expand(sql, Flavor::Plugin);
        assert!(!expanded.contains('$'), "{}: {expanded}", rule.uid);
        assert!(rule.from_seconds > rule.to_seconds, "{}", rule.uid);
    }
}

// --- The fleet dashboard -------------------------------------------------------------------------

/// `kind` of an owner id as the fleet dashboard's `owner_type` (and `OwnerKind::of`) reads it.
fn fleet_owner_kind(owner_id: &str) -> &'static str {
    if owner_id.starts_with("usr_") {
        "user"
    } else if owner_id.starts_with("bot_") || owner_id.starts_with("service_") {
        "bot_user"
    } else {
        ""
    }
}

/// Whole seconds of an RFC 3339 time in an API answer.
fn api_seconds(value: &Value) -> Option<i64> {
    value
        .as_str()
        .map(|text| DateTime::parse_from_rfc3339(text).unwrap().timestamp())
}

/// The fleet dashboard on a fleet whose devices drop and come back (with the standard rotations,
/// revocations and bot user deletions), at several ends of the range around the drops: the
/// summary, the dropped devices and every credential's last sighting equal the simulator's
/// [`GroundTruth::fleet_at`] and `/v1/fleet?at=<end of the range>`; the agents online at every
/// point of the time series equal the truth at that point (in all and by owner kind); the owner
/// kind and owner variables narrow all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_dashboard_agrees_with_the_truth_and_the_api() {
    let config = FleetConfig {
        seed: 16,
        users: 2,
        bot_users: 5,
        traffic_events: 4_000,
        scenarios: simulate::Scenarios {
            device_drops: 3,
            ..simulate::Scenarios::standard()
        },
        ..FleetConfig::default()
    };
    let fleet = generate(&config);
    let quotas = Quotas {
        data_out_gb: 1000.0,
        requests: 1e7,
        tcp_connections: 1e6,
        endpoint_hours: 720.0,
    };
    let world = World::start("dash_fleet", fleet, quotas, Vec::new(), false).await;
    let truth = &world.truth;
    let dashboards = load_dashboards();
    let dashboard = dashboards
        .iter()
        .find(|d| d.uid == "botmeter-fleet")
        .expect("the fleet dashboard is shipped");
    let grace = chrono::Duration::seconds(300);
    let (from, to) = world.window();
    let window = to - from;
    let share = |percent: i32| (from + window * percent / 100).trunc_subsecs(0);
    let first_drop = truth
        .fleet
        .values()
        .flat_map(|c| &c.sessions)
        .filter_map(|s| s.stopped_at)
        .filter(|stop| *stop > share(30))
        .min()
        .expect("a device drops");
    let just_after = (first_drop + chrono::Duration::seconds(61)).trunc_subsecs(0);
    let mut states_seen: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rows_checked = 0;
    for (at, idle_days) in [
        (share(33), 30),
        (just_after, 30),
        (share(50), 1),
        (share(80), 30),
        (to.trunc_subsecs(0), 1),
    ] {
        let expected = truth.fleet_at(at, grace);
        let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let api = world
            .api(
                "/v1/fleet",
                &[
                    ("at", at_text.as_str()),
                    ("limit", "10000"),
                    ("idle_days", &idle_days.to_string()),
                ],
            )
            .await;
        let expansion = Expansion::new(from, at, 3600)
            .var("owner_kind", &["bot_user", "user"])
            .var("owner", &["*"])
            .var("drop_grace_seconds", &["300"])
            .var("idle_days", &[&idle_days.to_string()]);
        let results = run_dashboard(&world.ch, dashboard, &expansion).await;
        let listed: BTreeSet<String> = results["variable owner"]
            .rows()
            .map(|r| r.str("owner_id"))
            .collect();
        for credential in truth.fleet.values() {
            assert!(listed.contains(&credential.owner_id), "owner variable");
        }

        // The summary: the truth's counts, and the API's (idle too).
        let stat = results["Fleet at the end of the range"].single();
        let count = |state: &str| expected.values().filter(|c| c.state == state).count() as u64;
        let agents: u64 = expected
            .values()
            .map(|c| c.agents_online.len() as u64)
            .sum();
        assert_eq!(stat.u64("credentials"), expected.len() as u64, "{at_text}");
        assert_eq!(stat.u64("agents_online"), agents, "{at_text}");
        for state in ["online", "reconnecting", "dropped", "never_seen"] {
            assert_eq!(stat.u64(state), count(state), "{at_text}: {state}");
            assert_eq!(
                Some(stat.u64(state)),
                api["summary"][state].as_u64(),
                "{at_text}: {state}"
            );
            *states_seen.entry(state).or_default() += count(state);
        }
        for column in ["credentials", "agents_online", "idle"] {
            assert_eq!(
                Some(stat.u64(column)),
                api["summary"][column].as_u64(),
                "{at_text}: {column}"
            );
        }

        // Dropped devices: exactly the truth's, with its drop time; the API's gone_seconds.
        let api_credentials: BTreeMap<&str, &Value> = api["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["credential_id"].as_str().unwrap(), c))
            .collect();
        let dropped = &results["Dropped devices"];
        let got: BTreeSet<String> = dropped.rows().map(|r| r.str("credential")).collect();
        let want: BTreeSet<String> = expected
            .iter()
            .filter(|(_, c)| c.state == "dropped")
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(got, want, "{at_text}: dropped devices");
        for r in dropped.rows() {
            let id = r.str("credential");
            let want = &expected[&id];
            assert_eq!(
                Some(r.time("dropped_at")),
                want.dropped_at.map(|t| t.timestamp()),
                "{at_text}: {id}"
            );
            assert_eq!(
                Some(r.time("last_seen")),
                want.last_seen_at.map(|t| t.timestamp()),
                "{at_text}: {id}"
            );
            assert_eq!(r.str("owner"), truth.fleet[&id].owner_id, "{id}");
            assert_eq!(r.str("kind"), truth.fleet[&id].kind, "{id}");
            assert_eq!(
                Some(r.i64("gone_for")),
                api_credentials[id.as_str()]["gone_seconds"].as_i64(),
                "{at_text}: {id}"
            );
        }

        // Last seen per credential: every live credential, as the truth and the API say.
        let seen = &results["Last seen per credential"];
        let got: BTreeSet<String> = seen.rows().map(|r| r.str("credential")).collect();
        assert_eq!(
            got,
            expected.keys().cloned().collect::<BTreeSet<_>>(),
            "{at_text}: credentials"
        );
        for r in seen.rows() {
            let id = r.str("credential");
            let want = &expected[&id];
            let api = api_credentials[id.as_str()];
            assert_eq!(r.str("state"), want.state, "{at_text}: {id}");
            assert_eq!(
                r.u64("agents_online"),
                want.agents_online.len() as u64,
                "{at_text}: {id}"
            );
            let last_seen = r.str("last_seen");
            assert_eq!(
                (!last_seen.is_empty()).then(|| r.time("last_seen")),
                want.last_seen_at.map(|t| t.timestamp()),
                "{at_text}: {id}"
            );
            assert_eq!(
                Some(r.time("created_at")),
                api_seconds(&api["created_at"]),
                "{id}"
            );
            assert_eq!(
                Some(r.i64("unseen_days")),
                api["unseen_days"].as_i64(),
                "{at_text}: {id}"
            );
            assert_eq!(
                r.u64("idle") == 1,
                api["idle"].as_bool().unwrap(),
                "{at_text}: {id}"
            );
            assert_eq!(r.str("owner_type"), fleet_owner_kind(&r.str("owner")));
            rows_checked += 1;
        }

        // Agents online at every point: the truth at that instant, in all and by owner kind.
        let series = &results["Agents online"];
        let by_kind = &results["Agents online by owner kind"];
        let first_point = (from.timestamp() + 3599) / 3600 * 3600;
        let points: Vec<i64> = series.rows().map(|r| r.time("time")).collect();
        assert_eq!(
            points,
            (first_point..=at.timestamp())
                .step_by(3600)
                .collect::<Vec<_>>(),
            "{at_text}: one point per interval, zeros included"
        );
        for r in series.rows() {
            let point = DateTime::from_timestamp(r.time("time"), 0).unwrap();
            let truth_then = truth.fleet_at(point, grace);
            let mut want: BTreeMap<&str, u64> = [("bot_user", 0), ("user", 0)].into();
            for (id, c) in &truth_then {
                *want
                    .entry(fleet_owner_kind(&truth.fleet[id].owner_id))
                    .or_default() += c.agents_online.len() as u64;
            }
            assert_eq!(
                r.u64("agents_online"),
                want.values().sum::<u64>(),
                "agents online at {point}"
            );
            for (kind, agents) in want {
                let got = by_kind.sum_where("agents", |k| {
                    k.time("time") == point.timestamp() && k.str("owner_kind") == kind
                });
                assert_eq!(got as u64, agents, "{kind} agents online at {point}");
            }
        }
        assert!(
            series.sum_where("agents_online", |_| true) > 0.0,
            "{at_text}: agents were online"
        );
    }
    assert!(rows_checked > 0);
    for state in ["online", "reconnecting", "dropped", "never_seen"] {
        assert!(
            states_seen[state] > 0,
            "{state} at some end: {states_seen:?}"
        );
    }

    // The variables narrow every panel: bot users only, then one owner.
    let at = share(50);
    let expected = truth.fleet_at(at, grace);
    let bots_only = Expansion::new(from, at, 3600)
        .var("owner_kind", &["bot_user"])
        .var("owner", &["*"])
        .var("drop_grace_seconds", &["300"])
        .var("idle_days", &["30"]);
    let results = run_dashboard(&world.ch, dashboard, &bots_only).await;
    let bots: Vec<&String> = expected
        .keys()
        .filter(|id| fleet_owner_kind(&truth.fleet[*id].owner_id) == "bot_user")
        .collect();
    assert!(bots.len() < expected.len(), "users have credentials too");
    assert_eq!(
        results["Fleet at the end of the range"]
            .single()
            .u64("credentials"),
        bots.len() as u64
    );
    assert!(results["Agents online by owner kind"]
        .rows()
        .all(|r| r.str("owner_kind") == "bot_user"));
    let owner = &truth.fleet[bots[0]].owner_id;
    let one_owner = Expansion::new(from, at, 3600)
        .var("owner_kind", &["bot_user", "user"])
        .var("owner", &[owner])
        .var("drop_grace_seconds", &["300"])
        .var("idle_days", &["30"]);
    let results = run_dashboard(&world.ch, dashboard, &one_owner).await;
    let theirs: BTreeSet<String> = expected
        .keys()
        .filter(|id| truth.fleet[*id].owner_id == *owner)
        .cloned()
        .collect();
    let got: BTreeSet<String> = results["Last seen per credential"]
        .rows()
        .map(|r| r.str("credential"))
        .collect();
    assert_eq!(got, theirs, "{owner}'s credentials");

    check_alert_rules(&world, &[share(33), just_after, share(50), share(80)]).await;
    world.stop().await;
}

/// The ClickHouse alert rules evaluated at the given instants (and, for the usage rules, soon
/// after each flagged or unattributed event, up to 100 instants each) against the truth: `device_dropped` lists the
/// credentials the truth has dropped (and the API's `gone_seconds`), `revoked_credential_used`
/// the net events flagged `credential_deleted` per owner and credential in its window,
/// `unattributed_bytes` the unattributed bytes in and out in its window. Every ClickHouse rule
/// is checked.
async fn check_alert_rules(world: &World, instants: &[DateTime<Utc>]) {
    let truth = &world.truth;
    let rules = load_alert_rules();
    let rule = |uid: &str| rules.iter().find(|r| r.uid == uid).unwrap();
    let grace = chrono::Duration::seconds(300);
    let mut checked = BTreeSet::new();

    let dropped = rule("botmeter-device-dropped");
    let mut fired = 0;
    for &at in instants {
        let result = dropped.run(&world.ch, at).await;
        let api = world
            .api(
                "/v1/fleet",
                &[
                    ("at", &at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    ("state", "dropped"),
                    ("limit", "10000"),
                ],
            )
            .await;
        let want: BTreeMap<String, (String, i64)> = api["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["credential_id"].as_str().unwrap().to_owned(),
                    (
                        c["owner_id"].as_str().unwrap().to_owned(),
                        c["gone_seconds"].as_i64().unwrap(),
                    ),
                )
            })
            .collect();
        let from_truth: BTreeSet<String> = truth
            .fleet_at(at, grace)
            .into_iter()
            .filter(|(_, c)| c.state == "dropped")
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            want.keys().cloned().collect::<BTreeSet<_>>(),
            from_truth,
            "the API drops what the truth drops at {at}"
        );
        let got: BTreeMap<String, (String, i64)> = result
            .rows()
            .map(|r| {
                (
                    r.str("credential"),
                    (r.str("owner"), r.f64("gone_for") as i64),
                )
            })
            .collect();
        assert_eq!(got, want, "device_dropped at {at}");
        fired += got.len();
    }
    assert!(fired > 0, "device_dropped fires at some instant");
    checked.insert(dropped.uid.clone());

    // Usage rules: evaluated a minute after events of interest (at most 100 instants each).
    let times: BTreeMap<String, DateTime<Utc>> = world
        .fleet
        .traffic
        .iter()
        .map(|m| {
            let payload: Value = serde_json::from_slice(&m.payload).unwrap();
            (
                payload["event_id"].as_str().unwrap().to_owned(),
                m.event_time.trunc_subsecs(0),
            )
        })
        .collect();
    let in_window = |rule: &AlertRule, at: DateTime<Utc>, t: DateTime<Utc>| {
        t >= at - chrono::Duration::seconds(rule.from_seconds)
            && t <= at - chrono::Duration::seconds(rule.to_seconds)
    };
    let instants_after = |keep: &dyn Fn(&simulate::ExpectedEvent) -> bool| {
        let mut out: Vec<DateTime<Utc>> = truth
            .events
            .iter()
            .filter(|(_, e)| keep(e))
            .map(|(id, _)| times[id] + chrono::Duration::seconds(60))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let step = out.len().div_ceil(100).max(1);
        out = out.into_iter().step_by(step).collect();
        out
    };

    let revoked = rule("botmeter-revoked-credential-used");
    let is_revoked =
        |e: &simulate::ExpectedEvent| e.flags.iter().any(|f| f == "credential_deleted");
    let at_list = instants_after(&is_revoked);
    let mut revoked_events = 0;
    assert!(!at_list.is_empty(), "the fleet uses revoked credentials");
    for at in at_list.into_iter().chain(instants.iter().copied()) {
        let mut want: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (id, e) in truth.events.iter().filter(|(_, e)| is_revoked(e)) {
            if in_window(revoked, at, times[id]) {
                *want
                    .entry((
                        e.owner_id.clone().unwrap(),
                        e.credential_id.clone().unwrap(),
                    ))
                    .or_default() += 1;
            }
        }
        let got: BTreeMap<(String, String), i64> = revoked
            .run(&world.ch, at)
            .await
            .rows()
            .map(|r| {
                (
                    (r.str("owner"), r.str("credential")),
                    r.f64("events") as i64,
                )
            })
            .collect();
        assert_eq!(got, want, "revoked_credential_used at {at}");
        revoked_events += want.values().sum::<i64>();
    }
    eprintln!("revoked_credential_used: {revoked_events} events in the windows checked");
    checked.insert(revoked.uid.clone());

    let unattributed = rule("botmeter-unattributed-bytes");
    let is_unattributed = |e: &simulate::ExpectedEvent| e.unattributed_reason.is_some();
    let at_list = instants_after(&is_unattributed);
    let mut restated_bytes = 0;
    assert!(!at_list.is_empty(), "the fleet has unattributed usage");
    for at in at_list.into_iter().chain(instants.iter().copied()) {
        let want: u64 = truth
            .events
            .iter()
            .filter(|(id, e)| is_unattributed(e) && in_window(unattributed, at, times[*id]))
            .map(|(_, e)| e.usage.bytes_in + e.usage.bytes_out)
            .sum();
        let result = unattributed.run(&world.ch, at).await;
        assert_eq!(
            result.single().f64("unattributed_bytes") as u64,
            want,
            "unattributed_bytes at {at}"
        );
        // Restated rows (a -1 and a +1 copy) in the window: counted once only times sign.
        let restated = world
            .ch
            .query(&format!(
                "SELECT toUInt64(sum(bytes_in + bytes_out)) AS b FROM usage_events \
                 WHERE status = 'unattributed' AND sign < 0 \
                 AND event_time >= toDateTime({}) AND event_time <= toDateTime({})",
                at.timestamp() - unattributed.from_seconds,
                at.timestamp() - unattributed.to_seconds
            ))
            .await;
        restated_bytes += restated.single().u64("b");
    }
    assert!(
        restated_bytes > 0,
        "restated unattributed rows are in some window checked"
    );
    checked.insert(unattributed.uid.clone());

    let clickhouse: BTreeSet<String> = rules
        .iter()
        .filter(|r| r.raw_sql.is_some())
        .map(|r| r.uid.clone())
        .collect();
    assert_eq!(
        checked, clickhouse,
        "every ClickHouse alert rule is checked"
    );
}
