//! The object registry: Kubernetes-shaped objects (JSON documents) on the consensus KV.
//!
//! resourceVersion is the key's mod revision; create, update, update-status, merge-patch,
//! server-side apply, graceful and cascading delete, paginated list at one revision and watch
//! from a revision. Every write is a transaction that compares the revision it read, so
//! concurrent writers never lose each other's updates (optimistic concurrency).
//!
//! The registry is generic over object kinds ([`KindInfo`]) and handles objects that were already
//! parsed, validated and defaulted by the caller. Leader-only loops use [`Registry::fenced`] so
//! their writes fail once a newer leader has written anything.

mod create;
mod delete;
mod error;
pub mod keys;
mod list;
pub mod object;
pub(crate) mod raw;
pub mod sparse;
mod store;
mod update;
mod watch;

use flotilla_consensus::types::{
    Compare, CompareOp, CompareTarget, DeleteOp, KeyRange, OpResult, PutOp, RangeOp, Rejection,
    Txn, TxnOp, WriteOutcome,
};
use flotilla_consensus::{RangeQuery, WriteOp, WriteRequest};
use serde::Serialize;
use serde_json::Value;

use crate::objects::{typed_json, Resource};

pub use create::{generated_name, GENERATE_NAME_ATTEMPTS};
pub use delete::{DeleteOptions, Propagation};
pub use error::ApiError;
pub use keys::{KindInfo, Scope};
pub use list::{ListOptions, ListPage};
pub use store::Store;
pub use update::ApplyAction;
pub use watch::{EventType, ObjectEvent, ObjectWatch, WatchFilter};

/// Attempts of a read-modify-write (patch, apply, scale) that keeps meeting conflicts.
pub const RMW_ATTEMPTS_MAX: u32 = 8;
/// Most dependents one cascading delete removes; the rest are left to garbage collection.
pub const CASCADE_MAX_OBJECTS: usize = 10_000;

/// An object as stored, and the revision it was last modified at.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub object: Value,
    pub revision: i64,
}

/// A write ready for the store: an object's key, the JSON it is stored as (no resourceVersion)
/// and the revision the key must still be at for the write to land (0: it must not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedWrite {
    pub key: Vec<u8>,
    pub json: Vec<u8>,
    pub revision: i64,
}

impl PreparedWrite {
    /// `object` as a JSON document, written only if its key is still at `revision`.
    pub fn of_value(info: &KindInfo, object: &Value, revision: i64) -> Self {
        PreparedWrite {
            key: keys::object_key(info, object::namespace(object), object::name(object)),
            json: stored_bytes(object),
            revision,
        }
    }

    /// A typed object, serialised straight into the JSON it is stored as, without building a
    /// JSON tree first: the leader's loops write every pod this way, twice. Its resourceVersion
    /// is left out, as in every stored object.
    pub fn of_typed<R: Resource + Serialize>(
        info: &KindInfo,
        mut object: R,
        revision: i64,
    ) -> Result<Self, ApiError> {
        object.metadata_mut().resource_version.clear();
        let json = typed_json(&object).map_err(|e| ApiError::Internal(e.to_string()))?;
        let meta = object.metadata();
        Ok(PreparedWrite {
            key: keys::object_key(info, &meta.namespace, &meta.name),
            json,
            revision,
        })
    }
}

/// A filter over objects (label and field selectors), built by the caller.
pub type Filter<'a> = &'a (dyn Fn(&Value) -> bool + Send + Sync);

#[derive(Clone)]
pub struct Registry<S: Store> {
    store: S,
    kinds: &'static [KindInfo],
    fence_term: Option<u64>,
}

impl<S: Store + Clone> Registry<S> {
    /// `kinds` lists every kind, so that deletes can find dependents of any kind.
    pub fn new(store: S, kinds: &'static [KindInfo]) -> Self {
        Registry {
            store,
            kinds,
            fence_term: None,
        }
    }

