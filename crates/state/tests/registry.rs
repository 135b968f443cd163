//! The object registry on a real single-peer store: create/get/update with optimistic
//! concurrency, the status sub-resource, generation, apply, patch, scale, graceful and cascading
//! deletes, paginated lists at one revision, and watches from a resourceVersion.

use std::sync::Arc;
use std::time::Duration;

use flotilla_consensus::node::wait_closed;
use flotilla_consensus::{StoreConfig, StoreNode, WriteOp, WriteRequest};
use flotilla_state::registry::{
    ApiError, ApplyAction, DeleteOptions, EventType, KindInfo, ListOptions, Propagation, Registry,
    Scope, Stored, WatchFilter,
};
use flotilla_state::service::{admit, kind_info, KINDS};
use flotilla_state::{parse_manifests, Kind};
use serde_json::{json, Value};

/// A one-peer store and its registry (reached through `Deref`), in a temporary directory that
/// is removed only once the store is closed.
struct Env {
    inner: Option<Inner>,
    _dir: tempfile::TempDir,
}

struct Inner {
    registry: Registry<Arc<StoreNode>>,
    node: Arc<StoreNode>,
}

impl std::ops::Deref for Env {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        self.inner
            .as_ref()
            .expect("the store is open until the fixture is dropped")
    }
}

/// How long a fixture waits for its store to close before removing the directory anyway.
const STORE_CLOSE_WAIT_S: u64 = 10;

impl Drop for Env {
    /// Stops Raft and waits for the store to close before the directory is removed: a store
    /// closed later would recreate files in a directory already deleted.
    fn drop(&mut self) {
        let Some(Inner { registry, node }) = self.inner.take() else {
            return;
        };
        drop(registry);
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                let closed = node.shutdown().await;
                drop(node);
                if !wait_closed(closed, Duration::from_secs(STORE_CLOSE_WAIT_S)).await {
                    eprintln!("the store did not close within {STORE_CLOSE_WAIT_S} s; its directory may be left behind");
                }
            })
        });
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// A one-peer store, its configuration changed by `configure`.
async fn env_with(configure: impl FnOnce(&mut StoreConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(1, "127.0.0.1:1", dir.path().join("store"));
    configure(&mut config);
    let node = StoreNode::open(config).await.unwrap();
    node.initialize(&[(1, "127.0.0.1:1".to_string())].into_iter().collect())
        .await
        .unwrap();
    node.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(1), "leader")
        .await
        .unwrap();
    let registry = Registry::new(node.clone(), &KINDS);
    let env = Env {
        inner: Some(Inner { registry, node }),
        _dir: dir,
    };
    env.create_yaml("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}")
        .await;
    env
}

impl Env {
    /// Reads object `name` of namespace `default` (linearizable); it must exist.
    async fn get(&self, info: &KindInfo, name: &str) -> Stored {
        self.registry
            .get(info, "default", name, false)
            .await
            .unwrap_or_else(|e| panic!("get {name}: {e}"))
    }

    /// Parses, admits and creates one object from YAML.
    async fn create_yaml(&self, yaml: &str) -> Value {
        let (info, obj) = admitted(yaml);
        self.registry.create(&info, obj).await.expect("create")
    }
}

fn admitted(yaml: &str) -> (KindInfo, Value) {
    let obj = parse_manifests(yaml).expect("parse").remove(0);
    admit(obj, "default").expect("admit")
}

fn rv(obj: &Value) -> i64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn deployment(name: &str, replicas: i64) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

