//! The Kubernetes-shaped kinds Flotilla stores, their shared building blocks (metadata, quantities,
//! int-or-string, times) and the `Object` enum that holds any one of them. Field names are exactly
//! Kubernetes' camelCase names; every struct denies unknown fields so nothing a user wrote is
//! silently dropped.

mod configmap;
mod container;
mod event;
mod hpa;
mod intstr;
pub(crate) mod kind;
mod meta;
mod namespace;
mod node;
mod object;
mod pod;
mod quantity;
mod service;
pub(crate) mod time;
mod workload;

pub use configmap::ConfigMap;
pub use container::{
    ConfigMapKeySelector, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    HttpGetAction, Probe, Protocol, PullPolicy, ResourceList, ResourceRequirements, Scheme,
    TcpSocketAction, VolumeMount,
};
pub use event::{Event, EventSource, EventType, ObjectReference};
pub use hpa::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    HorizontalPodAutoscalerStatus, MetricResourceName, MetricSourceType, MetricSpec, MetricStatus,
    MetricTarget, MetricTargetType, MetricValueStatus, ResourceMetricSource, ResourceMetricStatus,
};
pub use intstr::IntOrString;
pub use kind::Kind;
pub use meta::{
    ConditionStatus, LabelSelector, LabelSelectorOperator, LabelSelectorRequirement, ObjectMeta,
    OwnerReference,
};
pub use namespace::{Namespace, NamespacePhase, NamespaceSpec, NamespaceStatus};
pub use node::{
    Node, NodeAddress, NodeAddressType, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo, Taint,
    TaintEffect,
};
pub use object::{typed_json, Object, Resource};
pub use pod::{
    Affinity, ConfigMapVolumeSource, ContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, EmptyDirVolumeSource,
    HostPathType, HostPathVolumeSource, NodeAffinity, NodeSelector, NodeSelectorOperator,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, PodAntiAffinity, PodCondition,
    PodPhase, PodSpec, PodStatus, PreferredSchedulingTerm, RestartPolicy, StorageMedium,
    Toleration, TolerationOperator, Volume,
};
pub use quantity::Quantity;
pub use service::{
    LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus, ServiceType,
};
pub use time::Time;
pub use workload::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    DeploymentStrategyType, PodTemplateSpec, ReplicaSet, ReplicaSetCondition, ReplicaSetSpec,
    ReplicaSetStatus, RollingUpdateDeployment,
};

/// The message Kubernetes gives for a value outside a fixed set, e.g.
/// `Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"`.
pub(crate) fn unsupported_value_message(value: &str, supported: &[&str]) -> String {
    let mut message = format!("Unsupported value: {value:?}: supported values: ");
    for (i, text) in supported.iter().enumerate() {
        if i > 0 {
            message.push_str(", ");
        }
        message.push_str(&format!("{text:?}"));
    }
    message
}

/// Serde skip predicate for plain `false` booleans.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

/// Serde skip predicate for zero counters, which Kubernetes omits.
pub(crate) fn is_zero_i32(value: &i32) -> bool {
    *value == 0
}

/// Serde skip predicate for zero counters, which Kubernetes omits.
pub(crate) fn is_zero_i64(value: &i64) -> bool {
    *value == 0
}

/// Declares an enum whose values are a fixed set of strings (`restartPolicy: Always`), with
/// `as_str`, `parse`, `Display`, and serde impls that reject other strings with the Kubernetes
/// "Unsupported value" message.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every accepted spelling, in declaration order.
            pub const TEXTS: &'static [&'static str] = &[$($text,)+];

            /// The spelling used in manifests.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            /// The value spelled exactly `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl serde::de::Visitor<'_> for TextVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of {:?}", $name::TEXTS)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::parse(text).ok_or_else(|| {
                            let supported = $name::TEXTS;
                            E::custom($crate::objects::unsupported_value_message(text, supported))
                        })
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}
pub(crate) use string_enum;
