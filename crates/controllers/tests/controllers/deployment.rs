//! Deployment plans: first rollout, rolling-update arithmetic step by step, Recreate ordering,
//! rollback and revisions, history limit, pause, proportional scaling, progress deadline, and
//! the CLI helpers (`rollout status/history/undo`).

use flotilla_controllers::deployment::{
    reconcile_deployment, rollback_template, rollout_bounds, rollout_history, rollout_status,
    template_hash, RolloutBounds, RolloutStatus, CHANGE_CAUSE_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, POD_TEMPLATE_HASH_LABEL,
    REVISION_ANNOTATION,
};
use flotilla_controllers::ControllerError;
use flotilla_state::objects::{
    ConditionStatus, Deployment, DeploymentCondition, DeploymentStatus, IntOrString, Pod,
    PodTemplateSpec,
};

use crate::fixtures::{at, deployment, recreate_deployment, replicaset, template, T0};
use crate::sim::Sim;

fn rs_name(image: &str) -> String {
    format!(
        "web-{}",
        template_hash(&template(image), 0, "web").expect("hashable")
    )
}

fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> &'a DeploymentCondition {
    let found = status.conditions.iter().find(|c| c.type_ == type_);
    found.unwrap_or_else(|| panic!("no {type_} condition in {status:#?}"))
}

fn messages(sim: &Sim) -> Vec<&str> {
    sim.events.iter().map(|e| e.message.as_str()).collect()
}

#[test]
fn first_rollout_creates_a_hashed_replicaset() {
    let d = deployment(3, "nginx:1", 1.into(), 0.into());
    let plan = reconcile_deployment(&d, &[], &[] as &[Pod], T0).expect("ok");
    assert_eq!(
        plan,
        reconcile_deployment(&d, &[], &[] as &[Pod], T0).expect("ok"),
        "deterministic"
    );
    let rs = plan
        .create_rs
        .as_ref()
        .expect("creates the first ReplicaSet");
    let hash = rs
        .metadata
        .name
        .strip_prefix("web-")
        .expect("named <deployment>-<hash>");
    assert_eq!(rs.metadata.name, rs_name("nginx:1"));
    for labels in [
        &rs.metadata.labels,
        &rs.spec.template.metadata.labels,
        &rs.spec.selector.match_labels,
    ] {
        assert_eq!(
            labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
            Some(hash)
        );
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    }
    assert_eq!(rs.spec.replicas, Some(3));
    let annotation = |key: &str| rs.metadata.annotations.get(key).map(String::as_str);
    assert_eq!(annotation(REVISION_ANNOTATION), Some("1"));
    assert_eq!(annotation(DESIRED_REPLICAS_ANNOTATION), Some("3"));
    assert_eq!(annotation(MAX_REPLICAS_ANNOTATION), Some("4"));
    assert_eq!(rs.metadata.owner_references[0].uid, "uid-web");
    assert_eq!(plan.deployment_revision.as_deref(), Some("1"));
    let message = format!("Scaled up replica set {} from 0 to 3", rs.metadata.name);
    assert_eq!(plan.events[0].message, message);
    let progressing = condition(&plan.status, "Progressing");
    assert_eq!(progressing.reason, "NewReplicaSetCreated");
    assert_eq!(
        progressing.message,
        format!("Created new replica set {:?}", rs.metadata.name)
    );
    assert_eq!(
        condition(&plan.status, "Available").status,
        ConditionStatus::False
    );
}

#[test]
fn template_hash_is_stable_and_ignores_its_own_label() {
    let plain = template("nginx:1");
    let mut labeled = plain.clone();
    labeled
        .metadata
        .labels
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), "xyz".to_owned());
    let hash = |t: &PodTemplateSpec| template_hash(t, 0, "web").expect("hashable");
    assert_eq!(hash(&plain), hash(&plain.clone()));
    assert_eq!(hash(&plain), hash(&labeled));
    assert_ne!(hash(&plain), hash(&template("nginx:2")));
    assert_ne!(
        hash(&plain),
        template_hash(&plain, 1, "web").expect("hashable")
    );
}

