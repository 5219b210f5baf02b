//! The time source that judges expiry.
//!
//! Every expiry decision of a store is taken against one [`Clock`] (SPEC §2 "Time"): the
//! process monotonic clock for `mem` ([`SystemClock`]), and for shared stores a clock the store
//! crate provides (for SQL, the database's own clock). Tests use [`ManualClock`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::store::StoreError;

/// A source of "now" for lease decisions.
#[async_trait::async_trait]
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time, in UTC, truncated to microseconds (what every store keeps).
    ///
    /// # Guarantees
    /// Successive calls never go backwards for clocks that say so in [`Clock::is_monotonic`].
    ///
    /// # Errors
    /// Clocks backed by a remote service fail with `Unavailable` when it cannot be reached.
    async fn now(&self) -> Result<OffsetDateTime, StoreError>;

    /// The current time as an interval known to contain the true time of the clock's source:
    /// `earliest` is what [`Clock::now`] returns, `latest` adds the clock's uncertainty.
    ///
    /// [`crate::LeaseService`] judges expiry at `earliest` (a lease is never freed early) and
    /// stamps writes with `latest` (a stored expiry is never earlier than the true one), so a
    /// clock that only *estimates* its source (e.g. a remote server's clock) cannot shorten a
    /// holder's grant. Exact clocks keep the default, where both ends are `now()`.
    ///
    /// # Errors
    /// As [`Clock::now`].
    async fn read(&self) -> Result<Reading, StoreError> {
        let now = self.now().await?;
        Ok(Reading {
            earliest: now,
            latest: now,
        })
    }

    /// A short name for logs: `monotonic`, `manual`, `database`, ….
    fn name(&self) -> &'static str;

    /// When this is the clock of a store that can read it together with a record in one call
    /// ([`crate::LeaseStore::get_with_clock`]): that store's [`crate::LeaseStore::clock_source`].
    /// [`crate::LeaseService`] then reads both at once and uses the reading as exact (both
    /// ends of the interval equal), so only exact clocks may return `Some`. `None` (the
    /// default) otherwise.
    fn store_source(&self) -> Option<u64> {
        None
    }

    /// Whether successive readings never go backwards.
    fn is_monotonic(&self) -> bool {
        false
    }
}

/// A shared clock.
pub type DynClock = Arc<dyn Clock>;

/// A clock reading as an interval: the true time lies in `earliest..=latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// No later than the true time.
    pub earliest: OffsetDateTime,
    /// No earlier than the true time.
    pub latest: OffsetDateTime,
}

/// Wall time that never goes backwards: the wall clock read once at start-up, advanced by the
/// process monotonic clock. A wall-clock step (NTP, an operator) cannot expire or extend leases.
#[derive(Debug, Clone)]
pub struct SystemClock {
    wall: OffsetDateTime,
    mono: Instant,
}

impl SystemClock {
    /// Anchors the clock to the current wall time.
    #[allow(clippy::disallowed_methods)] // the one place that reads the wall clock
    pub fn new() -> Self {
        Self {
            wall: OffsetDateTime::now_utc(),
            mono: Instant::now(),
        }
    }

    /// The current time without the `Result` wrapper.
    pub fn now_utc(&self) -> OffsetDateTime {
        let elapsed = time::Duration::try_from(self.mono.elapsed()).unwrap_or(time::Duration::MAX);
        truncate_micros(self.wall.saturating_add(elapsed))
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Clock for SystemClock {
    async fn now(&self) -> Result<OffsetDateTime, StoreError> {
        Ok(self.now_utc())
    }

    fn name(&self) -> &'static str {
        "monotonic"
    }

    fn is_monotonic(&self) -> bool {
        true
    }
}

/// A clock that moves only when told to. For tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<OffsetDateTime>>,
    uncertainty: Duration,
}

impl ManualClock {
    /// A clock standing at `start` (truncated to microseconds).
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(truncate_micros(start))),
            uncertainty: Duration::ZERO,
        }
    }

    /// The same clock, but its readings claim the true time may be up to `uncertainty` later
    /// than [`ManualClock::current`] (like a clock that estimates a remote source).
    #[must_use]
    pub fn with_uncertainty(mut self, uncertainty: Duration) -> Self {
        self.uncertainty = uncertainty;
        self
    }

    /// A clock standing at 2030-01-01T00:00:00Z.
    pub fn at_epoch() -> Self {
        Self::new(time::macros::datetime!(2030-01-01 00:00:00 UTC))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = truncate_micros(
            now.saturating_add(time::Duration::try_from(by).unwrap_or(time::Duration::MAX)),
        );
    }

    /// The time the clock shows.
    pub fn current(&self) -> OffsetDateTime {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Clock for ManualClock {
    async fn now(&self) -> Result<OffsetDateTime, StoreError> {
        Ok(self.current())
    }

    async fn read(&self) -> Result<Reading, StoreError> {
        let earliest = self.current();
        let spread = time::Duration::try_from(self.uncertainty).unwrap_or(time::Duration::MAX);
        Ok(Reading {
            earliest,
            latest: earliest.saturating_add(spread),
        })
    }

    fn name(&self) -> &'static str {
        "manual"
    }

    fn is_monotonic(&self) -> bool {
        true
    }
}

/// Drops sub-microsecond precision, which no store keeps.
pub fn truncate_micros(t: OffsetDateTime) -> OffsetDateTime {
    let micros = t.nanosecond() / 1_000 * 1_000;
    t.replace_nanosecond(micros).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn system_clock_never_goes_backwards() {
        let c = SystemClock::new();
        let mut last = c.now().await.unwrap();
        for _ in 0..1000 {
            let now = c.now().await.unwrap();
            assert!(now >= last);
            assert_eq!(now.nanosecond() % 1000, 0);
            last = now;
        }
    }

    #[tokio::test]
    async fn manual_clock_moves_when_told() {
        let c = ManualClock::at_epoch();
        let t0 = c.now().await.unwrap();
        c.advance(Duration::from_millis(1500));
        assert_eq!(
            c.now().await.unwrap() - t0,
            time::Duration::milliseconds(1500)
        );
    }
}
