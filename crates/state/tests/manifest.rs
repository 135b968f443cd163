//! Manifest parsing and serialisation at the crate boundary: a realistic multi-document manifest
//! parses and round-trips through YAML and JSON; bad manifests fail with the exact message a user
//! would see.

use flotilla_state::objects::{
    ConfigMap, Deployment, IntOrString, Pod, Quantity, Service, ServiceType, TaintEffect,
};
use flotilla_state::{parse_manifests, to_json, to_yaml, validate, Kind, Object};

const WEB_APP: &str = include_str!("fixtures/web-app.yaml");

fn parse_ok(text: &str) -> Vec<Object> {
    parse_manifests(text).unwrap_or_else(|error| panic!("manifest should parse: {error}\n{text}"))
}

/// Parses `text` and asserts the error a user would read.
fn check_error(text: &str, expected: &str) {
    match parse_manifests(text) {
        Ok(objects) => panic!(
            "expected error {expected:?}, parsed {} objects from\n{text}",
            objects.len()
        ),
        Err(error) => assert_eq!(error.to_string(), expected, "manifest:\n{text}"),
    }
}

/// Objects survive YAML and JSON output and re-parsing unchanged.
fn check_round_trip(objects: &[Object]) {
    let yaml = to_yaml(objects).expect("serialise YAML");
    assert_eq!(parse_ok(&yaml), objects, "YAML round trip:\n{yaml}");
    let json = to_json(objects).expect("serialise JSON");
    assert_eq!(parse_ok(&json), objects, "JSON round trip:\n{json}");
    for object in objects {
        let compact = serde_json::to_string(object).expect("serialise");
        let decoded: Object = serde_json::from_str(&compact).expect("decode stored form");
        assert_eq!(&decoded, object, "storage round trip of {compact}");
    }
}

#[test]
fn realistic_manifest_parses_with_anchors_merge_keys_and_comments() {
    let objects = parse_ok(WEB_APP);
    let kinds: Vec<Kind> = objects.iter().map(Object::kind).collect();
    assert_eq!(kinds, [Kind::ConfigMap, Kind::Deployment, Kind::Service]);

    let config = objects[0].downcast_ref::<ConfigMap>().expect("configmap");
    assert!(config.data["nginx.conf"].contains("listen 8080;"));

    let deployment = objects[1].downcast_ref::<Deployment>().expect("deployment");
    assert_eq!(deployment.metadata.namespace, "shop");
    assert_eq!(deployment.spec.replicas, Some(3));
    let template_labels = &deployment.spec.template.metadata.labels;
    assert_eq!(
        template_labels["app.kubernetes.io/name"], "web",
        "merge key applied"
    );
    assert_eq!(template_labels["tier"], "frontend");
    assert_eq!(
        deployment.spec.selector.match_labels.len(),
        2,
        "alias expanded"
    );
    let rolling = deployment
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .expect("rolling update");
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(
        rolling.max_unavailable,
        Some(IntOrString::String("25%".into()))
    );
    let pod = &deployment.spec.template.spec;
    assert_eq!(pod.tolerations[1].effect, Some(TaintEffect::NoExecute));
    let shipper = &pod.containers[1];
    assert_eq!(
        shipper.resources.limits["memory"].value(),
        256 * 1024 * 1024
    );
    assert_eq!(
        shipper.resources.limits["cpu"],
        Quantity::parse("1000m").unwrap()
    );
    let probe = pod.containers[0].liveness_probe.as_ref().expect("probe");
    assert_eq!(
        probe.http_get.as_ref().map(|h| &h.port),
        Some(&IntOrString::String("http".into()))
    );

    let service = objects[2].downcast_ref::<Service>().expect("service");
    assert_eq!(service.spec.type_, Some(ServiceType::NodePort));
    assert_eq!(service.spec.ports[0].node_port, Some(30080));

    for object in &objects {
        assert_eq!(
            validate(object),
            Ok(()),
            "{} {} should be valid",
            object.kind(),
            object.name()
        );
    }
}

#[test]
fn realistic_manifest_round_trips() {
    let objects = parse_ok(WEB_APP);
    check_round_trip(&objects);
    let mut defaulted = objects.clone();
    defaulted.iter_mut().for_each(flotilla_state::default);
    check_round_trip(&defaulted);
}

