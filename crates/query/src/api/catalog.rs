//! What the audit log says about credentials, bot users and principals, for the reports that name
//! them (`crates/query/sql/credentials_catalog.sql`, `bot_users_catalog.sql`,
//! `bot_user_metadata.sql`, `principals.sql`).

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState};

/// Placeholders: all, owners, credentials.
pub(super) const CREDENTIALS_SQL: &str = include_str!("../../sql/credentials_catalog.sql");
/// Placeholders: all, bot ids.
pub(super) const BOT_USERS_SQL: &str = include_str!("../../sql/bot_users_catalog.sql");
/// Placeholders: from, from, to (microseconds).
pub(super) const BOT_USER_METADATA_SQL: &str = include_str!("../../sql/bot_user_metadata.sql");
/// No placeholders.
pub(super) const PRINCIPALS_SQL: &str = include_str!("../../sql/principals.sql");

/// One credential, positional row of `credentials_catalog.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct CredentialRow {
    pub(super) credential_id: String,
    pub(super) kind: String,
    pub(super) owner_id: String,
    pub(super) description: String,
    pub(super) created_us: i64,
    /// Its deletion, or its owner's when that came first (deleting a bot user revokes its
    /// credentials); 0 while live.
    pub(super) deleted_us: i64,
    /// 1 when the owner's deletion revoked it (no deletion of its own came first).
    pub(super) revoked_with_owner: u8,
    /// The `bot_user_deleted.v0` event that revoked it, when `revoked_with_owner`.
    pub(super) revoking_event_id: String,
}

/// One bot user, positional row of `bot_users_catalog.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct BotUserRow {
    pub(super) bot_id: String,
    pub(super) name: String,
    pub(super) active: u8,
    pub(super) deleted: u8,
    pub(super) created_us: i64,
    pub(super) deleted_us: i64,
}

/// One version of a bot user's object, positional row of `bot_user_metadata.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct BotUserVersionRow {
    pub(super) bot_id: String,
    /// When it came into force (its created or updated event's time), Unix microseconds.
    pub(super) since_us: i64,
    /// The JSON object of that event.
    pub(super) object: String,
}

/// One principal or owner with its latest subject.
#[derive(Debug, Clone, Row, Deserialize)]
pub(super) struct PrincipalRow {
    pub(super) id: String,
    pub(super) subject: String,
}

/// Which credentials to list.
#[derive(Debug, Clone, Default)]
pub(super) struct CredentialFilter<'a> {
    pub(super) all: bool,
    pub(super) owners: &'a [String],
    pub(super) credentials: &'a [String],
}

/// Credentials matching `filter`.
pub(super) async fn credentials(
    state: &AppState,
    filter: CredentialFilter<'_>,
) -> Result<Vec<CredentialRow>, ApiError> {
    Ok(state
        .read("read the credential catalog", |client| {
            client
                .query(CREDENTIALS_SQL)
                .bind(u8::from(filter.all))
                .bind(filter.owners)
                .bind(filter.credentials)
                .fetch_all::<CredentialRow>()
        })
        .await?)
}

/// Bot users: all, or those listed.
pub(super) async fn bot_users(
    state: &AppState,
    all: bool,
    bot_ids: &[String],
) -> Result<Vec<BotUserRow>, ApiError> {
    Ok(state
        .read("read the bot user catalog", |client| {
            client
                .query(BOT_USERS_SQL)
                .bind(u8::from(all))
                .bind(bot_ids)
                .fetch_all::<BotUserRow>()
        })
        .await?)
}

/// Every bot user's versions in force during `[from_us, to_us)`: the one in force at `from_us`
/// and those that came into force after it, in order of bot user and time.
pub(super) async fn bot_user_versions(
    state: &AppState,
    from_us: i64,
    to_us: i64,
) -> Result<Vec<BotUserVersionRow>, ApiError> {
    Ok(state
        .read("read the bot users' metadata", |client| {
            client
                .query(BOT_USER_METADATA_SQL)
                .bind(from_us)
                .bind(from_us)
                .bind(to_us)
                .fetch_all::<BotUserVersionRow>()
        })
        .await?)
}

/// Every principal and credential owner of the audit log.
pub(super) async fn principals(state: &AppState) -> Result<Vec<PrincipalRow>, ApiError> {
    Ok(state
        .read("read the principals", |client| {
            client.query(PRINCIPALS_SQL).fetch_all::<PrincipalRow>()
        })
        .await?)
}

/// Credentials by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialCounts {
    /// Tunnel credentials (authtokens).
    pub authtoken: u64,
    /// SSH public keys.
    pub ssh_key: u64,
    /// API keys.
    pub api_key: u64,
}

impl CredentialCounts {
    pub(super) fn add(&mut self, kind: &str) {
        match kind {
            "authtoken" => self.authtoken += 1,
            "ssh_key" => self.ssh_key += 1,
            _ => self.api_key += 1,
        }
    }
}
