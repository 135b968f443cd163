//! Label selectors (kubectl `-l` syntax and structured `LabelSelector`s) and field selectors
//! (`--field-selector`), as a user of `get` would see them behave.

use std::collections::BTreeMap;

use flotilla_state::field_selector::Field;
use flotilla_state::objects::{LabelSelector, NodeSelectorTerm};
use flotilla_state::service::object_filter;
use flotilla_state::{parse_manifests, FieldSelector, Kind, Object, Selector};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn web_labels() -> BTreeMap<String, String> {
    labels(&[
        ("app", "web"),
        ("tier", "frontend"),
        ("env", "prod"),
        ("version", "3"),
        ("app.kubernetes.io/name", "shop"),
    ])
}

fn check_match(selector: &str, expected: bool) {
    let compiled = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    assert_eq!(
        compiled.matches(&web_labels()),
        expected,
        "{selector:?} against {:?}",
        web_labels()
    );
}

fn check_parse_error(selector: &str, expected: &str) {
    match Selector::parse(selector) {
        Ok(parsed) => panic!("{selector:?} should not parse, got {parsed}"),
        Err(error) => assert_eq!(error.to_string(), expected, "{selector:?}"),
    }
}

#[test]
fn label_selectors_match_as_kubectl_does() {
    let cases = [
        ("app=web", true),
        ("app==web", true),
        ("app = web", true),
        ("app!=web", false),
        ("app!=db", true),
        ("missing!=x", true),
        ("tier=frontend,env=prod", true),
        ("tier=backend,env=prod", false),
        ("env in (prod,staging)", true),
        ("env in ( prod , staging )", true),
        ("env in (dev,staging)", false),
        ("env notin (prod)", false),
        ("env notin (dev)", true),
        ("missing notin (dev)", true),
        ("missing in (dev)", false),
        ("release", false),
        ("!release", true),
        ("app", true),
        ("!app", false),
        ("version>2", true),
        ("version<3", false),
        ("version<4,version>2", true),
        ("app>1", false),
        ("app=", false),
        ("app.kubernetes.io/name in (shop)", true),
        ("app.kubernetes.io/name=web", false),
        ("", true),
        ("   ", true),
    ];
    for (selector, expected) in cases {
        check_match(selector, expected);
    }
}

