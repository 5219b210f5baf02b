//! Operation histories and the per-key safety checker.
//!
//! Each [`Op`] records one client call: who made it, on which key, when it was invoked and when
//! its answer arrived (both on the client's monotonic clock, as offsets from a common origin),
//! and what the answer was. [`check`] splits the history per key and verifies:
//!
//! 1. **No overlap.** Every acknowledged grant opens a window `[completion, invocation +
//!    ttlRemaining]` for its token; acknowledged renewals of the same token extend it the same
//!    way, and an acknowledged release closes it at the release's invocation. Windows of two
//!    different tokens must not overlap. The window is conservative: the server's expiry lies
//!    after `invocation + ttlRemaining`, so a client that stops acting at that instant is safe.
//! 2. **Monotonic tokens.** A token is never granted to two holders, and if a grant of token
//!    `a` completed before a grant of a different token `b` was invoked, then `a < b`.
//! 3. **Nothing acknowledged lost.** Every acknowledged grant's token is at most the token read
//!    at the end of the run for that key.
//!
//! On a violation, [`Violation`] carries the offending operations; its `Display` prints them as
//! a timeline.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The call an operation made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `POST .../acquire`.
    Acquire,
    /// `POST .../renew`.
    Renew,
    /// `POST .../release`.
    Release,
    /// `GET` of one lease.
    Get,
}

impl OpKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Renew => "renew",
            Self::Release => "release",
            Self::Get => "get",
        }
    }
}

/// What an operation's answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The caller holds the lease with `token` for at least `ttl_remaining` from the request's
    /// invocation (acquire granted, renew accepted, or a get that shows the caller as holder).
    Granted {
        /// Fencing token of the grant.
        token: i64,
        /// `ttlRemaining` reported by the server.
        ttl_remaining: Duration,
    },
    /// Someone else holds the lease.
    Denied {
        /// The holder the server reported.
        holder: String,
        /// Its token.
        token: i64,
    },
    /// The caller no longer holds the lease (renew/release of a lost grant).
    Lost,
    /// The release was acknowledged.
    Released,
    /// A compare-and-set conflict or a token mismatch the server reported.
    Conflict,
    /// No answer, a transport error or a 5xx: the operation may or may not have taken effect.
    Unknown,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Client id; also the holder identity the client uses.
    pub client: u32,
    /// Lease key (`namespace/name`).
    pub key: String,
    /// The call.
    pub kind: OpKind,
    /// Invocation instant (offset from the history's origin on the client's monotonic clock).
    pub invoke: Duration,
    /// Completion instant (same clock).
    pub complete: Duration,
    /// The answer.
    pub result: OpResult,
}

impl Op {
    fn grant(&self) -> Option<(i64, Duration)> {
        match self.result {
            OpResult::Granted {
                token,
                ttl_remaining,
            } => Some((token, ttl_remaining)),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>9.3}s .. {:>9.3}s] client {:>3} {:<7} {} -> ",
            self.invoke.as_secs_f64(),
            self.complete.as_secs_f64(),
            self.client,
            self.kind.as_str(),
            self.key
        )?;
        match &self.result {
            OpResult::Granted {
                token,
                ttl_remaining,
            } => write!(
                f,
                "granted token {token} ttlRemaining {}ms",
                ttl_remaining.as_millis()
            ),
            OpResult::Denied { holder, token } => {
                write!(f, "denied (held by {holder}, token {token})")
            }
            OpResult::Lost => f.write_str("lost"),
            OpResult::Released => f.write_str("released"),
            OpResult::Conflict => f.write_str("conflict"),
            OpResult::Unknown => f.write_str("unknown"),
        }
    }
}

/// A recorded history: operations in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one operation.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// Number of operations per kind of result: `(granted, denied, lost, released, conflict,
    /// unknown)`.
    pub fn result_counts(&self) -> [usize; 6] {
        let mut out = [0; 6];
        for op in &self.ops {
            let i = match op.result {
                OpResult::Granted { .. } => 0,
                OpResult::Denied { .. } => 1,
                OpResult::Lost => 2,
                OpResult::Released => 3,
                OpResult::Conflict => 4,
                OpResult::Unknown => 5,
            };
            out[i] += 1;
        }
        out
    }
}

/// Which rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// Two different tokens' acknowledged windows overlap.
    Overlap,
    /// One token was granted to two different holders.
    TokenReused,
    /// A later grant carried a lower token than an earlier one.
    TokenDecreased,
    /// An acknowledged grant's token is above the token read at the end.
    AckLost,
}

