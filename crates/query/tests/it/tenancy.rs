//! Tenancy by ownership, on the real ClickHouse: a customer's report and the owner usage a
//! customer key may read cover only the credentials its bot users own (and the bots' own usage);
//! a bot user's customer is the value of the metadata key at the top level of its metadata, in the
//! version in force at the end of the report's range; and a credential whose metadata names the
//! customer but whose owner is not one of its bot users is never the customer's.
//!
//! The fleet, May 2024 (bytes out of each credential in May, one digit each so totals show which
//! credentials were counted):
//! - `bot_a` (`{"customer":"acme"}`) owns `cr_a`: 1.
//! - `bot_z` (`{"customer":"zeta"}`) owns `cr_z`, whose metadata names acme: 10.
//! - the user `usr_1` owns `cr_u`, whose metadata names acme: 100.
//! - `bot_m` named acme until 2024-06-10, globex after; it owns `cr_m`: 1,000 in May, 7,000,000
//!   in July.
//! - `bot_n` (`{"owner":{"customer":"acme"}}`: the key is nested, not at the top level) owns
//!   `cr_n`: 10,000.
//! - `bot_t` (`{"tags":{"customer":"globex"},"customer":"acme"}`) owns `cr_t`: 100,000.

use std::path::Path;

use axum::http::StatusCode;
use botmeter_query::api::{key_digest, ApiKeys, AppState, SettingsFormat};
use botmeter_query::rows::{ControlRow, UsageRow};
use serde_json::Value;

use crate::common::TestDb;
use crate::reports::{bot_user, credential, get, usage, Traffic};

const ACME: &str = r#"{"customer":"acme"}"#;

fn usage_rows() -> Vec<UsageRow> {
    let out = |bytes_out| Traffic {
        bytes_out,
        ..Traffic::default()
    };
    [
        ("ev_a", "2024-05-02 10:00:00", "cr_a", "bot_a", 1),
        ("ev_z", "2024-05-02 10:00:00", "cr_z", "bot_z", 10),
        ("ev_u", "2024-05-02 10:00:00", "cr_u", "usr_1", 100),
        ("ev_m", "2024-05-05 10:00:00", "cr_m", "bot_m", 1_000),
        ("ev_m7", "2024-07-05 10:00:00", "cr_m", "bot_m", 7_000_000),
        ("ev_n", "2024-05-02 10:00:00", "cr_n", "bot_n", 10_000),
        ("ev_t", "2024-05-02 10:00:00", "cr_t", "bot_t", 100_000),
    ]
    .into_iter()
    .map(|(id, time, cred, owner, bytes)| {
        let endpoint = format!("ep_{cred}");
        usage(id, time, &endpoint, cred, owner, out(bytes))
    })
    .collect()
}

