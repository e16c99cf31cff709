//! The HTML customer report as a browser renders it: a simulated fleet published to fresh topics,
//! `botmeter run` attributing it into a fresh ClickHouse database, `botmeter serve` answering
//! `/v1/customers/<bot>/report?month=…&format=html`, and headless Chromium (Debian's `chromium`,
//! which scripts/test.sh installs) dumping the DOM it built and taking a screenshot.
//!
//! The page must name the customer and its bot user, draw the SVG chart with one bar per day, and
//! list the customer's credentials; the screenshot must be a PNG of the window's size with real
//! content. With `BOTMETER_UPDATE_SCREENSHOT=1` the screenshot is also copied to
//! `docs/customer-report.png`, the one the README shows.
//!
//! Chromium cannot send an `Authorization` header from its command line, so this server runs
//! without API keys (open, on loopback); api_access.rs covers the keys.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use simulate::{generate, FleetConfig};

use crate::browser::{png_size, run_chromium};
use crate::support::{self, free_port, TestEnv};

const WINDOW: (u32, u32) = (1280, 1600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_report_renders_in_chromium() {
    let started = Instant::now();
    let env = TestEnv::new("report_html");
    // Four weeks of January 2026, so the month's chart has a bar for most days.
    let fleet = generate(&FleetConfig {
        seed: 7,
        users: 1,
        bot_users: 3,
        traffic_events: 3_000,
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        duration_hours: 27 * 24,
        ..FleetConfig::default()
    });
    let truth = &fleet.truth;
    env.create_topics(2).await;
    env.publish(&fleet).await;
    let ops = format!("127.0.0.1:{}", free_port());
    let mut run = env.spawn(
        "run",
        &["run", "--batch-max-wait-ms", "100", "--ops-listen", &ops],
    );
    env.wait_for_count(
        &format!("SELECT count() FROM {}.usage_events", env.database),
        truth.traffic_events,
        Duration::from_secs(120),
        &mut run,
    )
    .await;
    env.wait_for_count(
        &format!("SELECT count() FROM {}.control_events", env.database),
        truth.control_events,
        Duration::from_secs(30),
        &mut run,
    )
    .await;
    let status = run.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "run exited with {status}\n{}",
        run.log_tail()
    );
    let pipeline = started.elapsed();

    // The customer: the bot user that moved the most bytes (a customer is a bot user id).
    let (customer, owner) = truth
        .owners
        .iter()
        .filter(|(id, _)| id.starts_with("bot_"))
        .max_by_key(|(_, o)| o.usage.bytes_out)
        .expect("a bot user");
    assert!(owner.usage.bytes_out > 0, "{customer} has no usage");

    let listen = format!("127.0.0.1:{}", free_port());
    let mut serve = env.spawn("serve", &["serve", "--listen", &listen]);
    let http = reqwest::Client::new();
    let report_url = format!("http://{listen}/v1/customers/{customer}/report?month=2026-01");
    let mut report = None;
    for _ in 0..200 {
        serve.assert_running();
        if let Ok(response) = http.get(&report_url).send().await {
            if response.status() == 200 {
                report = Some(response.json::<serde_json::Value>().await.unwrap());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report =
        report.unwrap_or_else(|| panic!("{report_url} never answered 200\n{}", serve.log_tail()));
    assert_eq!(
        report["totals"]["bytes_out"], owner.usage.bytes_out,
        "{report}"
    );
    let bot_name = report["bot_users"][0]["name"].as_str().unwrap().to_owned();
    assert!(!bot_name.is_empty());
    let credentials: Vec<String> = report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(credentials.len(), 3, "one of each kind: {report}");
    let days_with_usage = report["days"].as_array().unwrap().len();
    assert!(days_with_usage >= 20, "{days_with_usage} days with usage");

    // What the browser built from the page.
    let html_url = format!("{report_url}&format=html");
    let profile = env.log_dir.join("chromium-profile");
    let dom = run_chromium(&profile, &["--dump-dom".to_owned()], &html_url);
    assert!(
        dom.contains(&format!("Usage of {customer} in 2026-01")),
        "no title naming the customer:\n{dom}"
    );
    assert!(
        dom.contains(&format!("{bot_name} <code>{customer}</code>")),
        "no bot user name {bot_name:?}:\n{dom}"
    );
    assert!(
        dom.contains("<svg") && dom.contains("Data transfer out per day"),
        "no SVG chart:\n{dom}"
    );
    assert_eq!(
        dom.matches("<rect class=\"bar\"").count(),
        31,
        "a bar per day of January"
    );
    assert!(dom.contains("<table id=\"totals\">"), "no totals table");
    let table = &dom[dom
        .find("<table id=\"credentials\">")
        .expect("no credentials table")..];
    for credential in &credentials {
        assert!(
            table.contains(&format!("<code>{credential}</code>")),
            "credential {credential} not in the table"
        );
    }

    // The screenshot.
    let png = env.log_dir.join("customer-report.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &profile,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ],
        &html_url,
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert_eq!(png_size(&bytes), WINDOW, "screenshot size");
    // A blank 1280x1600 page compresses to a few kB; text, tables and 31 bars do not.
    assert!(
        bytes.len() > 30_000,
        "screenshot of {} bytes looks empty",
        bytes.len()
    );
    if std::env::var("BOTMETER_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&png, docs.join("customer-report.png")).unwrap();
    }
    eprintln!(
        "report_html: pipeline {:.1}s, total {:.1}s, screenshot {} ({} bytes)",
        pipeline.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        png.display(),
        bytes.len()
    );

    let status = serve.terminate(Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
    env.drop_database().await;
    support::delete_topics(
        &env.brokers,
        &[
            &env.control_topic,
            &env.traffic_topic,
            &env.dead_letter_topic,
        ],
    )
    .await;
}
