//! `group_by=metadata.<key>`: usage split by the value of a key of the credentials' metadata (e.g.
//! `device_id`, `site`, `environment`), **as of each event's time**.
//!
//! - A credential's metadata is the `metadata` of its latest `*_created` or `*_updated` event at or
//!   before the event's time (events that tried to change its owner are ignored): a string holding
//!   a JSON object, as ngrok sends it (an object is read the same way). The key is matched at the
//!   top level only, parsed here with serde_json; its value counts when it is a string. Usage of a
//!   credential with no such value at that time is in the group `(none)`.
//! - Groups have the traffic metrics, `endpoints` and `active_endpoint_hours` of their rows (an
//!   endpoint used under two values in one hour is an endpoint-hour of each); no agent sessions
//!   (a credential's sessions are not split by its metadata's changes).
//! - The SQL (`usage_buckets_metadata.sql`) reads the raw rows: the rollups have no metadata, and a
//!   value may change inside a quarter hour. Credentials with one value over the whole range are
//!   looked up by id; only the rows of credentials whose value changes within the range are paired
//!   with their spans.

use std::collections::{BTreeMap, BTreeSet};

use clickhouse::Row;
use serde::Deserialize;
use serde_json::Value;

use super::catalog::{self, CredentialFilter, CredentialRow};
use super::params::{rfc3339_in, Choice, TimeRange};
use super::report::{
    BucketRow, Granularity, Scope, SeriesSpec, Span, UsageBucket, UsageGroup, UsageMetrics,
};
use super::{ApiError, AppState};
use crate::rows::status;

/// Placeholders: credential ids, before (µs).
pub(super) const CREDENTIAL_METADATA_SQL: &str = include_str!("../../sql/credential_metadata.sql");
/// Placeholders: see the file's header.
pub(super) const USAGE_BUCKETS_METADATA_SQL: &str =
    include_str!("../../sql/usage_buckets_metadata.sql");

/// How `group_by` names a metadata key.
pub(super) const PREFIX: &str = "metadata.";
/// The group of usage whose credential has no value for the key.
pub(super) const NO_VALUE: &str = "(none)";
/// Longest key accepted.
const MAX_KEY_BYTES: usize = 128;

/// A metadata key to group by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MetadataKey(pub(super) String);

impl MetadataKey {
    /// The key of `group_by=metadata.<key>`; `None` when `group_by` names no metadata key.
    pub(super) fn parse(group_by: &str) -> Option<Result<Self, ApiError>> {
        let key = group_by.strip_prefix(PREFIX)?;
        Some(if key.is_empty() || key.len() > MAX_KEY_BYTES {
            Err(ApiError::bad(
                "invalid_parameter",
                "group_by",
                format!(
                    "query parameter group_by: expected metadata.<key> with a key of 1 to \
                     {MAX_KEY_BYTES} bytes, found {group_by:?}"
                ),
            ))
        } else {
            Ok(Self(key.to_owned()))
        })
    }
}

/// One version of a credential, positional row of `credential_metadata.sql`.
#[derive(Debug, Clone, Row, Deserialize)]
struct VersionRow {
    credential_id: String,
    time_us: i64,
    object: String,
}

/// The value of `key` at the top level of a credential object's `metadata`, when it is a string.
pub(super) fn value_in(object: &str, key: &str) -> Option<String> {
    let object: Value = serde_json::from_str(object).ok()?;
    let metadata = match object.get("metadata")? {
        Value::String(text) => serde_json::from_str::<Value>(text).ok()?,
        other => other.clone(),
    };
    metadata.get(key)?.as_str().map(str::to_owned)
}

/// Each credential's value over a range: one value throughout, or spans.
#[derive(Debug, Default, PartialEq, Eq)]
struct Values {
    /// Credentials with one value (other than none) over the whole range, and that value.
    constant: BTreeMap<String, String>,
    /// The value spans of the credentials whose value changes within the range, each
    /// credential's spans together and in time order.
    spans: Vec<ValueSpan>,
}

