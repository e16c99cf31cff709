//! `GET /v1/credentials` (the credential hygiene report) against ClickHouse 18.16: a small fleet
//! inserted directly, every column, filter, sort and format checked against numbers worked out by
//! hand below, as of a fixed `at` (2024-07-01T00:00:00Z) unless said otherwise.
//!
//! The fleet (ages in whole days to `at`, or to the deletion):
//! - `cr_old`, authtoken of `bot_a`, created 2024-01-01 with an empty ACL, updated 2024-03-01 to
//!   `bind:*.example.com` and a new description (and again on 2024-07-05, after `at`): 182 days,
//!   rotation due. Used 2024-06-20 12:00 (flagged acl_violation); an event of 06-25 and a flagged
//!   one of 06-22 were restated away (sign -1 copies); one at `at` exactly does not count. So last
//!   used 06-20 12:00, unused 10 days, 1 ACL violation, 0 uses after deactivation.
//! - `cr_wild`, authtoken of `bot_a`, created 2024-05-01, ACL `bind:*`, never used: 61 days
//!   (deleted on 2024-08-01, after `at`).
//! - `ssh_1`, SSH key of `bot_a`, created 2024-06-01 12:00, no `acl` at all: 29 days. Used twice
//!   while its owner was deactivated (06-10 and 06-30 23:59:59): unused 0 days.
//! - `ak_1`, API key of `bot_a`, created 2024-02-01, deleted 2024-04-01: 60 days, deleted.
//! - `cr_b`, authtoken of `bot_b`, created 2024-01-15, ACL empty; `bot_b` deleted 2024-06-01
//!   (revokes it): 138 days. Used 05-20 (owner_inactive) and 06-05 (after its revocation:
//!   acl_violation and owner_inactive): 1 and 2; unused 0 (its last use is after its deletion).
//! - `cr_u`, authtoken of the user `usr_1`, created 2024-03-10, ACL `bind:app.example.com`,
//!   never used: 113 days, rotation due.
//! - `cr_late`, created 2024-07-02: not yet there at `at`.
//!
//! `bot_a`'s metadata names the customer `acme` (`--customer-metadata-key customer`).

use std::path::Path;

use axum::http::StatusCode;
use botmeter_query::api::{key_digest, ApiKeys, AppState, SettingsFormat};
use botmeter_query::rows::ControlRow;
use serde_json::{json, Value};

use crate::common::TestDb;
use crate::reports::{bot_user, control, get, usage, Traffic};

const AT: &str = "at=2024-07-01T00:00:00Z";

fn credential(
    event_id: &str,
    event_type: &str,
    time: &str,
    id: &str,
    owner: &str,
    extra: Value,
) -> ControlRow {
    let mut object = json!({"id": id, "owner_id": owner});
    for (key, value) in extra.as_object().unwrap() {
        object[key] = value.clone();
    }
    control(event_id, event_type, time, id, object, owner)
}

