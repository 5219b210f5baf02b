//! Many clients racing to acquire, renew and release a few keys through two API server
//! replicas, and the safety checks on what they were told: at no moment two live holders of a
//! key on the client's monotonic clock, fencing tokens strictly increasing per key in grant
//! order and never repeated, every acknowledged grant visible afterwards.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth_client::{Client, ClientError};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::{Apiserver, millis};

/// Racing clients.
pub const CLIENTS: usize = 32;
/// Keys they race for.
pub const KEYS: usize = 5;
/// How long they race.
pub const RUN_FOR: Duration = Duration::from_secs(10);
/// The lease namespace of the raced keys.
pub const NS: &str = "race";

/// The lease name of key `k`.
pub fn key_name(k: usize) -> String {
    format!("key-{k}")
}

/// One acknowledged acquire.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: usize,
    pub token: i64,
    pub holder: String,
    pub send: Instant,
    pub ack: Instant,
}

/// What a client may rely on for one token: from the first acknowledged grant until the
/// latest `send + ttlRemaining` of any acknowledged grant or renewal, cut at the moment it
/// sent its release, and at `send + ttl` of any acquire it sent while holding the token (that
/// acquire renews the grant with its own, possibly shorter, TTL).
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: usize,
    pub token: i64,
    pub holder: String,
    pub start: Instant,
    pub end: Instant,
}