#[test]
fn finished_rollout_reports_full_status() {
    let sim = Sim::rolled_out(deployment(3, "nginx:1", 1.into(), 0.into()));
    let status = sim.d.status.clone().expect("status written");
    let counts = (
        status.replicas,
        status.updated_replicas,
        status.ready_replicas,
        status.available_replicas,
        status.unavailable_replicas,
    );
    assert_eq!(counts, (3, 3, 3, 3, 0));
    let available = condition(&status, "Available");
    assert_eq!(
        (available.status, available.reason.as_str()),
        (ConditionStatus::True, "MinimumReplicasAvailable")
    );
    let progressing = condition(&status, "Progressing");
    assert_eq!(progressing.reason, "NewReplicaSetAvailable");
    assert_eq!(
        progressing.message,
        format!(
            "ReplicaSet {:?} has successfully progressed.",
            rs_name("nginx:1")
        )
    );
    let done = rollout_status(&sim.d).expect("no deadline");
    assert_eq!(done.message, "deployment \"web\" successfully rolled out");
}

/// Rolls `nginx:1` out to `replicas`, changes the image, and checks `(new, old)` replicas after
/// every plan until done (pods become ready whenever the rollout waits for them). `Sim::step`
/// asserts the surge and availability bounds on each plan.
fn check_rolling(
    surge: IntOrString,
    unavailable: IntOrString,
    replicas: i32,
    min_ready_seconds: i32,
    expected: &[(i32, i32)],
) {
    let mut d = deployment(replicas, "nginx:1", surge, unavailable);
    d.spec.min_ready_seconds = Some(min_ready_seconds);
    let mut sim = Sim::rolled_out(d);
    sim.set_image("nginx:2");
    assert_eq!(sim.roll_out(), expected);
}

#[test]
fn rolling_update_respects_surge_and_unavailability() {
    check_rolling(
        1.into(),
        0.into(),
        3,
        0,
        &[(1, 3), (1, 2), (2, 2), (2, 1), (3, 1), (3, 0)],
    );
    check_rolling(
        "25%".into(),
        "25%".into(),
        4,
        0,
        &[(1, 3), (2, 3), (2, 1), (4, 1), (4, 0)],
    );
    check_rolling(
        0.into(),
        1.into(),
        3,
        0,
        &[(0, 2), (1, 2), (1, 1), (2, 1), (2, 0), (3, 0)],
    );
    // minReadySeconds only slows the same steps down.
    check_rolling(
        1.into(),
        0.into(),
        3,
        10,
        &[(1, 3), (1, 2), (2, 2), (2, 1), (3, 1), (3, 0)],
    );
}

#[test]
fn rolling_update_emits_scaling_events() {
    let mut sim = Sim::rolled_out(deployment(2, "nginx:1", 1.into(), 0.into()));
    sim.events.clear();
    sim.set_image("nginx:2");
    sim.roll_out();
    let (old, new) = (rs_name("nginx:1"), rs_name("nginx:2"));
    assert_eq!(
        messages(&sim),
        vec![
            format!("Scaled up replica set {new} from 0 to 1"),
            format!("Scaled down replica set {old} from 2 to 1"),
            format!("Scaled up replica set {new} from 1 to 2"),
            format!("Scaled down replica set {old} from 1 to 0"),
        ]
    );
    assert!(sim
        .events
        .iter()
        .all(|e| e.reason == "ScalingReplicaSet" && e.involved_object.name == "web"));
}

#[test]
fn pending_minimum_readiness_asks_for_a_requeue() {
    let mut d = deployment(1, "nginx:1", 1.into(), 0.into());
    d.spec.min_ready_seconds = Some(10);
    let mut sim = Sim::new(d);
    sim.step();
    sim.ready_all();
    sim.advance(4000);
    let plan = sim.step();
    assert_eq!(plan.requeue_after_ms, Some(6000));
}

#[test]
fn recreate_scales_old_down_and_waits_for_their_pods() {
    let mut sim = Sim::rolled_out(recreate_deployment(3, "nginx:1"));
    sim.set_image("nginx:2");
    let plan = sim.step();
    assert!(
        plan.create_rs.is_none(),
        "no new ReplicaSet while old pods run"
    );
    assert_eq!(
        (plan.scale[0].name.clone(), plan.scale[0].replicas),
        (rs_name("nginx:1"), 0)
    );
    let plan = sim.step();
    assert!(
        plan.is_steady(),
        "old pods are still terminating: {plan:#?}"
    );
    sim.finish_terminations();
    let plan = sim.step();
    let created = plan
        .create_rs
        .expect("new ReplicaSet once old pods are gone");
    assert_eq!(created.spec.replicas, Some(3));
    assert_eq!(sim.roll_out(), Vec::<(i32, i32)>::new());
    assert_eq!(sim.new_and_old(), (3, 0));
}

