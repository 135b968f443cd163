//! The references plans carry instead of whole objects: enough to address an object and to make
//! a delete conditional on its uid (so a plan never deletes a same-named successor).

use flotilla_state::objects::{Kind, ObjectMeta, Pod};

/// A pod to delete or patch: namespace, name, and the uid the plan saw.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    pub fn of(pod: &Pod) -> PodRef {
        PodRef {
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
        }
    }
}

/// Any object: kind, namespace (empty for cluster-scoped kinds), name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjectRef {
    pub fn of(kind: Kind, metadata: &ObjectMeta) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: metadata.namespace.clone(),
            name: metadata.name.clone(),
            uid: metadata.uid.clone(),
        }
    }
}
