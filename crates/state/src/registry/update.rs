//! Changing objects: update (spec and metadata; status kept), update of the status sub-resource,
//! merge-patch, server-side apply (create or update) and scale. Each write compares the revision
//! it read; read-modify-write operations retry on conflict up to [`RMW_ATTEMPTS_MAX`].

use serde_json::{json, Map, Value};

use super::keys::{self, KindInfo};
use super::object::{self, merge_patch, parse_resource_version, set_meta};
use super::{conflict, ApiError, Registry, Store, Stored, RMW_ATTEMPTS_MAX};

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// Metadata only the server sets; carried over from the stored object on every update.
const SYSTEM_META: [&str; 5] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
];

/// The object `update` would store: `new`'s spec and metadata, the stored system fields and
/// status, and a generation bumped when the spec changed.
fn merge_for_update(info: &KindInfo, current: &Value, new: &Value) -> Value {
    let mut merged = new.clone();
    for field in SYSTEM_META {
        match object::meta(current).and_then(|m| m.get(field)) {
            Some(value) => set_meta(&mut merged, field, value.clone()),
            None => object::remove_meta(&mut merged, field),
        }
    }
    if info.has_status {
        let root = merged.as_object_mut().expect("object");
        match current.get("status") {
            Some(status) => root.insert("status".into(), status.clone()),
            None => root.remove("status"),
        };
    }
    if info.has_spec && current.get("spec") != merged.get("spec") {
        set_meta(
            &mut merged,
            "generation",
            json!(object::generation(current) + 1),
        );
    }
    merged
}

/// `current` with the status of `obj` (none if `obj` has none), or `None` if that is the status
/// `current` already has.
fn with_status_of(current: &Value, obj: &Value) -> Option<Value> {
    let status = obj.get("status");
    if current.get("status") == status {
        return None;
    }
    let mut merged = current.clone();
    if let Some(root) = merged.as_object_mut() {
        match status {
            Some(status) => root.insert("status".into(), status.clone()),
            None => root.remove("status"),
        };
    }
    Some(merged)
}

/// What writing a status onto an object's current state did.
enum StatusWrite {
    /// Written: the object as stored, with its new resourceVersion.
    Landed(Value),
    /// The object already had that status; nothing was written.
    Unchanged,
    /// The object changed since it was read; nothing was written.
    Lost,
}

/// Whether two objects are the same apart from their resourceVersion. Compared in place, without
/// copies: it runs on every write of a whole pod or node.
fn same(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let empty = Map::new();
    fields_equal(a, b, "metadata")
        && match (a.get("metadata"), b.get("metadata")) {
            (None, None) => true,
            (Some(Value::Object(x)), None) | (None, Some(Value::Object(x))) => {
                fields_equal(x, &empty, "resourceVersion")
            }
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                fields_equal(x, y, "resourceVersion")
            }
            (x, y) => x == y,
        }
}

/// Whether two JSON objects have the same fields with equal values, leaving `skip` out.
fn fields_equal(a: &Map<String, Value>, b: &Map<String, Value>, skip: &str) -> bool {
    let others = |m: &Map<String, Value>| m.len() - usize::from(m.contains_key(skip));
    others(a) == others(b)
        && a.iter()
            .filter(|(k, _)| k.as_str() != skip)
            .all(|(k, v)| b.get(k) == Some(v))
}

impl<S: Store + Clone> Registry<S> {
    fn expect_version(info: &KindInfo, obj: &Value, current: &Stored) -> Result<(), ApiError> {
        let given = object::meta_str(obj, "resourceVersion");
        if given.is_empty() {
            return Ok(());
        }
        let given = parse_resource_version(given).map_err(ApiError::Invalid)?;
        if given != current.revision {
            return Err(conflict(info, object::name(obj)));
        }
        Ok(())
    }

    /// Replaces spec and metadata of an existing object; its status is kept. With a
    /// resourceVersion, fails with Conflict if the object changed since.
    pub async fn update(&self, info: &KindInfo, obj: Value) -> Result<Value, ApiError> {
        let (namespace, name) = (
            object::namespace(&obj).to_string(),
            object::name(&obj).to_string(),
        );
        let current = self.get(info, &namespace, &name, false).await?;
        Self::expect_version(info, &obj, &current)?;
        let merged = merge_for_update(info, &current.object, &obj);
        self.store_update(info, &current, merged).await
    }

