//! Object builders for the tests, including a one-line pod notation:
//! `"name [pending|unknown|failed|succeeded] [ready|ready@<secs ago>] [unscheduled] [r<restarts>]
//! [age<secs>] [deleting]"`; pods are Running, scheduled on `node-1`, not ready, 1000 s old
//! unless the tokens say otherwise.

use std::collections::BTreeMap;

use flotilla_state::objects::{
    ConditionStatus, Container, ContainerStatus, Deployment, DeploymentSpec, DeploymentStrategy,
    DeploymentStrategyType, IntOrString, LabelSelector, ObjectMeta, OwnerReference, Pod,
    PodCondition, PodPhase, PodSpec, PodStatus, PodTemplateSpec, ReplicaSet, ReplicaSetSpec,
    RollingUpdateDeployment, Time,
};

/// "Now" of every test: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;

pub fn at(ms: i64) -> Time {
    Time::from_unix_millis(ms)
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: ObjectMeta {
            labels: labels(&[("app", "web")]),
            ..ObjectMeta::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "web".to_owned(),
                image: image.to_owned(),
                ..Container::default()
            }],
            ..PodSpec::default()
        },
    }
}

pub fn controller_ref(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A RollingUpdate Deployment `web` of `image`, with the given bounds.
pub fn deployment(
    replicas: i32,
    image: &str,
    surge: IntOrString,
    unavailable: IntOrString,
) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: "web".to_owned(),
            namespace: "default".to_owned(),
            uid: "uid-web".to_owned(),
            generation: 1,
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: labels(&[("app", "web")]),
                ..LabelSelector::default()
            },
            template: template(image),
            strategy: Some(DeploymentStrategy {
                type_: Some(DeploymentStrategyType::RollingUpdate),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            min_ready_seconds: None,
            revision_history_limit: Some(10),
            paused: None,
        },
        status: None,
    }
}

pub fn recreate_deployment(replicas: i32, image: &str) -> Deployment {
    let mut d = deployment(replicas, image, 1.into(), 0.into());
    d.spec.strategy = Some(DeploymentStrategy {
        type_: Some(DeploymentStrategyType::Recreate),
        rolling_update: None,
    });
    d
}

/// A ReplicaSet `name` (uid `uid-<name>`) of `replicas` pods of `image`, not owned.
pub fn replicaset(name: &str, replicas: i32, image: &str) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            uid: format!("uid-{name}"),
            generation: 2,
            creation_timestamp: Some(at(T0 - 3_600_000)),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: None,
            selector: LabelSelector {
                match_labels: labels(&[("app", "web")]),
                ..LabelSelector::default()
            },
            template: template(image),
        },
        status: None,
    }
}

/// A pod from the one-line notation, controlled by the object with `owner_uid` (if not empty).
pub fn pod(spec: &str, owner_uid: &str) -> Pod {
    let mut tokens = spec.split_whitespace();
    let name = tokens.next().expect("a pod notation starts with the name");
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            uid: format!("uid-{name}"),
            labels: labels(&[("app", "web")]),
            creation_timestamp: Some(at(T0 - 1_000_000)),
            ..ObjectMeta::default()
        },
        spec: PodSpec {
            node_name: "node-1".to_owned(),
            ..PodSpec::default()
        },
        status: Some(PodStatus {
            phase: Some(PodPhase::Running),
            ..PodStatus::default()
        }),
    };
    if !owner_uid.is_empty() {
        pod.metadata.owner_references = vec![controller_ref("ReplicaSet", "owner", owner_uid)];
    }
    for token in tokens {
        apply_token(&mut pod, token);
    }
    pod
}

fn apply_token(pod: &mut Pod, token: &str) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    let seconds = |text: &str| text.parse::<i64>().expect("a number of seconds") * 1000;
    match token {
        "pending" => status.phase = Some(PodPhase::Pending),
        "unknown" => status.phase = Some(PodPhase::Unknown),
        "failed" => status.phase = Some(PodPhase::Failed),
        "succeeded" => status.phase = Some(PodPhase::Succeeded),
        "ready" => set_ready(pod, T0 - 1_000_000),
        "unscheduled" => pod.spec.node_name.clear(),
        "deleting" => pod.metadata.deletion_timestamp = Some(at(T0 - 1000)),
        _ if token.starts_with("ready@") => set_ready(pod, T0 - seconds(&token[6..])),
        _ if token.starts_with("age") => {
            pod.metadata.creation_timestamp = Some(at(T0 - seconds(&token[3..])));
        }
        _ if token.starts_with('r') => {
            let restarts = token[1..].parse().expect("r<restarts>");
            status.container_statuses = vec![ContainerStatus {
                name: "web".to_owned(),
                restart_count: restarts,
                ..ContainerStatus::default()
            }];
        }
        _ => panic!("unknown pod token {token:?}"),
    }
}

/// Marks the pod Ready since `since_ms` (or not ready, with `None`).
pub fn set_ready_state(pod: &mut Pod, since_ms: Option<i64>) {
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.conditions.retain(|c| c.type_ != "Ready");
    status.conditions.push(PodCondition {
        type_: "Ready".to_owned(),
        status: if since_ms.is_some() {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: String::new(),
        message: String::new(),
        last_probe_time: None,
        last_transition_time: since_ms.map(at),
    });
}

pub fn set_ready(pod: &mut Pod, since_ms: i64) {
    set_ready_state(pod, Some(since_ms));
}

pub fn names(pods: &[flotilla_controllers::PodRef]) -> Vec<&str> {
    pods.iter().map(|p| p.name.as_str()).collect()
}
