//! [`KubeClock`]: a [`Clock`] that follows the kube-apiserver's clock.
//!
//! Every API server replica that shares a coordination namespace judges expiry against the
//! same time source, the coordination cluster's API server, instead of its own wall clock
//! (SPEC §2 "Time"; `docs/adr/0004-kubernetes-store.md`).
//!
//! The server's time is read from the `Date` header of `GET /version`, which has one-second
//! resolution. Calibration polls until the header ticks over to the next second: the tick
//! happened between the send of the previous probe and the receipt of the current one, so the
//! server's time is pinned to within that window (tens of milliseconds on a LAN). The anchor
//! is placed at the *latest* possible local instant of the tick, so at calibration the
//! estimate is not ahead of the server and lags it by at most [`KubeClock::uncertainty`].
//! Between calibrations the estimate advances on the local monotonic clock; a fresh
//! calibration runs in the background every refresh interval.
//!
//! The local monotonic clock may run a little fast or slow against the server's. Readings
//! allow [`DRIFT_ALLOWANCE_PPM`] both ways: `earliest` is the estimate minus the allowance since
//! calibration and `latest` the estimate plus the calibration window plus the allowance, so a
//! replica whose clock gains up to 1 ms per second cannot free a lease early and one whose clock
//! loses as much cannot stamp an expiry early. A clock further off than that is outside the
//! assumption (`docs/safety.md`, "Kubernetes, clocks, `berth run`"). Neither end of a reading
//! ever goes backwards.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::{Clock, Reading, StoreError};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::BACKEND;

/// How often the probe is repeated while waiting for the `Date` header to tick.
const POLL: Duration = Duration::from_millis(20);
/// Give up waiting for a tick after this long (a tick comes every second).
const TICK_WAIT: Duration = Duration::from_millis(1_500);
/// How far the local monotonic clock may gain or lose against the API server's clock, in
/// parts per million (1,000 ppm = 1 ms per second), applied to both ends of a reading.
pub const DRIFT_ALLOWANCE_PPM: u32 = 1_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// Server time at `local` (a lower bound).
    server: OffsetDateTime,
    local: Instant,
    /// How far the estimate may lag the server.
    uncertainty: Duration,
}

#[derive(Debug, Default)]
struct State {
    anchor: Option<Anchor>,
    /// The previous reading; neither end of the next one may be earlier.
    last: Option<Reading>,
}

struct Inner {
    client: kube::Client,
    timeout: Duration,
    refresh: Duration,
    state: Mutex<State>,
    refreshing: AtomicBool,
}

/// A clock that follows the kube-apiserver's clock. Cheap to clone; clones share the anchor.
#[derive(Clone)]
pub struct KubeClock {
    inner: Arc<Inner>,
}

impl fmt::Debug for KubeClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClock")
            .field("refresh", &self.inner.refresh)
            .field("uncertainty", &self.uncertainty())
            .finish_non_exhaustive()
    }
}

fn unavailable(source: impl Into<berth_core::BoxError>) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        source: source.into(),
    }
}

/// Parses an HTTP `Date` header (IMF-fixdate, RFC 9110 §5.6.7).
pub(crate) fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    PrimitiveDateTime::parse(s.trim(), fmt)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

