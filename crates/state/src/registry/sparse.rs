//! Reading a few fields of a stored object without building the rest of it.
//!
//! A selector looks at a handful of fields (`spec.nodeName`, `metadata.labels`), but parsing the
//! whole object into a `Value` allocates a map entry and a string for every field of it. A
//! watch with a selector tests each changed object twice (before and after the change): with
//! 5 000 hollow nodes watching bound pods, those parses were an eighth of the serving peer's CPU.
//! [`Paths::decode`] keeps only the named paths; every other value is skipped as the JSON is
//! read, without being built.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Value};

/// A set of dotted JSON paths (`metadata.labels`, `spec.nodeName`) to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    root: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// The whole value here is kept (a path ends here).
    whole: bool,
    children: BTreeMap<String, Node>,
}

impl Paths {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Paths {
        let mut root = Node::default();
        for path in paths {
            let mut node = &mut root;
            for part in path.split('.') {
                if node.whole {
                    break;
                }
                node = node.children.entry(part.to_string()).or_default();
            }
            // A shorter path keeps everything below it.
            node.whole = true;
            node.children.clear();
        }
        Paths { root }
    }

    /// The object in `json` with only these paths: every path reads in the result as it reads
    /// in the whole object (an object along the way that lacks the path lacks it here too).
    pub fn decode(&self, json: &[u8]) -> Result<Value, serde_json::Error> {
        let mut reader = serde_json::Deserializer::from_slice(json);
        let value = Kept(&self.root).deserialize(&mut reader)?;
        reader.end()?;
        Ok(value)
    }
}

/// Deserializes the value at one node of the path tree.
struct Kept<'p>(&'p Node);

impl<'de> DeserializeSeed<'de> for Kept<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.whole {
            return serde::Deserialize::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Kept<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(found) = map.next_key_seed(Key(self.0))? {
            match found {
                Some((name, node)) => {
                    let value = map.next_value_seed(Kept(node))?;
                    kept.insert(name.clone(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    // A path goes on only through objects; any other value along it has none of the path's
    // fields, as `Null` has none.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Reads a map key and finds it among a node's children, without allocating for the keys that
/// are not kept.
struct Key<'p>(&'p Node);

impl<'de, 'p> DeserializeSeed<'de> for Key<'p> {
    type Value = Option<(&'p String, &'p Node)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'p> Visitor<'de> for Key<'p> {
    type Value = Option<(&'p String, &'p Node)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.children.get_key_value(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::object::{labels, path_str};
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "labels": {"app": "web", "tier": "front"},
                "ownerReferences": [{"uid": "u-1", "kind": "ReplicaSet"}],
                "annotations": {"note": "say \"hi\" \u{e9}"}
            },
            "spec": {
                "nodeName": "node-7",
                "unschedulable": true,
                "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}],
                "terminationGracePeriodSeconds": 30
            },
            "status": {"phase": "Running", "podIP": "198.18.0.9", "conditions": [{"type": "Ready"}]}
        })
    }

    const PATHS: [&str; 8] = [
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.unschedulable",
        "spec.missing",
        "status.phase",
        "status.conditions.type",
        "source.component",
    ];

    #[test]
    fn kept_paths_read_as_in_the_whole_object_and_nothing_else_is_built() {
        let whole = pod();
        let text = serde_json::to_vec(&whole).unwrap();
        let mut wanted = PATHS.to_vec();
        wanted.push("metadata.labels");
        let sparse = Paths::new(wanted).decode(&text).unwrap();
        for path in PATHS {
            assert_eq!(path_str(&sparse, path), path_str(&whole, path), "{path}");
        }
        assert_eq!(labels(&sparse), labels(&whole));
        assert!(sparse["spec"].get("containers").is_none());
        assert!(sparse["metadata"].get("annotations").is_none());
        assert!(sparse.get("apiVersion").is_none());
    }

    #[test]
    fn a_path_through_a_value_that_is_not_an_object_reads_as_missing() {
        let cases = [
            json!({"spec": "text"}),
            json!({"spec": null}),
            json!({"spec": [1, {"nodeName": "x"}]}),
            json!({"spec": 3}),
            json!({"spec": true}),
            json!({}),
            json!({"spec": {"nodeName": null}}),
            json!({"spec": {"nodeName": {"deep": 1}}}),
        ];
        let paths = Paths::new(["spec.nodeName"]);
        for whole in cases {
            let sparse = paths.decode(&serde_json::to_vec(&whole).unwrap()).unwrap();
            assert_eq!(
                path_str(&sparse, "spec.nodeName"),
                path_str(&whole, "spec.nodeName"),
                "{whole}"
            );
        }
    }

    #[test]
    fn a_shorter_path_keeps_everything_under_it() {
        let whole = pod();
        let text = serde_json::to_vec(&whole).unwrap();
        for paths in [
            Paths::new(["metadata", "metadata.name"]),
            Paths::new(["metadata.name", "metadata"]),
        ] {
            assert_eq!(paths.decode(&text).unwrap()["metadata"], whole["metadata"]);
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        let paths = Paths::new(["spec.nodeName"]);
        for bad in [
            &b"{\"spec\": {"[..],
            b"{\"a\": 1} trailing",
            b"",
            b"{\"a\" 1}",
        ] {
            assert!(
                paths.decode(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
