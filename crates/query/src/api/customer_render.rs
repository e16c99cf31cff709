//! The customer report as CSV (one row per day of the month, then a `total` row) and as a
//! self-contained HTML page: totals, a server-rendered SVG bar chart of daily data transfer out,
//! and the credentials with their age. The page is the askama template
//! `templates/customer_report.html`, which escapes every value at compile time: names,
//! descriptions and ids come from the audit log, and metadata is whatever a user typed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::customers::{CustomerCredential, CustomerReport};
use super::params::Month;
use super::report::{UsageBucket, UsageMetrics};

const CSV_HEADER: &str = "date,bytes_in,bytes_out,http_requests,tcp_connections,endpoints,\
                          active_endpoint_hours,agent_sessions,session_hours";

/// Every day of the month, with zeros where nothing happened.
fn all_days(report: &CustomerReport, month: Month) -> Vec<(String, UsageMetrics)> {
    let by_day: BTreeMap<&str, &UsageBucket> = report
        .days
        .iter()
        .map(|b| (b.start.get(..10).unwrap_or(&b.start), b))
        .collect();
    let first = month.first_day();
    (0..month.days())
        .map(|offset| {
            let date = (first + chrono::Duration::days(i64::from(offset)))
                .format("%Y-%m-%d")
                .to_string();
            let metrics = by_day
                .get(date.as_str())
                .map(|b| b.metrics)
                .unwrap_or_default();
            (date, metrics)
        })
        .collect()
}

fn csv_row(out: &mut String, label: &str, m: &UsageMetrics) {
    let _ = writeln!(
        out,
        "{label},{},{},{},{},{},{},{},{}",
        m.bytes_in,
        m.bytes_out,
        m.http_requests,
        m.tcp_connections,
        m.endpoints,
        m.active_endpoint_hours,
        m.agent_sessions.unwrap_or(0),
        m.session_hours.unwrap_or(0.0)
    );
}

/// One row per day, then `total`.
pub(super) fn csv(report: &CustomerReport, month: Month) -> String {
    let mut out = String::new();
    out.push_str(CSV_HEADER);
    out.push('\n');
    for (date, metrics) in all_days(report, month) {
        csv_row(&mut out, &date, &metrics);
    }
    csv_row(&mut out, "total", &report.totals);
    out
}

/// Bytes as B, kB, MB, GB, TB (powers of 1000, as ngrok bills).
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Thousands separators.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The page, `templates/customer_report.html`. Every field is text the template escapes (askama
/// escapes every `{{ }}` of an `.html` template unless told not to, and this one never is): names,
/// descriptions and ids come from the audit log, and metadata is whatever a user typed.
#[derive(Debug, askama::Template)]
#[template(path = "customer_report.html")]
struct ReportPage<'a> {
    title: String,
    from: &'a str,
    to: &'a str,
    bot_users: Vec<BotUserLine<'a>>,
    totals: Totals,
    chart: Chart,
    credentials: Vec<CredentialRow<'a>>,
}

/// A bot user: its name, its id and ` (deleted)`, ` (inactive)` or nothing.
#[derive(Debug)]
struct BotUserLine<'a> {
    name: &'a str,
    id: &'a str,
    state: &'static str,
}

/// The month's totals, as they read.
#[derive(Debug)]
struct Totals {
    bytes_out: String,
    bytes_in: String,
    http_requests: String,
    tcp_connections: String,
    endpoints: String,
    active_endpoint_hours: String,
    agent_sessions: String,
    session_hours: String,
}

impl Totals {
    fn of(t: &UsageMetrics) -> Self {
        Self {
            bytes_out: human_bytes(t.bytes_out),
            bytes_in: human_bytes(t.bytes_in),
            http_requests: grouped(t.http_requests),
            tcp_connections: grouped(t.tcp_connections),
            endpoints: grouped(t.endpoints),
            active_endpoint_hours: grouped(t.active_endpoint_hours),
            agent_sessions: grouped(t.agent_sessions.unwrap_or(0)),
            session_hours: format!("{:.2}", t.session_hours.unwrap_or(0.0)),
        }
    }
}

