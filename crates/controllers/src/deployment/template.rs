//! The new ReplicaSet of a Deployment: the pod-template-hash (FNV-1a over the template's
//! canonical JSON, safe-encoded), template equality that ignores that label, revision
//! annotations, and the ReplicaSet object a rollout creates.

use std::collections::BTreeMap;

use flotilla_state::objects::{
    Deployment, Kind, ObjectMeta, OwnerReference, PodTemplateSpec, ReplicaSet, ReplicaSetSpec,
};

use crate::error::ControllerError;
use crate::hash::{fnv1a_32, safe_encode};

/// The label that ties a ReplicaSet and its pods to one template of the Deployment.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and of its Deployment, for the current one).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// `spec.replicas` of the Deployment when the ReplicaSet was last scaled by it.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when the ReplicaSet was last scaled by it.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// Why a revision was made, shown by `rollout history`.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";
/// Deployment annotations never copied onto its ReplicaSets.
const NOT_COPIED_ANNOTATIONS: [&str; 5] = [
    REVISION_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deployment.kubernetes.io/revision-history",
    "kubectl.kubernetes.io/last-applied-configuration",
];
/// Names tried for a new ReplicaSet when `<deployment>-<hash>` is taken by another template.
pub const MAX_HASH_COLLISIONS: u32 = 16;

/// The template with the pod-template-hash label removed.
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    template.metadata.labels.remove(POD_TEMPLATE_HASH_LABEL);
    template
}

/// Equal templates once the pod-template-hash label is ignored on both sides.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The pod-template-hash of `template` (its hash label ignored); `collision > 0` gives the
/// alternative names used when an unrelated ReplicaSet holds the plain one.
pub fn template_hash(
    template: &PodTemplateSpec,
    collision: u32,
    owner: &str,
) -> Result<String, ControllerError> {
    let json = serde_json::to_vec(&without_hash(template)).map_err(|error| {
        ControllerError::TemplateEncoding {
            owner: owner.to_owned(),
            message: error.to_string(),
        }
    })?;
    let salt = if collision == 0 {
        Vec::new()
    } else {
        collision.to_le_bytes().to_vec()
    };
    Ok(safe_encode(fnv1a_32(&[&json, &salt])))
}

/// The revision annotation as a number; `None` when absent or not a number.
pub fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .annotations
        .get(REVISION_ANNOTATION)?
        .parse()
        .ok()
}

/// The owner reference a Deployment puts on its ReplicaSets.
pub fn deployment_owner_reference(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: Kind::Deployment.api_version().to_owned(),
        kind: Kind::Deployment.name().to_owned(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `annotations` with the Deployment's own annotations copied in (all but the bookkeeping
/// ones), as Kubernetes does for the current ReplicaSet.
pub(crate) fn with_copied_annotations(
    d: &Deployment,
    annotations: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = annotations.clone();
    for (key, value) in &d.metadata.annotations {
        if !NOT_COPIED_ANNOTATIONS.contains(&key.as_str()) {
            merged.insert(key.clone(), value.clone());
        }
    }
    merged
}

/// Picks `<deployment>-<hash>` for the current template, trying the collision variants while
/// the name is in `taken` (names of ReplicaSets with other templates). `None` if all are taken.
pub(crate) fn new_replicaset_name(
    d: &Deployment,
    taken: &[String],
) -> Result<Option<(String, String)>, ControllerError> {
    for collision in 0..MAX_HASH_COLLISIONS {
        let hash = template_hash(&d.spec.template, collision, &d.metadata.name)?;
        let name = format!("{}-{hash}", d.metadata.name);
        if !taken.contains(&name) {
            return Ok(Some((name, hash)));
        }
    }
    Ok(None)
}

/// The ReplicaSet for the Deployment's current template: name `<deployment>-<hash>`, the hash
/// label added to its labels, selector and template, controlled by the Deployment.
pub(crate) fn new_replicaset(d: &Deployment, name: String, hash: &str) -> ReplicaSet {
    let mut template = d.spec.template.clone();
    template
        .metadata
        .labels
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    ReplicaSet {
        metadata: ObjectMeta {
            name,
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.labels.clone(),
            owner_references: vec![deployment_owner_reference(d)],
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: d.spec.min_ready_seconds,
            selector,
            template,
        },
        status: None,
    }
}
