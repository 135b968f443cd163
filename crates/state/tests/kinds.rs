//! Resource types as users type them (`flotilla get po`, `get deployments.apps`), and the names
//! and scope each kind reports.

use flotilla_state::objects::{Namespace, Pod};
use flotilla_state::{Kind, Object, Resource};

fn check(input: &str, expected: Option<Kind>) {
    let parsed = Kind::parse(input).map_err(|e| e.to_string());
    let expected = expected.ok_or(format!("unknown resource type {input:?}"));
    assert_eq!(parsed, expected, "{input:?}");
}

#[test]
fn resource_types_parse_as_kubectl_accepts_them() {
    let cases = [
        ("pods", Some(Kind::Pod)),
        ("pod", Some(Kind::Pod)),
        ("po", Some(Kind::Pod)),
        ("Pod", Some(Kind::Pod)),
        ("PODS", Some(Kind::Pod)),
        ("deploy", Some(Kind::Deployment)),
        ("Deployment", Some(Kind::Deployment)),
        ("deployments.apps", Some(Kind::Deployment)),
        ("deployment.v1.apps", Some(Kind::Deployment)),
        ("rs", Some(Kind::ReplicaSet)),
        ("replicasets.apps", Some(Kind::ReplicaSet)),
        ("svc", Some(Kind::Service)),
        ("no", Some(Kind::Node)),
        ("nodes", Some(Kind::Node)),
        ("cm", Some(Kind::ConfigMap)),
        ("configmap", Some(Kind::ConfigMap)),
        ("ns", Some(Kind::Namespace)),
        ("hpa", Some(Kind::HorizontalPodAutoscaler)),
        (
            "horizontalpodautoscalers.autoscaling",
            Some(Kind::HorizontalPodAutoscaler),
        ),
        (
            "horizontalpodautoscalers.v2.autoscaling",
            Some(Kind::HorizontalPodAutoscaler),
        ),
        ("ev", Some(Kind::Event)),
        ("events", Some(Kind::Event)),
        ("deployments.extensions", None),
        ("deployments.v1beta1.apps", None),
        ("pods.apps", None),
        ("ingresses", None),
        ("", None),
    ];
    for (input, expected) in cases {
        check(input, expected);
    }
}

#[test]
fn kinds_know_their_names_and_scope() {
    let table: Vec<(&str, &str, &str, bool)> = Kind::ALL
        .iter()
        .map(|k| (k.name(), k.api_version(), k.plural(), k.is_namespaced()))
        .collect();
    assert_eq!(
        table,
        [
            ("Namespace", "v1", "namespaces", false),
            ("Node", "v1", "nodes", false),
            ("Pod", "v1", "pods", true),
            ("Deployment", "apps/v1", "deployments", true),
            ("ReplicaSet", "apps/v1", "replicasets", true),
            ("Service", "v1", "services", true),
            ("ConfigMap", "v1", "configmaps", true),
            ("Event", "v1", "events", true),
            (
                "HorizontalPodAutoscaler",
                "autoscaling/v2",
                "horizontalpodautoscalers",
                true
            ),
        ]
    );
}

#[test]
fn objects_convert_to_and_from_concrete_kinds() {
    let mut pod = Pod::default();
    pod.metadata.name = "p".into();
    let mut object = Object::from(pod);
    assert_eq!(
        (object.kind(), object.api_version(), object.name()),
        (Kind::Pod, "v1", "p")
    );
    object.metadata_mut().namespace = "shop".into();
    assert_eq!(
        object
            .downcast_ref::<Pod>()
            .map(|p| p.metadata.namespace.as_str()),
        Some("shop")
    );
    assert!(object.downcast_ref::<Namespace>().is_none());
    let object = Namespace::try_from_object(object).unwrap_err();
    let pod = Pod::try_from_object(object).unwrap();
    assert_eq!(<Pod as Resource>::KIND, Kind::Pod);
    assert_eq!(pod.metadata.name, "p");
    assert_eq!(
        std::mem::size_of::<Object>(),
        2 * std::mem::size_of::<usize>(),
        "variants are boxed"
    );
}
