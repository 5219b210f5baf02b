//! The harness against the real binaries: clusters start, serve, run side by side, and leave
//! nothing behind.

use std::path::Path;
use std::time::Duration;

use berth_e2e::{ClusterOptions, TestCluster};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, PostParams};

fn alive(pid: u32) -> bool {
    // A zombie has an empty command line; the harness reaps its children, so a gone process
    // has no /proc entry at all.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[tokio::test]
async fn two_clusters_run_side_by_side_and_stop_cleanly() {
    let Some(bin_dir) = berth_e2e::bin_dir_or_skip() else {
        return;
    };
    let opts = ClusterOptions {
        bin_dir: Some(bin_dir),
        ..ClusterOptions::default()
    };
    let (a, b) = tokio::join!(
        TestCluster::start(opts.clone()),
        TestCluster::start(opts.clone())
    );
    let (a, b) = (a.expect("cluster a"), b.expect("cluster b"));
    assert_ne!(a.server_url(), b.server_url(), "independent ports");
    for c in [&a, &b] {
        let v = c.client().apiserver_version().await.expect("version");
        assert_eq!(v.git_version, "v1.20.2");
        assert!(c.kubeconfig_path().is_file());
    }

    // Objects are per cluster.
    let leases_a: Api<Lease> = Api::namespaced(a.client(), "default");
    let lease: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "only-in-a"},
        "spec": {"holderIdentity": "x"}
    }))
    .unwrap();
    leases_a
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let leases_b: Api<Lease> = Api::namespaced(b.client(), "default");
    assert!(leases_b.get_opt("only-in-a").await.expect("get").is_none());

    // A client from the written kubeconfig works too.
    let kc = kube::config::Kubeconfig::read_from(a.kubeconfig_path()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let from_file: Api<Lease> = Api::namespaced(kube::Client::try_from(cfg).unwrap(), "default");
    assert!(from_file.get_opt("only-in-a").await.unwrap().is_some());

    let pids: Vec<u32> = [a.apiserver_pid(), a.etcd_pid()]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(pids.len(), 2);
    let dir = a.run_dir().to_path_buf();
    a.stop();
    for pid in &pids {
        assert!(!alive(*pid), "process {pid} stopped");
    }
    assert!(!Path::new(&dir).exists(), "run dir removed");

    // b is unaffected by a's teardown; it can be frozen and resumed; dropping it cleans up.
    b.client()
        .apiserver_version()
        .await
        .expect("b still serves");
    b.pause_apiserver().expect("SIGSTOP");
    let frozen = tokio::time::timeout(Duration::from_secs(2), b.client().apiserver_version()).await;
    assert!(frozen.is_err(), "a paused apiserver does not answer");
    b.resume_apiserver().expect("SIGCONT");
    b.client()
        .apiserver_version()
        .await
        .expect("b serves again");
    let b_pid = b.apiserver_pid().unwrap();
    let b_dir = b.run_dir().to_path_buf();
    drop(b);
    assert!(!alive(b_pid));
    assert!(!b_dir.exists());
}

#[tokio::test]
async fn controller_manager_turns_deployments_into_pods() {
    let Some(bin_dir) = berth_e2e::bin_dir_or_skip() else {
        return;
    };
    let opts = ClusterOptions {
        bin_dir: Some(bin_dir),
        ..ClusterOptions::default()
    }
    .workload_controllers();
    let c = TestCluster::start(opts).await.expect("cluster");
    let client = c.client();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/none"}]}
            }
        }
    }))
    .unwrap();
    deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let lp = ListParams::default().labels("app=web");
    let mut n_pods = 0;
    for _ in 0..200 {
        n_pods = pods.list(&lp).await.expect("pods").items.len();
        if n_pods == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rss.list(&lp).await.expect("rs").items.len(),
        1,
        "one ReplicaSet"
    );
    assert_eq!(n_pods, 2, "two Pods (Pending: no scheduler, no kubelet)");
    c.stop();
}
