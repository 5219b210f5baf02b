//! A per-key linearizability check of a recorded [`History`] against a sequential lease model
//! with time.
//!
//! [`crate::history::check`] verifies Berth's safety promises directly (grant windows, token
//! order, lost acknowledgements). This module asks the stronger question: is there one total
//! order of the calls on a key, each taking effect at an instant between its invocation and its
//! answer, under which a single sequential lease (SPEC §2) gives exactly the answers the
//! clients saw? It is the search of Wing & Gong / Lowe (as in Porcupine), explored event by
//! event ("just in time", Lowe 2017): the history is turned into a list of invocation and
//! answer entries sorted by time; at each answer every configuration (the set of calls still
//! open that are already linearized, as a bitset, and the model state) is extended by
//! linearizing open calls until the answered call is placed; configurations are deduplicated
//! in a hash set and dominated ones dropped; calls that leave the state unchanged (denials,
//! reads) are placed at once, without branching. Calls that closed are no longer part of the
//! configuration, so a quiet moment (no call open) cuts the history into independent segments
//! on its own and the cost stays linear in the run length. A budget
//! ([`Options::max_states`]) makes a key "undecided" instead of hanging. A simulated history
//! of 170 000 calls on 3 keys (8 clients, 9 % unanswered) checks in about a second in a release
//! build.
//!
//! # The model
//!
//! State of a key: never granted, held by a client with a token, or released (a tombstone that
//! keeps the token). A held lease carries the real-time bounds `[lo, hi]` of its expiry on the
//! clients' clock. The server reads its clock once per call, at some instant `r` between the
//! call's invocation and its answer, judges expiry at `r` and stamps a grant at `r`; so a grant
//! or renewal answered with `ttlRemaining = ttl` expires in `[invoke + ttl, complete + ttl]`
//! (widened by [`Options::clock_slack`] for truncation to microseconds and clock-rate
//! differences). The store commits a call at an instant `w >= r` in the linearization order;
//! the model time `t` is that commit instant: at least the previous call's, at least the
//! invocation, at most the answer (`t <= complete`), and at least `lo` when the call needs the
//! lease expired. Every call placed before an answer at instant `now` commits by `now`, and every
//! call still to be placed is answered at or after `now`, so any `t <= now` allows exactly what
//! `now` allows: the search takes `t = now` (then "may have expired" is simply `lo <= now`).
//! Because the clock is read *before* the store, a call may judge a lease live at an instant
//! earlier than its commit: "may be live" is therefore tested at the call's invocation
//! (`invoke < hi`), "may have expired" at its commit (`t >= lo`). Transitions for client `c`:
//!
//! - acquire → granted `g`: renewal in place when `c` holds `g` and it may be live; otherwise
//!   the lease must be free at `t` (never granted, released, or `t >= lo`) and `g` must be the
//!   previous token + 1 (1 for a new key). → denied `(h, g)`: `h != c` holds `g`, maybe live.
//! - renew → granted `g`: `c` holds `g`, maybe live. → lost (or conflict): `c` does not hold the
//!   token it sent, or the lease is released, or it may have expired.
//! - release → released (HTTP 204): `c`'s own grant becomes a tombstone, live or expired; or
//!   nothing changes because the lease is free, or held by another (or under another token)
//!   but may have expired. → conflict (409): another holder or token holds it, maybe live.
//! - get → granted `g`: `c` holds `g`, maybe live; → denied `(h, g)`: `h` holds `g`, maybe
//!   live; → lost or released: no live holder (free, or may have expired).
//! - An unanswered call (unknown) may take effect at any instant after its invocation, any
//!   number of times (an over-approximation: more permissive, never stricter), or never: an
//!   acquire may grant or renew in place for `c`, a renew may renew `c`'s grant of the token it
//!   sent, a release may end it; an unanswered get is ignored. Such an effect leaves the expiry
//!   unbounded above (the request may be served late), never lowers the bound below (a late
//!   request never shortens a live grant, the assumption [`crate::history::check`] also makes)
//!   and gives a new grant at least [`Options::min_ttl`]. [`Options::unknown_horizon`] bounds
//!   how long after its answer it may still act (unbounded by default). Within one answer's
//!   search an unanswered acquire grants at most the highest token the calls placed there show
//!   (or one past the tokens before): a higher grant is just as possible later, when a call
//!   needs it.
//! - Answers a call cannot give (an acquire answered "lost", a get answered "conflict", …)
//!   carry no information and are accepted.
//!
//! The token a renew or release sent is not recorded; it is taken to be the token of the
//! client's latest acknowledged grant of the key (acquire or renew) answered before the call was
//! invoked, which is what every client in the harness sends; without one any token is assumed.
//! Denied holders are mapped to client ids by [`Options::holder_id`] (trailing digits:
//! `client-3` → 3). The key is assumed not to exist when the history starts.
//!
//! Why no false alarms: every bound is taken on the side that allows more (earliest possible
//! expiry for a takeover, latest for a renewal, clock read as early as the invocation, commit
//! as late as the answer being explained), and unanswered calls may act any number of times or
//! never. Histories of the chaos harness (kill -9, pauses past the TTL, partitions, latency,
//! database partitions; SQLite, PostgreSQL, MariaDB) check linearizable; a store without
//! compare-and-set does not (`tests/broken_store.rs`).
//! What it still rejects: two grants of a live lease, a token skipped or repeated, a renewal
//! accepted after the lease was taken over or released, a read showing a holder or token the
//! lease cannot have at that time, a denial naming a holder that never held it.
//!
//! [`History`]: crate::history::History

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::history::{History, Op, OpKind, OpResult};

/// Tunables of the check.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Configurations explored per key before the key is reported undecided.
    pub max_states: u64,
    /// Widening of every expiry bound: clock truncation and rate differences between the
    /// clients' clock and the server's.
    pub clock_slack: Duration,
    /// Smallest TTL an unanswered acquire or renew may have asked for (the server's `--min-ttl`).
    pub min_ttl: Duration,
    /// How long after its (missing) answer an unanswered call may still take effect; `None`:
    /// any time.
    pub unknown_horizon: Option<Duration>,
    /// Maps a holder name of a denied answer to the client id that uses it.
    pub holder_id: fn(&str) -> Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_states: 5_000_000,
            clock_slack: Duration::from_millis(5),
            min_ttl: Duration::from_secs(1),
            unknown_horizon: None,
            holder_id: trailing_id,
        }
    }
}

