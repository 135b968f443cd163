//! ReplicaSet plans: how many pods to create, which to delete first, status counts, the burst
//! bound, adoption and release.

use flotilla_controllers::replicaset::{
    adopt_and_release, reconcile_replicaset, slow_start_batches, MAX_CREATES_PER_RECONCILE,
};
use flotilla_state::objects::{LabelSelector, Pod, ReplicaSetStatus};

use crate::fixtures::{labels, names, pod, replicaset, T0};

const RS_UID: &str = "uid-web-1";

fn pods(specs: &[&str]) -> Vec<Pod> {
    specs.iter().map(|spec| pod(spec, RS_UID)).collect()
}

/// Reconciles a ReplicaSet wanting `desired` pods over `existing` and checks the number of
/// creations and the deletions in order.
fn check(desired: i32, existing: &[&str], creates: usize, deletes: &[&str]) {
    let rs = replicaset("web-1", desired, "nginx:1");
    let plan = reconcile_replicaset(&rs, &pods(existing), T0);
    assert_eq!(plan.create.len(), creates, "creates for {existing:?}");
    assert_eq!(names(&plan.delete), deletes, "deletes for {existing:?}");
}

#[test]
fn creates_and_deletes_the_difference() {
    check(3, &["a ready"], 2, &[]);
    check(2, &["a ready", "b ready"], 0, &[]);
    check(0, &[], 0, &[]);
    // Terminating and finished pods do not count, and are never deleted again.
    check(
        2,
        &["a ready", "b deleting ready", "c failed", "d succeeded"],
        1,
        &[],
    );
    check(1, &["a ready", "b deleting ready"], 0, &[]);
}

#[test]
fn deletes_in_kubernetes_preference_order() {
    check(1, &["a ready", "b pending unscheduled"], 0, &["b"]);
    check(1, &["a ready", "b unknown", "c pending"], 0, &["c", "b"]);
    check(1, &["a ready", "b"], 0, &["b"]);
    check(1, &["a ready@100", "b ready@10"], 0, &["b"]);
    check(1, &["a ready r1", "b ready r5"], 0, &["b"]);
    check(1, &["a ready age100", "b ready age10"], 0, &["b"]);
    check(
        0,
        &[
            "old ready age500",
            "young ready age50",
            "crashy ready r3",
            "recent ready@5",
            "notready",
            "unknown unknown ready",
            "pending pending",
            "nowhere pending unscheduled",
        ],
        0,
        &[
            "nowhere", "pending", "unknown", "notready", "recent", "crashy", "young", "old",
        ],
    );
}

#[test]
fn ignores_pods_controlled_by_someone_else() {
    let rs = replicaset("web-1", 1, "nginx:1");
    let mut all = pods(&["a ready"]);
    all.push(pod("stranger ready", "uid-other"));
    all.push(pod("orphan ready", ""));
    let plan = reconcile_replicaset(&rs, &all, T0);
    assert!(plan.is_steady(), "{plan:?}");
    assert_eq!(plan.status.replicas, 1);
}

#[test]
fn creations_are_bounded_and_batched_by_slow_start() {
    let rs = replicaset("web-1", 600, "nginx:1");
    let plan = reconcile_replicaset(&rs, &[] as &[Pod], T0);
    assert_eq!(plan.create.len(), MAX_CREATES_PER_RECONCILE);
    assert_eq!(slow_start_batches(0), Vec::<usize>::new());
    assert_eq!(slow_start_batches(7), vec![1, 2, 4]);
    assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
    let batches = slow_start_batches(MAX_CREATES_PER_RECONCILE);
    assert_eq!(batches.iter().sum::<usize>(), MAX_CREATES_PER_RECONCILE);
    assert_eq!(batches.len(), 9, "1+2+…+256 = 511 > 500: nine batches");
}

