//! Clock faults with libfaketime (Debian package `faketime`): a replica process started with
//! `LD_PRELOAD=<libfaketime.so.1>` and `FAKETIME="<offset> x<rate>"` sees its wall clock
//! shifted by the offset and both its wall and its monotonic clock (`CLOCK_MONOTONIC`, which
//! Rust's `Instant` reads) running at the rate; its sleeps and timer waits (`epoll_wait`,
//! `nanosleep`) are scaled to match, so the process behaves as if its oscillator ran fast or
//! slow. [`probe`] checks that on a Rust binary (`berth-chaos-child` in probe mode) before a
//! run relies on it.
//!
//! The offset and rate are fixed at process start (a restarted replica starts over from the
//! real time plus the offset). A clock *step* in the middle of a run would need
//! `FAKETIME_TIMESTAMP_FILE` (re-read only every few seconds unless `FAKETIME_NO_CACHE=1`) and
//! `FAKETIME_DONT_FAKE_MONOTONIC=1` (a real NTP step moves only the wall clock); the runs here
//! do not use it.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

/// The environment variable naming `libfaketime.so.1` (`hack/chaos-test-env.sh` exports it).
pub const LIB_ENV: &str = "BERTH_TEST_LIBFAKETIME";

/// A fake clock for one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FakeTime {
    /// Wall-clock offset from the real time, in seconds.
    pub offset_secs: i64,
    /// Rate of both clocks against the real ones (1.0: real speed).
    pub rate: f64,
}

impl FakeTime {
    /// Shifted by `offset_secs`, at real speed.
    pub fn skew(offset_secs: i64) -> Self {
        Self {
            offset_secs,
            rate: 1.0,
        }
    }

    /// Shifted by `offset_secs`, running at `rate`.
    pub fn new(offset_secs: i64, rate: f64) -> Self {
        Self { offset_secs, rate }
    }

    /// The `FAKETIME` value, e.g. `+30s x1.5`.
    pub fn spec(&self) -> String {
        format!("{:+}s x{}", self.offset_secs, self.rate)
    }

    /// The environment that applies it to a process.
    pub fn env(&self, lib: &Path) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".to_owned(), lib.display().to_string()),
            ("FAKETIME".to_owned(), self.spec()),
        ]
    }
}

/// What [`probe`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probed {
    /// The process's wall clock minus ours at its start, in seconds.
    pub offset_secs: f64,
    /// Its wall-clock seconds per real second.
    pub wall_rate: f64,
    /// Its monotonic (`Instant`) seconds per real second.
    pub mono_rate: f64,
}

fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Runs `probe_bin` (`berth-chaos-child` with `BERTH_CHAOS_CLOCK_PROBE=1`) under `fake` and
/// measures its clocks against ours, and fails unless the offset is within a second and both
/// rates within 10 % of what `fake` asks for.
///
/// # Errors
///
/// The probe could not run, or libfaketime did not take effect.
#[allow(clippy::disallowed_methods)] // comparing wall clocks is the point here
pub fn probe(lib: &Path, fake: FakeTime, probe_bin: &Path) -> Result<Probed> {
    let ours = std::time::SystemTime::now();
    let mut child = Command::new(probe_bin)
        .envs(fake.env(lib))
        .env("BERTH_CHAOS_CLOCK_PROBE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("spawn {}", probe_bin.display()))?;
    let stdout = child.stdout.take().context("probe stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut read = || -> Result<(Instant, Vec<f64>)> {
        let line = lines.next().context("probe ended early")??;
        let at = Instant::now();
        let nums = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<f64>, _>>()
            .context("probe output")?;
        Ok((at, nums))
    };
    let (t1, first) = read()?;
    let (t2, second) = read()?;
    let _ = child.wait();
    let (Some(&wall1), Some(&wall2), Some(&mono)) = (first.first(), second.first(), second.get(1))
    else {
        bail!("probe output has too few numbers");
    };
    let real = (t2 - t1).as_secs_f64();
    let probed = Probed {
        offset_secs: wall1 - unix_secs(ours),
        wall_rate: (wall2 - wall1) / real,
        mono_rate: mono / real,
    };
    let offset_ok = (probed.offset_secs - fake.offset_secs as f64).abs() < 1.0;
    let rate_ok = |r: f64| (r / fake.rate - 1.0).abs() < 0.1;
    if !offset_ok || !rate_ok(probed.wall_rate) || !rate_ok(probed.mono_rate) {
        bail!(
            "libfaketime did not apply FAKETIME={:?} to a Rust binary: measured {probed:?}",
            fake.spec()
        );
    }
    Ok(probed)
}
