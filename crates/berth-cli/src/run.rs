//! `berth run`: run a command only while holding a lease.

use std::{os::unix::process::ExitStatusExt, process::ExitStatus, time::Duration};

use anyhow::Context;
use berth_client::{AcquireOutcome, ClaimState, Client, ClientError, LeaseHandle};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    process::{Child, Command},
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until, timeout},
};

use crate::{
    args::{LeaseRef, RunArgs},
    exit::Failure,
    wait::{self, WaitOptions},
};

/// Upper bound for the release request once the command has exited.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `berth run` is stopping the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A renew was refused: someone else holds the lease.
    Lost,
    /// No renew succeeded in time; the lease could expire.
    Deadline,
}

/// Runs the command under the lease; returns the exit code for `berth`.
pub(crate) async fn run(client: &Client, args: RunArgs) -> anyhow::Result<u8> {
    let RunArgs {
        lease,
        holder,
        ttl,
        renew_interval,
        kill_grace,
        wait_timeout,
        poll_interval,
        command,
    } = args;
    if kill_grace >= ttl {
        return Err(Failure::Usage(format!(
            "--kill-grace ({}) must be shorter than --ttl ({})",
            humantime::format_duration(kill_grace),
            humantime::format_duration(ttl)
        ))
        .into());
    }
    // The first renew must come before the command would be told to stop.
    let working = ttl - kill_grace;
    let interval = match renew_interval {
        Some(i) if i >= working => {
            return Err(Failure::Usage(format!(
                "--renew-interval ({}) must be shorter than --ttl minus --kill-grace ({})",
                humantime::format_duration(i),
                humantime::format_duration(working)
            ))
            .into());
        }
        Some(i) => i,
        None => (ttl / 3).min(working / 2),
    };
    let holder = match holder {
        Some(h) => h,
        None => nix::unistd::gethostname()
            .context("failed to read the host name; pass --holder")?
            .into_string()
            .map_err(|_| anyhow::anyhow!("the host name is not UTF-8; pass --holder"))?,
    };
    let Some((program, program_args)) = command.split_first() else {
        return Err(Failure::Usage("no command given after --".to_owned()).into());
    };

    let mut sigint = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;

    let builder = client
        .lease(&lease.namespace, &lease.name, &holder, ttl)
        .renew_interval(interval);
    let opts = WaitOptions {
        wait: true,
        timeout: wait_timeout,
        poll: poll_interval,
    };
    let mut handle = loop {
        let outcome = tokio::select! {
            outcome = wait::acquire(&builder, &lease, opts) => outcome?,
            _ = sigint.recv() => return Ok(128 + 2),
            _ = sigterm.recv() => return Ok(128 + 15),
        };
        let handle = match outcome {
            AcquireOutcome::Held(handle) => handle,
            AcquireOutcome::Denied(current) => return Err(wait::denied(&current, &lease).into()),
        };
        // A process frozen between the grant and this point (a paused VM, SIGSTOP) must not
        // start the command on a grant that may already be someone else's: ask again (the
        // server renews it if it is still ours).
        if handle.claim().safe_until > Instant::now() {
            break handle;
        }
        eprintln!(
            "berth: the grant of lease {lease} passed its safe-until deadline before the command \
             started; acquiring again"
        );
    };
    let mut claims = handle.keep_alive();
    let token = handle.claim().token;
    eprintln!("berth: holding lease {lease} as {holder} (fencing token {token})");

    let spawned = Command::new(program)
        .args(program_args)
        .env("BERTH_LEASE_KEY", lease.to_string())
        .env("BERTH_LEASE_HOLDER", &holder)
        .env("BERTH_FENCING_TOKEN", token.to_string())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            release(client, handle, &lease, ttl).await;
            return Err(anyhow::Error::new(e)
                .context(format!("failed to start {}", program.to_string_lossy())));
        }
    };
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);

    let mut stop: Option<Stop> = None;
    let mut kill_at: Option<Instant> = None;
    let status = loop {
        let claim = claims.borrow_and_update().clone();
        if stop.is_none() {
            match claim.state {
                ClaimState::Held | ClaimState::Released => {}
                ClaimState::Lost => {
                    eprintln!(
                        "berth: lease {lease} is no longer held by {holder}; stopping the command"
                    );
                    stop = Some(Stop::Lost);
                    send(pid, Signal::SIGTERM);
                    kill_at = Some((Instant::now() + kill_grace).min(claim.safe_until));
                }
                ClaimState::Expired => {
                    eprintln!(
                        "berth: lease {lease} could not be renewed in time; killing the command"
                    );
                    stop = Some(Stop::Deadline);
                    kill(&mut child);
                }
            }
        }
        let term_at = claim
            .safe_until
            .checked_sub(kill_grace)
            .unwrap_or_else(Instant::now);
        let arm_term = stop.is_none() && !kill_grace.is_zero();
        let kill_deadline = kill_at.or((stop.is_none()).then_some(claim.safe_until));

        tokio::select! {
            status = child.wait() => break status.context("failed to wait for the command")?,
            changed = claims.changed() => {
                // The handle owns a sender, so the channel cannot close while we hold it.
                if changed.is_err() {
                    tracing::debug!("claim channel closed");
                }
            }
            () = sleep_until(term_at), if arm_term => {
                eprintln!(
                    "berth: lease {lease} was not renewed in time; stopping the command \
                     (SIGTERM, SIGKILL in {})",
                    humantime::format_duration(kill_grace)
                );
                stop = Some(Stop::Deadline);
                send(pid, Signal::SIGTERM);
                kill_at = Some(claim.safe_until);
            }
            () = sleep_until(kill_deadline.unwrap_or(claim.safe_until)), if kill_deadline.is_some() => {
                stop.get_or_insert(Stop::Deadline);
                kill(&mut child);
                kill_at = None;
            }
            _ = sigint.recv() => send(pid, Signal::SIGINT),
            _ = sigterm.recv() => send(pid, Signal::SIGTERM),
        }
    };

    release(client, handle, &lease, ttl).await;
    match stop {
        Some(Stop::Lost) => Err(Failure::LeaseLost(format!(
            "lease {lease} was lost (renew refused); the command was stopped"
        ))
        .into()),
        Some(Stop::Deadline) => Err(Failure::LeaseLost(format!(
            "lease {lease} could not be renewed before it could expire; the command was stopped"
        ))
        .into()),
        None => Ok(exit_code(status)),
    }
}

