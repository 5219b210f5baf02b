//! Latency samples and their summary.

use std::fmt;
use std::time::Duration;

/// A run's samples.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) errors: u64,
}

impl Samples {
    pub(crate) fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
    }

    pub(crate) fn summary(mut self, elapsed: Duration, ops_per_sample: u64) -> Summary {
        self.latencies.sort_unstable();
        let n = self.latencies.len();
        let pick = |q: f64| {
            if n == 0 {
                return Duration::ZERO;
            }
            // Nearest rank.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            self.latencies[i]
        };
        #[allow(clippy::cast_precision_loss)]
        let throughput = (n as u64 * ops_per_sample) as f64 / elapsed.as_secs_f64().max(1e-9);
        Summary {
            ops: n as u64 * ops_per_sample,
            errors: self.errors,
            throughput,
            p50: pick(0.50),
            p99: pick(0.99),
        }
    }
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) throughput: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>10.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} ops, {} errors)",
            self.throughput,
            ms(self.p50),
            ms(self.p99),
            self.ops,
            self.errors
        )
    }
}

/// A markdown table row for `docs/benchmarks.md`.
pub(crate) fn row(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

pub(crate) fn fmt_ms(d: Duration) -> String {
    format!("{:.3}", ms(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let s = Samples {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            errors: 2,
        };
        let sum = s.summary(Duration::from_secs(2), 1);
        assert_eq!(sum.p50, Duration::from_millis(50));
        assert_eq!(sum.p99, Duration::from_millis(99));
        assert_eq!(sum.ops, 100);
        assert_eq!(sum.errors, 2);
        assert!((sum.throughput - 50.0).abs() < 1e-9);
        let empty = Samples::default().summary(Duration::from_secs(1), 1);
        assert_eq!((empty.ops, empty.p99), (0, Duration::ZERO));
    }
}
