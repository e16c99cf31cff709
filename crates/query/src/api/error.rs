//! [`ApiError`]: the one way a request fails, mapped to a status and a JSON body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

/// Why a request failed. Client mistakes say what to fix; server trouble is logged in full and
/// shown to the client only as "unavailable".
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// A path or query parameter is missing, unknown or unusable: 400.
    BadParameter {
        /// Machine-readable kind: `missing_parameter`, `unknown_parameter`, `invalid_parameter`,
        /// `invalid_range`.
        code: &'static str,
        /// The parameter, as named in the URL.
        parameter: String,
        /// The full message, naming the parameter and quoting its value.
        message: String,
    },
    /// No such route: 404.
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The route exists, not with this method: 405.
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path asked for.
        path: String,
    },
    /// No API key, or one that is not configured: 401.
    Unauthorized {
        /// What was wrong with the `Authorization` header (never the key itself).
        message: String,
    },
    /// The key is valid but its role may not use this route: 403.
    Forbidden {
        /// Which role, and what it may use instead.
        message: String,
    },
    /// The route exists but the thing asked for does not (or is not visible to this key): 404.
    Missing {
        /// What was asked for, e.g. `customer "acme"`.
        what: String,
    },
    /// The route needs configuration this server was started without (e.g. `--plan`): 404.
    NotConfigured {
        /// What is missing and how to provide it.
        message: String,
    },
    /// ClickHouse failed, refused or was too slow: 503.
    Unavailable(crate::Error),
    /// As many requests as allowed are being answered already: 503, `Retry-After: 1`.
    Overloaded,
}

impl ApiError {
    /// A 400 for `parameter`.
    pub(crate) fn bad(
        code: &'static str,
        parameter: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::BadParameter {
            code,
            parameter: parameter.into(),
            message: message.into(),
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadParameter { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } | Self::Missing { .. } | Self::NotConfigured { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unavailable(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `code` of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadParameter { code, .. } => code,
            Self::NotFound { .. } | Self::Missing { .. } => "not_found",
            Self::NotConfigured { .. } => "not_configured",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded => "overloaded",
        }
    }

    /// The `message` of the JSON body: safe to show to anyone.
    pub fn public_message(&self) -> String {
        match self {
            Self::BadParameter { message, .. } => message.clone(),
            Self::NotFound { path } => format!("no route for path {path:?}"),
            Self::Missing { what } => format!("no {what}"),
            Self::Unauthorized { message }
            | Self::Forbidden { message }
            | Self::NotConfigured { message } => message.clone(),
            Self::MethodNotAllowed { method, path } => {
                format!("method {method} is not allowed on path {path:?}")
            }
            Self::Unavailable(_) => {
                "the usage store is unavailable or too slow; try again shortly".to_owned()
            }
            Self::Overloaded => {
                "too many requests in flight; try again after the Retry-After seconds".to_owned()
            }
        }
    }
}

impl From<crate::Error> for ApiError {
    fn from(err: crate::Error) -> Self {
        Self::Unavailable(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Unavailable(err) = &self {
            // The client sees only `public_message`; the operator gets the cause.
            error!(error = %err, "request failed on clickhouse");
        }
        let status = self.status();
        let body = json!({
            "error": { "code": self.code(), "message": self.public_message() }
        });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"botmeter\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let after = if matches!(self, Self::Overloaded) {
                "1"
            } else {
                "5"
            };
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        response
    }
}
