//! Who a customer is: the one rule behind the customer report and every route a `customer:<id>`
//! key may read.
//!
//! Tenancy is by ownership, not by free text:
//! - A customer's bot users are the bot user whose id is the customer id and, with `botmeter serve
//!   --customer-metadata-key KEY`, every bot user whose metadata has `KEY` at its top level with
//!   the customer id as a string value. The metadata read is the bot user's version in force at
//!   the end of the report's range (its latest created or updated event before it), so a later
//!   change does not rewrite past months.
//! - Its credentials are the ones those bot users own (ownership never changes), and its usage is
//!   the usage attributed to those bot users: their credentials' and their own. A credential owned
//!   by anyone else is never the customer's, whatever its metadata says.
//! - `KEY` is matched at the top level only, parsed here with serde_json: `metadata` is a JSON
//!   object, or a string holding one (ngrok's metadata is a string), and `{"org": {"KEY": …}}`
//!   names no customer. ClickHouse 18.16's JSON functions (visitParam*) find a key at any depth,
//!   so the SQL (`bot_user_metadata.sql`) only hands over each bot user's object.

use serde_json::Value;

use super::catalog::{self, BotUserRow, CredentialFilter, CredentialRow};
use super::report::Scope;
use super::{ApiError, AppState};

/// Who a customer is, per the audit log.
#[derive(Debug, Clone, Default)]
pub(super) struct Resolved {
    pub(super) bots: Vec<BotUserRow>,
    pub(super) credentials: Vec<CredentialRow>,
}

impl Resolved {
    /// Nothing: an unknown customer.
    pub(super) fn is_empty(&self) -> bool {
        self.bots.is_empty()
    }

    pub(super) fn bot_ids(&self) -> impl Iterator<Item = &str> {
        self.bots.iter().map(|b| b.bot_id.as_str())
    }

    /// Usage of the bot users and of the credentials they own.
    pub(super) fn scope(&self) -> Scope {
        Scope {
            owners: self.bot_ids().map(str::to_owned).collect(),
            credentials: self
                .credentials
                .iter()
                .map(|c| c.credential_id.clone())
                .collect(),
        }
    }
}

/// The bot users of `customer_id` as of `before` (Unix seconds, exclusive), and their credentials.
pub(super) async fn resolve(
    state: &AppState,
    customer_id: &str,
    before: u32,
) -> Result<Resolved, ApiError> {
    let mut bot_ids = vec![customer_id.to_owned()];
    let key = state.metadata_key();
    if !key.is_empty() {
        let objects = catalog::bot_user_objects(state, i64::from(before) * 1_000_000).await?;
        bot_ids.extend(
            objects
                .into_iter()
                .filter(|o| {
                    o.bot_id != customer_id
                        && metadata_value(&o.object, key).as_deref() == Some(customer_id)
                })
                .map(|o| o.bot_id),
        );
    }
    let bots = catalog::bot_users(state, false, &bot_ids).await?;
    if bots.is_empty() {
        return Ok(Resolved::default());
    }
    let owners: Vec<String> = bots.iter().map(|b| b.bot_id.clone()).collect();
    let credentials = catalog::credentials(
        state,
        CredentialFilter {
            all: false,
            owners: &owners,
            credentials: &[],
        },
    )
    .await?;
    Ok(Resolved { bots, credentials })
}

/// The string value of `key` at the top level of the metadata of a bot user's JSON `object`
/// (`metadata` an object, or a string holding a JSON object); `None` when absent, empty, not a
/// string, or the JSON does not parse.
pub(super) fn metadata_value(object: &str, key: &str) -> Option<String> {
    let object: Value = serde_json::from_str(object).ok()?;
    let metadata = match object.get("metadata")? {
        Value::String(text) => serde_json::from_str(text).ok()?,
        value @ Value::Object(_) => value.clone(),
        _ => return None,
    };
    match metadata.get(key)? {
        Value::String(value) if !value.is_empty() => Some(value.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(metadata: Value) -> String {
        json!({"id": "bot_1", "name": "ci", "metadata": metadata}).to_string()
    }

    #[test]
    fn the_key_counts_at_the_top_level_only() {
        let value = |metadata: Value| metadata_value(&object(metadata), "customer");
        // ngrok's metadata is a string holding JSON; an object works too.
        assert_eq!(
            value(json!(r#"{"customer":"acme"}"#)).as_deref(),
            Some("acme")
        );
        assert_eq!(value(json!({"customer": "acme"})).as_deref(), Some("acme"));
        // Nested keys name nobody, before or after the top-level one.
        assert_eq!(value(json!(r#"{"org":{"customer":"acme"}}"#)), None);
        assert_eq!(value(json!({"org": {"customer": "acme"}})), None);
        assert_eq!(
            value(json!(r#"{"tags":{"customer":"globex"},"customer":"acme"}"#)).as_deref(),
            Some("acme")
        );
        assert_eq!(
            value(json!(r#"{"customer":"acme","tags":{"customer":"globex"}}"#)).as_deref(),
            Some("acme")
        );
        // Not a string, empty, absent, or not JSON: no customer.
        for metadata in [
            json!(r#"{"customer":42}"#),
            json!(r#"{"customer":""}"#),
            json!(r#"{"customer":{"id":"acme"}}"#),
            json!(r#"{"other":"acme"}"#),
            json!("customer=acme"),
            json!(""),
            json!(null),
            json!(["customer", "acme"]),
        ] {
            assert_eq!(value(metadata.clone()), None, "{metadata}");
        }
        // A key elsewhere in the object is not metadata.
        let elsewhere = json!({"id": "bot_1", "customer": "acme", "labels": {"metadata": {"customer": "acme"}}});
        assert_eq!(metadata_value(&elsewhere.to_string(), "customer"), None);
        assert_eq!(metadata_value("not json", "customer"), None);
    }
}
