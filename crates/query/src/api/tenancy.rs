//! Who a customer is: the one rule behind the customer report and every route a `customer:<id>`
//! key may read.
//!
//! Tenancy is by ownership, not by free text, and as of each event's time:
//! - A customer's bot users are the bot user whose id is the customer id (always) and, with
//!   `botmeter serve --customer-metadata-key KEY`, every bot user whose metadata has `KEY` at its
//!   top level with the customer id as a string value, while it does: a version of a bot user (its
//!   created or updated event) is in force from its event's time to the next version's, and the
//!   bot user is the customer's in the spans where the version in force names it. A bot user that
//!   named customer A until time T and B from T on has its usage before T in A's reports and from
//!   T on in B's, within one month, per hour, per endpoint and per credential alike; a change
//!   never rewrites the usage before it. A report lists the bot users that were the customer's at
//!   some time in its range.
//! - Its credentials are the ones those bot users own (ownership never changes), and its usage is
//!   the usage attributed to those bot users, their credentials' and their own, each event counted
//!   when its `event_time_us` falls in a span of its bot user (agent sessions are cut to the same
//!   spans). A credential owned by anyone else is never the customer's, whatever its metadata says.
//! - `KEY` is matched at the top level only, parsed here with serde_json: `metadata` is a JSON
//!   object, or a string holding one (ngrok's metadata is a string), and `{"org": {"KEY": …}}`
//!   names no customer. ClickHouse 18.16's JSON functions (visitParam*) find a key at any depth,
//!   so the SQL (`bot_user_metadata.sql`) only hands over each bot user's versions.
//! - Bot users that are the customer's over the whole range are read as any owner is; the others
//!   within their spans (`usage_buckets_spans.sql`, see [`super::report`]: the rollup for the
//!   quarter hours inside a span, the raw rows for those a change cuts), summed with the rest
//!   before endpoints and endpoint-hours are counted.

use std::collections::BTreeMap;

use serde_json::Value;

use super::catalog::{self, BotUserRow, CredentialFilter, CredentialRow};
use super::params::TimeRange;
use super::report::{PartialOwner, Scope, Span};
use super::{ApiError, AppState};

/// Who a customer is over a range, per the audit log.
#[derive(Debug, Clone, Default)]
pub(super) struct Resolved {
    /// Its bot users: those that are its at some time in the range.
    pub(super) bots: Vec<BotUserRow>,
    /// The credentials they own.
    pub(super) credentials: Vec<CredentialRow>,
    /// The bot users that are its for part of the range only, with the spans in which they are;
    /// the others are its over all of it.
    pub(super) partial: BTreeMap<String, Vec<Span>>,
}

impl Resolved {
    /// Nothing: an unknown customer (in this range).
    pub(super) fn is_empty(&self) -> bool {
        self.bots.is_empty()
    }

    /// Usage of the bot users and of the credentials they own, each while its bot user is the
    /// customer's.
    pub(super) fn scope(&self) -> Scope {
        let mut scope = Scope::default();
        for bot in &self.bots {
            match self.partial.get(&bot.bot_id) {
                None => {
                    scope.owners.push(bot.bot_id.clone());
                    scope.credentials.extend(
                        self.credentials
                            .iter()
                            .filter(|c| c.owner_id == bot.bot_id)
                            .map(|c| c.credential_id.clone()),
                    );
                }
                // Its credentials follow it: their rows carry it as owner.
                Some(spans) => scope.partial.push(PartialOwner {
                    owner_id: bot.bot_id.clone(),
                    spans: spans.clone(),
                }),
            }
        }
        scope
    }

    /// The usage of `owner_id` while it is the customer's (as the owner usage report reads an
    /// owner: by owner id), or `None` when it is not one of its bot users in the range.
    pub(super) fn owner_scope(&self, owner_id: &str) -> Option<Scope> {
        if !self.bots.iter().any(|b| b.bot_id == owner_id) {
            return None;
        }
        Some(match self.partial.get(owner_id) {
            None => Scope::owner(owner_id),
            Some(spans) => Scope {
                partial: vec![PartialOwner {
                    owner_id: owner_id.to_owned(),
                    spans: spans.clone(),
                }],
                ..Scope::default()
            },
        })
    }
}

