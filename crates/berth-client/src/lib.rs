//! Async client for the Berth `v1alpha1` lease API.
//!
//! [`Client`] mirrors the HTTP API one method per endpoint ([`acquire`](Client::acquire),
//! [`renew`](Client::renew), [`release`](Client::release), [`get`](Client::get),
//! [`list`](Client::list), [`healthz`](Client::healthz), [`readyz`](Client::readyz)); it is
//! built by [`ClientBuilder`] with the server URL, extra CA certificates, an optional TLS
//! server-name override, a [`TokenSource`] for the bearer token and timeouts. TLS is rustls
//! with the ring provider, configured by this crate, so no process-wide provider is needed.
//!
//! For code that must only act while it holds a lease, [`Client::lease`] returns a
//! [`LeaseBuilder`]; once acquired, [`LeaseHandle::keep_alive`] renews in the background and
//! publishes a [`Claim`] with a conservative `safe_until` deadline on the monotonic clock.
//!
//! ```no_run
//! # async fn demo() -> Result<(), berth_client::ClientError> {
//! use std::time::Duration;
//! use berth_client::{Client, FileToken};
//!
//! let client = Client::builder("https://berth.example.com:8443")
//!     .ca_file("/etc/berth/ca.crt")
//!     .token_source(FileToken::new("/var/run/berth/token")?)
//!     .build()?;
//! let granted = client
//!     .acquire("pipeline", "ingest-worker", "cluster-east", Duration::from_secs(30))
//!     .await?;
//! if granted.acquired {
//!     println!("holding with fencing token {}", granted.fencing_token);
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![warn(clippy::future_not_send)]

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use berth_api::{
    AcquireRequest, LeaseList, LeaseResponse, LeaseStatus, ReleaseRequest, RenewRequest,
};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;

mod error;
mod heartbeat;
pub mod lease;
mod tls;
mod token;
pub mod watch;

pub use error::{BoxError, ClientError};
pub use lease::{AcquireOutcome, Claim, ClaimState, LeaseBuilder, LeaseHandle};
pub use tls::install_default_crypto_provider;
pub use token::{FILE_TOKEN_CACHE, FileToken, StaticToken, TokenSource};
pub use watch::{WatchOptions, WatchStream, WatchTarget};

/// Default limit for a whole request, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// `User-Agent` sent unless [`ClientBuilder::user_agent`] overrides it.
pub const USER_AGENT: &str = concat!("berth-client/", env!("CARGO_PKG_VERSION"));

/// Query options of [`Client::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Largest number of items on one page; the server picks when absent.
    pub limit: Option<u32>,
    /// `continue` token from the previous page.
    pub continue_token: Option<String>,
    /// Only leases whose current holder is exactly this.
    pub holder: Option<String>,
}

/// Builder of [`Client`] (C-BUILDER).
#[derive(Debug)]
pub struct ClientBuilder {
    base_url: String,
    ca_files: Vec<PathBuf>,
    ca_pems: Vec<Vec<u8>>,
    server_name: Option<String>,
    token: Option<Arc<dyn TokenSource>>,
    timeout: Duration,
    connect_timeout: Option<Duration>,
    user_agent: String,
}

impl ClientBuilder {
    /// Starts a builder for the API server at `base_url` (`https://host:port`; `http://` is
    /// accepted for tests and local proxies). A path prefix in the URL is kept.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ca_files: Vec::new(),
            ca_pems: Vec::new(),
            server_name: None,
            token: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: None,
            user_agent: USER_AGENT.to_owned(),
        }
    }

    /// Trusts the certificates of a PEM file in addition to the system roots. The file is read
    /// by [`build`](Self::build).
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Trusts the certificates of a PEM bundle in addition to the system roots.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pems.push(pem.into());
        self
    }

    /// Verifies the server certificate against `name` instead of the URL's host (useful when
    /// connecting by IP or through a tunnel). SNI still carries the URL's host.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Where the bearer token of each request comes from. Without one no `Authorization`
    /// header is sent.
    #[must_use]
    pub fn token_source(mut self, source: impl TokenSource) -> Self {
        self.token = Some(Arc::new(source));
        self
    }

    /// Shorthand for [`token_source`](Self::token_source) with a [`StaticToken`].
    #[must_use]
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.token_source(StaticToken::new(token))
    }

    /// Limit for each whole request (default [`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Limit for establishing a connection (TCP and TLS); by default only the request timeout
    /// applies.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Replaces the `User-Agent` header (default [`USER_AGENT`]).
    #[must_use]
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Validates the settings, reads the CA files and builds the client.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] for an invalid URL, an unreadable or empty CA bundle, an invalid
    /// server name, or a zero timeout.
    pub fn build(self) -> Result<Client, ClientError> {
        let Self {
            base_url,
            ca_files,
            ca_pems,
            server_name,
            token,
            timeout,
            connect_timeout,
            user_agent,
        } = self;

        let base = parse_base_url(&base_url)?;
        if timeout.is_zero() {
            return Err(ClientError::config("request timeout must be positive"));
        }

        let mut bundles = Vec::with_capacity(ca_files.len() + ca_pems.len());
        for path in ca_files {
            let pem = std::fs::read(&path).map_err(|e| {
                ClientError::config(format!("failed to read CA file {}: {e}", path.display()))
            })?;
            bundles.push((path.display().to_string(), pem));
        }
        bundles.extend(
            ca_pems
                .into_iter()
                .enumerate()
                .map(|(i, pem)| (format!("#{}", i + 1), pem)),
        );
        let tls = tls::client_config(&bundles, server_name.as_deref())?;

        let mut http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(user_agent)
            .timeout(timeout);
        if let Some(connect) = connect_timeout {
            http = http.connect_timeout(connect);
        }
        let http = http
            .build()
            .map_err(|e| ClientError::config(format!("failed to build the HTTP client: {e}")))?;

        Ok(Client {
            inner: Arc::new(Inner { http, base, token }),
        })
    }
}