/// The trailing decimal digits of a holder name as a client id: `client-3` → 3, `7` → 7.
pub fn trailing_id(holder: &str) -> Option<u32> {
    let digits = holder.bytes().rev().take_while(u8::is_ascii_digit).count();
    holder.get(holder.len() - digits..)?.parse().ok()
}

/// The verdict on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the calls explains every answer.
    Linearizable,
    /// No order does; see [`LinearResult::failure`].
    NotLinearizable,
    /// The search gave up (budget exhausted, or too many calls open at once).
    Undecided,
}

/// Why a key is not linearizable: the answer no order could explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The key.
    pub key: String,
    /// Operations answered and placed before the failure (the linearizable prefix).
    pub placed: usize,
    /// What could not be placed and what the model allowed just before.
    pub detail: String,
    /// The call whose answer could not be placed, then the calls open at that moment.
    pub unplaced: Vec<Op>,
    /// The last placed calls and recent unanswered ones, ordered by invocation.
    pub context: Vec<Op>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "NOT LINEARIZABLE on {} after {} placed operations: {}",
            self.key, self.placed, self.detail
        )?;
        writeln!(f, "  last placed and unanswered calls:")?;
        for op in &self.context {
            writeln!(f, "    {op}")?;
        }
        writeln!(f, "  could not be placed:")?;
        for op in &self.unplaced {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// The result for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearResult {
    /// The key.
    pub key: String,
    /// Operations checked (unanswered gets included, though they carry no information).
    pub ops: usize,
    /// The verdict.
    pub verdict: Verdict,
    /// Configurations explored.
    pub states: u64,
    /// Why the search gave up, for [`Verdict::Undecided`].
    pub undecided: Option<String>,
    /// The failure, for [`Verdict::NotLinearizable`].
    pub failure: Option<Failure>,
}

impl fmt::Display for LinearResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "NOT linearizable",
            Verdict::Undecided => "undecided",
        };
        write!(
            f,
            "{}: {} operations, {verdict}, {} states explored",
            self.key, self.ops, self.states
        )?;
        if let Some(why) = &self.undecided {
            write!(f, " ({why})")?;
        }
        writeln!(f)?;
        if let Some(failure) = &self.failure {
            write!(f, "{failure}")?;
        }
        Ok(())
    }
}

/// The results of every key of a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinearReport {
    /// One result per key, ordered by key.
    pub keys: Vec<LinearResult>,
}

impl LinearReport {
    /// Whether every key is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|k| k.verdict == Verdict::Linearizable)
    }

    /// The keys found not linearizable.
    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.keys.iter().filter_map(|k| k.failure.as_ref())
    }

    /// The keys left undecided.
    pub fn undecided(&self) -> impl Iterator<Item = &LinearResult> {
        self.keys.iter().filter(|k| k.verdict == Verdict::Undecided)
    }

    /// Configurations explored over all keys.
    pub fn states(&self) -> u64 {
        self.keys.iter().map(|k| k.states).sum()
    }
}