/// `value` from `from_us` until `to_us` (exclusive) for `credential`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValueSpan {
    credential: String,
    from_us: i64,
    to_us: i64,
    value: String,
}

/// [`Values`] as `usage_buckets_metadata.sql` binds them: arrays of one length each.
#[derive(Debug, Default, PartialEq, Eq)]
struct BoundValues {
    constant_ids: Vec<String>,
    constant_values: Vec<String>,
    changing_ids: Vec<String>,
    span_credentials: Vec<String>,
    span_from_us: Vec<i64>,
    span_to_us: Vec<i64>,
    span_values: Vec<String>,
}

/// The value of `key` of each credential over `[from_us, to_us)`, from its versions (sorted by
/// credential and time, all before `to_us`).
fn values(versions: &[VersionRow], key: &str, from_us: i64, to_us: i64) -> Values {
    let mut by_credential: BTreeMap<&str, Vec<(i64, String)>> = BTreeMap::new();
    for version in versions {
        let value = value_in(&version.object, key).unwrap_or_else(|| NO_VALUE.to_owned());
        by_credential
            .entry(&version.credential_id)
            .or_default()
            .push((version.time_us, value));
    }
    let mut out = Values::default();
    for (credential, history) in by_credential {
        // The value in force at `from_us`, then each change inside the range.
        let at_start = history
            .iter()
            .take_while(|(t, _)| *t <= from_us)
            .last()
            .map_or(NO_VALUE, |(_, v)| v.as_str());
        let mut starts: Vec<(i64, String)> = vec![(from_us, at_start.to_owned())];
        for (t, value) in history.iter().filter(|(t, _)| *t > from_us && *t < to_us) {
            if starts.last().is_some_and(|(_, v)| v != value) {
                starts.push((*t, value.clone()));
            }
        }
        if let [(_, value)] = starts.as_slice() {
            if value != NO_VALUE {
                out.constant.insert(credential.to_owned(), value.clone());
            }
            continue;
        }
        let ends: Vec<i64> = starts
            .iter()
            .skip(1)
            .map(|(t, _)| *t)
            .chain([to_us])
            .collect();
        out.spans.extend(
            starts
                .into_iter()
                .zip(ends)
                .map(|((from_us, value), to_us)| ValueSpan {
                    credential: credential.to_owned(),
                    from_us,
                    to_us,
                    value,
                }),
        );
    }
    out
}

impl Values {
    /// Makes `credentials` count only within `spans` (disjoint, inside `range`): each becomes a
    /// changing credential whose value spans are cut to them (a credential with no value span
    /// is `(none)` within them).
    fn cut_to(&mut self, credentials: &[&str], spans: &[Span], range: TimeRange) {
        for &credential in credentials {
            // Its value spans over the whole range, taken out.
            let own: Vec<ValueSpan> = match self.constant.remove(credential) {
                Some(value) => vec![ValueSpan {
                    credential: credential.to_owned(),
                    from_us: range.start_us(),
                    to_us: range.end_us(),
                    value,
                }],
                None => {
                    let (own, others) = std::mem::take(&mut self.spans)
                        .into_iter()
                        .partition(|s| s.credential == credential);
                    self.spans = others;
                    own
                }
            };
            let own = if own.is_empty() {
                vec![ValueSpan {
                    credential: credential.to_owned(),
                    from_us: range.start_us(),
                    to_us: range.end_us(),
                    value: NO_VALUE.to_owned(),
                }]
            } else {
                own
            };
            for value_span in &own {
                for span in spans {
                    let from_us = value_span.from_us.max(span.from_us);
                    let to_us = value_span.to_us.min(span.to_us);
                    if from_us < to_us {
                        self.spans.push(ValueSpan {
                            from_us,
                            to_us,
                            ..value_span.clone()
                        });
                    }
                }
            }
        }
    }