/// A denied acquire: who the server said holds the key.
#[derive(Debug, Clone)]
pub struct Denial {
    pub key: usize,
    pub holder: String,
    pub token: i64,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub grants: Vec<Grant>,
    pub claims: Vec<Claim>,
    pub denials: Vec<Denial>,
    pub ops: u64,
    pub renewed: u64,
    pub renew_lost: u64,
    pub released: u64,
    pub release_conflicts: u64,
    pub abandoned: u64,
    /// Acquires of a held key with a TTL shorter than what was left of the grant.
    pub shortened: u64,
    pub errors: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl Outcome {
    fn merge(&mut self, o: Self) {
        self.grants.extend(o.grants);
        self.claims.extend(o.claims);
        self.denials.extend(o.denials);
        self.ops += o.ops;
        self.renewed += o.renewed;
        self.renew_lost += o.renew_lost;
        self.released += o.released;
        self.release_conflicts += o.release_conflicts;
        self.abandoned += o.abandoned;
        self.shortened += o.shortened;
        self.errors.extend(o.errors);
        self.latencies.extend(o.latencies);
    }
}

/// One racing client: picks a key and a replica at random, acquires with a 1–2 s TTL, holds
/// through 0–2 renewals sent to either replica, then releases (three times in four) or
/// abandons the lease to expire.
pub async fn racer(i: usize, replicas: [Client; 2], stop: Instant) -> Outcome {
    let mut rng = StdRng::seed_from_u64(0xbe27 + i as u64);
    let holder = format!("racer-{i:02}");
    let mut out = Outcome::default();
    // Tokens this client was granted per key; re-acquiring a lease it abandoned but that is
    // still live is a renewal of the same token.
    let mut claims: HashMap<(usize, i64), usize> = HashMap::new();
    while Instant::now() < stop {
        let key = rng.random_range(0..KEYS);
        let name = key_name(key);
        let ttl = Duration::from_secs(rng.random_range(1..=2));
        let via = &replicas[rng.random_range(0..2)];
        let send = Instant::now();
        // Acquiring a key this client still holds renews its grant with the TTL asked for now,
        // which may be shorter than the one it was granted before: the server may apply that
        // shorter expiry at any moment from now on, so the client stops counting on the old
        // deadline past `send + ttl` as it sends.
        for (_, &idx) in claims.iter().filter(|((k, _), _)| *k == key) {
            let claim = &mut out.claims[idx];
            if claim.end > send + ttl {
                claim.end = send + ttl;
                out.shortened += 1;
            }
        }
        out.ops += 1;
        let result = via.acquire(NS, &name, &holder, ttl).await;
        out.latencies.push(send.elapsed());
        let granted = match result {
            Ok(r) if r.acquired => r,
            Ok(r) => {
                assert_ne!(r.holder, holder, "a denial never names the caller");
                out.denials.push(Denial {
                    key,
                    holder: r.holder,
                    token: r.fencing_token,
                });
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
                continue;
            }
            Err(e) => {
                out.errors.push(format!("acquire: {e}"));
                continue;
            }
        };
        let ack = Instant::now();
        let token = granted.fencing_token;
        assert_eq!(granted.holder, holder);
        let until = send + millis(granted.ttl_remaining_millis);
        let idx = *claims.entry((key, token)).or_insert_with(|| {
            out.grants.push(Grant {
                key,
                token,
                holder: holder.clone(),
                send,
                ack,
            });
            out.claims.push(Claim {
                key,
                token,
                holder: holder.clone(),
                start: ack,
                end: until,
            });
            out.claims.len() - 1
        });
        let claim = &mut out.claims[idx];
        claim.end = claim.end.max(until);

        let mut lost = false;
        for _ in 0..rng.random_range(0..=2) {
            let pause = ttl.mul_f64(rng.random_range(0.1..0.4));
            tokio::time::sleep(pause).await;
            let via = &replicas[rng.random_range(0..2)];
            let send = Instant::now();
            out.ops += 1;
            let result = via.renew(NS, &name, &holder, token, ttl).await;
            out.latencies.push(send.elapsed());
            match result {
                Ok(r) if r.acquired => {
                    assert_eq!(r.fencing_token, token, "a renewal keeps the token");
                    assert_eq!(r.holder, holder);
                    out.renewed += 1;
                    let claim = &mut out.claims[idx];
                    claim.end = claim.end.max(send + millis(r.ttl_remaining_millis));
                }
                Ok(_) => {
                    out.renew_lost += 1;
                    lost = true;
                    break;
                }
                Err(e) => {
                    out.errors.push(format!("renew: {e}"));
                    lost = true;
                    break;
                }
            }
        }
        if lost {
            continue;
        }
        if rng.random_bool(0.75) {
            let via = &replicas[rng.random_range(0..2)];
            let send = Instant::now();
            // From here on this client no longer relies on the lease.
            let claim = &mut out.claims[idx];
            claim.end = claim.end.min(send);
            out.ops += 1;
            let result = via.release(NS, &name, &holder, token).await;
            out.latencies.push(send.elapsed());
            match result {
                Ok(()) => out.released += 1,
                // The lease expired before the release arrived and someone else took it.
                Err(ClientError::Conflict { .. }) => out.release_conflicts += 1,
                Err(e) => out.errors.push(format!("release: {e}")),
            }
            // The token is over; a later grant of this key is a new one.
            claims.remove(&(key, token));
        } else {
            out.abandoned += 1;
        }
    }
    out
}

/// Fails with `msg` unless `cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Checks the safety properties of one run; returns the highest acknowledged token per key,
/// or the first violation.
pub fn check_history(out: &Outcome, margin: Duration) -> Result<Verdict, String> {
    // Tokens never repeat: one holder per (key, token).
    let mut owner: HashMap<(usize, i64), &str> = HashMap::new();
    for g in &out.grants {
        if let Some(prev) = owner.insert((g.key, g.token), &g.holder) {
            ensure!(
                prev == g.holder,
                "key {} token {} granted to {prev} and to {}",
                g.key,
                g.token,
                g.holder
            );
        }
    }
    // Denials name a real holder of the token they report.
    for d in &out.denials {
        if let Some(h) = owner.get(&(d.key, d.token)) {
            ensure!(
                *h == d.holder,
                "a denial of key {} reported token {} with holder {}, but it was granted to {h}",
                d.key,
                d.token,
                d.holder
            );
        }
    }

    let mut high = BTreeMap::new();
    let mut max_overlap = Duration::ZERO;
    for key in 0..KEYS {
        // Claims of different tokens never overlap on the client clock, and their order in
        // time is the order of their tokens.
        let mut claims: Vec<&Claim> = out
            .claims
            .iter()
            .filter(|c| c.key == key && c.start < c.end)
            .collect();
        claims.sort_by_key(|c| c.token);
        for pair in claims.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            ensure!(
                a.token < b.token,
                "key {key}: token {} claimed twice",
                a.token
            );
            let overlap = a.end.saturating_duration_since(b.start);
            max_overlap = max_overlap.max(overlap);
            ensure!(
                overlap <= margin,
                "key {key}: two live holders: {} (token {}) relied on the lease until {overlap:?} \
                 after {} (token {}) was granted (allowed: {margin:?})",
                a.holder,
                a.token,
                b.holder,
                b.token
            );
        }
        // Grant order: a grant requested after another was acknowledged has a higher token.
        let mut grants: Vec<&Grant> = out.grants.iter().filter(|g| g.key == key).collect();
        grants.sort_by_key(|g| g.ack);
        let mut prefix_max = Vec::with_capacity(grants.len());
        let mut m = i64::MIN;
        for g in &grants {
            m = m.max(g.token);
            prefix_max.push(m);
        }
        for g in &grants {
            let before = grants.partition_point(|o| o.ack < g.send);
            if before > 0 {
                ensure!(
                    prefix_max[before - 1] < g.token,
                    "key {key}: grant of token {} to {} was requested after token {} had been \
                     acknowledged",
                    g.token,
                    g.holder,
                    prefix_max[before - 1]
                );
            }
        }
        if let Some(max) = grants.iter().map(|g| g.token).max() {
            high.insert(key, max);
        }
    }
    Ok(Verdict { high, max_overlap })
}