/// The ids of the bot users that are `customer_id`'s at `at` (Unix seconds; the versions in
/// force in its last second, as every "as of" read takes events before it).
pub(super) async fn bots_at(
    state: &AppState,
    customer_id: &str,
    at: u32,
) -> Result<Vec<String>, ApiError> {
    let last_second = TimeRange {
        from: at.saturating_sub(1),
        to: at,
    };
    let resolved = resolve(state, customer_id, last_second).await?;
    Ok(resolved.bots.into_iter().map(|b| b.bot_id).collect())
}

/// The bot users of `customer_id` in `range`, when each is, and their credentials.
pub(super) async fn resolve(
    state: &AppState,
    customer_id: &str,
    range: TimeRange,
) -> Result<Resolved, ApiError> {
    let whole = Span::of(range);
    let mut spans: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    let key = state.metadata_key();
    if !key.is_empty() {
        let mut versions: BTreeMap<String, Vec<(i64, bool)>> = BTreeMap::new();
        for row in catalog::bot_user_versions(state, whole.from_us, whole.to_us).await? {
            let names = metadata_value(&row.object, key).as_deref() == Some(customer_id);
            versions
                .entry(row.bot_id)
                .or_default()
                .push((row.since_us, names));
        }
        for (bot_id, mut versions) in versions {
            // Stable: versions of the same microsecond keep the order the SQL gave them.
            versions.sort_by_key(|(since_us, _)| *since_us);
            let named = spans_naming(versions, whole);
            if !named.is_empty() {
                spans.insert(bot_id, named);
            }
        }
    }
    // The bot user whose id is the customer id is the customer's always.
    spans.insert(customer_id.to_owned(), vec![whole]);
    let bot_ids: Vec<String> = spans.keys().cloned().collect();
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
    let partial = spans
        .into_iter()
        .filter(|(bot_id, spans)| spans != &[whole] && owners.contains(bot_id))
        .collect();
    Ok(Resolved {
        bots,
        credentials,
        partial,
    })
}

/// The spans of `range` in which a bot user is the customer's: `versions` are (in force since,
/// Unix microseconds; whether it names the customer), in time order, each in force until the
/// next one (the first from the range's start at the latest). Disjoint and in order; adjacent
/// versions naming the customer make one span.
fn spans_naming(versions: impl IntoIterator<Item = (i64, bool)>, range: Span) -> Vec<Span> {
    let mut out = Vec::new();
    let mut open: Option<i64> = None;
    let mut close = |from_us: i64, to_us: i64| {
        if from_us < to_us {
            out.push(Span { from_us, to_us });
        }
    };
    for (since_us, names) in versions {
        let at = since_us.clamp(range.from_us, range.to_us);
        match (open, names) {
            (None, true) => open = Some(at),
            (Some(from_us), false) => {
                close(from_us, at);
                open = None;
            }
            _ => {}
        }
    }
    if let Some(from_us) = open {
        close(from_us, range.to_us);
    }
    out
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
    fn a_bot_user_is_the_customers_while_its_version_in_force_names_it() {
        let range = Span {
            from_us: 100,
            to_us: 200,
        };
        let span = |from_us, to_us| Span { from_us, to_us };
        // Named before the range and never changed: all of it.
        assert_eq!(spans_naming([(10, true)], range), [range]);
        // Moved away inside the range: until the change, which is the new version's.
        assert_eq!(
            spans_naming([(10, true), (150, false)], range),
            [span(100, 150)]
        );
        // Moved in: from the change on.
        assert_eq!(
            spans_naming([(10, false), (150, true)], range),
            [span(150, 200)]
        );
        // Created inside the range: nothing before its first version.
        assert_eq!(spans_naming([(120, true)], range), [span(120, 200)]);
        // Away and back; two versions in a row naming it make one span.
        assert_eq!(
            spans_naming(
                [
                    (10, true),
                    (120, false),
                    (130, true),
                    (140, true),
                    (190, false)
                ],
                range
            ),
            [span(100, 120), span(130, 190)]
        );
        // Never, or only for no time at all (the later of two versions of one instant wins).
        assert_eq!(spans_naming([(10, false)], range), []);
        assert_eq!(
            spans_naming([(10, false), (150, true), (150, false)], range),
            []
        );
        assert_eq!(spans_naming([], range), []);
        // A change at the range's start belongs to the range.
        assert_eq!(spans_naming([(10, false), (100, true)], range), [range]);
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
