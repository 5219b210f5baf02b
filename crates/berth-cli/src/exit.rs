//! Exit codes, decided once in `main`.

use std::process::ExitCode;

use berth_client::ClientError;

/// Success.
pub(crate) const OK: u8 = 0;
/// Any error without a more specific code.
pub(crate) const ERROR: u8 = 1;
/// Usage error (clap's own code).
pub(crate) const USAGE: u8 = 2;
/// The lease is held by someone else: denied acquire, refused renew, release conflict, or a
/// wait that timed out.
pub(crate) const HELD_ELSEWHERE: u8 = 3;
/// `berth run` stopped the command because the lease was lost or could not be renewed in time.
pub(crate) const LEASE_LOST: u8 = 4;

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// Exit [`HELD_ELSEWHERE`].
    #[error("{0}")]
    HeldElsewhere(String),
    /// Exit [`LEASE_LOST`].
    #[error("{0}")]
    LeaseLost(String),
    /// Exit [`USAGE`].
    #[error("{0}")]
    Usage(String),
}

/// The exit code for an error that ended the program.
pub(crate) fn code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return ExitCode::from(match f {
                Failure::HeldElsewhere(_) => HELD_ELSEWHERE,
                Failure::LeaseLost(_) => LEASE_LOST,
                Failure::Usage(_) => USAGE,
            });
        }
        if let Some(ClientError::Conflict { .. }) = cause.downcast_ref::<ClientError>() {
            return ExitCode::from(HELD_ELSEWHERE);
        }
    }
    ExitCode::from(ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_documented_table() {
        let held = anyhow::Error::new(Failure::HeldElsewhere("x".into()));
        assert_eq!(code_for(&held), ExitCode::from(HELD_ELSEWHERE));
        let lost = anyhow::Error::new(Failure::LeaseLost("x".into()));
        assert_eq!(code_for(&lost), ExitCode::from(LEASE_LOST));
        let usage = anyhow::Error::new(Failure::Usage("x".into()));
        assert_eq!(code_for(&usage), ExitCode::from(USAGE));
        let conflict = anyhow::Error::new(ClientError::Conflict {
            message: "lease held by another identity or token".into(),
        })
        .context("cannot release lease a/b");
        assert_eq!(code_for(&conflict), ExitCode::from(HELD_ELSEWHERE));
        let other = anyhow::Error::new(ClientError::Timeout);
        assert_eq!(code_for(&other), ExitCode::from(ERROR));
    }
}
