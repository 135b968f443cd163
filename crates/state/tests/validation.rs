//! Validation: objects that parse but that kube-apiserver would refuse fail with every problem
//! named by its full path; objects it would accept pass.

use flotilla_state::{parse_manifests, validate, Object};

fn parse_one(yaml: &str) -> Object {
    let mut objects = parse_manifests(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(objects.len(), 1, "{yaml}");
    objects.remove(0)
}

/// Validates the single object in `yaml`; `expected` lists every error (`path: message`), empty
/// for a valid object.
fn check(yaml: &str, expected: &[&str]) {
    let object = parse_one(yaml);
    let errors: Vec<String> = match validate(&object) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(errors, expected, "\n{yaml}");
}

/// A pod named `p` whose single container has the given extra fields.
fn pod(container_extra: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n{container_extra}{spec_extra}"
    )
}

/// A deployment whose selector and template labels and spec extras are given.
fn deployment(selector: &str, template_labels: &str, spec_extra: &str, pod_extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  selector: {selector}\n  template:\n    metadata: {{labels: {template_labels}}}\n    spec:\n      containers: [{{name: c, image: busybox}}]\n{pod_extra}{spec_extra}"
    )
}

#[test]
fn valid_objects_pass() {
    check(&pod("", ""), &[]);
    check("apiVersion: v1\nkind: Pod\nmetadata: {generateName: web-}\nspec: {containers: [{name: c, image: busybox}]}\n", &[]);
    check(
        &deployment("{matchLabels: {app: web}}", "{app: web, tier: fe}", "", ""),
        &[],
    );
    check(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
        &[],
    );
    check("apiVersion: v1\nkind: Node\nmetadata: {name: node-1.example.com}\nspec: {podCIDR: 198.18.1.0/24, taints: [{key: dedicated, value: gpu, effect: NoSchedule}]}\n", &[]);
    check("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a.conf: x}\nbinaryData: {b.bin: aGVsbG8=}\n", &[]);
    check("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: None, selector: {app: web}}\n", &[]);
    check("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}, minReplicas: 2, maxReplicas: 2}\n", &[]);
}

#[test]
fn metadata_rules() {
    let namespace = |meta: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {meta}\n");
    check(&pod("", "").replace("name: p}", "name: My_App}"), &[
        "metadata.name: Invalid value: \"My_App\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
    ]);
    check(
        &namespace("{labels: {a: b}}"),
        &["metadata.name: Required value: name or generateName is required"],
    );
    check(&namespace("{name: a.b}"), &[
        "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
    ]);
    check(
        &namespace("{name: a, namespace: default}"),
        &["metadata.namespace: Forbidden: not allowed on this type"],
    );
    check(&namespace(&format!("{{name: a, labels: {{-bad: x, ok: {}}}}}", "v".repeat(64))), &[
        "metadata.labels: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        "metadata.labels.ok: Invalid value: \"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\": must be no more than 63 characters",
    ]);
    check(
        &namespace("{name: a, ownerReferences: [{apiVersion: v1, kind: Namespace, name: b}]}"),
        &["metadata.ownerReferences[0].uid: Required value"],
    );
    check("apiVersion: v1\nkind: Service\nmetadata: {name: 1web}\nspec: {ports: [{port: 80}]}\n", &[
        "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
    ]);
}

