//! Creating objects: system fields filled in, name generated from `generateName`, and the put
//! made conditional on the key being absent and the namespace existing.

use serde_json::{json, Value};

use super::keys::{self, KindInfo};
use super::object::{self, remove_meta, set_meta};
use super::{exists, new_uid, now, put, read, ApiError, Registry, Store};

/// Names tried for one `generateName` before giving up.
pub const GENERATE_NAME_ATTEMPTS: u32 = 5;
/// Characters a generated name adds to `generateName` (27^5, about 14 million, choices).
const GENERATED_SUFFIX_LEN: usize = 5;

/// The `Namespace` kind's key, to check that a namespace exists.
pub(super) fn namespace_key(namespace: &str) -> Vec<u8> {
    format!("{}namespaces/{namespace}", keys::ROOT).into_bytes()
}

/// A name generated from `generate_name`: it followed by a random suffix in Kubernetes'
/// alphabet, without vowels (no words).
pub fn generated_name(generate_name: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix = (0..GENERATED_SUFFIX_LEN)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char);
    generate_name.chars().chain(suffix).collect()
}

/// Fills the fields the server owns on a new object.
pub(super) fn prepare(info: &KindInfo, mut obj: Value) -> Value {
    set_meta(&mut obj, "uid", Value::String(new_uid()));
    set_meta(&mut obj, "creationTimestamp", now());
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        remove_meta(&mut obj, field);
    }
    if info.has_spec {
        set_meta(&mut obj, "generation", json!(1));
    } else {
        remove_meta(&mut obj, "generation");
    }
    let root = obj.as_object_mut().expect("object");
    match info.kind {
        // Status written by controllers and agents starts empty.
        "Pod" => {
            root.insert("status".into(), json!({"phase": "Pending"}));
        }
        "Namespace" => {
            root.insert("status".into(), json!({"phase": "Active"}));
        }
        "Deployment" | "ReplicaSet" | "HorizontalPodAutoscaler" => {
            root.remove("status");
        }
        _ => {}
    }
    obj
}

impl<S: Store + Clone> Registry<S> {
    /// Creates `obj` (already validated and defaulted). Fails with AlreadyExists, or NotFound
    /// when its namespace does not exist.
    pub async fn create(&self, info: &KindInfo, obj: Value) -> Result<Value, ApiError> {
        let generate = object::name(&obj).is_empty();
        let attempts = if generate { GENERATE_NAME_ATTEMPTS } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let mut candidate = obj.clone();
            if generate {
                let base = object::meta_str(&obj, "generateName");
                if base.is_empty() {
                    return Err(ApiError::Invalid(
                        "metadata.name: Required value: name or generateName is required".into(),
                    ));
                }
                set_meta(&mut candidate, "name", Value::String(generated_name(base)));
            }
            match self.create_named(info, prepare(info, candidate)).await {
                Err(e @ ApiError::AlreadyExists { .. }) if generate => last = Some(e),
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn create_named(&self, info: &KindInfo, obj: Value) -> Result<Value, ApiError> {
        let name = object::name(&obj).to_string();
        let namespace = object::namespace(&obj).to_string();
        if info.namespaced && namespace.is_empty() {
            return Err(ApiError::Invalid(
                "metadata.namespace: Required value".into(),
            ));
        }
        let key = keys::object_key(info, &namespace, &name);
        let mut compares = vec![exists(&key, false)];
        let mut failure = vec![read(key.clone())];
        if info.namespaced {
            compares.push(exists(&namespace_key(&namespace), true));
            failure.push(read(namespace_key(&namespace)));
        }
        let (created, results, revision) =
            self.txn(compares, vec![put(key, &obj)], failure).await?;
        if created {
            return Ok(object::with_resource_version(obj, revision));
        }
        let found = |i: usize| match results.get(i) {
            Some(flotilla_consensus::OpResult::Range(r)) => !r.kvs.is_empty(),
            _ => false,
        };
        if found(0) {
            Err(ApiError::AlreadyExists {
                kind: info.kind.to_string(),
                name,
            })
        } else {
            Err(missing_namespace(namespace))
        }
    }
}

/// The error for a write into a namespace that does not exist. `default` always exists once
/// the first leader has created it, moments after the cluster first starts; until then the
/// write is refused as retryable rather than NotFound.
pub(super) fn missing_namespace(namespace: String) -> ApiError {
    if namespace == crate::defaults::DEFAULT_NAMESPACE {
        return ApiError::Unavailable(
            "the default namespace is not created yet (the cluster is starting); retry".into(),
        );
    }
    ApiError::NotFound {
        kind: "Namespace".into(),
        name: namespace,
    }
}
