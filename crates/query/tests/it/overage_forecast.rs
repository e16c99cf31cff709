//! The month-end projection of `/v1/overage` against ClickHouse 18.16, with every figure worked out
//! by hand. Plan: 1000 bytes out included, 0.01 per byte over. May 2024, as of May 11 00:00 UTC
//! (21 days left):
//!
//! - `bot_a`: 100 bytes out on May 1, 200 on May 5, 300 on May 9, 100 on May 10 06:00; month to
//!   date 700; the 7 days before `as_of` (May 4 00:00 to May 11 00:00) 600, 600/7 a day;
//!   projected 700 + 600/7 × 21 = 2500.
//! - `bot_b`: 50 on May 3 (before the trailing week): month to date 50, projected 50.
//! - 10,000 more on May 20 (after `as_of`): in the month's usage, not in the projection.
//!
//! The account: month to date 750, 600/7 a day, projected 2550 (1550 over: 15.50); the quota is
//! reached (750 + 600/7 × d = 1000) after d = 35/12 days, May 13 22:00: crossed on 2024-05-13.

use std::path::Path;

use botmeter_query::api::{Plan, SettingsFormat};
use serde_json::Value;

use crate::common::TestDb;
use crate::reports::{get_json, usage, Traffic};

fn close(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

#[tokio::test]
async fn the_month_is_projected_from_the_trailing_week() {
    let db = TestDb::migrated("overage_forecast").await;
    let bytes = |bytes_out| Traffic {
        bytes_out,
        ..Traffic::default()
    };
    db.writer()
        .insert_usage(&[
            usage(
                "a1",
                "2024-05-01 12:00:00",
                "ep_a",
                "cr_a",
                "bot_a",
                bytes(100),
            ),
            usage(
                "a2",
                "2024-05-05 12:00:00",
                "ep_a",
                "cr_a",
                "bot_a",
                bytes(200),
            ),
            usage(
                "a3",
                "2024-05-09 12:00:00",
                "ep_a",
                "cr_a",
                "bot_a",
                bytes(300),
            ),
            usage(
                "a4",
                "2024-05-10 06:00:00",
                "ep_a",
                "cr_a",
                "bot_a",
                bytes(100),
            ),
            usage(
                "b1",
                "2024-05-03 00:00:00",
                "ep_b",
                "cr_b",
                "bot_b",
                bytes(50),
            ),
            usage(
                "a5",
                "2024-05-20 00:00:00",
                "ep_a",
                "cr_a",
                "bot_a",
                bytes(10_000),
            ),
        ])
        .await
        .unwrap();
    let plan = Plan::parse(
        Path::new("plan.toml"),
        "name = \"pro\"\n[metrics.bytes_out]\nincluded = 1000\nunit = 1\nprice_per_unit = 0.01\n",
        SettingsFormat::Toml,
    )
    .unwrap();
    let state = db.state().with_plan(plan);

    let report = get_json(
        &state,
        "/v1/overage?month=2024-05&as_of=2024-05-11T00:00:00Z",
    )
    .await;
    // The month itself: every byte of it.
    assert!(close(&report["metrics"][0]["usage"], 10_750.0), "{report}");
    let forecast = &report["forecast"];
    assert_eq!(forecast["as_of"], "2024-05-11T00:00:00Z", "{forecast}");
    assert!(forecast["method"]
        .as_str()
        .unwrap()
        .contains("trailing_7_day_daily_rate"));
    assert!(close(&forecast["days_left"], 21.0), "{forecast}");
    let bytes_out = &forecast["metrics"][0];
    assert_eq!(bytes_out["metric"], "bytes_out");
    assert!(close(&bytes_out["month_to_date"], 750.0), "{bytes_out}");
    assert!(
        close(&bytes_out["trailing_7_day_daily_rate"], 600.0 / 7.0),
        "{bytes_out}"
    );
    assert!(close(&bytes_out["projected"], 2_550.0), "{bytes_out}");
    assert!(
        close(&bytes_out["projected_overage"], 1_550.0),
        "{bytes_out}"
    );
    assert!(close(&bytes_out["projected_amount"], 15.5), "{bytes_out}");
    assert_eq!(bytes_out["over_quota"], false);
    assert_eq!(
        bytes_out["projected_crossing_date"], "2024-05-13",
        "{bytes_out}"
    );
    let owners: Vec<(&str, f64, f64)> = forecast["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["owner_id"].as_str().unwrap(),
                o["month_to_date"]["bytes_out"].as_f64().unwrap(),
                o["projected"]["bytes_out"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(owners.len(), 2, "{forecast}");
    assert_eq!((owners[0].0, owners[0].1), ("bot_a", 700.0));
    assert!((owners[0].2 - 2_500.0).abs() < 1e-9, "{owners:?}");
    assert_eq!(owners[1], ("bot_b", 50.0, 50.0));

    // One owner: its projection only. Later, on May 25: over the quota already, no crossing day.
    let report = get_json(
        &state,
        "/v1/overage?month=2024-05&owner_id=bot_b&as_of=2024-05-11T00:00:00Z",
    )
    .await;
    assert_eq!(report["forecast"]["owners"].as_array().unwrap().len(), 1);
    let late = get_json(&state, "/v1/overage?month=2024-05&as_of=2024-05-25").await;
    let bytes_out = &late["forecast"]["metrics"][0];
    assert_eq!(bytes_out["over_quota"], true, "{bytes_out}");
    assert!(
        bytes_out.get("projected_crossing_date").is_none(),
        "{bytes_out}"
    );
    // A month that is over, without as_of: no forecast.
    let past = get_json(&state, "/v1/overage?month=2024-05").await;
    assert!(past.get("forecast").is_none(), "{past}");
}