/// What [`check_history`] found in a safe history.
#[derive(Debug)]
pub struct Verdict {
    /// The highest acknowledged fencing token per key.
    pub high: BTreeMap<usize, i64>,
    /// The longest time a client relied on a lease after the next holder's grant was
    /// acknowledged (zero when the claims never overlapped).
    pub max_overlap: Duration,
}

/// Races [`CLIENTS`] clients through replicas `a` and `b` for [`RUN_FOR`], checks the history
/// and that every acknowledged grant is visible through both, and prints the figures.
///
/// `margin(a, b)`, evaluated after the run, is how long a client's claim may overlap the next
/// holder's: zero for a store with one time source, the clock error the store documents
/// otherwise.
pub async fn race(
    test: &str,
    a: &Apiserver,
    b: &Apiserver,
    margin: impl FnOnce(&Apiserver, &Apiserver) -> Duration,
) {
    let start = Instant::now();
    let stop = start + RUN_FOR;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let replicas = [a.client(), b.client()];
        tasks.push(tokio::spawn(racer(i, replicas, stop)));
    }
    let mut out = Outcome::default();
    for t in tasks {
        out.merge(t.await.expect("racer task"));
    }
    let wall = start.elapsed();

    let margin = margin(a, b);
    let Verdict { high, max_overlap } =
        check_history(&out, margin).unwrap_or_else(|violation| panic!("{test}: {violation}"));
    // Every acknowledged grant is visible afterwards through both replicas.
    for replica in [&a, &b] {
        let c = replica.client();
        for (key, max) in &high {
            let status = c
                .get(NS, &key_name(*key))
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("key {key} vanished"));
            assert!(
                status.fencing_token >= *max,
                "key {key}: GET shows token {} below the acknowledged {max}",
                status.fencing_token
            );
        }
        let list = c
            .list(Some(NS), &berth_client::ListOptions::default())
            .await
            .expect("list");
        assert_eq!(list.items.len(), high.len(), "every raced key is listed");
    }

    super::report(&format!("{test}: every call"), &mut out.latencies, wall);
    #[allow(clippy::cast_precision_loss)]
    let rate = out.ops as f64 / wall.as_secs_f64();
    println!(
        "{test}: {CLIENTS} clients, {KEYS} keys, 2 replicas, {wall:.2?}: {ops} ops ({rate:.0} ops/s); \
         {grants} grants, {renewed} renewals ({lost} lost), {released} releases \
         ({conflicts} after expiry), {abandoned} abandoned, {shortened} re-acquired with a \
         shorter TTL, {denials} denials, {errors} errors; \
         highest tokens {high:?}; longest overlap of claims {max_overlap:?} (allowed {margin:?})",
        ops = out.ops,
        grants = out.grants.len(),
        renewed = out.renewed,
        lost = out.renew_lost,
        released = out.released,
        conflicts = out.release_conflicts,
        abandoned = out.abandoned,
        shortened = out.shortened,
        denials = out.denials.len(),
        errors = out.errors.len(),
    );
    assert!(
        out.errors.is_empty(),
        "{} failed calls, first: {:?}",
        out.errors.len(),
        out.errors.first()
    );
    // The race really raced: every key changed hands, through expiry and release alike.
    assert_eq!(high.len(), KEYS, "every key was granted");
    assert!(
        high.values().all(|t| *t >= 2),
        "keys changed hands: {high:?}"
    );
    assert!(!out.denials.is_empty() && out.abandoned > 0 && out.released > 0);
}
