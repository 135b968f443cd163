//! Validation: everything kube-apiserver would refuse in an object, reported as field errors with
//! full paths (`spec.template.spec.containers[0].image: Required value`).
//!
//! Validation is meant to run after [`crate::default`], as in Kubernetes, but does not depend on
//! it: unset fields that defaulting would fill are accepted.

mod configmap;
mod container;
mod meta;
pub(crate) mod names;
mod node;
mod pod;
mod scaling;
mod service;
mod workload;

use std::collections::BTreeMap;
use std::fmt;

use crate::error::FieldError;
use crate::objects::{LabelSelector, LabelSelectorOperator, Object};

/// Most field errors reported for one object; a broken generated manifest could otherwise produce
/// one per element.
pub const MAX_FIELD_ERRORS: usize = 100;

/// Checks `object` as the API server would before storing it.
pub fn validate(object: &Object) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    let root = Path::Root;
    meta::validate_object_meta(
        object.kind(),
        object.metadata(),
        &root.field("metadata"),
        &mut errors,
    );
    match object {
        Object::Namespace(_) => {}
        Object::Node(node) => node::validate_node(node, &mut errors),
        Object::Pod(pod) => pod::validate_pod_spec(&pod.spec, &root.field("spec"), &mut errors),
        Object::Deployment(deployment) => workload::validate_deployment(deployment, &mut errors),
        Object::ReplicaSet(replica_set) => workload::validate_replica_set(replica_set, &mut errors),
        Object::Service(service) => service::validate_service(service, &mut errors),
        Object::ConfigMap(config_map) => configmap::validate_config_map(config_map, &mut errors),
        Object::Event(event) => meta::validate_event(event, &mut errors),
        Object::HorizontalPodAutoscaler(hpa) => scaling::validate_hpa(hpa, &mut errors),
    }
    errors.finish()
}

/// A field path built on the stack and rendered only when an error is reported, so validating a
/// valid object allocates nothing for paths.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    Root,
    Field(&'a Path<'a>, &'static str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl<'a> Path<'a> {
    pub(crate) fn field(&'a self, name: &'static str) -> Path<'a> {
        Path::Field(self, name)
    }

    pub(crate) fn index(&'a self, index: usize) -> Path<'a> {
        Path::Index(self, index)
    }

    /// A map entry: `labels.app`, or `labels[app.kubernetes.io/name]` when the key is not a plain
    /// word (the same rendering manifest errors use).
    pub(crate) fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let write_dotted = |f: &mut fmt::Formatter<'_>, parent: &Path<'_>, name: &str| {
            parent.fmt(f)?;
            if !matches!(parent, Path::Root) {
                f.write_str(".")?;
            }
            f.write_str(name)
        };
        match self {
            Path::Root => Ok(()),
            Path::Field(parent, name) => write_dotted(f, parent, name),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
            Path::Key(parent, key) if is_plain_word(key) => write_dotted(f, parent, key),
            Path::Key(parent, key) => write!(f, "{parent}[{key}]"),
        }
    }
}

fn is_plain_word(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Collects field errors, in Kubernetes' wording, up to [`MAX_FIELD_ERRORS`].
#[derive(Default)]
pub(crate) struct Errors {
    list: Vec<FieldError>,
    omitted: usize,
}

impl Errors {
    pub(crate) fn push(&mut self, path: &Path<'_>, message: String) {
        if self.list.len() >= MAX_FIELD_ERRORS {
            self.omitted += 1;
            return;
        }
        self.list.push(FieldError {
            path: path.to_string(),
            message,
        });
    }

    pub(crate) fn required(&mut self, path: &Path<'_>) {
        self.push(path, "Required value".to_owned());
    }

    pub(crate) fn invalid(&mut self, path: &Path<'_>, value: impl fmt::Debug, detail: &str) {
        self.push(path, format!("Invalid value: {value:?}: {detail}"));
    }

    pub(crate) fn duplicate(&mut self, path: &Path<'_>, value: impl fmt::Debug) {
        self.push(path, format!("Duplicate value: {value:?}"));
    }

    pub(crate) fn forbidden(&mut self, path: &Path<'_>, detail: &str) {
        self.push(path, format!("Forbidden: {detail}"));
    }

    pub(crate) fn not_found(&mut self, path: &Path<'_>, value: impl fmt::Debug) {
        self.push(path, format!("Not found: {value:?}"));
    }

    pub(crate) fn unsupported(&mut self, path: &Path<'_>, value: &str, supported: &[&str]) {
        self.push(
            path,
            crate::objects::unsupported_value_message(value, supported),
        );
    }

    /// Reports `check`'s problem with `value`, if any.
    pub(crate) fn check(&mut self, path: &Path<'_>, value: &str, check: names::NameCheck) {
        if let Err(problem) = check {
            self.invalid(path, value, &problem);
        }
    }

    pub(crate) fn non_negative(
        &mut self,
        path: &Path<'_>,
        value: impl Into<i64> + Copy + fmt::Debug,
    ) {
        if value.into() < 0 {
            self.invalid(path, value, "must be greater than or equal to 0");
        }
    }

    pub(crate) fn port_number(&mut self, path: &Path<'_>, port: i32) {
        if !(1..=65535).contains(&port) {
            self.invalid(path, port, "must be between 1 and 65535, inclusive");
        }
    }

    fn finish(mut self) -> Result<(), Vec<FieldError>> {
        if self.omitted > 0 {
            self.list.push(FieldError {
                path: "...".to_owned(),
                message: format!("{} more errors not shown", self.omitted),
            });
        }
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(self.list)
        }
    }
}

/// Label keys must be qualified names and values valid label values.
pub(crate) fn validate_labels(
    labels: &BTreeMap<String, String>,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    for (key, value) in labels {
        errors.check(path, key, names::qualified_name(key));
        errors.check(&path.key(key), value, names::label_value(value));
    }
}

/// matchLabels plus matchExpressions, with the operator/values pairing rules.
pub(crate) fn validate_label_selector(
    selector: &LabelSelector,
    path: &Path<'_>,
    errors: &mut Errors,
) {
    validate_labels(&selector.match_labels, &path.field("matchLabels"), errors);
    let expressions = path.field("matchExpressions");
    for (i, requirement) in selector.match_expressions.iter().enumerate() {
        let at = expressions.index(i);
        errors.check(
            &at.field("key"),
            &requirement.key,
            names::qualified_name(&requirement.key),
        );
        let values = at.field("values");
        match requirement.operator {
            LabelSelectorOperator::In | LabelSelectorOperator::NotIn
                if requirement.values.is_empty() =>
            {
                errors.push(
                    &values,
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                        .to_owned(),
                );
            }
            LabelSelectorOperator::Exists | LabelSelectorOperator::DoesNotExist
                if !requirement.values.is_empty() =>
            {
                errors.forbidden(
                    &values,
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                );
            }
            _ => {}
        }
        for (j, value) in requirement.values.iter().enumerate() {
            errors.check(&values.index(j), value, names::label_value(value));
        }
    }
}
