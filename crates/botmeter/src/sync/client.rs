//! The ngrok REST API client of `botmeter sync`: reads one list to its end by following
//! `next_page_uri`, with `Authorization: Bearer <key>` (marked sensitive, so it never prints)
//! and `Ngrok-Version: 2`.
//!
//! Faults: a `429` waits its `Retry-After` (whole seconds, capped at the backoff limit), a `5xx`,
//! a connection error or a body that is not the list's JSON backs off exponentially from
//! [`ClientSettings::first_backoff`]; each is one attempt of [`ClientSettings::max_attempts`]. Any
//! other status (`401`, `403`, `404`…) fails at once with ngrok's `error_code` and `msg`. Every
//! error names the URL, which never holds the key. A `next_page_uri` on another origin than the
//! base URL is refused, so the key is never sent anywhere else.

use std::time::Duration;

use model::ngrok_api::{ApiError, Page, VERSION_HEADER};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tracing::warn;

/// Items asked for per page (ngrok's most).
const PAGE_LIMIT: u32 = 100;

/// How the client retries.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Attempts per page before the error is returned (at least 1).
    pub max_attempts: u32,
    /// The first backoff after a `5xx` or garbage; doubles each attempt.
    pub first_backoff: Duration,
    /// The longest wait between attempts, `Retry-After` included.
    pub max_backoff: Duration,
    /// Deadline of one request.
    pub request_timeout: Duration,
}

/// Why a list could not be read. The message names the URL (never the key).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A status that retrying cannot fix.
    #[error("GET {url}: ngrok answered {status} {error_code}: {msg}")]
    Refused {
        /// The page's URL.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// ngrok's `error_code`, or empty.
        error_code: String,
        /// ngrok's `msg`, or the start of the body.
        msg: String,
    },
    /// Every attempt failed; the last reason.
    #[error("GET {url}: gave up after {attempts} attempts; last: {reason}")]
    GaveUp {
        /// The page's URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// A `next_page_uri` pointing away from the API.
    #[error("GET {url}: next_page_uri {next:?} is not under the API base URL {base}; refusing to send the API key there")]
    ForeignPage {
        /// The page that named it.
        url: String,
        /// What it named.
        next: String,
        /// The configured base URL.
        base: String,
    },
}

/// A client of one ngrok API account.
#[derive(Debug, Clone)]
pub struct NgrokClient {
    http: reqwest::Client,
    base: Url,
    settings: ClientSettings,
}

impl NgrokClient {
    /// A client of the API at `base` (e.g. `https://api.ngrok.com`) authenticating with
    /// `api_key`.
    pub fn new(base: Url, api_key: &str, settings: ClientSettings) -> anyhow::Result<Self> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| {
            anyhow::anyhow!("the ngrok API key holds characters a header cannot carry")
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(VERSION_HEADER.0, HeaderValue::from_static(VERSION_HEADER.1));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(settings.request_timeout)
            .user_agent(concat!("botmeter-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base,
            settings,
        })
    }

