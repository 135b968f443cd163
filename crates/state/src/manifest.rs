//! Manifest text ⇄ objects: multi-document YAML (comments, anchors, aliases, `<<` merge keys) and
//! JSON (one object, a stream of objects, or a `kind: List`), with errors that name the document
//! and the full field path; and serialisation back to kubectl-shaped YAML and JSON.

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::error::{ManifestError, ManifestProblem};
use crate::objects::kind::SUPPORTED_KINDS;
use crate::objects::{
    ConfigMap, Deployment, Event, HorizontalPodAutoscaler, Kind, Namespace, Node, Object, Pod,
    ReplicaSet, Service,
};

/// Largest manifest accepted, so one request cannot make the parser hold gigabytes.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Most documents plus list items accepted in one manifest.
pub const MAX_MANIFEST_OBJECTS: usize = 10_000;

/// Parses every object in `text`. Empty documents are skipped; the first problem found is
/// returned, naming its document (when there are several) and its full field path.
pub fn parse_manifests(text: &str) -> Result<Vec<Object>, ManifestError> {
    let at_stream = |problem| ManifestError {
        document: None,
        problem,
    };
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(at_stream(ManifestProblem::TooLarge {
            size_bytes: text.len(),
            limit_bytes: MAX_MANIFEST_BYTES,
        }));
    }
    let documents = split_documents(text).map_err(at_stream)?;
    let non_empty = documents.iter().filter(|d| !d.is_null()).count();
    let mut objects = Vec::with_capacity(non_empty);
    for (index, document) in documents.into_iter().enumerate() {
        let in_document = |problem| ManifestError {
            document: (non_empty > 1).then_some(index + 1),
            problem,
        };
        decode_document(document, &mut objects).map_err(in_document)?;
        if objects.len() > MAX_MANIFEST_OBJECTS {
            let limit = MAX_MANIFEST_OBJECTS;
            return Err(at_stream(ManifestProblem::TooManyObjects { limit }));
        }
    }
    Ok(objects)
}

/// Splits the text into document values: JSON when it looks like JSON and parses as JSON,
/// otherwise YAML.
fn split_documents(text: &str) -> Result<Vec<Value>, ManifestProblem> {
    let looks_like_json = matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    if !looks_like_json {
        return split_yaml(text);
    }
    split_json(text).or_else(|json_problem| split_yaml(text).map_err(|_| json_problem))
}

fn split_json(text: &str) -> Result<Vec<Value>, ManifestProblem> {
    let mut documents = Vec::new();
    for document in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        documents.push(document.map_err(|e| ManifestProblem::Json(e.to_string()))?);
        if documents.len() > MAX_MANIFEST_OBJECTS {
            let limit = MAX_MANIFEST_OBJECTS;
            return Err(ManifestProblem::TooManyObjects { limit });
        }
    }
    Ok(documents)
}

fn split_yaml(text: &str) -> Result<Vec<Value>, ManifestProblem> {
    let mut documents = Vec::new();
    // The iterator keeps yielding the same syntax error forever, so stop at the first one.
    for document in serde_yaml::Deserializer::from_str(text) {
        let mut value =
            Value::deserialize(document).map_err(|e| ManifestProblem::Yaml(e.to_string()))?;
        value
            .apply_merge()
            .map_err(|e| ManifestProblem::Yaml(e.to_string()))?;
        documents.push(value);
        if documents.len() > MAX_MANIFEST_OBJECTS {
            let limit = MAX_MANIFEST_OBJECTS;
            return Err(ManifestProblem::TooManyObjects { limit });
        }
    }
    Ok(documents)
}

