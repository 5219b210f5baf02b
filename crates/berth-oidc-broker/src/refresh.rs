//! The refresh loop and its schedule.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::admin::Status;
use crate::output::write_token;
use crate::token::TokenClient;

/// The loop's timing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// `--refresh-skew`: refresh this long before expiry.
    pub refresh_skew: Duration,
    /// `--min-refresh-interval`: shortest sleep after success; first retry delay.
    pub min_refresh: Duration,
    /// `--max-retry-interval`: cap of the exponential backoff.
    pub max_retry: Duration,
}

impl Schedule {
    /// Sleep after a successful fetch: `max(expires_in − skew, min_refresh)`; unknown expiry
    /// sleeps `min_refresh`.
    pub fn after_success(&self, expires_in: Option<Duration>) -> Duration {
        expires_in
            .map_or(Duration::ZERO, |e| e.saturating_sub(self.refresh_skew))
            .max(self.min_refresh)
    }

    /// Sleep after the `failures`-th consecutive failure (1-based): `min_refresh` doubled each
    /// time, capped at `max_retry`.
    pub fn after_failure(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.min_refresh
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_retry)
    }
}

/// Fetches and writes tokens until `stop` turns true.
pub async fn run(
    client: TokenClient,
    output: PathBuf,
    schedule: Schedule,
    status: Arc<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = match client.fetch().await {
            Ok(token) => write_token(&output, &token.access_token).map(|()| token.expires_in),
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        let sleep = match result {
            Ok(expires_in) => {
                failures = 0;
                status.record_success(started, expires_in, elapsed);
                let sleep = schedule.after_success(expires_in);
                tracing::info!(
                    path = %output.display(),
                    expires_in = ?expires_in.map(|d| d.as_secs()),
                    next_refresh_secs = sleep.as_secs(),
                    "token written"
                );
                sleep
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                status.record_failure(elapsed);
                let sleep = schedule.after_failure(failures);
                tracing::warn!(
                    error = format!("{e:#}"),
                    failures,
                    retry_in_secs = sleep.as_secs_f64(),
                    "token refresh failed; keeping the last good token file"
                );
                sleep
            }
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(skew: u64, min: u64, max: u64) -> Schedule {
        Schedule {
            refresh_skew: Duration::from_secs(skew),
            min_refresh: Duration::from_secs(min),
            max_retry: Duration::from_secs(max),
        }
    }

    #[test]
    fn success_sleeps_until_expiry_minus_skew_at_least_min() {
        let sch = s(60, 30, 300);
        assert_eq!(
            sch.after_success(Some(Duration::from_secs(3600))),
            Duration::from_secs(3540)
        );
        assert_eq!(
            sch.after_success(Some(Duration::from_secs(70))),
            Duration::from_secs(30)
        );
        assert_eq!(
            sch.after_success(Some(Duration::from_secs(10))),
            Duration::from_secs(30)
        );
        assert_eq!(sch.after_success(None), Duration::from_secs(30));
        assert_eq!(
            s(0, 1, 5).after_success(Some(Duration::from_secs(20))),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn failures_back_off_exponentially_to_the_cap() {
        let sch = s(60, 30, 300);
        let got: Vec<u64> = (1..=7).map(|n| sch.after_failure(n).as_secs()).collect();
        assert_eq!(got, [30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(sch.after_failure(u32::MAX), Duration::from_secs(300));
        assert_eq!(sch.after_failure(0), Duration::from_secs(30));
    }
}