impl ViolationKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Overlap => "overlapping grant windows",
            Self::TokenReused => "token granted to two holders",
            Self::TokenDecreased => "fencing token decreased",
            Self::AckLost => "acknowledged grant lost",
        }
    }
}

/// One violation with the minimal timeline that shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub kind: ViolationKind,
    /// The key.
    pub key: String,
    /// What exactly is wrong.
    pub detail: String,
    /// The offending operations, ordered by invocation.
    pub timeline: Vec<Op>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "VIOLATION {} on {}: {}",
            self.kind.as_str(),
            self.key,
            self.detail
        )?;
        for op in &self.timeline {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The validity window of one token on one key.
#[derive(Debug, Clone)]
struct Window {
    token: i64,
    client: u32,
    start: Duration,
    end: Duration,
    /// Indices of the operations that opened, extended or closed it.
    ops: Vec<usize>,
}

fn timeline(ops: &[Op], idx: impl IntoIterator<Item = usize>) -> Vec<Op> {
    let mut idx: Vec<usize> = idx.into_iter().collect();
    idx.sort_unstable();
    idx.dedup();
    let mut out: Vec<Op> = idx
        .into_iter()
        .filter_map(|i| ops.get(i).cloned())
        .collect();
    out.sort_by_key(|o| (o.invoke, o.complete));
    out
}

/// The operations that explain an overlap: every call of either holder on the key from the
/// first window's start to the last window's end, whatever its answer.
fn context(ops: &[Op], idx: &[usize], a: &Window, b: &Window) -> Vec<usize> {
    let from = a.start.min(b.start);
    let to = a.end.max(b.end);
    let mut out: Vec<usize> = a.ops.iter().chain(b.ops.iter()).copied().collect();
    out.extend(idx.iter().copied().filter(|&i| {
        ops.get(i).is_some_and(|o| {
            (o.client == a.client || o.client == b.client) && o.complete >= from && o.invoke <= to
        })
    }));
    out
}

/// Checks `history` against the safety rules; `final_tokens` maps each key to the token read at
/// the end of the run (keys missing from it are not checked for lost acknowledgements).
///
/// Returns every violation found, each with its own timeline; an empty vector means the history
/// is safe.
pub fn check(history: &History, final_tokens: &BTreeMap<String, i64>) -> Vec<Violation> {
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        per_key.entry(op.key.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (key, idx) in per_key {
        check_key(
            &history.ops,
            key,
            &idx,
            final_tokens.get(key).copied(),
            &mut out,
        );
    }
    out
}

fn check_key(
    ops: &[Op],
    key: &str,
    idx: &[usize],
    final_token: Option<i64>,
    out: &mut Vec<Violation>,
) {
    // Grants that create or extend a window: acknowledged acquires and renews.
    let grants: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| {
            ops.get(i).is_some_and(|o| {
                matches!(o.kind, OpKind::Acquire | OpKind::Renew) && o.grant().is_some()
            })
        })
        .collect();

    // (b) one token, one holder.
    let mut owner: BTreeMap<i64, usize> = BTreeMap::new();
    for &i in &grants {
        let Some(op) = ops.get(i) else { continue };
        let Some((token, _)) = op.grant() else {
            continue;
        };
        match owner.get(&token) {
            Some(&first) if ops.get(first).is_some_and(|f| f.client != op.client) => {
                let first_client = ops.get(first).map_or(0, |f| f.client);
                out.push(Violation {
                    kind: ViolationKind::TokenReused,
                    key: key.to_owned(),
                    detail: format!(
                        "token {token} granted to client {first_client} and to client {}",
                        op.client
                    ),
                    timeline: timeline(ops, [first, i]),
                });
            }
            Some(_) => {}
            None => {
                owner.insert(token, i);
            }
        }
    }

    // (b) tokens increase in real-time grant order (acquires only: renewals keep the token).
    let acquires: Vec<usize> = grants
        .iter()
        .copied()
        .filter(|&i| ops.get(i).is_some_and(|o| o.kind == OpKind::Acquire))
        .collect();
    'outer: for &a in &acquires {
        for &b in &acquires {
            let (Some(oa), Some(ob)) = (ops.get(a), ops.get(b)) else {
                continue;
            };
            let (Some((ta, _)), Some((tb, _))) = (oa.grant(), ob.grant()) else {
                continue;
            };
            if oa.complete < ob.invoke && tb < ta {
                out.push(Violation {
                    kind: ViolationKind::TokenDecreased,
                    key: key.to_owned(),
                    detail: format!(
                        "grant of token {ta} completed before a grant of token {tb} was invoked"
                    ),
                    timeline: timeline(ops, [a, b]),
                });
                break 'outer;
            }
        }
    }

    // (a) windows per token.
    let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
    for &i in &grants {
        let Some(op) = ops.get(i) else { continue };
        let Some((token, ttl)) = op.grant() else {
            continue;
        };
        let end = op.invoke + ttl;
        let w = windows.entry(token).or_insert_with(|| Window {
            token,
            client: op.client,
            start: op.complete,
            end,
            ops: Vec::new(),
        });
        w.start = w.start.min(op.complete);
        w.end = w.end.max(end);
        w.ops.push(i);
    }
    // A release by the window's holder closes it at the release's invocation: an acknowledged
    // one surely, one without an answer possibly (it may have taken effect at any instant after
    // its invocation, and the holder stopped acting when it sent it).
    for &i in idx {
        let Some(op) = ops.get(i) else { continue };
        if op.kind != OpKind::Release
            || !matches!(op.result, OpResult::Released | OpResult::Unknown)
        {
            continue;
        }
        // The release names the token the client last held; pick its latest window before it.
        let held = windows
            .values_mut()
            .filter(|w| w.client == op.client && w.start <= op.invoke)
            .max_by_key(|w| w.start);
        if let Some(w) = held
            && op.invoke < w.end
        {
            // Grants of the same token invoked after the release answered still count.
            let later = w
                .ops
                .iter()
                .filter_map(|&g| ops.get(g))
                .filter(|g| g.invoke > op.complete)
                .filter_map(|g| g.grant().map(|(_, ttl)| g.invoke + ttl))
                .max();
            w.end = later.unwrap_or(op.invoke).max(op.invoke).max(w.start);
            w.ops.push(i);
        }
    }
    let list: Vec<&Window> = windows.values().collect();
    for (n, a) in list.iter().enumerate() {
        for b in list.iter().skip(n + 1) {
            if a.start < b.end && b.start < a.end {
                out.push(Violation {
                    kind: ViolationKind::Overlap,
                    key: key.to_owned(),
                    detail: format!(
                        "token {} (client {}) valid {:.3}s..{:.3}s overlaps token {} (client {}) \
                         valid {:.3}s..{:.3}s",
                        a.token,
                        a.client,
                        a.start.as_secs_f64(),
                        a.end.as_secs_f64(),
                        b.token,
                        b.client,
                        b.start.as_secs_f64(),
                        b.end.as_secs_f64()
                    ),
                    timeline: timeline(ops, context(ops, idx, a, b)),
                });
            }
        }
    }

    // (c) nothing acknowledged lost.
    if let Some(fin) = final_token {
        for &i in &grants {
            let Some(op) = ops.get(i) else { continue };
            if let Some((token, _)) = op.grant()
                && token > fin
            {
                out.push(Violation {
                    kind: ViolationKind::AckLost,
                    key: key.to_owned(),
                    detail: format!(
                        "token {token} was acknowledged but the final read shows token {fin}"
                    ),
                    timeline: timeline(ops, [i]),
                });
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn op(client: u32, kind: OpKind, invoke: u64, complete: u64, result: OpResult) -> Op {
        Op {
            client,
            key: "ns/a".into(),
            kind,
            invoke: ms(invoke),
            complete: ms(complete),
            result,
        }
    }

    fn granted(token: i64, ttl: u64) -> OpResult {
        OpResult::Granted {
            token,
            ttl_remaining: ms(ttl),
        }
    }

    fn finals(token: i64) -> BTreeMap<String, i64> {
        BTreeMap::from([("ns/a".to_owned(), token)])
    }

    fn good() -> History {
        History {
            ops: vec![
                op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
                op(
                    2,
                    OpKind::Acquire,
                    20,
                    30,
                    OpResult::Denied {
                        holder: "1".into(),
                        token: 1,
                    },
                ),
                op(1, OpKind::Renew, 1000, 1010, granted(1, 2000)),
                op(1, OpKind::Get, 1100, 1110, granted(1, 1900)),
                // client 2 gets it only after the renewed window ends
                op(2, OpKind::Acquire, 3100, 3110, granted(2, 2000)),
                op(1, OpKind::Renew, 3200, 3210, OpResult::Lost),
                op(2, OpKind::Release, 4000, 4010, OpResult::Released),
                // released early: client 3 may take it at once
                op(3, OpKind::Acquire, 4020, 4030, granted(3, 2000)),
                op(3, OpKind::Renew, 4500, 4600, OpResult::Unknown),
            ],
        }
    }

    #[test]
    fn good_history_passes() {
        let v = check(&good(), &finals(3));
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn overlap_is_reported_with_its_timeline() {
        let mut h = good();
        // client 2 is granted token 2 while client 1's renewed window (until 3.0s) is open
        h.ops
            .push(op(2, OpKind::Acquire, 2500, 2510, granted(2, 2000)));
        let v = check(&h, &finals(3));
        let overlap: Vec<_> = v
            .iter()
            .filter(|v| v.kind == ViolationKind::Overlap)
            .collect();
        assert_eq!(overlap.len(), 1, "{v:?}");
        let o = overlap[0];
        assert!(o.detail.contains("token 1 (client 1)"), "{}", o.detail);
        assert!(o.detail.contains("token 2 (client 2)"), "{}", o.detail);
        // the timeline names the grant that opened the overlap, sorted by invocation
        assert!(o.timeline.iter().any(|t| t.invoke == ms(2500)));
        assert!(o.timeline.windows(2).all(|w| w[0].invoke <= w[1].invoke));
        let text = o.to_string();
        assert!(
            text.starts_with("VIOLATION overlapping grant windows on ns/a"),
            "{text}"
        );
        assert!(
            text.contains("granted token 2 ttlRemaining 2000ms"),
            "{text}"
        );
    }

    #[test]
    fn an_unanswered_release_may_have_ended_the_window() {
        // The shape a chaos run produced: the holder's release gets no answer (its replica was
        // killed after committing the tombstone) and another client is granted the key at once.
        let h = History {
            ops: vec![
                op(3, OpKind::Acquire, 6289, 6297, granted(5, 2000)),
                op(3, OpKind::Renew, 7742, 7748, granted(5, 2000)),
                op(3, OpKind::Release, 8100, 8900, OpResult::Unknown),
                op(4, OpKind::Acquire, 8484, 8791, granted(6, 2000)),
            ],
        };
        let v = check(&h, &finals(6));
        assert!(v.is_empty(), "{v:?}");
        // Without the release the same grant overlaps, and the report shows the holder's calls.
        let mut without = h.clone();
        without.ops.remove(2);
        without
            .ops
            .push(op(3, OpKind::Renew, 8000, 8800, OpResult::Unknown));
        let v = check(&without, &finals(6));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::Overlap);
        assert!(
            v[0].timeline
                .iter()
                .any(|o| o.kind == OpKind::Renew && o.result == OpResult::Unknown),
            "{}",
            v[0]
        );
    }

    #[test]
    fn repeated_token_is_reported() {
        let mut h = good();
        h.ops
            .push(op(4, OpKind::Acquire, 9000, 9010, granted(3, 2000)));
        let v = check(&h, &finals(3));
        assert!(
            v.iter().any(|v| v.kind == ViolationKind::TokenReused
                && v.detail == "token 3 granted to client 3 and to client 4"),
            "{v:?}"
        );
    }

    #[test]
    fn decreasing_token_is_reported() {
        let mut h = good();
        h.ops
            .push(op(4, OpKind::Acquire, 9000, 9010, granted(2, 2000)));
        let v = check(&h, &finals(3));
        let d: Vec<_> = v
            .iter()
            .filter(|v| v.kind == ViolationKind::TokenDecreased)
            .collect();
        assert_eq!(d.len(), 1, "{v:?}");
        assert_eq!(d[0].timeline.len(), 2);
        assert_eq!(d[0].timeline[1].invoke, ms(9000));
    }

    #[test]
    fn lost_acknowledgement_is_reported() {
        // the final read shows token 2 although token 3 was acknowledged
        let v = check(&good(), &finals(2));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, ViolationKind::AckLost);
        assert_eq!(v[0].timeline.len(), 1);
        assert_eq!(v[0].timeline[0].client, 3);
    }

    #[test]
    fn keys_are_checked_separately() {
        let mut h = good();
        // the same token on another key is not a conflict
        let mut other = op(9, OpKind::Acquire, 100, 110, granted(1, 2000));
        other.key = "ns/b".into();
        h.push(other);
        assert!(check(&h, &finals(3)).is_empty());
        assert_eq!(h.result_counts(), [6, 1, 1, 1, 0, 1]);
    }
}
