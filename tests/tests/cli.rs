//! The CLI against a real three-peer cluster of `flotilla server` processes: apply, get in every
//! output format on every peer, update, conflicts, describe, path-precise errors for bad
//! manifests, cascading delete, and what happens with one and with two peers down.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{GetRequest, ObjectRef, ObjectRequest};
use flotilla_e2e::user::{cli, fails, ok};
use flotilla_e2e::{channel, ProcessCluster};
use serde_json::Value;

fn manifest(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name)
}

/// Runs `flotilla --server SERVERS ARGS…` with stdin from `stdin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_update_describe_delete_on_a_three_peer_cluster() {
    let cluster = ProcessCluster::start(3).await;
    let addrs: Vec<String> = cluster.peers.iter().map(|p| p.addr.clone()).collect();
    let web = manifest("web.yaml");
    let web = web.to_str().unwrap();

    // Apply through peer 2; read back through every peer.
    let applied = ok(cli(&addrs[1], &["apply", "-f", web], None));
    assert_eq!(
        applied,
        "configmap/web-config created\ndeployment.apps/web created\nservice/web created\n"
    );
    for addr in &addrs {
        let table = ok(cli(addr, &["get", "deployments"], None));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        assert!(lines[1].starts_with("web    0/3"), "{table}");
    }
    let wide = ok(cli(
        &addrs[0],
        &["get", "deploy", "web", "-o", "wide"],
        None,
    ));
    assert!(
        wide.contains("busybox:latest") && wide.contains("app=web"),
        "{wide}"
    );
    let yaml = ok(cli(&addrs[2], &["get", "deploy/web", "-o", "yaml"], None));
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 3"),
        "{yaml}"
    );
    let json: Value = serde_json::from_str(&ok(cli(
        &addrs[0],
        &["get", "svc", "web", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(json["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(
        ok(cli(&addrs[0], &["get", "cm", "-o", "name"], None)),
        "configmap/web-config\n"
    );
    let services = ok(cli(&addrs[0], &["get", "services", "-A"], None));
    assert!(
        services.starts_with("NAMESPACE   NAME   TYPE"),
        "{services}"
    );

    // Re-applying changes nothing; a changed manifest updates in place.
    let again = ok(cli(&addrs[0], &["apply", "-f", web], None));
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");
    let scaled = std::fs::read_to_string(manifest("web.yaml"))
        .unwrap()
        .replace("replicas: 3", "replicas: 5");
    let configured = ok(cli(&addrs[2], &["apply", "-f", "-"], Some(&scaled)));
    assert!(
        configured.contains("deployment.apps/web configured"),
        "{configured}"
    );
    let json: Value = serde_json::from_str(&ok(cli(
        &addrs[1],
        &["get", "deploy", "web", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(json["spec"]["replicas"], 5);
    assert_eq!(json["metadata"]["generation"], 2);

    // An update from a stale resourceVersion is a conflict.
    let mut stale = json.clone();
    stale["metadata"]["resourceVersion"] = Value::String("1".into());
    stale["spec"]["replicas"] = 1.into();
    let mut api = ClusterApiClient::new(channel(&addrs[0]));
    let conflict = api
        .update(ObjectRequest {
            object: serde_json::to_vec(&stale).unwrap(),
            default_namespace: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::Aborted, "{conflict:?}");

    let described = ok(cli(&addrs[0], &["describe", "deployment", "web"], None));
    assert!(
        described.starts_with("Name:         web\nNamespace:    default\n"),
        "{described}"
    );
    assert!(described.contains("Events:"), "{described}");

    // Cascade: a replica set owned by the deployment goes with it.
    let uid = json["metadata"]["uid"].as_str().unwrap();
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-1\n  labels: {{app: web}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: \"{uid}\", controller: true}}]\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    );
    ok(cli(&addrs[0], &["apply", "-f", "-"], Some(&rs)));
    assert!(ok(cli(&addrs[0], &["get", "rs"], None)).contains("web-1"));
    assert_eq!(
        ok(cli(&addrs[1], &["delete", "deployment", "web"], None)),
        "deployment.apps/web deleted\n"
    );
    let gone = fails(cli(&addrs[2], &["get", "rs", "web-1"], None));
    assert!(gone.contains("NotFound"), "{gone}");
    let missing = fails(cli(&addrs[0], &["get", "deploy", "web"], None));
    assert_eq!(
        missing.trim(),
        "Error from server (NotFound): Deployment \"web\" not found"
    );
}

/// (manifest, the exact error the user sees)
const BAD_MANIFESTS: &[(&str, &str)] = &[
    (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: c\n          image: busybox\n          resources: {limits: {memory: 12XB}}\n",
        "spec.template.spec.containers[0].resources.limits.memory: \"12XB\" is not a quantity",
    ),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: c\n      image: busybox\n      imagePullSecretz: []\n",
        "spec.containers[0].imagePullSecretz: unknown field",
    ),
    ("apiVersion: v1\nkind: Pdo\nmetadata: {name: p}\n", "Pdo"),
    (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec:\n  containers: [{name: c, image: busybox}]\n",
        "metadata.name: Invalid value: \"Bad_Name\"",
    ),
    (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: 70000}]\n",
        "spec.ports[0].port: Invalid value: 70000",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_get_path_precise_errors_and_change_nothing() {
    let cluster = ProcessCluster::start(1).await;
    let addr = cluster.peers[0].addr.clone();
    for (text, expected) in BAD_MANIFESTS {
        // A good ConfigMap first in the same file: the bad document must stop the whole apply.
        let file =
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: innocent}}\n---\n{text}");
        let stderr = fails(cli(&addr, &["apply", "-f", "-"], Some(&file)));
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in:\n{stderr}"
        );
        assert!(
            stderr.contains("Invalid"),
            "InvalidArgument is reported: {stderr}"
        );
    }
    let nothing = fails(cli(&addr, &["get", "cm", "innocent"], None));
    assert!(
        nothing.contains("NotFound"),
        "nothing was half-applied: {nothing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_down_keeps_serving_two_down_refuse_writes_retryably() {
    let mut cluster = ProcessCluster::start(3).await;
    let all = cluster
        .peers
        .iter()
        .map(|p| p.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    cluster.peer(1).kill9();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: survivor}\ndata: {a: b}\n";
    // The CLI is given all three addresses; the dead one is skipped.
    ok(cli(&all, &["apply", "-f", "-"], Some(cm)));
    assert!(ok(cli(&all, &["get", "cm", "survivor"], None)).contains("survivor"));

    cluster.peer(2).kill9();
    let third = cluster.peers[2].addr.clone();
    let late = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\n";
    let mut api = ClusterApiClient::new(channel(&third));
    let refused = api
        .create(ObjectRequest {
            object: late.as_bytes().to_vec(),
            default_namespace: "default".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        "{refused:?}"
    );
    let read = api
        .get(GetRequest {
            r#ref: Some(ObjectRef {
                kind: "cm".into(),
                namespace: "default".into(),
                name: "survivor".into(),
            }),
            stale: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        read.code(),
        tonic::Code::Unavailable,
        "linearizable reads need a quorum too: {read:?}"
    );
    // A stale read still answers from the survivor's own state.
    let stale = api
        .get(GetRequest {
            r#ref: Some(ObjectRef {
                kind: "cm".into(),
                namespace: "default".into(),
                name: "survivor".into(),
            }),
            stale: true,
        })
        .await
        .unwrap();
    assert!(!stale.into_inner().object.is_empty());
    // Healed: the cluster serves again and the survivor is intact.
    cluster.peer(1).restart();
    cluster.peer(2).restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ok(cli(&all, &["get", "cm", "survivor", "-o", "name"], None))
            .contains("configmap/survivor")
    );
}
