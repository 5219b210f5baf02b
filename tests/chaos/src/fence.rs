//! A fencing-token demo resource.
//!
//! [`FencedResource`] stands for any storage a lease protects. It remembers the highest fencing
//! token it has seen and accepts a write only with a token at least that high, so a holder that
//! was paused past its lease and wakes up with a stale token cannot overwrite the work of the
//! holder that took over.

use std::fmt;
use std::sync::{Mutex, PoisonError};

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleToken {
    /// Token the write carried.
    pub token: i64,
    /// Highest token seen so far.
    pub highest: i64,
}

impl fmt::Display for StaleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stale fencing token {} (highest seen {})",
            self.token, self.highest
        )
    }
}

impl std::error::Error for StaleToken {}

#[derive(Debug, Default)]
struct State {
    highest: Option<i64>,
    value: Option<String>,
    writes: Vec<(i64, String)>,
}

/// An in-process resource that accepts a write only with a token ≥ the highest seen.
#[derive(Debug, Default)]
pub struct FencedResource {
    state: Mutex<State>,
}

impl FencedResource {
    /// An empty resource that has seen no token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `value` under `token`.
    ///
    /// # Errors
    /// [`StaleToken`] when a higher token has already written.
    pub fn write(&self, token: i64, value: impl Into<String>) -> Result<(), StaleToken> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(highest) = s.highest
            && token < highest
        {
            return Err(StaleToken { token, highest });
        }
        let value = value.into();
        s.highest = Some(token);
        s.writes.push((token, value.clone()));
        s.value = Some(value);
        Ok(())
    }

    /// The current value.
    pub fn value(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .value
            .clone()
    }

    /// The highest token seen.
    pub fn highest(&self) -> Option<i64> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .highest
    }

    /// Every accepted write, in order, with its token.
    pub fn accepted(&self) -> Vec<(i64, String)> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .writes
            .clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_higher_tokens_pass_lower_fail() {
        let r = FencedResource::new();
        assert_eq!(r.highest(), None);
        r.write(3, "a").unwrap();
        r.write(3, "b").unwrap();
        r.write(5, "c").unwrap();
        let err = r.write(4, "late").unwrap_err();
        assert_eq!(
            err,
            StaleToken {
                token: 4,
                highest: 5
            }
        );
        assert_eq!(err.to_string(), "stale fencing token 4 (highest seen 5)");
        assert_eq!(r.value().as_deref(), Some("c"));
        assert_eq!(r.highest(), Some(5));
        assert_eq!(r.accepted().len(), 3);
    }
}