fn revision(sim: &Sim, image: &str) -> Option<String> {
    let rs = sim.replicaset_named(&rs_name(image))?;
    rs.metadata.annotations.get(REVISION_ANNOTATION).cloned()
}

#[test]
fn rollback_moves_the_old_revision_to_the_front() {
    let mut sim = Sim::rolled_out(deployment(3, "nginx:1", 1.into(), 0.into()));
    sim.set_image("nginx:2");
    sim.roll_out();
    assert_eq!(
        (
            revision(&sim, "nginx:1").as_deref(),
            revision(&sim, "nginx:2").as_deref()
        ),
        (Some("1"), Some("2"))
    );

    let previous = rollback_template(&sim.d, &sim.rss, None).expect("revision 1 exists");
    assert_eq!(previous.spec.containers[0].image, "nginx:1");
    assert!(!previous
        .metadata
        .labels
        .contains_key(POD_TEMPLATE_HASH_LABEL));
    sim.d.spec.template = previous;
    sim.d.metadata.generation += 1;
    let plan = sim.step();
    assert!(plan.create_rs.is_none(), "the old ReplicaSet is reused");
    assert_eq!(plan.deployment_revision.as_deref(), Some("3"));
    sim.roll_out();
    assert_eq!(revision(&sim, "nginx:1").as_deref(), Some("3"));
    assert_eq!(sim.new_and_old(), (3, 0));
    let history: Vec<(i64, String)> = rollout_history(&sim.rss)
        .into_iter()
        .map(|e| (e.revision, e.template))
        .collect();
    assert_eq!(
        history,
        vec![(2, "web=nginx:2".to_owned()), (3, "web=nginx:1".to_owned())]
    );
    let to_two = rollback_template(&sim.d, &sim.rss, Some(2)).expect("revision 2 exists");
    assert_eq!(to_two.spec.containers[0].image, "nginx:2");
}

#[test]
fn rollback_refuses_what_kubectl_refuses() {
    let mut sim = Sim::rolled_out(deployment(1, "nginx:1", 1.into(), 0.into()));
    assert_eq!(
        rollback_template(&sim.d, &[], None),
        Err(ControllerError::NoRolloutHistory("web".to_owned()))
    );
    assert_eq!(
        rollback_template(&sim.d, &sim.rss, None),
        Err(ControllerError::NoPreviousRevision)
    );
    assert_eq!(
        rollback_template(&sim.d, &sim.rss, Some(7)),
        Err(ControllerError::RevisionNotFound { revision: 7 })
    );
    sim.d.spec.paused = Some(true);
    assert_eq!(
        rollback_template(&sim.d, &sim.rss, Some(1)),
        Err(ControllerError::RollbackPaused("web".to_owned()))
    );
}

#[test]
fn history_records_change_causes() {
    let mut d = deployment(1, "nginx:1", 1.into(), 0.into());
    d.metadata
        .annotations
        .insert(CHANGE_CAUSE_ANNOTATION.to_owned(), "first".to_owned());
    let mut sim = Sim::rolled_out(d);
    sim.d
        .metadata
        .annotations
        .insert(CHANGE_CAUSE_ANNOTATION.to_owned(), "bump".to_owned());
    sim.set_image("nginx:2");
    sim.roll_out();
    let causes: Vec<(i64, Option<String>)> = rollout_history(&sim.rss)
        .into_iter()
        .map(|e| (e.revision, e.change_cause))
        .collect();
    assert_eq!(
        causes,
        vec![(1, Some("first".to_owned())), (2, Some("bump".to_owned()))]
    );
}

/// Rolls through `images` with `revisionHistoryLimit = limit` and checks which ReplicaSets
/// (by image) remain.
fn check_history_limit(limit: i32, images: &[&str], remaining: &[&str]) {
    let mut d = deployment(2, images[0], 1.into(), 0.into());
    d.spec.revision_history_limit = Some(limit);
    let mut sim = Sim::rolled_out(d);
    for image in &images[1..] {
        sim.set_image(image);
        sim.roll_out();
        sim.finish_terminations();
        sim.step();
    }
    let mut left: Vec<String> = sim
        .rss
        .iter()
        .map(|rs| rs.spec.template.spec.containers[0].image.clone())
        .collect();
    left.sort();
    assert_eq!(left, remaining);
}

#[test]
fn old_replicasets_beyond_the_history_limit_are_deleted() {
    check_history_limit(10, &["v1", "v2", "v3"], &["v1", "v2", "v3"]);
    check_history_limit(1, &["v1", "v2", "v3"], &["v2", "v3"]);
    check_history_limit(0, &["v1", "v2", "v3"], &["v3"]);
}

