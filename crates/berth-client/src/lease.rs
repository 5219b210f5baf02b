//! Holding a lease: [`LeaseBuilder`] acquires, [`LeaseHandle`] keeps it alive and tells the
//! holder, through a [`Claim`], until when it may safely act.
//!
//! # The safe deadline
//!
//! Each grant's `safe_until` is the monotonic instant the acquire or renew request was **sent**
//! plus the smaller of the requested TTL and the server's `ttlRemainingMillis`. The server
//! cannot have started the grant before the request left, so the lease cannot expire on the
//! server before `safe_until`, whatever the network delay and without comparing wall clocks
//! (SPEC §2, *Time*). A slow answer never moves the deadline later. A server that does not
//! send `ttlRemainingMillis` (the original Go server) is taken at the requested TTL.
//!
//! # Renewing
//!
//! [`LeaseHandle::keep_alive`] spawns a task that renews every `renew_interval` (default a third
//! of the TTL). A failed renew (transport error, timeout, 5xx, even 401/403, since a rotated
//! token may fix those) is retried quickly with a small backoff, but never past `safe_until`:
//! - a renew answered `acquired: false` ends the claim as [`ClaimState::Lost`];
//! - reaching `safe_until` without a successful renew ends it as [`ClaimState::Expired`].
//!
//! Either way the task stops, and the holder must stop acting; a holder should aim to have
//! stopped *before* `safe_until`, leaving itself a margin.
//!
//! ```no_run
//! # async fn demo(client: berth_client::Client) -> Result<(), berth_client::ClientError> {
//! use std::time::Duration;
//! use berth_client::ClaimState;
//!
//! let mut lease = client
//!     .lease("pipeline", "ingest-worker", "cluster-east", Duration::from_secs(30))
//!     .acquire_blocking(Duration::from_secs(5))
//!     .await?;
//! let mut claim = lease.keep_alive();
//! println!("fencing token {}", claim.borrow().token);
//! loop {
//!     let stop_at = claim.borrow().safe_until - Duration::from_secs(5);
//!     tokio::select! {
//!         changed = claim.changed() => {
//!             if changed.is_err() || claim.borrow().state != ClaimState::Held {
//!                 eprintln!("lost the lease; stopping");
//!                 break;
//!             }
//!         }
//!         _ = tokio::time::sleep_until(stop_at) => {
//!             eprintln!("could not renew in time; stopping");
//!             break;
//!         }
//!     }
//! }
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```

use std::{fmt, future::Future, sync::Arc, time::Duration};

use berth_api::LeaseResponse;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until, timeout_at},
};

use crate::{Client, ClientError};

/// First delay before retrying a failed renew.
const RETRY_MIN: Duration = Duration::from_millis(200);
/// Largest delay between renew retries (also capped by the renew interval).
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a holder may currently assume about its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Fencing token of the grant.
    pub token: i64,
    /// Until this monotonic instant the lease is certainly still ours on the server (see the
    /// [module docs](self)). Meaningful while `state` is [`ClaimState::Held`].
    pub safe_until: Instant,
    /// Where the claim stands.
    pub state: ClaimState,
}

/// Lifecycle of a [`Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    /// Held; renewals are succeeding or still have time to succeed.
    Held,
    /// A renew was answered `acquired: false`: someone else holds the lease or it expired on
    /// the server.
    Lost,
    /// `safe_until` passed without a successful renew; the lease may now be someone else's.
    Expired,
    /// Released through [`LeaseHandle::release`].
    Released,
}

impl ClaimState {
    /// Lowercase name, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Lost => "lost",
            Self::Expired => "expired",
            Self::Released => "released",
        }
    }
}

impl fmt::Display for ClaimState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of one acquire attempt by [`LeaseBuilder::acquire`].
#[derive(Debug)]
pub enum AcquireOutcome {
    /// The lease is ours.
    Held(LeaseHandle),
    /// Someone else holds it; the answer describes the current holder.
    Denied(LeaseResponse),
}

