//! Reading and writing the generic parts of a stored object (a JSON document in Kubernetes
//! shape): metadata fields, spec/status split, labels.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// An object's identity and version, read from its JSON text without building the rest (the
/// other fields are skipped, not parsed into values).
#[derive(Debug, Default, serde::Deserialize)]
pub struct MetaText {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "resourceVersion")]
    pub resource_version: String,
}

impl MetaText {
    /// The `metadata` of the object `text`.
    pub fn read(text: &[u8]) -> Result<MetaText, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Outer {
            metadata: MetaText,
        }
        Ok(serde_json::from_slice::<Outer>(text)?.metadata)
    }
}

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.as_object()
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let root = obj.as_object_mut().expect("objects are JSON objects");
    root.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

pub fn namespace(obj: &Value) -> &str {
    meta_str(obj, "namespace")
}

pub fn uid(obj: &Value) -> &str {
    meta_str(obj, "uid")
}

pub fn generation(obj: &Value) -> i64 {
    meta(obj)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

pub fn set_meta(obj: &mut Value, field: &str, value: Value) {
    meta_mut(obj).insert(field.to_string(), value);
}

pub fn remove_meta(obj: &mut Value, field: &str) {
    meta_mut(obj).remove(field);
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_terminating(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null()))
}

/// The uids this object names as owners.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the owner references to `owner_uid`; returns whether any was removed.
pub fn drop_owner(obj: &mut Value, owner_uid: &str) -> bool {
    let Some(refs) = meta_mut(obj)
        .get_mut("ownerReferences")
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = refs.len();
    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
    let removed = refs.len() != before;
    if refs.is_empty() {
        meta_mut(obj).remove("ownerReferences");
    }
    removed
}

pub fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.get(name)
}

/// Looks up a dotted path (`spec.nodeName`) as a string; absent and null read as "".
pub fn path_str(obj: &Value, path: &str) -> String {
    let mut at = obj;
    for part in path.split('.') {
        match at.get(part) {
            Some(next) => at = next,
            None => return String::new(),
        }
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Sets `metadata.resourceVersion` as the API reports it: the key's mod revision.
pub fn with_resource_version(mut obj: Value, revision: i64) -> Value {
    set_meta(
        &mut obj,
        "resourceVersion",
        Value::String(revision.to_string()),
    );
    obj
}

/// Parses a resourceVersion given by a client.
pub fn parse_resource_version(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| format!("metadata.resourceVersion: {text:?} is not a resource version"))
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let target_map = target.as_object_mut().expect("made an object above");
            for (key, value) in patch_map {
                if value.is_null() {
                    target_map.remove(key);
                } else {
                    merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_text_reads_identity_and_version_and_defaults_what_is_missing() {
        let text = br#"{"kind":"Pod","metadata":{"name":"a","namespace":"ns","resourceVersion":"7","labels":{"x":"y"}},"spec":{"n":[1,2]}}"#;
        let meta = MetaText::read(text).unwrap();
        assert_eq!(
            (
                meta.namespace.as_str(),
                meta.name.as_str(),
                meta.resource_version.as_str()
            ),
            ("ns", "a", "7")
        );
        let bare = MetaText::read(br#"{"metadata":{"name":"node-1"}}"#).unwrap();
        assert_eq!(
            (bare.namespace.as_str(), bare.resource_version.as_str()),
            ("", "")
        );
        assert!(MetaText::read(br#"{"spec":{}}"#).is_err(), "no metadata");
    }
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [1]}),
                json!({"a": [2, 3]}),
                json!({"a": [2, 3]}),
            ),
            (json!(["a"]), json!({"a": "b"}), json!({"a": "b"})),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected, "patch {patch}");
        }
    }

    #[test]
    fn owner_refs_and_paths() {
        let mut pod = json!({"metadata": {"ownerReferences": [{"uid": "u1"}, {"uid": "u2"}]}, "spec": {"nodeName": "n1"}});
        assert_eq!(owner_uids(&pod), vec!["u1", "u2"]);
        assert!(drop_owner(&mut pod, "u1"));
        assert!(!drop_owner(&mut pod, "u1"));
        assert_eq!(owner_uids(&pod), vec!["u2"]);
        assert_eq!(path_str(&pod, "spec.nodeName"), "n1");
        assert_eq!(path_str(&pod, "status.phase"), "");
    }
}
