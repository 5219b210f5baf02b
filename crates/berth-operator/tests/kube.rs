//! Against a real kube-apiserver 1.20.2: the generated CRD installs, the seed manifest applies
//! unchanged, and leader election hands leadership over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use berth_operator::crd::{BerthLease, Semantics};
use berth_operator::leader::{LeaderConfig, LeaderElector};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, PostParams};

const SEED_MANIFEST: &str = "apiVersion: berth.skaphos.io/v1alpha1
kind: BerthLease
metadata:
  name: ingest-worker
  namespace: pipeline
spec:
  leaseName: ingest-worker
  holderIdentity: fallback-holder
  ttlSeconds: 30
  heartbeatIntervalSeconds: 10
  semantics: at-most-once
  target:
    apiVersion: apps/v1
    kind: Deployment
    name: ingest-worker
  acquireAction:
    scale:
      replicas: 3
  releaseAction:
    scale:
      replicas: 0
";

#[tokio::test]
async fn crd_installs_and_seed_manifest_applies_unchanged() {
    let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
        return;
    };
    let client = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The checked-in file, parsed as the cluster would.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crds/berthleases.berth.skaphos.io.yaml"
    );
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(crd.metadata.name, BerthLease::crd().metadata.name);
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("CRD rejected: {e}"),
    }
    for _ in 0..100 {
        let c = crds.get("berthleases.berth.skaphos.io").await.unwrap();
        if c.status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ns = cluster.create_namespace("pipeline").await.unwrap();
    let mut lease: BerthLease = serde_yaml::from_str(SEED_MANIFEST).unwrap();
    lease.metadata.namespace = Some(ns.clone());
    let api: Api<BerthLease> = Api::namespaced(client.clone(), &ns);
    let created = api.create(&PostParams::default(), &lease).await.unwrap();
    assert_eq!(created.spec, lease.spec, "the server keeps every field");
    assert_eq!(created.spec.semantics, Semantics::AtMostOnce);

    // Schema validation is enforced by the server.
    let raw = serde_json::json!({
        "apiVersion": "berth.skaphos.io/v1alpha1", "kind": "BerthLease",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"leaseName": "x", "holderIdentity": "h", "ttlSeconds": 0,
                 "heartbeatIntervalSeconds": 1, "semantics": "exactly-once"}
    });
    let dynapi: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<BerthLease>(&()),
    );
    let err = dynapi
        .create(
            &PostParams::default(),
            &serde_json::from_value(raw).unwrap(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("semantics") && msg.contains("ttlSeconds"),
        "{msg}"
    );
}

#[tokio::test]
async fn leader_election_hands_over() {
    let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
        return;
    };
    let ns = cluster.create_namespace("leader").await.unwrap();
    let cfg = |id: &str| LeaderConfig {
        name: "berth-operator-leader".into(),
        namespace: ns.clone(),
        identity: id.into(),
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_secs(1),
        retry_period: Duration::from_millis(200),
    };
    let mut a = LeaderElector::new(cluster.client(), cfg("a"));
    let mut b = LeaderElector::new(cluster.client(), cfg("b"));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "first replica leads"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap(), "second waits");
    assert!(a.try_acquire_or_renew().await.unwrap(), "leader renews");
    assert!(!b.try_acquire_or_renew().await.unwrap());

    // Release hands over at once.
    a.release().await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "released claim is free"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap());

    // A leader that stops renewing is replaced once its claim has been unchanged for the
    // lease duration, judged on the waiting replica's own clock.
    let start = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), a.acquire())
        .await
        .expect("takes over a stale claim");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client(), &ns);
    let l = lease.get("berth-operator-leader").await.unwrap();
    let spec = l.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(2));
}

mod targets {
    use super::*;
    use berth_operator::crd::TargetRef;
    use berth_operator::decision::Step;
    use berth_operator::target::{Applied, Targets};
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

