//! The crate's error types: what a caller can get back from parsing a manifest, a quantity, a time,
//! a selector or a resource-type name, and the field errors that validation reports. Every message
//! is written for the person who wrote the manifest or typed the command.

use std::fmt;

use crate::objects::Kind;

/// One problem with one field of an object, displayed as `path: message`, e.g.
/// `spec.containers[0].image: Required value`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// Full field path: dotted names with `[i]` indices, e.g. `spec.template.spec.containers[0]`.
    pub path: String,
    /// What is wrong, in Kubernetes wording ("Required value", "Invalid value: ...").
    pub message: String,
}

/// A string that is not a Kubernetes quantity (`500m`, `1.5Gi`, `1e3`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a quantity")]
    Invalid(String),
    #[error("{0:?} is too large a quantity")]
    TooLarge(String),
}

/// An int-or-string that was expected to be a percentage (`25%`) but is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a percentage")]
pub struct IntOrStringError(pub String);

/// A timestamp that is not RFC 3339 (`2024-05-01T12:00:00Z`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time")]
pub struct TimeError(pub String);

/// A resource type typed by a user (`kubectl get <this>`) that names no supported kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown resource type {0:?}")]
pub struct KindError(pub String);

/// A label or field selector that cannot be parsed or cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text does not follow selector syntax; `position` is the byte offset of `found`.
    #[error(
        "invalid selector {selector:?}: at position {position}: expected {expected}, found {found}"
    )]
    Syntax {
        selector: String,
        position: usize,
        expected: &'static str,
        found: String,
    },
    /// Well-formed, but a key or value breaks the label rules.
    #[error("invalid selector: {0}")]
    Invalid(String),
    /// A field selector names a field no kind supports.
    #[error("field label not supported: {field}")]
    UnsupportedField { field: String },
    /// A field selector names a field this kind does not support.
    #[error("field label not supported for {kind}: {field}")]
    UnsupportedFieldForKind { field: String, kind: Kind },
}

/// Why a manifest (YAML or JSON, one or many documents) could not be turned into objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based position of the document in the stream, present when the stream has more than one.
    pub document: Option<usize>,
    pub problem: ManifestProblem,
}

impl std::error::Error for ManifestError {}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(document) = self.document {
            write!(f, "document {document}: ")?;
        }
        self.problem.fmt(f)
    }
}

/// The problem part of a [`ManifestError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestProblem {
    /// A field has the wrong type or value, is unknown, or is missing.
    #[error("{path}: {message}")]
    Field { path: String, message: String },
    /// apiVersion/kind names nothing Flotilla supports.
    #[error(
        "{path}kind: unsupported kind {kind:?} in apiVersion {api_version:?} \
         (supported: {supported})"
    )]
    UnsupportedKind {
        /// Prefix such as `items[2].` when the object sits inside a `List`, else empty.
        path: String,
        api_version: String,
        kind: String,
        supported: &'static str,
    },
    /// The kind is supported, but not in this apiVersion.
    #[error(
        "{path}apiVersion: {api_version:?} is not supported for kind {kind} (use {expected:?})"
    )]
    UnsupportedApiVersion {
        path: String,
        api_version: String,
        kind: Kind,
        expected: &'static str,
    },
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The document is a scalar or a sequence rather than an object.
    #[error("{path}expected an object with apiVersion and kind, found {found}")]
    NotAnObject { path: String, found: &'static str },
    #[error("manifest is {size_bytes} bytes, more than the limit of {limit_bytes}")]
    TooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("manifest has more than {limit} documents or list items")]
    TooManyObjects { limit: usize },
    /// Serialising an object failed (only possible for a value serde cannot represent).
    #[error("cannot serialise object: {0}")]
    Serialize(String),
}
