//! Bearer tokens: the [`TokenSource`] trait, a fixed [`StaticToken`] and a re-read
//! [`FileToken`].

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::ClientError;

/// Supplies the bearer token sent in `Authorization: Bearer …`, asked once per request.
///
/// # Guarantees
///
/// Implementations must be cheap enough to call on every request (cache what is expensive) and
/// must never block for long: the call happens on the async runtime.
///
/// # Errors
///
/// An error fails the request with [`ClientError::Token`] before anything is sent.
pub trait TokenSource: fmt::Debug + Send + Sync + 'static {
    /// The token to send, or `None` to send no `Authorization` header at all.
    fn token(&self) -> Result<Option<String>, ClientError>;
}

/// A token fixed at construction. Its `Debug` output never shows the token.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    /// A source that always yields `token`, with surrounding whitespace removed.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into().trim().to_owned())
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StaticToken").field(&"<redacted>").finish()
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> Result<Option<String>, ClientError> {
        Ok((!self.0.is_empty()).then(|| self.0.clone()))
    }
}

/// A token read from a file that another process rotates (for example `berth-oidc-broker`).
///
/// The file is read again when the cached value is older than the cache period (1 s by
/// default); surrounding whitespace is trimmed. If a later read fails or finds the file empty,
/// the last good token is kept and a warning is logged, so a rotation caught half-way never
/// fails a request.
pub struct FileToken {
    path: PathBuf,
    cache_for: Duration,
    state: Mutex<FileTokenState>,
}

struct FileTokenState {
    token: String,
    read_at: Instant,
}

/// How long [`FileToken`] reuses a token before reading the file again.
pub const FILE_TOKEN_CACHE: Duration = Duration::from_secs(1);

impl FileToken {
    /// Reads `path` once, now.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] if the file cannot be read or holds only whitespace: a
    /// misconfigured token path should fail at startup, not on the first request.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let path = path.into();
        let token = read_token(&path).map_err(ClientError::Config)?;
        Ok(Self {
            path,
            cache_for: FILE_TOKEN_CACHE,
            state: Mutex::new(FileTokenState {
                token,
                read_at: Instant::now(),
            }),
        })
    }

    /// Changes how long a read token is reused before the file is read again.
    #[must_use]
    pub fn cache_for(mut self, period: Duration) -> Self {
        self.cache_for = period;
        self
    }

    /// Path of the token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn token_at(&self, now: Instant) -> String {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(state.read_at) < self.cache_for {
            return state.token.clone();
        }
        match read_token(&self.path) {
            Ok(token) => state.token = token,
            Err(reason) => {
                tracing::warn!(%reason, "keeping the last good bearer token");
            }
        }
        // A failed read also restarts the period, so a missing file is not re-read per request.
        state.read_at = now;
        state.token.clone()
    }
}

impl fmt::Debug for FileToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileToken")
            .field("path", &self.path)
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
    }
}

impl TokenSource for FileToken {
    fn token(&self) -> Result<Option<String>, ClientError> {
        Ok(Some(self.token_at(Instant::now())))
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read token file {}: {e}", path.display()))?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_token_trims_and_hides_itself() {
        let t = StaticToken::new("  s3cret\n");
        assert_eq!(t.token().unwrap().as_deref(), Some("s3cret"));
        assert!(!format!("{t:?}").contains("s3cret"));
        assert_eq!(StaticToken::new("  ").token().unwrap(), None);
    }

    #[test]
    fn file_token_must_exist_and_be_non_empty_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = FileToken::new(&missing).unwrap_err();
        assert!(
            err.to_string().contains("failed to read token file"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let err = FileToken::new(&empty).unwrap_err();
        assert!(err.to_string().ends_with("is empty"), "{err}");
    }

    #[test]
    fn file_token_caches_then_rereads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let source = FileToken::new(&path).unwrap();
        let start = Instant::now();
        assert_eq!(source.token_at(start), "one");

        std::fs::write(&path, "two").unwrap();
        // Within the cache period the old value is served without touching the file.
        assert_eq!(source.token_at(start + Duration::from_millis(500)), "one");
        // After it, the file is read again.
        assert_eq!(source.token_at(start + Duration::from_millis(1100)), "two");
        assert!(!format!("{source:?}").contains("two"));
    }

    #[test]
    fn file_token_keeps_last_good_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "good").unwrap();
        let source = FileToken::new(&path).unwrap().cache_for(Duration::ZERO);
        let t0 = Instant::now();

        std::fs::write(&path, "   ").unwrap();
        assert_eq!(source.token_at(t0 + Duration::from_secs(1)), "good");

        std::fs::remove_file(&path).unwrap();
        assert_eq!(source.token_at(t0 + Duration::from_secs(2)), "good");
        assert_eq!(source.token().unwrap().as_deref(), Some("good"));

        std::fs::write(&path, "rotated\n").unwrap();
        assert_eq!(source.token_at(t0 + Duration::from_secs(3)), "rotated");
    }
}
