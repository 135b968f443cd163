//! Validation of Services: name (DNS-1035), type, cluster IP, ports, node ports and selector.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::container::validate_port_or_name;
use super::{names, validate_labels, Errors, Path};
use crate::objects::{Protocol, Service, ServicePort, ServiceType};

/// The `clusterIP` value that makes a service headless.
const HEADLESS: &str = "None";

pub(super) fn validate_service(service: &Service, errors: &mut Errors) {
    let root = Path::Root;
    let spec_path = root.field("spec");
    let spec = &service.spec;
    let cluster_ip = spec_path.field("clusterIP");
    let is_ip = |text: &str| text.parse::<IpAddr>().is_ok();
    if spec.cluster_ip == HEADLESS && spec.type_() == ServiceType::NodePort {
        let detail = "may not be set to 'None' for NodePort services";
        errors.invalid(&cluster_ip, HEADLESS, detail);
    } else if !matches!(spec.cluster_ip.as_str(), "" | HEADLESS) && !is_ip(&spec.cluster_ip) {
        let detail = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
        errors.invalid(&cluster_ip, &spec.cluster_ip, detail);
    }
    let ports = spec_path.field("ports");
    if spec.ports.is_empty() && spec.cluster_ip != HEADLESS {
        errors.required(&ports);
    }
    let mut seen = SeenPorts::default();
    for (i, port) in spec.ports.iter().enumerate() {
        let named_required = spec.ports.len() > 1;
        validate_port(
            port,
            spec.type_(),
            named_required,
            &mut seen,
            &ports.index(i),
            errors,
        );
    }
    validate_labels(&spec.selector, &spec_path.field("selector"), errors);
}

/// Names and (port, protocol) pairs already used by earlier ports of the service.
#[derive(Default)]
struct SeenPorts<'a> {
    names: BTreeSet<&'a str>,
    numbers: BTreeSet<(i32, Protocol)>,
}

fn validate_port<'a>(
    port: &'a ServicePort,
    service_type: ServiceType,
    name_required: bool,
    seen: &mut SeenPorts<'a>,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    let name = path.field("name");
    if port.name.is_empty() && name_required {
        errors.required(&name);
    } else if !port.name.is_empty() {
        errors.check(&name, &port.name, names::iana_svc_name(&port.name));
        if !seen.names.insert(port.name.as_str()) {
            errors.duplicate(&name, &port.name);
        }
    }
    errors.port_number(&path.field("port"), port.port);
    let protocol = port.protocol.unwrap_or(Protocol::Tcp);
    if !seen.numbers.insert((port.port, protocol)) {
        errors.duplicate(path, format!("{}/{protocol}", port.port));
    }
    if let Some(target) = &port.target_port {
        validate_port_or_name(target, &path.field("targetPort"), errors);
    }
    if let Some(node_port) = port.node_port {
        let node_port_path = path.field("nodePort");
        if service_type == ServiceType::NodePort {
            errors.port_number(&node_port_path, node_port);
        } else {
            let detail = format!("may not be used when `type` is '{service_type}'");
            errors.forbidden(&node_port_path, &detail);
        }
    }
}