fn pod(name: &str, owner_uid: Option<&str>, node: Option<&str>) -> String {
    let owner = owner_uid.map_or(String::new(), |uid| {
        format!(", ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: \"{uid}\", controller: true}}]")
    });
    let node = node.map_or(String::new(), |n| format!("\n  nodeName: {n}"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}{owner}}}\nspec:{node}\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_with_optimistic_concurrency() {
    let env = env().await;
    let deploy = kind_info(Kind::Deployment);
    let created = env.create_yaml(&deployment("web", 2)).await;
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["uid"].as_str().unwrap().len() == 36);
    let again = env
        .registry
        .create(deploy, admitted(&deployment("web", 2)).1)
        .await;
    assert!(
        matches!(again, Err(ApiError::AlreadyExists { .. })),
        "{again:?}"
    );

    // An update from the current version succeeds and bumps generation (spec changed).
    let mut changed = created.clone();
    changed["spec"]["replicas"] = json!(5);
    let updated = env.registry.update(deploy, changed.clone()).await.unwrap();
    assert_eq!(updated["metadata"]["generation"], 2);
    assert!(rv(&updated) > rv(&created));
    // The same stale version again is a conflict, and nothing changes.
    changed["spec"]["replicas"] = json!(7);
    let stale = env.registry.update(deploy, changed).await;
    assert!(matches!(stale, Err(ApiError::Conflict(_))), "{stale:?}");
    let now = env.get(deploy, "web").await;
    assert_eq!(now.object["spec"]["replicas"], 5);

    // Status is a separate sub-resource: a spec update cannot set it, a status update cannot
    // change the spec, and neither bumps generation when the spec is unchanged.
    let mut with_status = now.object.clone();
    with_status["status"] = json!({"replicas": 5, "readyReplicas": 3});
    with_status["spec"]["replicas"] = json!(9);
    let status_written = env
        .registry
        .update_status(deploy, with_status.clone())
        .await
        .unwrap();
    assert_eq!(status_written["status"]["readyReplicas"], 3);
    assert_eq!(
        status_written["spec"]["replicas"], 5,
        "status writes keep the spec"
    );
    assert_eq!(status_written["metadata"]["generation"], 2);
    let mut labels_only = status_written.clone();
    labels_only["metadata"]["labels"]["tier"] = json!("front");
    labels_only["status"] = json!({"readyReplicas": 0});
    let relabelled = env.registry.update(deploy, labels_only).await.unwrap();
    assert_eq!(
        relabelled["status"]["readyReplicas"], 3,
        "spec writes keep the status"
    );
    assert_eq!(
        relabelled["metadata"]["generation"], 2,
        "metadata-only change keeps generation"
    );

    // The same status again writes nothing; a status with an old resourceVersion is a conflict
    // and changes nothing; a status without one lands on whatever is current.
    let again = env
        .registry
        .update_status(deploy, relabelled.clone())
        .await
        .unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"], relabelled["metadata"]["resourceVersion"],
        "an unchanged status is not written"
    );
    let mut old_version = status_written.clone();
    old_version["status"] = json!({"readyReplicas": 1});
    let refused = env.registry.update_status(deploy, old_version).await;
    assert!(matches!(refused, Err(ApiError::Conflict(_))), "{refused:?}");
    let mut unversioned = relabelled.clone();
    object_remove_resource_version(&mut unversioned);
    unversioned["status"] = json!({"readyReplicas": 4});
    let landed = env
        .registry
        .update_status(deploy, unversioned)
        .await
        .unwrap();
    let now = env.get(deploy, "web").await;
    assert_eq!(now.object["status"], json!({"readyReplicas": 4}));
    assert_eq!(now.object["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        landed["metadata"]["resourceVersion"],
        json!(now.revision.to_string())
    );
    env.node.shutdown().await;
}

