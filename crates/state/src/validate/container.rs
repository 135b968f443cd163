//! Validation of containers: names, image, ports, environment, resources, volume mounts and
//! probes.

use std::collections::BTreeSet;

use super::{names, Errors, Path};
use crate::objects::{Container, EnvVar, IntOrString, Probe, ResourceRequirements};

/// Resource names a container may request besides domain-qualified extended resources.
const CONTAINER_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

pub(super) fn validate_containers(
    containers: &[Container],
    volume_names: &BTreeSet<&str>,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    if containers.is_empty() {
        errors.required(path);
    }
    let mut seen = BTreeSet::new();
    for (i, container) in containers.iter().enumerate() {
        let at = path.index(i);
        let name = at.field("name");
        if container.name.is_empty() {
            errors.required(&name);
        } else {
            errors.check(
                &name,
                &container.name,
                names::dns1123_label(&container.name),
            );
            if !seen.insert(container.name.as_str()) {
                errors.duplicate(&name, &container.name);
            }
        }
        validate_container(container, volume_names, &at, errors);
    }
}

fn validate_container(
    container: &Container,
    volume_names: &BTreeSet<&str>,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    if container.image.trim().is_empty() {
        errors.required(&path.field("image"));
    }
    validate_ports(container, &path.field("ports"), errors);
    let env = path.field("env");
    for (i, var) in container.env.iter().enumerate() {
        validate_env_var(var, &env.index(i), errors);
    }
    validate_resources(&container.resources, &path.field("resources"), errors);
    validate_volume_mounts(container, volume_names, &path.field("volumeMounts"), errors);
    if let Some(probe) = &container.liveness_probe {
        let at = path.field("livenessProbe");
        validate_probe(probe, &at, errors);
        if probe
            .success_threshold
            .is_some_and(|threshold| threshold != 1)
        {
            errors.invalid(
                &at.field("successThreshold"),
                probe.success_threshold.unwrap_or(1),
                "must be 1",
            );
        }
    }
    if let Some(probe) = &container.readiness_probe {
        validate_probe(probe, &path.field("readinessProbe"), errors);
    }
}

fn validate_ports(container: &Container, path: &Path<'_>, errors: &mut Errors) {
    let mut seen_names = BTreeSet::new();
    for (i, port) in container.ports.iter().enumerate() {
        let at = path.index(i);
        errors.port_number(&at.field("containerPort"), port.container_port);
        if let Some(host_port) = port.host_port {
            errors.port_number(&at.field("hostPort"), host_port);
        }
        if !port.name.is_empty() {
            let name = at.field("name");
            errors.check(&name, &port.name, names::iana_svc_name(&port.name));
            if !seen_names.insert(port.name.as_str()) {
                errors.duplicate(&name, &port.name);
            }
        }
    }
}

fn validate_env_var(var: &EnvVar, path: &Path<'_>, errors: &mut Errors) {
    let name = path.field("name");
    if var.name.is_empty() {
        errors.required(&name);
    } else {
        errors.check(&name, &var.name, names::env_var_name(&var.name));
    }
    let Some(source) = &var.value_from else {
        return;
    };
    let value_from = path.field("valueFrom");
    if !var.value.is_empty() {
        errors.invalid(
            &value_from,
            "",
            "may not be specified when `value` is not empty",
        );
    }
    let Some(selector) = &source.config_map_key_ref else {
        errors.invalid(&value_from, "", "must specify one of: `configMapKeyRef`");
        return;
    };
    let selector_path = value_from.field("configMapKeyRef");
    let (name, key) = (selector_path.field("name"), selector_path.field("key"));
    if selector.name.is_empty() {
        errors.required(&name);
    } else {
        errors.check(
            &name,
            &selector.name,
            names::dns1123_subdomain(&selector.name),
        );
    }
    if selector.key.is_empty() {
        errors.required(&key);
    } else {
        errors.check(&key, &selector.key, names::config_key(&selector.key));
    }
}

fn validate_resources(resources: &ResourceRequirements, path: &Path<'_>, errors: &mut Errors) {
    let lists = [
        (path.field("requests"), &resources.requests),
        (path.field("limits"), &resources.limits),
    ];
    for (list_path, list) in &lists {
        for (name, quantity) in *list {
            let at = list_path.key(name);
            let extended = name.contains('/');
            if extended {
                errors.check(&at, name, names::qualified_name(name));
            } else if !CONTAINER_RESOURCES.contains(&name.as_str()) {
                errors.unsupported(&at, name, &CONTAINER_RESOURCES);
            }
            if quantity.is_negative() {
                errors.invalid(&at, quantity.as_str(), "must be greater than or equal to 0");
            }
        }
    }
    let requests = path.field("requests");
    for (name, request) in &resources.requests {
        match resources.limits.get(name) {
            Some(limit) if request > limit => {
                let detail = format!("must be less than or equal to {name} limit of {limit}");
                errors.invalid(&requests.key(name), request.as_str(), &detail);
            }
            _ => {}
        }
    }
}

fn validate_volume_mounts(
    container: &Container,
    volume_names: &BTreeSet<&str>,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    let mut seen_paths = BTreeSet::new();
    for (i, mount) in container.volume_mounts.iter().enumerate() {
        let at = path.index(i);
        let name = at.field("name");
        if mount.name.is_empty() {
            errors.required(&name);
        } else if !volume_names.contains(mount.name.as_str()) {
            errors.not_found(&name, &mount.name);
        }
        let mount_path = at.field("mountPath");
        if mount.mount_path.is_empty() {
            errors.required(&mount_path);
        } else if !seen_paths.insert(mount.mount_path.as_str()) {
            errors.invalid(&mount_path, &mount.mount_path, "must be unique");
        }
    }
}

fn validate_probe(probe: &Probe, path: &Path<'_>, errors: &mut Errors) {
    let handlers = usize::from(probe.exec.is_some())
        + usize::from(probe.http_get.is_some())
        + usize::from(probe.tcp_socket.is_some());
    match handlers {
        0 => errors.required(&path.field("exec")),
        1 => {}
        _ => errors.forbidden(path, "may not specify more than 1 handler type"),
    }
    if let Some(exec) = &probe.exec {
        if exec.command.is_empty() {
            let exec_path = path.field("exec");
            errors.required(&exec_path.field("command"));
        }
    }
    if let Some(http_get) = &probe.http_get {
        let at = path.field("httpGet");
        validate_port_or_name(&http_get.port, &at.field("port"), errors);
    }
    if let Some(tcp_socket) = &probe.tcp_socket {
        let at = path.field("tcpSocket");
        validate_port_or_name(&tcp_socket.port, &at.field("port"), errors);
    }
    let timings = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ];
    for (field, value) in timings {
        if let Some(value) = value {
            errors.non_negative(&path.field(field), value);
        }
    }
}

/// A port number, or the name of a container port.
pub(super) fn validate_port_or_name(port: &IntOrString, path: &Path<'_>, errors: &mut Errors) {
    match port {
        IntOrString::Int(number) => errors.port_number(path, *number),
        IntOrString::String(name) => errors.check(path, name, names::iana_svc_name(name)),
    }
}
