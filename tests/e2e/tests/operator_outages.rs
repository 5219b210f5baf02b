//! Operator scenarios on three real clusters (issue 8), continued: partition of the holder's
//! operator from the API server (2), API server restart (4), API server frozen past the TTL
//! (5), and a CronJob target with `suspend` actions (8). Measured times are printed as
//! `MEASURED …` lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operator_support;

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use operator_support::*;

const TARGET: &str = "worker";
const LEASE: &str = "worker";
const TTL: Duration = Duration::from_secs(6);
const HEARTBEAT: Duration = Duration::from_secs(2);

fn side_of(s: &Sample, which: &str) -> Option<(i32, i32)> {
    if which == "east" { s.east } else { s.west }
}

/// First sample at or after `since` where `which` is (in)active as asked.
fn first(samples: &[Sample], since: Instant, which: &str, active: bool) -> Option<Instant> {
    samples
        .iter()
        .find(|s| {
            s.at >= since
                && Sample::active(side_of(s, which)) == active
                && side_of(s, which).is_some()
        })
        .map(|s| s.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_survive_partitions_and_api_server_outages() {
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
    let holder = wait_for(&topo, Duration::from_secs(30), "one active cluster", || {
        active_side(&topo, TARGET)
    })
    .await;
    // Let the standby settle into its retry cadence.
    tokio::time::sleep(HEARTBEAT * 2).await;

    // --- Scenario 2: partition the holder's operator from the API server. ---
    let standby = other(holder);
    let t_cut = Instant::now();
    topo.tenant(holder).proxy.cut();
    wait_for(
        &topo,
        TTL * 3,
        "standby takes over after the partition",
        || async { active_side(&topo, TARGET).await.filter(|s| *s == standby) },
    )
    .await;
    // Let the sampler catch up with what the poll above saw.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let samples = sampler.snapshot();
    let stopped = first(&samples, t_cut, holder, false).expect("old target seen stopped");
    let started = first(&samples, t_cut, standby, true).expect("new target seen started");
    println!(
        "MEASURED partition: holder stopped its target {:?} after the cut (local deadline <= {:?}); standby started {:?} after the cut; gap {:?}",
        stopped - t_cut,
        TTL,
        started - t_cut,
        started.saturating_duration_since(stopped)
    );
    assert!(
        stopped - t_cut < TTL,
        "holder must stop before its local deadline (cut + TTL)"
    );
    assert!(
        stopped <= started,
        "no overlap: old stopped before new started"
    );
    assert!(sampler.overlaps(t_cut).is_empty(), "never both active");
    assert!(
        started - t_cut <= TTL + HEARTBEAT + Duration::from_secs(2),
        "takeover within TTL + one heartbeat (+2 s sampling/latency slack)"
    );
    let status = bl_status(topo.tenant(holder), LEASE).await;
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "HeartbeatHealthy" && c["status"] == "False"),
        "{status}"
    );
    // Heal: the old holder rejoins as standby, without flapping.
    topo.tenant(holder).proxy.heal();
    let token = bl_status(topo.tenant(standby), LEASE).await["fencingToken"].as_i64();
    let healed = Instant::now();
    wait_for(
        &topo,
        Duration::from_secs(10),
        "old holder rejoins as standby",
        || async {
            (bl_status(topo.tenant(holder), LEASE).await["leaseState"] == "waiting").then_some(())
        },
    )
    .await;
    while healed.elapsed() < TTL * 2 {
        assert_eq!(
            active_side(&topo, TARGET).await,
            Some(standby),
            "flapped{}",
            topo.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        bl_status(topo.tenant(standby), LEASE).await["fencingToken"].as_i64(),
        token,
        "no transition after healing"
    );
    let holder = standby;

    // --- Scenario 4: restart berth-apiserver; the holder keeps its lease. ---
    let token = bl_status(topo.tenant(holder), LEASE).await["fencingToken"].as_i64();
    let t0 = Instant::now();
    topo.apiserver.as_mut().unwrap().kill9();
    topo.start_apiserver().await;
    println!(
        "MEASURED berth-apiserver restart (kill -> listening): {:?}",
        t0.elapsed()
    );
    while t0.elapsed() < TTL * 2 {
        assert_eq!(
            active_side(&topo, TARGET).await,
            Some(holder),
            "{}",
            topo.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let inactive: Vec<_> = sampler
        .snapshot()
        .into_iter()
        .filter(|s| s.at >= t0 && side_of(s, holder).is_some_and(|r| r.0 != 2))
        .collect();
    assert!(
        inactive.is_empty(),
        "holder's target never stopped: {inactive:?}"
    );
    assert_eq!(
        bl_status(topo.tenant(holder), LEASE).await["fencingToken"].as_i64(),
        token,
        "same grant across the restart"
    );

    // --- Scenario 5: freeze the API server past the TTL. ---
    let t_stop = Instant::now();
    topo.apiserver.as_ref().unwrap().signal("STOP");
    tokio::time::sleep(TTL + Duration::from_secs(4)).await;
    let samples = sampler.snapshot();
    let stopped = first(&samples, t_stop, holder, false);
    topo.apiserver.as_ref().unwrap().signal("CONT");
    let stopped = stopped.expect("holder stopped its target while the API server was frozen");
    println!(
        "MEASURED API server frozen: holder stopped its target {:?} after SIGSTOP",
        stopped - t_stop
    );
    assert!(stopped - t_stop < TTL, "stopped before the local deadline");
    let winner = wait_for(
        &topo,
        Duration::from_secs(20),
        "exactly one winner after SIGCONT",
        || active_side(&topo, TARGET),
    )
    .await;
    let t_cont = Instant::now();
    println!("scenario 5: {winner} won after SIGCONT");
    assert!(sampler.overlaps(t_stop).is_empty(), "never both active");
    tokio::time::sleep(TTL).await;
    assert_eq!(
        active_side(&topo, TARGET).await,
        Some(winner),
        "stable winner"
    );
    assert!(sampler.overlaps(t_cont).is_empty());
    drop(sampler);

    // --- Scenario 8: a CronJob target with suspend actions. ---
    let cron = cron_resource();
    for t in [&topo.east, &topo.west] {
        let cj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1beta1",
            "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": NS},
            "spec": {
                "schedule": "0 0 1 1 *",
                "suspend": true,
                "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "example.invalid/job"}]
                }}}}
            }
        }))
        .unwrap();
        Api::<DynamicObject>::namespaced_with(t.cluster.client(), NS, &cron)
            .create(&PostParams::default(), &cj)
            .await
            .unwrap();
        let bl: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.skaphos.io/v1alpha1",
            "kind": "BerthLease",
            "metadata": {"name": "nightly", "namespace": NS},
            "spec": {
                "leaseName": "nightly",
                "holderIdentity": "fallback-holder",
                "ttlSeconds": 6,
                "heartbeatIntervalSeconds": 2,
                "semantics": "at-most-once",
                // Written for current clusters; served as batch/v1beta1 on 1.20.
                "target": {"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly"},
                "acquireAction": {"suspend": false},
                "releaseAction": {"suspend": true}
            }
        }))
        .unwrap();
        apply_berthlease(t, &bl).await;
    }
    let holder = wait_for(
        &topo,
        Duration::from_secs(20),
        "one unsuspended CronJob",
        || cron_side(&topo),
    )
    .await;
    let t0 = Instant::now();
    topo.tenant_mut(holder).operator.as_mut().unwrap().kill9();
    let survivor = other(holder);
    wait_for(&topo, TTL * 3, "CronJob failover", || async {
        (suspended(topo.tenant(survivor)).await == Some(false)).then_some(())
    })
    .await;
    println!("MEASURED CronJob kill -9 failover: {:?}", t0.elapsed());
    assert!(t0.elapsed() <= TTL + HEARTBEAT + Duration::from_secs(3));
    topo.start_operator(holder).await;
    wait_for(
        &topo,
        Duration::from_secs(15),
        "restarted operator suspends its CronJob",
        || async { (suspended(topo.tenant(holder)).await == Some(true)).then_some(()) },
    )
    .await;
    // Graceful handover back.
    let t0 = Instant::now();
    topo.tenant(survivor)
        .operator
        .as_ref()
        .unwrap()
        .signal("TERM");
    wait_for(
        &topo,
        Duration::from_secs(20),
        "CronJob SIGTERM handover",
        || async { cron_side(&topo).await.filter(|s| *s == holder) },
    )
    .await;
    println!("MEASURED CronJob SIGTERM handover: {:?}", t0.elapsed());
    assert!(t0.elapsed() <= HEARTBEAT + Duration::from_secs(3));
}

fn cron_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("batch", "v1beta1", "CronJob"))
}

async fn suspended(t: &Tenant) -> Option<bool> {
    Api::<DynamicObject>::namespaced_with(t.cluster.client(), NS, &cron_resource())
        .get("nightly")
        .await
        .ok()
        .and_then(|o| o.data["spec"]["suspend"].as_bool())
}

async fn cron_side(topo: &Topology) -> Option<&'static str> {
    match (suspended(&topo.east).await?, suspended(&topo.west).await?) {
        (false, true) => Some("east"),
        (true, false) => Some("west"),
        _ => None,
    }
}
