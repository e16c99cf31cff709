//! API keys and roles.
//!
//! Keys come from a file (`botmeter serve --api-keys-file keys.toml`) that holds only their SHA-256
//! digests, never the keys:
//!
//! ```toml
//! [[keys]]
//! name = "grafana"            # shown in logs; never the key
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! role = "reader"             # admin | reader | customer:<customer id>
//! ```
//!
//! A request sends `Authorization: Bearer <key>`; the key's digest is compared with every stored
//! digest in constant time (`subtle`). Roles:
//! - `admin`: every route;
//! - `reader`: every report, not the audit trail (`/v1/audit`, which shows who did what with
//!   which API key);
//! - `customer:<id>`: only that customer's report (`/v1/customers/<id>/report`), the usage of the
//!   bot users that belong to it (`/v1/owners/<bot>/usage`, while they belong to it: a bot user
//!   that moved to another customer within the requested range shows the customer's side only)
//!   and their credentials (`/v1/credentials`, the bot users that belong to it at its `at`), by
//!   the one ownership rule of [`super::tenancy`] (a bot user's metadata as of each event's
//!   time); another customer or owner answers 404 (its existence is not confirmed), any other
//!   route 403.
//!
//! A keys file with no keys, or with two keys of the same digest (which one a request gets would be
//! arbitrary: a customer key could act as an admin), is refused when `serve` starts.
//!
//! With no keys configured the API is open (every route, as admin), and `serve` logs a warning.
//! `/healthz`, `/readyz`, `/openapi.json` and the API page under `/docs` never need a key (the
//! page holds no data; its "Authorize" button sends the key with each call it makes).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::debug;

use super::params::{check_id, TimeRange};
use super::report::Scope;
use super::settings::{self, Format, SettingsError};
use super::{ApiError, AppState};

/// Paths that never need a key.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// Whether `path` never needs a key: a [`PUBLIC_PATHS`] entry, or the API page's own files.
fn is_public(path: &str) -> bool {
    PUBLIC_PATHS.contains(&path)
        || path
            .strip_prefix(super::openapi::DOCS_PATH)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The keys file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    /// The keys: at least one (without `--api-keys-file` the API is open), each digest once.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
}

/// One key of the keys file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// A name for logs (who holds the key); unique in the file.
    pub name: String,
    /// The key's SHA-256 digest, 64 hex digits (`printf %s "$KEY" | sha256sum`); unique in the
    /// file.
    pub sha256: String,
    /// `admin`, `reader`, or `customer:<customer id>`.
    pub role: String,
}

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Every report but the audit trail.
    Reader,
    /// One customer's report and usage.
    Customer(String),
}

impl Role {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "admin" => Some(Self::Admin),
            "reader" => Some(Self::Reader),
            _ => {
                let id = value.strip_prefix("customer:")?;
                check_id("role", "customer", id).ok()?;
                Some(Self::Customer(id.to_owned()))
            }
        }
    }
}

#[derive(Clone)]
struct StoredKey {
    name: String,
    digest: [u8; 32],
    role: Role,
}

/// The configured keys, validated; cheap to clone.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Arc<Vec<StoredKey>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and roles only: digests are not secrets, but nothing needs them in a log.
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.name, &k.role)))
            .finish()
    }
}

impl ApiKeys {
    /// Reads and validates a keys file (TOML, or JSON for `*.json`).
    pub fn load(path: &std::path::Path) -> Result<Self, SettingsError> {
        let file: ApiKeysFile = settings::read(path)?;
        Self::validate(path, file)
    }

    /// Parses and validates keys from text (no IO).
    pub fn parse(
        path: &std::path::Path,
        text: &str,
        format: Format,
    ) -> Result<Self, SettingsError> {
        let file: ApiKeysFile = settings::parse(path, text, format)?;
        Self::validate(path, file)
    }