fn control_rows() -> Vec<ControlRow> {
    let created = "tunnel_credential_created.v0";
    vec![
        bot_user(
            "ev_ba",
            "created",
            "2024-01-01 00:00:00",
            "bot_a",
            "factory",
            true,
            Some(r#"{"customer":"acme"}"#),
        ),
        bot_user(
            "ev_bb",
            "created",
            "2024-01-01 00:00:00",
            "bot_b",
            "search",
            true,
            None,
        ),
        bot_user(
            "ev_bb2",
            "deleted",
            "2024-06-01 00:00:00",
            "bot_b",
            "",
            false,
            None,
        ),
        credential(
            "ev_1",
            created,
            "2024-01-01 00:00:00",
            "cr_old",
            "bot_a",
            json!({"description": "ci runner", "metadata": r#"{"device_id":"d1","site":"berlin"}"#, "acl": []}),
        ),
        credential(
            "ev_2",
            "tunnel_credential_updated.v0",
            "2024-03-01 00:00:00",
            "cr_old",
            "bot_a",
            json!({"description": "ci runner, rotated", "metadata": r#"{"device_id":"d1","site":"berlin"}"#, "acl": ["bind:*.example.com"]}),
        ),
        credential(
            "ev_3",
            "tunnel_credential_updated.v0",
            "2024-07-05 00:00:00",
            "cr_old",
            "bot_a",
            json!({"description": "later", "metadata": "", "acl": ["*"]}),
        ),
        credential(
            "ev_4",
            created,
            "2024-05-01 00:00:00",
            "cr_wild",
            "bot_a",
            json!({"acl": ["bind:*"]}),
        ),
        credential(
            "ev_5",
            "tunnel_credential_deleted.v0",
            "2024-08-01 00:00:00",
            "cr_wild",
            "bot_a",
            json!({}),
        ),
        credential(
            "ev_6",
            "ssh_public_key_created.v0",
            "2024-06-01 12:00:00",
            "ssh_1",
            "bot_a",
            json!({"description": "=cmd", "metadata": r#"{"site":"paris"}"#}),
        ),
        credential(
            "ev_7",
            "api_key_created.v0",
            "2024-02-01 00:00:00",
            "ak_1",
            "bot_a",
            json!({"description": "deploy"}),
        ),
        credential(
            "ev_8",
            "api_key_deleted.v0",
            "2024-04-01 00:00:00",
            "ak_1",
            "bot_a",
            json!({}),
        ),
        credential(
            "ev_9",
            created,
            "2024-01-15 00:00:00",
            "cr_b",
            "bot_b",
            json!({"acl": []}),
        ),
        credential(
            "ev_10",
            created,
            "2024-03-10 00:00:00",
            "cr_u",
            "usr_1",
            json!({"description": "laptop", "acl": ["bind:app.example.com"]}),
        ),
        credential(
            "ev_11",
            created,
            "2024-07-02 00:00:00",
            "cr_late",
            "bot_a",
            json!({}),
        ),
    ]
}

fn usage_rows() -> Vec<botmeter_query::rows::UsageRow> {
    let flagged = |flags: &'static [&'static str]| Traffic {
        flags,
        bytes_out: 10,
        ..Traffic::default()
    };
    let restated = |flags: &'static [&'static str]| Traffic {
        sign: -1,
        ..flagged(flags)
    };
    let acl: &'static [&'static str] = &["acl_violation"];
    let inactive: &'static [&'static str] = &["owner_inactive"];
    let both: &'static [&'static str] = &["acl_violation", "owner_inactive"];
    vec![
        usage(
            "u1",
            "2024-06-20 12:00:00",
            "ep_1",
            "cr_old",
            "bot_a",
            flagged(acl),
        ),
        usage(
            "u2",
            "2024-06-25 08:00:00",
            "ep_1",
            "cr_old",
            "bot_a",
            flagged(&[]),
        ),
        usage(
            "u2",
            "2024-06-25 08:00:00",
            "ep_1",
            "cr_old",
            "bot_a",
            restated(&[]),
        ),
        usage(
            "u3",
            "2024-06-22 00:00:00",
            "ep_1",
            "cr_old",
            "bot_a",
            flagged(both),
        ),
        usage(
            "u3",
            "2024-06-22 00:00:00",
            "ep_1",
            "cr_old",
            "bot_a",
            restated(both),
        ),
        usage(
            "u4",
            "2024-07-01 00:00:00",
            "ep_1",
            "cr_old",
            "bot_a",
            flagged(acl),
        ),
        usage(
            "s1",
            "2024-06-10 00:00:00",
            "ep_2",
            "ssh_1",
            "bot_a",
            flagged(inactive),
        ),
        usage(
            "s2",
            "2024-06-30 23:59:59",
            "ep_2",
            "ssh_1",
            "bot_a",
            flagged(inactive),
        ),
        usage(
            "b1",
            "2024-05-20 00:00:00",
            "ep_3",
            "cr_b",
            "bot_b",
            flagged(inactive),
        ),
        usage(
            "b2",
            "2024-06-05 00:00:00",
            "ep_3",
            "cr_b",
            "bot_b",
            flagged(both),
        ),
    ]
}

fn keys() -> ApiKeys {
    let text = format!(
        "[[keys]]\nname = \"acme\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n\
         [[keys]]\nname = \"grafana\"\nsha256 = \"{}\"\nrole = \"reader\"\n",
        key_digest("acme-secret"),
        key_digest("reader-secret")
    );
    ApiKeys::parse(Path::new("keys.toml"), &text, SettingsFormat::Toml).unwrap()
}

async fn fleet(name: &str) -> (TestDb, AppState) {
    let db = TestDb::migrated(&format!("credentials_{name}")).await;
    let writer = db.writer();
    writer.insert_usage(&usage_rows()).await.unwrap();
    writer.insert_control(&control_rows()).await.unwrap();
    let state = db
        .state()
        .with_customer_metadata_key("customer")
        .unwrap()
        .with_api_keys(keys());
    (db, state)
}

async fn call(state: &AppState, query: &str, key: &str) -> (StatusCode, String, Vec<u8>) {
    let authorization = format!("Bearer {key}");
    get(
        state,
        &format!("/v1/credentials?{query}"),
        &[("authorization", authorization.as_str())],
    )
    .await
}

async fn report(state: &AppState, query: &str) -> Value {
    let (status, _, body) = call(state, query, "reader-secret").await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, StatusCode::OK, "{query}: {text}");
    serde_json::from_slice(&body).unwrap()
}

/// The credential ids of a report, in order.
async fn ids(state: &AppState, query: &str) -> Vec<String> {
    report(state, query).await["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_column_as_of_a_time() {
    let (_db, state) = fleet("columns").await;
    let all = report(&state, &format!("{AT}&deleted=true")).await;
    assert_eq!(all["at"], "2024-07-01T00:00:00Z");
    assert_eq!(all["rotation_days"], 90);
    assert_eq!(all["matched"], 6);
    let expected = json!([
        {"credential_id": "cr_old", "kind": "authtoken", "owner_id": "bot_a", "owner_kind": "bot_user",
         "description": "ci runner, rotated", "metadata": r#"{"device_id":"d1","site":"berlin"}"#,
         "created_at": "2024-01-01T00:00:00Z", "age_days": 182, "revoked_with_owner": false,
         "last_used_at": "2024-06-20T12:00:00Z", "unused_days": 10, "rotation_due": true,
         "no_acl": false, "wildcard_acl": false, "acl_violations": 1, "used_after_owner_deactivated": 0},
        {"credential_id": "cr_b", "kind": "authtoken", "owner_id": "bot_b", "owner_kind": "bot_user",
         "description": "", "metadata": "", "created_at": "2024-01-15T00:00:00Z", "age_days": 138,
         "deleted_at": "2024-06-01T00:00:00Z", "revoked_with_owner": true,
         "last_used_at": "2024-06-05T00:00:00Z", "unused_days": 0, "rotation_due": false,
         "no_acl": true, "wildcard_acl": false, "acl_violations": 1, "used_after_owner_deactivated": 2},
        {"credential_id": "cr_u", "kind": "authtoken", "owner_id": "usr_1", "owner_kind": "user",
         "description": "laptop", "metadata": "", "created_at": "2024-03-10T00:00:00Z", "age_days": 113,
         "revoked_with_owner": false, "unused_days": 113, "rotation_due": true,
         "no_acl": false, "wildcard_acl": false, "acl_violations": 0, "used_after_owner_deactivated": 0},
        {"credential_id": "cr_wild", "kind": "authtoken", "owner_id": "bot_a", "owner_kind": "bot_user",
         "description": "", "metadata": "", "created_at": "2024-05-01T00:00:00Z", "age_days": 61,
         "revoked_with_owner": false, "unused_days": 61, "rotation_due": false,
         "no_acl": false, "wildcard_acl": true, "acl_violations": 0, "used_after_owner_deactivated": 0},
        {"credential_id": "ak_1", "kind": "api_key", "owner_id": "bot_a", "owner_kind": "bot_user",
         "description": "deploy", "metadata": "", "created_at": "2024-02-01T00:00:00Z", "age_days": 60,
         "deleted_at": "2024-04-01T00:00:00Z", "revoked_with_owner": false, "unused_days": 60,
         "rotation_due": false, "no_acl": false, "wildcard_acl": false, "acl_violations": 0,
         "used_after_owner_deactivated": 0},
        {"credential_id": "ssh_1", "kind": "ssh_key", "owner_id": "bot_a", "owner_kind": "bot_user",
         "description": "=cmd", "metadata": r#"{"site":"paris"}"#, "created_at": "2024-06-01T12:00:00Z",
         "age_days": 29, "revoked_with_owner": false, "last_used_at": "2024-06-30T23:59:59Z",
         "unused_days": 0, "rotation_due": false, "no_acl": true, "wildcard_acl": false,
         "acl_violations": 0, "used_after_owner_deactivated": 2},
    ]);
    assert_eq!(all["credentials"], expected);

    // Earlier: cr_old as first created (empty ACL, first description), no usage yet; nothing
    // created after that time.
    let early = report(&state, "at=2024-02-15&deleted=true").await;
    let credentials = early["credentials"].as_array().unwrap();
    let ids: Vec<&str> = credentials
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cr_old", "cr_b", "ak_1"]);
    let old = &credentials[0];
    assert_eq!(
        (
            old["description"].as_str(),
            old["no_acl"].as_bool(),
            old["age_days"].as_i64(),
            old["unused_days"].as_i64(),
            old.get("last_used_at"),
            old["acl_violations"].as_i64(),
        ),
        (
            Some("ci runner"),
            Some(true),
            Some(45),
            Some(45),
            None,
            Some(0)
        )
    );
    // bot_b is not deleted yet, nor its credential.
    assert_eq!(credentials[1].get("deleted_at"), None);
    assert_eq!(credentials[1]["revoked_with_owner"], false);

    // Now (the default): cr_late exists, cr_wild is deleted.
    let now = report(&state, "sort=age&order=asc").await;
    let live: Vec<&str> = now["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["cr_late", "ssh_1", "cr_u", "cr_old"]);
    assert_eq!(now["credentials"][3]["description"], "later");
    assert_eq!(now["credentials"][3]["wildcard_acl"], true);
}

#[tokio::test]
async fn filters_sorts_and_limits() {
    let (_db, state) = fleet("filters").await;
    let cases: &[(&str, &[&str])] = &[
        ("", &["cr_old", "cr_u", "cr_wild", "ssh_1"]),
        ("owner_id=bot_a", &["cr_old", "cr_wild", "ssh_1"]),
        (
            "owner_id=bot_a&deleted=true",
            &["cr_old", "cr_wild", "ak_1", "ssh_1"],
        ),
        ("owner_id=bot_b", &[]),
        ("owner_id=bot_b&deleted=true", &["cr_b"]),
        ("kind=ssh_key", &["ssh_1"]),
        ("kind=api_key&deleted=true", &["ak_1"]),
        ("rotation_due=true", &["cr_old", "cr_u"]),
        ("rotation_due=false", &["cr_wild", "ssh_1"]),
        ("rotation_due=true&rotation_days=113", &["cr_old", "cr_u"]),
        ("rotation_due=true&rotation_days=114", &["cr_old"]),
        (
            "rotation_days=30&rotation_due=true",
            &["cr_old", "cr_u", "cr_wild"],
        ),
        ("unused_days_min=60", &["cr_u", "cr_wild"]),
        ("unused_days_min=10", &["cr_old", "cr_u", "cr_wild"]),
        ("unused_days_min=0", &["cr_old", "cr_u", "cr_wild", "ssh_1"]),
        ("no_acl=true", &["ssh_1"]),
        ("no_acl=true&deleted=true", &["cr_b", "ssh_1"]),
        ("no_acl=false", &["cr_old", "cr_u", "cr_wild"]),
        ("deleted=false", &["cr_old", "cr_u", "cr_wild", "ssh_1"]),
        // Never used sorts as the oldest use; ties by id.
        ("sort=last_used", &["ssh_1", "cr_old", "cr_u", "cr_wild"]),
        (
            "sort=last_used&order=asc",
            &["cr_u", "cr_wild", "cr_old", "ssh_1"],
        ),
        (
            "sort=acl_violations&order=asc&deleted=true",
            &["ak_1", "cr_u", "cr_wild", "ssh_1", "cr_b", "cr_old"],
        ),
        (
            "sort=acl_violations",
            &["cr_old", "cr_u", "cr_wild", "ssh_1"],
        ),
        ("sort=unused_days", &["cr_u", "cr_wild", "cr_old", "ssh_1"]),
        (
            "sort=age&order=asc",
            &["ssh_1", "cr_wild", "cr_u", "cr_old"],
        ),
        ("limit=2", &["cr_old", "cr_u"]),
        ("sort=unused_days&limit=1&no_acl=false", &["cr_u"]),
    ];
    for (query, expected) in cases {
        let query = if query.is_empty() {
            AT.to_owned()
        } else {
            format!("{AT}&{query}")
        };
        assert_eq!(ids(&state, &query).await, *expected, "{query}");
    }
    let limited = report(&state, &format!("{AT}&limit=2")).await;
    assert_eq!(limited["matched"], 4);
}

#[tokio::test]
async fn csv_by_format_or_accept() {
    let (_db, state) = fleet("csv").await;
    let expected = "credential_id,kind,owner_id,owner_kind,description,metadata,created_at,\
        age_days,deleted_at,revoked_with_owner,last_used_at,unused_days,rotation_due,no_acl,\
        wildcard_acl,acl_violations,used_after_owner_deactivated\r\n\
        cr_old,authtoken,bot_a,bot_user,\"ci runner, rotated\",\"{\"\"device_id\"\":\"\"d1\"\",\"\"site\"\":\"\"berlin\"\"}\",\
        2024-01-01T00:00:00Z,182,,false,2024-06-20T12:00:00Z,10,true,false,false,1,0\r\n\
        cr_wild,authtoken,bot_a,bot_user,,,2024-05-01T00:00:00Z,61,,false,,61,false,false,true,0,0\r\n\
        ak_1,api_key,bot_a,bot_user,deploy,,2024-02-01T00:00:00Z,60,2024-04-01T00:00:00Z,false,,60,\
        false,false,false,0,0\r\n\
        ssh_1,ssh_key,bot_a,bot_user,'=cmd,\"{\"\"site\"\":\"\"paris\"\"}\",2024-06-01T12:00:00Z,29,,false,\
        2024-06-30T23:59:59Z,0,false,true,false,0,2\r\n";
    let query = format!("{AT}&owner_id=bot_a&deleted=true");
    let (status, content_type, body) =
        call(&state, &format!("{query}&format=csv"), "reader-secret").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(String::from_utf8(body).unwrap(), expected);
    let (status, content_type, body) = get(
        &state,
        &format!("/v1/credentials?{query}"),
        &[
            ("authorization", "Bearer reader-secret"),
            ("accept", "text/csv"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert_eq!(String::from_utf8(body).unwrap(), expected);
    // format=json wins over Accept.
    let (_, content_type, _) = get(
        &state,
        &format!("/v1/credentials?{query}&format=json"),
        &[
            ("authorization", "Bearer reader-secret"),
            ("accept", "text/csv"),
        ],
    )
    .await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
}

#[tokio::test]
async fn a_customer_key_sees_its_bot_users_credentials_only() {
    let (_db, state) = fleet("tenancy").await;
    let acme = |query: String| {
        let state = state.clone();
        async move {
            let (status, _, body) = call(&state, &query, "acme-secret").await;
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    for query in [
        format!("{AT}&deleted=true"),
        format!("{AT}&deleted=true&owner_id=bot_a"),
    ] {
        let (status, body) = acme(query.clone()).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let ids: Vec<&str> = body["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["credential_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["cr_old", "cr_wild", "ak_1", "ssh_1"], "{query}");
    }
    // Another owner, a user or a bot user, is not confirmed to exist.
    for owner in ["bot_b", "usr_1", "bot_nobody"] {
        let (status, body) = acme(format!("{AT}&deleted=true&owner_id={owner}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{owner}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    // Before bot_a existed, acme has no bot users and so no credentials.
    let (status, body) = acme("at=2023-12-01&deleted=true".to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["credentials"], json!([]));
    // Bad parameters are 400 before anything is read.
    let (status, body) = acme(format!("{AT}&sort=owner")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("\"owner\""));
    // Without a key: 401.
    let (status, _, _) = get(&state, &format!("/v1/credentials?{AT}"), &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_rotation_period_comes_from_the_server_unless_asked() {
    let (_db, state) = fleet("rotation").await;
    let state = state.with_credential_rotation_days(61).unwrap();
    let body = report(&state, &format!("{AT}&rotation_due=true")).await;
    assert_eq!(body["rotation_days"], 61);
    let due: Vec<&str> = body["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["credential_id"].as_str().unwrap())
        .collect();
    assert_eq!(due, ["cr_old", "cr_u", "cr_wild"]);
    assert_eq!(
        ids(&state, &format!("{AT}&rotation_due=true&rotation_days=90")).await,
        ["cr_old", "cr_u"]
    );
    assert!(state.clone().with_credential_rotation_days(0).is_err());
}

/// The owner dashboard's "Credential hygiene" panel, expanded as Grafana and the ClickHouse plugin
/// expand it (`${owner:singlequote}`, `$__toTime`), reports what the API reports for that owner
/// with `deleted=true` as of the end of the range, column for column (the dashboards test runs it
/// on a simulated fleet too; this fleet has the edge cases).
#[tokio::test]
async fn the_owner_dashboard_panel_agrees_with_the_api() {
    let (db, state) = fleet("panel").await;
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards/owner.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let panel = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Credential hygiene")
        .expect("the owner dashboard has a Credential hygiene panel");
    let raw_sql = panel["targets"][0]["rawSql"].as_str().unwrap();
    let at = crate::reports::secs("2024-07-01 00:00:00");
    for owner in ["bot_a", "bot_b", "usr_1"] {
        let sql = raw_sql
            .replace("${owner:singlequote}", &format!("'{owner}'"))
            .replace("$__toTime", &format!("toDateTime({at})"));
        let bytes = db
            .client()
            .query(&sql)
            .fetch_bytes("JSONEachRow")
            .unwrap()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{owner}: {e}"));
        let rows: Vec<Value> = String::from_utf8(bytes.to_vec())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let api = report(&state, &format!("{AT}&deleted=true&owner_id={owner}")).await;
        let api = api["credentials"].as_array().unwrap();
        assert_eq!(rows.len(), api.len(), "{owner}");
        assert!(!rows.is_empty(), "{owner}");
        // 18.16 writes 64-bit integers as JSON strings.
        let int = |v: &Value| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .unwrap()
        };
        let time = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .map(|t| t.replace('T', " ").replace('Z', ""))
                .unwrap_or_default()
        };
        for (row, c) in rows.iter().zip(api) {
            let id = c["credential_id"].as_str().unwrap();
            assert_eq!(row["credential"], c["credential_id"], "{owner}");
            assert_eq!(row["credential_type"], c["kind"], "{id}");
            assert_eq!(row["description"], c["description"], "{id}");
            assert_eq!(row["metadata"], c["metadata"], "{id}");
            assert_eq!(
                row["created_at"].as_str().unwrap(),
                time(c.get("created_at")),
                "{id}"
            );
            assert_eq!(
                row["deleted_at"].as_str().unwrap(),
                time(c.get("deleted_at")),
                "{id}"
            );
            assert_eq!(
                row["last_used_at"].as_str().unwrap(),
                time(c.get("last_used_at")),
                "{id}"
            );
            for (column, field) in [
                ("age_days", "age_days"),
                ("unused_days", "unused_days"),
                ("acl_violations", "acl_violations"),
                (
                    "used_after_owner_deactivated",
                    "used_after_owner_deactivated",
                ),
            ] {
                assert_eq!(
                    int(&row[column]),
                    c[field].as_i64().unwrap(),
                    "{id} {column}"
                );
            }
            for column in ["rotation_due", "no_acl", "wildcard_acl"] {
                assert_eq!(
                    int(&row[column]) == 1,
                    c[column].as_bool().unwrap(),
                    "{id} {column}"
                );
            }
        }
    }
}