fn control_rows() -> Vec<ControlRow> {
    let created = "2024-03-01 00:00:00";
    let bot =
        |id: &str, metadata: &str| bot_user(id, "created", created, id, id, true, Some(metadata));
    let cred = |id: &str, owner: &str, metadata: &str| {
        credential(
            id,
            "tunnel_credential_created.v0",
            created,
            id,
            owner,
            metadata,
        )
    };
    vec![
        bot("bot_a", ACME),
        cred("cr_a", "bot_a", ""),
        bot("bot_z", r#"{"customer":"zeta"}"#),
        cred("cr_z", "bot_z", ACME),
        cred("cr_u", "usr_1", ACME),
        bot("bot_m", ACME),
        bot_user(
            "bot_m_moved",
            "updated",
            "2024-06-10 00:00:00",
            "bot_m",
            "bot_m",
            true,
            Some(r#"{"customer":"globex"}"#),
        ),
        cred("cr_m", "bot_m", ""),
        bot("bot_n", r#"{"owner":{"customer":"acme"}}"#),
        cred("cr_n", "bot_n", ""),
        bot(
            "bot_t",
            r#"{"tags":{"customer":"globex"},"customer":"acme"}"#,
        ),
        cred("cr_t", "bot_t", ""),
    ]
}

/// A migrated database with the fleet, and the API with the `customer` key and customer keys for
/// acme and globex.
async fn fleet(name: &str) -> (TestDb, AppState) {
    let db = TestDb::migrated(&format!("tenancy_{name}")).await;
    let writer = db.writer();
    writer.insert_usage(&usage_rows()).await.unwrap();
    writer.insert_control(&control_rows()).await.unwrap();
    let text = format!(
        "[[keys]]\nname = \"acme\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n\
         [[keys]]\nname = \"globex\"\nsha256 = \"{}\"\nrole = \"customer:globex\"\n\
         [[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        key_digest("acme-secret"),
        key_digest("globex-secret"),
        key_digest("ops-secret"),
    );
    let keys = ApiKeys::parse(Path::new("keys.toml"), &text, SettingsFormat::Toml).unwrap();
    let state = db
        .state()
        .with_customer_metadata_key("customer")
        .unwrap()
        .with_api_keys(keys);
    (db, state)
}

fn bearer(customer: &str) -> [(&'static str, String); 1] {
    [("authorization", format!("Bearer {customer}-secret"))]
}

/// `uri` with `key`: its status and, for a 200, its JSON body.
async fn call(state: &AppState, uri: &str, key: &str) -> (StatusCode, Value) {
    let [(name, value)] = bearer(key);
    let (status, _, body) = get(state, uri, &[(name, value.as_str())]).await;
    let json = if status == StatusCode::OK {
        serde_json::from_slice(&body).unwrap()
    } else {
        Value::Null
    };
    (status, json)
}

/// A report's bot user ids, credential ids and total bytes out.
fn summary(report: &Value) -> (Vec<&str>, Vec<&str>, u64) {
    let ids = |list: &str, field: &str| {
        report[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[field].as_str().unwrap())
            .collect::<Vec<_>>()
    };
    (
        ids("bot_users", "id"),
        ids("credentials", "credential_id"),
        report["totals"]["bytes_out"].as_u64().unwrap(),
    )
}

const MAY: &str = "from=2024-05-01&to=2024-06-01";

#[tokio::test]
async fn a_credential_naming_the_customer_is_not_its_unless_its_bot_users_own_it() {
    let (_db, state) = fleet("ownership").await;
    let (status, report) = call(&state, "/v1/customers/acme/report?month=2024-05", "acme").await;
    assert_eq!(status, StatusCode::OK);
    let (_, credentials, bytes_out) = summary(&report);
    assert!(
        !credentials.contains(&"cr_z") && !credentials.contains(&"cr_u"),
        "{credentials:?}"
    );
    // cr_a + cr_m + cr_t: nothing of cr_z (10) or cr_u (100).
    assert_eq!(bytes_out, 101_001, "{report}");
    // Every credential listed is owned by a listed bot user.
    for c in report["credentials"].as_array().unwrap() {
        let owner = c["owner_id"].as_str().unwrap();
        assert!(
            report["bot_users"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["id"] == owner),
            "{c}"
        );
    }
    // Nor may acme's key read the owners of those credentials.
    for owner in ["bot_z", "usr_1"] {
        let uri = format!("/v1/owners/{owner}/usage?{MAY}");
        assert_eq!(call(&state, &uri, "acme").await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_bot_users_customer_is_read_as_of_the_reports_range() {
    let (_db, state) = fleet("as_of").await;
    // In May bot_m named acme; it names globex since June 10.
    let (status, report) = call(&state, "/v1/customers/acme/report?month=2024-05", "acme").await;
    assert_eq!(status, StatusCode::OK);
    let (bots, credentials, _) = summary(&report);
    assert!(
        bots.contains(&"bot_m") && credentials.contains(&"cr_m"),
        "{report}"
    );
    let (status, _) = call(
        &state,
        "/v1/customers/globex/report?month=2024-05",
        "globex",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "globex had no bot user in May"
    );
    let (status, report) = call(
        &state,
        "/v1/customers/globex/report?month=2024-07",
        "globex",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary(&report), (vec!["bot_m"], vec!["cr_m"], 7_000_000));
    // The same rule for the owner usage a customer key may read.
    let may = format!("/v1/owners/bot_m/usage?{MAY}");
    let (status, usage) = call(&state, &may, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(usage["totals"]["bytes_out"], 1_000);
    assert_eq!(call(&state, &may, "globex").await.0, StatusCode::NOT_FOUND);
    let july = "/v1/owners/bot_m/usage?from=2024-07-01&to=2024-08-01";
    assert_eq!(call(&state, july, "globex").await.0, StatusCode::OK);
    assert_eq!(call(&state, july, "acme").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_metadata_key_counts_at_the_top_level_only() {
    let (_db, state) = fleet("top_level").await;
    let (status, report) = call(&state, "/v1/customers/acme/report?month=2024-05", "acme").await;
    assert_eq!(status, StatusCode::OK);
    let (bots, _, _) = summary(&report);
    // bot_n has `customer` only nested; bot_t has a nested globex before its top-level acme.
    assert_eq!(bots, ["bot_a", "bot_m", "bot_t"], "{report}");
    let (status, _) = call(&state, "/v1/customers/globex/report?month=2024-05", "ops").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (owner, expected) in [("bot_n", StatusCode::NOT_FOUND), ("bot_t", StatusCode::OK)] {
        let uri = format!("/v1/owners/{owner}/usage?{MAY}");
        assert_eq!(call(&state, &uri, "acme").await.0, expected, "{owner}");
    }
}