/// The daily bytes-out bar chart, laid out: the axes, the largest value's label, a bar per day.
#[derive(Debug)]
struct Chart {
    width: f64,
    height: f64,
    left: f64,
    top: f64,
    axis_y: f64,
    axis_x2: f64,
    label_x: f64,
    max_label_y: f64,
    max_label: String,
    bars: Vec<Bar>,
}

/// One day's bar, with its day of the month under it on the first day and every fifth.
#[derive(Debug)]
struct Bar {
    x: String,
    y: String,
    width: String,
    height: String,
    date: String,
    label: String,
    tick: Option<Tick>,
}

/// A day-of-month label under the axis.
#[derive(Debug)]
struct Tick {
    x: String,
    y: String,
    day: String,
}

impl Chart {
    fn of(days: &[(String, UsageMetrics)]) -> Self {
        const WIDTH: f64 = 760.0;
        const HEIGHT: f64 = 240.0;
        const LEFT: f64 = 70.0;
        const BOTTOM: f64 = 30.0;
        const TOP: f64 = 20.0;
        let max = days
            .iter()
            .map(|(_, m)| m.bytes_out)
            .max()
            .unwrap_or(0)
            .max(1);
        let plot_w = WIDTH - LEFT - 10.0;
        let plot_h = HEIGHT - BOTTOM - TOP;
        let slot = plot_w / days.len().max(1) as f64;
        let bars = days
            .iter()
            .enumerate()
            .map(|(i, (date, metrics))| {
                let h = metrics.bytes_out as f64 / max as f64 * plot_h;
                let x = LEFT + i as f64 * slot + slot * 0.15;
                let tick = (i == 0 || (i + 1) % 5 == 0).then(|| Tick {
                    x: format!("{:.1}", x + slot * 0.35),
                    y: format!("{:.1}", TOP + plot_h + 14.0),
                    day: date.get(8..10).unwrap_or("").to_owned(),
                });
                Bar {
                    x: format!("{x:.1}"),
                    y: format!("{:.1}", TOP + plot_h - h),
                    width: format!("{:.1}", slot * 0.7),
                    height: format!("{h:.1}"),
                    date: date.clone(),
                    label: human_bytes(metrics.bytes_out),
                    tick,
                }
            })
            .collect();
        Self {
            width: WIDTH,
            height: HEIGHT,
            left: LEFT,
            top: TOP,
            axis_y: TOP + plot_h,
            axis_x2: LEFT + plot_w,
            label_x: LEFT - 6.0,
            max_label_y: TOP + 4.0,
            max_label: human_bytes(max),
            bars,
        }
    }
}

/// A credential's row.
#[derive(Debug)]
struct CredentialRow<'a> {
    credential_id: &'a str,
    kind: &'a str,
    owner_id: &'a str,
    description: &'a str,
    created: &'a str,
    age_days: i64,
    deleted: &'a str,
    bytes_out: String,
    http_requests: String,
    session_hours: String,
}

impl<'a> CredentialRow<'a> {
    fn of(c: &'a CustomerCredential) -> Self {
        Self {
            credential_id: &c.credential_id,
            kind: &c.kind,
            owner_id: &c.owner_id,
            description: &c.description,
            created: c.created_at.get(..10).unwrap_or(&c.created_at),
            age_days: c.age_days,
            deleted: c
                .deleted_at
                .as_deref()
                .and_then(|d| d.get(..10))
                .unwrap_or(""),
            bytes_out: human_bytes(c.usage.bytes_out),
            http_requests: grouped(c.usage.http_requests),
            session_hours: format!("{:.2}", c.usage.session_hours.unwrap_or(0.0)),
        }
    }
}

