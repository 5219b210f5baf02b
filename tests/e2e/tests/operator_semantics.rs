//! Operator behaviour on real clusters beyond failover: `at-least-once` handover (never zero
//! active), lease-only BerthLeases, invalid specs, drift correction, retargeting, and two
//! operator replicas with `--leader-elect`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use operator_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_lease_only_invalid_drift_retarget_and_leader_election() {
    let Some(topo) = Topology::start().await else {
        return;
    };

    // --- at-least-once: deletion handover keeps one target active at every moment. ---
    for t in [&topo.east, &topo.west] {
        create_deployment(t, "alo", 0).await;
        apply_berthlease(t, &berthlease("alo", "alo", "at-least-once")).await;
    }
    let sampler = Sampler::start(
        topo.east.cluster.client(),
        topo.west.cluster.client(),
        "alo",
    );
    let holder = wait_for(&topo, Duration::from_secs(30), "one active cluster", || {
        active_side(&topo, "alo")
    })
    .await;
    let standby = other(holder);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t0 = Instant::now();
    delete_berthlease(topo.tenant(holder), "alo").await;
    wait_for(
        &topo,
        Duration::from_secs(20),
        "at-least-once handover",
        || async { active_side(&topo, "alo").await.filter(|s| *s == standby) },
    )
    .await;
    println!(
        "MEASURED at-least-once deletion handover (delete -> only the standby active): {:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let gaps: Vec<_> = sampler
        .snapshot()
        .into_iter()
        .filter(|s| {
            s.at >= t0
                && s.east.is_some()
                && s.west.is_some()
                && !Sample::active(s.east)
                && !Sample::active(s.west)
        })
        .collect();
    assert!(gaps.is_empty(), "a moment with no active target: {gaps:?}");
    drop(sampler);
    // Re-created, it joins as standby.
    apply_berthlease(
        topo.tenant(holder),
        &berthlease("alo", "alo", "at-least-once"),
    )
    .await;
    wait_for(
        &topo,
        Duration::from_secs(10),
        "re-created BerthLease waits",
        || async {
            (bl_status(topo.tenant(holder), "alo").await["leaseState"] == "waiting").then_some(())
        },
    )
    .await;

    // --- Lease-only BerthLease: one holder, the other waits; no target needed. ---
    let lease_only = |name: &str| {
        let mut bl = berthlease(name, "unused", "at-most-once");
        let spec = bl.data["spec"].as_object_mut().unwrap();
        spec.remove("target");
        spec.remove("acquireAction");
        spec.remove("releaseAction");
        bl
    };
    for t in [&topo.east, &topo.west] {
        apply_berthlease(t, &lease_only("lease-only")).await;
    }
    let states = wait_for(
        &topo,
        Duration::from_secs(20),
        "lease-only states",
        || async {
            let e = bl_status(&topo.east, "lease-only").await;
            let w = bl_status(&topo.west, "lease-only").await;
            let pair = (
                e["leaseState"].as_str()?.to_owned(),
                w["leaseState"].as_str()?.to_owned(),
            );
            (pair.0 != pair.1).then_some((pair, e, w))
        },
    )
    .await;
    let ((es, ws), e, w) = states;
    let held = if es == "held" { &e } else { &w };
    assert!(
        [es.as_str(), ws.as_str()].contains(&"held")
            && [es.as_str(), ws.as_str()].contains(&"waiting"),
        "{es}/{ws}"
    );
    assert!(held["fencingToken"].as_i64().unwrap() > 0);
    assert!(held["lastHeartbeat"].is_string(), "{held}");
    assert!(held["observedGeneration"].as_i64().unwrap() >= 1, "{held}");

    // --- Invalid spec: reported, never acquired. ---
    let mut bad = berthlease("bad", "unused", "at-most-once");
    bad.data["spec"]["heartbeatIntervalSeconds"] = 10.into();
    apply_berthlease(&topo.east, &bad).await;
    let status = wait_for(
        &topo,
        Duration::from_secs(10),
        "InvalidSpec condition",
        || async {
            let s = bl_status(&topo.east, "bad").await;
            s["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Acquired" && c["reason"] == "InvalidSpec")
                .then_some(s)
        },
    )
    .await;
    let cond = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Acquired")
        .unwrap()
        .clone();
    assert_eq!(
        cond["message"],
        "spec.heartbeatIntervalSeconds must be less than spec.ttlSeconds"
    );
    let reasons = event_reasons(&topo.east, "bad").await;
    assert!(reasons.contains_key("InvalidSpec"), "{reasons:?}");

    // --- Drift: a manual scale of the active target is undone within a heartbeat; a manual
    // scale-up of the standby's target is undone too. ---
    let holder = active_side(&topo, "alo").await.unwrap();
    let patch = |n: i32| serde_json::json!({"spec": {"replicas": n}});
    let t0 = Instant::now();
    topo.tenant(holder)
        .deployments()
        .patch_scale("alo", &PatchParams::default(), &Patch::Merge(patch(5)))
        .await
        .unwrap();
    topo.tenant(other(holder))
        .deployments()
        .patch_scale("alo", &PatchParams::default(), &Patch::Merge(patch(1)))
        .await
        .unwrap();
    wait_for(&topo, Duration::from_secs(10), "drift re-converged", || {
        active_side(&topo, "alo")
    })
    .await;
    println!("MEASURED drift re-converged after {:?}", t0.elapsed());
    let d: Deployment = topo.tenant(holder).deployments().get("alo").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(2));

    // --- Retargeting: the old target is stopped, the new one started. ---
    create_deployment(topo.tenant(holder), "alo2", 0).await;
    topo.tenant(holder)
        .berthleases()
        .patch(
            "alo",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"target": {"name": "alo2"}}})),
        )
        .await
        .unwrap();
    wait_for(&topo, Duration::from_secs(10), "retargeted", || async {
        let old = replicas(topo.tenant(holder), "alo").await?;
        let new = replicas(topo.tenant(holder), "alo2").await?;
        (old.0 == 0 && new.0 == 2).then_some(())
    })
    .await;

    // --- Two operator replicas with --leader-elect: one leads; kill -9 of the leader hands
    // over to the other without a lease transition. ---
    let token = bl_status(topo.tenant(holder), "alo").await["fencingToken"].as_i64();
    let mut topo = topo;
    topo.tenant_mut(holder).operator.as_mut().unwrap().kill9();
    let le = [
        "--leader-elect",
        "--leader-election-namespace",
        NS,
        "--leader-election-lease-duration",
        "3s",
        "--leader-election-renew-deadline",
        "2s",
        "--leader-election-retry-period",
        "500ms",
    ];
    let (mut a, ..) = topo.spawn_operator(holder, &le, "-a").await;
    let (mut b, ..) = topo.spawn_operator(holder, &le, "-b").await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(topo.tenant(holder).cluster.client(), NS);
    let leader_of = || async {
        let l = leases.get_opt("berth-operator-leader").await.ok()??;
        let id = l.spec?.holder_identity?;
        id.rsplit('_').next()?.parse::<u32>().ok()
    };
    let first = wait_for(&topo, Duration::from_secs(15), "a leader", leader_of).await;
    assert!(first == a.pid() || first == b.pid(), "leader {first}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leading = [&a, &b]
        .iter()
        .filter(|p| p.tail(1000).contains("became leader"))
        .count();
    assert_eq!(leading, 1, "exactly one replica leads");
    let (dead, survivor) = if first == a.pid() {
        (&mut a, &b)
    } else {
        (&mut b, &a)
    };
    let t0 = Instant::now();
    dead.kill9();
    let survivor_pid = survivor.pid();
    wait_for(
        &topo,
        Duration::from_secs(15),
        "the other replica leads",
        || async { (leader_of().await? == survivor_pid).then_some(()) },
    )
    .await;
    println!(
        "MEASURED operator leader failover (kill -9 leader -> other leads): {:?}",
        t0.elapsed()
    );
    wait_for(
        &topo,
        Duration::from_secs(10),
        "new leader heartbeats",
        || async { survivor.tail(1000).contains("became leader").then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        bl_status(topo.tenant(holder), "alo").await["fencingToken"].as_i64(),
        token,
        "same grant: the new leader renews as the same holder"
    );
    assert_eq!(
        replicas(topo.tenant(holder), "alo2").await.map(|r| r.0),
        Some(2)
    );
}