    /// Checks every entry: at least one key, names and digests unique, roles known.
    pub fn validate(path: &std::path::Path, file: ApiKeysFile) -> Result<Self, SettingsError> {
        if file.keys.is_empty() {
            return Err(SettingsError::Invalid {
                path: path.to_owned(),
                field: "keys".to_owned(),
                message: "the file has no keys; omit --api-keys-file to leave the API open"
                    .to_owned(),
            });
        }
        let mut keys: Vec<StoredKey> = Vec::with_capacity(file.keys.len());
        for (i, entry) in file.keys.into_iter().enumerate() {
            let key = check_entry(path, i, entry, &keys)?;
            keys.push(key);
        }
        Ok(Self {
            keys: Arc::new(keys),
        })
    }

    /// No keys: the API is open.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key whose digest matches `presented`'s, compared with every stored digest in constant
    /// time.
    fn find(&self, presented: &str) -> Option<&StoredKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in self.keys.iter() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found
    }
}

/// Keys file entry `i`, checked against the entries before it (`earlier`).
fn check_entry(
    path: &std::path::Path,
    i: usize,
    entry: ApiKeyEntry,
    earlier: &[StoredKey],
) -> Result<StoredKey, SettingsError> {
    let invalid = |field: &str, message: String| SettingsError::Invalid {
        path: path.to_owned(),
        field: format!("keys[{i}].{field}"),
        message,
    };
    if entry.name.trim().is_empty() {
        return Err(invalid("name", "must not be empty".to_owned()));
    }
    if earlier.iter().any(|k| k.name == entry.name) {
        return Err(invalid("name", format!("{:?} is used twice", entry.name)));
    }
    let digest = hex::decode(&entry.sha256)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            invalid(
                "sha256",
                format!(
                    "expected 64 hex digits (the SHA-256 of the key, not the key), found {} characters",
                    entry.sha256.len()
                ),
            )
        })?;
    // One key, one role: with a digest twice, which role a request gets would be arbitrary.
    if let Some((j, other)) = earlier.iter().enumerate().find(|(_, k)| k.digest == digest) {
        return Err(invalid(
            "sha256",
            format!(
                "digest {} is also the digest of keys[{j}] ({:?}): each key must be unique",
                hex::encode(digest),
                other.name
            ),
        ));
    }
    let role = Role::parse(&entry.role).ok_or_else(|| {
        invalid(
            "role",
            format!(
                "expected admin, reader or customer:<id> (letters, digits, _, - and .), found {:?}",
                entry.role
            ),
        )
    })?;
    Ok(StoredKey {
        name: entry.name,
        digest,
        role,
    })
}

/// Who is asking, as established by `authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No keys are configured: everything is allowed.
    Open,
    /// A configured key.
    Key {
        /// The key's name.
        name: String,
        /// Its role.
        role: Role,
    },
}

impl Access {
    /// The customer of a `customer:<id>` key; `None` for account-wide access.
    pub(super) fn customer(&self) -> Option<&str> {
        match self {
            Self::Key {
                role: Role::Customer(id),
                ..
            } => Some(id),
            _ => None,
        }
    }

    /// Account-wide reports: admin and reader.
    pub(super) fn require_reader(&self) -> Result<(), ApiError> {
        match self.customer() {
            None => Ok(()),
            Some(id) => Err(ApiError::Forbidden {
                message: format!(
                    "this key is scoped to customer {id:?}: it may read /v1/customers/{id}/report, \
                     the usage of that customer's bot users and their credentials only"
                ),
            }),
        }
    }

    /// The audit trail: admin only.
    pub(super) fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Open
            | Self::Key {
                role: Role::Admin, ..
            } => Ok(()),
            Self::Key { role, .. } => Err(ApiError::Forbidden {
                message: format!(
                    "this route needs an admin key; this key's role is {}",
                    role_name(role)
                ),
            }),
        }
    }

    /// A customer's report: any account-wide key, or that customer's key (404 for another
    /// customer: its existence is not confirmed).
    pub(super) fn check_customer(&self, customer_id: &str) -> Result<(), ApiError> {
        match self.customer() {
            Some(own) if own != customer_id => Err(ApiError::Missing {
                what: format!("customer {customer_id:?}"),
            }),
            _ => Ok(()),
        }
    }

    /// The usage of `owner_id` over `range` this key may read: all of it for an account-wide key;
    /// for a customer key, the owner's usage while it is one of that customer's bot users, by the
    /// rule of the customer report ([`super::tenancy`]); 404 when it never is in the range.
    pub(super) async fn owner_scope(
        &self,
        state: &AppState,
        owner_id: &str,
        range: TimeRange,
    ) -> Result<Scope, ApiError> {
        let Some(customer) = self.customer() else {
            return Ok(Scope::owner(owner_id));
        };
        super::tenancy::resolve(state, customer, range)
            .await?
            .owner_scope(owner_id)
            .ok_or_else(|| ApiError::Missing {
                what: format!("owner {owner_id:?}"),
            })
    }
}

