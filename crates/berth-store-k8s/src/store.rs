//! [`KubeStore`]: the [`LeaseStore`] on `coordination.k8s.io/v1` Lease objects.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::{
    BoxError, Expect, LeaseKey, LeaseRecord, LeaseStore, ListParams, StoreError, Version, Versioned,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams as KubeListParams, PostParams};

use crate::BACKEND;
use crate::clock::KubeClock;
use crate::codec::{self, FIELD_MANAGER};

/// Default client-side rate: requests per second.
pub const DEFAULT_QPS: f64 = 1000.0;
/// Default client-side burst.
pub const DEFAULT_BURST: u32 = 2000;
/// Default per-call timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between recalibrations of [`KubeClock`].
pub const DEFAULT_CLOCK_REFRESH: Duration = Duration::from_secs(60);
/// How many times a replace is retried when only someone else's metadata edit got in the way.
pub const METADATA_CONFLICT_RETRIES: u32 = 4;
/// Page size of list calls.
const LIST_PAGE: u32 = 500;
/// Cached objects kept for updates without an extra read; cleared when exceeded.
const CACHE_LIMIT: usize = 100_000;

/// How to reach the coordination cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeStoreConfig {
    /// Namespace holding the Lease objects (`--coordination-namespace`).
    pub namespace: String,
    /// Kubeconfig file (`--coordination-kubeconfig`); `None` infers the configuration the
    /// usual way: `$KUBECONFIG` or `~/.kube/config` when present, else the in-cluster service
    /// account.
    pub kubeconfig: Option<PathBuf>,
    /// Client-side request rate limit in requests per second; `0` (or any non-positive or
    /// non-finite value) disables it. Default [`DEFAULT_QPS`].
    pub qps: f64,
    /// Requests allowed at once above the steady rate. Default [`DEFAULT_BURST`].
    pub burst: u32,
    /// Bound on every API call (including time spent waiting on the rate limiter); a call
    /// that exceeds it fails with `StoreError::Unavailable`. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// How often [`KubeClock`] re-measures the API server's clock. Default
    /// [`DEFAULT_CLOCK_REFRESH`].
    pub clock_refresh: Duration,
}

impl KubeStoreConfig {
    /// Defaults for `namespace`.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            kubeconfig: None,
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            clock_refresh: DEFAULT_CLOCK_REFRESH,
        }
    }
}

/// Why [`KubeStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig file could not be read or used.
    #[error("failed to load kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No configuration could be inferred (not in a cluster, no kubeconfig).
    #[error("failed to infer a Kubernetes client configuration")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built.
    #[error("failed to build the Kubernetes client")]
    Client(#[source] kube::Error),
    /// The namespace is empty.
    #[error("the coordination namespace must not be empty")]
    NoNamespace,
}

/// A token bucket: `qps` tokens per second, at most `burst` banked. Waiters reserve a token
/// and sleep until it is due, so the lock is never held across an `.await`.
#[derive(Debug)]
struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(qps: f64, burst: u32) -> Option<Self> {
        (qps.is_finite() && qps > 0.0).then(|| {
            let burst = f64::from(burst.max(1));
            Self {
                qps,
                burst,
                state: Mutex::new((burst, Instant::now())),
            }
        })
    }

    /// How long the caller must wait for its token (zero when one is banked).
    fn reserve(&self) -> Duration {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.qps;
        s.0 = (s.0 + refill).min(self.burst) - 1.0;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-s.0 / self.qps).unwrap_or(Duration::MAX)
        }
    }

    async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// A failed call: the timeout, or kube's own error.
enum CallError {
    Timeout,
    Kube(kube::Error),
}

