//! Validation of Deployments and ReplicaSets: replica counts, selector against template labels,
//! template restart policy, and rollout strategy bounds.

use super::pod::validate_pod_spec;
use super::{validate_label_selector, validate_labels, Errors, Path};
use crate::objects::{
    Deployment, DeploymentStrategy, DeploymentStrategyType, IntOrString, LabelSelector,
    PodTemplateSpec, ReplicaSet, RestartPolicy,
};
use crate::selector::Selector;

pub(super) fn validate_deployment(deployment: &Deployment, errors: &mut Errors) {
    let root = Path::Root;
    let spec_path = root.field("spec");
    let spec = &deployment.spec;
    if let Some(replicas) = spec.replicas {
        errors.non_negative(&spec_path.field("replicas"), replicas);
    }
    validate_selector_and_template(
        &spec.selector,
        &spec.template,
        "deployment",
        &spec_path,
        errors,
    );
    if let Some(strategy) = &spec.strategy {
        validate_strategy(strategy, &spec_path.field("strategy"), errors);
    }
    if let Some(limit) = spec.revision_history_limit {
        errors.non_negative(&spec_path.field("revisionHistoryLimit"), limit);
    }
    if let Some(seconds) = spec.min_ready_seconds {
        errors.non_negative(&spec_path.field("minReadySeconds"), seconds);
    }
}

pub(super) fn validate_replica_set(replica_set: &ReplicaSet, errors: &mut Errors) {
    let root = Path::Root;
    let spec_path = root.field("spec");
    let spec = &replica_set.spec;
    if let Some(replicas) = spec.replicas {
        errors.non_negative(&spec_path.field("replicas"), replicas);
    }
    validate_selector_and_template(
        &spec.selector,
        &spec.template,
        "replicaset",
        &spec_path,
        errors,
    );
    if let Some(seconds) = spec.min_ready_seconds {
        errors.non_negative(&spec_path.field("minReadySeconds"), seconds);
    }
}

/// The selector must be non-empty and select the template's labels; the template must be a valid
/// pod that restarts always.
fn validate_selector_and_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    kind_word: &str,
    spec_path: &Path<'_>,
    errors: &mut Errors,
) {
    let selector_path = spec_path.field("selector");
    if selector.is_empty() {
        errors.invalid(
            &selector_path,
            "",
            &format!("empty selector is invalid for {kind_word}"),
        );
    } else {
        validate_label_selector(selector, &selector_path, errors);
    }
    let template_path = spec_path.field("template");
    let labels_path = template_path.field("metadata");
    let labels_path = labels_path.field("labels");
    validate_labels(&template.metadata.labels, &labels_path, errors);
    // A selector that does not compile was reported above; only a valid one can miss the labels.
    let misses_template = Selector::from_label_selector(selector)
        .is_ok_and(|compiled| !compiled.matches(&template.metadata.labels));
    if !selector.is_empty() && misses_template {
        errors.invalid(
            &labels_path,
            &template.metadata.labels,
            "`selector` does not match template `labels`",
        );
    }
    let pod_spec_path = template_path.field("spec");
    validate_pod_spec(&template.spec, &pod_spec_path, errors);
    let restart_policy = template.spec.restart_policy();
    if restart_policy != RestartPolicy::Always {
        let at = pod_spec_path.field("restartPolicy");
        errors.unsupported(
            &at,
            restart_policy.as_str(),
            &[RestartPolicy::Always.as_str()],
        );
    }
}

fn validate_strategy(strategy: &DeploymentStrategy, path: &Path<'_>, errors: &mut Errors) {
    let Some(rolling) = &strategy.rolling_update else {
        return;
    };
    let rolling_path = path.field("rollingUpdate");
    if strategy.type_ == Some(DeploymentStrategyType::Recreate) {
        errors.forbidden(
            &rolling_path,
            "may not be specified when strategy `type` is 'Recreate'",
        );
        return;
    }
    let max_surge = rolling_path.field("maxSurge");
    let max_unavailable = rolling_path.field("maxUnavailable");
    if let Some(value) = &rolling.max_surge {
        validate_int_or_percent(value, &max_surge, errors);
    }
    if let Some(value) = &rolling.max_unavailable {
        validate_int_or_percent(value, &max_unavailable, errors);
        if value.percent().is_some_and(|percent| percent > 100) {
            errors.invalid(
                &max_unavailable,
                value.to_string(),
                "must not be greater than 100%",
            );
        }
    }
    let is_zero = |value: &Option<IntOrString>| {
        value
            .as_ref()
            .is_some_and(|v| v.scaled_value(100, true) == Ok(0))
    };
    if is_zero(&rolling.max_surge) && is_zero(&rolling.max_unavailable) {
        errors.invalid(&max_unavailable, 0, "may not be 0 when `maxSurge` is 0");
    }
}

const PERCENT_RULE: &str = "a valid percent string must be a numeric string followed by an \
    ending '%' (e.g. '1%',  or '93%')";

fn validate_int_or_percent(value: &IntOrString, path: &Path<'_>, errors: &mut Errors) {
    match value {
        IntOrString::Int(number) => errors.non_negative(path, *number),
        IntOrString::String(text) => match value.percent() {
            None => errors.invalid(path, text, PERCENT_RULE),
            Some(percent) if percent < 0 => {
                errors.invalid(path, text, "must be greater than or equal to 0");
            }
            Some(_) => {}
        },
    }
}
