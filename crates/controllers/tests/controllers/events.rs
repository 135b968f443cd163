//! Events: stable names, merging repeats, and the per-loop budget.

use flotilla_controllers::events::{
    event_name, involved_object, merge_event, new_event, EventBudget, Report,
};
use flotilla_state::objects::{EventType, Kind, ObjectMeta, ObjectReference};

use crate::fixtures::{at, T0};

fn involved(name: &str, uid: &str) -> ObjectReference {
    let meta = ObjectMeta {
        name: name.to_owned(),
        namespace: "default".to_owned(),
        uid: uid.to_owned(),
        ..ObjectMeta::default()
    };
    involved_object(Kind::Deployment, &meta)
}

fn report<'a>(reason: &'a str, message: &'a str) -> Report<'a> {
    Report {
        type_: EventType::Normal,
        reason,
        message,
    }
}

#[test]
fn names_are_stable_per_object_reason_and_message() {
    let web = involved("web", "u1");
    let name = event_name(&web, "ScalingReplicaSet", "Scaled up");
    assert!(name.starts_with("web."), "{name}");
    assert_eq!(name, event_name(&web, "ScalingReplicaSet", "Scaled up"));
    assert_ne!(name, event_name(&web, "ScalingReplicaSet", "Scaled down"));
    assert_ne!(name, event_name(&web, "Other", "Scaled up"));
    assert_ne!(
        name,
        event_name(&involved("web", "u2"), "ScalingReplicaSet", "Scaled up"),
        "a recreated object starts afresh"
    );
    let long = event_name(&involved(&"x".repeat(253), "u1"), "R", "m");
    assert_eq!(long.len(), 253);
}

#[test]
fn a_new_event_says_who_what_and_when() {
    let event = new_event(
        involved("web", "u1"),
        report("ScalingReplicaSet", "Scaled up"),
        "deployment-controller",
        T0,
    );
    assert_eq!(event.metadata.namespace, "default");
    assert_eq!(
        (
            event.involved_object.kind.as_str(),
            event.involved_object.api_version.as_str()
        ),
        ("Deployment", "apps/v1")
    );
    assert_eq!(
        (event.reason.as_str(), event.message.as_str(), event.type_),
        ("ScalingReplicaSet", "Scaled up", Some(EventType::Normal))
    );
    assert_eq!(
        (
            event.count,
            event.first_timestamp.clone(),
            event.last_timestamp.clone()
        ),
        (Some(1), Some(at(T0)), Some(at(T0)))
    );
    assert_eq!(
        event.source.map(|s| s.component),
        Some("deployment-controller".to_owned())
    );
    let node = ObjectMeta {
        name: "node-1".to_owned(),
        ..ObjectMeta::default()
    };
    let about_node = new_event(
        involved_object(Kind::Node, &node),
        report("NodeNotReady", "lost"),
        "node-lifecycle",
        T0,
    );
    assert_eq!(
        about_node.metadata.namespace, "default",
        "cluster-scoped objects' events live in default"
    );
}

#[test]
fn a_repeat_increases_the_count_of_the_stored_event() {
    let mut stored = new_event(involved("web", "u1"), report("R", "m"), "c", T0);
    stored.metadata.resource_version = "42".to_owned();
    let repeat = new_event(involved("web", "u1"), report("R", "m"), "c", T0 + 5000);
    assert_eq!(repeat.metadata.name, stored.metadata.name);
    let merged = merge_event(&stored, &repeat);
    assert_eq!(merged.count, Some(2));
    assert_eq!(
        (merged.first_timestamp, merged.last_timestamp),
        (Some(at(T0)), Some(at(T0 + 5000)))
    );
    assert_eq!(
        merged.metadata.resource_version, "42",
        "updated conditionally on what was read"
    );
    let late = merge_event(&merge_event(&stored, &repeat), &stored);
    assert_eq!(
        (late.count, late.last_timestamp),
        (Some(3), Some(at(T0 + 5000))),
        "an older repeat does not move time back"
    );
}

#[test]
fn the_budget_merges_repeats_and_drops_the_excess() {
    let event = |message, ms| new_event(involved("web", "u1"), report("R", message), "c", ms);
    let mut budget = EventBudget::new(2);
    assert!(budget.record(event("a", T0)));
    assert!(budget.record(event("a", T0 + 1)));
    assert!(budget.record(event("b", T0)));
    assert!(!budget.record(event("c", T0)));
    assert_eq!(budget.dropped(), 1);
    let events = budget.into_events();
    let summary: Vec<(&str, Option<i32>)> = events
        .iter()
        .map(|e| (e.message.as_str(), e.count))
        .collect();
    assert_eq!(summary, vec![("a", Some(2)), ("b", Some(1))]);
}
