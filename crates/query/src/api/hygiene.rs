//! `GET /v1/credentials`: the credential hygiene report. One row per credential (authtoken, SSH
//! key, API key) as the audit log and the attributed usage knew it at a time `at` (default now):
//! its owner, description and metadata, age, last use, whether rotation is due, how long it has
//! been unused, whether its ACL lets it bind anywhere, and how often its use broke its ACL or
//! came after its owner was deactivated. JSON, or CSV (`format=csv` or `Accept: text/csv`).
//!
//! What each column means, exactly (`crates/query/sql/credential_hygiene.sql` reads the rows):
//! - Only events before `at` count: a credential created later is not listed, a deletion later is
//!   not one, the object (description, metadata, ACL) is that of its latest created or updated
//!   event before `at`, and usage before `at` only.
//! - `deleted_at` is its own deletion or its owner's, whichever came first (deleting a bot user
//!   revokes its credentials; `revoked_with_owner` says which). Deleted credentials are listed only
//!   with `deleted=true`.
//! - `age_days` counts whole elapsed days (86 400 s) from creation to `at`, or to the deletion when
//!   deleted; `unused_days` from the last use (or creation, if never used) to the same end.
//!   `rotation_due` when a live credential's `age_days` is at least the rotation period
//!   (`rotation_days`, default `botmeter serve --credential-rotation-days`).
//! - `last_used_at` is the time of the latest attributed usage event whose rows still net to a
//!   positive `sign` (a restated row is no use); `acl_violations` and
//!   `used_after_owner_deactivated` are the net counts (summed `sign`) of attributed usage rows
//!   flagged `acl_violation` and `owner_inactive`.
//! - `no_acl`: the ACL (`acl`, top level of the object) is empty or absent, so the credential may
//!   bind anything; `wildcard_acl`: a rule is `*` or `bind:*` (parsed by [`model::BindRule`]),
//!   with the same effect. API keys have no bind rules (they authenticate the ngrok API, not
//!   agents), so both are false for them.
//! - `metadata` is the credential's metadata as ngrok sends it, a string (an object is given as
//!   its compact JSON text); empty when absent.
//!
//! Tenancy: a `customer:<id>` key sees the credentials of that customer's bot users only (as of
//! `at`, by [`super::tenancy`]); naming another owner answers 404.

use std::cmp::Ordering;
use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::Utc;
use clickhouse::Row;
use model::{BindRule, OwnerKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Access;
use super::customers::{negotiate, Format};
use super::params::{rfc3339, rfc3339_us, rfc3339_us_if_set, Choice, QueryParams};
use super::tenancy;
use super::{ApiError, AppState};

/// Placeholders: at (µs) twice, all, owners, at (s), all, owners.
pub(super) const HYGIENE_SQL: &str = include_str!("../../sql/credential_hygiene.sql");

/// Default for [`AppState::with_credential_rotation_days`] (`serve --credential-rotation-days`).
pub const DEFAULT_CREDENTIAL_ROTATION_DAYS: u32 = 90;

/// Longest rotation period a request or the server may set (100 years).
pub const MAX_ROTATION_DAYS: u32 = 36_500;

/// Most credentials one answer lists (`limit`).
pub const MAX_CREDENTIALS_LIMIT: u32 = 10_000;

/// Credentials listed when `limit` is not given.
const DEFAULT_CREDENTIALS_LIMIT: u32 = 1_000;

const DAY_US: i64 = 86_400 * 1_000_000;

const PARAMETERS: &[&str] = &[
    "at",
    "owner_id",
    "kind",
    "rotation_days",
    "rotation_due",
    "unused_days_min",
    "no_acl",
    "deleted",
    "sort",
    "order",
    "limit",
    "format",
];

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/credentials", get(credentials))
}

/// One credential, positional row of `credential_hygiene.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct HygieneRow {
    credential_id: String,
    kind: String,
    owner_id: String,
    /// The JSON object of its latest created or updated event before `at`.
    object: String,
    created_us: i64,
    /// Its deletion or its owner's, whichever first; 0 while live.
    deleted_us: i64,
    revoked_with_owner: u8,
    /// 0 when never used.
    last_used_us: i64,
    acl_violations: i64,
    owner_inactive: i64,
}

/// A credential kind (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Authtoken,
    SshKey,
    ApiKey,
}

impl Choice for Kind {
    const ALL: &'static [(&'static str, Self)] = &[
        ("authtoken", Self::Authtoken),
        ("ssh_key", Self::SshKey),
        ("api_key", Self::ApiKey),
    ];
}

