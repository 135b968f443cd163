//! Validation of `metadata` (name rules per kind, namespace scope, labels, annotations, owner
//! references, finalizers) and of the few fields Events carry.

use super::{names, validate_labels, Errors, Path};
use crate::objects::{Event, Kind, ObjectMeta};

/// Total bytes of all annotation keys and values on one object.
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// The name rule each kind uses in Kubernetes.
fn name_rule(kind: Kind) -> fn(&str) -> names::NameCheck {
    match kind {
        Kind::Namespace => names::dns1123_label,
        Kind::Service => names::dns1035_label,
        _ => names::dns1123_subdomain,
    }
}

pub(super) fn validate_object_meta(
    kind: Kind,
    meta: &ObjectMeta,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    validate_name(kind, meta, path, errors);
    let namespace = path.field("namespace");
    if !kind.is_namespaced() && !meta.namespace.is_empty() {
        errors.forbidden(&namespace, "not allowed on this type");
    } else if !meta.namespace.is_empty() {
        errors.check(
            &namespace,
            &meta.namespace,
            names::dns1123_label(&meta.namespace),
        );
    }
    validate_labels(&meta.labels, &path.field("labels"), errors);
    validate_annotations(meta, &path.field("annotations"), errors);
    errors.non_negative(&path.field("generation"), meta.generation);
    if let Some(seconds) = meta.deletion_grace_period_seconds {
        errors.non_negative(&path.field("deletionGracePeriodSeconds"), seconds);
    }
    validate_owner_references(meta, &path.field("ownerReferences"), errors);
    let finalizers = path.field("finalizers");
    for (i, finalizer) in meta.finalizers.iter().enumerate() {
        errors.check(
            &finalizers.index(i),
            finalizer,
            names::qualified_name(finalizer),
        );
    }
}

/// A name, or a generateName prefix from which the API service derives one.
fn validate_name(kind: Kind, meta: &ObjectMeta, path: &Path<'_>, errors: &mut Errors) {
    let rule = name_rule(kind);
    if !meta.name.is_empty() {
        errors.check(&path.field("name"), &meta.name, rule(&meta.name));
    } else if meta.generate_name.is_empty() {
        errors.push(
            &path.field("name"),
            "Required value: name or generateName is required".to_owned(),
        );
    }
    if !meta.generate_name.is_empty() {
        // A prefix may end in '-' (`web-`); check it as if a suffix followed.
        let masked = match meta.generate_name.strip_suffix('-') {
            Some(stem) => format!("{stem}a"),
            None => meta.generate_name.clone(),
        };
        errors.check(
            &path.field("generateName"),
            &meta.generate_name,
            rule(&masked),
        );
    }
}

fn validate_annotations(meta: &ObjectMeta, path: &Path<'_>, errors: &mut Errors) {
    let mut total_bytes = 0;
    for (key, value) in &meta.annotations {
        errors.check(path, key, names::qualified_name(&key.to_ascii_lowercase()));
        total_bytes += key.len() + value.len();
    }
    if total_bytes > MAX_ANNOTATIONS_BYTES {
        errors.push(
            path,
            format!("Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"),
        );
    }
}

fn validate_owner_references(meta: &ObjectMeta, path: &Path<'_>, errors: &mut Errors) {
    let mut controllers = 0;
    for (i, owner) in meta.owner_references.iter().enumerate() {
        let at = path.index(i);
        let fields = [
            ("apiVersion", &owner.api_version),
            ("kind", &owner.kind),
            ("name", &owner.name),
            ("uid", &owner.uid),
        ];
        for (field, value) in fields {
            if value.is_empty() {
                errors.required(&at.field(field));
            }
        }
        controllers += usize::from(owner.controller == Some(true));
    }
    if controllers > 1 {
        errors.invalid(
            path,
            controllers,
            "Only one reference can have Controller set to true",
        );
    }
}

pub(super) fn validate_event(event: &Event, errors: &mut Errors) {
    let root = Path::Root;
    let involved = root.field("involvedObject");
    let target_namespace = &event.involved_object.namespace;
    if !target_namespace.is_empty()
        && !event.metadata.namespace.is_empty()
        && *target_namespace != event.metadata.namespace
    {
        errors.invalid(
            &involved.field("namespace"),
            target_namespace,
            "does not match event.namespace",
        );
    }
    if event.involved_object.kind.is_empty() {
        errors.required(&involved.field("kind"));
    }
    if event.involved_object.name.is_empty() {
        errors.required(&involved.field("name"));
    }
    if let Some(count) = event.count {
        errors.non_negative(&root.field("count"), count);
    }
}