#[test]
fn a_paused_deployment_does_not_roll_but_scales() {
    let mut sim = Sim::rolled_out(deployment(3, "nginx:1", 1.into(), 0.into()));
    sim.d.spec.paused = Some(true);
    sim.set_image("nginx:2");
    let plan = sim.step();
    assert!(plan.is_steady(), "{plan:#?}");
    let progressing = condition(&plan.status, "Progressing");
    assert_eq!(
        (progressing.status, progressing.reason.as_str()),
        (ConditionStatus::Unknown, "DeploymentPaused")
    );
    assert_eq!(plan.requeue_after_ms, None);

    sim.d.spec.replicas = Some(5);
    let plan = sim.step();
    assert!(plan.create_rs.is_none());
    assert_eq!(
        (plan.scale[0].name.clone(), plan.scale[0].replicas),
        (rs_name("nginx:1"), 5)
    );
    assert_eq!(
        plan.scale[0]
            .annotations
            .get(DESIRED_REPLICAS_ANNOTATION)
            .map(String::as_str),
        Some("5")
    );

    sim.d.spec.paused = None;
    let plan = sim.step();
    assert_eq!(
        plan.create_rs.map(|rs| rs.metadata.name),
        Some(rs_name("nginx:2"))
    );
    sim.roll_out();
    assert_eq!(sim.new_and_old(), (5, 0));
}

#[test]
fn scaling_mid_rollout_spreads_proportionally() {
    let mut sim = Sim::rolled_out(deployment(4, "nginx:1", 1.into(), 0.into()));
    sim.set_image("nginx:2");
    sim.step();
    assert_eq!(sim.new_and_old(), (1, 4));
    sim.d.spec.replicas = Some(8);
    sim.d.metadata.generation += 1;
    let plan = sim.step();
    assert_eq!(
        sim.new_and_old(),
        (1, 8),
        "the 4 extra replicas follow the sizes (1:4, remainder to the larger): {plan:#?}"
    );
    assert_eq!(sim.total_replicas(), 9, "replicas + maxSurge");
    sim.roll_out();
    assert_eq!(sim.new_and_old(), (8, 0));
}

#[test]
fn a_stalled_rollout_times_out() {
    let mut sim = Sim::rolled_out(deployment(1, "nginx:1", 1.into(), 0.into()));
    sim.set_image("nginx:2");
    sim.step();
    // The next reconcile sees the new pod exist (progress), then nothing more happens.
    let plan = sim.step();
    let progressing = condition(&plan.status, "Progressing");
    assert_eq!(progressing.reason, "ReplicaSetUpdated");
    assert_eq!(
        plan.requeue_after_ms,
        Some(600_000),
        "wake up at the progress deadline"
    );
    sim.advance(600_000);
    let plan = sim.step();
    let progressing = condition(&plan.status, "Progressing");
    assert_eq!(
        (progressing.status, progressing.reason.as_str()),
        (ConditionStatus::False, "ProgressDeadlineExceeded")
    );
    assert_eq!(
        progressing.message,
        format!(
            "ReplicaSet {:?} has timed out progressing.",
            rs_name("nginx:2")
        )
    );
    assert_eq!(
        rollout_status(&sim.d),
        Err(ControllerError::ProgressDeadlineExceeded("web".to_owned()))
    );
    // Progress resumes the rollout and the condition.
    sim.ready_all();
    sim.roll_out();
    assert_eq!(
        condition(sim.d.status.as_ref().expect("status"), "Progressing").reason,
        "NewReplicaSetAvailable"
    );
}

#[test]
fn a_deployment_being_deleted_only_reports_status() {
    let mut d = deployment(3, "nginx:1", 1.into(), 0.into());
    d.metadata.deletion_timestamp = Some(at(T0));
    let plan = reconcile_deployment(&d, &[], &[] as &[Pod], T0).expect("ok");
    assert!(plan.is_steady());
    assert_eq!(plan.status.observed_generation, 1);
}

#[test]
fn replicasets_of_other_owners_are_left_alone() {
    let d = deployment(1, "nginx:1", 1.into(), 0.into());
    let stranger = replicaset("web-stranger", 4, "nginx:1");
    let plan = reconcile_deployment(&d, &[stranger], &[] as &[Pod], T0).expect("ok");
    assert!(plan.scale.is_empty());
    assert!(
        plan.create_rs.is_some(),
        "the unowned ReplicaSet is not the deployment's"
    );
}

