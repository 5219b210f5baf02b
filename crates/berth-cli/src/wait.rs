//! Acquiring, optionally waiting with a progress line on stderr.

use std::{
    io::{IsTerminal, Write},
    time::Duration,
};

use berth_api::LeaseResponse;
use berth_client::{AcquireOutcome, LeaseBuilder};
use tokio::time::{Instant, sleep, timeout_at};

use crate::{args::LeaseRef, exit::Failure};

/// How [`acquire`] treats a lease held elsewhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitOptions {
    pub(crate) wait: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) poll: Duration,
}

/// Refresh period of the spinner.
const TICK: Duration = Duration::from_millis(100);

/// One attempt, or with `wait` attempts every `poll` until granted (retryable errors are
/// retried too). A wait that times out is [`Failure::HeldElsewhere`].
pub(crate) async fn acquire(
    builder: &LeaseBuilder,
    lease: &LeaseRef,
    opts: WaitOptions,
) -> anyhow::Result<AcquireOutcome> {
    let mut progress = Progress::new(lease);
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let timed_out = |status: &str| {
        let waited = opts.timeout.unwrap_or_default();
        Failure::HeldElsewhere(format!(
            "timed out after {} waiting for lease {lease} ({status})",
            humantime::format_duration(waited)
        ))
    };
    let mut status = String::from("not tried yet");
    loop {
        let attempt = builder.acquire();
        let result = match deadline {
            Some(d) => match timeout_at(d, attempt).await {
                Ok(r) => r,
                Err(_) => {
                    progress.finish();
                    return Err(timed_out(&status).into());
                }
            },
            None => attempt.await,
        };
        match result {
            Ok(AcquireOutcome::Held(handle)) => {
                progress.finish();
                return Ok(AcquireOutcome::Held(handle));
            }
            Ok(AcquireOutcome::Denied(current)) if !opts.wait => {
                return Ok(AcquireOutcome::Denied(current));
            }
            Ok(AcquireOutcome::Denied(current)) => status = held_by(&current),
            Err(e) if opts.wait && e.is_retryable() => status = format!("retrying: {e}"),
            Err(e) => {
                progress.finish();
                return Err(e.into());
            }
        }
        progress.update(&status);

        let next = Instant::now() + opts.poll;
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                progress.finish();
                return Err(timed_out(&status).into());
            }
            if now >= next {
                break;
            }
            progress.tick();
            let mut nap = TICK.min(next - now);
            if let Some(d) = deadline {
                nap = nap.min(d - now);
            }
            sleep(nap).await;
        }
    }
}

/// The error for an acquire someone else won.
pub(crate) fn denied(current: &LeaseResponse, lease: &LeaseRef) -> Failure {
    Failure::HeldElsewhere(format!("lease {lease} is {}", held_by(current)))
}

pub(crate) fn held_by(current: &LeaseResponse) -> String {
    if current.holder.is_empty() {
        "not available".to_owned()
    } else {
        format!(
            "held by {} with fencing token {}",
            current.holder, current.fencing_token
        )
    }
}

/// A spinner on a terminal; on anything else one line per change of status.
struct Progress {
    label: String,
    tty: bool,
    started: std::time::Instant,
    frame: usize,
    status: String,
    drawn: bool,
}

const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Progress {
    fn new(lease: &LeaseRef) -> Self {
        Self {
            label: format!("waiting for lease {lease}"),
            tty: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            frame: 0,
            status: String::new(),
            drawn: false,
        }
    }

    fn update(&mut self, status: &str) {
        if status == self.status {
            return;
        }
        status.clone_into(&mut self.status);
        if self.tty {
            self.tick();
        } else {
            eprintln!("{} ({status})", self.label);
        }
    }

    fn tick(&mut self) {
        if !self.tty {
            return;
        }
        self.frame = (self.frame + 1) % FRAMES.len();
        let mut err = std::io::stderr().lock();
        // Best effort: a broken stderr must not stop the wait.
        let _ = write!(
            err,
            "\r\x1b[2K{} {} ({}) {}s",
            FRAMES[self.frame],
            self.label,
            self.status,
            self.started.elapsed().as_secs()
        );
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}
