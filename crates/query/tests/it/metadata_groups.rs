//! `group_by=metadata.<key>` on the real ClickHouse: usage split by a key of the credentials'
//! metadata as of each event's time, and `group_by=credential` carrying each credential's
//! description and metadata.
//!
//! The fleet, `bot_m`, 2024-05-01 (bytes out, one digit per event so sums show which counted):
//! - `cr_1` is at site `s3` until 10:30, then `s4`: 1 at 10:00 and 10 at 10:50 on `ep_1` (one
//!   endpoint-hour under each site), 100 at 11:10.
//! - `cr_2` is at site `s3` throughout: 1,000 at 10:20 on `ep_2`.
//! - `cr_3`'s metadata has no `site` (only `{"env":"dev"}`): 10,000 at 10:40.
//! - `cr_4`'s metadata nests it (`{"where":{"site":"s9"}}`): not at the top level, so `(none)`:
//!   100,000 at 10:45.
//! - a restated event of `cr_2` (a -1 copy and a +1 row) nets to one.

use axum::http::StatusCode;
use botmeter_query::rows::{ControlRow, UsageRow};
use serde_json::{json, Value};

use crate::common::TestDb;
use crate::reports::{credential, get, get_json as json, usage, Traffic};

fn usage_rows() -> Vec<UsageRow> {
    let out = |bytes_out| Traffic {
        bytes_out,
        ..Traffic::default()
    };
    let mut rows: Vec<UsageRow> = [
        ("ev_1", "2024-05-01 10:00:00", "ep_1", "cr_1", 1),
        ("ev_2", "2024-05-01 10:50:00", "ep_1", "cr_1", 10),
        ("ev_3", "2024-05-01 11:10:00", "ep_1", "cr_1", 100),
        ("ev_4", "2024-05-01 10:20:00", "ep_2", "cr_2", 1_000),
        ("ev_5", "2024-05-01 10:40:00", "ep_3", "cr_3", 10_000),
        ("ev_6", "2024-05-01 10:45:00", "ep_4", "cr_4", 100_000),
    ]
    .into_iter()
    .map(|(id, time, endpoint, cred, bytes)| usage(id, time, endpoint, cred, "bot_m", out(bytes)))
    .collect();
    // ev_4 restated: its -1 copy and the +1 row.
    for sign in [-1, 1] {
        rows.push(usage(
            "ev_4",
            "2024-05-01 10:20:00",
            "ep_2",
            "cr_2",
            "bot_m",
            Traffic {
                bytes_out: 1_000,
                sign,
                ..Traffic::default()
            },
        ));
    }
    rows
}