/// What to sort by (`sort`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SortKey {
    Age,
    LastUsed,
    AclViolations,
    UnusedDays,
}

impl Choice for SortKey {
    const ALL: &'static [(&'static str, Self)] = &[
        ("age", Self::Age),
        ("last_used", Self::LastUsed),
        ("acl_violations", Self::AclViolations),
        ("unused_days", Self::UnusedDays),
    ];
}

/// Sort direction (`order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    Desc,
    Asc,
}

impl Choice for Order {
    const ALL: &'static [(&'static str, Self)] = &[("desc", Self::Desc), ("asc", Self::Asc)];
}

/// `format`: JSON or CSV (no HTML page for this report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListFormat {
    Json,
    Csv,
}

impl Choice for ListFormat {
    const ALL: &'static [(&'static str, Self)] = &[("json", Self::Json), ("csv", Self::Csv)];
}

/// The JSON report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialHygieneReport {
    /// The time the report describes, RFC 3339 UTC (events before it count).
    pub at: String,
    /// The rotation period applied, in days.
    pub rotation_days: u32,
    /// Credentials matching the filters, before `limit`.
    pub matched: u64,
    /// The credentials, sorted, at most `limit`.
    pub credentials: Vec<CredentialHygiene>,
}

/// One credential's hygiene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CredentialHygiene {
    /// The credential.
    pub credential_id: String,
    /// `authtoken`, `ssh_key` or `api_key`.
    pub kind: String,
    /// Its owner (ownership never changes).
    pub owner_id: String,
    /// `user` or `bot_user`; empty for an id of neither form.
    pub owner_kind: String,
    /// Its description, as of `at`.
    pub description: String,
    /// Its metadata as ngrok sends it (a string), as of `at`; empty when none.
    pub metadata: String,
    /// Its first event, RFC 3339.
    pub created_at: String,
    /// Whole days from creation to `at`, or to its deletion.
    pub age_days: i64,
    /// Its deletion, or its owner's when that came first, if before `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Whether the owner's deletion revoked it (no deletion of its own came first).
    pub revoked_with_owner: bool,
    /// Its last attributed use before `at`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// Whole days from its last use (or creation, if never used) to `at`, or to its deletion.
    pub unused_days: i64,
    /// Live and `age_days` at least the rotation period.
    pub rotation_due: bool,
    /// An empty ACL: it may bind anything (always false for API keys).
    pub no_acl: bool,
    /// A `*` or `bind:*` rule: it may bind anything (always false for API keys).
    pub wildcard_acl: bool,
    /// Attributed usage rows flagged `acl_violation`, net of restatements.
    pub acl_violations: i64,
    /// Attributed usage rows flagged `owner_inactive` (used while its owner was deactivated), net.
    pub used_after_owner_deactivated: i64,
}

/// What a request asks for, checked.
#[derive(Debug, Clone)]
struct Request {
    at: u32,
    owner_id: Option<String>,
    kind: Option<Kind>,
    rotation_days: u32,
    rotation_due: Option<bool>,
    unused_days_min: Option<u32>,
    no_acl: Option<bool>,
    deleted: bool,
    sort: SortKey,
    order: Order,
    limit: u32,
    format: Option<ListFormat>,
}

impl Request {
    fn parse(query: Option<&str>, default_rotation_days: u32) -> Result<Self, ApiError> {
        let params = QueryParams::parse(query, PARAMETERS)?;
        let now = u32::try_from(Utc::now().timestamp()).unwrap_or(u32::MAX);
        Ok(Self {
            at: params.time("at")?.unwrap_or(now),
            owner_id: params.id("owner_id")?,
            kind: params.choice("kind")?,
            rotation_days: params.integer(
                "rotation_days",
                1,
                MAX_ROTATION_DAYS,
                default_rotation_days,
            )?,
            rotation_due: params.boolean("rotation_due")?,
            unused_days_min: params
                .get("unused_days_min")
                .map(|_| params.integer("unused_days_min", 0, MAX_ROTATION_DAYS, 0))
                .transpose()?,
            no_acl: params.boolean("no_acl")?,
            deleted: params.boolean("deleted")?.unwrap_or(false),
            sort: params.choice("sort")?.unwrap_or(SortKey::Age),
            order: params.choice("order")?.unwrap_or(Order::Desc),
            limit: params.integer("limit", 1, MAX_CREDENTIALS_LIMIT, DEFAULT_CREDENTIALS_LIMIT)?,
            format: params.choice("format")?,
        })
    }

