//! Operator scenarios on three real clusters (issue 8): one holder, stable (1); kill -9 of the
//! holder's operator (3); SIGTERM of the holder's operator (7); deletion of the BerthLease in
//! the holder cluster (6). Measured times are printed as `MEASURED …` lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use std::time::{Duration, Instant};

use operator_support::*;

const TARGET: &str = "worker";
const LEASE: &str = "worker";
const TTL: Duration = Duration::from_secs(6);
const HEARTBEAT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_fail_over_and_hand_over_across_clusters() {
    let Some(mut topo) = Topology::start().await else {
        return;
    };
    for t in [&topo.east, &topo.west] {
        create_deployment(t, TARGET, 0).await;
    }
    apply_berthlease(&topo.east, &berthlease(LEASE, TARGET, "at-most-once")).await;
    apply_berthlease(&topo.west, &berthlease(LEASE, TARGET, "at-most-once")).await;
    let sampler = Sampler::start(
        topo.east.cluster.client(),
        topo.west.cluster.client(),
        TARGET,
    );

    // --- Scenario 1: exactly one cluster runs the target, stable over several TTLs. ---
    let holder = wait_for(&topo, Duration::from_secs(30), "one active cluster", || {
        active_side(&topo, TARGET)
    })
    .await;
    let standby = other(holder);
    let status = wait_for(&topo, Duration::from_secs(10), "holder status", || async {
        let s = bl_status(topo.tenant(holder), LEASE).await;
        (s["leaseState"] == "held").then_some(s)
    })
    .await;
    let token = status["fencingToken"].as_i64().unwrap();
    assert!(token > 0, "{status}");
    assert_eq!(status["currentHolder"], format!("cluster-{holder}"));
    assert_eq!(
        annotation(
            topo.tenant(holder),
            TARGET,
            "berth.skaphos.io/fencing-token"
        )
        .await,
        Some(token.to_string()),
        "target stamped with the fencing token"
    );
    let conditions = status["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Acquired" && c["status"] == "True" && c["reason"] == "Held"),
        "{status}"
    );
    let s = wait_for(&topo, Duration::from_secs(10), "standby status", || async {
        let s = bl_status(topo.tenant(standby), LEASE).await;
        (s["leaseState"] == "waiting").then_some(s)
    })
    .await;
    assert_eq!(s["currentHolder"], format!("cluster-{holder}"), "{s}");
    assert!(
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Acquired" && c["reason"] == "HeldByOther"),
        "{s}"
    );
    let stable_from = Instant::now();
    while stable_from.elapsed() < TTL * 3 {
        assert_eq!(
            active_side(&topo, TARGET).await,
            Some(holder),
            "holder changed during the stable period{}",
            topo.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now_token = bl_status(topo.tenant(holder), LEASE).await["fencingToken"].as_i64();
    assert_eq!(now_token, Some(token), "no transition while stable");
    assert!(
        sampler.overlaps(stable_from).is_empty(),
        "never both active"
    );
    let metrics = metrics_text(topo.tenant(holder)).await;
    for want in [
        "berth_operator_reconciles_total",
        "berth_operator_heartbeat_duration_seconds_count{outcome=\"acquired\"}",
        "berth_operator_leases{state=\"held\"} 1",
        "berth_operator_berth_api_reachable 1",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    let reasons = event_reasons(topo.tenant(holder), LEASE).await;
    assert!(reasons.contains_key("Acquired"), "{reasons:?}");
    assert!(reasons.contains_key("TargetActivated"), "{reasons:?}");
    println!(
        "scenario 1: {holder} holds with token {token}, stable for {:?}",
        TTL * 3
    );

    // --- Scenario 3: kill -9 the holder's operator. ---
    let killed = holder;
    let survivor = standby;
    let t0 = Instant::now();
    topo.tenant_mut(killed).operator.as_mut().unwrap().kill9();
    wait_for(
        &topo,
        TTL * 3,
        "standby takes over after kill -9",
        || async {
            replicas(topo.tenant(survivor), TARGET)
                .await
                .filter(|r| r.0 == 2)
        },
    )
    .await;
    let failover = t0.elapsed();
    println!("MEASURED kill -9 failover (kill -> standby scaled up): {failover:?}");
    assert!(
        failover <= TTL + HEARTBEAT + Duration::from_secs(3),
        "failover took {failover:?}, more than TTL + one retry + 3 s slack"
    );
    // Operator-level enforcement: with its operator gone, the dead cluster's target keeps
    // running.
    assert_eq!(
        replicas(topo.tenant(killed), TARGET).await.map(|r| r.0),
        Some(2),
        "the killed cluster's target is untouched while its operator is down"
    );
    let t1 = Instant::now();
    topo.start_operator(killed).await;
    wait_for(
        &topo,
        Duration::from_secs(15),
        "restarted operator stops its target",
        || async {
            replicas(topo.tenant(killed), TARGET)
                .await
                .filter(|r| r.0 == 0)
        },
    )
    .await;
    println!(
        "MEASURED restarted operator stops its stale target after {:?}",
        t1.elapsed()
    );
    assert_eq!(active_side(&topo, TARGET).await, Some(survivor));
    let new_token = bl_status(topo.tenant(survivor), LEASE).await["fencingToken"]
        .as_i64()
        .unwrap();
    assert!(new_token > token, "token {new_token} after {token}");

    // --- Scenario 7: SIGTERM the holder's operator: stop, confirm, release, hand over. ---
    let holder = survivor;
    let standby = other(holder);
    wait_for(
        &topo,
        Duration::from_secs(10),
        "restarted operator on standby",
        || async {
            (bl_status(topo.tenant(standby), LEASE).await["leaseState"] == "waiting").then_some(())
        },
    )
    .await;
    let t0 = Instant::now();
    topo.tenant(holder)
        .operator
        .as_ref()
        .unwrap()
        .signal("TERM");
    wait_for(
        &topo,
        Duration::from_secs(20),
        "SIGTERM handover",
        || async { active_side(&topo, TARGET).await.filter(|s| *s == standby) },
    )
    .await;
    let handover = t0.elapsed();
    println!("MEASURED SIGTERM graceful handover (signal -> standby scaled up): {handover:?}");
    let status = topo
        .tenant_mut(holder)
        .operator
        .as_mut()
        .unwrap()
        .wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "operator exits 0 after handing over: {status:?}{}",
        topo.logs()
    );
    assert!(
        handover <= HEARTBEAT + Duration::from_secs(3),
        "graceful handover took {handover:?}, more than about one heartbeat"
    );
    let overlaps = sampler.overlaps(t0);
    assert!(
        overlaps.is_empty(),
        "both active during handover: {overlaps:?}"
    );
    assert_no_gap_order(&sampler, t0, holder);
    topo.start_operator(holder).await;

    // --- Scenario 6: delete the BerthLease in the holder cluster. ---
    let holder = standby;
    let standby = other(holder);
    wait_for(
        &topo,
        Duration::from_secs(10),
        "restarted operator on standby",
        || async {
            (bl_status(topo.tenant(standby), LEASE).await["leaseState"] == "waiting").then_some(())
        },
    )
    .await;
    let t0 = Instant::now();
    delete_berthlease(topo.tenant(holder), LEASE).await;
    wait_for(
        &topo,
        Duration::from_secs(20),
        "handover after deletion",
        || async { active_side(&topo, TARGET).await.filter(|s| *s == standby) },
    )
    .await;
    let handover = t0.elapsed();
    println!("MEASURED deletion graceful handover (delete -> standby scaled up): {handover:?}");
    wait_for(
        &topo,
        Duration::from_secs(10),
        "finalizer removed",
        || async {
            topo.tenant(holder)
                .berthleases()
                .get_opt(LEASE)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        handover <= HEARTBEAT + Duration::from_secs(3),
        "deletion handover took {handover:?}"
    );
    assert!(
        sampler.overlaps(t0).is_empty(),
        "both active during deletion handover"
    );
    assert_no_gap_order(&sampler, t0, holder);
    let reasons = event_reasons(topo.tenant(holder), LEASE).await;
    assert!(reasons.contains_key("Released"), "{reasons:?}");
    // Re-created, it joins as standby.
    apply_berthlease(
        topo.tenant(holder),
        &berthlease(LEASE, TARGET, "at-most-once"),
    )
    .await;
    wait_for(
        &topo,
        Duration::from_secs(10),
        "re-created BerthLease waits",
        || async {
            (bl_status(topo.tenant(holder), LEASE).await["leaseState"] == "waiting").then_some(())
        },
    )
    .await;
    assert_eq!(active_side(&topo, TARGET).await, Some(standby));
}

/// The old holder's target was seen stopped before the new holder's target was seen started.
fn assert_no_gap_order(sampler: &Sampler, since: Instant, old: &str) {
    let samples: Vec<_> = sampler
        .snapshot()
        .into_iter()
        .filter(|s| s.at >= since)
        .collect();
    let side = |s: &Sample, which: &str| if which == "east" { s.east } else { s.west };
    let new = other(old);
    let first_new = samples.iter().find(|s| Sample::active(side(s, new)));
    let last_old = samples.iter().rev().find(|s| Sample::active(side(s, old)));
    if let (Some(n), Some(o)) = (first_new, last_old) {
        assert!(
            o.at < n.at,
            "old target still active after the new one started"
        );
        println!(
            "MEASURED gap between old stopped and new started (sampled): >= {:?}",
            n.at.saturating_duration_since(o.at)
        );
    }
}
