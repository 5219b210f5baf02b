//! [`ApiError`]: the one mapping from failures to HTTP responses.
//!
//! A handler or extractor returns an `ApiError`; its response carries an [`ErrorInfo`]
//! extension that the [`crate::observe`] middleware turns into the `{"error","requestId"}`
//! envelope once it knows the request id, and uses to log a 5xx's hidden cause exactly once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{KeyError, LeaseError};

/// Why a request failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with contract text.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no usable `Authorization: Bearer` header.
    #[error("missing or malformed Authorization header")]
    MissingCredentials,
    /// 401: the token was rejected (deliberately generic).
    #[error("unauthorized")]
    Unauthorized,
    /// 403 with contract text.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 with a message.
    #[error("{0}")]
    NotFound(&'static str),
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: release of someone else's live lease.
    #[error("lease held by another identity or token")]
    Conflict,
    /// 413: body above [`berth_api::MAX_BODY_BYTES`].
    #[error("request body must be at most 4096 bytes")]
    PayloadTooLarge,
    /// 500: the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// An internal error from any displayable cause (logged with its chain).
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(format!("{:#}", cause.into()))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MissingCredentials | Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `outcome` label this failure counts as on a lease route.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::BadRequest(_)
            | Self::PayloadTooLarge
            | Self::NotFound(_)
            | Self::MethodNotAllowed => "invalid",
            Self::MissingCredentials | Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::Conflict => "conflict",
            Self::Internal(_) => "error",
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::TtlOutOfRange { .. } => Self::BadRequest(e.to_string()),
            LeaseError::NotHolder => Self::Conflict,
            other => Self::internal(other),
        }
    }
}

/// Response extension describing an error answer; the envelope is written by middleware.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    /// Message sent to the client.
    pub message: String,
    /// Hidden cause of a 5xx, logged once.
    pub detail: Option<String>,
    /// Lease outcome label.
    pub outcome: &'static str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let info = ErrorInfo {
            message: self.to_string(),
            detail: match &self {
                Self::Internal(d) => Some(d.clone()),
                _ => None,
            },
            outcome: self.outcome(),
        };
        let body = envelope(&info.message, None);
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.extensions_mut().insert(info);
        resp
    }
}

/// Serializes the error envelope.
pub fn envelope(message: &str, request_id: Option<&str>) -> String {
    let body = berth_api::ErrorBody {
        error: message.to_owned(),
        request_id: request_id.map(str::to_owned),
    };
    // Serializing two strings cannot fail; fall back to a fixed body rather than panic.
    serde_json::to_string(&body).unwrap_or_else(|_| r#"{"error":"internal error"}"#.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses_and_messages() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::BadRequest("x".into()), 400, "x"),
            (
                ApiError::MissingCredentials,
                401,
                "missing or malformed Authorization header",
            ),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (
                ApiError::Conflict,
                409,
                "lease held by another identity or token",
            ),
            (
                ApiError::PayloadTooLarge,
                413,
                "request body must be at most 4096 bytes",
            ),
            (ApiError::Internal("db down".into()), 500, "internal error"),
        ];
        for (e, status, msg) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.to_string(), msg);
        }
    }

    #[test]
    fn lease_errors_map() {
        let e: ApiError = LeaseError::TtlOutOfRange {
            min: Duration::from_secs(1),
            max: Duration::from_secs(3600),
        }
        .into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "ttlSeconds must be between 1 and 3600");
        let e: ApiError = LeaseError::NotHolder.into();
        assert_eq!(e.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn internal_hides_detail() {
        let resp = ApiError::Internal("secret dsn".into()).into_response();
        let info = resp.extensions().get::<ErrorInfo>().unwrap();
        assert_eq!(info.message, "internal error");
        assert_eq!(info.detail.as_deref(), Some("secret dsn"));
    }
}
