//! Validation of HorizontalPodAutoscalers: target reference, replica bounds and metrics.

use super::{Errors, Path};
use crate::objects::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, Kind, MetricSpec, MetricTargetType,
};

/// Kinds Flotilla's autoscaler can scale.
const SCALABLE_KINDS: [&str; 2] = [Kind::Deployment.name(), Kind::ReplicaSet.name()];

pub(super) fn validate_hpa(hpa: &HorizontalPodAutoscaler, errors: &mut Errors) {
    let root = Path::Root;
    let spec_path = root.field("spec");
    let spec = &hpa.spec;
    validate_target(
        &spec.scale_target_ref,
        &spec_path.field("scaleTargetRef"),
        errors,
    );
    let min_replicas = spec.min_replicas.unwrap_or(1);
    if min_replicas < 1 {
        let detail = "must be greater than or equal to 1";
        errors.invalid(&spec_path.field("minReplicas"), min_replicas, detail);
    }
    let max_path = spec_path.field("maxReplicas");
    if spec.max_replicas < 1 {
        let detail = "must be greater than or equal to 1";
        errors.invalid(&max_path, spec.max_replicas, detail);
    } else if spec.max_replicas < min_replicas {
        let detail = "must be greater than or equal to `minReplicas`";
        errors.invalid(&max_path, spec.max_replicas, detail);
    }
    let metrics = spec_path.field("metrics");
    for (i, metric) in spec.metrics.iter().enumerate() {
        validate_metric(metric, &metrics.index(i), errors);
    }
}

fn validate_target(reference: &CrossVersionObjectReference, path: &Path<'_>, errors: &mut Errors) {
    if reference.kind.is_empty() {
        errors.required(&path.field("kind"));
    } else if !SCALABLE_KINDS.contains(&reference.kind.as_str()) {
        errors.unsupported(&path.field("kind"), &reference.kind, &SCALABLE_KINDS);
    }
    if reference.name.is_empty() {
        errors.required(&path.field("name"));
    }
    let apps = Kind::Deployment.api_version();
    if !reference.api_version.is_empty() && reference.api_version != apps {
        errors.unsupported(&path.field("apiVersion"), &reference.api_version, &[apps]);
    }
}

fn validate_metric(metric: &MetricSpec, path: &Path<'_>, errors: &mut Errors) {
    let resource_path = path.field("resource");
    let Some(resource) = &metric.resource else {
        let message = "Required value: must populate information for the given metric source";
        errors.push(&resource_path, message.to_owned());
        return;
    };
    let target_path = resource_path.field("target");
    let utilization_path = target_path.field("averageUtilization");
    match (resource.target.type_, resource.target.average_utilization) {
        (MetricTargetType::Utilization, None) => {
            let message =
                "Required value: must set either a target raw value or a target utilization";
            errors.push(&utilization_path, message.to_owned());
        }
        (MetricTargetType::Utilization, Some(percent)) if percent <= 0 => {
            errors.invalid(&utilization_path, percent, "must be greater than 0");
        }
        _ => {}
    }
}
