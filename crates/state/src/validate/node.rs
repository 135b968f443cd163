//! Validation of Nodes: taints, pod CIDR and reported capacity.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{names, Errors, Path};
use crate::objects::{Node, Taint};

pub(super) fn validate_node(node: &Node, errors: &mut Errors) {
    let root = Path::Root;
    let spec = root.field("spec");
    validate_taints(&node.spec.taints, &spec.field("taints"), errors);
    if !node.spec.pod_cidr.is_empty() && !is_cidr(&node.spec.pod_cidr) {
        let detail = "must be a valid CIDR (e.g. 198.18.1.0/24)";
        errors.invalid(&spec.field("podCIDR"), &node.spec.pod_cidr, detail);
    }
    let Some(status) = &node.status else {
        return;
    };
    let status_path = root.field("status");
    let lists = [
        ("capacity", &status.capacity),
        ("allocatable", &status.allocatable),
    ];
    for (field, list) in lists {
        let list_path = status_path.field(field);
        for (name, quantity) in list.iter().filter(|(_, q)| q.is_negative()) {
            let detail = "must be greater than or equal to 0";
            errors.invalid(&list_path.key(name), quantity.as_str(), detail);
        }
    }
}

/// Keys and values follow label rules; one taint per key and effect.
fn validate_taints(taints: &[Taint], path: &Path<'_>, errors: &mut Errors) {
    let mut seen = BTreeSet::new();
    for (i, taint) in taints.iter().enumerate() {
        let at = path.index(i);
        let key = at.field("key");
        if taint.key.is_empty() {
            errors.required(&key);
        } else {
            errors.check(&key, &taint.key, names::qualified_name(&taint.key));
        }
        let value = at.field("value");
        errors.check(&value, &taint.value, names::label_value(&taint.value));
        if !seen.insert((taint.key.as_str(), taint.effect)) {
            errors.duplicate(&at, format!("{}:{}", taint.key, taint.effect));
        }
    }
}

/// `address/prefix` with the prefix no longer than the address.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(address) = address.parse::<IpAddr>() else {
        return false;
    };
    let max_prefix = if address.is_ipv4() { 32 } else { 128 };
    prefix.bytes().all(|b| b.is_ascii_digit())
        && prefix.parse::<u8>().is_ok_and(|p| p <= max_prefix)
}
