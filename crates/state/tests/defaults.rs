//! Defaulting: what a user gets back after `apply` without writing the fields Kubernetes fills in.
//! Each case is a manifest before and after, compared as objects.

use flotilla_state::{default, parse_manifests, validate, Object};

fn parse_one(yaml: &str) -> Object {
    let mut objects = parse_manifests(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    objects.remove(0)
}

/// Defaulting `input` gives `expected`; defaulting again changes nothing; the result is valid.
fn check(input: &str, expected: &str) {
    let mut object = parse_one(input);
    default(&mut object);
    let expected = parse_one(expected);
    let shown = flotilla_state::to_yaml(std::slice::from_ref(&object)).unwrap();
    assert_eq!(object, expected, "defaulted:\n{shown}");
    let mut again = object.clone();
    default(&mut again);
    assert_eq!(again, object, "defaulting is idempotent");
    assert_eq!(
        validate(&object),
        Ok(()),
        "defaulted object is valid:\n{shown}"
    );
}

#[test]
fn pod_defaults() {
    check(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ports: [{containerPort: 80}]\n    resources: {limits: {memory: 64Mi}, requests: {cpu: 100m}}\n    livenessProbe: {httpGet: {port: 80}}\n    readinessProbe: {exec: {command: [cat, /ready]}, periodSeconds: 3}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  restartPolicy: Always\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: c\n    image: busybox\n    ports: [{containerPort: 80, protocol: TCP}]\n    resources: {limits: {memory: 64Mi}, requests: {cpu: 100m, memory: 64Mi}}\n    livenessProbe: {httpGet: {path: /, port: 80, scheme: HTTP}, periodSeconds: 10, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3}\n    readinessProbe: {exec: {command: [cat, /ready]}, periodSeconds: 3, timeoutSeconds: 1, successThreshold: 1, failureThreshold: 3}\n",
    );
}

#[test]
fn a_host_network_pods_container_ports_become_host_ports() {
    check(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {hostNetwork: true, restartPolicy: Never, terminationGracePeriodSeconds: 1, containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 53, hostPort: 53, protocol: UDP}]}]}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {hostNetwork: true, restartPolicy: Never, terminationGracePeriodSeconds: 1, containers: [{name: c, image: i, ports: [{containerPort: 80, hostPort: 80, protocol: TCP}, {containerPort: 53, hostPort: 53, protocol: UDP}]}]}\n",
    );
}

#[test]
fn explicit_values_are_kept() {
    check(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {restartPolicy: OnFailure, terminationGracePeriodSeconds: 0, containers: [{name: c, image: i}]}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {restartPolicy: OnFailure, terminationGracePeriodSeconds: 0, containers: [{name: c, image: i}]}\n",
    );
}

#[test]
fn deployment_defaults() {
    let template =
        "template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: i}]}}";
    let defaulted_template = "template: {metadata: {labels: {app: web}}, spec: {restartPolicy: Always, terminationGracePeriodSeconds: 30, containers: [{name: c, image: i}]}}";
    check(
        &format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec: {{selector: {{matchLabels: {{app: web}}}}, {template}}}\n"),
        &format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec: {{replicas: 1, revisionHistoryLimit: 10, strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 25%, maxUnavailable: 25%}}}}, selector: {{matchLabels: {{app: web}}}}, {defaulted_template}}}\n"),
    );
    check(
        &format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec: {{replicas: 0, strategy: {{type: Recreate}}, selector: {{matchLabels: {{app: web}}}}, {template}}}\n"),
        &format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec: {{replicas: 0, revisionHistoryLimit: 10, strategy: {{type: Recreate}}, selector: {{matchLabels: {{app: web}}}}, {defaulted_template}}}\n"),
    );
    check(
        &format!("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web-1}}\nspec: {{selector: {{matchLabels: {{app: web}}}}, {template}}}\n"),
        &format!("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web-1, namespace: default}}\nspec: {{replicas: 1, selector: {{matchLabels: {{app: web}}}}, {defaulted_template}}}\n"),
    );
}

#[test]
fn service_and_autoscaler_defaults() {
    check(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{name: http, port: 80}, {name: admin, port: 81, targetPort: admin, protocol: UDP}]}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {type: ClusterIP, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 80, protocol: TCP}, {name: admin, port: 81, targetPort: admin, protocol: UDP}]}\n",
    );
    check(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {scaleTargetRef: {kind: Deployment, name: web}, maxReplicas: 5}\n",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web, namespace: default}\nspec: {scaleTargetRef: {kind: Deployment, name: web}, minReplicas: 1, maxReplicas: 5, metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]}\n",
    );
}

#[test]
fn cluster_scoped_kinds_get_no_namespace() {
    check(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    );
    check(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
    check(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\n",
    );
}
