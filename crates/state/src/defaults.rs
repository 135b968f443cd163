//! `default`: fills the values Kubernetes fills when an object is created — namespace, restart
//! policy, grace period, probe timings, protocols, rollout strategy, replica counts, service type
//! and target ports, autoscaler bounds. Idempotent: defaulting twice changes nothing more.

use crate::objects::{
    Container, ContainerPort, DeploymentSpec, DeploymentStrategy, DeploymentStrategyType,
    HorizontalPodAutoscalerSpec, IntOrString, MetricResourceName, MetricSourceType, MetricSpec,
    MetricTarget, MetricTargetType, Object, PodSpec, Probe, Protocol, ResourceMetricSource,
    RestartPolicy, RollingUpdateDeployment, Scheme, ServiceSpec, ServiceType,
};

pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
pub const DEFAULT_MAX_SURGE: &str = "25%";
pub const DEFAULT_MAX_UNAVAILABLE: &str = "25%";
pub const DEFAULT_PROBE_PERIOD_SECONDS: i32 = 10;
pub const DEFAULT_PROBE_TIMEOUT_SECONDS: i32 = 1;
pub const DEFAULT_PROBE_SUCCESS_THRESHOLD: i32 = 1;
pub const DEFAULT_PROBE_FAILURE_THRESHOLD: i32 = 3;
pub const DEFAULT_HPA_CPU_UTILIZATION_PERCENT: i32 = 80;

/// Fills unset fields of `object` with Kubernetes' defaults.
pub fn default(object: &mut Object) {
    if object.kind().is_namespaced() && object.metadata().namespace.is_empty() {
        object.metadata_mut().namespace = DEFAULT_NAMESPACE.to_owned();
    }
    match object {
        Object::Pod(pod) => default_pod_spec(&mut pod.spec),
        Object::Deployment(deployment) => default_deployment_spec(&mut deployment.spec),
        Object::ReplicaSet(replica_set) => {
            replica_set.spec.replicas.get_or_insert(1);
            default_pod_spec(&mut replica_set.spec.template.spec);
        }
        Object::Service(service) => default_service_spec(&mut service.spec),
        Object::HorizontalPodAutoscaler(hpa) => default_hpa_spec(&mut hpa.spec),
        Object::Namespace(_) | Object::Node(_) | Object::ConfigMap(_) | Object::Event(_) => {}
    }
}

/// Pod defaults, also applied to workload templates.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert(RestartPolicy::Always);
    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    for container in &mut spec.containers {
        default_container(container);
        if spec.host_network {
            // As Kubernetes: on the node's network a container port is a host port.
            for port in &mut container.ports {
                port.host_port.get_or_insert(port.container_port);
            }
        }
    }
}

fn default_container(container: &mut Container) {
    for port in &mut container.ports {
        default_container_port(port);
    }
    // A limit without a request requests the limit.
    let resources = &mut container.resources;
    for (name, limit) in &resources.limits {
        if !resources.requests.contains_key(name) {
            resources.requests.insert(name.clone(), limit.clone());
        }
    }
    for probe in [
        &mut container.liveness_probe,
        &mut container.readiness_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
}

fn default_container_port(port: &mut ContainerPort) {
    port.protocol.get_or_insert(Protocol::Tcp);
}

fn default_probe(probe: &mut Probe) {
    probe
        .period_seconds
        .get_or_insert(DEFAULT_PROBE_PERIOD_SECONDS);
    probe
        .timeout_seconds
        .get_or_insert(DEFAULT_PROBE_TIMEOUT_SECONDS);
    probe
        .success_threshold
        .get_or_insert(DEFAULT_PROBE_SUCCESS_THRESHOLD);
    probe
        .failure_threshold
        .get_or_insert(DEFAULT_PROBE_FAILURE_THRESHOLD);
    if let Some(http_get) = &mut probe.http_get {
        if http_get.path.is_empty() {
            http_get.path = "/".to_owned();
        }
        http_get.scheme.get_or_insert(Scheme::Http);
    }
}

fn default_deployment_spec(spec: &mut DeploymentSpec) {
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    let type_ = *strategy
        .type_
        .get_or_insert(DeploymentStrategyType::RollingUpdate);
    if type_ == DeploymentStrategyType::RollingUpdate {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        rolling
            .max_surge
            .get_or_insert_with(|| IntOrString::from(DEFAULT_MAX_SURGE));
        rolling
            .max_unavailable
            .get_or_insert_with(|| IntOrString::from(DEFAULT_MAX_UNAVAILABLE));
    }
    default_pod_spec(&mut spec.template.spec);
}

fn default_service_spec(spec: &mut ServiceSpec) {
    spec.type_.get_or_insert(ServiceType::ClusterIp);
    for port in &mut spec.ports {
        port.protocol.get_or_insert(Protocol::Tcp);
        if port.target_port.is_none() {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
}

fn default_hpa_spec(spec: &mut HorizontalPodAutoscalerSpec) {
    spec.min_replicas.get_or_insert(1);
    if spec.metrics.is_empty() {
        spec.metrics.push(MetricSpec {
            type_: MetricSourceType::Resource,
            resource: Some(ResourceMetricSource {
                name: MetricResourceName::Cpu,
                target: MetricTarget {
                    type_: MetricTargetType::Utilization,
                    average_utilization: Some(DEFAULT_HPA_CPU_UTILIZATION_PERCENT),
                },
            }),
        });
    }
}
