//! `GET /v1/owners[?from=…&to=…]`: every user and bot user the audit log or the usage names, with
//! its kind, name (a bot user's latest name, a user's latest email as principal), whether it is
//! active (bot users: per their latest event; users: always, ngrok publishes no user lifecycle),
//! its live credentials by kind and its deleted ones, and, when `from` and `to` are given, its
//! attributed usage over that range (summed times `sign`; active endpoint hours in UTC hours).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use model::OwnerKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Access;
use super::catalog::{self, CredentialCounts, CredentialFilter};
use super::params::{rfc3339, rfc3339_us, rfc3339_us_if_set, QueryParams};
use super::report::UsageMetrics;
use super::top::{owner_totals, RankMetric};
use super::{ApiError, AppState};

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/owners", get(owners))
}

/// The response of `/v1/owners`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OwnerList {
    /// Start of the usage range, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// End of the usage range, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Every owner, by id.
    pub owners: Vec<Owner>,
}

/// One user or bot user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Owner {
    /// `usr_…` or `bot_…`.
    pub id: String,
    /// `user` or `bot_user`.
    pub kind: String,
    /// A bot user's name, or a user's email as seen in the audit log; empty when unknown.
    pub name: String,
    /// Whether it may authenticate now: a bot user's latest event; users are always active.
    pub active: bool,
    /// Whether the bot user was deleted.
    pub deleted: bool,
    /// When the bot user first appeared in the audit log (created), RFC 3339; users: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the bot user was deleted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// Its credentials that are not deleted, by kind.
    pub credentials: CredentialCounts,
    /// Its credentials that were deleted.
    pub deleted_credentials: u64,
    /// Attributed usage over `from`..`to`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageMetrics>,
}

/// Every owner.
#[utoipa::path(
    get,
    path = "/v1/owners",
    tag = "owners",
    params(
        ("from" = Option<String>, Query, description = "Start of the usage summary (with to)"),
        ("to" = Option<String>, Query, description = "End of the usage summary (with from)"),
    ),
    responses(
        (status = 200, body = OwnerList),
        (status = 400, body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 403, body = super::openapi::ErrorBody),
        (status = 503, body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ()),
)]
pub(super) async fn owners(
    State(state): State<AppState>,
    Extension(access): Extension<Access>,
    RawQuery(query): RawQuery,
) -> Result<Json<OwnerList>, ApiError> {
    access.require_reader()?;
    let params = QueryParams::parse(query.as_deref(), &["from", "to"])?;
    let range = params.optional_range()?;
    let usage = async {
        match range {
            Some(range) => owner_totals(&state, range, RankMetric::BytesOut, u32::MAX).await,
            None => Ok(Vec::new()),
        }
    };
    let (bots, credentials, principals, usage) = tokio::try_join!(
        catalog::bot_users(&state, true, &[]),
        catalog::credentials(
            &state,
            CredentialFilter {
                all: true,
                ..CredentialFilter::default()
            }
        ),
        catalog::principals(&state),
        usage,
    )?;

    let mut owners = OwnerIndex {
        owners: BTreeMap::new(),
        with_usage: range.is_some(),
    };
    for principal in &principals {
        if let Some(owner) = owners.get_or_insert(&principal.id) {
            if principal.id.starts_with("usr_") {
                owner.name.clone_from(&principal.subject);
            }
        }
    }
    for bot in &bots {
        if let Some(owner) = owners.get_or_insert(&bot.bot_id) {
            owner.name.clone_from(&bot.name);
            owner.active = bot.active == 1;
            owner.deleted = bot.deleted == 1;
            owner.created_at = Some(rfc3339_us(bot.created_us));
            owner.deleted_at = rfc3339_us_if_set(bot.deleted_us);
        }
    }
    for credential in &credentials {
        if let Some(owner) = owners.get_or_insert(&credential.owner_id) {
            if credential.deleted_us > 0 {
                owner.deleted_credentials += 1;
            } else {
                owner.credentials.add(&credential.kind);
            }
        }
    }
    for row in &usage {
        if let Some(owner) = owners.get_or_insert(&row.owner_id) {
            owner.usage = Some(row.metrics());
        }
    }
    Ok(Json(OwnerList {
        from: range.map(|r| rfc3339(r.from)),
        to: range.map(|r| rfc3339(r.to)),
        owners: owners.owners.into_values().collect(),
    }))
}

/// The owners found so far, by id.
#[derive(Debug)]
struct OwnerIndex {
    owners: BTreeMap<String, Owner>,
    /// Whether a usage range was asked for: every owner then has usage, zero until found.
    with_usage: bool,
}

impl OwnerIndex {
    /// The owner `id`, added with defaults when new; `None` for an id that names no user or bot
    /// user ([`OwnerKind::of`]).
    fn get_or_insert(&mut self, id: &str) -> Option<&mut Owner> {
        let kind = OwnerKind::of(id)?;
        let with_usage = self.with_usage;
        Some(self.owners.entry(id.to_owned()).or_insert_with(|| Owner {
            id: id.to_owned(),
            kind: kind.as_str().to_owned(),
            name: String::new(),
            active: true,
            deleted: false,
            created_at: None,
            deleted_at: None,
            credentials: CredentialCounts::default(),
            deleted_credentials: 0,
            usage: with_usage.then(UsageMetrics::default),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn range_is_both_or_neither() {
        let (status, _, body) =
            call(unreachable_state(), "GET", "/v1/owners?from=2024-05-01").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "missing_parameter");
        let (status, _, _) = call(unreachable_state(), "GET", "/v1/owners").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
