//! The Kubernetes Lease store through real `berth-apiserver` processes
//! (`--store-backend k8s`) against a real kube-apiserver 1.20.2 started by the berth-e2e
//! harness: an HTTP round trip that lands in Lease objects, two replicas with eight
//! concurrent acquirers of one key, two replicas with 32 clients racing for five keys, and a
//! throughput run of 2,000 leases through HTTP.
//!
//! Skipped (with a message) unless `BERTH_TEST_KUBE_BIN_DIR` is set (`hack/kube-test-env.sh`
//! prints it); fails instead with `BERTH_REQUIRE_INTEGRATION=1`. One cluster serves every test
//! of this binary; each test has its own coordination namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_api::LeaseState;
use berth_client::{Client, ListOptions};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use support::{Apiserver, Pki};

/// A coordination namespace on the shared test cluster and the flags that point a server at
/// it, or `None` when the cluster is not configured (after the harness printed why).
async fn coordination(prefix: &str) -> Option<(kube::Client, String, Vec<String>)> {
    let cluster = berth_e2e::shared_cluster_or_skip().await?;
    let ns = cluster
        .create_namespace(prefix)
        .await
        .expect("create the coordination namespace");
    let args = vec![
        "--store-backend".to_owned(),
        "k8s".to_owned(),
        "--coordination-namespace".to_owned(),
        ns.clone(),
        "--coordination-kubeconfig".to_owned(),
        cluster.kubeconfig_path().display().to_string(),
    ];
    Some((cluster.client(), ns, args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_round_trip_lands_in_lease_objects() {
    let Some((kube, coord_ns, args)) = coordination("berth-http").await else {
        return;
    };
    let pki = Pki::new();
    let server = Apiserver::start("k8s", &pki, &args).await;
    let c = server.client();
    c.readyz()
        .await
        .expect("ready with the coordination cluster reachable");
    let ttl = Duration::from_secs(30);

    let first = c.acquire("team", "db", "east", ttl).await.unwrap();
    assert!(first.acquired);
    assert_eq!(first.holder, "east");
    assert_eq!(first.fencing_token, 1);
    assert!(first.ttl_remaining_millis > 29_000, "{first:?}");

    // The grant is a Lease object in the coordination namespace.
    let leases: Api<Lease> = Api::namespaced(kube, &coord_ns);
    let obj = leases.get("team.db").await.expect("Lease team.db exists");
    let spec = obj.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("east"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(30));

    // Someone else is told who holds it.
    let denied = c.acquire("team", "db", "west", ttl).await.unwrap();
    assert!(!denied.acquired);
    assert_eq!(denied.holder, "east");
    assert_eq!(denied.fencing_token, 1);

    // Renew keeps the token; a wrong token is refused.
    let renewed = c.renew("team", "db", "east", 1, ttl).await.unwrap();
    assert!(renewed.acquired);
    assert_eq!(renewed.fencing_token, 1);
    let wrong = c.renew("team", "db", "east", 7, ttl).await.unwrap();
    assert!(!wrong.acquired);
    let after = leases.get("team.db").await.unwrap();
    assert_ne!(
        after.metadata.resource_version, obj.metadata.resource_version,
        "the renew wrote the object"
    );

    // Read endpoints.
    let got = c.get("team", "db").await.unwrap().expect("lease exists");
    assert_eq!(got.state, LeaseState::Held);
    assert_eq!(got.holder, "east");
    assert_eq!(got.fencing_token, 1);
    assert!(c.get("team", "nothing").await.unwrap().is_none());
    c.acquire("team", "cache", "east", ttl).await.unwrap();
    c.acquire("other", "db", "west", ttl).await.unwrap();
    let team = c.list(Some("team"), &ListOptions::default()).await.unwrap();
    let names: Vec<_> = team.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cache", "db"]);
    let all = c.list(None, &ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
    let west = ListOptions {
        holder: Some("west".to_owned()),
        ..ListOptions::default()
    };
    let by_holder = c.list(None, &west).await.unwrap();
    assert_eq!(by_holder.items.len(), 1);
    assert_eq!(by_holder.items[0].namespace, "other");

    // Release: someone else's release conflicts, the holder's leaves a tombstone that keeps
    // the token, and the next grant gets token 2.
    let err = c.release("team", "db", "west", 1).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    c.release("team", "db", "east", 1).await.unwrap();
    c.release("team", "db", "east", 1).await.unwrap(); // idempotent
    let released = c.get("team", "db").await.unwrap().unwrap();
    assert_eq!(released.state, LeaseState::Released);
    assert_eq!(released.fencing_token, 1);
    let tomb = leases.get("team.db").await.unwrap().spec.unwrap();
    assert_eq!(tomb.holder_identity, None);
    assert_eq!(tomb.lease_transitions, Some(1));
    let next = c.acquire("team", "db", "west", ttl).await.unwrap();
    assert!(next.acquired);
    assert_eq!(next.fencing_token, 2);
    assert_eq!(
        leases
            .get("team.db")
            .await
            .unwrap()
            .spec
            .unwrap()
            .lease_transitions,
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_eight_acquirers_one_winner() {
    const ACQUIRERS: usize = 8;
    const ROUNDS: i64 = 5;
    let Some((_kube, _coord_ns, args)) = coordination("berth-race").await else {
        return;
    };
    let pki = Pki::new();
    let a = Apiserver::start("k8s-a", &pki, &args).await;
    let b = Apiserver::start("k8s-b", &pki, &args).await;
    let clients: Vec<Client> = (0..ACQUIRERS)
        .map(|i| {
            if i.is_multiple_of(2) {
                a.client()
            } else {
                b.client()
            }
        })
        .collect();
    // Each round races for the same key: first while it is absent, then after each release.
    for round in 1..=ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(ACQUIRERS));
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (c, barrier) = (c.clone(), barrier.clone());
                tokio::spawn(async move {
                    let holder = format!("cluster-{i}");
                    barrier.wait().await;
                    let r = c
                        .acquire("shared", "leader", &holder, Duration::from_secs(30))
                        .await
                        .expect("acquire");
                    (holder, r)
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.acquired).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner");
        let (winner, granted) = winners[0];
        assert_eq!(&granted.holder, winner);
        assert_eq!(
            granted.fencing_token, round,
            "round {round}: one new token per grant"
        );
        for (loser, r) in results.iter().filter(|(_, r)| !r.acquired) {
            assert_eq!(
                &r.holder, winner,
                "round {round}: {loser} was told the real winner"
            );
            assert_eq!(r.fencing_token, granted.fencing_token);
        }
        // Both replicas agree on the outcome.
        for c in [a.client(), b.client()] {
            let s = c.get("shared", "leader").await.unwrap().unwrap();
            assert_eq!(&s.holder, winner);
            assert_eq!(s.fencing_token, round);
        }
        // The winner lets go through the other replica.
        let index: usize = winner.trim_start_matches("cluster-").parse().unwrap();
        let other = if index.is_multiple_of(2) {
            b.client()
        } else {
            a.client()
        };
        other
            .release("shared", "leader", winner, granted.fencing_token)
            .await
            .expect("release");
        println!("round {round}: {winner} won with token {round}; 7 losers were told so");
    }
}

/// The same race as on PostgreSQL and MariaDB (`tests/replicas.rs`): 32 clients acquire, renew
/// and release five keys with 1–2 s TTLs through two replicas on one coordination namespace,
/// while both replicas sweep every second; no two live holders, tokens in grant order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_32_racing_clients() {
    let Some((_kube, _coord_ns, mut args)) = coordination("berth-race32").await else {
        return;
    };
    args.extend(
        [
            "--min-ttl",
            "1s",
            "--sweep-interval",
            "1s",
            "--sweep-grace",
            "2s",
        ]
        .map(String::from),
    );
    // The clock calibrations are logged at debug level.
    args.extend([
        "--log-level".to_owned(),
        format!("{},berth_store_k8s::clock=debug", support::QUIET_LOG),
    ]);
    let pki = Pki::new();
    let a = Apiserver::start("k8s-race-a", &pki, &args).await;
    let b = Apiserver::start("k8s-race-b", &pki, &args).await;
    // Each replica estimates the kube-apiserver's clock, never ahead of it and behind it by
    // at most its calibration window (ADR 0004). Replicas judge expiry at the early end of that
    // window and stamp writes with the late end, so no client's claim may overlap the next
    // grant at all, whichever replicas served them. The windows are printed for the record.
    support::race::race("k8s_two_replicas_32_racing_clients", &a, &b, |a, b| {
        let windows: Vec<Duration> = [a, b]
            .iter()
            .flat_map(|s| s.log_records(CALIBRATED))
            .map(|v| {
                v["uncertainty"]
                    .as_str()
                    .and_then(support::parse_debug_duration)
                    .unwrap_or_else(|| panic!("calibration record without uncertainty: {v}"))
            })
            .collect();
        assert!(!windows.is_empty(), "both replicas calibrated their clocks");
        println!("kube-apiserver clock calibration windows of both replicas: {windows:?}");
        Duration::ZERO
    })
    .await;
}

/// The message `KubeClock` logs (at debug level) after each calibration.
const CALIBRATED: &str = "calibrated against the kube-apiserver clock";

/// Runs `op(i)` for every `i < n` on `tasks` concurrent tasks; returns per-call latencies, the
/// wall time and the error messages.
async fn fan_out<F, Fut>(n: usize, tasks: usize, op: F) -> (Vec<Duration>, Duration, Vec<String>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (op, next) = (op.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (lat, errors);
                }
                let t0 = Instant::now();
                if let Err(e) = op(t, i).await {
                    errors.push(e);
                }
                lat.push(t0.elapsed());
            }
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), Vec::new());
    for h in handles {
        let (l, e) = h.await.unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    (lat, start.elapsed(), errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_2000_leases_64_clients() {
    const LEASES: usize = 2_000;
    const CLIENTS: usize = 64;
    const TTL: Duration = Duration::from_secs(30);
    let Some((kube, coord_ns, args)) = coordination("berth-load").await else {
        return;
    };
    let pki = Pki::new();
    let server = Apiserver::start("k8s-load", &pki, &args).await;
    let clients: Arc<Vec<Client>> = Arc::new((0..CLIENTS).map(|_| server.client()).collect());
    let holder = |i: usize| format!("holder-{}", i % 16);

    let cs = clients.clone();
    let (mut acquire_lat, acquire_wall, errors) = fan_out(LEASES, CLIENTS, move |t, i| {
        let c = cs[t].clone();
        async move {
            let r = c
                .acquire("load", &format!("lease-{i:04}"), &holder(i), TTL)
                .await
                .map_err(|e| format!("acquire lease-{i:04}: {e}"))?;
            if r.acquired && r.fencing_token == 1 {
                Ok(())
            } else {
                Err(format!("acquire lease-{i:04}: not granted: {r:?}"))
            }
        }
    })
    .await;
    assert!(
        errors.is_empty(),
        "{} acquire errors, first: {:?}",
        errors.len(),
        errors.first()
    );

    let cs = clients.clone();
    let (mut renew_lat, renew_wall, errors) = fan_out(LEASES, CLIENTS, move |t, i| {
        let c = cs[t].clone();
        async move {
            let r = c
                .renew("load", &format!("lease-{i:04}"), &holder(i), 1, TTL)
                .await
                .map_err(|e| format!("renew lease-{i:04}: {e}"))?;
            if r.acquired {
                Ok(())
            } else {
                Err(format!("renew lease-{i:04}: lost: {r:?}"))
            }
        }
    })
    .await;
    assert!(
        errors.is_empty(),
        "{} renew errors, first: {:?}",
        errors.len(),
        errors.first()
    );

    // Every lease is a Lease object, and the API lists them all as held.
    let objects: Api<Lease> = Api::namespaced(kube, &coord_ns);
    let count = objects
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(count, LEASES);
    let c = &clients[0];
    let (mut held, mut page) = (0, ListOptions::default());
    loop {
        let list = c.list(Some("load"), &page).await.unwrap();
        held += list
            .items
            .iter()
            .filter(|s| s.state == LeaseState::Held)
            .count();
        match list.continue_token {
            Some(t) => page.continue_token = Some(t),
            None => break,
        }
    }
    assert_eq!(held, LEASES);

    println!(
        "k8s store through HTTP, one berth-apiserver replica, {LEASES} leases, {CLIENTS} clients, ttl {TTL:?}:"
    );
    support::report("  acquire (new lease)", &mut acquire_lat, acquire_wall);
    support::report("  renew (one round)", &mut renew_lat, renew_wall);
}