    /// The arrays the SQL binds.
    fn bound(&self) -> BoundValues {
        let mut bound = BoundValues {
            constant_ids: self.constant.keys().cloned().collect(),
            constant_values: self.constant.values().cloned().collect(),
            ..BoundValues::default()
        };
        for span in &self.spans {
            if bound.changing_ids.last() != Some(&span.credential) {
                bound.changing_ids.push(span.credential.clone());
            }
            bound.span_credentials.push(span.credential.clone());
            bound.span_from_us.push(span.from_us);
            bound.span_to_us.push(span.to_us);
            bound.span_values.push(span.value.clone());
        }
        bound
    }
}

/// The credentials of `filter` and the value of `key` of each over `range`.
async fn credential_values(
    state: &AppState,
    filter: CredentialFilter<'_>,
    range: TimeRange,
    key: &MetadataKey,
) -> Result<(Vec<CredentialRow>, Values), ApiError> {
    let credentials = catalog::credentials(state, filter).await?;
    let ids: Vec<String> = credentials
        .iter()
        .map(|c| c.credential_id.clone())
        .collect();
    let versions = fetch_versions(state, &ids, range.end_us()).await?;
    let values = values(&versions, &key.0, range.start_us(), range.end_us());
    Ok((credentials, values))
}

/// The spec's usage per value of `key`, per bucket and over the range.
pub(super) async fn groups(
    state: &AppState,
    spec: &SeriesSpec,
    key: &MetadataKey,
) -> Result<Vec<UsageGroup>, ApiError> {
    // Owners counted in spans only (a customer key reading a bot user that moved customers):
    // their credentials are read as changing ones, each value span cut to the owner's spans.
    let partial_owners: Vec<String> = spec
        .scope
        .partial
        .iter()
        .map(|p| p.owner_id.clone())
        .collect();
    let owners: Vec<String> = spec
        .scope
        .owners
        .iter()
        .chain(&partial_owners)
        .cloned()
        .collect();
    let filter = CredentialFilter {
        all: false,
        owners: &owners,
        credentials: &spec.scope.credentials,
    };
    let (credentials, mut values) = credential_values(state, filter, spec.range, key).await?;
    let mut scope = spec.scope.clone();
    for partial in &spec.scope.partial {
        let owned: Vec<&str> = credentials
            .iter()
            .filter(|c| c.owner_id == partial.owner_id)
            .map(|c| c.credential_id.as_str())
            .collect();
        values.cut_to(&owned, &partial.spans, spec.range);
        scope
            .credentials
            .extend(owned.iter().map(|c| (*c).to_owned()));
    }
    let bound = values.bound();
    let (buckets, totals) = tokio::try_join!(
        fetch(
            state,
            &scope,
            spec.range,
            spec.tz,
            &bound,
            Some(spec.granularity)
        ),
        fetch(state, &scope, spec.range, spec.tz, &bound, None),
    )?;
    let keys: BTreeSet<&str> = totals.iter().map(|r| r.group_key.as_str()).collect();
    Ok(keys
        .into_iter()
        .map(|group_key| UsageGroup {
            key: group_key.to_owned(),
            buckets: buckets
                .iter()
                .filter(|r| r.group_key == group_key)
                .map(|row| UsageBucket {
                    start: rfc3339_in(row.bucket_start, spec.tz),
                    metrics: row.metrics(),
                })
                .collect(),
            session_only_buckets: Vec::new(),
            totals: totals
                .iter()
                .find(|r| r.group_key == group_key)
                .map(BucketRow::metrics)
                .unwrap_or_default(),
            description: None,
            metadata: None,
        })
        .collect())
}

/// The account's usage per value of `key` over `range` (endpoint-hours in UTC hours), largest
/// `metric` first (ties by value), at most `limit`: the top route's `group_by=metadata.<key>`.
pub(super) async fn ranked(
    state: &AppState,
    range: TimeRange,
    key: &MetadataKey,
    metric: impl Fn(&UsageMetrics) -> u64,
    limit: u32,
) -> Result<Vec<(String, UsageMetrics)>, ApiError> {
    let filter = CredentialFilter {
        all: true,
        owners: &[],
        credentials: &[],
    };
    let (credentials, values) = credential_values(state, filter, range, key).await?;
    // Every credential of the account is in scope: attributed usage always has one.
    let scope = Scope {
        credentials: credentials.into_iter().map(|c| c.credential_id).collect(),
        ..Scope::default()
    };
    let bound = values.bound();
    let mut totals: Vec<(String, UsageMetrics)> =
        fetch(state, &scope, range, chrono_tz::Tz::UTC, &bound, None)
            .await?
            .into_iter()
            .map(|row| (row.group_key.clone(), row.metrics()))
            .collect();
    totals.sort_by(|(a_key, a), (b_key, b)| metric(b).cmp(&metric(a)).then(a_key.cmp(b_key)));
    totals.truncate(limit as usize);
    Ok(totals)
}