    /// Every item of list `P`, all its pages.
    pub async fn list<P: Page>(&self) -> Result<Vec<P::Item>, ClientError> {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}{}",
            self.base.path().trim_end_matches('/'),
            P::PATH
        ));
        url.set_query(Some(&format!("limit={PAGE_LIMIT}")));
        let mut items = Vec::new();
        loop {
            let page: P = self.page(&url).await?;
            let next = page.next_page_uri().map(str::to_owned);
            items.extend(page.into_items());
            match next {
                None => return Ok(items),
                Some(next) => url = self.same_origin(&url, &next)?,
            }
        }
    }

    /// `next`, when it is on the base URL's origin.
    fn same_origin(&self, url: &Url, next: &str) -> Result<Url, ClientError> {
        let foreign = || ClientError::ForeignPage {
            url: url.to_string(),
            next: next.to_owned(),
            base: self.base.to_string(),
        };
        let next = url.join(next).map_err(|_| foreign())?;
        if next.origin() == self.base.origin() {
            Ok(next)
        } else {
            Err(foreign())
        }
    }

    /// One page, retried as the module docs say.
    async fn page<P: Page>(&self, url: &Url) -> Result<P, ClientError> {
        let mut backoff = self.settings.first_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (reason, wait) = match self.http.get(url.clone()).send().await {
                Err(e) => (format!("request failed: {}", without_url(&e)), None),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let body = response.bytes().await;
                    match (status, body) {
                        (_, Err(e)) => (
                            format!("{status}, reading the body failed: {}", without_url(&e)),
                            None,
                        ),
                        (StatusCode::OK, Ok(body)) => match serde_json::from_slice::<P>(&body) {
                            Ok(page) => return Ok(page),
                            Err(e) => (
                                format!(
                                    "200 OK but the body is not a page of {} ({e}): {}",
                                    P::PATH,
                                    excerpt(&body)
                                ),
                                None,
                            ),
                        },
                        (StatusCode::TOO_MANY_REQUESTS, Ok(body)) => (
                            format!("429 Too Many Requests: {}", error_text(&body)),
                            retry_after,
                        ),
                        (status, Ok(body)) if status.is_server_error() => {
                            (format!("{status}: {}", error_text(&body)), None)
                        }
                        (status, Ok(body)) => {
                            let error: ApiError =
                                serde_json::from_slice(&body).unwrap_or_else(|_| ApiError {
                                    msg: excerpt(&body),
                                    ..ApiError::default()
                                });
                            return Err(ClientError::Refused {
                                url: url.to_string(),
                                status,
                                error_code: error.error_code,
                                msg: error.msg,
                            });
                        }
                    }
                }
            };
            if attempt >= self.settings.max_attempts {
                return Err(ClientError::GaveUp {
                    url: url.to_string(),
                    attempts: attempt,
                    reason,
                });
            }
            let wait = wait.unwrap_or(backoff).min(self.settings.max_backoff);
            warn!(url = %url, attempt, wait_ms = wait.as_millis() as u64, reason = %reason, "ngrok API request failed; retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.settings.max_backoff);
        }
    }
}

/// `Retry-After` in whole seconds (ngrok sends seconds; an HTTP date is not used).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// ngrok's `error_code: msg`, or the start of the body.
fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) if !e.msg.is_empty() => format!("{} {}", e.error_code, e.msg),
        _ => excerpt(body),
    }
}

/// The first 120 characters of a body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cut: String = text.chars().take(120).collect();
    if text.chars().count() > 120 {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// A reqwest error's text without the URL it appends (the caller names the URL once).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use model::ngrok_api::{BotUser, BotUserList};
    use simulate::ngrok_api::{ApiFleet, StandInApi};

    use super::*;

    fn settings() -> ClientSettings {
        ClientSettings {
            max_attempts: 1,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn pages_are_followed_on_the_same_origin_only() {
        let mut fleet = ApiFleet::default();
        for n in 0..150 {
            let id = format!("bot_{n:03}");
            fleet.bot_users.insert(
                id.clone(),
                BotUser {
                    id,
                    ..BotUser::default()
                },
            );
        }
        let api = StandInApi::start("key", fleet).await.unwrap();
        let base = Url::parse(&api.base_url()).unwrap();
        let client = NgrokClient::new(base.clone(), "key", settings()).unwrap();
        let bots = client.list::<BotUserList>().await.unwrap();
        assert_eq!(bots.len(), 150);
        assert_eq!(api.requests("/bot_users"), 2, "two pages of 100");

        // The same server under another name: its next_page_uri names 127.0.0.1, another
        // origin than `localhost`, and the key is not sent there.
        let mut elsewhere = base;
        elsewhere.set_host(Some("localhost")).unwrap();
        let client = NgrokClient::new(elsewhere, "key", settings()).unwrap();
        let err = client.list::<BotUserList>().await.unwrap_err();
        assert!(matches!(err, ClientError::ForeignPage { .. }), "{err}");
        assert!(
            err.to_string().contains("refusing to send the API key"),
            "{err}"
        );
        assert_eq!(
            api.requests("/bot_users"),
            3,
            "no request to the foreign page"
        );
        // The key never prints (the header is marked sensitive).
        assert!(format!("{client:?}").contains("Sensitive"), "{client:?}");
        assert!(!format!("{client:?}").contains("Bearer key"), "{client:?}");
    }
}
