//! Authentication (who is calling) and authorization (may they act as this holder),
//! reference §2.6.

pub mod oidc;
pub mod static_keys;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;
pub use oidc::OidcAuthenticator;
pub use static_keys::StaticKeys;

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The holder (username) this identity acts as by default.
    pub holder: String,
    /// The tenant whose holders it may act as.
    pub tenant: String,
}

/// The caller of a request, as the auth middleware established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `--auth-mode none`: no identity, authorization skipped.
    Anonymous,
    /// A verified identity.
    Authenticated(Identity),
}

impl Caller {
    /// The identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Self::Anonymous => None,
            Self::Authenticated(id) => Some(id),
        }
    }

    /// Whether this caller may act as `holder` (reference §2.6, `DefaultAuthorizer`): any
    /// namespace; the holder must equal the tenant or start with `<tenant>/`.
    ///
    /// # Errors
    /// 403 `not authorized for this namespace` for an empty tenant or one containing `/`;
    /// 403 `holder not authorized for this identity` otherwise.
    pub fn authorize(&self, holder: &str) -> Result<(), ApiError> {
        let Self::Authenticated(id) = self else {
            return Ok(());
        };
        let tenant = id.tenant.as_str();
        if tenant.is_empty() || tenant.contains('/') {
            return Err(ApiError::Forbidden("not authorized for this namespace"));
        }
        let owned = holder == tenant
            || holder
                .strip_prefix(tenant)
                .is_some_and(|rest| rest.starts_with('/'));
        if owned {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "holder not authorized for this identity",
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Fail closed: a route without the auth middleware has no caller.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// How callers are authenticated (`--auth-mode`).
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Everyone is [`Caller::Anonymous`].
    None,
    /// Bearer tokens checked against a static key file.
    StaticKeys(Arc<StaticKeys>),
    /// Bearer tokens that are JWTs of an OpenID provider.
    Oidc(Arc<OidcAuthenticator>),
}

impl Authenticator {
    /// Authenticates the request headers.
    ///
    /// # Errors
    /// 401 `missing or malformed Authorization header` or 401 `unauthorized`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        match self {
            Self::None => Ok(Caller::Anonymous),
            Self::StaticKeys(keys) => {
                let token = bearer_token(headers)?;
                keys.authenticate(token)
                    .map(Caller::Authenticated)
                    .ok_or(ApiError::Unauthorized)
            }
            Self::Oidc(oidc) => {
                let token = bearer_token(headers)?;
                oidc.verify(token)
                    .await
                    .map(Caller::Authenticated)
                    .map_err(|reason| {
                        tracing::debug!(%reason, "oidc token rejected");
                        ApiError::Unauthorized
                    })
            }
        }
    }
}

/// Extracts the token of `Authorization: Bearer <token>`.
///
/// # Errors
/// 401 `missing or malformed Authorization header` when absent, not `Bearer `, or empty.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::MissingCredentials)?;
    let token = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or(ApiError::MissingCredentials)?;
    if token.is_empty() {
        return Err(ApiError::MissingCredentials);
    }
    Ok(token)
}

/// Middleware on authenticated routes: runs before the body is read, so an unauthenticated
/// oversized body gets 401, not 413 (reference §2.5).
pub async fn require_caller(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    match state.auth.authenticate(req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller.clone());
            let mut resp = next.run(req).await;
            resp.extensions_mut().insert(caller);
            resp
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn caller(tenant: &str) -> Caller {
        Caller::Authenticated(Identity {
            holder: tenant.into(),
            tenant: tenant.into(),
        })
    }

    #[test]
    fn holder_must_belong_to_tenant() {
        assert!(caller("east").authorize("east").is_ok());
        assert!(caller("east").authorize("east/worker/pod").is_ok());
        for bad in ["west", "eastern", "east-1", "", "EAST"] {
            let e = caller("east").authorize(bad).unwrap_err();
            assert_eq!(e.to_string(), "holder not authorized for this identity");
        }
        assert!(Caller::Anonymous.authorize("anyone").is_ok());
    }

    #[test]
    fn odd_tenants_fail_closed() {
        for t in ["", "a/b"] {
            let e = caller(t).authorize("a/b/c").unwrap_err();
            assert_eq!(e.to_string(), "not authorized for this namespace");
        }
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            bearer_token(&h),
            Err(ApiError::MissingCredentials)
        ));
        for bad in [
            "Basic abc",
            "Bearer ",
            "Bearer    ",
            "bearer abc",
            "Bearerabc",
        ] {
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert!(
                matches!(bearer_token(&h), Err(ApiError::MissingCredentials)),
                "{bad}"
            );
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  tok "),
        );
        assert_eq!(bearer_token(&h).unwrap(), "tok");
    }
}
