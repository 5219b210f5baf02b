//! [`ClientError`], the one error type of this crate.

use std::fmt;

/// A boxed error that can cross threads, used as the `source` of opaque variants.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// Statuses the caller branches on are variants of their own: `401` is
/// [`Unauthorized`](Self::Unauthorized), `403` is [`Forbidden`](Self::Forbidden) and `409` is
/// [`Conflict`](Self::Conflict) (release of a lease someone else holds). Every other non-2xx
/// answer is [`Api`](Self::Api), carrying the message of the server's `{"error","requestId"}`
/// envelope. A denied acquire is *not* an error: it is a `200` answer with `acquired: false`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a status this enum has no dedicated variant for.
    #[error("server returned {status}: {message}{}", request_id_suffix(.request_id.as_deref()))]
    Api {
        /// HTTP status code.
        status: u16,
        /// The envelope's `error` text, or the start of the body when it was not JSON.
        message: String,
        /// Request id from the envelope or the `X-Request-Id` header, when the server sent one.
        request_id: Option<String>,
    },
    /// `409`: the lease is held by another identity or fencing token (release).
    #[error("{message}")]
    Conflict {
        /// The envelope's `error` text.
        message: String,
    },
    /// `401`: the bearer token is missing or was rejected.
    #[error("unauthorized (401): {message}")]
    Unauthorized {
        /// The envelope's `error` text.
        message: String,
    },
    /// `403`: the caller may not act for this holder or namespace.
    #[error("forbidden (403): {message}")]
    Forbidden {
        /// The envelope's `error` text.
        message: String,
    },
    /// The request did not get an answer: DNS, connect, TLS or I/O failure.
    #[error("could not reach the berth api server")]
    Transport(#[source] BoxError),
    /// The server answered, but the body was not what the API promises.
    #[error("could not decode the server's answer")]
    Decode(#[source] BoxError),
    /// The request or connect timeout elapsed.
    #[error("request to the berth api server timed out")]
    Timeout,
    /// The client was configured wrongly (bad URL, unreadable CA bundle, invalid name, …).
    #[error("{0}")]
    Config(String),
    /// The [`TokenSource`](crate::TokenSource) could not produce a token.
    #[error("could not read the bearer token")]
    Token(#[source] BoxError),
}

impl ClientError {
    /// Whether retrying the same request later may succeed: transport failures, timeouts,
    /// `429` and `5xx` answers.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) | Self::Timeout => true,
            Self::Api { status, .. } => *status == 429 || (500..=599).contains(status),
            _ => false,
        }
    }

    /// HTTP status of an answer the server gave, if this error is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            Self::Conflict { .. } => Some(409),
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            _ => None,
        }
    }

    pub(crate) fn config(msg: impl fmt::Display) -> Self {
        Self::Config(msg.to_string())
    }

    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            Self::Timeout
        } else if err.is_decode() {
            Self::Decode(Box::new(err))
        } else if err.is_builder() {
            Self::Config(format!("invalid request: {err}"))
        } else {
            Self::Transport(Box::new(err))
        }
    }

    /// Builds the error for a non-2xx answer from its status, `X-Request-Id` header and body.
    pub(crate) fn from_response(
        status: u16,
        header_request_id: Option<String>,
        body: &[u8],
    ) -> Self {
        let (message, body_request_id) = match serde_json::from_slice::<berth_api::ErrorBody>(body)
        {
            Ok(envelope) => (envelope.error, envelope.request_id),
            Err(_) => (plain_message(body), None),
        };
        let request_id = body_request_id.or(header_request_id);
        match status {
            401 => Self::Unauthorized { message },
            403 => Self::Forbidden { message },
            409 => Self::Conflict { message },
            _ => Self::Api {
                status,
                message,
                request_id,
            },
        }
    }
}

/// Longest part of a non-JSON error body that ends up in a message.
const MAX_PLAIN_MESSAGE: usize = 200;

fn plain_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut end = text.len().min(MAX_PLAIN_MESSAGE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let one_line: String = text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < text.len() {
        format!("{one_line}…")
    } else {
        one_line
    }
}

fn request_id_suffix(request_id: Option<&str>) -> String {
    request_id.map_or_else(String::new, |id| format!(" (request id {id})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_decodes_into_typed_variants() {
        let body = br#"{"error":"lease held by another identity or token"}"#;
        let err = ClientError::from_response(409, None, body);
        assert!(
            matches!(&err, ClientError::Conflict { message } if message == "lease held by another identity or token")
        );
        assert_eq!(err.to_string(), "lease held by another identity or token");
        assert_eq!(err.status(), Some(409));
        assert!(!err.is_retryable());

        let err = ClientError::from_response(401, None, br#"{"error":"unauthorized"}"#);
        assert_eq!(err.to_string(), "unauthorized (401): unauthorized");

        let err = ClientError::from_response(
            403,
            None,
            br#"{"error":"holder not authorized for this identity"}"#,
        );
        assert!(matches!(err, ClientError::Forbidden { .. }));
        assert_eq!(
            err.to_string(),
            "forbidden (403): holder not authorized for this identity"
        );
    }

    #[test]
    fn server_error_keeps_request_id_and_is_retryable() {
        let err = ClientError::from_response(
            500,
            Some("hdr".into()),
            br#"{"error":"internal error","requestId":"abc123"}"#,
        );
        match &err {
            ClientError::Api {
                status,
                message,
                request_id,
            } => {
                assert_eq!(*status, 500);
                assert_eq!(message, "internal error");
                assert_eq!(request_id.as_deref(), Some("abc123"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "server returned 500: internal error (request id abc123)"
        );
    }

    #[test]
    fn header_request_id_used_when_body_has_none() {
        let err = ClientError::from_response(
            400,
            Some("rid-1".into()),
            br#"{"error":"ttlSeconds must be positive"}"#,
        );
        assert_eq!(
            err.to_string(),
            "server returned 400: ttlSeconds must be positive (request id rid-1)"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn plain_text_bodies_are_trimmed_and_bounded() {
        let err = ClientError::from_response(404, None, b"404 page not found\n");
        assert_eq!(err.to_string(), "server returned 404: 404 page not found");
        let err = ClientError::from_response(502, None, b"");
        assert_eq!(err.to_string(), "server returned 502: (empty body)");
        assert!(err.is_retryable());
        let long = "é".repeat(300);
        let err = ClientError::from_response(503, None, long.as_bytes());
        let ClientError::Api { message, .. } = err else {
            panic!("expected Api")
        };
        assert!(message.ends_with('…'));
        assert!(message.len() <= MAX_PLAIN_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn retryable_classification() {
        assert!(ClientError::Timeout.is_retryable());
        assert!(ClientError::Transport("boom".into()).is_retryable());
        assert!(ClientError::from_response(429, None, b"slow down").is_retryable());
        assert!(!ClientError::Decode("bad".into()).is_retryable());
        assert!(!ClientError::Config("x".into()).is_retryable());
        assert!(!ClientError::Token("x".into()).is_retryable());
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ClientError>();
    }
}
