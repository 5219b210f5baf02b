//! `KubeStore` against a real kube-apiserver 1.20.2 started by the berth-e2e harness.
//!
//! Skipped (with a message) unless `BERTH_TEST_KUBE_BIN_DIR` is set; fails instead when
//! `BERTH_REQUIRE_INTEGRATION=1`. One cluster serves every test of this binary; each test
//! works in its own coordination namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::conformance::{self, Interleave};
use berth_core::{
    Acquire, Clock, Grant, Holder, LeaseKey, LeaseService, LeaseStore, ListParams, Renew,
    StoreError, SystemClock,
};
use berth_store_k8s::codec::{self, MANAGED_BY_LABEL};
use berth_store_k8s::{KubeStore, KubeStoreConfig};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const TTL: Duration = Duration::from_secs(30);

struct Env {
    client: kube::Client,
    ns: String,
    store: Arc<KubeStore>,
}

impl Env {
    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn service(&self) -> LeaseService {
        LeaseService::new(self.store.clone(), Arc::new(self.store.clock()))
    }
}

async fn env(prefix: &str) -> Option<Env> {
    let cluster = berth_e2e::shared_cluster_or_skip().await?;
    let client = cluster.client();
    let ns = cluster
        .create_namespace(prefix)
        .await
        .expect("create coordination namespace");
    let store = KubeStore::from_client(client.clone(), KubeStoreConfig::new(&ns)).expect("store");
    Some(Env {
        client,
        ns,
        store: Arc::new(store),
    })
}

fn key(ns: &str, name: &str) -> LeaseKey {
    LeaseKey::new(ns, name).expect("valid key")
}

fn holder(h: &str) -> Holder {
    Holder::new(h).expect("valid holder")
}

#[tokio::test]
async fn conformance_suite_passes() {
    let Some(env) = env("conf").await else {
        return;
    };
    conformance::run_all(env.store.clone()).await;
    env.store.ping().await.expect("ping");
}

#[tokio::test]
async fn eight_concurrent_acquirers_one_winner_losers_told() {
    let Some(env) = env("race").await else {
        return;
    };
    let svc = env.service();
    for round in 0..3 {
        let k = key("tenant", &format!("race-{round}"));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (svc, k) = (svc.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                svc.acquire(&k, &holder(&format!("cluster-{i}")), TTL).await
            }));
        }
        let mut winners = Vec::new();
        let mut told = Vec::new();
        for t in tasks {
            match t.await.unwrap().expect("no errors on a healthy store") {
                Acquire::Granted { lease, grant } => {
                    assert_eq!(grant, Grant::Created);
                    winners.push(lease.record.holder.unwrap());
                }
                Acquire::Denied(v) => told.push(v.live_holder().cloned().unwrap()),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
        assert_eq!(told.len(), 7);
        assert!(
            told.iter().all(|h| *h == winners[0]),
            "losers told {told:?}"
        );
        let stored = svc.get(&k).await.unwrap().unwrap();
        assert_eq!(stored.record.holder.as_ref(), Some(&winners[0]));
        assert_eq!(stored.record.fencing_token.get(), 1);
    }
}

