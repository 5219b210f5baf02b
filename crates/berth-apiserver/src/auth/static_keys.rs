//! Static API keys: a file of `<key-id>:<sha256-lowercase-hex>` lines (reference §2.6).
//!
//! Only hashes live on the server. A presented token is hashed and compared against every
//! entry in constant time. The file is reloaded on SIGHUP and when its content changes; a bad
//! reload logs an error and keeps the previous keys.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use super::Identity;

/// Why a key file was rejected. Every message names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line without `:`.
    #[error("line {line}: expected <key-id>:<sha256-hex>")]
    Syntax {
        /// 1-based line number.
        line: usize,
    },
    /// An empty key id.
    #[error("line {line}: key id is empty")]
    EmptyId {
        /// 1-based line number.
        line: usize,
    },
    /// A key id containing `/`.
    #[error("line {line}: key id must not contain '/'")]
    SlashInId {
        /// 1-based line number.
        line: usize,
    },
    /// A hash that is not 64 lowercase hex characters.
    #[error("line {line}: hash must be 64 lowercase hex characters")]
    BadHash {
        /// 1-based line number.
        line: usize,
    },
    /// The same hash twice.
    #[error("line {line}: duplicate key hash (first on line {first})")]
    DuplicateHash {
        /// 1-based line number.
        line: usize,
        /// Line of the first occurrence.
        first: usize,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    hash: [u8; 32],
    line: usize,
}

/// A parsed key file.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    entries: Vec<Entry>,
}

impl KeySet {
    /// Parses key-file text.
    ///
    /// # Errors
    /// The first bad line, as a [`ParseError`].
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (id, hash) = l.split_once(':').ok_or(ParseError::Syntax { line })?;
            let (id, hash) = (id.trim(), hash.trim());
            if id.is_empty() {
                return Err(ParseError::EmptyId { line });
            }
            if id.contains('/') {
                return Err(ParseError::SlashInId { line });
            }
            let lower_hex = hash.len() == 64
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !lower_hex {
                return Err(ParseError::BadHash { line });
            }
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(hash, &mut bytes).map_err(|_| ParseError::BadHash { line })?;
            if let Some(first) = entries.iter().find(|e| e.hash == bytes) {
                return Err(ParseError::DuplicateHash {
                    line,
                    first: first.line,
                });
            }
            entries.push(Entry {
                id: id.to_owned(),
                hash: bytes,
                line,
            });
        }
        Ok(Self { entries })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key id whose hash matches `token`'s SHA-256. Compares against every entry in
    /// constant time, without stopping at a match.
    pub fn lookup(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&digest)) {
                found = Some(e.id.as_str());
            }
        }
        found
    }
}

/// The lowercase hex SHA-256 of a token, as the key file stores it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A key file and its current [`KeySet`].
#[derive(Debug)]
pub struct StaticKeys {
    path: PathBuf,
    current: RwLock<Arc<KeySet>>,
    seen: RwLock<[u8; 32]>,
}

impl StaticKeys {
    /// Loads `path`.
    ///
    /// # Errors
    /// Unreadable file or a parse error.
    pub fn load(path: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let path = path.into();
        let text = read(&path)?;
        let set = KeySet::parse(&text)
            .map_err(|e| anyhow::anyhow!("invalid api keys file {}: {e}", path.display()))?;
        if set.is_empty() {
            tracing::warn!(path = %path.display(), "api keys file has no keys: every request will be rejected");
        }
        Ok(Self {
            path,
            current: RwLock::new(Arc::new(set)),
            seen: RwLock::new(Sha256::digest(text.as_bytes()).into()),
        })
    }

