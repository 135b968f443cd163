//! Garbage collection: orphaned dependents and pods stuck terminating on lost nodes.

use flotilla_controllers::gc::{garbage, stuck_terminating};
use flotilla_controllers::node_lifecycle::{LifecycleConfig, NodeTracker};
use flotilla_state::objects::{Kind, ObjectMeta};

use crate::fixtures::{controller_ref, names, pod, replicaset, T0};

const OWNER_KINDS: &[&str] = &["ReplicaSet", "Deployment"];

/// Pod `name` (uid `uid-NAME`) owned by the ReplicaSets with the given uids.
fn owned(name: &str, owners: &[&str]) -> ObjectMeta {
    ObjectMeta {
        namespace: "default".to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        owner_references: owners
            .iter()
            .map(|uid| controller_ref("ReplicaSet", uid, uid))
            .collect(),
        ..ObjectMeta::default()
    }
}

/// ReplicaSet metadata with uid `uid` and no owners.
fn owner(uid: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: "default".to_owned(),
        name: uid.to_owned(),
        uid: uid.to_owned(),
        ..ObjectMeta::default()
    }
}

/// The names of the garbage among `objects`.
fn garbage_names(objects: &[(Kind, &ObjectMeta)]) -> Vec<String> {
    garbage(objects, OWNER_KINDS)
        .into_iter()
        .map(|o| o.name)
        .collect()
}

/// Checks which of `objects` (name, owner uids) are garbage when only the `live` owners exist.
fn check(objects: &[(&str, &[&str])], live: &[&str], expected: &[&str]) {
    let mut metas: Vec<(Kind, ObjectMeta)> = objects
        .iter()
        .map(|(name, owners)| (Kind::Pod, owned(name, owners)))
        .collect();
    metas.extend(live.iter().map(|uid| (Kind::ReplicaSet, owner(uid))));
    let view: Vec<(Kind, &ObjectMeta)> = metas.iter().map(|(k, m)| (*k, m)).collect();
    assert_eq!(garbage_names(&view), expected);
}

#[test]
fn dependents_go_when_every_owner_is_gone() {
    check(
        &[("a", &["rs-1"]), ("b", &["rs-2"]), ("c", &[])],
        &["rs-1"],
        &["b"],
    );
    check(&[("shared", &["rs-1", "rs-2"])], &["rs-2"], &[]);
    check(&[("shared", &["rs-1", "rs-2"])], &[], &["shared"]);
    check(&[("bare", &[])], &[], &[]);
}

#[test]
fn an_owner_of_a_kind_the_caller_does_not_see_keeps_its_dependents() {
    let mut job_pod = owned("batch", &[]);
    job_pod.owner_references = vec![controller_ref("Job", "nightly", "uid-nightly")];
    let mut mixed = owned("mixed", &["rs-gone"]);
    mixed
        .owner_references
        .push(controller_ref("Job", "nightly", "uid-nightly"));
    let gone = owned("gone", &["rs-gone"]);
    let view = [
        (Kind::Pod, &job_pod),
        (Kind::Pod, &mixed),
        (Kind::Pod, &gone),
    ];
    let found: Vec<String> = garbage_names(&view);
    assert_eq!(
        found,
        vec!["gone"],
        "only owners of seen kinds can be judged dead"
    );
}

#[test]
fn a_cascade_unfolds_over_passes() {
    let mut rs = replicaset("web-1", 1, "nginx:1");
    rs.metadata.owner_references = vec![controller_ref("Deployment", "web", "uid-web")];
    let p = pod("p ready", "uid-web-1");
    let both = [(Kind::ReplicaSet, &rs.metadata), (Kind::Pod, &p.metadata)];
    let first: Vec<String> = garbage_names(&both);
    assert_eq!(
        first,
        vec!["web-1"],
        "the deployment is gone; its pods wait for the ReplicaSet"
    );
    let second: Vec<String> = garbage_names(&both[1..]);
    assert_eq!(second, vec!["p"]);
}

#[test]
fn pods_stuck_terminating_on_a_lost_node_are_force_deleted() {
    let config = LifecycleConfig::default();
    let mut tracker = NodeTracker::new();
    let mut lost = pod("lost deleting", "");
    lost.spec.node_name = "node-1".to_owned();
    let mut healthy = pod("healthy deleting", "");
    healthy.spec.node_name = "node-2".to_owned();
    let pods = vec![
        lost,
        healthy,
        pod("never deleting unscheduled", ""),
        pod("running ready", ""),
    ];
    assert!(
        stuck_terminating(&pods, &tracker, T0, &config).is_empty(),
        "not leader: no judgement"
    );
    tracker.became_leader(T0);
    tracker.heartbeat("node-1", T0);
    tracker.heartbeat("node-2", T0 + 3000);
    assert_eq!(
        names(&stuck_terminating(&pods, &tracker, T0 + 2999, &config)),
        vec!["never"]
    );
    assert_eq!(
        names(&stuck_terminating(&pods, &tracker, T0 + 3000, &config)),
        vec!["lost", "never"]
    );
}
