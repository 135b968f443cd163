//! Garbage collection: orphaned dependents and pods stuck terminating on lost nodes.

use std::collections::HashSet;

use flotilla_controllers::gc::{garbage, index, stuck_terminating, OwnedRef};
use flotilla_controllers::node_lifecycle::{LifecycleConfig, NodeTracker};
use flotilla_controllers::ObjectRef;
use flotilla_state::objects::{Kind, Object};

use crate::fixtures::{names, pod, replicaset, T0};

fn owned(name: &str, owners: &[&str]) -> OwnedRef {
    OwnedRef {
        object: ObjectRef {
            kind: Kind::Pod,
            namespace: "default".to_owned(),
            name: name.to_owned(),
            uid: format!("uid-{name}"),
        },
        owner_uids: owners.iter().map(|o| (*o).to_owned()).collect(),
    }
}

/// Checks which of `objects` (name, owner uids) are garbage when only `live` uids exist.
fn check(objects: &[(&str, &[&str])], live: &[&str], expected: &[&str]) {
    let objects: Vec<OwnedRef> = objects
        .iter()
        .map(|(name, owners)| owned(name, owners))
        .collect();
    let live: HashSet<String> = live.iter().map(|uid| (*uid).to_owned()).collect();
    let found = garbage(&objects, &live);
    let found: Vec<&str> = found.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(found, expected);
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
fn a_cascade_unfolds_over_passes() {
    let mut rs = replicaset("web-1", 1, "nginx:1");
    rs.metadata.owner_references = vec![crate::fixtures::controller_ref(
        "Deployment",
        "web",
        "uid-web",
    )];
    let objects = vec![Object::from(rs), Object::from(pod("p ready", "uid-web-1"))];
    let (owned, live) = index(&objects);
    let first: Vec<String> = garbage(&owned, &live).into_iter().map(|o| o.name).collect();
    assert_eq!(
        first,
        vec!["web-1"],
        "the deployment is gone; its pods wait for the ReplicaSet"
    );
    let remaining = vec![objects[1].clone()];
    let (owned, live) = index(&remaining);
    let second: Vec<String> = garbage(&owned, &live).into_iter().map(|o| o.name).collect();
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
