//! Edits of stored JSON text that leave the object's parts untouched, so that a watch can pass
//! an object on without parsing it into a `Value` and writing it out again: set its
//! `metadata.resourceVersion`, or drop its `apiVersion` and `kind` for a typed decoder.
//!
//! At scale nearly every watch event is an object passed on unchanged apart from its
//! resourceVersion, and building a `Value` of it was the largest part of a watch's cost. The
//! scanner here only finds the top-level members; whoever reads the result parses it in full.
//! Anything it does not expect (not an object, a key written with escapes, a resourceVersion
//! already present) makes it answer `None`, and the caller takes the parsing path instead.

use std::ops::Range;

/// One top-level member of a JSON object: where it starts (its key's opening quote), its key
/// (between the quotes, as written) and its value.
struct Member {
    start: usize,
    key: Range<usize>,
    value: Range<usize>,
}

/// Most nesting the scanner follows (serde_json refuses deeper documents too).
const DEPTH_MAX: usize = 128;

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// `at` is at an opening quote; returns the index just past the closing one.
fn skip_string(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Skips the value starting at `at` (no leading whitespace); returns the index just past it.
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => skip_string(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        if depth > DEPTH_MAX {
                            return None;
                        }
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            // A number, true, false or null: up to the next delimiter.
            let end = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .map_or(bytes.len(), |n| at + n);
            (end > at).then_some(end)
        }
    }
}

/// The top-level members of the JSON object `bytes`, or `None` if it is not one.
fn members(bytes: &[u8]) -> Option<Vec<Member>> {
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(bytes, at + 1);
    let mut out = Vec::new();
    if bytes.get(at) == Some(&b'}') {
        return (skip_ws(bytes, at + 1) == bytes.len()).then_some(out);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(bytes, at)?;
        let key = at + 1..key_end - 1;
        let colon = skip_ws(bytes, key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, colon + 1);
        let value_end = skip_value(bytes, value_start)?;
        out.push(Member {
            start: at,
            key,
            value: value_start..value_end,
        });
        at = skip_ws(bytes, value_end);
        match bytes.get(at) {
            Some(b',') => at = skip_ws(bytes, at + 1),
            Some(b'}') => return (skip_ws(bytes, at + 1) == bytes.len()).then_some(out),
            _ => return None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `bytes` with `metadata.resourceVersion` set to `revision`; `None` if `bytes` is not an
/// object with a `metadata` object, or if the text already names a resourceVersion anywhere in
/// its metadata (stored objects have none; the caller then parses and sets it properly).
pub fn with_resource_version(bytes: &[u8], revision: i64) -> Option<Vec<u8>> {
    let members = members(bytes)?;
    let meta = members
        .iter()
        .find(|m| &bytes[m.key.clone()] == b"metadata")?;
    let value = &bytes[meta.value.clone()];
    if value.first() != Some(&b'{') || find(value, b"resourceVersion") {
        return None;
    }
    let open = meta.value.start + 1;
    let empty = bytes.get(skip_ws(bytes, open)) == Some(&b'}');
    let field = format!(
        "\"resourceVersion\":\"{revision}\"{}",
        if empty { "" } else { "," }
    );
    let mut out = Vec::with_capacity(bytes.len() + field.len());
    out.extend_from_slice(&bytes[..open]);
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&bytes[open..]);
    Some(out)
}

/// `bytes` without its top-level `apiVersion` and `kind` (a typed object carries those in its
/// type); `None` if `bytes` is not a JSON object.
pub fn without_type_fields(bytes: &[u8]) -> Option<Vec<u8>> {
    let members = members(bytes)?;
    let mut out = Vec::with_capacity(bytes.len());
    out.push(b'{');
    for m in members
        .iter()
        .filter(|m| !matches!(&bytes[m.key.clone()], b"apiVersion" | b"kind"))
    {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(&bytes[m.start..m.value.end]);
    }
    out.push(b'}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("the result is JSON")
    }

    #[test]
    fn the_resource_version_goes_into_metadata_and_nothing_else_changes() {
        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"x": "{\"metadata\":{}}"}},
            "spec": {"template": {"metadata": {"name": "inner"}}, "n": [1, 2.5, null, true]},
        });
        let text = serde_json::to_vec(&object).unwrap();
        let mut expected = object.clone();
        expected["metadata"]["resourceVersion"] = json!("42");
        assert_eq!(parsed(&with_resource_version(&text, 42).unwrap()), expected);

        // Pretty-printed, and with an empty metadata.
        let pretty = serde_json::to_vec_pretty(&json!({"metadata": {}, "b": "}"})).unwrap();
        assert_eq!(
            parsed(&with_resource_version(&pretty, 7).unwrap()),
            json!({"metadata": {"resourceVersion": "7"}, "b": "}"})
        );
    }

    #[test]
    fn anything_unexpected_is_left_to_the_parsing_path() {
        let cases: [&[u8]; 8] = [
            b"",
            b"[1]",
            b"{\"metadata\": 1}",
            b"{\"spec\": {}}",
            b"{\"metadata\": {\"resourceVersion\": \"3\"}}",
            b"{\"metadata\": {\"name\": \"a\"}",
            b"{\"metadata\": {\"name\": \"a\"}} trailing",
            b"{\"metadata\": {\"name\": \"unterminated}}",
        ];
        for case in cases {
            assert_eq!(
                with_resource_version(case, 1),
                None,
                "{}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(without_type_fields(b"{\"a\": 1"), None);
        assert_eq!(without_type_fields(b"\"text\""), None);
    }

    #[test]
    fn type_fields_are_dropped_at_the_top_level_only() {
        let object = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "a", "ownerReferences": [{"kind": "Deployment", "apiVersion": "apps/v1"}]},
            "spec": {"replicas": 3},
        });
        let text = serde_json::to_vec_pretty(&object).unwrap();
        let mut expected = object.clone();
        let map = expected.as_object_mut().unwrap();
        map.remove("apiVersion");
        map.remove("kind");
        assert_eq!(parsed(&without_type_fields(&text).unwrap()), expected);
        assert_eq!(
            parsed(&without_type_fields(b"{\"kind\": \"Pod\"}").unwrap()),
            json!({})
        );
    }

    /// Documents of every shape serde_json writes agree with the parsing path.
    #[test]
    fn agrees_with_parsing_on_generated_documents() {
        for i in 0..200u32 {
            let nested = json!({"k\"ey": format!("v\\{i}\"}}"), "list": [i, {"metadata": {}}]});
            let mut object = json!({
                "kind": "Thing",
                "metadata": {"name": format!("n{i}"), "annotations": {"a": nested.to_string()}},
                "data": nested,
                "z": i % 3 == 0,
            });
            if i % 2 == 0 {
                object["apiVersion"] = json!("v1");
            }
            let text = serde_json::to_vec(&object).unwrap();
            let mut expected = object.clone();
            expected["metadata"]["resourceVersion"] = json!(i.to_string());
            let with_rv = with_resource_version(&text, i64::from(i)).unwrap();
            assert_eq!(parsed(&with_rv), expected);
            let map = expected.as_object_mut().unwrap();
            map.remove("apiVersion");
            map.remove("kind");
            assert_eq!(parsed(&without_type_fields(&with_rv).unwrap()), expected);
        }
    }
}
