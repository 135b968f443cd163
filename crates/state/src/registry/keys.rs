//! The keyspace: one prefix per kind, one per namespace inside it.
//!
//! `/registry/<plural>/<namespace>/<name>` for namespaced kinds and `/registry/<plural>/<name>`
//! for cluster-scoped ones. Names and namespaces are DNS-1123 (validated before they get here),
//! so they contain no `/` and keys of different namespaces never interleave.

use flotilla_consensus::{prefix_end, KeyRange};

pub const ROOT: &str = "/registry/";

/// What the registry needs to know of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Whether `status` is a separate sub-resource (spec writes never change it).
    pub has_status: bool,
    /// Whether `spec` changes bump `metadata.generation`.
    pub has_spec: bool,
}

/// Where the objects a list or watch covers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (or a cluster-scoped kind).
    All,
    Namespace(String),
}

pub fn object_key(info: &KindInfo, namespace: &str, name: &str) -> Vec<u8> {
    if info.namespaced {
        format!("{ROOT}{}/{namespace}/{name}", info.plural).into_bytes()
    } else {
        format!("{ROOT}{}/{name}", info.plural).into_bytes()
    }
}

pub fn scope_prefix(info: &KindInfo, scope: &Scope) -> Vec<u8> {
    match scope {
        Scope::Namespace(ns) if info.namespaced => {
            format!("{ROOT}{}/{ns}/", info.plural).into_bytes()
        }
        _ => format!("{ROOT}{}/", info.plural).into_bytes(),
    }
}

pub fn scope_range(info: &KindInfo, scope: &Scope) -> KeyRange {
    KeyRange::prefix(scope_prefix(info, scope))
}

/// The half-open range from `start` (inclusive) to the end of `prefix`.
pub fn rest_of(prefix: &[u8], start: &[u8]) -> KeyRange {
    KeyRange::between(start.to_vec(), prefix_end(prefix))
}

/// The smallest key after `key`.
pub fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: KindInfo = KindInfo {
        kind: "Pod",
        api_version: "v1",
        plural: "pods",
        namespaced: true,
        has_status: true,
        has_spec: true,
    };
    const NODE: KindInfo = KindInfo {
        kind: "Node",
        api_version: "v1",
        plural: "nodes",
        namespaced: false,
        has_status: true,
        has_spec: true,
    };

    #[test]
    fn keys_and_prefixes() {
        assert_eq!(
            object_key(&POD, "default", "web"),
            b"/registry/pods/default/web"
        );
        assert_eq!(object_key(&NODE, "", "n1"), b"/registry/nodes/n1");
        let ns = scope_range(&POD, &Scope::Namespace("a".into()));
        assert!(ns.contains(b"/registry/pods/a/x"));
        assert!(
            !ns.contains(b"/registry/pods/ab/x"),
            "namespace a must not cover ab"
        );
        assert!(scope_range(&POD, &Scope::All).contains(b"/registry/pods/ab/x"));
        assert!(!scope_range(&POD, &Scope::All).contains(b"/registry/podsx/a"));
    }
}
