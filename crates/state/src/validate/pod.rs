//! Validation of a pod spec (also the template of workloads): volumes, placement (node selector,
//! node name, tolerations, affinity) and grace period; containers are in `container.rs`.

use std::collections::BTreeSet;

use super::container::validate_containers;
use super::{names, validate_label_selector, validate_labels, Errors, Path};
use crate::objects::{
    Affinity, NodeAffinity, NodeSelectorOperator, NodeSelectorTerm, PodAntiAffinity, PodSpec,
    Protocol, TaintEffect, Toleration, TolerationOperator, Volume,
};

pub(crate) fn validate_pod_spec(spec: &PodSpec, path: &Path<'_>, errors: &mut Errors) {
    let volume_names = validate_volumes(&spec.volumes, &path.field("volumes"), errors);
    validate_containers(
        &spec.containers,
        &volume_names,
        &path.field("containers"),
        errors,
    );
    validate_host_ports(spec, &path.field("containers"), errors);
    if let Some(seconds) = spec.termination_grace_period_seconds {
        errors.non_negative(&path.field("terminationGracePeriodSeconds"), seconds);
    }
    validate_labels(&spec.node_selector, &path.field("nodeSelector"), errors);
    if !spec.node_name.is_empty() {
        let node_name = path.field("nodeName");
        errors.check(
            &node_name,
            &spec.node_name,
            names::dns1123_subdomain(&spec.node_name),
        );
    }
    let tolerations = path.field("tolerations");
    for (i, toleration) in spec.tolerations.iter().enumerate() {
        validate_toleration(toleration, &tolerations.index(i), errors);
    }
    if let Some(affinity) = &spec.affinity {
        validate_affinity(affinity, &path.field("affinity"), errors);
    }
}

/// A node port (with its protocol) is asked for once per pod, as Kubernetes checks; on the
/// node's network a container listens on the node's port of the same number.
fn validate_host_ports(spec: &PodSpec, path: &Path<'_>, errors: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, container) in spec.containers.iter().enumerate() {
        let ports = path.index(i);
        let ports = ports.field("ports");
        for (j, port) in container.ports.iter().enumerate() {
            let Some(host_port) = port.host_port.filter(|p| *p > 0) else {
                continue;
            };
            let at = ports.index(j);
            let at = at.field("hostPort");
            if spec.host_network && host_port != port.container_port {
                errors.invalid(
                    &at,
                    host_port,
                    "must match `containerPort` when `hostNetwork` is true",
                );
            }
            let protocol = port.protocol.unwrap_or(Protocol::Tcp);
            let key = format!("{host_port}/{}", protocol.as_str());
            if !seen.insert(key.clone()) {
                errors.duplicate(&at, key);
            }
        }
    }
}

/// Checks volumes and returns their names, which volume mounts must refer to.
fn validate_volumes<'a>(
    volumes: &'a [Volume],
    path: &Path<'_>,
    errors: &mut Errors,
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = path.index(i);
        let name = at.field("name");
        if volume.name.is_empty() {
            errors.required(&name);
        } else {
            errors.check(&name, &volume.name, names::dns1123_label(&volume.name));
            if !seen.insert(volume.name.as_str()) {
                errors.duplicate(&name, &volume.name);
            }
        }
        validate_volume_source(volume, &at, errors);
    }
    seen
}