/// Acquires one lease for one holder; made by [`Client::lease`].
#[derive(Debug, Clone)]
pub struct LeaseBuilder {
    client: Client,
    key: Arc<LeaseKeyParts>,
    ttl: Duration,
    renew_interval: Option<Duration>,
}

#[derive(Debug)]
struct LeaseKeyParts {
    namespace: String,
    name: String,
    holder: String,
}

impl LeaseBuilder {
    pub(crate) fn new(
        client: Client,
        namespace: String,
        name: String,
        holder: String,
        ttl: Duration,
    ) -> Self {
        Self {
            client,
            key: Arc::new(LeaseKeyParts {
                namespace,
                name,
                holder,
            }),
            ttl,
            renew_interval: None,
        }
    }

    /// How often [`LeaseHandle::keep_alive`] renews (default: a third of the TTL). Zero means
    /// the default.
    #[must_use]
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = (!interval.is_zero()).then_some(interval);
        self
    }

    /// One acquire attempt.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`] of [`Client::acquire`]. A lease held by someone else is
    /// [`AcquireOutcome::Denied`], not an error.
    pub async fn acquire(&self) -> Result<AcquireOutcome, ClientError> {
        let sent = Instant::now();
        let response = self
            .client
            .acquire(
                &self.key.namespace,
                &self.key.name,
                &self.key.holder,
                self.ttl,
            )
            .await?;
        if !response.acquired {
            return Ok(AcquireOutcome::Denied(response));
        }
        let claim = Claim {
            token: response.fencing_token,
            safe_until: later(
                sent,
                grant_duration(self.ttl, response.ttl_remaining_millis),
            ),
            state: ClaimState::Held,
        };
        Ok(AcquireOutcome::Held(LeaseHandle {
            client: self.client.clone(),
            key: self.key.clone(),
            ttl: self.ttl,
            renew_interval: self.renew_interval.unwrap_or(self.ttl / 3),
            granted_at: sent,
            response,
            tx: Arc::new(watch::Sender::new(claim)),
            task: None,
        }))
    }

    /// Acquires, retrying every `poll` while the lease is held by someone else or the error is
    /// retryable ([`ClientError::is_retryable`]). Wrap it in `tokio::time::timeout` to bound
    /// the wait.
    ///
    /// # Errors
    ///
    /// The first non-retryable [`ClientError`] (bad request, 401, 403, …).
    pub async fn acquire_blocking(&self, poll: Duration) -> Result<LeaseHandle, ClientError> {
        loop {
            match self.acquire().await {
                Ok(AcquireOutcome::Held(handle)) => return Ok(handle),
                Ok(AcquireOutcome::Denied(current)) => {
                    tracing::debug!(holder = %current.holder, "lease held by another holder; waiting");
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %error_chain(&e), "acquire failed; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// A granted lease. Renews in the background once [`keep_alive`](Self::keep_alive) is called.
///
/// Dropping the handle stops the renew task but does not release the lease (a destructor must
/// not block on the network): the lease then lapses after its TTL. Call
/// [`release`](Self::release) to hand it over at once.
#[derive(Debug)]
pub struct LeaseHandle {
    client: Client,
    key: Arc<LeaseKeyParts>,
    ttl: Duration,
    renew_interval: Duration,
    granted_at: Instant,
    response: LeaseResponse,
    tx: Arc<watch::Sender<Claim>>,
    task: Option<JoinHandle<()>>,
}

impl LeaseHandle {
    /// Lease namespace.
    pub fn namespace(&self) -> &str {
        &self.key.namespace
    }

    /// Lease name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// Holder identity.
    pub fn holder(&self) -> &str {
        &self.key.holder
    }

    /// TTL requested on every renew.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Interval between renewals.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// The server's answer to the acquire that granted the lease.
    pub fn response(&self) -> &LeaseResponse {
        &self.response
    }

    /// The current claim.
    pub fn claim(&self) -> Claim {
        self.tx.borrow().clone()
    }

    /// A receiver of claim updates (the same channel [`keep_alive`](Self::keep_alive)
    /// returns).
    pub fn subscribe(&self) -> watch::Receiver<Claim> {
        self.tx.subscribe()
    }

    /// Starts the background renew task (once; later calls only subscribe) and returns a
    /// receiver that sees every change of the claim. The channel closes when the handle is
    /// dropped or released.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like [`tokio::spawn`].
    pub fn keep_alive(&mut self) -> watch::Receiver<Claim> {
        let rx = self.tx.subscribe();
        if self.task.is_none() && self.tx.borrow().state == ClaimState::Held {
            let renewer = ClientRenewer {
                client: self.client.clone(),
                key: self.key.clone(),
            };
            self.task = Some(tokio::spawn(renew_loop(
                renewer,
                self.tx.clone(),
                self.ttl,
                self.renew_interval,
                later(self.granted_at, self.renew_interval),
            )));
        }
        rx
    }

    /// Stops renewing and releases the lease on the server. A claim already
    /// [`Lost`](ClaimState::Lost) is not sent (it is no longer ours); one that
    /// [`Expired`](ClaimState::Expired) locally is still released in case the server kept it.
    ///
    /// # Errors
    ///
    /// Any [`ClientError`] of [`Client::release`]; [`ClientError::Conflict`] means someone else
    /// holds the lease now. Any other error leaves the outcome unknown: the release may still
    /// reach the server later. Before acquiring the same lease again under the same holder,
    /// send it again with [`Client::release`] (holder and [`Claim::token`]) until it is
    /// answered, or wait one TTL: an acquire by the holder of a live grant gets that same grant
    /// back, and a late release would then end it while the new owner counts on it.
    pub async fn release(mut self) -> Result<(), ClientError> {
        self.stop_task().await;
        let claim = self.claim();
        if matches!(claim.state, ClaimState::Lost | ClaimState::Released) {
            return Ok(());
        }
        self.client
            .release(
                &self.key.namespace,
                &self.key.name,
                &self.key.holder,
                claim.token,
            )
            .await?;
        self.tx.send_modify(|c| c.state = ClaimState::Released);
        Ok(())
    }

    async fn stop_task(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Cancellation is the expected outcome; a panic in the task has nothing to add.
            let _ = task.await;
        }
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `at + d`, saturating at a far-future instant instead of panicking on absurd durations.
fn later(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// `error: cause: cause` on one line, for logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Length of a grant as the client may count it from the moment the request was sent.
fn grant_duration(requested: Duration, ttl_remaining_millis: i64) -> Duration {
    match u64::try_from(ttl_remaining_millis) {
        Ok(ms) if ms > 0 => requested.min(Duration::from_millis(ms)),
        // Zero or absent: a server without `ttlRemainingMillis` (reference §2.4).
        _ => requested,
    }
}

/// One renew call, abstracted so the deadline logic can be tested without a server.
trait Renewer: Send + Sync + 'static {
    fn renew(
        &self,
        token: i64,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseResponse, ClientError>> + Send;
}

struct ClientRenewer {
    client: Client,
    key: Arc<LeaseKeyParts>,
}

impl Renewer for ClientRenewer {
    fn renew(
        &self,
        token: i64,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseResponse, ClientError>> + Send {
        self.client.renew(
            &self.key.namespace,
            &self.key.name,
            &self.key.holder,
            token,
            ttl,
        )
    }
}

async fn renew_loop<R: Renewer>(
    renewer: R,
    tx: Arc<watch::Sender<Claim>>,
    ttl: Duration,
    interval: Duration,
    first_renew: Instant,
) {
    let mut claim = tx.borrow().clone();
    let mut next = first_renew;
    let retry_cap = RETRY_MAX.min(interval).max(RETRY_MIN);
    let mut backoff = RETRY_MIN;
    loop {
        sleep_until(next.min(claim.safe_until)).await;
        if Instant::now() >= claim.safe_until {
            break;
        }
        let sent = Instant::now();
        // A renew that has not answered by the deadline is as good as failed.
        let Ok(result) = timeout_at(claim.safe_until, renewer.renew(claim.token, ttl)).await else {
            break;
        };
        match result {
            Ok(response) if response.acquired => {
                claim.safe_until = later(sent, grant_duration(ttl, response.ttl_remaining_millis));
                tx.send_replace(claim.clone());
                next = later(sent, interval);
                backoff = RETRY_MIN;
            }
            Ok(response) => {
                tracing::warn!(holder = %response.holder, "renew refused; the lease is lost");
                claim.state = ClaimState::Lost;
                tx.send_replace(claim);
                return;
            }
            Err(error) => {
                let left = claim.safe_until.saturating_duration_since(Instant::now());
                tracing::warn!(
                    error = %error_chain(&error),
                    left_ms = left.as_millis(),
                    "renew failed; retrying"
                );
                next = Instant::now() + backoff;
                backoff = (backoff * 2).min(retry_cap);
            }
        }
    }
    claim.state = ClaimState::Expired;
    tx.send_replace(claim);
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use super::*;

    /// A scripted renew: each call pops (delay, answer); an empty script fails with a transport
    /// error. Records the instants of the calls.
    #[derive(Clone, Default)]
    struct Script {
        steps: Arc<Mutex<VecDeque<(Duration, Step)>>>,
        calls: Arc<Mutex<Vec<Instant>>>,
        count: Arc<AtomicUsize>,
    }

    #[derive(Clone)]
    enum Step {
        Granted(i64),
        Refused,
        Fail,
    }

    impl Script {
        fn push(&self, delay: Duration, step: Step) {
            self.steps.lock().unwrap().push_back((delay, step));
        }
    }

    fn response(acquired: bool, remaining_ms: i64) -> LeaseResponse {
        LeaseResponse {
            acquired,
            holder: if acquired {
                "me".into()
            } else {
                "other".into()
            },
            fencing_token: 7,
            expires_at: None,
            acquired_at: None,
            ttl_remaining_millis: remaining_ms,
            renewed_at: None,
            transitions: 0,
        }
    }

    impl Renewer for Script {
        fn renew(
            &self,
            token: i64,
            _ttl: Duration,
        ) -> impl Future<Output = Result<LeaseResponse, ClientError>> + Send {
            assert_eq!(token, 7);
            self.calls.lock().unwrap().push(Instant::now());
            self.count.fetch_add(1, Ordering::SeqCst);
            let next = self.steps.lock().unwrap().pop_front();
            async move {
                let Some((delay, step)) = next else {
                    return Err(ClientError::Transport("connection refused".into()));
                };
                tokio::time::sleep(delay).await;
                match step {
                    Step::Granted(ms) => Ok(response(true, ms)),
                    Step::Refused => Ok(response(false, 9_000)),
                    Step::Fail => Err(ClientError::Transport("connection reset".into())),
                }
            }
        }
    }

    fn start(
        script: Script,
        ttl: Duration,
        interval: Duration,
    ) -> (watch::Receiver<Claim>, Instant) {
        let t0 = Instant::now();
        let tx = Arc::new(watch::Sender::new(Claim {
            token: 7,
            safe_until: t0 + ttl,
            state: ClaimState::Held,
        }));
        let rx = tx.subscribe();
        tokio::spawn(renew_loop(script, tx, ttl, interval, t0 + interval));
        (rx, t0)
    }

    #[test]
    fn grant_duration_takes_the_smaller_bound() {
        let ttl = Duration::from_secs(30);
        assert_eq!(grant_duration(ttl, 12_500), Duration::from_millis(12_500));
        assert_eq!(grant_duration(ttl, 45_000), ttl);
        assert_eq!(grant_duration(ttl, 0), ttl);
        assert_eq!(grant_duration(ttl, -5), ttl);
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(86_400 * 365));
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn safe_until_counts_from_send_not_from_a_slow_reply() {
        let script = Script::default();
        // The reply takes 4 s; the server reports 9 s left of a 10 s TTL.
        script.push(Duration::from_secs(4), Step::Granted(9_000));
        let (mut rx, t0) = start(
            script.clone(),
            Duration::from_secs(10),
            Duration::from_secs(3),
        );

        rx.changed().await.unwrap();
        let claim = rx.borrow().clone();
        assert_eq!(claim.state, ClaimState::Held);
        // Sent at t0+3 s: deadline t0 + 3 + min(10, 9) = t0+12 s, not reply time (t0+7) + 9.
        assert_eq!(claim.safe_until, t0 + Duration::from_secs(12));
        assert_eq!(script.calls.lock().unwrap()[0], t0 + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn requested_ttl_bounds_a_generous_server() {
        let script = Script::default();
        script.push(Duration::from_millis(10), Step::Granted(60_000));
        let (mut rx, t0) = start(script, Duration::from_secs(10), Duration::from_secs(3));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().safe_until, t0 + Duration::from_secs(13));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_renew_marks_the_claim_lost() {
        let script = Script::default();
        script.push(Duration::from_millis(5), Step::Refused);
        let (mut rx, t0) = start(script, Duration::from_secs(10), Duration::from_secs(3));
        rx.changed().await.unwrap();
        let claim = rx.borrow().clone();
        assert_eq!(claim.state, ClaimState::Lost);
        assert_eq!(claim.safe_until, t0 + Duration::from_secs(10));
        // The task ends and drops its sender.
        assert!(rx.changed().await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_quickly_then_expire_at_safe_until() {
        let script = Script::default(); // every call fails
        let (mut rx, t0) = start(
            script.clone(),
            Duration::from_secs(6),
            Duration::from_secs(2),
        );
        rx.changed().await.unwrap();
        let claim = rx.borrow().clone();
        assert_eq!(claim.state, ClaimState::Expired);
        // It expires exactly at the deadline, not later.
        assert_eq!(Instant::now(), t0 + Duration::from_secs(6));
        let calls = script.calls.lock().unwrap().clone();
        // First try at 2 s, then 0.2, 0.4, 0.8, 1.6 (capped at the 2 s interval) s later.
        let offsets: Vec<u128> = calls.iter().map(|c| (*c - t0).as_millis()).collect();
        assert_eq!(offsets, vec![2000, 2200, 2600, 3400, 5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovered_renew_resets_the_deadline_and_backoff() {
        let script = Script::default();
        script.push(Duration::ZERO, Step::Fail); // at 3 s
        script.push(Duration::ZERO, Step::Fail); // at 3.2 s
        script.push(Duration::from_millis(100), Step::Granted(10_000)); // at 3.6 s
        script.push(Duration::ZERO, Step::Granted(10_000)); // at 6.6 s
        let (mut rx, t0) = start(
            script.clone(),
            Duration::from_secs(10),
            Duration::from_secs(3),
        );
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().safe_until, t0 + Duration::from_millis(13_600));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().safe_until, t0 + Duration::from_millis(16_600));
        assert_eq!(rx.borrow().state, ClaimState::Held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_renew_hanging_past_the_deadline_expires_the_claim() {
        let script = Script::default();
        script.push(Duration::from_secs(60), Step::Granted(10_000));
        let (mut rx, t0) = start(script, Duration::from_secs(5), Duration::from_secs(1));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().state, ClaimState::Expired);
        assert_eq!(Instant::now(), t0 + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_interval_longer_than_the_ttl_still_expires_on_time() {
        let script = Script::default();
        let (mut rx, t0) = start(
            script.clone(),
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().state, ClaimState::Expired);
        assert_eq!(Instant::now(), t0 + Duration::from_secs(2));
        assert_eq!(script.count.load(Ordering::SeqCst), 0);
    }
}
