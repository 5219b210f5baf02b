//! `--auth-mode oidc`: bearer tokens are JWTs signed by an OpenID provider (reference §2.6).
//!
//! At start-up [`OidcAuthenticator::init`] reads the issuer's discovery document (unless
//! `--oidc-jwks-url` is given) and the JWKS, both within `--oidc-discovery-timeout`. A token is
//! accepted when its signature verifies with a published key under an allowed asymmetric
//! algorithm, `iss` equals the issuer, `aud` contains the audience, `exp`/`nbf` hold within
//! [`LEEWAY`], and every required claim matches. The identity is the username claim (holder)
//! and the tenant claim (first element of an array; a `/` in it is rejected).
//!
//! An unknown `kid` refetches the JWKS, at most once per [`MIN_JWKS_REFRESH`], so a provider's
//! key rotation needs no restart while random `kid`s cannot make the server hammer the provider.
//! Verified tokens are cached by SHA-256 (bounded, [`TOKEN_CACHE_CAPACITY`]) until they expire,
//! so a renew does not pay for a signature check every time.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use berth_core::{DynClock, SystemClock};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Identity;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(60);
/// The JWKS is refetched for an unknown `kid` at most this often.
pub const MIN_JWKS_REFRESH: Duration = Duration::from_secs(10);
/// How many verified tokens are remembered.
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;
/// Tokens longer than this are rejected unparsed.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Bound of one JWKS refetch while serving requests.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Signature algorithms a token may use. Never `none`, never HMAC: the verification keys are
/// public, so an HMAC "signature" keyed with one proves nothing.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One `--oidc-required-claim k=v`: the claim must equal `v`, or be an array containing `v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredClaim {
    /// Claim name.
    pub name: String,
    /// Required value.
    pub value: String,
}

impl FromStr for RequiredClaim {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => Ok(Self {
                name: name.trim().to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!("expected CLAIM=VALUE, got {s:?}")),
        }
    }
}

impl RequiredClaim {
    fn matches(&self, claims: &Map<String, Value>) -> bool {
        match claims.get(&self.name) {
            Some(Value::String(s)) => *s == self.value,
            Some(Value::Array(items)) => items
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s == self.value)),
            _ => false,
        }
    }
}

/// Settings of the OIDC authenticator (the `--oidc-*` flags).
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// `--oidc-issuer-url`: the exact `iss` of accepted tokens, and where discovery starts.
    pub issuer_url: String,
    /// `--oidc-audience`: `aud` must contain it.
    pub audience: String,
    /// `--oidc-jwks-url`: skips discovery when set.
    pub jwks_url: Option<String>,
    /// `--oidc-username-claim`: the identity's holder.
    pub username_claim: String,
    /// `--oidc-tenant-claim`: the identity's tenant.
    pub tenant_claim: String,
    /// `--oidc-required-claim`, all of which must match.
    pub required_claims: Vec<RequiredClaim>,
    /// `--oidc-discovery-timeout`: bound of discovery and the first JWKS fetch.
    pub discovery_timeout: Duration,
    /// `--oidc-ca-file`: extra PEM roots for the provider's HTTPS endpoints.
    pub ca_file: Option<PathBuf>,
}

impl OidcConfig {
    /// A configuration with the reference's defaults (`sub` for both claims, 30 s discovery).
    pub fn new(issuer_url: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer_url: issuer_url.into(),
            audience: audience.into(),
            jwks_url: None,
            username_claim: "sub".into(),
            tenant_claim: "sub".into(),
            required_claims: Vec::new(),
            discovery_timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// The `--oidc-*` flags of `berth-apiserver` (reference §1.1).
#[derive(Debug, Clone, clap::Args)]
pub struct OidcArgs {
    /// OIDC issuer: the exact `iss` of accepted tokens and the base of discovery. Required
    /// with --auth-mode oidc.
    #[arg(long, env = "BERTH_APISERVER_OIDC_ISSUER_URL")]
    pub oidc_issuer_url: Option<String>,

    /// Audience that a token's `aud` must contain. Required with --auth-mode oidc.
    #[arg(long, env = "BERTH_APISERVER_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// JWKS URL; skips discovery [default: the discovery document's jwks_uri].
    #[arg(long, env = "BERTH_APISERVER_OIDC_JWKS_URL")]
    pub oidc_jwks_url: Option<String>,

    /// Claim whose string value is the caller's holder (username).
    #[arg(
        long,
        default_value = "sub",
        env = "BERTH_APISERVER_OIDC_USERNAME_CLAIM"
    )]
    pub oidc_username_claim: String,

    /// Claim whose value is the caller's tenant (first element of an array; must not contain
    /// `/`).
    #[arg(long, default_value = "sub", env = "BERTH_APISERVER_OIDC_TENANT_CLAIM")]
    pub oidc_tenant_claim: String,

    /// `CLAIM=VALUE` every token must carry (equal string, or array containing VALUE);
    /// repeatable, comma-separated in the environment.
    #[arg(
        long,
        value_name = "CLAIM=VALUE",
        value_delimiter = ',',
        env = "BERTH_APISERVER_OIDC_REQUIRED_CLAIM"
    )]
    pub oidc_required_claim: Vec<RequiredClaim>,

    /// Bound of OIDC discovery and the first JWKS fetch at start-up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, env = "BERTH_APISERVER_OIDC_DISCOVERY_TIMEOUT")]
    pub oidc_discovery_timeout: Duration,

    /// Extra PEM CA certificates trusted for the provider's HTTPS endpoints.
    #[arg(long, env = "BERTH_APISERVER_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<PathBuf>,
}

impl OidcArgs {
    /// Whether any flag that only matters with --auth-mode oidc was given.
    pub fn any_set(&self) -> bool {
        self.oidc_issuer_url.is_some()
            || self.oidc_audience.is_some()
            || self.oidc_jwks_url.is_some()
            || !self.oidc_required_claim.is_empty()
            || self.oidc_ca_file.is_some()
    }