/// Appends the objects of one document (one object, or the items of a `List`) to `objects`.
fn decode_document(document: Value, objects: &mut Vec<Object>) -> Result<(), ManifestProblem> {
    match document {
        Value::Null => Ok(()),
        Value::Mapping(list) if list.get("kind").and_then(Value::as_str) == Some("List") => {
            for (index, item) in list_items(list)?.into_iter().enumerate() {
                objects.push(decode_object_at(&format!("items[{index}]."), item)?);
                if objects.len() > MAX_MANIFEST_OBJECTS {
                    let limit = MAX_MANIFEST_OBJECTS;
                    return Err(ManifestProblem::TooManyObjects { limit });
                }
            }
            Ok(())
        }
        other => {
            objects.push(decode_object_at("", other)?);
            Ok(())
        }
    }
}

/// The `items` of a `v1 List`, rejecting any field a list does not have.
fn list_items(mut list: Mapping) -> Result<Vec<Value>, ManifestProblem> {
    let field = |path: &str, message: &str| ManifestProblem::Field {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    match list.get("apiVersion").and_then(Value::as_str) {
        Some("v1") => {}
        Some(other) => {
            let message = format!("{other:?} is not supported for kind List (use \"v1\")");
            return Err(field("apiVersion", &message));
        }
        None => return Err(field("apiVersion", "missing required field")),
    }
    let is_list_meta = |k: &Value| matches!(k.as_str(), Some("resourceVersion" | "continue"));
    if let Some(Value::Mapping(meta)) = list.get("metadata") {
        if let Some(key) = meta.keys().find(|k| !is_list_meta(k)) {
            return Err(field(
                &format!("metadata.{}", key_text(key)),
                "unknown field",
            ));
        }
    }
    let items = list.shift_remove("items").unwrap_or(Value::Null);
    let is_list_field = |k: &Value| matches!(k.as_str(), Some("apiVersion" | "kind" | "metadata"));
    if let Some(key) = list.keys().find(|k| !is_list_field(k)) {
        return Err(field(&key_text(key), "unknown field"));
    }
    match items {
        Value::Sequence(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        _ => Err(field("items", "expected a sequence of objects")),
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    }
}

/// Decodes one object from a YAML value (the slow path of `Object`'s `Deserialize`).
pub(crate) fn decode_object(value: Value) -> Result<Object, ManifestProblem> {
    decode_object_at("", value)
}

/// Decodes one object; `prefix` (`items[3].` or empty) starts every reported path.
fn decode_object_at(prefix: &str, value: Value) -> Result<Object, ManifestProblem> {
    let Value::Mapping(mut mapping) = value else {
        let found = describe_value(&value);
        return Err(ManifestProblem::NotAnObject {
            path: prefix.to_owned(),
            found,
        });
    };
    let api_version = take_type_field(prefix, &mut mapping, "apiVersion")?;
    let kind = take_type_field(prefix, &mut mapping, "kind")?;
    let kind = resolve_kind(prefix, &api_version, &kind)?;
    decode_kind(kind, Value::Mapping(mapping)).map_err(|(path, message)| ManifestProblem::Field {
        path: format!("{prefix}{path}"),
        message,
    })
}

fn take_type_field(
    prefix: &str,
    mapping: &mut Mapping,
    name: &str,
) -> Result<String, ManifestProblem> {
    let problem = |message: &str| ManifestProblem::Field {
        path: format!("{prefix}{name}"),
        message: message.to_owned(),
    };
    match mapping.shift_remove(name) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(problem("expected a string")),
        None => Err(problem("missing required field")),
    }
}

/// The kind named by `apiVersion` + `kind`, or an error naming what is unsupported.
pub(crate) fn resolve_kind(
    prefix: &str,
    api_version: &str,
    kind: &str,
) -> Result<Kind, ManifestProblem> {
    let Some(resolved) = Kind::from_name(kind) else {
        return Err(ManifestProblem::UnsupportedKind {
            path: prefix.to_owned(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            supported: SUPPORTED_KINDS,
        });
    };
    if resolved.api_version() != api_version {
        return Err(ManifestProblem::UnsupportedApiVersion {
            path: prefix.to_owned(),
            api_version: api_version.to_owned(),
            kind: resolved,
            expected: resolved.api_version(),
        });
    }
    Ok(resolved)
}

/// Deserialises the kind's struct, tracking the path; on error returns `(path, message)`.
fn decode_kind(kind: Kind, value: Value) -> Result<Object, (String, String)> {
    fn typed<T: for<'de> Deserialize<'de> + Into<Object>>(
        value: Value,
    ) -> Result<Object, (String, String)> {
        serde_path_to_error::deserialize::<_, T>(value)
            .map(Into::into)
            .map_err(|error| {
                let (suffix, message) = describe_serde_error(&error.inner().to_string());
                let path = render_path(error.path());
                (append_segment(path, suffix), message)
            })
    }
    match kind {
        Kind::Namespace => typed::<Namespace>(value),
        Kind::Node => typed::<Node>(value),
        Kind::Pod => typed::<Pod>(value),
        Kind::Deployment => typed::<Deployment>(value),
        Kind::ReplicaSet => typed::<ReplicaSet>(value),
        Kind::Service => typed::<Service>(value),
        Kind::ConfigMap => typed::<ConfigMap>(value),
        Kind::Event => typed::<Event>(value),
        Kind::HorizontalPodAutoscaler => typed::<HorizontalPodAutoscaler>(value),
    }
}

/// Renders a serde path as dotted names with `[i]` indices; map keys that are not plain words
/// (label keys such as `app.kubernetes.io/name`) are bracketed: `labels[app.kubernetes.io/name]`.
pub(crate) fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut rendered = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => rendered.push_str(&format!("[{index}]")),
            Segment::Map { key } if !is_plain_word(key) => rendered.push_str(&format!("[{key}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                rendered = append_segment(rendered, Some(key.clone()));
            }
            Segment::Unknown => rendered = append_segment(rendered, Some("?".to_owned())),
        }
    }
    rendered
}

