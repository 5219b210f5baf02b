//! [`JsonBody`]: the request body extractor whose every rejection uses the error envelope
//! (reference §2.2).

use axum::extract::{FromRequest, Request};
use axum::http::header;
use berth_api::MAX_BODY_BYTES;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body: at most [`MAX_BODY_BYTES`] bytes including trailing data (whether or
/// not a `Content-Length` was sent), exactly one JSON value, no unknown fields.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let bytes = Limited::new(req.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest("could not read request body".into())
                }
            })?
            .to_bytes();
        decode(&bytes).map(JsonBody)
    }
}

/// Decodes exactly one JSON value.
///
/// # Errors
/// 400 `invalid json body: …` or `request body must contain one JSON object`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derived structs also take a JSON array of the fields in order; bodies are objects.
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first == Some(&b'[') {
        return Err(ApiError::BadRequest(
            "invalid json body: expected a JSON object, found an array".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(&mut de)
        .map_err(|e| ApiError::BadRequest(format!("invalid json body: {e}")))?;
    de.end()
        .map_err(|_| ApiError::BadRequest("request body must contain one JSON object".into()))?;
    Ok(value)
}

use serde::Deserialize;

// The wire types live in `berth_api`; these mirrors add Go's decoding rule that a missing
// field is its zero value (reference §2.2), so `{"ttlSeconds":30}` is `holder is required`
// rather than a serde "missing field" error.

/// Acquire body as decoded.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcquireBody {
    /// Holder.
    #[serde(default)]
    pub holder: String,
    /// TTL in seconds.
    #[serde(default)]
    pub ttl_seconds: i64,
}

/// Renew body as decoded.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenewBody {
    /// Holder.
    #[serde(default)]
    pub holder: String,
    /// Fencing token.
    #[serde(default)]
    pub fencing_token: i64,
    /// TTL in seconds.
    #[serde(default)]
    pub ttl_seconds: i64,
}

/// Release body as decoded.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseBody {
    /// Holder.
    #[serde(default)]
    pub holder: String,
    /// Fencing token.
    #[serde(default)]
    pub fencing_token: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rules() {
        let ok: AcquireBody = decode(br#" {"holder":"a","ttlSeconds":3}  "#).unwrap();
        assert_eq!(ok.holder, "a");
        let missing: AcquireBody = decode(br#"{"ttlSeconds":3}"#).unwrap();
        assert_eq!(missing.holder, "");
        let e = decode::<AcquireBody>(br#"{"holder":"a"}{"x":1}"#).unwrap_err();
        assert_eq!(e.to_string(), "request body must contain one JSON object");
        let e = decode::<AcquireBody>(br#"{"holder":"a"} garbage"#).unwrap_err();
        assert_eq!(e.to_string(), "request body must contain one JSON object");
        let e = decode::<AcquireBody>(br#"{"holder":"a","bogus":1}"#).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid json body: unknown field `bogus`"),
            "{e}"
        );
        let e = decode::<AcquireBody>(b"").unwrap_err();
        assert!(e.to_string().starts_with("invalid json body: "), "{e}");
    }

    #[test]
    fn arrays_are_not_bodies() {
        // Found by the request_decode fuzz target: `[]` and `["a",30]` decoded as structs.
        for body in [&b"[]"[..], br#" ["worker-1",30]"#, b"\n[\"a\",7,30]"] {
            let e = decode::<RenewBody>(body).unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid json body: expected a JSON object, found an array"
            );
        }
        let e = decode::<berth_api::HeartbeatRequest>(br#"["h",[]]"#).unwrap_err();
        assert!(e.to_string().contains("found an array"), "{e}");
    }
}