#[test]
fn yaml_output_is_kubectl_shaped() {
    let objects = parse_ok("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: web}}\nspec:\n  containers: [{name: c, image: busybox, resources: {limits: {cpu: 0.5}}}]\n");
    let yaml = to_yaml(&objects).unwrap();
    let expected = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    app: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources:\n      limits:\n        cpu: '0.5'\n";
    assert_eq!(yaml, expected);
    let two = to_yaml(&[objects[0].clone(), objects[0].clone()]).unwrap();
    assert_eq!(two, format!("{expected}---\n{expected}"));
    let list = to_json(&[objects[0].clone(), objects[0].clone()]).unwrap();
    assert!(
        list.starts_with("{\n  \"apiVersion\": \"v1\",\n  \"kind\": \"List\",\n  \"items\": ["),
        "{list}"
    );
}

#[test]
fn json_single_object_stream_and_list() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
    assert_eq!(parse_ok(pod).len(), 1);
    assert_eq!(
        parse_ok(&format!("{pod}\n{pod}")).len(),
        2,
        "concatenated JSON objects"
    );
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","metadata":{{"resourceVersion":""}},"items":[{pod},{pod}]}}"#
    );
    let objects = parse_ok(&list);
    assert_eq!(objects.len(), 2);
    assert_eq!(
        objects[1]
            .downcast_ref::<Pod>()
            .map(|p| p.spec.containers[0].image.as_str()),
        Some("busybox")
    );
    let yaml_list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}\n";
    assert_eq!(parse_ok(yaml_list)[0].kind(), Kind::Namespace);
    // Not JSON (trailing comma) but valid YAML flow style, which is what kubectl accepts too.
    let flow = r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"},}"#;
    assert_eq!(parse_ok(flow)[0].name(), "a");
}

#[test]
fn empty_documents_are_skipped() {
    assert!(parse_ok("").is_empty());
    assert!(parse_ok("# only a comment\n").is_empty());
    let text = "---\n---\n# nothing here\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n";
    let objects = parse_ok(text);
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].name(), "a");
}

#[test]
fn stored_objects_decode_whatever_the_key_order() {
    let key_order_variants = [
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}"#,
        r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"a"}}"#,
        r#"{"metadata":{"name":"a"},"kind":"Namespace","apiVersion":"v1"}"#,
        r#"{"apiVersion":"v1","metadata":{"name":"a"},"kind":"Namespace"}"#,
    ];
    for text in key_order_variants {
        let object: Object = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (object.kind(), object.name()),
            (Kind::Namespace, "a"),
            "{text}"
        );
    }
    let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},"spec":{"containers":[{"nmae":"c"}]}}"#;
    let error = serde_json::from_str::<Object>(bad).unwrap_err().to_string();
    assert!(
        error.starts_with("spec.containers[0].nmae: unknown field"),
        "{error}"
    );
}

const POD_HEAD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n";

fn pod_with_spec(spec: &str) -> String {
    format!("{POD_HEAD}spec:\n{spec}")
}

fn deployment_with_container(container: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {{app: d}}\n  template:\n    metadata:\n      labels: {{app: d}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n{container}"
    )
}