#[test]
fn new_pods_come_from_the_template() {
    let mut rs = replicaset("web-1", 1, "nginx:1");
    rs.spec.template.metadata.labels = labels(&[("app", "web"), ("tier", "front")]);
    let plan = reconcile_replicaset(&rs, &[] as &[Pod], T0);
    let pod = &plan.create[0];
    assert_eq!(pod.metadata.generate_name, "web-1-");
    assert_eq!(pod.metadata.name, "");
    assert_eq!(pod.metadata.namespace, "default");
    assert_eq!(pod.metadata.labels, rs.spec.template.metadata.labels);
    assert_eq!(pod.spec.containers[0].image, "nginx:1");
    let owner = &pod.metadata.owner_references[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ReplicaSet", "web-1", RS_UID)
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
}

/// Checks the status of a ReplicaSet with `min_ready_seconds` over `existing`, and when it asks
/// to be reconciled again.
fn check_status(
    min_ready_seconds: i32,
    existing: &[Pod],
    expected: ReplicaSetStatus,
    requeue_ms: Option<i64>,
) {
    let mut rs = replicaset("web-1", 3, "nginx:1");
    rs.spec.min_ready_seconds = Some(min_ready_seconds);
    let plan = reconcile_replicaset(&rs, existing, T0);
    assert_eq!(plan.status, expected);
    assert_eq!(plan.requeue_after_ms, requeue_ms);
}

#[test]
fn status_counts_ready_and_available_pods() {
    let mut unlabeled = pod("d ready@100", RS_UID);
    unlabeled.metadata.labels.clear();
    let mut existing = pods(&["a ready@100", "b ready@2", "c", "gone deleting ready"]);
    existing.push(unlabeled);
    let status = |available| ReplicaSetStatus {
        replicas: 4,
        fully_labeled_replicas: 3,
        ready_replicas: 3,
        available_replicas: available,
        observed_generation: 2,
        conditions: Vec::new(),
    };
    check_status(0, &existing, status(3), None);
    // b has been ready for 2 s of the 5 required: available in 3 s.
    check_status(5, &existing, status(2), Some(3000));
    check_status(200, &existing, status(0), Some(100_000));
}

#[test]
fn a_replicaset_being_deleted_only_reports_status() {
    let mut rs = replicaset("web-1", 3, "nginx:1");
    rs.metadata.deletion_timestamp = Some(crate::fixtures::at(T0));
    let plan = reconcile_replicaset(&rs, &pods(&["a ready"]), T0);
    assert!(plan.is_steady());
    assert_eq!(plan.status.replicas, 1);
}

/// Checks which of `candidates` the ReplicaSet (selector `app=web`) adopts and releases.
fn check_adoption(candidates: &[Pod], adopt: &[&str], release: &[&str]) {
    let rs = replicaset("web-1", 3, "nginx:1");
    let plan = adopt_and_release(&rs, candidates).expect("valid selector");
    assert_eq!(names(&plan.adopt), adopt);
    assert_eq!(names(&plan.release), release);
    assert_eq!(plan.owner_reference.uid, RS_UID);
    assert_eq!(plan.owner_reference.controller, Some(true));
}

#[test]
fn adopts_matching_orphans_and_releases_mismatches() {
    let mut relabeled = pod("relabeled ready", RS_UID);
    relabeled.metadata.labels = labels(&[("app", "debug")]);
    let mut elsewhere = pod("elsewhere", "");
    elsewhere.metadata.namespace = "other".to_owned();
    let mut unrelated = pod("unrelated", "");
    unrelated.metadata.labels = labels(&[("app", "db")]);
    let candidates = vec![
        pod("orphan ready", ""),
        pod("mine ready", RS_UID),
        pod("theirs ready", "uid-other"),
        pod("dying deleting", ""),
        pod("done succeeded", ""),
        relabeled,
        elsewhere,
        unrelated,
    ];
    check_adoption(&candidates, &["orphan"], &["relabeled"]);
}

#[test]
fn an_empty_selector_adopts_nothing() {
    let mut rs = replicaset("web-1", 3, "nginx:1");
    rs.spec.selector = LabelSelector::default();
    let plan = adopt_and_release(&rs, &[pod("orphan ready", "")]).expect("valid selector");
    assert!(plan.adopt.is_empty());
}
