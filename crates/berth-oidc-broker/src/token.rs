//! The client-credentials grant (RFC 6749 §4.4) and token-endpoint discovery.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Token endpoint and discovery documents larger than this are refused.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Where the client secret comes from.
#[derive(Clone)]
pub enum ClientSecret {
    /// `--oidc-client-secret` (visible in the process list; warned about).
    Literal(SecretString),
    /// `--oidc-client-secret-file`, re-read for every request so a rotated secret is picked up.
    File(PathBuf),
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(<redacted>)"),
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl ClientSecret {
    /// The current secret.
    ///
    /// # Errors
    /// The file cannot be read or is empty after trimming.
    pub fn load(&self) -> anyhow::Result<SecretString> {
        match self {
            Self::Literal(s) => Ok(s.clone()),
            Self::File(path) => read_secret_file(path),
        }
    }
}

fn read_secret_file(path: &Path) -> anyhow::Result<SecretString> {
    let raw = std::fs::read_to_string(path).with_context(|| {
        format!(
            "failed to read --oidc-client-secret-file {}",
            path.display()
        )
    })?;
    let secret = raw.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "--oidc-client-secret-file {} is empty",
        path.display()
    );
    Ok(SecretString::from(secret.to_owned()))
}

/// A fetched access token. `Debug` never shows the token.
pub struct Token {
    /// The raw access token.
    pub access_token: SecretString,
    /// `expires_in` of the response, if the provider sent one.
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Requests tokens from one token endpoint.
#[derive(Debug, Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: ClientSecret,
    audience: Option<String>,
    scopes: Vec<String>,
    timeout: Duration,
}

/// Settings of a [`TokenClient`].
#[derive(Debug, Clone)]
pub struct TokenParams {
    /// `--oidc-client-id`.
    pub client_id: String,
    /// The client secret.
    pub secret: ClientSecret,
    /// `--oidc-audience`, sent as the `audience` form parameter.
    pub audience: Option<String>,
    /// `--oidc-scopes`, sent space-separated as `scope`.
    pub scopes: Vec<String>,
    /// `--fetch-timeout`, per request.
    pub timeout: Duration,
}

impl TokenClient {
    /// A client for `token_url`.
    pub fn new(http: reqwest::Client, token_url: String, params: TokenParams) -> Self {
        let TokenParams {
            client_id,
            secret,
            audience,
            scopes,
            timeout,
        } = params;
        Self {
            http,
            token_url,
            client_id,
            secret,
            audience,
            scopes,
            timeout,
        }
    }

    /// The token endpoint in use.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// Requests one token. The client authenticates with HTTP Basic (`client_secret_basic`,
    /// id and secret form-urlencoded as RFC 6749 §2.3.1 requires).
    ///
    /// # Errors
    /// Transport failure or timeout, a non-2xx answer (its OAuth `error` is in the message), or
    /// a response without an `access_token`.
    pub async fn fetch(&self) -> anyhow::Result<Token> {
        let secret = self.secret.load()?;
        let mut form: Vec<(&str, String)> = vec![("grant_type", "client_credentials".into())];
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        if let Some(aud) = &self.audience {
            form.push(("audience", aud.clone()));
        }
        let resp = self
            .http
            .post(&self.token_url)
            .basic_auth(
                urlencode(&self.client_id),
                Some(urlencode(secret.expose_secret())),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| send_error(e, &self.token_url, self.timeout))
            .context("token request failed")?;
        let status = resp.status();
        let body = read_limited(resp)
            .await
            .with_context(|| format!("token response from {}", self.token_url))?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<ErrorResponse>(&body)
                .map(|e| match e.error_description {
                    Some(d) => format!("{}: {d}", e.error),
                    None => e.error,
                })
                .unwrap_or_else(|_| "no OAuth error in the body".into());
            anyhow::bail!(
                "token endpoint {} answered {status}: {detail}",
                self.token_url
            );
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .with_context(|| format!("token endpoint {} sent no access_token", self.token_url))?;
        anyhow::ensure!(
            !parsed.access_token.trim().is_empty(),
            "token endpoint {} sent an empty access_token",
            self.token_url
        );
        if let Some(t) = parsed.token_type.as_deref()
            && !t.eq_ignore_ascii_case("bearer")
        {
            tracing::warn!(token_type = t, "token type is not Bearer");
        }
        Ok(Token {
            access_token: SecretString::from(parsed.access_token),
            expires_in: parsed.expires_in.as_ref().and_then(expires_in),
        })
    }
}

/// `expires_in` as seconds; some providers send it as a string. Zero or absent means unknown.
fn expires_in(v: &serde_json::Value) -> Option<Duration> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// A transport error naming the URL once, and a timeout as such.
fn send_error(e: reqwest::Error, url: &str, timeout: Duration) -> anyhow::Error {
    if e.is_timeout() {
        anyhow::anyhow!(
            "{url}: no answer within {}",
            humantime::format_duration(timeout)
        )
    } else {
        anyhow::Error::new(e.without_url()).context(url.to_owned())
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn read_limited(mut resp: reqwest::Response) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("failed to read the body")? {
        anyhow::ensure!(
            body.len() + chunk.len() <= MAX_RESPONSE_BYTES,
            "response larger than {MAX_RESPONSE_BYTES} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads `<issuer>/.well-known/openid-configuration` and returns its `token_endpoint`.
///
/// # Errors
/// Unreachable, not JSON, or without `token_endpoint`.
pub async fn discover_token_endpoint(
    http: &reqwest::Client,
    issuer: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| send_error(e, &url, timeout))
        .context("OIDC discovery failed")?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "OIDC discovery {url}: HTTP {status}");
    let body = read_limited(resp)
        .await
        .with_context(|| format!("OIDC discovery {url}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("OIDC discovery {url}: not JSON"))?;
    doc.get("token_endpoint")
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .with_context(|| format!("OIDC discovery {url}: no token_endpoint"))
}

/// An HTTP client over rustls with ring: native roots (bundled Mozilla roots when none load)
/// plus the PEM certificates of `ca_file`.
///
/// # Errors
/// An unreadable or certificate-less `ca_file`.
pub fn http_client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
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
        .user_agent(concat!("berth-oidc-broker/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("failed to build the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_forms() {
        assert_eq!(
            expires_in(&serde_json::json!(300)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            expires_in(&serde_json::json!("60")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(expires_in(&serde_json::json!(0)), None);
        assert_eq!(expires_in(&serde_json::json!(-5)), None);
        assert_eq!(expires_in(&serde_json::json!(null)), None);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = ClientSecret::Literal(SecretString::from("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        let t = Token {
            access_token: SecretString::from("eyJ.secret.token"),
            expires_in: None,
        };
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(urlencode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
    }

    #[test]
    fn secret_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, " s3cret\n").unwrap();
        let s = ClientSecret::File(p.clone()).load().unwrap();
        assert_eq!(s.expose_secret(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(ClientSecret::File(p).load().is_err());
        assert!(ClientSecret::File(dir.path().join("nope")).load().is_err());
    }
}