#[test]
fn bad_manifests_name_the_full_path() {
    let cases: Vec<(String, &str)> = vec![
        (
            deployment_with_container("        imagePullSecretz: [regcred]\n"),
            "spec.template.spec.containers[0].imagePullSecretz: unknown field",
        ),
        (
            deployment_with_container("        resources:\n          limits:\n            memory: 12XB\n"),
            "spec.template.spec.containers[0].resources.limits.memory: \"12XB\" is not a quantity",
        ),
        (
            deployment_with_container("        resources:\n          requests: {cpu: 1.2.3}\n"),
            "spec.template.spec.containers[0].resources.requests.cpu: \"1.2.3\" is not a quantity",
        ),
        (
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\n".into(),
            "kind: unsupported kind \"Ingress\" in apiVersion \"networking.k8s.io/v1\" (supported: Namespace, Node, Pod, Deployment, ReplicaSet, Service, ConfigMap, Event, HorizontalPodAutoscaler)",
        ),
        (
            "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: d}\n".into(),
            "apiVersion: \"apps/v1beta1\" is not supported for kind Deployment (use \"apps/v1\")",
        ),
        (
            "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\n".into(),
            "apiVersion: \"autoscaling/v1\" is not supported for kind HorizontalPodAutoscaler (use \"autoscaling/v2\")",
        ),
        ("apiVersion: v1\nmetadata: {name: p}\n".into(), "kind: missing required field"),
        ("kind: Pod\nmetadata: {name: p}\n".into(), "apiVersion: missing required field"),
        ("apiVersion: v1\nkind: 5\n".into(), "kind: expected a string"),
        (
            pod_with_spec("  restartPolicy: Sometimes\n"),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ),
        (
            pod_with_spec("  containers:\n  - name: c\n    ports:\n    - containerPort: \"80\"\n"),
            "spec.containers[0].ports[0].containerPort: invalid type: string \"80\", expected i32",
        ),
        (
            pod_with_spec("  containers:\n  - name: c\n    ports:\n    - containerPort: 99999999999\n"),
            "spec.containers[0].ports[0].containerPort: invalid value: integer `99999999999`, expected i32",
        ),
        (
            format!("{POD_HEAD}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labelz: {{a: b}}\n"),
            "document 2: metadata.labelz: unknown field",
        ),
        (
            format!("{POD_HEAD}---\n---\n# empty\n---\napiVersion: v1\nkind: Node\nspec: {{podCidr: 198.18.0.0/24}}\n"),
            "document 4: spec.podCidr: unknown field",
        ),
        ("- a\n- b\n".into(), "expected an object with apiVersion and kind, found a sequence"),
        (
            r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"nmae":"c"}]}}]}"#.into(),
            "items[1].spec.containers[0].nmae: unknown field",
        ),
        (
            r#"{"apiVersion":"v1","kind":"List","items":[],"itemz":[]}"#.into(),
            "itemz: unknown field",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  creationTimestamp: yesterday\n".into(),
            "metadata.creationTimestamp: \"yesterday\" is not an RFC 3339 time",
        ),
        (
            "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nspec:\n  taints:\n  - key: k\n".into(),
            "spec.taints[0].effect: missing required field",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labels:\n    app.kubernetes.io/version: 1.5\n".into(),
            "metadata.labels[app.kubernetes.io/version]: invalid type: floating point `1.5`, expected a string",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports:\n  - port: 80\n    targetPort: [8080]\n".into(),
            "spec.ports[0].targetPort: invalid type: sequence, expected a 32-bit integer or a string",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: LoadBalancer\n".into(),
            "spec.type: Unsupported value: \"LoadBalancer\": supported values: \"ClusterIP\", \"NodePort\"",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nspec: {}\n".into(),
            "spec: unknown field",
        ),
        (
            pod_with_spec("  affinity:\n    podAffinity: {}\n"),
            "spec.affinity.podAffinity: unknown field",
        ),
        (
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec:\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource:\n      name: cpu\n      target: {type: AverageValue, averageValue: 500m}\n".into(),
            "spec.metrics[0].resource.target.type: Unsupported value: \"AverageValue\": supported values: \"Utilization\"",
        ),
        (
            pod_with_spec("  containers:\n  - name: c\n    livenessProbe:\n      httpGet: {path: /}\n"),
            "spec.containers[0].livenessProbe.httpGet.port: missing required field",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n".into(),
            "invalid YAML: metadata: duplicate entry with key \"name\" at line 4 column 3",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n labels: {}\n".into(),
            "invalid YAML: did not find expected key at line 5 column 2, while parsing a block mapping",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {labels: *missing}\n".into(),
            "invalid YAML: unknown anchor at line 3 column 20",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}"#.into(),
            "invalid JSON: EOF while parsing an object at line 1 column 67",
        ),
    ];
    assert!(cases.len() >= 20);
    for (text, expected) in &cases {
        check_error(text, expected);
    }
}

#[test]
fn manifests_over_the_size_limit_are_refused() {
    let huge = " ".repeat(flotilla_state::manifest::MAX_MANIFEST_BYTES + 1);
    check_error(
        &huge,
        &format!(
            "manifest is {} bytes, more than the limit of {}",
            huge.len(),
            huge.len() - 1
        ),
    );
}