fn is_plain_word(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn append_segment(mut path: String, segment: Option<String>) -> String {
    if let Some(segment) = segment {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&segment);
    }
    path
}

/// `path: message`, or just the message at the root.
pub(crate) fn join_path(path: &str, (suffix, message): (Option<String>, String)) -> String {
    let path = append_segment(path.to_owned(), suffix);
    if path.is_empty() {
        message
    } else {
        format!("{path}: {message}")
    }
}

/// Rewrites serde's messages for unknown and missing fields into `(field to append, message)`;
/// serde_path_to_error already includes an unknown field in the path, a missing one it does not.
pub(crate) fn describe_serde_error(message: &str) -> (Option<String>, String) {
    if message.starts_with("unknown field `") {
        return (None, "unknown field".to_owned());
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        return (Some(field.to_owned()), "missing required field".to_owned());
    }
    (None, message.to_owned())
}

fn describe_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// Kubectl-shaped YAML: one document per object, separated by `---`.
pub fn to_yaml(objects: &[Object]) -> Result<String, ManifestError> {
    let mut text = String::new();
    for (index, object) in objects.iter().enumerate() {
        if index > 0 {
            text.push_str("---\n");
        }
        let document = serde_yaml::to_string(object).map_err(|e| serialize_error(&e))?;
        text.push_str(&document);
    }
    Ok(text)
}

/// Kubectl-shaped, pretty-printed JSON: the object itself when there is exactly one, otherwise a
/// `v1 List` of them.
pub fn to_json(objects: &[Object]) -> Result<String, ManifestError> {
    #[derive(serde::Serialize)]
    struct List<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        kind: &'static str,
        items: &'a [Object],
    }
    let result = match objects {
        [object] => serde_json::to_string_pretty(object),
        _ => serde_json::to_string_pretty(&List {
            api_version: "v1",
            kind: "List",
            items: objects,
        }),
    };
    result.map_err(|e| serialize_error(&e))
}

fn serialize_error(error: &dyn std::fmt::Display) -> ManifestError {
    ManifestError {
        document: None,
        problem: ManifestProblem::Serialize(error.to_string()),
    }
}