fn role_name(role: &Role) -> String {
    match role {
        Role::Admin => "admin".to_owned(),
        Role::Reader => "reader".to_owned(),
        Role::Customer(id) => format!("customer:{id}"),
    }
}

/// Middleware: establishes [`Access`] for every request, or answers 401.
pub(super) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let access = if state.api_keys.is_empty() || is_public(request.uri().path()) {
        Access::Open
    } else {
        match bearer(&request) {
            Err(message) => return ApiError::Unauthorized { message }.into_response(),
            Ok(presented) => match state.api_keys.find(presented) {
                Some(key) => {
                    debug!(key = %key.name, path = %request.uri().path(), "authenticated");
                    Access::Key {
                        name: key.name.clone(),
                        role: key.role.clone(),
                    }
                }
                None => {
                    return ApiError::Unauthorized {
                        message: "the API key is not valid".to_owned(),
                    }
                    .into_response()
                }
            },
        }
    };
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(request: &Request) -> Result<&str, String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            "missing Authorization header: send Authorization: Bearer <API key>".to_owned()
        })?;
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not visible ASCII".to_owned())?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or_else(|| "expected Authorization: Bearer <API key>".to_owned())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!("expected the Bearer scheme, found {scheme:?}"));
    }
    let key = key.trim();
    if key.is_empty() {
        return Err("expected Authorization: Bearer <API key>, found an empty key".to_owned());
    }
    Ok(key)
}