    /// Whether `c` passes every filter.
    fn keeps(&self, c: &CredentialHygiene) -> bool {
        (self.deleted || c.deleted_at.is_none())
            && self.kind.is_none_or(|k| k.name() == c.kind)
            && self.rotation_due.is_none_or(|due| due == c.rotation_due)
            && self
                .unused_days_min
                .is_none_or(|min| c.unused_days >= i64::from(min))
            && self.no_acl.is_none_or(|no_acl| no_acl == c.no_acl)
    }

    /// The order of the answer: by the sort key in the direction asked, then by credential id.
    fn compare(&self, a: &Entry, b: &Entry) -> Ordering {
        let key = |e: &Entry| match self.sort {
            SortKey::Age => e.credential.age_days,
            // Never used (0) sorts as the oldest use.
            SortKey::LastUsed => e.last_used_us,
            SortKey::AclViolations => e.credential.acl_violations,
            SortKey::UnusedDays => e.credential.unused_days,
        };
        let by_key = key(a).cmp(&key(b));
        let by_key = match self.order {
            Order::Asc => by_key,
            Order::Desc => by_key.reverse(),
        };
        by_key.then_with(|| a.credential.credential_id.cmp(&b.credential.credential_id))
    }
}

/// A credential with what it sorts by that the answer shows only as text.
#[derive(Debug)]
struct Entry {
    last_used_us: i64,
    credential: CredentialHygiene,
}

/// The credential hygiene report.
#[utoipa::path(
    get,
    path = "/v1/credentials",
    tag = "credentials",
    params(
        ("at" = Option<String>, Query, description = "The time described (RFC 3339 or YYYY-MM-DD); events before it count. Default now"),
        ("owner_id" = Option<String>, Query, description = "Only this owner's credentials"),
        ("kind" = Option<String>, Query, description = "Only authtoken, ssh_key or api_key"),
        ("rotation_days" = Option<i32>, Query, description = "Rotation period in days (default: serve --credential-rotation-days, 90 unless set)"),
        ("rotation_due" = Option<String>, Query, description = "true: only live credentials at least rotation_days old; false: only the others"),
        ("unused_days_min" = Option<i32>, Query, description = "Only credentials unused (or, never used, created) at least this many whole days before at"),
        ("no_acl" = Option<String>, Query, description = "true: only credentials with an empty ACL; false: only those with one"),
        ("deleted" = Option<String>, Query, description = "true: include deleted and revoked credentials (default false)"),
        ("sort" = Option<String>, Query, description = "age (default), last_used, acl_violations or unused_days; ties by credential id"),
        ("order" = Option<String>, Query, description = "desc (default) or asc"),
        ("limit" = Option<i32>, Query, description = "At most this many credentials, 1..=10000, default 1000 (matched counts them all)"),
        ("format" = Option<String>, Query, description = "json (default) or csv; else chosen by Accept"),
    ),
    responses(
        (status = 200, description = "The report (JSON; text/csv by format or Accept)",
         content((CredentialHygieneReport = "application/json"), (String = "text/csv"))),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, description = "An owner that is not this customer key's", body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn credentials(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let request = Request::parse(query.as_deref(), state.credential_rotation_days)?;
    let format = match (request.format, negotiate(None, &headers)) {
        (Some(ListFormat::Csv), _) | (None, Format::Csv) => ListFormat::Csv,
        _ => ListFormat::Json,
    };
    // Whose credentials: everyone's (or the one owner asked for), or a customer's bot users'.
    let (all, owners) = match (access.customer(), &request.owner_id) {
        (None, None) => (true, Vec::new()),
        (None, Some(owner)) => (false, vec![owner.clone()]),
        (Some(customer), owner) => {
            let mut bots = tenancy::bots_at(&state, customer, request.at).await?;
            if let Some(owner) = owner {
                if !bots.contains(owner) {
                    return Err(ApiError::Missing {
                        what: format!("owner {owner:?}"),
                    });
                }
                bots = vec![owner.clone()];
            }
            (false, bots)
        }
    };
    let at_us = i64::from(request.at) * 1_000_000;
    let rows = state
        .read("read the credential hygiene", |client| {
            client
                .query(HYGIENE_SQL)
                .bind(at_us)
                .bind(at_us)
                .bind(u8::from(all))
                .bind(&owners)
                .bind(request.at)
                .bind(u8::from(all))
                .bind(&owners)
                .fetch_all::<HygieneRow>()
        })
        .await?;
    let mut entries: Vec<Entry> = rows
        .iter()
        .map(|row| Entry {
            last_used_us: row.last_used_us,
            credential: hygiene(row, at_us, request.rotation_days),
        })
        .filter(|e| request.keeps(&e.credential))
        .collect();
    entries.sort_by(|a, b| request.compare(a, b));
    let matched = entries.len() as u64;
    entries.truncate(request.limit as usize);
    let credentials = entries.into_iter().map(|e| e.credential).collect();
    let report = CredentialHygieneReport {
        at: rfc3339(request.at),
        rotation_days: request.rotation_days,
        matched,
        credentials,
    };
    Ok(match format {
        ListFormat::Json => {
            let mut response = Json(report).into_response();
            response
                .headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept"));
            response
        }
        ListFormat::Csv => {
            let mut response = csv(&report.credentials).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            headers.insert(header::VARY, HeaderValue::from_static("accept"));
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"credentials.csv\""),
            );
            response
        }
    })
}