    /// Writes `merged` over `current`, or finishes a deletion whose last finalizer was removed.
    async fn store_update(
        &self,
        info: &KindInfo,
        current: &Stored,
        merged: Value,
    ) -> Result<Value, ApiError> {
        let name = object::name(&merged).to_string();
        let key = keys::object_key(info, object::namespace(&merged), &name);
        if object::is_terminating(&merged)
            && object::finalizers(&merged).is_empty()
            && !self.awaits_agent(info, &merged)
        {
            return match self.delete_if_unchanged(key, current.revision).await? {
                Some(revision) => Ok(object::with_resource_version(merged, revision)),
                None => Err(conflict(info, &name)),
            };
        }
        match self
            .put_if_unchanged(key, current.revision, &merged)
            .await?
        {
            Some(revision) => Ok(object::with_resource_version(merged, revision)),
            None => Err(conflict(info, &name)),
        }
    }

    /// Replaces only the status of an existing object.
    ///
    /// Agents send one of these per pod change, so it first tries this peer's own copy, read
    /// without a read barrier (on a follower, a barrier is a round trip to the leader): the
    /// write is conditional on the revision it read, so it lands only if the object has not
    /// changed since — exactly as if the read had been linearizable. A stale copy that makes
    /// the write fail, look unnecessary or miss the caller's resourceVersion proves nothing, and
    /// the update is done again after a linearizable read.
    pub async fn update_status(&self, info: &KindInfo, obj: Value) -> Result<Value, ApiError> {
        let (namespace, name) = (
            object::namespace(&obj).to_string(),
            object::name(&obj).to_string(),
        );
        let key = keys::object_key(info, &namespace, &name);
        // A failed local read proves nothing either: the linearizable read reports the error.
        if let Ok(local) = self.get(info, &namespace, &name, true).await {
            if Self::expect_version(info, &obj, &local).is_ok() {
                if let StatusWrite::Landed(written) = self.put_status(&key, &obj, &local).await? {
                    return Ok(written);
                }
            }
        }
        let current = self.get(info, &namespace, &name, false).await?;
        Self::expect_version(info, &obj, &current)?;
        match self.put_status(&key, &obj, &current).await? {
            StatusWrite::Landed(written) => Ok(written),
            StatusWrite::Unchanged => Ok(current.object),
            StatusWrite::Lost => Err(conflict(info, &name)),
        }
    }

    /// Writes the status of `obj` onto `current`, conditional on `current`'s revision.
    async fn put_status(
        &self,
        key: &[u8],
        obj: &Value,
        current: &Stored,
    ) -> Result<StatusWrite, ApiError> {
        let Some(merged) = with_status_of(&current.object, obj) else {
            return Ok(StatusWrite::Unchanged);
        };
        Ok(
            match self
                .put_if_unchanged(key.to_vec(), current.revision, &merged)
                .await?
            {
                Some(revision) => {
                    StatusWrite::Landed(object::with_resource_version(merged, revision))
                }
                None => StatusWrite::Lost,
            },
        )
    }

