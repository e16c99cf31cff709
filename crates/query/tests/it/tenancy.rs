//! Tenancy by ownership, on the real ClickHouse: a customer's report and the owner usage a
//! customer key may read cover only the credentials its bot users own (and the bots' own usage);
//! a bot user's customer is the value of the metadata key at the top level of its metadata, in the
//! version in force at each event's time (a bot user moved mid-month counts on each side for its
//! part); and a credential whose metadata names the customer but whose owner is not one of its bot
//! users is never the customer's.
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
//!
//! And a move within a month, on endpoint `ep_s` (bytes out, one digit each):
//! - `bot_s` named initech until 2024-05-15 10:37:30, umbrella from then on; it owns `cr_s`: 1 on
//!   May 3, 20 at 10:05 and 300 at 10:35 on May 15 (initech's), 4,000 at 10:37:30 (the change
//!   itself: umbrella's), 50,000 at 10:50 and 600,000 on May 20 (umbrella's). An agent session of
//!   `cr_s` runs from 10:00 to 11:00 on May 15, across the change.
//! - `bot_v` (`{"customer":"umbrella"}`) owns `cr_v`: 7,000,000 at 10:40 on May 15, on `ep_s` too.

use std::path::Path;

use axum::http::StatusCode;
use botmeter_query::api::{key_digest, ApiKeys, AppState, SettingsFormat};
use botmeter_query::rows::{ControlRow, UsageRow};
use serde_json::Value;