/// One credential's hygiene as of `at_us`.
fn hygiene(row: &HygieneRow, at_us: i64, rotation_days: u32) -> CredentialHygiene {
    let object: Value = serde_json::from_str(&row.object).unwrap_or(Value::Null);
    let (no_acl, wildcard_acl) = if row.kind == "api_key" {
        (false, false)
    } else {
        acl_summary(object.get("acl"))
    };
    let until_us = if row.deleted_us > 0 {
        row.deleted_us.min(at_us)
    } else {
        at_us
    };
    let whole_days = |from_us: i64| (until_us - from_us).max(0) / DAY_US;
    let age_days = whole_days(row.created_us);
    CredentialHygiene {
        credential_id: row.credential_id.clone(),
        kind: row.kind.clone(),
        owner_id: row.owner_id.clone(),
        owner_kind: OwnerKind::of(&row.owner_id)
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default(),
        description: match object.get("description") {
            Some(Value::String(text)) => text.clone(),
            _ => String::new(),
        },
        metadata: match object.get("metadata") {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) => String::new(),
            Some(other) => other.to_string(),
        },
        created_at: rfc3339_us(row.created_us),
        age_days,
        deleted_at: rfc3339_us_if_set(row.deleted_us),
        revoked_with_owner: row.revoked_with_owner == 1,
        last_used_at: rfc3339_us_if_set(row.last_used_us),
        unused_days: whole_days(row.last_used_us.max(row.created_us)),
        rotation_due: row.deleted_us == 0 && age_days >= i64::from(rotation_days),
        no_acl,
        wildcard_acl,
        acl_violations: row.acl_violations,
        used_after_owner_deactivated: row.owner_inactive,
    }
}

/// `(no_acl, wildcard_acl)` of an object's `acl`: no rules at all (absent, null, `[]`), and a rule
/// that permits everything (`*`, `bind:*`, as [`BindRule::parse`] reads them). The decoder refused
/// every ACL with a rule it cannot parse, so an unparsable one (not a list of strings) counts as
/// neither.
fn acl_summary(acl: Option<&Value>) -> (bool, bool) {
    match acl {
        None | Some(Value::Null) => (true, false),
        Some(Value::Array(rules)) => {
            let wildcard = rules.iter().any(|rule| {
                rule.as_str()
                    .is_some_and(|r| BindRule::parse(r) == Ok(BindRule::Any))
            });
            (rules.is_empty(), wildcard)
        }
        Some(_) => (false, false),
    }
}

const CSV_HEADER: &str = "credential_id,kind,owner_id,owner_kind,description,metadata,created_at,\
                          age_days,deleted_at,revoked_with_owner,last_used_at,unused_days,\
                          rotation_due,no_acl,wildcard_acl,acl_violations,\
                          used_after_owner_deactivated";

/// The credentials as CSV (RFC 4180), one row each, in the JSON's order and columns.
fn csv(credentials: &[CredentialHygiene]) -> String {
    let mut out = String::new();
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for c in credentials {
        let _ = write!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            csv_field(&c.credential_id),
            csv_field(&c.kind),
            csv_field(&c.owner_id),
            csv_field(&c.owner_kind),
            csv_field(&c.description),
            csv_field(&c.metadata),
            c.created_at,
            c.age_days,
            c.deleted_at.as_deref().unwrap_or_default(),
            c.revoked_with_owner,
            c.last_used_at.as_deref().unwrap_or_default(),
            c.unused_days,
            c.rotation_due,
            c.no_acl,
            c.wildcard_acl,
            c.acl_violations,
            c.used_after_owner_deactivated,
        );
    }
    out
}