impl fmt::Display for LinearReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for k in &self.keys {
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

/// Checks every key of `history` with the default [`Options`].
pub fn check(history: &History) -> LinearReport {
    check_with(history, &Options::default())
}

/// Checks every key of `history`.
pub fn check_with(history: &History, options: &Options) -> LinearReport {
    let mut per_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in &history.ops {
        per_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    LinearReport {
        keys: per_key
            .values()
            .map(|ops| check_key_with(ops, options))
            .collect(),
    }
}

/// Checks the operations of one key with the default [`Options`].
pub fn check_key(ops: &[Op]) -> LinearResult {
    check_key_with(ops, &Options::default())
}

/// Checks the operations of one key (all of `ops` are taken to be on the key of the first).
pub fn check_key_with(ops: &[Op], options: &Options) -> LinearResult {
    Search::new(ops, options).run()
}

/// Model time standing for "no bound".
const NEVER: Duration = Duration::MAX;

/// The sequential model's state at one point of a linearization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    /// The holder of the current grant; `None`: never granted or released.
    holder: Option<u32>,
    /// The current (or last) token; 0 before the first grant.
    token: i64,
    /// Earliest instant the current grant may expire (0 when free).
    lo: Duration,
    /// Latest instant it may still be live ([`NEVER`]: unbounded; 0 when free).
    hi: Duration,
    /// Commit instant of the last linearized call.
    t: Duration,
}

impl State {
    fn describe(&self) -> String {
        match self.holder {
            None if self.token == 0 => "never granted".to_owned(),
            None => format!("released (token {})", self.token),
            Some(h) => {
                let hi = if self.hi == NEVER {
                    "unbounded".to_owned()
                } else {
                    format!("{:.3}s", self.hi.as_secs_f64())
                };
                format!(
                    "held by client {h} with token {} (expires {:.3}s..{hi})",
                    self.token,
                    self.lo.as_secs_f64()
                )
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Config {
    /// Open calls already linearized, by slot.
    lin: u128,
    state: State,
}

/// One answered call, prepared.
#[derive(Debug, Clone, Copy)]
struct Call {
    client: u32,
    kind: OpKind,
    invoke: Duration,
    complete: Duration,
    answer: Answer,
    /// The token a renew or release sent, when known.
    sent: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Granted {
        token: i64,
        ttl: Duration,
    },
    /// `holder` is `None` when the name maps to no client.
    Denied {
        holder: Option<u32>,
        token: i64,
    },
    Lost,
    Released,
    Conflict,
}

/// What unanswered calls of one client may still do, merged per (client, call, sent token):
/// from the earliest invocation to the latest deadline.
#[derive(Debug, Clone, Copy)]
struct Effect {
    client: u32,
    kind: OpKind,
    sent: Option<i64>,
    invoke: Duration,
    until: Duration,
}

/// The unanswered calls seen so far, merged per client and call (and sent token).
#[derive(Debug, Default)]
struct Effects {
    acquires: HashMap<u32, Effect>,
    /// Renews (`false`) and releases (`true`) by client and sent token.
    others: HashMap<(u32, bool, Option<i64>), Effect>,
}

impl Effects {
    fn add(&mut self, e: Effect) {
        let slot = match e.kind {
            OpKind::Acquire => self.acquires.entry(e.client),
            OpKind::Renew | OpKind::Release => {
                let key = (e.client, e.kind == OpKind::Release, e.sent);
                let merged = self.others.entry(key).or_insert(e);
                merged.invoke = merged.invoke.min(e.invoke);
                merged.until = merged.until.max(e.until);
                return;
            }
            OpKind::Get => return,
        };
        let merged = slot.or_insert(e);
        merged.invoke = merged.invoke.min(e.invoke);
        merged.until = merged.until.max(e.until);
    }

    /// Calls `f` with every merged effect that may change `st`.
    fn for_state(&self, st: &State, mut f: impl FnMut(&Effect)) {
        self.acquires.values().for_each(&mut f);
        if let Some(h) = st.holder {
            for release in [false, true] {
                for sent in [Some(st.token), None] {
                    if let Some(e) = self.others.get(&(h, release, sent)) {
                        f(e);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Entry {
    /// An invocation (sorts before an answer at the same instant: calls that touch are
    /// concurrent).
    Invoke(usize),
    Answer(usize),
}

struct Search<'a> {
    ops: &'a [Op],
    options: &'a Options,
    calls: Vec<Option<Call>>,
    /// Per operation: the token its client last had acknowledged before invoking it.
    sent: Vec<Option<i64>>,
    states: u64,
    /// Instant of the last answer placed.
    previous_answer: Duration,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Op], options: &'a Options) -> Self {
        // Sent tokens: the latest acknowledged grant of the same client answered before.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| (ops[i].invoke, ops[i].complete));
        let mut by_complete: Vec<usize> = order.clone();
        by_complete.sort_by_key(|&i| ops[i].complete);
        let mut sent = vec![None; ops.len()];
        let mut last_grant: HashMap<u32, i64> = HashMap::new();
        let mut next = 0;
        for &i in &order {
            while let Some(&j) = by_complete.get(next) {
                if ops[j].complete >= ops[i].invoke {
                    break;
                }
                if let (OpKind::Acquire | OpKind::Renew, OpResult::Granted { token, .. }) =
                    (ops[j].kind, &ops[j].result)
                {
                    last_grant.insert(ops[j].client, *token);
                }
                next += 1;
            }
            sent[i] = last_grant.get(&ops[i].client).copied();
        }
        let calls = ops
            .iter()
            .zip(sent.iter().copied())
            .map(|(op, sent)| {
                let answer = match &op.result {
                    OpResult::Granted {
                        token,
                        ttl_remaining,
                    } => Answer::Granted {
                        token: *token,
                        ttl: *ttl_remaining,
                    },
                    OpResult::Denied { holder, token } => Answer::Denied {
                        holder: (options.holder_id)(holder),
                        token: *token,
                    },
                    OpResult::Lost => Answer::Lost,
                    OpResult::Released => Answer::Released,
                    OpResult::Conflict => Answer::Conflict,
                    OpResult::Unknown => return None,
                };
                Some(Call {
                    client: op.client,
                    kind: op.kind,
                    invoke: op.invoke,
                    complete: op.complete,
                    answer,
                    sent,
                })
            })
            .collect();
        Self {
            ops,
            options,
            calls,
            sent,
            states: 0,
            previous_answer: Duration::ZERO,
        }
    }

    fn result(&self, verdict: Verdict) -> LinearResult {
        LinearResult {
            key: self.ops.first().map(|o| o.key.clone()).unwrap_or_default(),
            ops: self.ops.len(),
            verdict,
            states: self.states,
            undecided: None,
            failure: None,
        }
    }

    fn undecided(&self, why: String) -> LinearResult {
        LinearResult {
            undecided: Some(why),
            ..self.result(Verdict::Undecided)
        }
    }

    fn run(mut self) -> LinearResult {
        let mut entries: Vec<(Duration, Entry)> = Vec::with_capacity(self.ops.len() * 2);
        for (i, op) in self.ops.iter().enumerate() {
            if self.calls[i].is_none() && op.kind == OpKind::Get {
                continue; // an unanswered read changes nothing
            }
            entries.push((op.invoke, Entry::Invoke(i)));
            if self.calls[i].is_some() {
                entries.push((op.complete.max(op.invoke), Entry::Answer(i)));
            }
        }
        entries.sort_unstable();

        let mut frontier: Vec<Config> = vec![Config {
            lin: 0,
            state: State {
                holder: None,
                token: 0,
                lo: Duration::ZERO,
                hi: Duration::ZERO,
                t: Duration::ZERO,
            },
        }];
        let mut slots: [Option<usize>; 128] = [None; 128];
        let mut slot_of: HashMap<usize, usize> = HashMap::new();
        let mut effects = Effects::default();
        let mut placed = 0usize;
        let mut recent: VecDeque<usize> = VecDeque::new();
        let mut buf = Vec::new();
        for (now, entry) in entries {
            match entry {
                Entry::Invoke(i) => {
                    let op = &self.ops[i];
                    if self.calls[i].is_none() {
                        let until = self
                            .options
                            .unknown_horizon
                            .map_or(NEVER, |h| op.complete.saturating_add(h));
                        let sent = if op.kind == OpKind::Acquire {
                            None
                        } else {
                            self.sent[i]
                        };
                        effects.add(Effect {
                            client: op.client,
                            kind: op.kind,
                            sent,
                            invoke: op.invoke,
                            until,
                        });
                        recent.push_back(i);
                        continue;
                    }
                    let Some(s) = slots.iter().position(Option::is_none) else {
                        return self.undecided(format!(
                            "more than {} calls open at {:.3}s",
                            slots.len(),
                            now.as_secs_f64()
                        ));
                    };
                    slots[s] = Some(i);
                    slot_of.insert(i, s);
                }
                Entry::Answer(i) => {
                    let Some(s) = slot_of.remove(&i) else {
                        continue;
                    };
                    let next = match self.close(&frontier, &slots, s, &effects, &mut buf) {
                        Ok(next) => next,
                        Err(why) => return self.undecided(why),
                    };
                    if next.is_empty() {
                        let failure = self.failure(i, &frontier, &slots, s, placed, &recent);
                        return LinearResult {
                            failure: Some(failure),
                            ..self.result(Verdict::NotLinearizable)
                        };
                    }
                    frontier = next;
                    self.previous_answer = now;
                    slots[s] = None;
                    placed += 1;
                    recent.push_back(i);
                    while recent.len() > 12 {
                        recent.pop_front();
                    }
                }
            }
        }
        self.result(Verdict::Linearizable)
    }

    /// Extends every configuration until the call in slot `s` is linearized; returns the
    /// configurations that placed it, with its slot freed, dominated ones dropped.
    ///
    /// Every call placed here is placed before the answered one, so at or before its answer
    /// `now`; every call still to be placed (here or later) was answered at or after `now`.
    /// A model time `t <= now` therefore constrains nothing that `now` does not: all times are
    /// taken as `now`, the latest (most permissive) instant, which also makes calls that do not
    /// change the state (denials, reads) free moves: they are placed at once, without
    /// branching.
    fn close(
        &mut self,
        frontier: &[Config],
        slots: &[Option<usize>; 128],
        s: usize,
        effects: &Effects,
        buf: &mut Vec<State>,
    ) -> Result<Vec<Config>, String> {
        let bit = 1u128 << s;
        let Some(target) = slots[s].and_then(|i| self.calls[i]) else {
            return Ok(frontier.to_vec());
        };
        let now = target.complete.max(target.invoke);
        let at_now = |st: State| State {
            t: st.t.max(now),
            ..st
        };
        let open: Vec<(usize, Call)> = slots
            .iter()
            .enumerate()
            .filter(|&(p, _)| p != s)
            .filter_map(|(p, i)| i.and_then(|i| self.calls[i]).map(|c| (p, c)))
            .collect();
        // An unanswered acquire's grant matters now only up to the highest token the calls
        // placed here show, or one grant past the tokens before (a release refused because
        // someone else took it); higher ones can be granted just as well when a later call
        // needs them (its effects stay available).
        let before = frontier.iter().map(|c| c.state.token).max().unwrap_or(0);
        let needed = open
            .iter()
            .map(|(_, c)| c)
            .chain([&target])
            .filter_map(|c| match c.answer {
                Answer::Granted { token, .. } | Answer::Denied { token, .. } => Some(token),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            .max(before + 1);
        let mut out: HashSet<Config> = HashSet::new();
        let mut seen: HashSet<Config> = HashSet::new();
        let mut stack: Vec<Config> = frontier
            .iter()
            .map(|c| Config {
                lin: c.lin,
                state: at_now(c.state),
            })
            .collect();
        while let Some(mut c) = stack.pop() {
            if c.state.t > now {
                continue;
            }
            if c.lin & bit != 0 {
                // Placed earlier, before another call's answer.
                out.insert(Config {
                    lin: c.lin & !bit,
                    state: c.state,
                });
                continue;
            }
            // Free moves: calls whose answer holds in this state and leave it unchanged.
            for &(p, call) in &open {
                if c.lin & (1u128 << p) != 0 {
                    continue;
                }
                self.step(&c.state, &call, buf);
                if buf.drain(..).any(|st| at_now(st) == c.state) {
                    c.lin |= 1u128 << p;
                }
            }
            if !seen.insert(c) {
                continue;
            }
            self.states += 1;
            if self.states > self.options.max_states {
                return Err(format!(
                    "budget of {} states exhausted at {:.3}s",
                    self.options.max_states,
                    now.as_secs_f64()
                ));
            }
            self.step(&c.state, &target, buf);
            for st in buf.drain(..) {
                let st = at_now(st);
                if st.t <= now {
                    out.insert(Config {
                        lin: c.lin,
                        state: st,
                    });
                }
            }
            for &(p, call) in &open {
                if c.lin & (1u128 << p) != 0 {
                    continue;
                }
                self.step(&c.state, &call, buf);
                for st in buf.drain(..) {
                    let st = at_now(st);
                    if st.t <= now && st != c.state {
                        stack.push(Config {
                            lin: c.lin | (1u128 << p),
                            state: st,
                        });
                    }
                }
            }
            effects.for_state(&c.state, |e| self.effect(&c.state, e, now, needed, buf));
            for st in buf.drain(..) {
                let st = at_now(st);
                if st.t <= now && st != c.state {
                    stack.push(Config {
                        lin: c.lin,
                        state: st,
                    });
                }
            }
        }
        Ok(prune(out))
    }

    /// The state just after a grant of `token` to `client` by `call`.
    fn granted(&self, call: &Call, token: i64, ttl: Duration, t: Duration) -> State {
        let slack = self.options.clock_slack;
        State {
            holder: Some(call.client),
            token,
            lo: call.invoke.saturating_add(ttl).saturating_sub(slack),
            hi: call.complete.saturating_add(ttl).saturating_add(slack),
            t,
        }
    }

    /// The instant, at or after `st.t`, at which the lease may be free for a call answered at
    /// `limit`.
    fn free_at(st: &State, limit: Duration) -> Option<Duration> {
        let t = if st.holder.is_some() {
            st.t.max(st.lo)
        } else {
            st.t
        };
        (t <= limit).then_some(t)
    }

    /// The states a call with its recorded answer may lead to from `st`.
    fn step(&self, st: &State, call: &Call, out: &mut Vec<State>) {
        let base = State {
            t: st.t.max(call.invoke),
            ..*st
        };
        if base.t > call.complete {
            return;
        }
        let c = call.client;
        // The server may have read its clock as early as the invocation.
        let maybe_live = |h: u32, token: i64| {
            base.holder == Some(h) && base.token == token && call.invoke < base.hi
        };
        let unchanged_if_expired = |out: &mut Vec<State>| {
            if let Some(t) = Self::free_at(&base, call.complete) {
                out.push(State { t, ..base });
            }
        };
        let mine =
            |sent: Option<i64>| base.holder == Some(c) && sent.is_none_or(|tok| tok == base.token);
        match (call.kind, call.answer) {
            (OpKind::Acquire, Answer::Granted { token, ttl }) => {
                if maybe_live(c, token) {
                    out.push(self.granted(call, token, ttl, base.t));
                }
                if token == base.token + 1
                    && let Some(t) = Self::free_at(&base, call.complete)
                {
                    out.push(self.granted(call, token, ttl, t));
                }
            }
            (OpKind::Acquire, Answer::Denied { holder, token }) => {
                if let Some(h) = holder
                    && h != c
                    && maybe_live(h, token)
                {
                    out.push(base);
                }
            }
            (OpKind::Renew, Answer::Granted { token, ttl }) => {
                if maybe_live(c, token) {
                    out.push(self.granted(call, token, ttl, base.t));
                }
            }
            (OpKind::Renew, Answer::Lost | Answer::Conflict) => {
                if base.holder.is_none() || !mine(call.sent) || call.sent.is_none() {
                    out.push(base);
                } else {
                    unchanged_if_expired(out);
                }
            }
            (OpKind::Release, Answer::Released) => {
                if base.holder.is_none() {
                    out.push(base);
                } else if base.holder == Some(c) {
                    if mine(call.sent) {
                        out.push(State {
                            holder: None,
                            lo: Duration::ZERO,
                            hi: Duration::ZERO,
                            ..base
                        });
                    }
                    if call.sent.is_none_or(|tok| tok != base.token) {
                        unchanged_if_expired(out);
                    }
                } else {
                    unchanged_if_expired(out);
                }
            }
            (OpKind::Release, Answer::Conflict) => {
                let own = base.holder == Some(c) && call.sent == Some(base.token);
                if base.holder.is_some() && !own && call.invoke < base.hi {
                    out.push(base);
                }
            }
            (OpKind::Get, Answer::Granted { token, .. }) => {
                if maybe_live(c, token) {
                    out.push(base);
                }
            }
            (OpKind::Get, Answer::Denied { holder, token }) => {
                if let Some(h) = holder
                    && maybe_live(h, token)
                {
                    out.push(base);
                }
            }
            (OpKind::Get, Answer::Lost | Answer::Released) => unchanged_if_expired(out),
            // Answers the call cannot give carry no information.
            _ => out.push(base),
        }
    }

    /// The states an unanswered call may lead to from `st`, taking effect at or before `limit`.
    /// Its horizon is checked against the previous answer (the earliest instant the closure may
    /// stand for), never stricter than the instant itself.
    fn effect(&self, st: &State, e: &Effect, limit: Duration, needed: i64, out: &mut Vec<State>) {
        let t = st.t.max(e.invoke);
        if t > limit || e.until < self.previous_answer {
            return;
        }
        let slack = self.options.clock_slack;
        let c = e.client;
        let earliest_end = |from: Duration| {
            from.saturating_add(self.options.min_ttl)
                .saturating_sub(slack)
        };
        let held = st.holder == Some(c) && e.sent.is_none_or(|tok| tok == st.token);
        let in_place = held && e.invoke < st.hi;
        match e.kind {
            OpKind::Acquire | OpKind::Renew => {
                if in_place {
                    out.push(State {
                        lo: st.lo.max(earliest_end(e.invoke)),
                        hi: NEVER,
                        t,
                        ..*st
                    });
                }
                if e.kind == OpKind::Acquire && st.token < needed {
                    let from = if st.holder.is_some() {
                        e.invoke.max(st.lo)
                    } else {
                        e.invoke
                    };
                    if let Some(t) = Self::free_at(&State { t, ..*st }, limit) {
                        out.push(State {
                            holder: Some(c),
                            token: st.token + 1,
                            lo: earliest_end(from),
                            hi: NEVER,
                            t,
                        });
                    }
                }
            }
            OpKind::Release => {
                if held {
                    out.push(State {
                        holder: None,
                        lo: Duration::ZERO,
                        hi: Duration::ZERO,
                        t,
                        ..*st
                    });
                }
            }
            OpKind::Get => {}
        }
    }

    fn failure(
        &self,
        i: usize,
        frontier: &[Config],
        slots: &[Option<usize>; 128],
        s: usize,
        placed: usize,
        recent: &VecDeque<usize>,
    ) -> Failure {
        let op = &self.ops[i];
        let mut unplaced = vec![op.clone()];
        let mut open: Vec<Op> = slots
            .iter()
            .enumerate()
            .filter(|&(p, _)| p != s)
            .filter_map(|(_, j)| j.map(|j| self.ops[j].clone()))
            .collect();
        open.sort_by_key(|o| (o.invoke, o.complete));
        unplaced.extend(open);
        let mut context: Vec<Op> = recent.iter().map(|&j| self.ops[j].clone()).collect();
        context.sort_by_key(|o| (o.invoke, o.complete));
        let mut states: Vec<String> = frontier
            .iter()
            .map(|c| c.state.describe())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let more = states.len().saturating_sub(4);
        states.truncate(4);
        let mut detail = format!(
            "no order of the open calls explains client {}'s {} answered at {:.3}s; before it \
             the lease could be: {}",
            op.client,
            kind_name(op.kind),
            op.complete.as_secs_f64(),
            states.join("; ")
        );
        if more > 0 {
            detail.push_str(&format!(" (and {more} more)"));
        }
        Failure {
            key: op.key.clone(),
            placed,
            detail,
            unplaced,
            context,
        }
    }
}

fn kind_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Acquire => "acquire",
        OpKind::Renew => "renew",
        OpKind::Release => "release",
        OpKind::Get => "get",
    }
}

/// Drops configurations another one dominates: same holder and token, a superset of the open
/// calls linearized, an earlier model time and a wider expiry interval allow everything the
/// other allows.
fn prune(configs: HashSet<Config>) -> Vec<Config> {
    let mut groups: HashMap<(Option<u32>, i64), Vec<Config>> = HashMap::new();
    for c in configs {
        groups
            .entry((c.state.holder, c.state.token))
            .or_default()
            .push(c);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        // Most linearized first, then the widest interval: dominators come before the dominated.
        group.sort_by_key(|c| {
            (
                std::cmp::Reverse(c.lin.count_ones()),
                c.state.t,
                c.state.lo,
                std::cmp::Reverse(c.state.hi),
            )
        });
        let mut kept: Vec<Config> = Vec::new();
        for c in group {
            let dominated = kept.iter().any(|k| {
                k.lin & c.lin == c.lin
                    && k.state.t <= c.state.t
                    && k.state.lo <= c.state.lo
                    && k.state.hi >= c.state.hi
            });
            if !dominated {
                kept.push(c);
            }
        }
        out.extend(kept);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::print_stdout)]
mod tests {
    use super::*;
    use crate::history::History;

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

    fn denied(holder: u32, token: i64) -> OpResult {
        OpResult::Denied {
            holder: format!("client-{holder}"),
            token,
        }
    }

    fn assert_ok(ops: &[Op]) -> LinearResult {
        let r = check_key(ops);
        assert_eq!(r.verdict, Verdict::Linearizable, "{r}");
        assert!(r.failure.is_none());
        r
    }

    fn assert_bad(ops: &[Op]) -> Failure {
        let r = check_key(ops);
        assert_eq!(r.verdict, Verdict::NotLinearizable, "{r}");
        r.failure.unwrap()
    }

    #[test]
    fn holder_names_map_to_client_ids() {
        assert_eq!(trailing_id("client-3"), Some(3));
        assert_eq!(trailing_id("17"), Some(17));
        assert_eq!(trailing_id("someone"), None);
        assert_eq!(trailing_id(""), None);
    }

    #[test]
    fn concurrent_acquires_one_wins() {
        // Both invoked together: whichever the server took first won, the other saw it.
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 30, denied(2, 1)),
            op(2, OpKind::Acquire, 5, 20, granted(1, 2000)),
            op(3, OpKind::Get, 10, 40, denied(2, 1)),
            op(2, OpKind::Get, 50, 60, granted(1, 1940)),
        ]);
    }

    #[test]
    fn takeover_after_expiry_and_after_release() {
        let r = assert_ok(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 1000)),
            op(2, OpKind::Acquire, 500, 510, denied(1, 1)),
            op(1, OpKind::Renew, 600, 610, granted(1, 1000)),
            // expires between 1.6 s and 1.61 s: an acquire straddling it may see either
            op(2, OpKind::Acquire, 1590, 1620, granted(2, 1000)),
            op(1, OpKind::Renew, 1700, 1710, OpResult::Lost),
            // client 2 holds it live: a release of token 1 is refused
            op(1, OpKind::Release, 1720, 1730, OpResult::Conflict),
            op(2, OpKind::Release, 1800, 1810, OpResult::Released),
            op(3, OpKind::Get, 1820, 1830, OpResult::Lost),
            op(3, OpKind::Acquire, 1840, 1850, granted(3, 2000)),
            op(2, OpKind::Release, 1900, 1910, OpResult::Conflict),
        ]);
        assert_eq!(r.ops, 10);
        assert!(r.states >= 10, "{r}");
    }

    #[test]
    fn the_history_checkers_good_example_is_linearizable() {
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(2, OpKind::Acquire, 20, 30, denied(1, 1)),
            op(1, OpKind::Renew, 1000, 1010, granted(1, 2000)),
            op(1, OpKind::Get, 1100, 1110, granted(1, 1900)),
            op(2, OpKind::Acquire, 3100, 3110, granted(2, 2000)),
            op(1, OpKind::Renew, 3200, 3210, OpResult::Lost),
            op(2, OpKind::Release, 4000, 4010, OpResult::Released),
            op(3, OpKind::Acquire, 4020, 4030, granted(3, 2000)),
            op(3, OpKind::Renew, 4500, 4600, OpResult::Unknown),
        ]);
    }