    /// A registry whose writes are refused once any entry of a term after `term` was applied.
    pub fn fenced(&self, term: u64) -> Self {
        Registry {
            store: self.store.clone(),
            kinds: self.kinds,
            fence_term: Some(term),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn kinds(&self) -> &'static [KindInfo] {
        self.kinds
    }

    /// Reads one object; linearizable unless `stale`.
    pub async fn get(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        stale: bool,
    ) -> Result<Stored, ApiError> {
        self.get_opt(info, namespace, name, stale)
            .await?
            .ok_or_else(|| ApiError::not_found(info.kind, name))
    }

    pub async fn get_opt(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        stale: bool,
    ) -> Result<Option<Stored>, ApiError> {
        let key = keys::object_key(info, namespace, name);
        let (result, _) = self
            .store
            .range(RangeQuery::new(KeyRange::key(key)), stale)
            .await?;
        match result.kvs.into_iter().next() {
            None => Ok(None),
            Some(kv) => {
                let object: Value = serde_json::from_slice(&kv.value)?;
                Ok(Some(Stored {
                    object: object::with_resource_version(object, kv.mod_revision),
                    revision: kv.mod_revision,
                }))
            }
        }
    }

    /// Runs one transaction; returns whether the compares held, the op results and the revision.
    async fn txn(
        &self,
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    ) -> Result<(bool, Vec<OpResult>, i64), ApiError> {
        let mut request = WriteRequest::txn(Txn {
            compares,
            success,
            failure,
        });
        request.fence_term = self.fence_term;
        let response = self.store.write(request).await?;
        match response.outcome {
            WriteOutcome::Txn { succeeded, results } => Ok((succeeded, results, response.revision)),
            WriteOutcome::Rejected(Rejection::Fenced { .. }) => Err(ApiError::Fenced(
                "this peer's leadership term has ended; the write was refused".into(),
            )),
            WriteOutcome::Rejected(rejection) => Err(ApiError::Invalid(rejection.to_string())),
            other => Err(ApiError::Internal(format!(
                "unexpected store outcome {other:?}"
            ))),
        }
    }

    /// Writes many objects as one log entry, each only if its key is still at the revision it
    /// was read at. Returns, per object, whether it was written.
    pub async fn put_many_if_unchanged(
        &self,
        writes: Vec<PreparedWrite>,
    ) -> Result<Vec<bool>, ApiError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let txns = writes
            .into_iter()
            .map(|w| Txn {
                compares: vec![mod_revision_is(&w.key, w.revision)],
                success: vec![put_json(w.key, w.json)],
                failure: vec![],
            })
            .collect();
        let mut request = WriteRequest::new(WriteOp::Batch(txns));
        request.fence_term = self.fence_term;
        let response = self.store.write(request).await?;
        match response.outcome {
            WriteOutcome::Batch(outcomes) => Ok(outcomes.into_iter().map(|(ok, _)| ok).collect()),
            WriteOutcome::Rejected(Rejection::Fenced { .. }) => Err(ApiError::Fenced(
                "this peer's leadership term has ended; the write was refused".into(),
            )),
            WriteOutcome::Rejected(rejection) => Err(ApiError::Invalid(rejection.to_string())),
            other => Err(ApiError::Internal(format!(
                "unexpected store outcome {other:?}"
            ))),
        }
    }

    /// The term this registry's writes are fenced to, if any.
    pub fn fence_term(&self) -> Option<u64> {
        self.fence_term
    }

    /// Replaces the object at `key` if it is still at `revision`; returns the new revision.
    async fn put_if_unchanged(
        &self,
        key: Vec<u8>,
        revision: i64,
        object: &Value,
    ) -> Result<Option<i64>, ApiError> {
        let (ok, _, new_revision) = self
            .txn(
                vec![mod_revision_is(&key, revision)],
                vec![put(key, object)],
                vec![],
            )
            .await?;
        Ok(ok.then_some(new_revision))
    }

    /// Deletes the object at `key` if it is still at `revision`.
    async fn delete_if_unchanged(
        &self,
        key: Vec<u8>,
        revision: i64,
    ) -> Result<Option<i64>, ApiError> {
        let (ok, _, new_revision) = self
            .txn(
                vec![mod_revision_is(&key, revision)],
                vec![TxnOp::Delete(DeleteOp {
                    range: KeyRange::key(key),
                    prev_kv: false,
                })],
                vec![],
            )
            .await?;
        Ok(ok.then_some(new_revision))
    }
}

fn mod_revision_is(key: &[u8], revision: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        op: CompareOp::Equal,
        target: CompareTarget::ModRevision(revision),
    }
}

fn exists(key: &[u8], expected: bool) -> Compare {
    Compare {
        key: key.to_vec(),
        op: CompareOp::Equal,
        target: CompareTarget::Exists(expected),
    }
}