    /// The authenticator's settings.
    ///
    /// # Errors
    /// `--oidc-issuer-url` or `--oidc-audience` missing.
    pub fn config(self) -> anyhow::Result<OidcConfig> {
        let Self {
            oidc_issuer_url,
            oidc_audience,
            oidc_jwks_url,
            oidc_username_claim,
            oidc_tenant_claim,
            oidc_required_claim,
            oidc_discovery_timeout,
            oidc_ca_file,
        } = self;
        Ok(OidcConfig {
            issuer_url: oidc_issuer_url
                .context("--oidc-issuer-url must be set with --auth-mode oidc")?,
            audience: oidc_audience.context("--oidc-audience must be set with --auth-mode oidc")?,
            jwks_url: oidc_jwks_url,
            username_claim: oidc_username_claim,
            tenant_claim: oidc_tenant_claim,
            required_claims: oidc_required_claim,
            discovery_timeout: oidc_discovery_timeout,
            ca_file: oidc_ca_file,
        })
    }
}

/// Why a token was rejected; logged at debug, never sent (the client sees `unauthorized`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JWT, or a header that does not parse (this includes `alg: none`).
    #[error("malformed token")]
    Malformed,
    /// An algorithm outside [`ALLOWED_ALGORITHMS`].
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(Algorithm),
    /// No published key has the token's `kid`, even after a refetch.
    #[error("no key for kid {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify with the matching key.
    #[error("bad signature")]
    Signature,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` lacks the configured audience.
    #[error("wrong audience")]
    Audience,
    /// `exp` is missing or past.
    #[error("expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("not yet valid")]
    NotYetValid,
    /// A required claim is missing or different.
    #[error("required claim {0:?} does not match")]
    RequiredClaim(String),
    /// The username claim is missing or not a non-empty string.
    #[error("no usable username claim")]
    Username,
    /// The tenant claim is missing, empty, or contains `/`.
    #[error("no usable tenant claim")]
    Tenant,
}

/// A verification key from the JWKS.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// The key's declared `alg`, if any; otherwise the algorithms of its type are allowed.
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Family::P256,
                EllipticCurve::P384 => Family::P384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Family::Ed25519
            }
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(ka) => Some(key_algorithm(ka)?),
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        Some(Self {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
        })
    }

    /// Whether a token signed with `alg` may be checked with this key.
    fn accepts(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match self.family {
            Family::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Family::P256 => alg == Algorithm::ES256,
            Family::P384 => alg == Algorithm::ES384,
            Family::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

/// The signature algorithm a JWK declares, when it is one of ours.
fn key_algorithm(ka: KeyAlgorithm) -> Option<Algorithm> {
    let alg = match ka {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    Some(alg)
}

/// Parses a JWKS document, skipping keys that are not usable signature keys (encryption keys,
/// symmetric keys, unknown curves or algorithms) instead of failing the whole set.
fn parse_jwks(doc: &Value) -> anyhow::Result<Vec<Key>> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .context("JWKS has no \"keys\" array")?;
    Ok(keys
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| Key::from_jwk(&jwk))
        .collect())
}

#[derive(Debug, Clone)]
struct Cached {
    identity: Identity,
    exp: i64,
}

/// Verified tokens by SHA-256; never holds the token itself.
#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<[u8; 32], Cached>,
}

impl TokenCache {
    fn get(&self, digest: &[u8; 32], now: i64) -> Option<Identity> {
        self.entries
            .get(digest)
            .filter(|c| now <= c.exp.saturating_add(leeway_secs()))
            .map(|c| c.identity.clone())
    }

    fn insert(&mut self, digest: [u8; 32], entry: Cached, now: i64, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.entries.len() >= capacity {
            self.entries
                .retain(|_, c| now <= c.exp.saturating_add(leeway_secs()));
        }
        while self.entries.len() >= capacity {
            // Still full of live tokens: drop an arbitrary one; it is verified again if used.
            let Some(victim) = self.entries.keys().next().copied() else {
                break;
            };
            self.entries.remove(&victim);
        }
        self.entries.insert(digest, entry);
    }
}

#[allow(clippy::cast_possible_wrap)] // 60
const fn leeway_secs() -> i64 {
    LEEWAY.as_secs() as i64
}

/// Verifies OIDC bearer tokens; shared by every request.
pub struct OidcAuthenticator {
    issuer: String,
    audience: String,
    jwks_url: String,
    username_claim: String,
    tenant_claim: String,
    required_claims: Vec<RequiredClaim>,
    http: reqwest::Client,
    clock: DynClock,
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the JWKS was last fetched; the async mutex makes refetches single-flight.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    cache: Mutex<TokenCache>,
    cache_capacity: usize,
    min_refresh: Duration,
}

impl fmt::Debug for OidcAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcAuthenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("username_claim", &self.username_claim)
            .field("tenant_claim", &self.tenant_claim)
            .field("required_claims", &self.required_claims)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

impl OidcAuthenticator {
    /// Discovers the JWKS URL (unless configured), then fetches the key set, both within
    /// `discovery_timeout`.
    ///
    /// # Errors
    /// Invalid settings, an unreachable or inconsistent discovery document (its `issuer` must
    /// equal `--oidc-issuer-url`), or an unreachable or empty JWKS.
    pub async fn init(config: OidcConfig) -> anyhow::Result<Self> {
        let OidcConfig {
            issuer_url,
            audience,
            jwks_url,
            username_claim,
            tenant_claim,
            required_claims,
            discovery_timeout,
            ca_file,
        } = config;
        anyhow::ensure!(
            !issuer_url.is_empty(),
            "--oidc-issuer-url must be set with --auth-mode oidc"
        );
        anyhow::ensure!(
            !audience.is_empty(),
            "--oidc-audience must be set with --auth-mode oidc"
        );
        anyhow::ensure!(
            !username_claim.is_empty() && !tenant_claim.is_empty(),
            "--oidc-username-claim and --oidc-tenant-claim must not be empty"
        );
        anyhow::ensure!(
            !discovery_timeout.is_zero(),
            "--oidc-discovery-timeout must be positive"
        );
        let http = http_client(ca_file.as_deref())?;
        let start = async {
            let jwks_url = match jwks_url {
                Some(u) => u,
                None => discover(&http, &issuer_url, discovery_timeout).await?,
            };
            let doc = fetch_json(&http, &jwks_url, discovery_timeout)
                .await
                .with_context(|| format!("failed to fetch the JWKS {jwks_url}"))?;
            let keys = parse_jwks(&doc).with_context(|| format!("invalid JWKS {jwks_url}"))?;
            anyhow::ensure!(
                !keys.is_empty(),
                "JWKS {jwks_url} holds no usable signature key"
            );
            Ok::<_, anyhow::Error>((jwks_url, keys))
        };
        let (jwks_url, keys) = tokio::time::timeout(discovery_timeout, start)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "OIDC discovery of {issuer_url} did not finish within --oidc-discovery-timeout {}",
                    humantime::format_duration(discovery_timeout)
                )
            })??;
        tracing::info!(issuer = %issuer_url, jwks = %jwks_url, keys = keys.len(), "oidc keys loaded");
        Ok(Self {
            issuer: issuer_url,
            audience,
            jwks_url,
            username_claim,
            tenant_claim,
            required_claims,
            http,
            clock: Arc::new(SystemClock::new()),
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: tokio::sync::Mutex::new(Some(Instant::now())),
            cache: Mutex::new(TokenCache::default()),
            cache_capacity: TOKEN_CACHE_CAPACITY,
            min_refresh: MIN_JWKS_REFRESH,
        })
    }

    /// Reads time from `clock` instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }

    /// Remembers at most `capacity` verified tokens (0 disables the cache).
    #[must_use]
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// Refetches the JWKS for an unknown `kid` at most once per `interval`.
    #[must_use]
    pub fn with_min_refresh(mut self, interval: Duration) -> Self {
        self.min_refresh = interval;
        self
    }

    /// The JWKS URL in use (discovered or configured).
    pub fn jwks_url(&self) -> &str {
        &self.jwks_url
    }

    /// How many verification keys are loaded.
    pub fn key_count(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Verifies `token` and returns its identity.
    ///
    /// # Errors
    /// The [`Rejection`] reason; callers answer 401 `unauthorized` whatever it is.
    pub async fn verify(&self, token: &str) -> Result<Identity, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Malformed);
        }
        let now = self.now().await?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(id) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest, now)
        {
            return Ok(id);
        }
        let (identity, exp) = self.verify_uncached(token, now).await?;
        if self.cache_capacity > 0 {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    digest,
                    Cached {
                        identity: identity.clone(),
                        exp,
                    },
                    now,
                    self.cache_capacity,
                );
        }
        Ok(identity)
    }

    async fn now(&self) -> Result<i64, Rejection> {
        // The system clock cannot fail; a remote clock that does fails closed.
        self.clock
            .now()
            .await
            .map(time::OffsetDateTime::unix_timestamp)
            .map_err(|_| Rejection::Expired)
    }

    async fn verify_uncached(&self, token: &str, now: i64) -> Result<(Identity, i64), Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let alg = header.alg;
        if !ALLOWED_ALGORITHMS.contains(&alg) {
            return Err(Rejection::Algorithm(alg));
        }
        let kid = header.kid;
        let mut candidates = self.candidates(kid.as_deref(), alg);
        if candidates.is_empty() {
            self.refresh_for(kid.as_deref(), alg).await;
            candidates = self.candidates(kid.as_deref(), alg);
        }
        if candidates.is_empty() {
            return Err(Rejection::UnknownKey(kid));
        }
        let mut validation = Validation::new(alg);
        // Claims are checked below against our clock, with our leeway and messages.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = candidates
            .iter()
            .find_map(|k| {
                jsonwebtoken::decode::<Map<String, Value>>(token, &k.key, &validation).ok()
            })
            .ok_or(Rejection::Signature)?
            .claims;
        let exp = self.check_claims(&claims, now)?;
        Ok((self.identity(&claims)?, exp))
    }

    /// Keys that may verify a token with this `kid` and `alg`. Without a `kid`, every key of
    /// the right type is tried.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Key> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        keys.iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter(|k| k.accepts(alg))
            .cloned()
            .collect()
    }

    /// Refetches the JWKS unless another request just did or the last fetch is too recent.
    async fn refresh_for(&self, kid: Option<&str>, alg: Algorithm) {
        let mut last = self.last_fetch.lock().await;
        if !self.candidates(kid, alg).is_empty() {
            return; // fetched by another request while this one waited
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        let fetched = fetch_json(&self.http, &self.jwks_url, JWKS_FETCH_TIMEOUT)
            .await
            .and_then(|doc| parse_jwks(&doc));
        match fetched {
            Ok(keys) if !keys.is_empty() => {
                tracing::info!(jwks = %self.jwks_url, keys = keys.len(), "oidc keys refreshed");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
            }
            Ok(_) => {
                tracing::warn!(jwks = %self.jwks_url, "refetched JWKS holds no usable key; keeping the previous keys");
            }
            Err(e) => {
                tracing::warn!(jwks = %self.jwks_url, error = format!("{e:#}"), "failed to refetch the JWKS; keeping the previous keys");
            }
        }
    }

    /// Checks `iss`, `aud`, `exp`, `nbf` and the required claims; returns `exp`.
    fn check_claims(&self, claims: &Map<String, Value>, now: i64) -> Result<i64, Rejection> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(Rejection::Issuer);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == self.audience,
            Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(Rejection::Audience);
        }
        let exp = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(Rejection::Expired)?;
        if now > exp.saturating_add(leeway_secs()) {
            return Err(Rejection::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(Rejection::NotYetValid)?;
            if now.saturating_add(leeway_secs()) < nbf {
                return Err(Rejection::NotYetValid);
            }
        }
        if let Some(c) = self.required_claims.iter().find(|c| !c.matches(claims)) {
            return Err(Rejection::RequiredClaim(c.name.clone()));
        }
        Ok(exp)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, Rejection> {
        let holder = claims
            .get(&self.username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(Rejection::Username)?;
        let tenant = match claims.get(&self.tenant_claim) {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(Value::Array(a)) => a.first().and_then(Value::as_str),
            _ => None,
        }
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or(Rejection::Tenant)?;
        Ok(Identity {
            holder: holder.to_owned(),
            tenant: tenant.to_owned(),
        })
    }
}

/// A JWT NumericDate: seconds since the epoch, possibly fractional (truncated).
fn numeric_date(v: &Value) -> Option<i64> {
    #[allow(clippy::cast_possible_truncation)] // checked range
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

/// Reads `<issuer>/.well-known/openid-configuration` and returns its `jwks_uri`.
async fn discover(
    http: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = fetch_json(http, &url, timeout)
        .await
        .context("OIDC discovery failed")?;
    let found = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    anyhow::ensure!(
        found == issuer,
        "OIDC discovery {url}: issuer {found:?} does not match --oidc-issuer-url {issuer:?}"
    );
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("OIDC discovery {url}: no jwks_uri"))
}

/// GETs a JSON document of at most [`MAX_DOCUMENT_BYTES`].
async fn fetch_json(http: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<Value> {
    let mut resp = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                anyhow::anyhow!(
                    "GET {url}: no answer within {}",
                    humantime::format_duration(timeout)
                )
            } else {
                anyhow::Error::new(e.without_url()).context(format!("GET {url}"))
            }
        })?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "GET {url}: HTTP {status}");
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.with_context(|| format!("GET {url}"))? {
        anyhow::ensure!(
            body.len() + chunk.len() <= MAX_DOCUMENT_BYTES,
            "GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))
}

/// An HTTP client over rustls with ring: native roots (bundled Mozilla roots when none load)
/// plus the PEM certificates of `ca_file`.
fn http_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("failed to read --oidc-ca-file {}", path.display()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.with_context(|| format!("invalid --oidc-ca-file {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("invalid certificate in {}", path.display()))?;
            n += 1;
        }
        anyhow::ensure!(
            n > 0,
            "--oidc-ca-file {} holds no certificate",
            path.display()
        );
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("failed to configure TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .user_agent(concat!("berth-apiserver/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .context("failed to build the OIDC HTTP client")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use berth_core::{LeaseStore, ListParams, ManualClock, MemStore, TtlBounds};
    use http_body_util::BodyExt;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::auth::Authenticator;
    use crate::metrics::Metrics;
    use crate::state::AppState;

    /// A test-only RSA key (generated for these tests, used nowhere else).
    const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDPV4rHgvFUu/qZ
yotsYYIdXoBJYyd9dBBAgOpAqTZA79H+U0UvaPT6pMKfUbZeWjWzkisogp6dkq3A
CD66Ac0m3fSgLQdrzgSqxcdTrhe19IkVjANailvt/YUgLJyMpk7C66qE78DdRLNr
rTogEw4uEwaKwZZzzJ1sRgwQVaT9Yd8JCNI/hMEoZg2qztn6cmKTmgeYXZwMAI9o
FqPERYDaeVJL/6oZGShgRotOVEoaEqlummiLaEzt88paHlz2tuyqpH+VSM8PFqcW
IwHO+JiqBlClopDlPU2Ak+IR4CNG5mfmKCJcJDrKMCyr24Kpa6/UxPIQoJbfvXWn
M5QaDZr3AgMBAAECggEALH98MD9A7c9+A919OKBgnU73t0hJZFoxVraUD5aBJ0SQ
y8UxNvCOivArOKf/vJYdqlE3Y/VMd0LQeUMLuz3BupKt+mZPjmpjhAb4NVRKkGlP
tkkbOyYwfo4HMRWB74mNo7WSHf+aY6Jn4zcFH3cXdvnsUIEleeqy6lbKJgNLanlg
xs4jM2VS7sK8gQBAVs36G/XPD3LG/GCYZvd+RCcBSlCYB6gfWw3YNc8L6+I7zgIx
ztOK6mM/VKblwrXQEzqJXmBLU29BF3EzBx9ixaF6GB4Lak4XZFAi3Gm6WlsHtcpW
VpJPiixaDNn0nkmS9P+YZ0Zg/VhSkBrEdjcFG0YVWQKBgQDtNzFgSDGNzic0k+0Z
LQFej5NBA3RlXNSHNpACMw7ED/+ZnKIn0EUBpOJGSyOZZHNN2SD/IOQiALaLE2U2
UjqkYsTkiKe/JXhrBNebuDz8EX4aIpTS0FIBdVjzNf0pMmxuCyiVUJ/FkxPqhu7T
y0ttKIbiTdYvc33RXrCSDZIxEwKBgQDfwsEcuFuDN8dHigJKa7tL4A/3icsCiPUD
hhKKIWrERAsf5kaJ7P/+QkIJu34pCILEWYNatfUTLQxsjMBFgtH/yXQ5VPyReWup
wqhkA3iw3HTa+MBt5eVS6fdD5Lm2qn1ukDKac1IlSkIJGOPZ3eEc9lfwWcOUiS64
9cvz3VsPDQKBgBTySbbhyRZnfMjEwyv08GkELpGQF4gX0WB7Le4zyfsAGqba0OrJ
Fj7V63Efk24pE5FtOd+tbNefzn6rYMWSL0Fyw0YW1xEm4uI4VD2Y4DG17berFA8l
fAhK72bSfp9Tp4V0EMpWizUsDpcoARDMo8VozbhP/TjFbve878SF1EHnAoGABaMP
YFzYmVanY4r7gcpy/ndXj6HeBmNS4NLY1rf+y5D3Qsd3UXQyAsLCjSI3DGuVd8LV
h0x8Lw58eKOXGGkyRyJZFjSo5DVN3An2WgaoXLRBEV8g4ePfwhX4z7IMZ6il3kot
rCxpjlzvivEglFV9nVAraPep8K0AC1LN34fdCmUCgYEA0+SOdoPuar11hD+cFTg5
9HgWNGf7+18xKq5h2DXWnqYTMDzThDnGTwVmX6uBNXLajlJM3pBzi77DyWxU6rDM
y+qdRhauwufmW076SlmIMeX5nC1QBVl1L7/soPx8D64FWNFnGyJBh4DmW1Vr2VnB
sd0znpIINxrxAGze3N3RSa8=
-----END PRIVATE KEY-----\n";
    /// Its modulus, base64url.
    const RSA_N: &str = "z1eKx4LxVLv6mcqLbGGCHV6ASWMnfXQQQIDqQKk2QO_R_lNFL2j0-qTCn1G2Xlo1s5IrKIKenZKtwAg-ugHNJt30oC0Ha84EqsXHU64XtfSJFYwDWopb7f2FICycjKZOwuuqhO_A3USza606IBMOLhMGisGWc8ydbEYMEFWk_WHfCQjSP4TBKGYNqs7Z-nJik5oHmF2cDACPaBajxEWA2nlSS_-qGRkoYEaLTlRKGhKpbppoi2hM7fPKWh5c9rbsqqR_lUjPDxanFiMBzviYqgZQpaKQ5T1NgJPiEeAjRuZn5igiXCQ6yjAsq9uCqWuv1MTyEKCW3711pzOUGg2a9w";
    const RSA_KID: &str = "rsa-1";
    const AUD: &str = "https://berth.test";

    /// A tiny OpenID provider: discovery and a JWKS that tests can swap, counting JWKS fetches.
    struct TestIssuer {
        issuer: String,
        jwks: Arc<Mutex<Value>>,
        fetches: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestIssuer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestIssuer {
        async fn start(keys: Vec<Value>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let issuer = format!("http://{}", listener.local_addr().unwrap());
            let jwks = Arc::new(Mutex::new(json!({ "keys": keys })));
            let fetches = Arc::new(AtomicUsize::new(0));
            let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
            let (j, f) = (jwks.clone(), fetches.clone());
            let app = Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    axum::routing::get(move || async move { axum::Json(discovery) }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || async move {
                        f.fetch_add(1, Ordering::SeqCst);
                        let doc = j.lock().unwrap().clone();
                        axum::Json(doc)
                    }),
                );
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            Self {
                issuer,
                jwks,
                fetches,
                task,
            }
        }

        fn set_keys(&self, keys: Vec<Value>) {
            *self.jwks.lock().unwrap() = json!({ "keys": keys });
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        fn config(&self) -> OidcConfig {
            let mut c = OidcConfig::new(&self.issuer, AUD);
            c.tenant_claim = "berth_tenant".into();
            c.discovery_timeout = Duration::from_secs(5);
            c
        }

        async fn authenticator(&self) -> OidcAuthenticator {
            OidcAuthenticator::init(self.config()).await.unwrap()
        }
    }

    fn rsa_jwk() -> Value {
        json!({ "kty": "RSA", "kid": RSA_KID, "use": "sig", "n": RSA_N, "e": "AQAB" })
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap()
    }

    /// A fresh P-256 key: its private half for signing and its public JWK.
    fn mk_ec(kid: &str) -> (EncodingKey, Value) {
        let kp = rcgen::KeyPair::generate().unwrap();
        let raw = kp.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]),
        });
        (EncodingKey::from_ec_der(&kp.serialize_der()), jwk)
    }

    fn now() -> i64 {
        SystemClock::new().now_utc().unix_timestamp()
    }

    fn mk_claims(issuer: &str) -> Value {
        let now = now();
        json!({
            "iss": issuer, "aud": AUD, "sub": "team-a-client",
            "berth_tenant": ["team-a", "ignored"], "groups": ["berth-users", "ops"],
            "iat": now, "exp": now + 300,
        })
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn sign_rsa(claims: &Value) -> String {
        sign(Algorithm::RS256, &rsa_key(), Some(RSA_KID), claims)
    }

    /// A token with `alg: none` and an empty signature.
    fn unsigned(claims: &Value) -> String {
        let header = json!({ "alg": "none", "typ": "JWT", "kid": RSA_KID });
        format!(
            "{}.{}.",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    #[test]
    fn required_claim_parsing_and_matching() {
        let c: RequiredClaim = "groups=berth-users".parse().unwrap();
        assert_eq!(c.name, "groups");
        assert_eq!(c.value, "berth-users");
        let c2: RequiredClaim = "k=a=b".parse().unwrap();
        assert_eq!(c2.value, "a=b");
        assert!("novalue".parse::<RequiredClaim>().is_err());
        assert!("=v".parse::<RequiredClaim>().is_err());
        let claims = mk_claims("x");
        let claims = claims.as_object().unwrap();
        assert!(c.matches(claims));
        assert!(
            RequiredClaim::from_str("sub=team-a-client")
                .unwrap()
                .matches(claims)
        );
        assert!(
            !RequiredClaim::from_str("sub=team-a")
                .unwrap()
                .matches(claims)
        );
        assert!(
            !RequiredClaim::from_str("groups=admins")
                .unwrap()
                .matches(claims)
        );
        assert!(
            !RequiredClaim::from_str("missing=x")
                .unwrap()
                .matches(claims)
        );
    }

    #[test]
    fn jwks_parsing_skips_unusable_keys() {
        let (_, ec) = mk_ec("ec");
        let doc = json!({ "keys": [
            rsa_jwk(),
            ec,
            { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB" },
            { "kty": "RSA", "kid": "odd", "alg": "RSA-OAEP-512", "n": RSA_N, "e": "AQAB" },
            { "kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA" },
            "not a key",
        ]});
        let keys = parse_jwks(&doc).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["rsa-1", "ec"]);
        assert!(keys[0].accepts(Algorithm::RS256) && keys[0].accepts(Algorithm::PS256));
        assert!(!keys[0].accepts(Algorithm::ES256) && !keys[0].accepts(Algorithm::HS256));
        assert!(keys[1].accepts(Algorithm::ES256) && !keys[1].accepts(Algorithm::RS256));
        assert!(parse_jwks(&json!({})).is_err());
    }

    #[tokio::test]
    async fn accepts_rs256_ps256_es256_and_maps_the_identity() {
        let (ec_key, ec_jwk) = mk_ec("ec-1");
        let p = TestIssuer::start(vec![rsa_jwk(), ec_jwk]).await;
        let auth = p.authenticator().await;
        assert_eq!(auth.jwks_url(), format!("{}/jwks", p.issuer));
        assert_eq!(auth.key_count(), 2);
        let claims = mk_claims(&p.issuer);
        let want = Identity {
            holder: "team-a-client".into(),
            tenant: "team-a".into(),
        };
        for token in [
            sign_rsa(&claims),
            sign(Algorithm::PS256, &rsa_key(), Some(RSA_KID), &claims),
            sign(Algorithm::ES256, &ec_key, Some("ec-1"), &claims),
            // Without a kid every key of the right type is tried.
            sign(Algorithm::ES256, &ec_key, None, &claims),
        ] {
            assert_eq!(auth.verify(&token).await.unwrap(), want);
        }
        // A string tenant, an array audience, a fractional exp and a username claim.
        let mut c = OidcConfig::new(&p.issuer, AUD);
        c.username_claim = "client_id".into();
        c.tenant_claim = "tenant".into();
        let auth = OidcAuthenticator::init(c).await.unwrap();
        let claims = json!({
            "iss": p.issuer, "aud": ["other", AUD], "client_id": "team-b/ci", "tenant": "team-b",
            "exp": now() as f64 + 100.5,
        });
        assert_eq!(
            auth.verify(&sign_rsa(&claims)).await.unwrap(),
            Identity {
                holder: "team-b/ci".into(),
                tenant: "team-b".into()
            }
        );
        // Leeway: expired 30 s ago, or valid from 30 s from now, still passes.
        let c = mk_claims(&p.issuer);
        let c = with(c, "exp", json!(now() - 30));
        let c = with(c, "nbf", json!(now() + 30));
        assert!(
            auth.verify(&sign_rsa(&c)).await.is_err(),
            "tenant claim absent here"
        );
        let auth = p.authenticator().await;
        assert!(auth.verify(&sign_rsa(&c)).await.is_ok());
    }

    #[tokio::test]
    async fn rejects_bad_tokens_with_the_right_reason() {
        let (ec_key, ec_jwk) = mk_ec("ec-1");
        let (stranger, _) = mk_ec("ec-1"); // same kid, key not published
        let (unknown, _) = mk_ec("unknown");
        let p = TestIssuer::start(vec![rsa_jwk(), ec_jwk]).await;
        let mut config = p.config();
        config.required_claims = vec!["groups=berth-users".parse().unwrap()];
        let auth = OidcAuthenticator::init(config).await.unwrap();
        let good = mk_claims(&p.issuer);
        let now = now();
        let hs_with_public_key = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(RSA_N.as_bytes()),
            Some(RSA_KID),
            &good,
        );
        let cases: Vec<(&str, String, Rejection)> = vec![
            ("garbage", "not.a.jwt".into(), Rejection::Malformed),
            ("alg none", unsigned(&good), Rejection::Malformed),
            (
                "HS256 keyed with the public key",
                hs_with_public_key,
                Rejection::Algorithm(Algorithm::HS256),
            ),
            (
                "unknown kid",
                sign(Algorithm::ES256, &unknown, Some("unknown"), &good),
                Rejection::UnknownKey(Some("unknown".into())),
            ),
            (
                "key not published under a known kid",
                sign(Algorithm::ES256, &stranger, Some("ec-1"), &good),
                Rejection::Signature,
            ),
            (
                "ES256 header on an RSA kid",
                sign(Algorithm::ES256, &ec_key, Some(RSA_KID), &good),
                Rejection::UnknownKey(Some(RSA_KID.into())),
            ),
            (
                "wrong issuer",
                sign_rsa(&with(good.clone(), "iss", json!("https://evil.test"))),
                Rejection::Issuer,
            ),
            (
                "issuer with a trailing slash",
                sign_rsa(&with(good.clone(), "iss", json!(format!("{}/", p.issuer)))),
                Rejection::Issuer,
            ),
            (
                "wrong audience",
                sign_rsa(&with(good.clone(), "aud", json!(["other", "berth"]))),
                Rejection::Audience,
            ),
            (
                "no audience",
                sign_rsa(&without(good.clone(), "aud")),
                Rejection::Audience,
            ),
            (
                "expired",
                sign_rsa(&with(good.clone(), "exp", json!(now - 61 - 5))),
                Rejection::Expired,
            ),
            (
                "no exp",
                sign_rsa(&without(good.clone(), "exp")),
                Rejection::Expired,
            ),
            (
                "not yet valid",
                sign_rsa(&with(good.clone(), "nbf", json!(now + 120))),
                Rejection::NotYetValid,
            ),
            (
                "missing required claim",
                sign_rsa(&without(good.clone(), "groups")),
                Rejection::RequiredClaim("groups".into()),
            ),
            (
                "required claim with another value",
                sign_rsa(&with(good.clone(), "groups", json!("ops"))),
                Rejection::RequiredClaim("groups".into()),
            ),
            (
                "tenant with a slash",
                sign_rsa(&with(good.clone(), "berth_tenant", json!(["team-a/x"]))),
                Rejection::Tenant,
            ),
            (
                "empty tenant array",
                sign_rsa(&with(good.clone(), "berth_tenant", json!([]))),
                Rejection::Tenant,
            ),
            (
                "numeric username",
                sign_rsa(&with(good.clone(), "sub", json!(7))),
                Rejection::Username,
            ),
        ];
        for (what, token, want) in cases {
            assert_eq!(auth.verify(&token).await.unwrap_err(), want, "{what}");
        }
        // A signature that was valid over other claims (tampered payload).
        let token = sign_rsa(&good);
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(with(good.clone(), "berth_tenant", json!("team-b")).to_string());
        parts[1] = &forged;
        assert_eq!(
            auth.verify(&parts.join(".")).await.unwrap_err(),
            Rejection::Signature
        );
        assert_eq!(auth.cached_tokens(), 0, "nothing rejected is cached");
    }

    #[tokio::test]
    async fn unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
        let p = TestIssuer::start(vec![rsa_jwk()]).await;
        let auth = p
            .authenticator()
            .await
            .with_min_refresh(Duration::from_millis(300));
        assert_eq!(p.fetches(), 1, "the JWKS is fetched at start-up");
        let claims = mk_claims(&p.issuer);

        // The provider rotates: a new key appears in the JWKS.
        let (new_key, new_jwk) = mk_ec("ec-2");
        p.set_keys(vec![new_jwk, rsa_jwk()]);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let token = sign(Algorithm::ES256, &new_key, Some("ec-2"), &claims);
        assert_eq!(auth.verify(&token).await.unwrap().tenant, "team-a");
        assert_eq!(p.fetches(), 2, "one refetch for the new kid");
        assert!(auth.verify(&sign_rsa(&claims)).await.is_ok());
        assert_eq!(p.fetches(), 2, "known kids need no fetch");

        // Right after a fetch an unknown kid is rejected without fetching again.
        let (stranger, _) = mk_ec("x");
        let t = sign(Algorithm::ES256, &stranger, Some("x"), &claims);
        assert!(auth.verify(&t).await.is_err());
        assert_eq!(p.fetches(), 2);

        // A flood of unknown kids fetches once per interval, not once per token.
        tokio::time::sleep(Duration::from_millis(350)).await;
        for i in 0..50 {
            let t = sign(Algorithm::ES256, &stranger, Some(&format!("x{i}")), &claims);
            assert!(matches!(
                auth.verify(&t).await,
                Err(Rejection::UnknownKey(_))
            ));
        }
        assert_eq!(p.fetches(), 3, "50 unknown kids, one refetch");

        // A refetch that fails or is empty keeps the keys it had.
        tokio::time::sleep(Duration::from_millis(350)).await;
        p.set_keys(vec![]);
        let t = sign(Algorithm::ES256, &stranger, Some("y"), &claims);
        assert!(auth.verify(&t).await.is_err());
        assert_eq!(p.fetches(), 4);
        assert_eq!(auth.key_count(), 2);
        let fresh = sign(Algorithm::PS256, &rsa_key(), Some(RSA_KID), &claims);
        assert!(auth.verify(&fresh).await.is_ok());
    }

    #[tokio::test]
    async fn verified_tokens_are_cached_until_they_expire() {
        let p = TestIssuer::start(vec![rsa_jwk()]).await;
        let clock = ManualClock::new(SystemClock::new().now_utc());
        let auth = p
            .authenticator()
            .await
            .with_clock(Arc::new(clock.clone()))
            .with_cache_capacity(2);
        let c = with(mk_claims(&p.issuer), "exp", json!(now() + 10));
        let token = sign_rsa(&c);
        auth.verify(&token).await.unwrap();
        assert_eq!(auth.cached_tokens(), 1);
        // Served from the cache even once the key is gone from the provider and the local set.
        *auth.keys.write().unwrap() = Arc::new(Vec::new());
        auth.verify(&token).await.unwrap();
        // Past exp + leeway the cache no longer answers and the token is checked (and fails).
        clock.advance(Duration::from_secs(10) + LEEWAY + Duration::from_secs(2));
        assert!(auth.verify(&token).await.is_err());

        // Bounded: a full cache first drops expired entries, then arbitrary ones.
        *auth.keys.write().unwrap() =
            Arc::new(parse_jwks(&json!({ "keys": [rsa_jwk()] })).unwrap());
        for i in 0..5 {
            let c = with(mk_claims(&p.issuer), "jti", json!(i));
            let c = with(c, "exp", json!(now() + 1000));
            auth.verify(&sign_rsa(&c)).await.unwrap();
            assert!(auth.cached_tokens() <= 2);
        }
        assert_eq!(auth.cached_tokens(), 2);
    }

    #[tokio::test]
    async fn discovery_failures_are_clear_and_bounded() {
        // Nothing listens.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = OidcConfig::new(format!("http://127.0.0.1:{port}"), AUD);
        c.discovery_timeout = Duration::from_secs(2);
        let e = format!("{:#}", OidcAuthenticator::init(c).await.unwrap_err());
        assert!(e.contains("OIDC discovery failed"), "{e}");

        // A server that accepts and never answers: the timeout bounds start-up.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = OidcConfig::new(format!("http://{}", silent.local_addr().unwrap()), AUD);
        c.discovery_timeout = Duration::from_millis(500);
        let started = Instant::now();
        let e = format!("{:#}", OidcAuthenticator::init(c).await.unwrap_err());
        assert!(started.elapsed() < Duration::from_secs(3), "{e}");
        assert!(e.contains("OIDC discovery"), "{e}");

        // The discovery document must name the configured issuer.
        let p = TestIssuer::start(vec![rsa_jwk()]).await;
        let c = OidcConfig::new(format!("{}/", p.issuer), AUD);
        let e = format!("{:#}", OidcAuthenticator::init(c).await.unwrap_err());
        assert!(e.contains("does not match --oidc-issuer-url"), "{e}");

        // A JWKS without usable keys.
        p.set_keys(vec![json!({ "kty": "oct", "k": "c2VjcmV0" })]);
        let e = format!(
            "{:#}",
            OidcAuthenticator::init(p.config()).await.unwrap_err()
        );
        assert!(e.contains("holds no usable signature key"), "{e}");

        // An explicit JWKS URL skips discovery.
        p.set_keys(vec![rsa_jwk()]);
        let mut c = OidcConfig::new("https://issuer.invalid", AUD);
        c.jwks_url = Some(format!("{}/jwks", p.issuer));
        let auth = OidcAuthenticator::init(c).await.unwrap();
        let claims = with(mk_claims("https://issuer.invalid"), "sub", json!("team-c"));
        assert_eq!(
            auth.verify(&sign_rsa(&claims)).await.unwrap().tenant,
            "team-c"
        );
    }

    // === through the router: status, contract message, nothing stored ===

    async fn call(app: &Router, token: &str, holder: &str) -> (StatusCode, Value) {
        let req = Request::post("/v1alpha1/namespaces/prod/leases/db/acquire")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({ "holder": holder, "ttlSeconds": 30 }).to_string(),
            ))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn router_rejects_every_bad_token_with_the_generic_message_and_stores_nothing() {
        let (_, ec_jwk) = mk_ec("ec-1");
        let (unknown, _) = mk_ec("other");
        let p = TestIssuer::start(vec![rsa_jwk(), ec_jwk]).await;
        let mut config = p.config();
        config.required_claims = vec!["groups=berth-users".parse().unwrap()];
        let auth = OidcAuthenticator::init(config).await.unwrap();
        let store = Arc::new(MemStore::new());
        let state = AppState::new(
            store.clone(),
            Arc::new(SystemClock::new()),
            TtlBounds::default(),
            Authenticator::Oidc(Arc::new(auth)),
            Arc::new(Metrics::new()),
        );
        let app = crate::router(state);
        let good = mk_claims(&p.issuer);
        let now = now();
        let rejected = [
            sign_rsa(&with(good.clone(), "aud", json!("https://other.test"))),
            sign_rsa(&with(good.clone(), "iss", json!("https://evil.test"))),
            sign_rsa(&with(good.clone(), "exp", json!(now - 3600))),
            sign_rsa(&with(good.clone(), "nbf", json!(now + 3600))),
            sign(Algorithm::ES256, &unknown, Some("other"), &good),
            unsigned(&good),
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(RSA_PEM.as_bytes()),
                Some(RSA_KID),
                &good,
            ),
            sign_rsa(&without(good.clone(), "groups")),
            sign_rsa(&with(good.clone(), "berth_tenant", json!("team-a/sub"))),
            sign_rsa(&with(good.clone(), "berth_tenant", json!(["team\\/a"]))),
        ];
        for token in &rejected {
            let (status, body) = call(&app, token, "team-a").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body["error"], "unauthorized");
        }
        // A valid token, but a holder outside its tenant.
        let token = sign_rsa(&good);
        for holder in ["team-b", "team-ab", "team", "other/team-a"] {
            let (status, body) = call(&app, &token, holder).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body["error"], "holder not authorized for this identity");
        }
        assert!(
            store.list(&ListParams::default()).await.unwrap().is_empty(),
            "no rejected request reached the store"
        );
        // The same token acts for its tenant and below it.
        let (status, body) = call(&app, &token, "team-a/worker-1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["acquired"], true);
        assert_eq!(body["holder"], "team-a/worker-1");
        assert_eq!(store.list(&ListParams::default()).await.unwrap().len(), 1);
    }

    /// Token-check cost with and without the verified-token cache (RS256, 2048-bit key).
    /// `cargo test -p berth-apiserver --release --lib oidc_token_check_cost -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "measurement; prints figures"]
    async fn oidc_token_check_cost() {
        let (ec_key, ec_jwk) = mk_ec("ec-1");
        let p = TestIssuer::start(vec![rsa_jwk(), ec_jwk]).await;
        let claims = mk_claims(&p.issuer);
        for (name, token) in [
            ("RS256", sign_rsa(&claims)),
            (
                "ES256",
                sign(Algorithm::ES256, &ec_key, Some("ec-1"), &claims),
            ),
        ] {
            for capacity in [0, TOKEN_CACHE_CAPACITY] {
                let auth = p.authenticator().await.with_cache_capacity(capacity);
                auth.verify(&token).await.unwrap();
                let n = if capacity == 0 { 2_000 } else { 200_000 };
                let start = Instant::now();
                for _ in 0..n {
                    auth.verify(&token).await.unwrap();
                }
                let per = start.elapsed() / n;
                println!(
                    "{name} {}: {per:?} per check ({n} checks)",
                    if capacity == 0 {
                        "uncached"
                    } else {
                        "cached  "
                    }
                );
            }
        }
    }
}