    #[test]
    fn unanswered_calls_may_or_may_not_have_acted() {
        // Did not act: the next grant is token 1.
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 800, OpResult::Unknown),
            op(2, OpKind::Acquire, 900, 910, granted(1, 2000)),
        ]);
        // Did act (token 1 to client 1, expired later): the next grant is token 2.
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 800, OpResult::Unknown),
            op(2, OpKind::Acquire, 1500, 1510, granted(2, 2000)),
        ]);
        // Acted late, after its timeout: client 1 holds it when client 2 asks.
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 800, OpResult::Unknown),
            op(2, OpKind::Get, 900, 910, OpResult::Lost),
            op(2, OpKind::Acquire, 5000, 5010, denied(1, 1)),
        ]);
        // An unanswered release may have ended the holder's grant at once.
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(1, OpKind::Release, 100, 900, OpResult::Unknown),
            op(2, OpKind::Acquire, 200, 210, granted(2, 2000)),
        ]);
        // An unanswered renew may have extended it.
        assert_ok(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 1000)),
            op(1, OpKind::Renew, 900, 1700, OpResult::Unknown),
            op(2, OpKind::Acquire, 1500, 1510, denied(1, 1)),
        ]);
    }

    #[test]
    fn two_grants_of_a_live_lease_fail() {
        let f = assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(2, OpKind::Acquire, 500, 510, granted(2, 2000)),
        ]);
        assert_eq!(f.placed, 1);
        assert_eq!(f.unplaced[0].client, 2);
        assert!(
            f.detail.contains("held by client 1 with token 1"),
            "{}",
            f.detail
        );
        let text = f.to_string();
        assert!(
            text.starts_with("NOT LINEARIZABLE on ns/a after 1 placed operations"),
            "{text}"
        );
        assert!(
            text.contains("granted token 2 ttlRemaining 2000ms"),
            "{text}"
        );
    }

    #[test]
    fn skipped_and_repeated_tokens_fail() {
        // skipped: released token 1, next grant is 3
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(1, OpKind::Release, 100, 110, OpResult::Released),
            op(2, OpKind::Acquire, 200, 210, granted(3, 2000)),
        ]);
        // repeated: token 1 again after expiry
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 1000)),
            op(2, OpKind::Acquire, 1500, 1510, granted(1, 1000)),
        ]);
        // the same token to a second holder while both calls overlap
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 100, granted(1, 1000)),
            op(2, OpKind::Acquire, 0, 100, granted(1, 1000)),
        ]);
    }

    #[test]
    fn renew_after_takeover_fails() {
        let f = assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 1000)),
            op(2, OpKind::Acquire, 2000, 2010, granted(2, 1000)),
            op(1, OpKind::Renew, 2100, 2110, granted(1, 1000)),
        ]);
        assert_eq!(f.placed, 2);
        // and a renew of a released grant
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(1, OpKind::Release, 100, 110, OpResult::Released),
            op(1, OpKind::Renew, 200, 210, granted(1, 2000)),
        ]);
        // a live holder's renew reported lost
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(1, OpKind::Renew, 500, 510, OpResult::Lost),
        ]);
    }

    #[test]
    fn stale_reads_fail() {
        // a read after the release still shows the holder
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(1, OpKind::Release, 100, 110, OpResult::Released),
            op(2, OpKind::Get, 200, 210, denied(1, 1)),
        ]);
        // a read after a new grant shows the old token
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 1000)),
            op(2, OpKind::Acquire, 1500, 1510, granted(2, 1000)),
            op(3, OpKind::Get, 1600, 1610, denied(1, 1)),
        ]);
        // a read shows the lease free while it is surely held
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(3, OpKind::Get, 500, 510, OpResult::Lost),
        ]);
    }

    #[test]
    fn denial_naming_a_holder_that_never_held_it_fails() {
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(2, OpKind::Acquire, 100, 110, denied(7, 1)),
        ]);
        assert_bad(&[
            op(1, OpKind::Acquire, 0, 10, granted(1, 2000)),
            op(
                2,
                OpKind::Acquire,
                100,
                110,
                OpResult::Denied {
                    holder: "nobody".into(),
                    token: 1,
                },
            ),
        ]);
        // a conflict on release while nobody holds it
        assert_bad(&[op(1, OpKind::Release, 0, 10, OpResult::Conflict)]);
    }

    #[test]
    fn budget_makes_a_key_undecided() {
        let ops = [
            op(1, OpKind::Acquire, 0, 10, granted(1, 1000)),
            op(2, OpKind::Acquire, 20, 30, denied(1, 1)),
            op(3, OpKind::Get, 40, 50, denied(1, 1)),
        ];
        let r = check_key_with(
            &ops,
            &Options {
                max_states: 2,
                ..Options::default()
            },
        );
        assert_eq!(r.verdict, Verdict::Undecided, "{r}");
        assert!(
            r.to_string().contains("budget of 2 states exhausted"),
            "{r}"
        );
        assert_eq!(check_key(&ops).verdict, Verdict::Linearizable);
    }

    #[test]
    fn report_splits_keys() {
        let mut h = History::new();
        h.push(op(1, OpKind::Acquire, 0, 10, granted(1, 2000)));
        let mut other = op(2, OpKind::Acquire, 5, 15, granted(1, 2000));
        other.key = "ns/b".into();
        h.push(other);
        let r = check(&h);
        assert!(r.is_linearizable(), "{r}");
        assert_eq!(r.keys.len(), 2);
        assert_eq!(r.keys[1].key, "ns/b");
        h.push(op(3, OpKind::Acquire, 20, 30, granted(2, 2000)));
        let r = check(&h);
        assert!(!r.is_linearizable());
        assert_eq!(r.failures().count(), 1);
        assert!(
            r.to_string()
                .contains("ns/a: 2 operations, NOT linearizable"),
            "{r}"
        );
    }

    /// A seeded simulation of a sequential lease server and the chaos workload's clients:
    /// each call is served atomically at one instant inside its interval; some answers are
    /// lost (unknown), some requests never arrive, some arrive after the client gave up.
    /// `broken`: the server sometimes grants a live lease to another client.
    pub(crate) fn simulate(seed: u64, calls: usize, keys: usize, broken: bool) -> History {
        use rand::rngs::StdRng;
        use rand::{Rng as _, SeedableRng as _};
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;

        #[derive(Clone, Copy)]
        struct Rec {
            holder: Option<u32>,
            token: i64,
            exp: u64,
        }
        struct Call {
            client: u32,
            kind: OpKind,
            key: usize,
            token: i64,
            invoke: u64,
            result: OpResult,
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let clients = 8u32;
        let mut held: Vec<Option<(usize, i64, u32)>> = vec![None; clients as usize];
        let mut recs: Vec<Option<Rec>> = vec![None; keys];
        let mut pending: Vec<Call> = Vec::new();
        // (time µs, seq, event, call or client)
        let mut queue: BinaryHeap<Reverse<(u64, u64, u8, usize)>> = BinaryHeap::new();
        let mut seq = 0u64;
        for c in 0..clients {
            queue.push(Reverse((u64::from(c) * 1000, seq, 0, c as usize)));
            seq += 1;
        }
        let mut h = History::new();
        let timeout = 800_000u64;
        while let Some(Reverse((now, _, ev, id))) = queue.pop() {
            if h.ops.len() >= calls {
                break;
            }
            match ev {
                // invoke by client `id`
                0 => {
                    let client = id as u32;

                    let (kind, key, token) = match held[id] {
                        None if rng.random_bool(0.15) => {
                            (OpKind::Get, rng.random_range(0..keys), 0)
                        }
                        None => (OpKind::Acquire, rng.random_range(0..keys), 0),
                        Some((k, t, 0)) => (OpKind::Release, k, t),
                        Some((k, t, _)) => (OpKind::Renew, k, t),
                    };
                    let call = pending.len();
                    pending.push(Call {
                        client,
                        kind,
                        key,
                        token,
                        invoke: now,
                        result: OpResult::Unknown,
                    });
                    let fate: f64 = rng.random();
                    if fate < 0.03 {
                        // never arrives
                        queue.push(Reverse((now + timeout, seq, 2, call)));
                    } else if fate < 0.06 {
                        // arrives after the client gave up
                        queue.push(Reverse((now + timeout, seq, 2, call)));
                        seq += 1;
                        let late = now + timeout + rng.random_range(1..3_000_000);
                        queue.push(Reverse((late, seq, 3, call)));
                    } else {
                        queue.push(Reverse((now + rng.random_range(100..30_000), seq, 1, call)));
                    }
                    seq += 1;
                }
                // served (1: answer follows; 3: nobody waits for the answer)
                1 | 3 => {
                    let call = &mut pending[id];
                    let ttl: u64 = if call.client.is_multiple_of(2) {
                        1_000_000
                    } else {
                        2_000_000
                    };
                    let rec = &mut recs[call.key];
                    let live = rec.filter(|r| r.holder.is_some() && now < r.exp);
                    let c = call.client;
                    call.result = match call.kind {
                        OpKind::Acquire => match live {
                            Some(r) if r.holder == Some(c) => {
                                *rec = Some(Rec {
                                    exp: now + ttl,
                                    ..r
                                });
                                granted_us(r.token, ttl)
                            }
                            Some(r) if !(broken && rng.random_bool(0.3)) => OpResult::Denied {
                                holder: format!("client-{}", r.holder.unwrap_or(0)),
                                token: r.token,
                            },
                            _ => {
                                let token = rec.map_or(1, |r| r.token + 1);
                                *rec = Some(Rec {
                                    holder: Some(c),
                                    token,
                                    exp: now + ttl,
                                });
                                granted_us(token, ttl)
                            }
                        },
                        OpKind::Renew => match live {
                            Some(r) if r.holder == Some(c) && r.token == call.token => {
                                *rec = Some(Rec {
                                    exp: now + ttl,
                                    ..r
                                });
                                granted_us(r.token, ttl)
                            }
                            _ => OpResult::Lost,
                        },
                        OpKind::Release => match *rec {
                            Some(r) if r.holder == Some(c) && r.token == call.token => {
                                *rec = Some(Rec { holder: None, ..r });
                                OpResult::Released
                            }
                            _ if live.is_some() => OpResult::Conflict,
                            _ => OpResult::Released,
                        },
                        OpKind::Get => match live {
                            Some(r) if r.holder == Some(c) => OpResult::Granted {
                                token: r.token,
                                ttl_remaining: Duration::from_micros(r.exp - now),
                            },
                            Some(r) => OpResult::Denied {
                                holder: format!("client-{}", r.holder.unwrap_or(0)),
                                token: r.token,
                            },
                            None => OpResult::Lost,
                        },
                    };
                    if ev == 1 {
                        queue.push(Reverse((now + rng.random_range(100..30_000), seq, 2, id)));
                        seq += 1;
                    }
                }
                // answer (or timeout) reaches the client
                _ => {
                    let call = &pending[id];
                    let mut result = call.result.clone();
                    if now - call.invoke >= timeout || rng.random_bool(0.03) {
                        result = OpResult::Unknown;
                    }
                    let client = call.client as usize;
                    held[client] = match (&result, held[client]) {
                        (OpResult::Granted { token, .. }, None) if call.kind == OpKind::Acquire => {
                            Some((call.key, *token, rng.random_range(1..5)))
                        }
                        (OpResult::Granted { .. }, Some((k, t, n)))
                            if call.kind == OpKind::Renew =>
                        {
                            Some((k, t, n - 1))
                        }
                        _ => None,
                    };
                    h.push(Op {
                        client: call.client,
                        key: format!("sim/k{}", call.key),
                        kind: call.kind,
                        invoke: Duration::from_micros(call.invoke),
                        complete: Duration::from_micros(now),
                        result,
                    });
                    let think = if held[client].is_some() {
                        rng.random_range(200_000..600_000)
                    } else {
                        rng.random_range(20_000..300_000)
                    };
                    queue.push(Reverse((now + think, seq, 0, client)));
                    seq += 1;
                }
            }
        }
        h
    }

    fn granted_us(token: i64, ttl: u64) -> OpResult {
        OpResult::Granted {
            token,
            ttl_remaining: Duration::from_micros(ttl),
        }
    }

    #[test]
    fn simulated_correct_server_is_linearizable() {
        for seed in 0..20 {
            let h = simulate(seed, 3000, 2, false);
            let counts = h.result_counts();
            assert!(counts[0] > 100 && counts[5] > 50, "{counts:?}");
            let r = check(&h);
            assert!(r.is_linearizable(), "seed {seed}:\n{r}");
        }
    }

    #[test]
    fn simulated_broken_server_is_caught() {
        for seed in 0..20 {
            let h = simulate(seed, 3000, 2, true);
            let r = check(&h);
            assert!(
                r.failures().count() >= 1,
                "seed {seed}: a server granting live leases passed:\n{r}"
            );
        }
    }

    /// The checker's speed on a long history (run with `--ignored --nocapture`, in release).
    #[test]
    #[ignore = "measurement: cargo test -p berth-chaos --release --lib -- --ignored --nocapture"]
    fn speed_on_a_long_history() {
        let n = std::env::var("BERTH_LINEAR_OPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(170_000);
        let h = simulate(7, n, 3, false);
        let horizon = std::env::var("BERTH_LINEAR_HORIZON_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let start = std::time::Instant::now();
        let r = check_with(
            &h,
            &Options {
                unknown_horizon: horizon,
                ..Options::default()
            },
        );
        let took = start.elapsed();
        println!(
            "{} operations (counts {:?}) checked in {:.2}s: {:.0} ops/s, {} states\n{r}",
            h.ops.len(),
            h.result_counts(),
            took.as_secs_f64(),
            h.ops.len() as f64 / took.as_secs_f64(),
            r.states()
        );
        assert!(r.is_linearizable(), "{r}");
    }
}