use crate::common::TestDb;
use crate::reports::{bot_user, credential, get, session, usage, Traffic};

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
    .chain(
        [
            ("ev_s1", "2024-05-03 08:00:00", "cr_s", "bot_s", 1),
            ("ev_s2", "2024-05-15 10:05:00", "cr_s", "bot_s", 20),
            ("ev_s3", "2024-05-15 10:35:00", "cr_s", "bot_s", 300),
            ("ev_s4", "2024-05-15 10:37:30", "cr_s", "bot_s", 4_000),
            ("ev_s5", "2024-05-15 10:50:00", "cr_s", "bot_s", 50_000),
            ("ev_s6", "2024-05-20 12:00:00", "cr_s", "bot_s", 600_000),
            ("ev_v1", "2024-05-15 10:40:00", "cr_v", "bot_v", 7_000_000),
        ]
        .into_iter()
        .map(|(id, time, cred, owner, bytes)| usage(id, time, "ep_s", cred, owner, out(bytes))),
    )
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
        bot("bot_s", r#"{"customer":"initech"}"#),
        bot_user(
            "bot_s_moved",
            "updated",
            "2024-05-15 10:37:30",
            "bot_s",
            "bot_s",
            true,
            Some(r#"{"customer":"umbrella"}"#),
        ),
        cred("cr_s", "bot_s", ""),
        bot("bot_v", r#"{"customer":"umbrella"}"#),
        cred("cr_v", "bot_v", ""),
        session(
            "ev_ss",
            "start",
            "2024-05-15 10:00:00",
            "ts_s",
            "cr_s",
            None,
        ),
        session(
            "ev_ssx",
            "stop",
            "2024-05-15 11:00:00",
            "ts_s",
            "cr_s",
            None,
        ),
    ]
}

/// A migrated database with the fleet, and the API with the `customer` key, an admin key (`ops`)
/// and customer keys for acme, globex, initech and umbrella.
async fn fleet(name: &str) -> (TestDb, AppState) {
    let db = TestDb::migrated(&format!("tenancy_{name}")).await;
    let writer = db.writer();
    writer.insert_usage(&usage_rows()).await.unwrap();
    writer.insert_control(&control_rows()).await.unwrap();
    let mut text = format!(
        "[[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
        key_digest("ops-secret"),
    );
    for customer in ["acme", "globex", "initech", "umbrella"] {
        text.push_str(&format!(
            "[[keys]]\nname = \"{customer}\"\nsha256 = \"{}\"\nrole = \"customer:{customer}\"\n",
            key_digest(&format!("{customer}-secret")),
        ));
    }
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

/// (bytes_out, endpoints, active_endpoint_hours, agent_sessions, session_hours) of a metrics
/// object.
type Figures = (u64, u64, u64, u64, f64);

fn figures(metrics: &Value) -> Figures {
    (
        metrics["bytes_out"].as_u64().unwrap(),
        metrics["endpoints"].as_u64().unwrap(),
        metrics["active_endpoint_hours"].as_u64().unwrap(),
        metrics["agent_sessions"].as_u64().unwrap(),
        metrics["session_hours"].as_f64().unwrap(),
    )
}

/// The buckets (with traffic, then session-only) of a report's `list` as (start, figures).
fn bucket_figures<'a>(report: &'a Value, list: &str) -> Vec<(&'a str, Figures)> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["start"].as_str().unwrap(), figures(b)))
        .collect()
}

/// A credential's usage in a customer report.
fn credential_figures(report: &Value, credential_id: &str) -> Figures {
    let credential = report["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["credential_id"] == credential_id)
        .unwrap_or_else(|| panic!("no {credential_id} in {report}"));
    figures(&credential["usage"])
}

#[tokio::test]
async fn a_bot_user_that_moves_mid_month_counts_for_each_customer_while_it_names_it() {
    let (_db, state) = fleet("moved").await;
    // bot_s named initech until 2024-05-15 10:37:30 and umbrella from then on: each report has
    // exactly its side, the change's own hour split between them, the change's instant umbrella's.
    let (status, initech) = call(
        &state,
        "/v1/customers/initech/report?month=2024-05",
        "initech",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "initech had bot_s until May 15");
    assert_eq!(summary(&initech), (vec!["bot_s"], vec!["cr_s"], 321));
    // The session ran 10:00-11:00: 37.5 minutes of it were initech's.
    assert_eq!(figures(&initech["totals"]), (321, 1, 2, 1, 0.625));
    assert_eq!(credential_figures(&initech, "cr_s"), (321, 1, 2, 1, 0.625));
    assert_eq!(
        bucket_figures(&initech, "days"),
        [
            ("2024-05-03T00:00:00Z", (1, 1, 1, 0, 0.0)),
            ("2024-05-15T00:00:00Z", (320, 1, 1, 1, 0.625)),
        ]
    );

    let (status, umbrella) = call(
        &state,
        "/v1/customers/umbrella/report?month=2024-05",
        "umbrella",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary(&umbrella),
        (vec!["bot_s", "bot_v"], vec!["cr_s", "cr_v"], 7_654_000)
    );
    // ep_s is active in 10:00 of May 15 through both cr_s and cr_v: one endpoint-hour.
    assert_eq!(figures(&umbrella["totals"]), (7_654_000, 1, 2, 1, 0.375));
    assert_eq!(
        credential_figures(&umbrella, "cr_s"),
        (654_000, 1, 2, 1, 0.375)
    );
    assert_eq!(
        credential_figures(&umbrella, "cr_v"),
        (7_000_000, 1, 1, 0, 0.0)
    );
    assert_eq!(
        bucket_figures(&umbrella, "days"),
        [
            ("2024-05-15T00:00:00Z", (7_054_000, 1, 1, 1, 0.375)),
            ("2024-05-20T00:00:00Z", (600_000, 1, 1, 0, 0.0)),
        ]
    );

    // The two sides are the whole of bot_s's May, as an account-wide key sees it.
    let may = format!("/v1/owners/bot_s/usage?{MAY}&granularity=hour");
    let (status, all) = call(&state, &may, "ops").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        credential_figures(&initech, "cr_s").0 + credential_figures(&umbrella, "cr_s").0,
        all["totals"]["bytes_out"].as_u64().unwrap()
    );
    assert_eq!(all["totals"]["bytes_out"], 654_321);

    // A customer key reads the bot's usage while it was that customer's, per hour too.
    let (status, usage) = call(&state, &may, "initech").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(figures(&usage["totals"]), (321, 1, 2, 1, 0.625));
    assert_eq!(
        bucket_figures(&usage, "buckets"),
        [
            ("2024-05-03T08:00:00Z", (1, 1, 1, 0, 0.0)),
            ("2024-05-15T10:00:00Z", (320, 1, 1, 1, 0.625)),
        ]
    );
    let (status, usage) = call(&state, &may, "umbrella").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(figures(&usage["totals"]), (654_000, 1, 2, 1, 0.375));
    assert_eq!(
        bucket_figures(&usage, "buckets"),
        [
            ("2024-05-15T10:00:00Z", (54_000, 1, 1, 1, 0.375)),
            ("2024-05-20T12:00:00Z", (600_000, 1, 1, 0, 0.0)),
        ]
    );
    // A range with ragged ends around the change (raw edges, rollup middle).
    let ragged = "/v1/owners/bot_s/usage?from=2024-05-15T10:07:00Z&to=2024-05-15T10:52:00Z";
    for (key, bytes_out) in [("initech", 300), ("umbrella", 54_000), ("ops", 54_300)] {
        let (status, usage) = call(&state, ragged, key).await;
        assert_eq!(status, StatusCode::OK, "{key}");
        assert_eq!(usage["totals"]["bytes_out"], bytes_out, "{key}: {usage}");
    }
    // Before the change bot_s was never umbrella's; after it, never initech's.
    let before = "/v1/owners/bot_s/usage?from=2024-05-01&to=2024-05-15T10:30:00Z";
    assert_eq!(
        call(&state, before, "umbrella").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&state, before, "initech").await.0, StatusCode::OK);
    let after = "/v1/owners/bot_s/usage?from=2024-05-15T10:45:00Z&to=2024-06-01";
    assert_eq!(
        call(&state, after, "initech").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, usage) = call(&state, after, "umbrella").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(usage["totals"]["bytes_out"], 650_000);
}