fn add(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

fn sub(t: OffsetDateTime, d: Duration) -> OffsetDateTime {
    t.saturating_sub(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

/// The drift allowance after `age` on the local clock.
fn drift(age: Duration) -> Duration {
    age.saturating_mul(DRIFT_ALLOWANCE_PPM) / 1_000_000
}

/// The reading `age` after `anchor` was taken, never earlier (at either end) than `last`.
///
/// The estimate is `anchor.server + age`. If the local clock ran at most
/// [`DRIFT_ALLOWANCE_PPM`] fast or slow since the anchor, the server's true time lies in
/// `estimate - drift ..= estimate + uncertainty + drift`. Both ends are truncated to
/// microseconds: `earliest` rounds down (still no later than the truth), `latest` gets one
/// microsecond more before rounding down (still no earlier).
fn reading_at(anchor: &Anchor, age: Duration, last: Option<Reading>) -> Reading {
    let estimate = add(anchor.server, age);
    let drift = drift(age);
    let mut earliest = berth_core::clock::truncate_micros(sub(estimate, drift));
    let spread = anchor
        .uncertainty
        .saturating_add(drift)
        .saturating_add(Duration::from_micros(1));
    let mut latest = berth_core::clock::truncate_micros(add(estimate, spread));
    if let Some(last) = last {
        earliest = earliest.max(last.earliest);
        latest = latest.max(last.latest);
    }
    Reading {
        earliest,
        latest: latest.max(earliest),
    }
}

impl KubeClock {
    /// A clock reading `client`'s API server, each probe bounded by `timeout`, recalibrated
    /// every `refresh`. No request is made until the first [`Clock::now`] or
    /// [`Self::calibrate`].
    pub fn new(client: kube::Client, timeout: Duration, refresh: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                timeout,
                refresh,
                state: Mutex::new(State::default()),
                refreshing: AtomicBool::new(false),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How far readings may lag the API server's clock, once calibrated.
    pub fn uncertainty(&self) -> Option<Duration> {
        self.lock().anchor.map(|a| a.uncertainty)
    }

    /// One probe: the server's `Date` header, truncated to the second.
    async fn server_date(&self) -> Result<OffsetDateTime, StoreError> {
        let req = http::Request::get("/version")
            .body(Vec::new())
            .map_err(unavailable)?
            .map(kube::client::Body::from);
        let resp = tokio::time::timeout(self.inner.timeout, self.inner.client.send(req))
            .await
            .map_err(|_| unavailable("clock probe timed out"))?
            .map_err(unavailable)?;
        let date = resp
            .headers()
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .ok_or_else(|| StoreError::Backend {
                backend: BACKEND,
                source: "the API server sent no parsable Date header".into(),
            })?;
        Ok(date)
    }

    /// Measures the offset to the API server's clock now and stores it.
    ///
    /// Takes up to about one second (it waits for the server's `Date` to tick).
    ///
    /// # Errors
    /// `Unavailable` when the API server cannot be reached; `Backend` when it sends no `Date`.
    pub async fn calibrate(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let mut prev: Option<(Instant, OffsetDateTime)> = None;
        let anchor = loop {
            let send = Instant::now();
            let date = self.server_date().await?;
            let recv = Instant::now();
            if let Some((prev_send, prev_date)) = prev
                && date > prev_date
            {
                // The server's clock reached `date` after it answered the previous probe
                // (sent at `prev_send`) and before it answered this one (received at `recv`).
                // Placing the tick at `recv` keeps the estimate at or behind the server.
                break Anchor {
                    server: date,
                    local: recv,
                    uncertainty: recv - prev_send,
                };
            }
            if start.elapsed() > TICK_WAIT {
                // No tick seen (a stalled server): the server was at least at `date` by `recv`.
                break Anchor {
                    server: date,
                    local: recv,
                    uncertainty: Duration::from_secs(1) + (recv - send),
                };
            }
            prev = Some((send, date));
            tokio::time::sleep(POLL).await;
        };
        tracing::debug!(uncertainty = ?anchor.uncertainty, "calibrated against the kube-apiserver clock");
        self.lock().anchor = Some(anchor);
        Ok(anchor.uncertainty)
    }

    fn spawn_refresh(&self) {
        if self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.calibrate().await {
                tracing::warn!(error = %e, "kube-apiserver clock refresh failed; keeping the previous offset");
            }
            this.inner.refreshing.store(false, Ordering::Release);
        });
    }

    /// The current anchor, recalibrating in the background when it is older than the refresh
    /// interval and inline when it is far too old (or missing).
    async fn anchor(&self) -> Result<Anchor, StoreError> {
        let anchor = self.lock().anchor;
        match anchor {
            Some(a) => {
                let age = a.local.elapsed();
                if age > self.inner.refresh.saturating_mul(10) {
                    // Far too old to trust (the API server has been unreachable for long):
                    // calibrate inline, and fail like the store would.
                    self.calibrate().await?;
                } else if age > self.inner.refresh {
                    self.spawn_refresh();
                }
                Ok(self.lock().anchor.unwrap_or(a))
            }
            None => {
                self.calibrate().await?;
                self.lock()
                    .anchor
                    .ok_or_else(|| unavailable("kube-apiserver clock is not calibrated"))
            }
        }
    }
}

#[async_trait::async_trait]
impl Clock for KubeClock {
    /// The `earliest` end of [`KubeClock::read`]: no later than the API server's clock while
    /// the local clock stays within the drift allowance.
    async fn now(&self) -> Result<OffsetDateTime, StoreError> {
        Ok(self.read().await?.earliest)
    }

    /// `earliest` is the estimate minus a drift allowance of [`DRIFT_ALLOWANCE_PPM`] of the
    /// time since calibration (a local clock that runs fast cannot free a lease early);
    /// `latest` adds the calibration window plus the same allowance (a replica whose estimate
    /// lags, or whose clock runs slow, cannot stamp a lease that another replica would free
    /// before the holder's deadline). Neither end goes backwards.
    async fn read(&self) -> Result<Reading, StoreError> {
        let anchor = self.anchor().await?;
        let mut state = self.lock();
        let reading = reading_at(&anchor, anchor.local.elapsed(), state.last);
        state.last = Some(reading);
        Ok(reading)
    }

    fn name(&self) -> &'static str {
        "kube-apiserver"
    }

    fn is_monotonic(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_imf_fixdate() {
        let t = parse_http_date("Sat, 21 Nov 2026 17:43:54 GMT").unwrap();
        assert_eq!(t, time::macros::datetime!(2026-11-21 17:43:54 UTC));
        assert!(parse_http_date("Sat, 21 Nov 2026 17:43:54 +0100").is_none());
        assert!(parse_http_date("garbage").is_none());
    }

    const T0: OffsetDateTime = time::macros::datetime!(2030-01-01 00:00:00 UTC);

    fn anchor(uncertainty: Duration) -> Anchor {
        Anchor {
            server: T0,
            local: Instant::now(),
            uncertainty,
        }
    }

    /// The server's true time after `age` on a local clock that runs `rate` times as fast as
    /// the server's, when the server was at `T0 + offset` at the anchor.
    fn truth(offset: Duration, age: Duration, rate: f64) -> OffsetDateTime {
        add(T0 + offset, age.div_f64(rate))
    }

    #[test]
    fn readings_bracket_the_server_while_drift_is_within_the_allowance() {
        let u = Duration::from_millis(30);
        // Up to 1 ms per second fast or slow; the server anywhere in the calibration window.
        for rate in [1.0 / 1.000_9, 0.999_5, 1.0, 1.000_5, 1.000_9] {
            for offset in [Duration::ZERO, u / 2, u] {
                for secs in [0, 1, 10, 60, 300, 600, 3_600] {
                    let age = Duration::from_secs(secs) + Duration::from_nanos(123_456);
                    let r = reading_at(&anchor(u), age, None);
                    let t = truth(offset, age, rate);
                    assert!(r.earliest <= t, "rate {rate} age {age:?}: {r:?} vs {t}");
                    assert!(r.latest >= t, "rate {rate} age {age:?}: {r:?} vs {t}");
                    assert_eq!(r.earliest.nanosecond() % 1_000, 0);
                    assert_eq!(r.latest.nanosecond() % 1_000, 0);
                }
            }
        }
    }

    #[test]
    fn a_fast_local_clock_within_the_allowance_does_not_move_earliest_ahead() {
        // 0.5 ms per second fast, 60 s after calibration: the bare estimate is 30 ms ahead of
        // the server (a lease would be freed 30 ms early), the reading's earliest is not.
        let age = Duration::from_secs(60);
        let t = truth(Duration::ZERO, age, 1.000_5);
        let estimate = add(T0, age);
        assert!(estimate - t > time::Duration::milliseconds(29));
        let r = reading_at(&anchor(Duration::ZERO), age, None);
        assert!(r.earliest <= t, "{r:?} vs {t}");
        assert_eq!(estimate - r.earliest, time::Duration::milliseconds(60));
        assert_eq!(r.latest - estimate, time::Duration::microseconds(60_001));
    }

    #[test]
    fn a_local_clock_far_outside_the_allowance_runs_ahead() {
        // The documented limit: a clock running at x1.5 gains 3.3 s on the server in 10 s.
        let age = Duration::from_secs(10);
        let t = truth(Duration::ZERO, age, 1.5);
        let r = reading_at(&anchor(Duration::ZERO), age, None);
        assert!(r.earliest - t > time::Duration::seconds(3), "{r:?} vs {t}");
    }

    #[test]
    fn readings_never_go_backwards_across_a_recalibration() {
        let u = Duration::from_millis(40);
        let first = reading_at(&anchor(u), Duration::from_secs(60), None);
        // A recalibration that places the server 100 ms behind the old estimate with a
        // narrower window: both ends would step back.
        let later = Anchor {
            server: T0 + Duration::from_millis(59_900),
            local: Instant::now(),
            uncertainty: Duration::from_millis(5),
        };
        let fresh = reading_at(&later, Duration::ZERO, None);
        assert!(fresh.earliest < first.earliest && fresh.latest < first.latest);
        let floored = reading_at(&later, Duration::ZERO, Some(first));
        assert_eq!(floored, first);
        // Once the new estimate catches up, it takes over again.
        let caught_up = reading_at(&later, Duration::from_secs(1), Some(first));
        assert!(caught_up.earliest > first.earliest, "{caught_up:?}");
        assert!(caught_up.latest >= first.latest);
        // A step forward is taken as is.
        let ahead = Anchor {
            server: T0 + Duration::from_secs(61),
            ..later
        };
        let stepped = reading_at(&ahead, Duration::ZERO, Some(first));
        assert_eq!(stepped.earliest, T0 + Duration::from_secs(61));
    }

    #[test]
    fn successive_readings_of_one_anchor_are_monotonic_at_both_ends() {
        let a = anchor(Duration::from_millis(10));
        let mut last = reading_at(&a, Duration::ZERO, None);
        assert!(last.latest >= last.earliest);
        for ms in (0..5_000).step_by(7) {
            let r = reading_at(&a, Duration::from_millis(ms), Some(last));
            assert!(r.earliest >= last.earliest && r.latest >= last.latest);
            assert!(r.latest > r.earliest);
            last = r;
        }
    }
}
