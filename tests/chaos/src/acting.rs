//! Acting logs: what clients that follow the "safe until" deadline actually did.
//!
//! A client that holds a lease "acts" (does the work the lease protects) only while its local
//! clock is before `invocation + ttlRemaining` of its latest acknowledged grant. Each stretch of
//! work is an [`Act`]. [`check`] verifies that acts of different clients on one key never
//! overlap in time: the property a lease exists for.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// One stretch of work a client did while it believed it held a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    /// Client id.
    pub client: u32,
    /// Lease key (`namespace/name`).
    pub key: String,
    /// Fencing token of the grant the client acted under.
    pub token: i64,
    /// Start (offset from the history's origin).
    pub start: Duration,
    /// End, exclusive.
    pub end: Duration,
}

impl fmt::Display for Act {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>9.3}s .. {:>9.3}s) client {:>3} acts on {} with token {}",
            self.start.as_secs_f64(),
            self.end.as_secs_f64(),
            self.client,
            self.key,
            self.token
        )
    }
}

/// What is wrong with a pair of acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFault {
    /// Two clients acted on the key at once.
    AtOnce,
    /// An act started after another act on the key under a higher token: the grants were
    /// not in token order, or a client acted on a grant that had already ended.
    TokenOrder,
}

/// Two acts on one key that break the lease's promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActOverlap {
    /// What is wrong.
    pub fault: ActFault,
    /// The key.
    pub key: String,
    /// The earlier-starting act.
    pub first: Act,
    /// The act that started while `first` was still running.
    pub second: Act,
}

impl fmt::Display for ActOverlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.fault {
            ActFault::AtOnce => "two clients acting at once",
            ActFault::TokenOrder => "an act under a lower token after one under a higher token",
        };
        writeln!(
            f,
            "VIOLATION {what} on {}: client {} (token {}) and client {} (token {})",
            self.key, self.first.client, self.first.token, self.second.client, self.second.token
        )?;
        writeln!(f, "  {}", self.first)?;
        writeln!(f, "  {}", self.second)
    }
}

/// Every pair of acts of different clients on one key that overlap, each pair once, and every
/// act that started after an act on the same key under a higher token (acts that never overlap
/// follow their grants, so their tokens only go up over time).
pub fn check(acts: &[Act]) -> Vec<ActOverlap> {
    let mut per_key: BTreeMap<&str, Vec<&Act>> = BTreeMap::new();
    for a in acts {
        if a.start < a.end {
            per_key.entry(a.key.as_str()).or_default().push(a);
        }
    }
    let mut out = Vec::new();
    for (key, mut list) in per_key {
        list.sort_by_key(|a| (a.start, a.end));
        // Acts still running at the current start instant.
        let mut active: Vec<&Act> = Vec::new();
        // The act with the highest token so far.
        let mut highest: Option<&Act> = None;
        for a in list {
            active.retain(|b| b.end > a.start);
            for b in &active {
                if b.client != a.client {
                    out.push(ActOverlap {
                        fault: ActFault::AtOnce,
                        key: key.to_owned(),
                        first: (*b).clone(),
                        second: a.clone(),
                    });
                }
            }
            match highest {
                // A pair acting at once is reported once, above.
                Some(h) if h.token > a.token && (h.end <= a.start || h.client == a.client) => {
                    out.push(ActOverlap {
                        fault: ActFault::TokenOrder,
                        key: key.to_owned(),
                        first: h.clone(),
                        second: a.clone(),
                    });
                }
                Some(h) if h.token >= a.token => {}
                _ => highest = Some(a),
            }
            active.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(client: u32, token: i64, start: u64, end: u64) -> Act {
        Act {
            client,
            key: "ns/a".into(),
            token,
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
        }
    }

    #[test]
    fn back_to_back_and_same_client_acts_pass() {
        let acts = vec![
            act(1, 1, 0, 100),
            act(1, 1, 50, 150), // the same client may overlap itself
            act(2, 2, 150, 300),
            act(3, 3, 300, 400),
        ];
        assert!(check(&acts).is_empty());
    }

    #[test]
    fn overlapping_acts_of_two_clients_are_reported() {
        // client 1 stalled past its deadline and acted anyway while client 2 held the key
        let mut acts = vec![
            act(1, 1, 0, 100),
            act(2, 2, 2100, 2300),
            act(1, 1, 2200, 2250),
        ];
        let mut other = act(4, 9, 2200, 2250);
        other.key = "ns/b".into();
        acts.push(other);
        let v = check(&acts);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].first.client, 2);
        assert_eq!(v[0].second.client, 1);
        assert_eq!(v[0].fault, ActFault::AtOnce);
        let text = v[0].to_string();
        assert!(
            text.starts_with("VIOLATION two clients acting at once on ns/a: client 2 (token 2)"),
            "{text}"
        );
    }

    #[test]
    fn an_act_under_an_older_token_after_a_newer_one_is_reported() {
        // client 1's grant (token 1) ended; client 2 acted under token 2; client 1 acted on
        // its stale grant later without overlapping anyone
        let acts = vec![act(1, 1, 0, 100), act(2, 2, 200, 300), act(1, 1, 400, 450)];
        let v = check(&acts);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].fault, ActFault::TokenOrder);
        assert_eq!((v[0].first.token, v[0].second.token), (2, 1));
        assert!(v[0].to_string().contains("lower token"), "{}", v[0]);
    }
}