fn validate_volume_source(volume: &Volume, path: &Path<'_>, errors: &mut Errors) {
    let sources = usize::from(volume.empty_dir.is_some())
        + usize::from(volume.host_path.is_some())
        + usize::from(volume.config_map.is_some());
    match sources {
        0 => errors.required(&path.field("emptyDir")),
        1 => {}
        _ => errors.forbidden(path, "may not specify more than 1 volume type"),
    }
    if let Some(size) = volume
        .empty_dir
        .as_ref()
        .and_then(|e| e.size_limit.as_ref())
    {
        if size.is_negative() {
            let at = path.field("emptyDir");
            errors.invalid(
                &at.field("sizeLimit"),
                size.as_str(),
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(host_path) = &volume.host_path {
        let at = path.field("hostPath");
        validate_host_path(&host_path.path, &at.field("path"), errors);
    }
    if let Some(config_map) = &volume.config_map {
        let name = path.field("configMap");
        let name = name.field("name");
        if config_map.name.is_empty() {
            errors.required(&name);
        } else {
            errors.check(
                &name,
                &config_map.name,
                names::dns1123_subdomain(&config_map.name),
            );
        }
    }
}

fn validate_host_path(host_path: &str, path: &Path<'_>, errors: &mut Errors) {
    if host_path.is_empty() {
        errors.required(path);
    } else if !host_path.starts_with('/') {
        errors.invalid(path, host_path, "must be an absolute path");
    } else if host_path.split('/').any(|part| part == "..") {
        errors.invalid(path, host_path, "must not contain '..'");
    }
}

fn validate_toleration(toleration: &Toleration, path: &Path<'_>, errors: &mut Errors) {
    if !toleration.key.is_empty() {
        errors.check(
            &path.field("key"),
            &toleration.key,
            names::qualified_name(&toleration.key),
        );
    }
    let operator = toleration.operator.unwrap_or(TolerationOperator::Equal);
    if toleration.key.is_empty() && operator != TolerationOperator::Exists {
        let detail = "operator must be Exists when `key` is empty, which means \"match all values \
            and all keys\"";
        errors.invalid(&path.field("operator"), operator.as_str(), detail);
    }
    let value = path.field("value");
    match operator {
        TolerationOperator::Exists if !toleration.value.is_empty() => {
            errors.invalid(
                &value,
                &toleration.value,
                "value must be empty when `operator` is 'Exists'",
            );
        }
        TolerationOperator::Equal => errors.check(
            &value,
            &toleration.value,
            names::label_value(&toleration.value),
        ),
        TolerationOperator::Exists => {}
    }
    if toleration.toleration_seconds.is_some() && toleration.effect != Some(TaintEffect::NoExecute)
    {
        let effect = toleration.effect.map_or("", TaintEffect::as_str);
        errors.invalid(
            &path.field("effect"),
            effect,
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        );
    }
}

fn validate_affinity(affinity: &Affinity, path: &Path<'_>, errors: &mut Errors) {
    if let Some(node_affinity) = &affinity.node_affinity {
        validate_node_affinity(node_affinity, &path.field("nodeAffinity"), errors);
    }
    if let Some(anti_affinity) = &affinity.pod_anti_affinity {
        validate_pod_anti_affinity(anti_affinity, &path.field("podAntiAffinity"), errors);
    }
}

fn validate_node_affinity(node_affinity: &NodeAffinity, path: &Path<'_>, errors: &mut Errors) {
    if let Some(required) = &node_affinity.required_during_scheduling_ignored_during_execution {
        let required_path = path.field("requiredDuringSchedulingIgnoredDuringExecution");
        let terms = required_path.field("nodeSelectorTerms");
        if required.node_selector_terms.is_empty() {
            let message = "Required value: must have at least one node selector term";
            errors.push(&terms, message.to_owned());
        }
        for (i, term) in required.node_selector_terms.iter().enumerate() {
            validate_node_selector_term(term, &terms.index(i), errors);
        }
    }
    let preferred = path.field("preferredDuringSchedulingIgnoredDuringExecution");
    let preferred_terms = &node_affinity.preferred_during_scheduling_ignored_during_execution;
    for (i, term) in preferred_terms.iter().enumerate() {
        let term_path = preferred.index(i);
        if !(1..=100).contains(&term.weight) {
            let weight = term_path.field("weight");
            errors.invalid(&weight, term.weight, "must be in the range 1-100");
        }
        validate_node_selector_term(&term.preference, &term_path.field("preference"), errors);
    }
}

fn validate_pod_anti_affinity(
    anti_affinity: &PodAntiAffinity,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    let required = path.field("requiredDuringSchedulingIgnoredDuringExecution");
    let terms = &anti_affinity.required_during_scheduling_ignored_during_execution;
    for (i, term) in terms.iter().enumerate() {
        let term_path = required.index(i);
        let topology_key = term_path.field("topologyKey");
        if term.topology_key.is_empty() {
            errors.required(&topology_key);
        } else {
            let check = names::qualified_name(&term.topology_key);
            errors.check(&topology_key, &term.topology_key, check);
        }
        if let Some(selector) = &term.label_selector {
            validate_label_selector(selector, &term_path.field("labelSelector"), errors);
        }
    }
}

fn validate_node_selector_term(term: &NodeSelectorTerm, path: &Path<'_>, errors: &mut Errors) {
    let expressions = path.field("matchExpressions");
    for (i, requirement) in term.match_expressions.iter().enumerate() {
        let at = expressions.index(i);
        errors.check(
            &at.field("key"),
            &requirement.key,
            names::qualified_name(&requirement.key),
        );
        let values = at.field("values");
        let count = requirement.values.len();
        match requirement.operator {
            NodeSelectorOperator::In | NodeSelectorOperator::NotIn if count == 0 => {
                errors.push(
                    &values,
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                        .to_owned(),
                );
            }
            NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist if count > 0 => {
                errors.forbidden(
                    &values,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                );
            }
            NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                if count != 1 {
                    let message = "Required value: must be specified single value when \
                        `operator` is 'Lt' or 'Gt'";
                    errors.push(&values, message.to_owned());
                } else if requirement.values[0].parse::<i64>().is_err() {
                    errors.invalid(
                        &values.index(0),
                        &requirement.values[0],
                        "must be an integer",
                    );
                }
            }
            _ => {
                for (j, value) in requirement.values.iter().enumerate() {
                    errors.check(&values.index(j), value, names::label_value(value));
                }
            }
        }
    }
}
