//! The customer report as CSV (one row per day of the month, then a `total` row) and as a
//! self-contained HTML page: totals, a server-rendered SVG bar chart of daily data transfer out,
//! and the credentials with their age. Every value from the audit log (names, descriptions,
//! ids) is HTML-escaped: metadata is whatever a user typed.

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

/// Escapes text for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
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

/// The daily bytes-out bar chart.
pub(super) fn chart(days: &[(String, UsageMetrics)]) -> String {
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
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="chart-title"><title id="chart-title">Data transfer out per day</title>"##
    );
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y}" stroke="#888"/><line x1="{LEFT}" y1="{y}" x2="{x2}" y2="{y}" stroke="#888"/>"##,
        y = TOP + plot_h,
        x2 = LEFT + plot_w
    );
    let _ = write!(
        svg,
        r##"<text x="{x}" y="{y}" font-size="11" text-anchor="end">{label}</text><text x="{x}" y="{y0}" font-size="11" text-anchor="end">0</text>"##,
        x = LEFT - 6.0,
        y = TOP + 4.0,
        y0 = TOP + plot_h,
        label = escape(&human_bytes(max))
    );
    for (i, (date, metrics)) in days.iter().enumerate() {
        let h = metrics.bytes_out as f64 / max as f64 * plot_h;
        let x = LEFT + i as f64 * slot + slot * 0.15;
        let y = TOP + plot_h - h;
        let _ = write!(
            svg,
            r##"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#3b6fd8"><title>{date}: {label}</title></rect>"##,
            w = slot * 0.7,
            date = escape(date),
            label = escape(&human_bytes(metrics.bytes_out))
        );
        let day = date.get(8..10).unwrap_or("");
        if i == 0 || (i + 1) % 5 == 0 {
            let _ = write!(
                svg,
                r##"<text x="{x:.1}" y="{y:.1}" font-size="10" text-anchor="middle">{day}</text>"##,
                x = x + slot * 0.35,
                y = TOP + plot_h + 14.0,
                day = escape(day)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The readable page.
pub(super) fn html(report: &CustomerReport, month: Month) -> String {
    let days = all_days(report, month);
    let mut page = String::new();
    write_head(&mut page, report);
    write_totals(&mut page, &report.totals);
    let _ = write!(
        page,
        "<h2>Data transfer out per day</h2>\n{}\n",
        chart(&days)
    );
    write_credentials(&mut page, &report.credentials);
    page.push_str("</table>\n<p class=\"muted\">Generated by botmeter. Data transfer is measured at the endpoints; \
                   an active endpoint hour is an endpoint with outgoing traffic in a UTC hour.</p>\n</body></html>\n");
    page
}

/// The document head, the title and the line naming the month and the bot users.
fn write_head(page: &mut String, report: &CustomerReport) {
    let title = format!("Usage of {} in {}", report.customer_id, report.month);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:76rem}}h1{{font-size:1.6rem}}\
         table{{border-collapse:collapse;margin:1rem 0;font-size:.85rem;max-width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.25rem .5rem;text-align:left}}\
         code{{word-break:break-all}}\
         td.n{{text-align:right;font-variant-numeric:tabular-nums}}.muted{{color:#777}}</style></head><body>\n\
         <h1>{title}</h1>\n<p class=\"muted\">{from} to {to} (UTC). Bot users: {bots}.</p>\n",
        title = escape(&title),
        from = escape(&report.from),
        to = escape(&report.to),
        bots = bot_user_list(report),
    );
}

/// The bot users, each with its name, id and state, or `none`.
fn bot_user_list(report: &CustomerReport) -> String {
    if report.bot_users.is_empty() {
        return "none".to_owned();
    }
    report
        .bot_users
        .iter()
        .map(|b| {
            let state = if b.deleted {
                " (deleted)"
            } else if b.active {
                ""
            } else {
                " (inactive)"
            };
            format!("{} <code>{}</code>{state}", escape(&b.name), escape(&b.id))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The month's totals table.
fn write_totals(page: &mut String, t: &UsageMetrics) {
    let _ = write!(
        page,
        "<h2>Totals</h2>\n<table id=\"totals\"><tr><th>Data transfer out</th><td class=\"n\">{}</td></tr>\
         <tr><th>Data transfer in</th><td class=\"n\">{}</td></tr>\
         <tr><th>HTTP requests</th><td class=\"n\">{}</td></tr>\
         <tr><th>TCP connections</th><td class=\"n\">{}</td></tr>\
         <tr><th>Endpoints</th><td class=\"n\">{}</td></tr>\
         <tr><th>Active endpoint hours</th><td class=\"n\">{}</td></tr>\
         <tr><th>Agent sessions</th><td class=\"n\">{}</td></tr>\
         <tr><th>Session hours</th><td class=\"n\">{:.2}</td></tr></table>\n",
        escape(&human_bytes(t.bytes_out)),
        escape(&human_bytes(t.bytes_in)),
        grouped(t.http_requests),
        grouped(t.tcp_connections),
        grouped(t.endpoints),
        grouped(t.active_endpoint_hours),
        grouped(t.agent_sessions.unwrap_or(0)),
        t.session_hours.unwrap_or(0.0),
    );
}

/// The credentials table, a row per credential, left open for the caller to close.
fn write_credentials(page: &mut String, credentials: &[CustomerCredential]) {
    page.push_str(
        "<h2>Credentials</h2>\n<table id=\"credentials\"><tr><th>Credential</th><th>Kind</th><th>Owner</th>\
         <th>Description</th><th>Created</th><th>Age (days)</th><th>Deleted</th><th>Data out</th>\
         <th>Requests</th><th>Session hours</th></tr>\n",
    );
    for c in credentials {
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td></tr>",
            escape(&c.credential_id),
            escape(&c.kind),
            escape(&c.owner_id),
            escape(&c.description),
            escape(c.created_at.get(..10).unwrap_or(&c.created_at)),
            c.age_days,
            escape(c.deleted_at.as_deref().and_then(|d| d.get(..10)).unwrap_or("")),
            escape(&human_bytes(c.usage.bytes_out)),
            grouped(c.usage.http_requests),
            c.usage.session_hours.unwrap_or(0.0),
        );
    }
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
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("a &quot;quoted&quot; &amp; &lt;b&gt;bold&lt;/b&gt; runner"));
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