#[test]
fn label_selector_errors_name_the_position_and_token() {
    let cases = [
        ("app=web,=x", "invalid selector \"app=web,=x\": at position 8: expected a label key or \"!\", found \"=\""),
        ("app=web,", "invalid selector \"app=web,\": at position 8: expected a label key or \"!\", found end of selector"),
        ("env in prod", "invalid selector \"env in prod\": at position 7: expected \"(\", found \"prod\""),
        ("env in ()", "invalid selector \"env in ()\": at position 8: expected a label value, found \")\""),
        ("env in (a b)", "invalid selector \"env in (a b)\": at position 10: expected \",\" or \")\", found \"b\""),
        ("env in (a", "invalid selector \"env in (a\": at position 9: expected \",\" or \")\", found end of selector"),
        ("app=web tier=x", "invalid selector \"app=web tier=x\": at position 8: expected \",\" or end of selector, found \"tier\""),
        ("!", "invalid selector \"!\": at position 1: expected a label key, found end of selector"),
        ("bad key=x", "invalid selector \"bad key=x\": at position 4: expected an operator (=, ==, !=, in, notin, >, <), \",\" or end of selector, found \"key\""),
        ("(app)", "invalid selector \"(app)\": at position 0: expected a label key or \"!\", found \"(\""),
        ("version>", "invalid selector \"version>\": at position 8: expected an integer, found end of selector"),
        ("version>x", "invalid selector: \"version\": \"x\" is not an integer"),
        ("app=-web", "invalid selector: \"app\": value \"-web\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
        ("a/b/c=x", "invalid selector: \"a/b/c\": a qualified name must consist of a name part with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
    ];
    for (selector, expected) in cases {
        check_parse_error(selector, expected);
    }
}

/// Sorted by key (not by operator), values sorted and deduplicated.
#[test]
fn selectors_print_canonically() {
    let parsed =
        Selector::parse("tier!=db, app==web,env in (staging,prod,prod),!canary,version>2").unwrap();
    assert_eq!(
        parsed.to_string(),
        "app=web,!canary,env in (prod,staging),tier!=db,version>2"
    );
    assert_eq!(Selector::parse(&parsed.to_string()).unwrap(), parsed);
    assert!(Selector::parse("").unwrap().is_empty());
}

fn check_label_selector(yaml: &str, expected: bool) {
    let selector: LabelSelector = serde_yaml::from_str(yaml).unwrap();
    let compiled =
        Selector::from_label_selector(&selector).unwrap_or_else(|e| panic!("{yaml}: {e}"));
    assert_eq!(compiled.matches(&web_labels()), expected, "{yaml}");
}

#[test]
fn structured_selectors_compile() {
    check_label_selector("{}", true);
    check_label_selector("matchLabels: {app: web}", true);
    check_label_selector("matchLabels: {app: web, tier: backend}", false);
    check_label_selector(
        "matchExpressions: [{key: env, operator: In, values: [prod, dev]}]",
        true,
    );
    check_label_selector(
        "matchExpressions: [{key: env, operator: NotIn, values: [prod]}]",
        false,
    );
    check_label_selector(
        "matchExpressions: [{key: canary, operator: DoesNotExist}]",
        true,
    );
    check_label_selector(
        "{matchLabels: {app: web}, matchExpressions: [{key: tier, operator: Exists}]}",
        true,
    );
    let empty_in: LabelSelector =
        serde_yaml::from_str("matchExpressions: [{key: env, operator: In}]").unwrap();
    let error = Selector::from_label_selector(&empty_in)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "invalid selector: \"env\": wrong number of values (0) for operator In"
    );

    let term: NodeSelectorTerm = serde_yaml::from_str("matchExpressions: [{key: version, operator: Gt, values: ['2']}, {key: env, operator: In, values: [prod]}]").unwrap();
    assert!(Selector::from_node_selector_term(&term)
        .unwrap()
        .matches(&web_labels()));
    let service_selector = labels(&[("app", "web"), ("env", "prod")]);
    assert!(Selector::from_labels(&service_selector)
        .unwrap()
        .matches(&web_labels()));
}

fn objects() -> Vec<Object> {
    let text = "
apiVersion: v1
kind: Pod
metadata: {name: running, namespace: shop}
spec: {nodeName: n1, containers: [{name: c, image: busybox}]}
status: {phase: Running, podIP: 198.18.0.7}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: default}
spec: {restartPolicy: Never, containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
spec: {unschedulable: true}
---
apiVersion: v1
kind: Event
metadata: {name: running.17a, namespace: shop}
involvedObject: {kind: Pod, name: running, namespace: shop}
reason: Scheduled
type: Normal
source: {component: scheduler}
";
    parse_manifests(text).unwrap()
}

/// Names of the objects the field selector picks.
fn check_fields(selector: &str, expected: &[&str]) {
    let parsed = FieldSelector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    let all = objects();
    let picked: Vec<&str> = all
        .iter()
        .filter(|o| parsed.matches(o))
        .map(Object::name)
        .collect();
    assert_eq!(picked, expected, "{selector:?}");
}

#[test]
fn field_selectors_pick_objects() {
    check_fields("", &["running", "pending", "n1", "running.17a"]);
    check_fields("metadata.name=running", &["running"]);
    check_fields("metadata.namespace==shop", &["running", "running.17a"]);
    check_fields("spec.nodeName=n1", &["running"]);
    check_fields("spec.nodeName=", &["pending"]);
    check_fields("status.phase!=Running", &["pending"]);
    check_fields("status.phase=Running,metadata.namespace=shop", &["running"]);
    check_fields("spec.restartPolicy=Always", &["running"]);
    check_fields("status.podIP=198.18.0.7", &["running"]);
    check_fields("spec.unschedulable=true", &["n1"]);
    check_fields(
        "involvedObject.name=running,reason=Scheduled,type=Normal,source=scheduler",
        &["running.17a"],
    );
    check_fields(
        "metadata.name != running",
        &["pending", "n1", "running.17a"],
    );
}

#[test]
fn field_selector_errors_name_the_field() {
    let error = |text: &str| FieldSelector::parse(text).unwrap_err().to_string();
    assert_eq!(error("spec.foo=bar"), "field label not supported: spec.foo");
    assert_eq!(
        error("metadata.name=a,status.hostIP=x"),
        "field label not supported: status.hostIP"
    );
    assert_eq!(
        error("metadata.name=a,status.phase"),
        "invalid selector \"metadata.name=a,status.phase\": at position 16: expected a term of the form field=value or field!=value, found \"status.phase\""
    );
    let for_services = FieldSelector::parse("metadata.name=a,spec.nodeName=n1")
        .unwrap()
        .check_kind(Kind::Service);
    assert_eq!(
        for_services.unwrap_err().to_string(),
        "field label not supported for Service: spec.nodeName"
    );
    assert_eq!(
        FieldSelector::parse("spec.nodeName=n1")
            .unwrap()
            .check_kind(Kind::Pod),
        Ok(())
    );
}

#[test]
fn field_selectors_expose_pinned_values_for_indexes() {
    let parsed = FieldSelector::parse("status.phase!=Failed,spec.nodeName=n7").unwrap();
    assert_eq!(parsed.required_value(Field::SpecNodeName), Some("n7"));
    assert_eq!(
        parsed.required_value(Field::StatusPhase),
        None,
        "negated terms pin nothing"
    );
    assert_eq!(parsed.to_string(), "status.phase!=Failed,spec.nodeName=n7");
}

/// Lists and watches test stored objects, read sparsely from their JSON text, with the
/// request's selectors: they pick exactly what the selectors pick on the typed objects.
#[test]
fn stored_objects_are_picked_as_the_selectors_pick_them() {
    let mut all = objects();
    all.extend(
        parse_manifests(
            "
apiVersion: v1
kind: Pod
metadata: {name: labelled, namespace: shop, labels: {app: web, tier: front}}
spec: {nodeName: n2, containers: [{name: c, image: busybox}]}
status: {phase: Pending}
",
        )
        .unwrap(),
    );
    for object in &mut all {
        flotilla_state::default(object);
    }
    let selectors = [
        ("", "spec.nodeName!="),
        ("", "spec.nodeName="),
        ("", "spec.nodeName=n1"),
        ("", "status.phase=Running,metadata.namespace=shop"),
        ("", "spec.restartPolicy=Always"),
        ("", "spec.unschedulable=true"),
        ("", "spec.unschedulable=false"),
        ("", "source=scheduler,reason=Scheduled"),
        ("app=web", ""),
        ("app=web,tier in (front,back)", "spec.nodeName=n2"),
        ("app!=web", "metadata.namespace=shop"),
        ("!tier", ""),
    ];
    let mut picked_any = 0;
    for (labels, fields) in selectors {
        let field_selector = FieldSelector::parse(fields).unwrap();
        let label_selector = Selector::parse(labels).unwrap();
        for object in &all {
            let Ok(filter) = object_filter(object.kind(), labels, fields) else {
                // A field of another kind: refused for this kind, as the API does.
                continue;
            };
            let stored = serde_json::to_vec(object).unwrap();
            let expected =
                field_selector.matches(object) && label_selector.matches(&object.metadata().labels);
            assert_eq!(
                filter.matches_json(&stored).unwrap(),
                expected,
                "-l {labels:?} --field-selector {fields:?} on {}",
                object.name()
            );
            picked_any += usize::from(expected);
        }
    }
    assert!(picked_any > 5, "the selectors pick some objects");
}