/// The shell convention: the exit code, or 128 + N for death by signal N.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    status
        .signal()
        .and_then(|sig| u8::try_from(128 + sig).ok())
        .unwrap_or(1)
}

fn send(pid: Option<Pid>, sig: Signal) {
    if let Some(pid) = pid
        && let Err(e) = nix::sys::signal::kill(pid, sig)
        && e != nix::errno::Errno::ESRCH
    {
        eprintln!("berth: failed to send {sig} to the command: {e}");
    }
}

fn kill(child: &mut Child) {
    if let Err(e) = child.start_kill() {
        eprintln!("berth: failed to kill the command: {e}");
    }
}

/// Releases the lease, warning (not failing) when that is not possible: the TTL covers it.
///
/// A release that got no answer may still reach the server later. If this holder then ran
/// again at once and acquired the lease while the old grant was live, it would get that same
/// grant back (acquire by the holder renews it), and the late release would end it under the
/// new run. So an unanswered release is sent again until it is answered or until the grant has
/// surely expired on the server (one TTL after the first attempt: renewals have stopped), after
/// which a new acquire gets a new token that the old release no longer matches.
async fn release(client: &Client, handle: LeaseHandle, lease: &LeaseRef, ttl: Duration) {
    let (holder, token) = (handle.holder().to_owned(), handle.claim().token);
    let horizon = Instant::now() + ttl;
    let first = match timeout(RELEASE_TIMEOUT, handle.release()).await {
        Ok(Ok(()) | Err(ClientError::Conflict { .. })) => return,
        Ok(Err(e)) => format!("{:#}", anyhow::Error::new(e)),
        Err(_) => "timed out".to_owned(),
    };
    eprintln!(
        "berth: warning: failed to release lease {lease}: {first}; retrying until answered or \
         until the grant has expired (at most {})",
        humantime::format_duration(ttl)
    );
    let mut backoff = Duration::from_millis(200);
    loop {
        let left = horizon.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "berth: warning: lease {lease} was not released; it has expired on its own by now"
            );
            return;
        }
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        let attempt = client.release(&lease.namespace, &lease.name, &holder, token);
        if let Ok(Ok(()) | Err(ClientError::Conflict { .. })) =
            timeout(RELEASE_TIMEOUT.min(left), attempt).await
        {
            eprintln!("berth: released lease {lease}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