/// The readable page.
pub(super) fn html(report: &CustomerReport, month: Month) -> String {
    use askama::Template as _;
    let page = ReportPage {
        title: format!("Usage of {} in {}", report.customer_id, report.month),
        from: &report.from,
        to: &report.to,
        bot_users: report
            .bot_users
            .iter()
            .map(|b| BotUserLine {
                name: &b.name,
                id: &b.id,
                state: if b.deleted {
                    " (deleted)"
                } else if b.active {
                    ""
                } else {
                    " (inactive)"
                },
            })
            .collect(),
        totals: Totals::of(&report.totals),
        chart: Chart::of(&all_days(report, month)),
        credentials: report.credentials.iter().map(CredentialRow::of).collect(),
    };
    // Writing into a String fails only when a value's Display does, and every value here is a
    // string or a number.
    page.render()
        .expect("the customer report renders: its values are strings and numbers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::customers::CustomerBotUser;

    fn report() -> CustomerReport {
        CustomerReport {
            customer_id: "acme".to_owned(),
            month: "2024-02".to_owned(),
            from: "2024-02-01T00:00:00Z".to_owned(),
            to: "2024-03-01T00:00:00Z".to_owned(),
            bot_users: vec![CustomerBotUser {
                id: "bot_1".to_owned(),
                name: "<script>alert(1)</script>".to_owned(),
                active: false,
                deleted: false,
            }],
            credentials: vec![CustomerCredential {
                credential_id: "cr_1".to_owned(),
                kind: "authtoken".to_owned(),
                owner_id: "bot_1".to_owned(),
                description: "a \"quoted\" & <b>bold</b> runner".to_owned(),
                created_at: "2024-01-01T00:00:00Z".to_owned(),
                deleted_at: None,
                age_days: 60,
                usage: UsageMetrics {
                    bytes_out: 1_500_000,
                    http_requests: 1234,
                    ..UsageMetrics::default()
                },
            }],
            totals: UsageMetrics {
                bytes_out: 1_500_000,
                http_requests: 1234,
                agent_sessions: Some(1),
                session_hours: Some(1.5),
                ..UsageMetrics::default()
            },
            days: vec![UsageBucket {
                start: "2024-02-10T00:00:00Z".to_owned(),
                metrics: UsageMetrics {
                    bytes_out: 1_500_000,
                    http_requests: 1234,
                    agent_sessions: Some(1),
                    session_hours: Some(1.5),
                    ..UsageMetrics::default()
                },
            }],
        }
    }

    fn february() -> Month {
        Month::parse("2024-02").unwrap()
    }

    #[test]
    fn csv_has_every_day_and_a_total() {
        let text = csv(&report(), february());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines.len(), 1 + 29 + 1, "2024 is a leap year");
        assert_eq!(lines[1], "2024-02-01,0,0,0,0,0,0,0,0");
        assert_eq!(lines[10], "2024-02-10,0,1500000,1234,0,0,0,1,1.5");
        assert_eq!(lines[30], "total,0,1500000,1234,0,0,0,1,1.5");
    }

    #[test]
    fn html_escapes_and_draws_a_bar_per_day() {
        let page = html(&report(), february());
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<script>"), "unescaped name");
        assert!(!page.contains("<b>"), "unescaped description");
        // askama's spelling of the escapes.
        assert!(
            page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{page}"
        );
        assert!(page.contains("a &#34;quoted&#34; &#38; &#60;b&#62;bold&#60;/b&#62; runner"));
        assert_eq!(page.matches("<rect class=\"bar\"").count(), 29);
        assert!(page.contains("2024-02-10: 1.5 MB"));
        assert!(page.contains("<td class=\"n\">60</td>"));
        assert!(page.contains("1,234"));
        assert!(page.contains("(inactive)"));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
        assert_eq!(human_bytes(3_411_207_297), "3.4 GB");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(12), "12");
    }
}