fn check_bounds(
    replicas: i32,
    surge: IntOrString,
    unavailable: IntOrString,
    expected: Result<(i32, i32), ControllerError>,
) {
    let d = deployment(replicas, "nginx:1", surge, unavailable);
    let bounds = rollout_bounds(&d).map(|b: RolloutBounds| (b.max_surge, b.max_unavailable));
    assert_eq!(bounds, expected, "replicas {replicas}");
}

#[test]
fn rollout_bounds_resolve_like_kubernetes() {
    check_bounds(4, "25%".into(), "25%".into(), Ok((1, 1)));
    check_bounds(10, "25%".into(), "25%".into(), Ok((3, 2)));
    check_bounds(3, "0%".into(), "10%".into(), Ok((0, 1)));
    check_bounds(1, 1.into(), "50%".into(), Ok((1, 0)));
    check_bounds(3, 0.into(), 5.into(), Ok((0, 3)));
    let name = "web".to_owned();
    check_bounds(
        3,
        0.into(),
        0.into(),
        Err(ControllerError::ZeroRolloutBounds {
            deployment: name.clone(),
        }),
    );
    check_bounds(
        3,
        (-1).into(),
        1.into(),
        Err(ControllerError::NegativeRolloutBound {
            deployment: name.clone(),
            field: "maxSurge",
            value: -1,
        }),
    );
    let invalid = rollout_bounds(&deployment(3, "nginx:1", "lots".into(), 1.into()));
    assert!(
        matches!(
            invalid,
            Err(ControllerError::InvalidRolloutBound {
                field: "maxSurge",
                ..
            })
        ),
        "{invalid:?}"
    );
    let recreate = rollout_bounds(&recreate_deployment(3, "nginx:1")).expect("ok");
    assert_eq!((recreate.max_surge, recreate.max_unavailable), (0, 0));
}

/// `rollout status` of a Deployment wanting 3 replicas at `generation`, with the given status
/// counts `(observed, updated, replicas, available)`.
fn check_rollout_status(generation: i64, counts: (i64, i32, i32, i32), message: &str, done: bool) {
    let mut d: Deployment = deployment(3, "nginx:1", 1.into(), 0.into());
    d.metadata.generation = generation;
    let (observed_generation, updated_replicas, replicas, available_replicas) = counts;
    d.status = Some(DeploymentStatus {
        observed_generation,
        updated_replicas,
        replicas,
        available_replicas,
        ..DeploymentStatus::default()
    });
    let expected = RolloutStatus {
        done,
        message: message.to_owned(),
    };
    assert_eq!(rollout_status(&d), Ok(expected));
}

#[test]
fn rollout_status_speaks_kubectl() {
    let waiting = "Waiting for deployment \"web\" rollout to finish:";
    check_rollout_status(
        2,
        (1, 3, 3, 3),
        "Waiting for deployment spec update to be observed...",
        false,
    );
    check_rollout_status(
        1,
        (1, 1, 4, 3),
        &format!("{waiting} 1 out of 3 new replicas have been updated..."),
        false,
    );
    check_rollout_status(
        1,
        (1, 3, 4, 3),
        &format!("{waiting} 1 old replicas are pending termination..."),
        false,
    );
    check_rollout_status(
        1,
        (1, 3, 3, 2),
        &format!("{waiting} 2 of 3 updated replicas are available..."),
        false,
    );
    check_rollout_status(
        1,
        (1, 3, 3, 3),
        "deployment \"web\" successfully rolled out",
        true,
    );
}

#[test]
fn a_name_held_by_another_template_gets_the_next_hash() {
    let d = deployment(1, "nginx:1", 1.into(), 0.into());
    let mut squatter = replicaset(&rs_name("nginx:1"), 0, "nginx:9");
    squatter.metadata.owner_references = vec![crate::fixtures::controller_ref(
        "Deployment",
        "web",
        "uid-web",
    )];
    let plan = reconcile_deployment(&d, &[squatter], &[] as &[Pod], T0).expect("ok");
    let created = plan.create_rs.expect("a new ReplicaSet");
    let second = template_hash(&template("nginx:1"), 1, "web").expect("hashable");
    assert_eq!(created.metadata.name, format!("web-{second}"));
    assert_eq!(
        created
            .spec
            .template
            .metadata
            .labels
            .get(POD_TEMPLATE_HASH_LABEL),
        Some(&second)
    );
}