    /// Applies a JSON merge patch to spec and metadata; `check` validates and defaults the
    /// patched object before it is written. Retries on conflict.
    pub async fn patch(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        patch: &Value,
        check: impl Fn(Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        self.read_modify_write(info, namespace, name, |current| {
            let mut patched = current.clone();
            merge_patch(&mut patched, patch);
            if object::name(&patched) != name
                || object::namespace(&patched) != object::namespace(current)
            {
                return Err(ApiError::Invalid(
                    "metadata.name: a patch cannot rename or move an object".into(),
                ));
            }
            check(patched)
        })
        .await
    }

    /// Sets `spec.replicas`.
    pub async fn scale(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        replicas: i32,
    ) -> Result<Value, ApiError> {
        if replicas < 0 {
            return Err(ApiError::Invalid(format!(
                "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            )));
        }
        self.read_modify_write(info, namespace, name, |current| {
            let mut scaled = current.clone();
            merge_patch(&mut scaled, &json!({"spec": {"replicas": replicas}}));
            Ok(scaled)
        })
        .await
    }

    async fn read_modify_write(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        change: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS_MAX {
            let current = self.get(info, namespace, name, false).await?;
            let changed = change(&current.object)?;
            let merged = merge_for_update(info, &current.object, &changed);
            if same(&merged, &current.object) {
                return Ok(current.object);
            }
            match self.store_update(info, &current, merged).await {
                Err(e @ ApiError::Conflict(_)) => last = Some(e),
                other => return other,
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Server-side apply of one object; see [`Registry::apply_all`].
    pub async fn apply(
        &self,
        info: &KindInfo,
        obj: Value,
    ) -> Result<(Value, ApplyAction), ApiError> {
        let mut applied = self.apply_all(vec![(*info, obj)]).await?;
        Ok(applied.remove(0))
    }

    /// Server-side apply: creates each object, or updates it from its manifest — top-level
    /// fields (spec, data, …) replaced, labels and annotations merged in, status and fields set
    /// by controllers kept. All objects are written in one transaction that compares every
    /// revision read, so the apply lands whole or not at all (up to [`APPLY_ATOMIC_MAX`]
    /// objects; larger applies are split into atomic chunks of that size).
    pub async fn apply_all(
        &self,
        objects: Vec<(KindInfo, Value)>,
    ) -> Result<Vec<(Value, ApplyAction)>, ApiError> {
        let mut out = Vec::with_capacity(objects.len());
        for chunk in objects.chunks(APPLY_ATOMIC_MAX) {
            out.extend(self.apply_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn apply_chunk(
        &self,
        objects: &[(KindInfo, Value)],
    ) -> Result<Vec<(Value, ApplyAction)>, ApiError> {
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS_MAX {
            let plan = self.plan_apply(objects).await?;
            if plan.iter().all(|p| p.action == ApplyAction::Unchanged) {
                return Ok(plan.into_iter().map(|p| (p.object, p.action)).collect());
            }
            match self.commit_apply(&plan).await? {
                Some(revision) => {
                    return Ok(plan
                        .into_iter()
                        .map(|p| match p.action {
                            ApplyAction::Unchanged => (p.object, p.action),
                            _ => (object::with_resource_version(p.object, revision), p.action),
                        })
                        .collect())
                }
                None => last = Some(conflict(&objects[0].0, object::name(&objects[0].1))),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Reads every object and decides what each needs.
    async fn plan_apply(
        &self,
        objects: &[(KindInfo, Value)],
    ) -> Result<Vec<PlannedApply>, ApiError> {
        let mut plan = Vec::with_capacity(objects.len());
        for (info, obj) in objects {
            let (namespace, name) = (object::namespace(obj), object::name(obj));
            let key = keys::object_key(info, namespace, name);
            let planned = match self.get_opt(info, namespace, name, false).await? {
                None => PlannedApply {
                    key,
                    namespace: info.namespaced.then(|| namespace.to_string()),
                    read_revision: 0,
                    object: super::create::prepare(info, obj.clone()),
                    action: ApplyAction::Created,
                },
                Some(current) => {
                    let desired = merge_for_update(
                        info,
                        &current.object,
                        &applied_onto(&current.object, obj),
                    );
                    let action = if same(&desired, &current.object) {
                        ApplyAction::Unchanged
                    } else {
                        ApplyAction::Configured
                    };
                    PlannedApply {
                        key,
                        namespace: None,
                        read_revision: current.revision,
                        object: if action == ApplyAction::Unchanged {
                            current.object
                        } else {
                            desired
                        },
                        action,
                    }
                }
            };
            plan.push(planned);
        }
        Ok(plan)
    }

    /// Writes the planned objects in one transaction; `None` if anything changed since read.
    async fn commit_apply(&self, plan: &[PlannedApply]) -> Result<Option<i64>, ApiError> {
        let created_namespaces: Vec<&str> = plan
            .iter()
            .filter(|p| {
                p.action == ApplyAction::Created && p.key.starts_with(b"/registry/namespaces/")
            })
            .map(|p| object::name(&p.object))
            .collect();
        let mut compares = Vec::new();
        let mut puts = Vec::new();
        for p in plan.iter().filter(|p| p.action != ApplyAction::Unchanged) {
            compares.push(match p.action {
                ApplyAction::Created => super::exists(&p.key, false),
                _ => super::mod_revision_is(&p.key, p.read_revision),
            });
            if let Some(ns) = &p.namespace {
                if !created_namespaces.contains(&ns.as_str()) {
                    compares.push(super::exists(&super::create::namespace_key(ns), true));
                }
            }
            puts.push(super::put(p.key.clone(), &p.object));
        }
        let (ok, _, revision) = self.txn(compares, puts, vec![]).await?;
        if ok {
            return Ok(Some(revision));
        }
        // Tell a missing namespace apart from a concurrent change.
        for p in plan {
            if let Some(ns) = &p.namespace {
                if !created_namespaces.contains(&ns.as_str())
                    && self
                        .get_opt(&NAMESPACE_INFO, "", ns, false)
                        .await?
                        .is_none()
                {
                    return Err(super::create::missing_namespace(ns.clone()));
                }
            }
        }
        Ok(None)
    }
}

/// Objects one atomic apply writes at most (the store's limit on operations per transaction).
pub const APPLY_ATOMIC_MAX: usize = flotilla_consensus::limits::MAX_TXN_OPS / 2;

const NAMESPACE_INFO: KindInfo = KindInfo {
    kind: "Namespace",
    api_version: "v1",
    plural: "namespaces",
    namespaced: false,
    has_status: true,
    has_spec: true,
};

/// What apply will do with one object.
struct PlannedApply {
    key: Vec<u8>,
    /// For an object being created in a namespace: that namespace, which must exist.
    namespace: Option<String>,
    read_revision: i64,
    object: Value,
    action: ApplyAction,
}

/// `manifest` laid over `current`: every top-level field but metadata and status comes from the
/// manifest; labels and annotations are merged key by key; other metadata is kept.
fn applied_onto(current: &Value, manifest: &Value) -> Value {
    let mut out = current.clone();
    let root = out.as_object_mut().expect("object");
    root.retain(|k, _| k == "metadata" || k == "status");
    for (k, v) in manifest.as_object().expect("object") {
        if k != "metadata" && k != "status" {
            root.insert(k.clone(), v.clone());
        }
    }
    for map in ["labels", "annotations"] {
        if let Some(given) = object::meta(manifest).and_then(|m| m.get(map)) {
            let mut merged = object::meta(current)
                .and_then(|m| m.get(map))
                .cloned()
                .unwrap_or_else(|| json!({}));
            merge_patch(&mut merged, given);
            set_meta(&mut out, map, merged);
        }
    }
    for field in ["ownerReferences", "finalizers"] {
        if let Some(given) = object::meta(manifest).and_then(|m| m.get(field)) {
            set_meta(&mut out, field, given.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{same, with_status_of};

    #[test]
    fn objects_are_the_same_when_only_their_resource_version_differs() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7",
            "labels": {"app": "x"}}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let mut later = pod.clone();
        later["metadata"]["resourceVersion"] = json!("9");
        assert!(same(&pod, &later));
        let mut unversioned = pod.clone();
        unversioned["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        assert!(same(&pod, &unversioned), "a missing resourceVersion");
        assert!(same(
            &json!({"kind": "Pod"}),
            &json!({"kind": "Pod", "metadata": {}})
        ));

        let changes = [
            ("/metadata/labels/app", json!("y")),
            ("/metadata/uid", json!("u")),
            ("/spec/nodeName", json!("n2")),
            ("/status/phase", json!("Failed")),
        ];
        for (path, value) in changes {
            let mut changed = pod.clone();
            match changed.pointer_mut(path) {
                Some(slot) => *slot = value,
                None => {
                    changed["metadata"]["uid"] = value;
                }
            }
            assert!(!same(&pod, &changed), "{path} changed");
            assert!(
                !same(&changed, &pod),
                "{path} changed, compared the other way"
            );
        }
        let mut extra = pod.clone();
        extra["data"] = json!({});
        assert!(!same(&pod, &extra) && !same(&extra, &pod), "an added field");
        let mut no_status = pod.clone();
        no_status.as_object_mut().unwrap().remove("status");
        assert!(!same(&pod, &no_status), "a removed status");
    }

    #[test]
    fn a_status_write_changes_only_the_status_and_only_when_it_differs() {
        let pod = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"},
            "status": {"phase": "Pending"}});
        let sent = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "other"},
            "status": {"phase": "Running"}});
        let merged = with_status_of(&pod, &sent).expect("a new status");
        assert_eq!(merged["status"], json!({"phase": "Running"}));
        assert_eq!(
            merged["spec"], pod["spec"],
            "the spec is not the caller's to change"
        );
        assert_eq!(with_status_of(&pod, &pod), None, "the same status");
        let cleared = with_status_of(&pod, &json!({"metadata": {"name": "a"}})).unwrap();
        assert_eq!(cleared.get("status"), None);
        assert_eq!(
            with_status_of(&cleared, &json!({})),
            None,
            "no status on either"
        );
    }
}
