//! `Kind`: the supported object types and everything the API and CLI need to name them — kind
//! name, apiVersion, plural and short names, scope — and parsing of resource types as users type
//! them (`po`, `pods`, `Deployment`, `deployments.apps`).

use std::fmt;
use std::str::FromStr;

use crate::error::KindError;

/// A supported object type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Deployment,
    ReplicaSet,
    Service,
    ConfigMap,
    Event,
    HorizontalPodAutoscaler,
}

/// Every supported kind name, for error messages.
pub(crate) const SUPPORTED_KINDS: &str = "Namespace, Node, Pod, Deployment, ReplicaSet, Service, \
     ConfigMap, Event, HorizontalPodAutoscaler";

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Service,
        Kind::ConfigMap,
        Kind::Event,
        Kind::HorizontalPodAutoscaler,
    ];

    /// The `kind:` of manifests, e.g. `Deployment`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Service => "Service",
            Kind::ConfigMap => "ConfigMap",
            Kind::Event => "Event",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
        }
    }

    /// The `apiVersion:` of manifests, e.g. `apps/v1`.
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
            Kind::HorizontalPodAutoscaler => "autoscaling/v2",
            _ => "v1",
        }
    }

    /// The API group, empty for the core group.
    pub const fn group(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps",
            Kind::HorizontalPodAutoscaler => "autoscaling",
            _ => "",
        }
    }

    /// The lower-case plural used in API paths and `get`, e.g. `deployments`.
    pub const fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::Service => "services",
            Kind::ConfigMap => "configmaps",
            Kind::Event => "events",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
        }
    }

    /// The lower-case singular, e.g. `deployment`.
    pub const fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Node => "node",
            Kind::Pod => "pod",
            Kind::Deployment => "deployment",
            Kind::ReplicaSet => "replicaset",
            Kind::Service => "service",
            Kind::ConfigMap => "configmap",
            Kind::Event => "event",
            Kind::HorizontalPodAutoscaler => "horizontalpodautoscaler",
        }
    }

    /// kubectl's short name, e.g. `deploy`.
    pub const fn short_name(self) -> &'static str {
        match self {
            Kind::Namespace => "ns",
            Kind::Node => "no",
            Kind::Pod => "po",
            Kind::Deployment => "deploy",
            Kind::ReplicaSet => "rs",
            Kind::Service => "svc",
            Kind::ConfigMap => "cm",
            Kind::Event => "ev",
            Kind::HorizontalPodAutoscaler => "hpa",
        }
    }

    /// Whether objects of this kind live in a namespace (all but Namespace and Node).
    pub const fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// The kind whose `kind:` is exactly `name` (case-sensitive, as in manifests).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Parses a resource type as kubectl accepts it: plural, singular, short name or kind name,
    /// in any case, optionally qualified by group or version and group (`deployments.apps`,
    /// `deployments.v1.apps`).
    pub fn parse(text: &str) -> Result<Kind, KindError> {
        let (resource, qualifier) = match text.split_once('.') {
            Some((resource, qualifier)) => (resource, Some(qualifier)),
            None => (text, None),
        };
        Kind::ALL
            .into_iter()
            .find(|kind| {
                kind.is_called(resource) && qualifier.is_none_or(|q| kind.is_qualified_by(q))
            })
            .ok_or_else(|| KindError(text.to_owned()))
    }

    fn is_called(self, resource: &str) -> bool {
        [
            self.plural(),
            self.singular(),
            self.short_name(),
            self.name(),
        ]
        .iter()
        .any(|name| name.eq_ignore_ascii_case(resource))
    }

    /// `apps` or `v1.apps` for apps/v1; nothing qualifies the core group.
    fn is_qualified_by(self, qualifier: &str) -> bool {
        let group = self.group();
        if group.is_empty() {
            return false;
        }
        let version = self.api_version().rsplit('/').next().unwrap_or_default();
        match qualifier.split_once('.') {
            Some((v, g)) => v == version && g == group,
            None => qualifier == group,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = KindError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Kind::parse(text)
    }
}
