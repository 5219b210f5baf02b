//! The client workload: tasks that acquire, renew and release keys through the replicas,
//! record every call as an [`Op`], and act on a held key only before their "safe until"
//! deadline, recording each stretch of work as an [`Act`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_client::{Client, ClientError};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::acting::Act;
use crate::history::{Op, OpKind, OpResult};

/// What the clients do.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Namespace of every key.
    pub namespace: String,
    /// Key names the clients pick from.
    pub keys: Vec<String>,
    /// TTL requested on acquire and renew.
    pub ttl: Duration,
    /// Chance, per stretch of work, that a client stalls longer than the TTL (like a paused
    /// process) in the middle of it.
    pub stall_probability: f64,
}

/// One client task: who it is, its connections (one per replica) and its schedule.
#[derive(Debug, Clone)]
pub struct ClientTask {
    /// Client id.
    pub id: u32,
    /// One client per replica; each call goes to a random one.
    pub replicas: Vec<Client>,
    /// What it does.
    pub work: Workload,
    /// The history's origin.
    pub origin: Instant,
    /// When it stops.
    pub until: Instant,
    /// The run's seed.
    pub seed: u64,
}

/// Everything one client did.
#[derive(Debug, Default)]
pub struct ClientLog {
    /// Its calls, each with the index of the replica it went to.
    pub ops: Vec<(Op, usize)>,
    /// Its acts.
    pub acts: Vec<Act>,
    /// How often it stalled past the TTL.
    pub stalls: u32,
    /// Failed calls per kind of failure (`timeout`, `transport`, `http 503`, ...).
    pub errors: BTreeMap<String, u32>,
}

/// The grant a client believes it holds.
struct Held {
    key: String,
    token: i64,
    renewals_left: u32,
    /// Offset from the origin before which the client may act: invocation of the latest
    /// acknowledged grant + its `ttlRemaining`.
    safe_until: Duration,
}

/// The result of a failed call; counts the failure in `errors`.
fn classify(errors: &mut BTreeMap<String, u32>, e: &ClientError) -> OpResult {
    let name = match e {
        ClientError::Timeout => "timeout".to_owned(),
        ClientError::Transport(_) => "transport".to_owned(),
        ClientError::Decode(_) => "decode".to_owned(),
        other => other
            .status()
            .map_or_else(|| "other".to_owned(), |s| format!("http {s}")),
    };
    *errors.entry(name).or_insert(0) += 1;
    match e {
        ClientError::Conflict { .. } => OpResult::Conflict,
        _ => OpResult::Unknown,
    }
}