/// The metadata of each credential as of the end of `range`, for the groups of
/// `group_by=credential`: (credential id → (description, metadata)).
pub(super) async fn latest_versions(
    state: &AppState,
    credential_ids: &[String],
    range: TimeRange,
) -> Result<BTreeMap<String, (String, String)>, ApiError> {
    let versions = fetch_versions(state, credential_ids, range.end_us()).await?;
    let mut latest = BTreeMap::new();
    for version in versions {
        let object: Value = serde_json::from_str(&version.object).unwrap_or(Value::Null);
        let text = |name: &str| match object.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        // Oldest first: the last one wins.
        latest.insert(
            version.credential_id,
            (text("description"), text("metadata")),
        );
    }
    Ok(latest)
}

async fn fetch_versions(
    state: &AppState,
    credential_ids: &[String],
    before_us: i64,
) -> Result<Vec<VersionRow>, ApiError> {
    if credential_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(state
        .read("read the credentials' metadata", |client| {
            client
                .query(CREDENTIAL_METADATA_SQL)
                .bind(credential_ids)
                .bind(before_us)
                .fetch_all::<VersionRow>()
        })
        .await?)
}

/// `usage_buckets_metadata.sql` over `scope` and `range`, per bucket of `granularity` (or over the
/// range) of `tz`.
async fn fetch(
    state: &AppState,
    scope: &Scope,
    range: TimeRange,
    tz: chrono_tz::Tz,
    values: &BoundValues,
    granularity: Option<Granularity>,
) -> Result<Vec<BucketRow>, ApiError> {
    let granularity = granularity.map_or("all", |g| g.name());
    let tz = tz.name();
    Ok(state
        .read(
            format!("read usage per {granularity} and metadata value of {scope:?}"),
            |client| {
                client
                    .query(USAGE_BUCKETS_METADATA_SQL)
                    .bind(tz)
                    .bind(granularity)
                    // The credentials with one value.
                    .bind(tz)
                    .bind(&values.constant_ids)
                    .bind(&values.constant_values)
                    .bind(&values.constant_ids)
                    .bind(&scope.owners)
                    .bind(&scope.credentials)
                    .bind(&values.changing_ids)
                    .bind(status::ATTRIBUTED)
                    .bind(range.from)
                    .bind(range.to)
                    // The credentials whose value changes, with their spans.
                    .bind(tz)
                    .bind(&scope.owners)
                    .bind(&scope.credentials)
                    .bind(&values.changing_ids)
                    .bind(status::ATTRIBUTED)
                    .bind(range.from)
                    .bind(range.to)
                    .bind(&values.span_credentials)
                    .bind(&values.span_from_us)
                    .bind(&values.span_to_us)
                    .bind(&values.span_values)
                    .fetch_all::<BucketRow>()
            },
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(credential: &str, time_us: i64, metadata: &str) -> VersionRow {
        VersionRow {
            credential_id: credential.to_owned(),
            time_us,
            object: serde_json::json!({"id": credential, "metadata": metadata}).to_string(),
        }
    }

    #[test]
    fn the_key_is_read_at_the_top_level_of_the_metadata_string_or_object() {
        let object = |metadata: Value| serde_json::json!({"metadata": metadata}).to_string();
        assert_eq!(
            value_in(&object(Value::String(r#"{"site":"s3"}"#.into())), "site").as_deref(),
            Some("s3")
        );
        assert_eq!(
            value_in(&object(serde_json::json!({"site": "s4"})), "site").as_deref(),
            Some("s4")
        );
        for metadata in [
            Value::String(r#"{"org":{"site":"nested"}}"#.into()),
            Value::String("not json".into()),
            Value::String(r#"{"site":3}"#.into()),
            Value::Null,
        ] {
            assert_eq!(
                value_in(&object(metadata.clone()), "site"),
                None,
                "{metadata}"
            );
        }
        assert_eq!(value_in(r#"{"id":"cr_1"}"#, "site"), None);
    }

    #[test]
    fn values_are_constant_or_spans_as_of_each_time() {
        let versions = [
            version("cr_const", 0, r#"{"site":"s1"}"#),
            version("cr_const", 50, r#"{"site":"s1","other":"x"}"#),
            version("cr_moves", 10, r#"{"site":"s3"}"#),
            version("cr_moves", 60, r#"{"site":"s4"}"#),
            version("cr_none", 10, r#"{"team":"t"}"#),
            version("cr_late", 70, r#"{"site":"s9"}"#),
            version("cr_before", 0, r#"{"site":"s5"}"#),
            version("cr_before", 20, r#"{"site":"s6"}"#),
        ];
        let got = values(&versions, "site", 20, 100).bound();
        assert_eq!(
            got,
            BoundValues {
                constant_ids: vec!["cr_before".into(), "cr_const".into()],
                constant_values: vec!["s6".into(), "s1".into()],
                changing_ids: vec!["cr_late".into(), "cr_moves".into()],
                span_credentials: vec![
                    "cr_late".into(),
                    "cr_late".into(),
                    "cr_moves".into(),
                    "cr_moves".into()
                ],
                span_from_us: vec![20, 70, 20, 60],
                span_to_us: vec![70, 100, 60, 100],
                span_values: vec![NO_VALUE.into(), "s9".into(), "s3".into(), "s4".into()],
            }
        );
    }

    #[test]
    fn an_owner_counted_in_spans_has_its_credentials_cut_to_them() {
        let versions = [
            version("cr_const", 0, r#"{"site":"s1"}"#),
            version("cr_moves", 0, r#"{"site":"s3"}"#),
            version("cr_moves", 60, r#"{"site":"s4"}"#),
        ];
        let range = TimeRange { from: 0, to: 1 };
        let mut got = values(&versions, "site", 0, 1_000_000);
        let spans = [
            Span {
                from_us: 50,
                to_us: 70,
            },
            Span {
                from_us: 900_000,
                to_us: 1_000_000,
            },
        ];
        got.cut_to(&["cr_const", "cr_moves", "cr_bare"], &spans, range);
        let got = got.bound();
        assert!(got.constant_ids.is_empty());
        assert_eq!(got.changing_ids, ["cr_const", "cr_moves", "cr_bare"]);
        let spans: Vec<(&str, i64, i64, &str)> = (0..got.span_credentials.len())
            .map(|i| {
                (
                    got.span_credentials[i].as_str(),
                    got.span_from_us[i],
                    got.span_to_us[i],
                    got.span_values[i].as_str(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            [
                ("cr_const", 50, 70, "s1"),
                ("cr_const", 900_000, 1_000_000, "s1"),
                ("cr_moves", 50, 60, "s3"),
                ("cr_moves", 60, 70, "s4"),
                ("cr_moves", 900_000, 1_000_000, "s4"),
                ("cr_bare", 50, 70, NO_VALUE),
                ("cr_bare", 900_000, 1_000_000, NO_VALUE),
            ]
        );
    }

    #[test]
    fn group_by_names_a_metadata_key_or_is_refused() {
        assert_eq!(
            MetadataKey::parse("metadata.device_id").map(Result::unwrap),
            Some(MetadataKey("device_id".into()))
        );
        assert!(MetadataKey::parse("credential").is_none());
        assert!(MetadataKey::parse("metadata.").unwrap().is_err());
        assert!(MetadataKey::parse(&format!("metadata.{}", "k".repeat(129)))
            .unwrap()
            .is_err());
    }
}