/// The SHA-256 digest of a key, as the keys file stores it.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use axum::http::StatusCode;
    use std::path::Path;

    fn keys(text: &str) -> Result<ApiKeys, SettingsError> {
        ApiKeys::parse(Path::new("keys.toml"), text, Format::Toml)
    }

    fn file() -> String {
        format!(
            "[[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n\
             [[keys]]\nname = \"grafana\"\nsha256 = \"{}\"\nrole = \"reader\"\n\
             [[keys]]\nname = \"acme\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n",
            key_digest("admin-key"),
            key_digest("reader-key"),
            key_digest("acme-key"),
        )
    }

    #[test]
    fn keys_file_is_validated() {
        let parsed = keys(&file()).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed.find("reader-key").unwrap().role, Role::Reader);
        assert_eq!(
            parsed.find("acme-key").unwrap().role,
            Role::Customer("acme".to_owned())
        );
        assert!(parsed.find("reader-key ").is_none());
        assert!(parsed.find("").is_none());
        // The digest of the key is not the key.
        assert!(parsed.find(&key_digest("admin-key")).is_none());

        for (text, field) in [
            (
                "[[keys]]\nname = \"\"\nsha256 = \"00\"\nrole = \"admin\"",
                "keys[0].name",
            ),
            (
                "[[keys]]\nname = \"a\"\nsha256 = \"admin-key\"\nrole = \"admin\"",
                "keys[0].sha256",
            ),
        ] {
            match keys(text) {
                Err(SettingsError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{text}: {other:?}"),
            }
        }
        let bad_role = format!(
            "[[keys]]\nname = \"a\"\nsha256 = \"{}\"\nrole = \"root\"",
            key_digest("x")
        );
        let err = keys(&bad_role).unwrap_err().to_string();
        assert!(
            err.contains("keys[0].role") && err.contains("\"root\""),
            "{err}"
        );
        let bad_customer = bad_role.replace("\"root\"", "\"customer:a b\"");
        assert!(keys(&bad_customer).is_err());
        let twice = format!("{}{}", file(), file());
        assert!(keys(&twice).unwrap_err().to_string().contains("used twice"));
        // No keys: refused, naming the file (an open API is had by omitting the file).
        for empty in ["", "keys = []\n"] {
            let err = keys(empty).unwrap_err().to_string();
            assert!(
                err.starts_with("keys.toml: keys:") && err.contains("no keys"),
                "{err}"
            );
        }
        // The same digest twice, whatever its case: refused, naming the file and the digest.
        let digest = key_digest("admin-key");
        let same = format!(
            "{}[[keys]]\nname = \"ops2\"\nsha256 = \"{}\"\nrole = \"customer:acme\"\n",
            file(),
            digest.to_uppercase()
        );
        let err = keys(&same).unwrap_err().to_string();
        assert!(
            err.starts_with("keys.toml: keys[3].sha256:")
                && err.contains(&digest)
                && err.contains("keys[0]"),
            "{err}"
        );
        let unknown = "[[keys]]\nname = \"a\"\nkey = \"plain\"\n";
        assert!(matches!(keys(unknown), Err(SettingsError::Parse { .. })));
        let json = ApiKeys::parse(
            Path::new("keys.json"),
            &format!(
                r#"{{"keys":[{{"name":"a","sha256":"{}","role":"admin"}}]}}"#,
                key_digest("k")
            ),
            Format::Json,
        )
        .unwrap();
        assert_eq!(json.len(), 1);
        // Debug never shows digests.
        assert!(!format!("{parsed:?}").contains(&key_digest("admin-key")));
    }

    fn with_keys() -> AppState {
        unreachable_state().with_api_keys(keys(&file()).unwrap())
    }

    #[tokio::test]
    async fn missing_or_wrong_keys_are_401() {
        let uri = "/v1/owners/bot_1/usage?from=2024-05-01&to=2024-05-02";
        for header in [
            None,
            Some("Bearer nope"),
            Some("Basic YWRtaW4="),
            Some("Bearer "),
            Some("admin-key"),
        ] {
            let (status, content_type, body, www) =
                call_with(with_keys(), "GET", uri, header).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}: {body}");
            assert!(content_type.starts_with("application/json"));
            assert_eq!(body["error"]["code"], "unauthorized");
            assert!(www.starts_with("Bearer"), "{www}");
        }
        // Health, the spec and the API page stay open.
        for path in [
            "/healthz",
            "/openapi.json",
            "/docs/",
            "/docs/swagger-ui.css",
        ] {
            let (status, _, _, _) = call_with(with_keys(), "GET", path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}");
        }
    }

    #[tokio::test]
    async fn roles_limit_routes() {
        let usage = "/v1/owners/bot_1/usage?from=2024-05-01&to=2024-05-02";
        // A valid key gets past authentication: ClickHouse is down, so 503.
        for key in ["admin-key", "reader-key"] {
            let (status, _, body, _) =
                call_with(with_keys(), "GET", usage, Some(&format!("Bearer {key}"))).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{key}: {body}");
        }
        let (status, _, body, _) = call_with(
            with_keys(),
            "GET",
            "/v1/audit?owner_id=bot_1",
            Some("bearer reader-key"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("admin"));

        let acme = Some("Bearer acme-key");
        for uri in [
            "/v1/owners?from=2024-05-01&to=2024-05-02",
            "/v1/usage/top?from=2024-05-01&to=2024-05-02",
            "/v1/anomalies?from=2024-05-01&to=2024-05-02",
            "/v1/audit?owner_id=bot_1",
            "/v1/overage?month=2024-05",
        ] {
            let (status, _, body, _) = call_with(with_keys(), "GET", uri, acme).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        let (status, _, body, _) = call_with(
            with_keys(),
            "GET",
            "/v1/customers/globex/report?month=2024-05",
            acme,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        // Its own report gets past the check (and meets the ClickHouse that is down).
        let (status, _, _, _) = call_with(
            with_keys(),
            "GET",
            "/v1/customers/acme/report?month=2024-05",
            acme,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn without_keys_the_api_is_open() {
        let (status, _, _, _) =
            call_with(unreachable_state(), "GET", "/v1/audit?owner_id=bot_1", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