fn parse_base_url(raw: &str) -> Result<Url, ClientError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| ClientError::config(format!("invalid server URL {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ClientError::config(format!(
            "invalid server URL {raw:?}: scheme must be https or http"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::config(format!(
            "invalid server URL {raw:?}: no host"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::config(format!(
            "invalid server URL {raw:?}: must not have a query or fragment"
        )));
    }
    Ok(url)
}

/// Client of one Berth API server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    token: Option<Arc<dyn TokenSource>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("token", &self.inner.token)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts a [`ClientBuilder`] for the server at `base_url`.
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// The server URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// `POST …/acquire`: takes the lease for `holder` if it is free, expired, released or
    /// already held by `holder` (then it is a renewal). `ttl` is sent in whole seconds,
    /// rounded up.
    ///
    /// A lease held by someone else is not an error: the answer has `acquired: false` and
    /// describes the current holder.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`]; `400` for invalid keys, holders or TTLs is [`ClientError::Api`].
    pub async fn acquire(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseResponse, ClientError> {
        let url = self.lease_url(namespace, name, Some("acquire"))?;
        let body = AcquireRequest {
            holder: holder.to_owned(),
            ttl_seconds: ttl_seconds(ttl),
        };
        self.json(self.request(Method::POST, url)?.json(&body))
            .await
    }

    /// `POST …/renew`: extends the lease if `holder` holds it live with `fencing_token`;
    /// otherwise the answer has `acquired: false` and the current state. An expired lease is
    /// never renewed.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`].
    pub async fn renew(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        fencing_token: i64,
        ttl: Duration,
    ) -> Result<LeaseResponse, ClientError> {
        let url = self.lease_url(namespace, name, Some("renew"))?;
        let body = RenewRequest {
            holder: holder.to_owned(),
            fencing_token,
            ttl_seconds: ttl_seconds(ttl),
        };
        self.json(self.request(Method::POST, url)?.json(&body))
            .await
    }

    /// `POST …/release`: gives the lease up. Releasing an absent or already released lease
    /// succeeds.
    ///
    /// # Errors
    ///
    /// [`ClientError::Conflict`] when another holder or token holds the lease live; any other
    /// [`ClientError`].
    pub async fn release(
        &self,
        namespace: &str,
        name: &str,
        holder: &str,
        fencing_token: i64,
    ) -> Result<(), ClientError> {
        let url = self.lease_url(namespace, name, Some("release"))?;
        let body = ReleaseRequest {
            holder: holder.to_owned(),
            fencing_token,
        };
        let response = self
            .send(self.request(Method::POST, url)?.json(&body))
            .await?;
        let _ = response.bytes().await;
        Ok(())
    }

    /// `GET /v1alpha1/namespaces/{ns}/leases/{name}`: the lease's full state, or `None` if the
    /// key has never existed.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`].
    pub async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<LeaseStatus>, ClientError> {
        let url = self.lease_url(namespace, name, None)?;
        match self.json(self.request(Method::GET, url)?).await {
            Ok(status) => Ok(Some(status)),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1alpha1/namespaces/{ns}/leases` (or `/v1alpha1/leases` when `namespace` is
    /// `None`): one page of leases. Pass the returned `continue_token` in `options` for the
    /// next page.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`].
    pub async fn list(
        &self,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<LeaseList, ClientError> {
        let url = match namespace {
            Some(ns) => self.url(&["v1alpha1", "namespaces", ns, "leases"])?,
            None => self.url(&["v1alpha1", "leases"])?,
        };
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(limit) = options.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(token) = &options.continue_token {
            query.push(("continue", token.clone()));
        }
        if let Some(holder) = &options.holder {
            query.push(("holder", holder.clone()));
        }
        self.json(self.request(Method::GET, url)?.query(&query))
            .await
    }

    /// `GET /healthz`: succeeds when the server process answers 2xx.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`]; a non-2xx answer is [`ClientError::Api`].
    pub async fn healthz(&self) -> Result<(), ClientError> {
        self.probe("healthz").await
    }

    /// Same as [`healthz`](Self::healthz), named like the Go client's `Ping`.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`].
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.healthz().await
    }

    /// `GET /readyz`: succeeds when the server can reach its store.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`]; not ready is [`ClientError::Api`] with status 503.
    pub async fn readyz(&self) -> Result<(), ClientError> {
        self.probe("readyz").await
    }

    /// Starts a [`LeaseBuilder`] for holding `namespace/name` as `holder` with `ttl`.
    pub fn lease(
        &self,
        namespace: impl Into<String>,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> LeaseBuilder {
        LeaseBuilder::new(
            self.clone(),
            namespace.into(),
            name.into(),
            holder.into(),
            ttl,
        )
    }

    async fn probe(&self, path: &str) -> Result<(), ClientError> {
        let url = self.url(&[path])?;
        let response = self.send(self.request(Method::GET, url)?).await?;
        let _ = response.bytes().await;
        Ok(())
    }

    fn lease_url(
        &self,
        namespace: &str,
        name: &str,
        verb: Option<&str>,
    ) -> Result<Url, ClientError> {
        check_segment("namespace", namespace)?;
        check_segment("name", name)?;
        let mut segments = vec!["v1alpha1", "namespaces", namespace, "leases", name];
        segments.extend(verb);
        self.url(&segments)
    }

    /// Appends percent-encoded path segments to the base URL.
    fn url(&self, segments: &[&str]) -> Result<Url, ClientError> {
        let mut url = self.inner.base.clone();
        let mut path = url.path().trim_end_matches('/').to_owned();
        for segment in segments {
            path.push('/');
            path.push_str(&encode_segment(segment));
        }
        url.set_path(&path);
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> Result<reqwest::RequestBuilder, ClientError> {
        let mut request = self.inner.http.request(method, url);
        if let Some(source) = &self.inner.token
            && let Some(token) = source.token()?
        {
            request = request.bearer_auth(token);
        }
        Ok(request)
    }

    /// Sends the request; a non-2xx answer becomes the matching [`ClientError`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request.send().await.map_err(ClientError::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(error_from(status, response).await)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let body = response.bytes().await.map_err(ClientError::from_reqwest)?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(Box::new(e)))
    }
}

async fn error_from(status: StatusCode, response: reqwest::Response) -> ClientError {
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => return ClientError::from_reqwest(e),
    };
    ClientError::from_response(status.as_u16(), request_id, &body)
}

/// Lease keys are sent as path segments; reject the ones no URL can carry unchanged.
fn check_segment(what: &str, value: &str) -> Result<(), ClientError> {
    if value.is_empty() {
        return Err(ClientError::config(format!(
            "lease {what} must not be empty"
        )));
    }
    // WHATWG URL parsing collapses "." and ".." (even percent-encoded) as dot segments.
    if value == "." || value == ".." {
        return Err(ClientError::config(format!(
            "invalid lease {what} {value:?}"
        )));
    }
    Ok(())
}

/// Percent-encodes everything outside RFC 3986 `unreserved`.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whole seconds, rounded up, saturating at `i64::MAX`.
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::builder(base).build().unwrap()
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(30)), 30);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::ZERO), 0);
        assert_eq!(ttl_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn lease_urls_are_encoded_per_segment() {
        let c = client("https://berth.example:8443");
        let url = c
            .lease_url("team-a", "db.primary", Some("acquire"))
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://berth.example:8443/v1alpha1/namespaces/team-a/leases/db.primary/acquire"
        );
        let url = c.lease_url("a/b", "x y?#%", None).unwrap();
        assert_eq!(
            url.as_str(),
            "https://berth.example:8443/v1alpha1/namespaces/a%2Fb/leases/x%20y%3F%23%25"
        );
        let url = c.lease_url("ns", "ünï", None).unwrap();
        assert!(url.as_str().ends_with("/leases/%C3%BCn%C3%AF"), "{url}");
    }

    #[test]
    fn base_path_prefix_is_kept() {
        let c = client("https://gw.example/berth/");
        assert_eq!(
            c.url(&["v1alpha1", "leases"]).unwrap().as_str(),
            "https://gw.example/berth/v1alpha1/leases"
        );
        assert_eq!(
            c.url(&["healthz"]).unwrap().as_str(),
            "https://gw.example/berth/healthz"
        );
    }

    #[test]
    fn dot_and_empty_segments_are_rejected() {
        let c = client("http://127.0.0.1:1");
        for (ns, name) in [("", "x"), ("ns", ""), (".", "x"), ("ns", "..")] {
            let err = c.lease_url(ns, name, None).unwrap_err();
            assert!(
                matches!(err, ClientError::Config(_)),
                "{ns:?}/{name:?}: {err}"
            );
        }
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for bad in [
            "",
            "berth.example",
            "ftp://x",
            "https://x/?a=b",
            "https://x/#frag",
            "unix:/tmp/sock",
        ] {
            let err = Client::builder(bad).build().unwrap_err();
            assert!(matches!(err, ClientError::Config(_)), "{bad}: {err:?}");
        }
        let err = Client::builder("https://x")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "request timeout must be positive");
        let err = Client::builder("https://x")
            .ca_file("/nonexistent/ca.crt")
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to read CA file /nonexistent/ca.crt"),
            "{err}"
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let c = Client::builder("https://x")
            .bearer_token("hunter2")
            .build()
            .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("https://x/"), "{shown}");
    }
}