#[tokio::test]
async fn metadata_edit_between_read_and_write_does_not_break_renew() {
    let Some(env) = env("meta").await else {
        return;
    };
    let racing = Interleave::new(env.store.clone());
    let svc = LeaseService::new(racing.clone(), Arc::new(env.store.clock()));
    let k = key("tenant", "db");
    let east = holder("east");
    let Acquire::Granted { lease, .. } = svc.acquire(&k, &east, TTL).await.unwrap() else {
        panic!("first acquire is granted");
    };
    let token = lease.record.fencing_token;

    // Someone adds a label and an annotation after the service read the lease.
    let leases = env.leases();
    let name = codec::object_name(&k);
    let (l2, n2) = (leases.clone(), name.clone());
    racing.before_next_put(async move {
        let patch = serde_json::json!({"metadata": {
            "labels": {"team": "payments"},
            "annotations": {"example.com/owner": "ops"}
        }});
        l2.patch(&n2, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("metadata edit");
    });
    let r = svc.renew(&k, &east, token, TTL).await.expect("renew");
    let Renew::Renewed(v) = r else {
        panic!("a metadata-only edit must not cost the holder its lease: {r:?}");
    };
    assert_eq!(v.record.fencing_token, token);
    let obj = leases.get(&name).await.unwrap();
    let labels = obj.metadata.labels.clone().unwrap_or_default();
    let ann = obj.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("payments"),
        "foreign label kept"
    );
    assert_eq!(
        ann.get("example.com/owner").map(String::as_str),
        Some("ops")
    );
    assert_eq!(codec::berth_version(&obj), Some(v.version));

    // Someone strips our label: the next write repairs it and list finds the lease again.
    let strip = serde_json::json!({"metadata": {"labels": {MANAGED_BY_LABEL: null}}});
    leases
        .patch(&name, &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .unwrap();
    let params = ListParams {
        namespace: Some("tenant".into()),
        ..ListParams::default()
    };
    assert!(
        env.store.list(&params).await.unwrap().is_empty(),
        "unlabelled: not listed"
    );
    let Renew::Renewed(_) = svc.renew(&k, &east, token, TTL).await.unwrap() else {
        panic!("renew after a label was stripped");
    };
    let obj = leases.get(&name).await.unwrap();
    assert_eq!(
        obj.metadata
            .labels
            .unwrap_or_default()
            .get(MANAGED_BY_LABEL)
            .map(String::as_str),
        Some("berth"),
        "label repaired"
    );
    assert_eq!(env.store.list(&params).await.unwrap().len(), 1);

    // A Berth write that lands in between is a real conflict: the stale renew loses.
    let (svc2, k2) = (env.service(), k.clone());
    racing.before_next_put(async move {
        let Ok(berth_core::Release::Released(_)) = svc2.release(&k2, &holder("east"), 1).await
        else {
            panic!("release in between");
        };
    });
    let r = svc.renew(&k, &east, token, TTL).await.unwrap();
    assert!(
        matches!(r, Renew::Lost(Some(_))),
        "renew after a release loses: {r:?}"
    );
}

#[tokio::test]
async fn out_of_band_deletion_restarts_the_key_without_panics() {
    let Some(env) = env("del").await else {
        return;
    };
    let svc = env.service();
    let k = key("tenant", "job");
    let leases = env.leases();
    let name = codec::object_name(&k);
    // Build some token history.
    for h in ["a", "b", "c"] {
        let Acquire::Granted { lease, .. } = svc.acquire(&k, &holder(h), TTL).await.unwrap() else {
            panic!("granted");
        };
        svc.release(&k, &holder(h), lease.record.fencing_token.get())
            .await
            .unwrap();
    }
    let Acquire::Granted { lease: held, .. } = svc.acquire(&k, &holder("d"), TTL).await.unwrap()
    else {
        panic!("granted");
    };
    assert_eq!(held.record.fencing_token.get(), 4);

    leases
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    assert!(svc.get(&k).await.unwrap().is_none(), "the record is gone");
    let r = svc
        .renew(&k, &holder("d"), held.record.fencing_token, TTL)
        .await
        .unwrap();
    assert!(
        matches!(r, Renew::Lost(None)),
        "the old holder loses: {r:?}"
    );

    // Deleted between the service's read and its write: a conflict, then a clean loss.
    let Acquire::Granted {
        lease: again,
        grant,
    } = svc.acquire(&k, &holder("e"), TTL).await.unwrap()
    else {
        panic!("granted");
    };
    assert_eq!(grant, Grant::Created);
    assert_eq!(
        again.record.fencing_token.get(),
        1,
        "token history restarts (documented caveat)"
    );
    let racing = Interleave::new(env.store.clone());
    let rsvc = LeaseService::new(racing.clone(), Arc::new(env.store.clock()));
    let (l2, n2) = (leases.clone(), name.clone());
    racing.before_next_put(async move {
        l2.delete(&n2, &DeleteParams::default()).await.unwrap();
    });
    let r = rsvc
        .renew(&k, &holder("e"), again.record.fencing_token, TTL)
        .await
        .unwrap();
    assert!(
        matches!(r, Renew::Lost(None)),
        "renew racing a deletion loses: {r:?}"
    );

    // Deleted and recreated by another replica at the same Berth version: the stale write,
    // which had read the old object, must not overwrite the new one (the uid differs).
    let Acquire::Granted { lease: f, .. } = svc.acquire(&k, &holder("f"), TTL).await.unwrap()
    else {
        panic!("granted");
    };
    let other_replica = Arc::new(
        KubeStore::from_client(env.client.clone(), KubeStoreConfig::new(&env.ns)).unwrap(),
    );
    let svc3 = LeaseService::new(other_replica.clone(), Arc::new(other_replica.clock()));
    let (l3, n3, k3) = (leases.clone(), name.clone(), k.clone());
    racing.before_next_put(async move {
        l3.delete(&n3, &DeleteParams::default()).await.unwrap();
        let Acquire::Granted { .. } = svc3.acquire(&k3, &holder("g"), TTL).await.unwrap() else {
            panic!("g recreates");
        };
    });
    let r = rsvc
        .renew(&k, &holder("f"), f.record.fencing_token, TTL)
        .await
        .unwrap();
    let Renew::Lost(Some(v)) = r else {
        panic!("renew across a recreation loses: {r:?}");
    };
    assert_eq!(v.live_holder(), Some(&holder("g")));
}

#[tokio::test]
async fn list_skips_objects_that_are_not_berth_records() {
    let Some(env) = env("foreign").await else {
        return;
    };
    let svc = env.service();
    let leases = env.leases();
    let mk = |name: &str, labels: BTreeMap<String, String>| -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 15}
        }))
        .unwrap()
    };
    let labelled = BTreeMap::from([(MANAGED_BY_LABEL.to_string(), "berth".to_string())]);
    leases
        .create(
            &PostParams::default(),
            &mk("tenant.labelled-only", labelled),
        )
        .await
        .unwrap();
    leases
        .create(
            &PostParams::default(),
            &mk("kube-scheduler", BTreeMap::new()),
        )
        .await
        .unwrap();
    svc.acquire(&key("tenant", "real"), &holder("east"), TTL)
        .await
        .unwrap();
    let all = env.store.list(&ListParams::default()).await.unwrap();
    let keys: Vec<String> = all.iter().map(|v| v.value.key.to_string()).collect();
    assert_eq!(all.len(), 1, "only the Berth record is listed: {keys:?}");
    assert_eq!(all[0].value.key, key("tenant", "real"));
    // Reading the foreign object through its key is a clear error, not a panic.
    let err = env
        .store
        .get(&key("tenant", "labelled-only"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn clock_follows_the_apiserver() {
    let Some(env) = env("clock").await else {
        return;
    };
    let clock = env.store.clock();
    let uncertainty = clock.calibrate().await.expect("calibrate");
    println!("kube-apiserver clock uncertainty after calibration: {uncertainty:?}");
    // Under a second means the Date tick was found (the fallback is at least one second).
    assert!(uncertainty < Duration::from_secs(1), "{uncertainty:?}");
    // Same machine: the server's clock is our wall clock.
    let local = SystemClock::new();
    let ours = clock.now().await.unwrap();
    let wall = local.now().await.unwrap();
    let lag = (wall - ours).abs();
    assert!(
        lag <= time::Duration::try_from(uncertainty).unwrap() + time::Duration::milliseconds(100),
        "estimate {ours} vs wall {wall}"
    );
    let mut last = ours;
    for _ in 0..100 {
        let t = clock.now().await.unwrap();
        assert!(t >= last, "never goes backwards");
        last = t;
    }
    assert_eq!(clock.name(), "kube-apiserver");
}

#[tokio::test]
async fn unreachable_apiserver_is_unavailable_not_a_hang() {
    let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
        return;
    };
    // A listener that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut cfg = cluster.kube_config();
    cfg.cluster_url = format!("https://{addr}").parse().unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let store = KubeStore::from_client(
        client,
        KubeStoreConfig {
            request_timeout: Duration::from_millis(500),
            ..KubeStoreConfig::new("berth")
        },
    )
    .unwrap();
    let t0 = std::time::Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(t0.elapsed() < Duration::from_secs(5));
    let err = store.get(&key("a", "b")).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(
        store.clock().now().await.is_err(),
        "the clock cannot calibrate either"
    );
}

#[tokio::test]
async fn connect_with_an_explicit_kubeconfig() {
    let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
        return;
    };
    let cfg = KubeStoreConfig {
        kubeconfig: Some(cluster.kubeconfig_path().to_path_buf()),
        ..KubeStoreConfig::new("default")
    };
    let store = KubeStore::connect(cfg).await.expect("connect");
    store
        .ping()
        .await
        .expect("ping through the kubeconfig's client");
    let svc = LeaseService::new(Arc::new(store), Arc::new(SystemClock::new()));
    let k = key("tenant", "via-kubeconfig");
    let r = svc
        .acquire(&k, &holder("east"), TTL)
        .await
        .expect("acquire");
    assert!(matches!(r, Acquire::Granted { .. }));

    let missing = KubeStoreConfig {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        ..KubeStoreConfig::new("default")
    };
    let err = KubeStore::connect(missing).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    assert!(matches!(
        KubeStore::from_client(cluster.client(), KubeStoreConfig::new("")),
        Err(berth_store_k8s::ConnectError::NoNamespace)
    ));
}