/// The stored form of an object: without its resourceVersion, which the key's revision gives.
/// Written out with that one field left out, rather than from a copy without it: copying every
/// object a leader round writes was a tenth of the round.
fn stored_bytes(object: &Value) -> Vec<u8> {
    serde_json::to_vec(&WithoutResourceVersion(object)).expect("JSON values serialise")
}

/// Serialises an object as it is, except for `metadata.resourceVersion`.
struct WithoutResourceVersion<'a>(&'a Value);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(root) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(root.len()))?;
        for (key, value) in root {
            match value {
                Value::Object(meta) if key == "metadata" => {
                    out.serialize_entry(key, &MetadataWithoutVersion(meta))?
                }
                other => out.serialize_entry(key, other)?,
            }
        }
        out.end()
    }
}

/// Metadata without its resourceVersion.
struct MetadataWithoutVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for MetadataWithoutVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self.0.iter().filter(|(k, _)| *k != "resourceVersion");
        let mut out = serializer.serialize_map(Some(kept.clone().count()))?;
        for (key, value) in kept {
            out.serialize_entry(key, value)?;
        }
        out.end()
    }
}

fn put(key: Vec<u8>, object: &Value) -> TxnOp {
    put_json(key, stored_bytes(object))
}

/// A put of JSON already in its stored form.
fn put_json(key: Vec<u8>, json: Vec<u8>) -> TxnOp {
    TxnOp::Put(PutOp {
        key,
        value: json,
        prev_kv: false,
    })
}

fn read(key: Vec<u8>) -> TxnOp {
    TxnOp::Range(RangeOp {
        range: KeyRange::key(key),
        limit: 1,
        keys_only: true,
        count_only: false,
    })
}

fn conflict(info: &KindInfo, name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
        info.plural
    ))
}

/// Now, as Kubernetes writes timestamps.
pub fn now() -> Value {
    Value::String(now_time().to_string())
}

/// The current time to the second, as objects' timestamps carry it.
pub fn now_time() -> crate::objects::Time {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::objects::Time::from_unix_millis(ms - ms % 1000)
}

/// A fresh object uid (random, UUID v4 layout).
pub fn new_uid() -> String {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What the stored form used to be computed as: a copy without the field, written out.
    fn copied_without_version(object: &Value) -> Vec<u8> {
        let mut stored = object.clone();
        if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        serde_json::to_vec(&stored).unwrap()
    }

    #[test]
    fn the_stored_form_leaves_out_only_the_resource_version() {
        let objects = [
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "resourceVersion": "12", "labels": {"resourceVersion": "x"}},
                "spec": {"resourceVersion": "kept", "n": [1, {"metadata": {"resourceVersion": "3"}}]}}),
            json!({"metadata": {"resourceVersion": "1"}}),
            json!({"metadata": {}, "status": null}),
            json!({"metadata": "not an object", "resourceVersion": "top"}),
            json!("text"),
            json!({}),
        ];
        for object in &objects {
            assert_eq!(
                stored_bytes(object),
                copied_without_version(object),
                "{object}"
            );
        }
        let stored: Value = serde_json::from_slice(&stored_bytes(&objects[0])).unwrap();
        assert!(stored["metadata"].get("resourceVersion").is_none());
        assert_eq!(stored["metadata"]["labels"]["resourceVersion"], "x");
    }

    #[test]
    fn a_typed_write_stores_what_the_same_object_as_json_would() {
        let pod: crate::objects::Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                "resourceVersion": "41", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
            "status": {"phase": "Running", "podIP": "198.18.0.9"}
        }))
        .unwrap();
        let info = crate::service::kind_info(crate::Kind::Pod);
        let typed = PreparedWrite::of_typed(info, pod.clone(), 41).unwrap();

        let mut as_json = serde_json::to_value(&pod).unwrap();
        as_json["apiVersion"] = json!("v1");
        as_json["kind"] = json!("Pod");
        let from_json = PreparedWrite::of_value(info, &as_json, 41);
        assert_eq!(typed.key, from_json.key);
        assert_eq!(typed.key, keys::object_key(info, "shop", "web-1"));
        assert_eq!(typed.revision, 41);
        let stored: Value = serde_json::from_slice(&typed.json).unwrap();
        assert_eq!(
            stored,
            serde_json::from_slice::<Value>(&from_json.json).unwrap()
        );
        assert_eq!(stored["kind"], "Pod");
        assert!(stored["metadata"].get("resourceVersion").is_none());
        assert_eq!(stored["status"]["podIP"], "198.18.0.9");
    }
}
