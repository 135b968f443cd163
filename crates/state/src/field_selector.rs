//! Field selectors (`--field-selector`): `metadata.name=x,status.phase!=Running`, over the fields
//! Kubernetes lets each kind be selected by. Unset fields read as the empty string, so
//! `spec.nodeName=` selects unscheduled pods.

use std::fmt;

use crate::error::SelectorError;
use crate::objects::{Kind, Object};
use crate::selector::MAX_SELECTOR_BYTES;

/// A selectable field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    MetadataName,
    MetadataNamespace,
    SpecNodeName,
    SpecRestartPolicy,
    StatusPhase,
    StatusPodIp,
    SpecUnschedulable,
    InvolvedObjectKind,
    InvolvedObjectName,
    InvolvedObjectNamespace,
    InvolvedObjectUid,
    Reason,
    Type,
    Source,
}

impl Field {
    const ALL: [Field; 14] = [
        Field::MetadataName,
        Field::MetadataNamespace,
        Field::SpecNodeName,
        Field::SpecRestartPolicy,
        Field::StatusPhase,
        Field::StatusPodIp,
        Field::SpecUnschedulable,
        Field::InvolvedObjectKind,
        Field::InvolvedObjectName,
        Field::InvolvedObjectNamespace,
        Field::InvolvedObjectUid,
        Field::Reason,
        Field::Type,
        Field::Source,
    ];

    /// The field's path as users write it.
    pub const fn path(self) -> &'static str {
        match self {
            Field::MetadataName => "metadata.name",
            Field::MetadataNamespace => "metadata.namespace",
            Field::SpecNodeName => "spec.nodeName",
            Field::SpecRestartPolicy => "spec.restartPolicy",
            Field::StatusPhase => "status.phase",
            Field::StatusPodIp => "status.podIP",
            Field::SpecUnschedulable => "spec.unschedulable",
            Field::InvolvedObjectKind => "involvedObject.kind",
            Field::InvolvedObjectName => "involvedObject.name",
            Field::InvolvedObjectNamespace => "involvedObject.namespace",
            Field::InvolvedObjectUid => "involvedObject.uid",
            Field::Reason => "reason",
            Field::Type => "type",
            Field::Source => "source",
        }
    }

    pub fn parse(path: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.path() == path)
    }

    /// Whether objects of `kind` can be selected by this field.
    pub fn applies_to(self, kind: Kind) -> bool {
        match self {
            Field::MetadataName | Field::MetadataNamespace => true,
            Field::SpecNodeName | Field::SpecRestartPolicy | Field::StatusPodIp => {
                kind == Kind::Pod
            }
            Field::StatusPhase => matches!(kind, Kind::Pod | Kind::Namespace),
            Field::SpecUnschedulable => kind == Kind::Node,
            Field::InvolvedObjectKind
            | Field::InvolvedObjectName
            | Field::InvolvedObjectNamespace
            | Field::InvolvedObjectUid
            | Field::Reason
            | Field::Type
            | Field::Source => kind == Kind::Event,
        }
    }

    /// The field's value in `object` (empty when unset), or `None` when the field does not apply
    /// to the object's kind.
    pub fn value_in(self, object: &Object) -> Option<&str> {
        let value = match (self, object) {
            (Field::MetadataName, _) => object.name(),
            (Field::MetadataNamespace, _) => object.namespace(),
            (Field::SpecNodeName, Object::Pod(pod)) => &pod.spec.node_name,
            (Field::SpecRestartPolicy, Object::Pod(pod)) => pod.spec.restart_policy().as_str(),
            (Field::StatusPhase, Object::Pod(pod)) => pod
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map_or("", |phase| phase.as_str()),
            (Field::StatusPhase, Object::Namespace(namespace)) => namespace
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map_or("", |phase| phase.as_str()),
            (Field::StatusPodIp, Object::Pod(pod)) => {
                pod.status.as_ref().map_or("", |s| s.pod_ip.as_str())
            }
            (Field::SpecUnschedulable, Object::Node(node)) => {
                if node.spec.unschedulable {
                    "true"
                } else {
                    "false"
                }
            }
            (_, Object::Event(event)) => return event_field(self, event),
            _ => return None,
        };
        Some(value)
    }
}

fn event_field(field: Field, event: &crate::objects::Event) -> Option<&str> {
    let involved = &event.involved_object;
    let value = match field {
        Field::InvolvedObjectKind => &involved.kind,
        Field::InvolvedObjectName => &involved.name,
        Field::InvolvedObjectNamespace => &involved.namespace,
        Field::InvolvedObjectUid => &involved.uid,
        Field::Reason => &event.reason,
        Field::Type => return Some(event.type_.map_or("", |t| t.as_str())),
        Field::Source => return Some(event.source.as_ref().map_or("", |s| s.component.as_str())),
        _ => return None,
    };
    Some(value)
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// One `field=value` or `field!=value` test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: Field,
    /// `true` for `!=`.
    pub negated: bool,
    pub value: String,
}

/// Requirements ANDed together; empty selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses comma-joined `field=value`, `field==value`, `field!=value` terms.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::Invalid(format!(
                "longer than {MAX_SELECTOR_BYTES} bytes"
            )));
        }
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        let mut offset = 0;
        for term in text.split(',') {
            requirements.push(parse_term(text, term, offset)?);
            offset += term.len() + 1;
        }
        Ok(FieldSelector { requirements })
    }

    /// Fails naming the first field that `kind` cannot be selected by.
    pub fn check_kind(&self, kind: Kind) -> Result<(), SelectorError> {
        match self.requirements.iter().find(|r| !r.field.applies_to(kind)) {
            Some(requirement) => Err(SelectorError::UnsupportedFieldForKind {
                field: requirement.field.path().to_owned(),
                kind,
            }),
            None => Ok(()),
        }
    }

    /// Whether `object` passes every requirement; a field that does not apply to the object's kind
    /// never matches.
    pub fn matches(&self, object: &Object) -> bool {
        self.requirements.iter().all(|requirement| {
            requirement
                .field
                .value_in(object)
                .is_some_and(|value| (value == requirement.value) != requirement.negated)
        })
    }

    /// The value `field` must equal, if the selector pins it (`spec.nodeName=n1`): lets a store
    /// answer from an index instead of a scan.
    pub fn required_value(&self, field: Field) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }
}

/// One term starting at byte `offset` of `text`.
fn parse_term(text: &str, term: &str, offset: usize) -> Result<FieldRequirement, SelectorError> {
    let (field, negated, value) = if let Some((field, value)) = term.split_once("!=") {
        (field, true, value)
    } else if let Some((field, value)) = term.split_once("==") {
        (field, false, value)
    } else if let Some((field, value)) = term.split_once('=') {
        (field, false, value)
    } else {
        let leading = term.len() - term.trim_start().len();
        return Err(SelectorError::Syntax {
            selector: text.to_owned(),
            position: offset + leading,
            expected: "a term of the form field=value or field!=value",
            found: format!("{:?}", term.trim()),
        });
    };
    let field_path = field.trim();
    let field = Field::parse(field_path).ok_or_else(|| SelectorError::UnsupportedField {
        field: field_path.to_owned(),
    })?;
    Ok(FieldRequirement {
        field,
        negated,
        value: value.trim().to_owned(),
    })
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let operator = if requirement.negated { "!=" } else { "=" };
            write!(f, "{}{operator}{}", requirement.field, requirement.value)?;
        }
        Ok(())
    }
}