#[test]
fn container_rules() {
    let cases: &[(String, &[&str])] = &[
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n".into(), &["spec.containers: Required value"]),
        (pod("  - name: c\n    image: nginx\n", ""), &["spec.containers[1].name: Duplicate value: \"c\""]),
        (pod("  - name: Sidecar\n    image: ' '\n", ""), &[
            "spec.containers[1].name: Invalid value: \"Sidecar\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "spec.containers[1].image: Required value",
        ]),
        (pod("    ports: [{containerPort: 0}, {containerPort: 80, hostPort: 70000, name: http}, {containerPort: 81, name: http}]\n", ""), &[
            "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[2].name: Duplicate value: \"http\"",
        ]),
        (pod("    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 81}, {containerPort: 82}]\n", "  hostNetwork: true\n"), &[
            "spec.containers[0].ports[0].hostPort: Invalid value: 8080: must match `containerPort` when `hostNetwork` is true",
        ]),
        (pod("    ports: [{containerPort: 80, hostPort: 8080}, {containerPort: 81, hostPort: 8080, protocol: UDP}]\n  - name: d\n    image: busybox\n    ports: [{containerPort: 90, hostPort: 8080}]\n", ""), &[
            "spec.containers[1].ports[0].hostPort: Duplicate value: \"8080/TCP\"",
        ]),
        (pod("    ports: [{containerPort: 80, name: web--http}]\n", ""), &[
            "spec.containers[0].ports[0].name: Invalid value: \"web--http\": must not contain consecutive hyphens",
        ]),
        (pod("    livenessProbe: {exec: {command: ['true']}, tcpSocket: {port: 80}}\n    readinessProbe: {periodSeconds: 5}\n", ""), &[
            "spec.containers[0].livenessProbe: Forbidden: may not specify more than 1 handler type",
            "spec.containers[0].readinessProbe.exec: Required value",
        ]),
        (pod("    livenessProbe: {httpGet: {port: 0}, successThreshold: 2, timeoutSeconds: -1}\n", ""), &[
            "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.containers[0].livenessProbe.timeoutSeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ]),
        (pod("    resources: {requests: {cpu: 2, gpu: 1}, limits: {cpu: 1, memory: -1Gi}}\n", ""), &[
            "spec.containers[0].resources.requests.gpu: Unsupported value: \"gpu\": supported values: \"cpu\", \"memory\", \"ephemeral-storage\"",
            "spec.containers[0].resources.limits.memory: Invalid value: \"-1Gi\": must be greater than or equal to 0",
            "spec.containers[0].resources.requests.cpu: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        ]),
        (pod("    env: [{name: A=B, value: x}, {name: B, value: x, valueFrom: {configMapKeyRef: {name: cfg, key: k}}}, {name: C, valueFrom: {}}]\n", ""), &[
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].env[1].valueFrom: Invalid value: \"\": may not be specified when `value` is not empty",
            "spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `configMapKeyRef`",
        ]),
        (pod("    volumeMounts: [{name: data, mountPath: /data}, {name: cache, mountPath: /data}]\n", "  volumes: [{name: cache, emptyDir: {}}]\n"), &[
            "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/data\": must be unique",
        ]),
    ];
    for (yaml, expected) in cases {
        check(yaml, expected);
    }
}

#[test]
fn pod_spec_rules() {
    let cases: &[(String, &[&str])] = &[
        (pod("", "  volumes: [{name: logs, hostPath: {path: var/log}}, {name: logs, emptyDir: {}, configMap: {name: c}}, {name: up, hostPath: {path: /a/../etc}}, {name: none}]\n"), &[
            "spec.volumes[0].hostPath.path: Invalid value: \"var/log\": must be an absolute path",
            "spec.volumes[1].name: Duplicate value: \"logs\"",
            "spec.volumes[1]: Forbidden: may not specify more than 1 volume type",
            "spec.volumes[2].hostPath.path: Invalid value: \"/a/../etc\": must not contain '..'",
            "spec.volumes[3].emptyDir: Required value",
        ]),
        (pod("", "  tolerations: [{key: k, operator: Exists, value: v}, {operator: Equal}, {key: k, effect: NoSchedule, tolerationSeconds: 5}]\n"), &[
            "spec.tolerations[0].value: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
            "spec.tolerations[1].operator: Invalid value: \"Equal\": operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            "spec.tolerations[2].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        ]),
        (pod("", "  terminationGracePeriodSeconds: -1\n  nodeName: Node_1\n"), &[
            "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
            "spec.nodeName: Invalid value: \"Node_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ]),
        (pod("", "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions: [{key: zone, operator: In}, {key: gen, operator: Gt, values: [new]}, {key: ssd, operator: Exists, values: [yes]}]\n      preferredDuringSchedulingIgnoredDuringExecution: [{weight: 0, preference: {}}]\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: web}}}]\n"), &[
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[1].values[0]: Invalid value: \"new\": must be an integer",
            "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[2].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: Invalid value: 0: must be in the range 1-100",
            "spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value",
        ]),
    ];
    for (yaml, expected) in cases {
        check(yaml, expected);
    }
}

#[test]
fn workload_rules() {
    let web = "{matchLabels: {app: web}}";
    let cases: Vec<(String, &[&str])> = vec![
        (deployment(web, "{app: api}", "", ""), &[
            "spec.template.metadata.labels: Invalid value: {\"app\": \"api\"}: `selector` does not match template `labels`",
        ]),
        (deployment("{}", "{app: web}", "", ""), &["spec.selector: Invalid value: \"\": empty selector is invalid for deployment"]),
        (deployment(web, "{app: web}", "", "      restartPolicy: Never\n"), &[
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]),
        (deployment(web, "{app: web}", "  replicas: -1\n  revisionHistoryLimit: -2\n", ""), &[
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0",
        ]),
        (deployment(web, "{app: web}", "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0%}}\n", ""), &[
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ]),
        (deployment(web, "{app: web}", "  strategy: {rollingUpdate: {maxSurge: abc, maxUnavailable: 150%}}\n", ""), &[
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"abc\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')",
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
        ]),
        (deployment(web, "{app: web}", "  strategy: {type: Recreate, rollingUpdate: {maxSurge: 1}}\n", ""), &[
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ]),
        (deployment("{matchExpressions: [{key: app, operator: Exists, values: [web]}]}", "{app: web}", "", ""), &[
            "spec.selector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        ]),
        (deployment(web, "{app: web}", "", "      volumes: [{name: v}]\n"), &["spec.template.spec.volumes[0].emptyDir: Required value"]),
        (
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec: {replicas: -3, selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: b}}, spec: {containers: [{name: c, image: i}]}}}\n".into(),
            &[
                "spec.replicas: Invalid value: -3: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: {\"app\": \"b\"}: `selector` does not match template `labels`",
            ],
        ),
    ];
    for (yaml, expected) in &cases {
        check(yaml, expected);
    }
}

#[test]
fn service_config_node_event_and_autoscaler_rules() {
    let cases: &[(&str, &[&str])] = &[
        ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, nodePort: 30080}, {port: 80, targetPort: 0}]}\n", &[
            "spec.ports[0].name: Required value",
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
            "spec.ports[1].name: Required value",
            "spec.ports[1]: Duplicate value: \"80/TCP\"",
            "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ]),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: NodePort, clusterIP: None}\n", &[
            "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort services",
        ]),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.0.0.300}\n", &[
            "spec.clusterIP: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            "spec.ports: Required value",
        ]),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a/b: x, k: v}\nbinaryData: {k: 'not base64!'}\n", &[
            "data: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "binaryData: Invalid value: \"k\": duplicate of key present in data",
            "binaryData.k: Invalid value: \"<binary>\": must be valid base64",
        ]),
        ("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 198.18.0.0/33, taints: [{key: k, effect: NoSchedule}, {key: k, value: other, effect: NoSchedule}]}\n", &[
            "spec.taints[1]: Duplicate value: \"k:NoSchedule\"",
            "spec.podCIDR: Invalid value: \"198.18.0.0/33\": must be a valid CIDR (e.g. 198.18.1.0/24)",
        ]),
        ("apiVersion: v1\nkind: Event\nmetadata: {name: e, namespace: a}\ninvolvedObject: {kind: Pod, name: p, namespace: b}\ncount: -1\n", &[
            "involvedObject.namespace: Invalid value: \"b\": does not match event.namespace",
            "count: Invalid value: -1: must be greater than or equal to 0",
        ]),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec: {scaleTargetRef: {kind: Deployment, name: web}, minReplicas: 5, maxReplicas: 3}\n", &[
            "spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`",
        ]),
        ("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\nspec: {scaleTargetRef: {kind: StatefulSet}, minReplicas: 0, maxReplicas: 0, metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization}}}]}\n", &[
            "spec.scaleTargetRef.kind: Unsupported value: \"StatefulSet\": supported values: \"Deployment\", \"ReplicaSet\"",
            "spec.scaleTargetRef.name: Required value",
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
            "spec.maxReplicas: Invalid value: 0: must be greater than or equal to 1",
            "spec.metrics[0].resource.target.averageUtilization: Required value: must set either a target raw value or a target utilization",
        ]),
    ];
    for (yaml, expected) in cases {
        check(yaml, expected);
    }
}

#[test]
fn error_count_is_bounded() {
    let ports: Vec<String> = (0..150).map(|_| "{containerPort: 0}".to_owned()).collect();
    let object = parse_one(&pod(&format!("    ports: [{}]\n", ports.join(", ")), ""));
    let errors = validate(&object).unwrap_err();
    assert_eq!(errors.len(), flotilla_state::validate::MAX_FIELD_ERRORS + 1);
    assert_eq!(
        errors.last().map(ToString::to_string).as_deref(),
        Some("...: 50 more errors not shown")
    );
}