fn millis(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// The seed of client `id` derived from the run's seed.
pub fn client_seed(seed: u64, id: u32) -> u64 {
    seed ^ u64::from(id).wrapping_mul(0x9E37_79B9)
}

/// Runs client `id` until `until`: picks a key, acquires it, works and renews it 1–5 times,
/// releases it; each call goes to a randomly chosen entry of `replicas`.
///
/// A release without an answer is sent again, before anything else, until one is answered:
/// acquiring again under the same identity while it may still land would get the same grant
/// back (acquire by the holder renews it), and the late release would then end that grant
/// inside its acknowledged window (docs/safety.md, "The long tier").
pub async fn run_client(task: ClientTask) -> ClientLog {
    let ClientTask {
        id,
        replicas,
        work,
        origin,
        until,
        seed,
    } = task;
    let mut rng = StdRng::seed_from_u64(client_seed(seed, id));
    let holder = format!("client-{id}");
    let ns = work.namespace.as_str();
    let mut log = ClientLog::default();
    let mut held: Option<Held> = None;
    let mut unanswered_release: Option<(String, i64)> = None;
    if replicas.is_empty() || work.keys.is_empty() {
        return log;
    }
    while Instant::now() < until {
        let r = rng.random_range(0..replicas.len());
        let Some(c) = replicas.get(r) else { break };
        if let Some((key, token)) = unanswered_release.take() {
            let invoke = origin.elapsed();
            let result = match c.release(ns, &key, &holder, token).await {
                Ok(()) => OpResult::Released,
                Err(e) => classify(&mut log.errors, &e),
            };
            if result == OpResult::Unknown {
                unanswered_release = Some((key.clone(), token));
            }
            log.ops.push((
                Op {
                    client: id,
                    key: format!("{ns}/{key}"),
                    kind: OpKind::Release,
                    invoke,
                    complete: origin.elapsed(),
                    result,
                },
                r,
            ));
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            continue;
        }
        match held.take() {
            None => {
                let key = work.keys[rng.random_range(0..work.keys.len())].clone();
                let invoke = origin.elapsed();
                let result = match c.acquire(ns, &key, &holder, work.ttl).await {
                    Ok(resp) if resp.acquired && resp.holder == holder => {
                        let ttl_remaining = millis(resp.ttl_remaining_millis);
                        held = Some(Held {
                            key: key.clone(),
                            token: resp.fencing_token,
                            renewals_left: rng.random_range(1..6),
                            safe_until: invoke + ttl_remaining,
                        });
                        OpResult::Granted {
                            token: resp.fencing_token,
                            ttl_remaining,
                        }
                    }
                    Ok(resp) => OpResult::Denied {
                        holder: resp.holder,
                        token: resp.fencing_token,
                    },
                    Err(e) => classify(&mut log.errors, &e),
                };
                log.ops.push((
                    Op {
                        client: id,
                        key: format!("{ns}/{key}"),
                        kind: OpKind::Acquire,
                        invoke,
                        complete: origin.elapsed(),
                        result,
                    },
                    r,
                ));
                if held.is_none() {
                    tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
                }
            }
            Some(h) if h.renewals_left == 0 => {
                // A last stretch of work, then hand the key back.
                let span = Duration::from_millis(rng.random_range(100..400));
                act(&mut log, &mut rng, id, &work, &h, origin, span).await;
                let invoke = origin.elapsed();
                let result = match c.release(ns, &h.key, &holder, h.token).await {
                    Ok(()) => OpResult::Released,
                    Err(e) => classify(&mut log.errors, &e),
                };
                if result == OpResult::Unknown {
                    unanswered_release = Some((h.key.clone(), h.token));
                }
                log.ops.push((
                    Op {
                        client: id,
                        key: format!("{ns}/{}", h.key),
                        kind: OpKind::Release,
                        invoke,
                        complete: origin.elapsed(),
                        result,
                    },
                    r,
                ));
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            }
            Some(mut h) => {
                let span = Duration::from_millis(rng.random_range(300..700));
                act(&mut log, &mut rng, id, &work, &h, origin, span).await;
                let (key, token) = (h.key.clone(), h.token);
                let invoke = origin.elapsed();
                let result = match c.renew(ns, &key, &holder, token, work.ttl).await {
                    Ok(resp) if resp.acquired && resp.fencing_token == token => {
                        let ttl_remaining = millis(resp.ttl_remaining_millis);
                        h.renewals_left -= 1;
                        h.safe_until = invoke + ttl_remaining;
                        held = Some(h);
                        OpResult::Granted {
                            token,
                            ttl_remaining,
                        }
                    }
                    Ok(_) => OpResult::Lost,
                    // No answer: the client must assume it lost the lease.
                    Err(e) => classify(&mut log.errors, &e),
                };
                log.ops.push((
                    Op {
                        client: id,
                        key: format!("{ns}/{key}"),
                        kind: OpKind::Renew,
                        invoke,
                        complete: origin.elapsed(),
                        result,
                    },
                    r,
                ));
            }
        }
    }
    log
}

/// Works on the held key for `span`: in slices of 20–120 ms, each started only after checking
/// that the local clock is before the safe-until deadline, and ending by it. Sometimes the
/// client stalls (longer than the TTL) between two slices; the next slice re-checks.
async fn act(
    log: &mut ClientLog,
    rng: &mut StdRng,
    id: u32,
    work: &Workload,
    h: &Held,
    origin: Instant,
    span: Duration,
) {
    let end = origin.elapsed() + span;
    let stall_at = rng
        .random_bool(work.stall_probability.clamp(0.0, 1.0))
        .then(|| origin.elapsed() + span.mul_f64(rng.random::<f64>()));
    let mut stalled = false;
    loop {
        let now = origin.elapsed();
        if now >= end {
            return;
        }
        if let Some(at) = stall_at
            && !stalled
            && now >= at
        {
            stalled = true;
            log.stalls += 1;
            let pause = work.ttl + Duration::from_millis(rng.random_range(200..1000));
            tokio::time::sleep(pause).await;
            continue;
        }
        if now >= h.safe_until {
            // Past the deadline: stop acting; wait out the span idle.
            tokio::time::sleep(end - now).await;
            return;
        }
        let slice = Duration::from_millis(rng.random_range(20..120))
            .min(end - now)
            .min(h.safe_until - now);
        log.acts.push(Act {
            client: id,
            key: format!("{}/{}", work.namespace, h.key),
            token: h.token,
            start: now,
            end: now + slice,
        });
        tokio::time::sleep(slice).await;
    }
}

/// What one [`run_handle_client`] did.
#[derive(Debug, Default)]
pub struct HandleLog {
    /// Its acts.
    pub acts: Vec<Act>,
    /// Grants it held a [`berth_client::LeaseHandle`] for.
    pub grants: u32,
    /// Holds that ended because the renew task reported the lease lost.
    pub lost: u32,
    /// Holds that ended because `safe_until` passed without a successful renewal.
    pub expired: u32,
    /// Releases answered.
    pub released: u32,
    /// Releases sent again after getting no answer.
    pub release_retries: u32,
    /// How often it stalled past the TTL.
    pub stalls: u32,
}

/// Runs a client that holds leases the way an application does, through the client library:
/// [`berth_client::LeaseBuilder::acquire`], then [`berth_client::LeaseHandle::keep_alive`]
/// renews in the background while the client works in slices, each started only while the
/// claim is held and before its `safe_until`, and cut to end by it. After 1–4 s of work (or
/// when the claim is lost or expires) it releases; an unanswered release is sent again until
/// answered before it acquires anything. Acts are recorded for [`crate::acting::check`]; the
/// library's calls are not in the history, so these clients use their own keys.
pub async fn run_handle_client(task: ClientTask) -> HandleLog {
    let ClientTask {
        id,
        replicas,
        work,
        origin,
        until,
        seed,
    } = task;
    use berth_client::{AcquireOutcome, ClaimState};

    let mut rng = StdRng::seed_from_u64(client_seed(seed, id));
    let holder = format!("handle-{id}");
    let ns = work.namespace.as_str();
    let mut log = HandleLog::default();
    if replicas.is_empty() || work.keys.is_empty() {
        return log;
    }
    while Instant::now() < until {
        let key = work.keys[rng.random_range(0..work.keys.len())].clone();
        let c = &replicas[rng.random_range(0..replicas.len())];
        let mut handle = match c.lease(ns, &key, &holder, work.ttl).acquire().await {
            Ok(AcquireOutcome::Held(h)) => h,
            Ok(AcquireOutcome::Denied(_)) | Err(_) => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
                continue;
            }
        };
        log.grants += 1;
        let claims = handle.keep_alive();
        let token = handle.claim().token;
        let end = origin.elapsed() + Duration::from_millis(rng.random_range(1000..4000));
        let mut stalled = false;
        loop {
            let now = origin.elapsed();
            if now >= end {
                break;
            }
            if !stalled && rng.random_bool(work.stall_probability.clamp(0.0, 1.0) / 10.0) {
                stalled = true;
                log.stalls += 1;
                let pause = work.ttl + Duration::from_millis(rng.random_range(200..1000));
                tokio::time::sleep(pause).await;
                continue;
            }
            let claim = claims.borrow().clone();
            let now = origin.elapsed();
            let safe_until = claim
                .safe_until
                .into_std()
                .saturating_duration_since(origin);
            match claim.state {
                ClaimState::Held if now < safe_until => {}
                ClaimState::Lost => {
                    log.lost += 1;
                    break;
                }
                _ => {
                    log.expired += 1;
                    break;
                }
            }
            let slice = Duration::from_millis(rng.random_range(20..120))
                .min(end.saturating_sub(now))
                .min(safe_until - now);
            log.acts.push(Act {
                client: id,
                key: format!("{ns}/{key}"),
                token: claim.token,
                start: now,
                end: now + slice,
            });
            tokio::time::sleep(slice).await;
        }
        // Hand the key back; a release without an answer may still land, so it is sent again
        // (to any replica) until one is answered.
        let mut answered = matches!(
            handle.release().await,
            Ok(()) | Err(ClientError::Conflict { .. })
        );
        while !answered {
            log.release_retries += 1;
            let c = &replicas[rng.random_range(0..replicas.len())];
            answered = match c.release(ns, &key, &holder, token).await {
                Ok(()) | Err(ClientError::Conflict { .. }) => true,
                Err(_) => false,
            };
            if !answered {
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
            }
        }
        log.released += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
    log
}