    /// The file this set was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of keys loaded.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    fn snapshot(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The identity of `token`, if it matches a key.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        let set = self.snapshot();
        set.lookup(token).map(|id| Identity {
            holder: id.to_owned(),
            tenant: id.to_owned(),
        })
    }

    /// Re-reads the file. On error the previous keys stay in force.
    ///
    /// # Errors
    /// Unreadable file or a parse error.
    pub fn reload(&self) -> anyhow::Result<usize> {
        let text = read(&self.path)?;
        self.set_seen(Sha256::digest(text.as_bytes()).into());
        let set = KeySet::parse(&text)
            .map_err(|e| anyhow::anyhow!("invalid api keys file {}: {e}", self.path.display()))?;
        let n = set.len();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
        Ok(n)
    }

    fn set_seen(&self, digest: [u8; 32]) {
        *self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = digest;
    }

    /// Reloads when the file's content differs from the last one read. Returns whether a
    /// reload was attempted.
    pub fn reload_if_changed(&self) -> bool {
        let Ok(text) = read(&self.path) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        let seen = *self
            .seen
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if digest == seen {
            return false;
        }
        self.log_reload("file change");
        true
    }

    fn log_reload(&self, reason: &str) {
        match self.reload() {
            Ok(n) => {
                tracing::info!(path = %self.path.display(), keys = n, reason, "api keys reloaded")
            }
            Err(e) => tracing::error!(
                path = %self.path.display(),
                reason,
                error = format!("{e:#}"),
                "api keys reload failed; keeping the previous keys"
            ),
        }
    }

    /// Watches the file until `shutdown` turns true: polls its content every `poll` and
    /// reloads on SIGHUP.
    pub fn spawn_reloader(
        self: Arc<Self>,
        poll: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; api keys reload on file change only");
                    None
                }
            };
            let mut tick = tokio::time::interval(poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        self.reload_if_changed();
                    }
                    Some(()) = async {
                        match hup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => self.log_reload("SIGHUP"),
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        })
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("failed to read api keys file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"; // "secret"

    #[test]
    fn parses_comments_blank_lines_and_keys() {
        assert_eq!(hash_token("secret"), H1);
        let text = format!("# keys\n\n  east:{H1}  \nwest:{}\n", hash_token("other"));
        let set = KeySet::parse(&text).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.lookup("secret"), Some("east"));
        assert_eq!(set.lookup("other"), Some("west"));
        assert_eq!(set.lookup("nope"), None);
        assert_eq!(set.lookup(""), None);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let upper = H1.to_uppercase();
        let cases = [
            (
                "# c\nnocolon\n".to_owned(),
                "line 2: expected <key-id>:<sha256-hex>",
            ),
            (format!(":{H1}"), "line 1: key id is empty"),
            (
                format!("\n\na/b:{H1}"),
                "line 3: key id must not contain '/'",
            ),
            (
                "a:abc".to_owned(),
                "line 1: hash must be 64 lowercase hex characters",
            ),
            (
                format!("a:{upper}"),
                "line 1: hash must be 64 lowercase hex characters",
            ),
            (
                format!("a:{H1}0"),
                "line 1: hash must be 64 lowercase hex characters",
            ),
            (
                format!("a:{H1}\n#\nb:{H1}"),
                "line 3: duplicate key hash (first on line 1)",
            ),
        ];
        for (text, want) in cases {
            let err = KeySet::parse(&text).unwrap_err();
            assert_eq!(err.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn reload_keeps_old_keys_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("east:{H1}\n")).unwrap();
        let keys = StaticKeys::load(&path).unwrap();
        assert_eq!(keys.authenticate("secret").unwrap().tenant, "east");
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(keys.reload().is_err());
        assert_eq!(keys.authenticate("secret").unwrap().holder, "east");
        std::fs::write(&path, format!("west:{}\n", hash_token("new"))).unwrap();
        assert_eq!(keys.reload().unwrap(), 1);
        assert!(keys.authenticate("secret").is_none());
        assert_eq!(keys.authenticate("new").unwrap().holder, "west");
    }

    #[test]
    fn load_rejects_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "x:y\n").unwrap();
        let err = StaticKeys::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 1: hash must be 64 lowercase hex characters"),
            "{err}"
        );
        assert!(StaticKeys::load(dir.path().join("missing")).is_err());
    }

    async fn wait_for(keys: &StaticKeys, token: &str) -> bool {
        for _ in 0..100 {
            if keys.authenticate(token).is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn file_change_reload_and_bad_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("east:{H1}\n")).unwrap();
        let keys = Arc::new(StaticKeys::load(&path).unwrap());
        let (tx, rx) = watch::channel(false);
        let task = keys.clone().spawn_reloader(Duration::from_millis(50), rx);
        std::fs::write(&path, format!("east:{H1}\nwest:{}\n", hash_token("added"))).unwrap();
        assert!(wait_for(&keys, "added").await, "file change not picked up");
        // A bad file keeps the previous keys.
        std::fs::write(&path, "broken line\n").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(keys.authenticate("added").unwrap().holder, "west");
        assert_eq!(keys.authenticate("secret").unwrap().holder, "east");
        tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn sighup_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("east:{H1}\n")).unwrap();
        let keys = Arc::new(StaticKeys::load(&path).unwrap());
        let (tx, rx) = watch::channel(false);
        // Poll interval far longer than the test: only SIGHUP can trigger the reload.
        let task = keys.clone().spawn_reloader(Duration::from_secs(3600), rx);
        // Let the task install its SIGHUP handler and pass the interval's first tick.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(&path, format!("hup:{}\n", hash_token("hup-token"))).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(wait_for(&keys, "hup-token").await, "SIGHUP reload not done");
        assert!(keys.authenticate("secret").is_none());
        tx.send(true).unwrap();
        task.await.unwrap();
    }
}