    fn mk_target(api_version: &str, kind: &str, name: &str) -> TargetRef {
        TargetRef {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    async fn create(
        client: &kube::Client,
        ns: &str,
        gvk: (&str, &str, &str),
        body: serde_json::Value,
    ) {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    }

    fn pod_template(app: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "example.invalid/x"}]}
        })
    }

    async fn get(
        client: &kube::Client,
        ns: &str,
        gvk: (&str, &str, &str),
        name: &str,
    ) -> DynamicObject {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2));
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            .get(name)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn scale_and_suspend_every_supported_kind_without_noop_writes() {
        let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
            return;
        };
        let client = cluster.client();
        let ns = cluster.create_namespace("targets").await.unwrap();
        let sel = |app: &str| serde_json::json!({"matchLabels": {"app": app}});
        create(
            &client,
            &ns,
            ("apps", "v1", "Deployment"),
            serde_json::json!({
                "metadata": {"name": "d"},
                "spec": {"replicas": 0, "selector": sel("d"), "template": pod_template("d")}
            }),
        )
        .await;
        create(&client, &ns, ("apps", "v1", "StatefulSet"), serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"replicas": 0, "serviceName": "s", "selector": sel("s"), "template": pod_template("s")}
        })).await;
        create(
            &client,
            &ns,
            ("apps", "v1", "ReplicaSet"),
            serde_json::json!({
                "metadata": {"name": "r"},
                "spec": {"replicas": 0, "selector": sel("r"), "template": pod_template("r")}
            }),
        )
        .await;
        create(&client, &ns, ("batch", "v1beta1", "CronJob"), serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "example.invalid/x"}]}
            }}}}
        })).await;
        create(&client, &ns, ("batch", "v1", "Job"), serde_json::json!({
            "metadata": {"name": "j"},
            "spec": {"suspend": true, "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "example.invalid/x"}]}
            }}
        })).await;

        let targets = Targets::new(client.clone());
        for (api_version, kind, name) in [
            ("apps/v1", "Deployment", "d"),
            ("apps/v1", "StatefulSet", "s"),
            ("apps/v1", "ReplicaSet", "r"),
        ] {
            let t = mk_target(api_version, kind, name);
            assert_eq!(
                targets
                    .apply(&ns, &t, Step::Scale(3), Some(7))
                    .await
                    .unwrap(),
                Applied::Changed,
                "{kind}"
            );
            let obj = get(&client, &ns, ("apps", "v1", kind), name).await;
            assert_eq!(obj.data["spec"]["replicas"], 3, "{kind}");
            assert_eq!(
                obj.metadata.annotations.unwrap()["berth.skaphos.io/fencing-token"],
                "7"
            );
            let rv = obj.metadata.resource_version;
            assert_eq!(
                targets
                    .apply(&ns, &t, Step::Scale(3), Some(7))
                    .await
                    .unwrap(),
                Applied::Unchanged,
                "no-op write skipped for {kind}"
            );
            let again = get(&client, &ns, ("apps", "v1", kind), name).await;
            assert_eq!(again.metadata.resource_version, rv, "{kind} untouched");
            assert!(!targets.is_stopped(&ns, &t, Step::Scale(0)).await.unwrap());
            assert_eq!(
                targets.apply(&ns, &t, Step::Scale(0), None).await.unwrap(),
                Applied::Changed
            );
            // No controller-manager here: status.replicas never rose, so it counts as stopped.
            assert!(
                targets.is_stopped(&ns, &t, Step::Scale(0)).await.unwrap(),
                "{kind}"
            );
        }

        // A CronJob written as batch/v1 is found as batch/v1beta1 on this 1.20 server.
        let cron = mk_target("batch/v1", "CronJob", "c");
        assert_eq!(
            targets
                .apply(&ns, &cron, Step::Suspend(false), Some(9))
                .await
                .unwrap(),
            Applied::Changed
        );
        let obj = get(&client, &ns, ("batch", "v1beta1", "CronJob"), "c").await;
        assert_eq!(obj.data["spec"]["suspend"], false);
        assert_eq!(
            targets
                .apply(&ns, &cron, Step::Suspend(false), Some(9))
                .await
                .unwrap(),
            Applied::Unchanged
        );
        assert_eq!(
            targets
                .apply(&ns, &cron, Step::Suspend(true), None)
                .await
                .unwrap(),
            Applied::Changed
        );
        assert!(
            targets
                .is_stopped(&ns, &cron, Step::Suspend(true))
                .await
                .unwrap()
        );
        // Job.spec.suspend does not exist before Kubernetes 1.21: 1.20 drops the field, so only
        // the stamp lands and the write is otherwise a no-op (documented in the README).
        let job = mk_target("batch/v1", "Job", "j");
        assert_eq!(
            targets
                .apply(&ns, &job, Step::Suspend(false), Some(9))
                .await
                .unwrap(),
            Applied::Changed
        );
        let obj = get(&client, &ns, ("batch", "v1", "Job"), "j").await;
        assert_eq!(
            obj.metadata.annotations.unwrap()["berth.skaphos.io/fencing-token"],
            "9"
        );
        assert!(
            targets
                .is_stopped(&ns, &job, Step::Suspend(true))
                .await
                .unwrap()
        );

        // Missing objects and unknown kinds.
        assert_eq!(
            targets
                .apply(
                    &ns,
                    &mk_target("apps/v1", "Deployment", "absent"),
                    Step::Scale(1),
                    None
                )
                .await
                .unwrap(),
            Applied::Missing
        );
        let err = targets
            .apply(
                &ns,
                &mk_target("example.com/v1", "Nope", "x"),
                Step::Scale(1),
                None,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not served"), "{err}");
        // A kind without a scale subresource refuses a scale action.
        let err = targets
            .apply(&ns, &cron, Step::Scale(1), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no scale subresource"), "{err}");
    }

    #[tokio::test]
    async fn custom_resources_with_scale_subresource_and_suspend_field() {
        let Some(cluster) = berth_e2e::shared_cluster_or_skip().await else {
            return;
        };
        let client = cluster.client();
        let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "widgets.example.berth.io"},
            "spec": {
                "group": "example.berth.io",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {
                            "replicas": {"type": "integer"}, "suspend": {"type": "boolean"}}},
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
                    }}},
                    "subresources": {"status": {}, "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas"
                    }}
                }]
            }
        }))
        .unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("{e}"),
        }
        let ns = cluster.create_namespace("widgets").await.unwrap();
        for _ in 0..100 {
            let ar =
                ApiResource::from_gvk(&GroupVersionKind::gvk("example.berth.io", "v1", "Widget"));
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            let body = serde_json::json!({
                "apiVersion": "example.berth.io/v1", "kind": "Widget",
                "metadata": {"name": "w"}, "spec": {"replicas": 0, "suspend": true}
            });
            if api
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(body).unwrap(),
                )
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let targets = Targets::new(client.clone());
        let w = mk_target("example.berth.io/v1", "Widget", "w");
        assert_eq!(
            targets
                .apply(&ns, &w, Step::Scale(2), Some(4))
                .await
                .unwrap(),
            Applied::Changed
        );
        assert_eq!(
            get(&client, &ns, ("example.berth.io", "v1", "Widget"), "w")
                .await
                .data["spec"]["replicas"],
            2
        );
        assert_eq!(
            targets
                .apply(&ns, &w, Step::Suspend(false), None)
                .await
                .unwrap(),
            Applied::Changed
        );
        assert_eq!(
            get(&client, &ns, ("example.berth.io", "v1", "Widget"), "w")
                .await
                .data["spec"]["suspend"],
            false
        );
    }
}