fn control_rows() -> Vec<ControlRow> {
    let created = "2024-04-01 00:00:00";
    let mut cr_1 = credential(
        "ev_c1",
        "tunnel_credential_created.v0",
        created,
        "cr_1",
        "bot_m",
        r#"{"site":"s3","device_id":"d1"}"#,
    );
    cr_1.object = json!({"id": "cr_1", "owner_id": "bot_m", "description": "line 1",
                         "metadata": r#"{"site":"s3","device_id":"d1"}"#})
    .to_string();
    vec![
        cr_1,
        credential(
            "ev_c1u",
            "tunnel_credential_updated.v0",
            "2024-05-01 10:30:00",
            "cr_1",
            "bot_m",
            r#"{"site":"s4","device_id":"d1"}"#,
        ),
        credential(
            "ev_c2",
            "ssh_public_key_created.v0",
            created,
            "cr_2",
            "bot_m",
            r#"{"site":"s3"}"#,
        ),
        credential(
            "ev_c3",
            "tunnel_credential_created.v0",
            created,
            "cr_3",
            "bot_m",
            r#"{"env":"dev"}"#,
        ),
        credential(
            "ev_c4",
            "tunnel_credential_created.v0",
            created,
            "cr_4",
            "bot_m",
            r#"{"where":{"site":"s9"}}"#,
        ),
    ]
}

/// (group key, bytes out, endpoints, endpoint-hours) of each group's totals.
fn totals(report: &Value) -> Vec<(String, u64, u64, u64)> {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let t = &g["totals"];
            (
                g["key"].as_str().unwrap().to_owned(),
                t["bytes_out"].as_u64().unwrap(),
                t["endpoints"].as_u64().unwrap(),
                t["active_endpoint_hours"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn usage_groups_by_a_metadata_key_as_of_each_events_time() {
    let db = TestDb::migrated("metadata_groups").await;
    let writer = db.writer();
    writer.insert_usage(&usage_rows()).await.unwrap();
    writer.insert_control(&control_rows()).await.unwrap();
    let state = db.state();
    let base = "/v1/owners/bot_m/usage?from=2024-05-01&to=2024-05-02";

    let report = json(&state, &format!("{base}&group_by=metadata.site")).await;
    assert_eq!(report["group_by"], "metadata.site");
    let s = |key: &str, out, eps, hours| (key.to_owned(), out, eps, hours);
    assert_eq!(
        totals(&report),
        [
            s("(none)", 110_000, 2, 2),
            s("s3", 1_001, 2, 2),
            s("s4", 110, 1, 2),
        ]
    );
    // Per hour: ep_1 is an endpoint-hour of s3 and of s4 in the 10:00 hour.
    let s4 = &report["groups"][2]["buckets"];
    assert_eq!(
        (
            s4[0]["start"].clone(),
            s4[0]["bytes_out"].clone(),
            s4[0]["active_endpoint_hours"].clone()
        ),
        (json!("2024-05-01T10:00:00Z"), json!(10), json!(1))
    );
    assert_eq!(s4[1]["bytes_out"], 100);
    // The ungrouped totals are unchanged, and the groups add up to them.
    assert_eq!(report["totals"]["bytes_out"], 111_111);
    // Another key, a range after the move (cr_1 at s4 throughout: looked up, not spanned), and
    // a ragged range.
    let report = json(
        &state,
        "/v1/owners/bot_m/usage?from=2024-05-01T10:35:00Z&to=2024-05-01T12:00:00Z&group_by=metadata.site",
    )
    .await;
    assert_eq!(
        totals(&report),
        [s("(none)", 110_000, 2, 2), s("s4", 110, 1, 2)]
    );
    let report = json(
        &state,
        &format!("{base}&group_by=metadata.device_id&granularity=day"),
    )
    .await;
    assert_eq!(
        totals(&report),
        [s("(none)", 111_000, 3, 3), s("d1", 111, 1, 2)]
    );

    // group_by=credential carries each credential's description and metadata (its version at
    // the end of the range).
    let report = json(&state, &format!("{base}&group_by=credential")).await;
    let cr_1 = &report["groups"][0];
    assert_eq!(
        (
            cr_1["key"].clone(),
            cr_1["description"].clone(),
            cr_1["metadata"].clone()
        ),
        (
            json!("cr_1"),
            json!(""),
            json!(r#"{"site":"s4","device_id":"d1"}"#)
        )
    );

    // The top route ranks the account's metadata values instead of owners.
    let top = json(
        &state,
        "/v1/usage/top?from=2024-05-01&to=2024-05-02&group_by=metadata.site&limit=2",
    )
    .await;
    assert_eq!(top["group_by"], "metadata.site");
    assert_eq!(top["owners"], json!([]));
    let ranked: Vec<(u64, &str, u64, u64)> = top["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["rank"].as_u64().unwrap(),
                g["key"].as_str().unwrap(),
                g["usage"]["bytes_out"].as_u64().unwrap(),
                g["usage"]["active_endpoint_hours"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranked, [(1, "(none)", 110_000, 2), (2, "s3", 1_001, 2)]);
    let top = json(
        &state,
        "/v1/usage/top?from=2024-05-01&to=2024-05-02&group_by=metadata.site&metric=active_endpoint_hours",
    )
    .await;
    let keys: Vec<&str> = top["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    // Two endpoint-hours each: ties by value.
    assert_eq!(keys, ["(none)", "s3", "s4"]);
    let (status, _, _) = get(
        &state,
        "/v1/usage/top?from=2024-05-01&to=2024-05-02&group_by=credential",
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A key that cannot be one.
    let (status, _, body) = get(&state, &format!("{base}&group_by=metadata."), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("metadata.<key>"),
        "{body}"
    );
}