fn object_remove_resource_version(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_patch_and_scale() {
    let env = env().await;
    let deploy = kind_info(Kind::Deployment);
    let (_, manifest) = admitted(&deployment("api", 1));
    let (first, action) = env.registry.apply(deploy, manifest.clone()).await.unwrap();
    assert_eq!(action, ApplyAction::Created);
    let (same, action) = env.registry.apply(deploy, manifest.clone()).await.unwrap();
    assert_eq!(action, ApplyAction::Unchanged);
    assert_eq!(rv(&same), rv(&first), "unchanged apply writes nothing");
    // Labels set by others survive an apply that does not mention them; the spec follows the
    // manifest.
    let patched = env
        .registry
        .patch(
            deploy,
            "default",
            "api",
            &json!({"metadata": {"labels": {"owner": "ops"}}}),
            Ok,
        )
        .await
        .unwrap();
    assert_eq!(patched["metadata"]["labels"]["owner"], "ops");
    let mut bigger = manifest.clone();
    bigger["spec"]["replicas"] = json!(4);
    let (applied, action) = env.registry.apply(deploy, bigger).await.unwrap();
    assert_eq!(action, ApplyAction::Configured);
    assert_eq!(applied["spec"]["replicas"], 4);
    assert_eq!(applied["metadata"]["labels"]["owner"], "ops");
    let scaled = env
        .registry
        .scale(deploy, "default", "api", 0)
        .await
        .unwrap();
    assert_eq!(scaled["spec"]["replicas"], 0);
    assert!(matches!(
        env.registry.scale(deploy, "default", "api", -1).await,
        Err(ApiError::Invalid(_))
    ));
    assert!(matches!(
        env.registry.scale(deploy, "default", "nope", 1).await,
        Err(ApiError::NotFound { .. })
    ));
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_cascade_orphan_and_wait_for_agents_and_finalizers() {
    let env = env().await;
    let deploy = kind_info(Kind::Deployment);
    let pods = kind_info(Kind::Pod);
    let owner = env.create_yaml(&deployment("web", 2)).await;
    let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
    env.create_yaml(&pod("loose", Some(&uid), None)).await;
    env.create_yaml(&pod("bound", Some(&uid), Some("n1"))).await;
    env.create_yaml(&pod("other", None, None)).await;

    env.registry
        .delete(deploy, "default", "web", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(env
        .registry
        .get_opt(deploy, "default", "web", false)
        .await
        .unwrap()
        .is_none());
    assert!(
        env.registry
            .get_opt(pods, "default", "loose", false)
            .await
            .unwrap()
            .is_none(),
        "unbound dependent is gone"
    );
    let bound = env.get(pods, "bound").await.object;
    assert!(
        bound["metadata"]["deletionTimestamp"].is_string(),
        "a pod on a node waits for its agent"
    );
    assert_eq!(bound["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(
        env.registry
            .get_opt(pods, "default", "other", false)
            .await
            .unwrap()
            .is_some(),
        "not a dependent"
    );
    // The agent confirms with grace 0: now it is gone.
    let zero = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    env.registry
        .delete(pods, "default", "bound", &zero)
        .await
        .unwrap();
    assert!(env
        .registry
        .get_opt(pods, "default", "bound", false)
        .await
        .unwrap()
        .is_none());

    // Orphaning keeps dependents and removes their owner reference.
    let owner = env.create_yaml(&deployment("keep", 1)).await;
    let uid = owner["metadata"]["uid"].as_str().unwrap().to_string();
    env.create_yaml(&pod("kept", Some(&uid), None)).await;
    let orphan = DeleteOptions {
        propagation: Propagation::Orphan,
        ..Default::default()
    };
    env.registry
        .delete(deploy, "default", "keep", &orphan)
        .await
        .unwrap();
    let kept = env.get(pods, "kept").await.object;
    assert!(kept["metadata"].get("ownerReferences").is_none(), "{kept}");

    // Finalizers hold an object until the last one is removed.
    let cm = kind_info(Kind::ConfigMap);
    env.create_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [example.com/hold]}\ndata: {a: b}").await;
    let held = env
        .registry
        .delete(cm, "default", "held", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    let released = env
        .registry
        .patch(
            cm,
            "default",
            "held",
            &json!({"metadata": {"finalizers": null}}),
            Ok,
        )
        .await
        .unwrap();
    assert!(released["metadata"]["deletionTimestamp"].is_string());
    assert!(env
        .registry
        .get_opt(cm, "default", "held", false)
        .await
        .unwrap()
        .is_none());
    // The default namespace stays.
    let ns = kind_info(Kind::Namespace);
    assert!(matches!(
        env.registry
            .delete(ns, "", "default", &DeleteOptions::default())
            .await,
        Err(ApiError::Invalid(_))
    ));
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_through_one_consistent_revision() {
    let env = env().await;
    let cm = kind_info(Kind::ConfigMap);
    for i in 0..25 {
        env.create_yaml(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i:02}, labels: {{even: \"{}\"}}}}", i % 2 == 0))
            .await;
    }
    let everything = WatchFilter::everything();
    let mut options = ListOptions {
        limit: 10,
        ..Default::default()
    };
    let first = env
        .registry
        .list(
            cm,
            &Scope::Namespace("default".into()),
            &everything,
            &options,
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 10);
    // Writes after the first page do not show up in later pages of the same list.
    env.create_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c99}")
        .await;
    let cm_kind = kind_info(Kind::ConfigMap);
    env.registry
        .delete(cm_kind, "default", "c20", &DeleteOptions::default())
        .await
        .unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    options.continue_token = first.continue_token.clone();
    while let Some(token) = options.continue_token.take() {
        options.continue_token = Some(token);
        let page = env
            .registry
            .list(
                cm,
                &Scope::Namespace("default".into()),
                &everything,
                &options,
            )
            .await
            .unwrap();
        assert_eq!(
            page.resource_version, first.resource_version,
            "every page at the first page's revision"
        );
        names.extend(
            page.items
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
        );
        options.continue_token = page.continue_token;
    }
    let expected: Vec<String> = (0..25).map(|i| format!("c{i:02}")).collect();
    assert_eq!(names, expected);
    // A selector filters server-side.
    let even = WatchFilter::new(|o: &Value| o["metadata"]["labels"]["even"] == "true");
    let page = env
        .registry
        .list(cm, &Scope::All, &even, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 12, "c00..c24 even, minus the deleted c20");
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_resource_version_sees_every_change_once_in_order() {
    let env = env().await;
    let cm = kind_info(Kind::ConfigMap);
    let list = env
        .registry
        .list(
            cm,
            &Scope::Namespace("default".into()),
            &WatchFilter::everything(),
            &ListOptions::default(),
        )
        .await
        .unwrap();
    let web_only = WatchFilter::new(|o: &Value| o["metadata"]["labels"]["app"] == "web");
    let mut watch = env
        .registry
        .watch(
            cm,
            &Scope::Namespace("default".into()),
            web_only,
            Some(list.resource_version),
            None,
        )
        .unwrap();
    env.create_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {app: web}}")
        .await;
    env.create_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {app: db}}")
        .await;
    env.registry
        .patch(cm, "default", "a", &json!({"data": {"k": "v"}}), Ok)
        .await
        .unwrap();
    // Relabelled out of the selector: DELETED for this watcher; back in: ADDED.
    env.registry
        .patch(
            cm,
            "default",
            "a",
            &json!({"metadata": {"labels": {"app": "x"}}}),
            Ok,
        )
        .await
        .unwrap();
    env.registry
        .patch(
            cm,
            "default",
            "b",
            &json!({"metadata": {"labels": {"app": "web"}}}),
            Ok,
        )
        .await
        .unwrap();
    env.registry
        .delete(cm, "default", "b", &DeleteOptions::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut last_rv = 0;
    while seen.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap();
        assert!(event.revision > last_rv, "strictly increasing");
        last_rv = event.revision;
        let object = event.value().unwrap();
        assert_eq!(
            object["metadata"]["resourceVersion"],
            json!(event.revision.to_string()),
            "the object carries the revision of its event"
        );
        seen.push((
            event.kind,
            event.value().unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    let expected = vec![
        (EventType::Added, "a".to_string()),
        (EventType::Modified, "a".to_string()),
        (EventType::Deleted, "a".to_string()),
        (EventType::Added, "b".to_string()),
        (EventType::Deleted, "b".to_string()),
    ];
    assert_eq!(seen, expected);
    drop(watch);

    // Resuming from the middle replays exactly what came after.
    let all = WatchFilter::everything();
    let mut resumed = env
        .registry
        .watch(
            cm,
            &Scope::Namespace("default".into()),
            all,
            Some(list.resource_version + 2),
            None,
        )
        .unwrap();
    let event = resumed.next().await.unwrap();
    assert_eq!(event.revision, list.resource_version + 3);
    drop(resumed);

    // After compaction, an old resourceVersion is too old: relist.
    let now = env.node.status().unwrap().revision;
    env.node
        .write(WriteRequest::new(WriteOp::Compact { revision: now }))
        .await
        .unwrap();
    let all = WatchFilter::everything();
    let old = env
        .registry
        .watch(cm, &Scope::All, all, Some(list.resource_version), None);
    assert!(matches!(old, Err(ApiError::Expired(_))), "{:?}", old.err());
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_falls_behind_catches_up_from_history_without_a_gap() {
    // Four revisions of live queue: the watcher below falls behind by far more.
    let env = env_with(|config| config.watch.buffer_revisions = 4).await;
    let cm = kind_info(Kind::ConfigMap);
    let mut watch = env
        .registry
        .watch(cm, &Scope::All, WatchFilter::everything(), None, None)
        .unwrap();
    for i in 0..50 {
        env.create_yaml(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i:02}}}"
        ))
        .await;
    }
    let mut seen = Vec::new();
    let mut last_revision = 0;
    while seen.len() < 50 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the next event in time")
            .expect("the watch goes on");
        assert_eq!(event.kind, EventType::Added);
        assert!(event.revision > last_revision, "in revision order");
        last_revision = event.revision;
        assert_eq!(
            event.value().unwrap()["metadata"]["resourceVersion"],
            json!(event.revision.to_string()),
            "the object carries the revision of its event"
        );
        seen.push(
            event.value().unwrap()["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let expected: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
    assert_eq!(seen, expected, "every change once, in order");
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_need_their_namespace() {
    let env = env().await;
    let cm = kind_info(Kind::ConfigMap);
    let (_, obj) =
        admitted("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}");
    match env.registry.create(cm, obj).await {
        Err(ApiError::NotFound { kind, name }) => {
            assert_eq!((kind.as_str(), name.as_str()), ("Namespace", "nowhere"))
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    env.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_of_many_objects_lands_whole_or_not_at_all() {
    let env = env().await;
    let cm = kind_info(Kind::ConfigMap);
    // The second object's namespace does not exist: neither object is written.
    let batch = vec![
        admitted("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}"),
        admitted("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second, namespace: missing}"),
    ];
    let refused = env.registry.apply_all(batch).await;
    assert!(
        matches!(refused, Err(ApiError::NotFound { ref kind, .. }) if kind == "Namespace"),
        "{refused:?}"
    );
    assert!(
        env.registry
            .get_opt(cm, "default", "first", false)
            .await
            .unwrap()
            .is_none(),
        "nothing half-applied"
    );
    // A namespace and objects inside it, in one apply.
    let batch = vec![
        admitted("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}"),
        admitted("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}"),
        admitted("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}"),
    ];
    let applied = env.registry.apply_all(batch).await.unwrap();
    assert!(applied.iter().all(|(_, a)| *a == ApplyAction::Created));
    let revisions: Vec<i64> = applied.iter().map(|(o, _)| rv(o)).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] == w[1]),
        "one transaction, one revision: {revisions:?}"
    );
    assert!(env
        .registry
        .get_opt(cm, "shop", "cfg", false)
        .await
        .unwrap()
        .is_some());
    env.node.shutdown().await;
}