/// A text field: quoted (quotes doubled) when it holds a comma, quote or line break. A field a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return first) gets a
/// leading `'`: descriptions and metadata are whatever a user typed.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;

    fn row(object: Value, kind: &str) -> HygieneRow {
        HygieneRow {
            credential_id: "cr_1".to_owned(),
            kind: kind.to_owned(),
            owner_id: "bot_1".to_owned(),
            object: object.to_string(),
            created_us: 10 * DAY_US,
            deleted_us: 0,
            revoked_with_owner: 0,
            last_used_us: 0,
            acl_violations: 0,
            owner_inactive: 0,
        }
    }

    #[test]
    fn acls_that_bind_anywhere() {
        let summary = |acl: Value| acl_summary(Some(&acl));
        assert_eq!(acl_summary(None), (true, false));
        assert_eq!(summary(json!(null)), (true, false));
        assert_eq!(summary(json!([])), (true, false));
        assert_eq!(summary(json!(["*"])), (false, true));
        assert_eq!(summary(json!(["bind:x.io", " bind:* "])), (false, true));
        assert_eq!(summary(json!(["bind:*.example.com"])), (false, false));
        // A label wildcard binds labeled endpoints only, not anywhere.
        assert_eq!(summary(json!(["bind:*=*"])), (false, false));
        assert_eq!(summary(json!("bind:*")), (false, false));
        // API keys have no bind rules.
        let c = hygiene(&row(json!({"acl": []}), "api_key"), 20 * DAY_US, 90);
        assert_eq!((c.no_acl, c.wildcard_acl), (false, false));
    }

    #[test]
    fn ages_and_unused_days_end_at_the_deletion() {
        let mut r = row(
            json!({"description": "ci", "metadata": {"site": "a"}, "acl": ["bind:*"]}),
            "authtoken",
        );
        r.last_used_us = 12 * DAY_US + 1;
        let c = hygiene(&r, 100 * DAY_US - 1, 90);
        assert_eq!((c.age_days, c.unused_days, c.rotation_due), (89, 87, false));
        assert_eq!(c.metadata, r#"{"site":"a"}"#);
        assert_eq!(c.description, "ci");
        assert_eq!(c.owner_kind, "bot_user");
        let c = hygiene(&r, 100 * DAY_US, 90);
        assert_eq!((c.age_days, c.rotation_due), (90, true));
        r.deleted_us = 40 * DAY_US;
        let c = hygiene(&r, 100 * DAY_US, 90);
        assert_eq!((c.age_days, c.unused_days, c.rotation_due), (30, 27, false));
    }

    #[test]
    fn csv_quotes_and_defuses_user_text() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(r#"{"a":1,"b":2}"#), r#""{""a"":1,""b"":2}""#);
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
    }

    #[tokio::test]
    async fn bad_parameters_are_400_naming_them() {
        assert_each_is_a_400_naming(&[
            ("/v1/credentials?kind=password", "kind", "password"),
            ("/v1/credentials?sort=name", "sort", "name"),
            ("/v1/credentials?order=up", "order", "up"),
            ("/v1/credentials?rotation_days=0", "rotation_days", "0"),
            (
                "/v1/credentials?unused_days_min=-1",
                "unused_days_min",
                "-1",
            ),
            ("/v1/credentials?no_acl=yes", "no_acl", "yes"),
            ("/v1/credentials?deleted=1", "deleted", "1"),
            (
                "/v1/credentials?rotation_due=maybe",
                "rotation_due",
                "maybe",
            ),
            ("/v1/credentials?limit=10001", "limit", "10001"),
            ("/v1/credentials?format=html", "format", "html"),
            ("/v1/credentials?at=soon", "at", "soon"),
            ("/v1/credentials?owner_id=a%20b", "owner_id", "a b"),
            ("/v1/credentials?owners=bot_1", "owners", "owners"),
        ])
        .await;
        // Good parameters reach ClickHouse (down here: 503).
        let (status, _, _) = call(
            unreachable_state(),
            "GET",
            "/v1/credentials?at=2024-05-01&kind=ssh_key&rotation_due=true&no_acl=false&deleted=true&sort=unused_days&order=asc&limit=5&unused_days_min=0&rotation_days=30&format=csv",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