impl CallError {
    fn code(&self) -> Option<u16> {
        match self {
            Self::Kube(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }

    fn into_store(self, op: &'static str) -> StoreError {
        match self {
            Self::Timeout => StoreError::Unavailable {
                backend: BACKEND,
                source: format!("kube-apiserver {op} timed out").into(),
            },
            Self::Kube(e) => map_kube(e),
        }
    }
}

fn map_kube(e: kube::Error) -> StoreError {
    let transient = match &e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::SerdeError(_)
        | kube::Error::BuildRequest(_)
        | kube::Error::HttpError(_)
        | kube::Error::RustlsTls(_) => false,
        _ => true,
    };
    let source: BoxError = Box::new(e);
    if transient {
        StoreError::Unavailable {
            backend: BACKEND,
            source,
        }
    } else {
        StoreError::Backend {
            backend: BACKEND,
            source,
        }
    }
}

/// The `k8s` store: one `coordination.k8s.io/v1` Lease per key in one namespace.
///
/// See the crate docs for the object layout, the compare-and-set protocol and the clock.
pub struct KubeStore {
    api: Api<Lease>,
    namespace: String,
    timeout: Duration,
    limiter: Option<RateLimiter>,
    /// Last object seen per object name, so an update right after a read needs no second read.
    cache: Mutex<HashMap<String, Lease>>,
    clock: KubeClock,
}

impl fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeStore")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl KubeStore {
    /// Builds the client from `cfg` (explicit kubeconfig, or inferred) and the store on it.
    /// Makes no request; use [`LeaseStore::ping`] to check reachability.
    ///
    /// # Errors
    /// [`ConnectError`] when no usable client configuration is found.
    pub async fn connect(cfg: KubeStoreConfig) -> Result<Self, ConnectError> {
        let mut config = match &cfg.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                    ConnectError::Kubeconfig {
                        path: path.clone(),
                        source,
                    }
                })?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|source| ConnectError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
            }
            None => kube::Config::infer().await.map_err(ConnectError::Infer)?,
        };
        config.connect_timeout = Some(cfg.request_timeout);
        config.read_timeout = Some(cfg.request_timeout);
        config.reset_reader_on_write = true;
        // Every store call is one bounded attempt; LeaseService decides about retries.
        config.default_retry = false;
        let client = kube::Client::try_from(config).map_err(ConnectError::Client)?;
        Self::from_client(client, cfg)
    }

    /// The store on an existing client (`cfg.kubeconfig` is ignored).
    ///
    /// # Errors
    /// [`ConnectError::NoNamespace`] for an empty namespace.
    pub fn from_client(client: kube::Client, cfg: KubeStoreConfig) -> Result<Self, ConnectError> {
        if cfg.namespace.is_empty() {
            return Err(ConnectError::NoNamespace);
        }
        Ok(Self {
            api: Api::namespaced(client.clone(), &cfg.namespace),
            clock: KubeClock::new(client, cfg.request_timeout, cfg.clock_refresh),
            namespace: cfg.namespace,
            timeout: cfg.request_timeout,
            limiter: RateLimiter::new(cfg.qps, cfg.burst),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The clock every replica on this coordination namespace should judge expiry with: it
    /// follows the kube-apiserver's clock (see [`KubeClock`]).
    pub fn clock(&self) -> KubeClock {
        self.clock.clone()
    }

    /// The coordination namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        let bounded = async {
            if let Some(l) = &self.limiter {
                l.acquire().await;
            }
            fut.await
        };
        match tokio::time::timeout(self.timeout, bounded).await {
            Ok(r) => r.map_err(CallError::Kube),
            Err(_) => Err(CallError::Timeout),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, lease: &Lease) {
        let Some(name) = lease.metadata.name.clone() else {
            return;
        };
        let mut cache = self.cache();
        if cache.len() >= CACHE_LIMIT && !cache.contains_key(&name) {
            cache.clear();
        }
        cache.insert(name, lease.clone());
    }

    fn forget(&self, name: &str) {
        self.cache().remove(name);
    }

    async fn read(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let got = self
            .call(self.api.get_opt(name))
            .await
            .map_err(|e| e.into_store("get"))?;
        match &got {
            Some(lease) => self.remember(lease),
            None => self.forget(name),
        }
        Ok(got)
    }

    async fn create(&self, record: &LeaseRecord) -> Result<Version, StoreError> {
        let lease = codec::encode(record, Version::INITIAL, None);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self.call(self.api.create(&pp, &lease)).await {
            Ok(created) => {
                self.remember(&created);
                Ok(Version::INITIAL)
            }
            // AlreadyExists: someone created the key first.
            Err(e) if e.code() == Some(409) => Err(StoreError::Conflict {
                key: record.key.clone(),
            }),
            Err(e) => Err(e.into_store("create")),
        }
    }

    async fn update(&self, record: &LeaseRecord, expected: Version) -> Result<Version, StoreError> {
        let name = codec::object_name(&record.key);
        let conflict = || StoreError::Conflict {
            key: record.key.clone(),
        };
        let next = expected.next();
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        // Start from the object this process saw last, if it is at the expected version;
        // a stale resourceVersion only costs one 409 and a re-read.
        let mut base = self
            .cache()
            .get(&name)
            .filter(|l| codec::berth_version(l) == Some(expected))
            .cloned();
        let mut uid: Option<String> = None;
        for _ in 0..=METADATA_CONFLICT_RETRIES {
            let current = match base.take() {
                Some(l) => l,
                None => self.read(&name).await?.ok_or_else(conflict)?,
            };
            if codec::berth_version(&current) != Some(expected) {
                return Err(conflict());
            }
            // A deleted and recreated object is a different record, whatever its version.
            match (&uid, &current.metadata.uid) {
                (Some(want), Some(have)) if want != have => return Err(conflict()),
                (None, have) => uid.clone_from(have),
                _ => {}
            }
            let lease = codec::encode(record, next, Some(current));
            match self.call(self.api.replace(&name, &pp, &lease)).await {
                Ok(written) => {
                    self.remember(&written);
                    return Ok(next);
                }
                // The resourceVersion moved: re-read and look at the Berth version. If it
                // is still the expected one, only labels/annotations were edited by someone
                // else, and the write is retried on the fresh object.
                Err(e) if e.code() == Some(409) => {
                    tracing::debug!(object = %name, "resourceVersion conflict; re-reading");
                }
                Err(e) if e.code() == Some(404) => {
                    self.forget(&name);
                    return Err(conflict());
                }
                Err(e) => return Err(e.into_store("replace")),
            }
        }
        Err(conflict())
    }
}

#[async_trait::async_trait]
impl LeaseStore for KubeStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Versioned<LeaseRecord>>, StoreError> {
        let name = codec::object_name(key);
        let Some(lease) = self.read(&name).await? else {
            return Ok(None);
        };
        codec::decode(&lease)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: key.to_string(),
                reason: format!("Lease {}/{name}: {}", self.namespace, e.0),
            })
    }

    async fn list(&self, params: &ListParams) -> Result<Vec<Versioned<LeaseRecord>>, StoreError> {
        let selector = codec::selector(params.namespace.as_deref());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut lp = KubeListParams::default().labels(&selector).limit(LIST_PAGE);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = self
                .call(self.api.list(&lp))
                .await
                .map_err(|e| e.into_store("list"))?;
            for lease in &page.items {
                match codec::decode(lease) {
                    Ok(v) if params.admits(&v.value.key) => {
                        self.remember(lease);
                        out.push(v);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(
                        object = lease.metadata.name.as_deref().unwrap_or(""),
                        reason = %e.0,
                        "skipping a labelled Lease that is not a Berth record"
                    ),
                }
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        // Object names order differently from (namespace, name): '-' sorts before '.'.
        out.sort_by(|a, b| a.value.key.cmp(&b.value.key));
        if let Some(n) = params.limit {
            out.truncate(n);
        }
        Ok(out)
    }

    async fn put(&self, record: &LeaseRecord, expect: Expect) -> Result<Version, StoreError> {
        match expect {
            Expect::Absent => self.create(record).await,
            Expect::Version(v) => self.update(record, v).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let lp = KubeListParams::default()
            .labels(&codec::selector(None))
            .limit(1);
        self.call(self.api.list_metadata(&lp))
            .await
            .map(|_| ())
            .map_err(|e| e.into_store("list"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_banks_burst_then_paces() {
        let l = RateLimiter::new(100.0, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(l.reserve(), Duration::ZERO);
        }
        let wait = l.reserve();
        assert!(
            wait > Duration::from_millis(5) && wait <= Duration::from_millis(10),
            "{wait:?}"
        );
        let wait2 = l.reserve();
        assert!(wait2 > wait, "later reservations wait longer");
    }

    #[test]
    fn rate_limiter_can_be_disabled() {
        assert!(RateLimiter::new(0.0, 10).is_none());
        assert!(RateLimiter::new(f64::NAN, 10).is_none());
        assert!(RateLimiter::new(-1.0, 10).is_none());
    }

    #[test]
    fn config_defaults_are_generous() {
        let c = KubeStoreConfig::new("berth-system");
        assert!(c.qps >= 1000.0);
        assert!(c.burst >= 2000);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
    }
}
