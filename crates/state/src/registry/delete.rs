//! Deleting objects: graceful deletion of pods on nodes (the agent finishes it), finalizers,
//! and cascading to dependents by ownerReferences (or orphaning them).

use serde_json::{json, Value};

use super::keys::{self, KindInfo, Scope};
use super::list::ListOptions;
use super::object::{self, set_meta};
use super::{
    conflict, now, ApiError, Registry, Store, Stored, WatchFilter, CASCADE_MAX_OBJECTS,
    RMW_ATTEMPTS_MAX,
};

/// Default seconds a pod gets to stop when its spec names none.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// Levels of ownership a cascade follows (Deployment → ReplicaSet → Pod needs two).
const CASCADE_DEPTH_MAX: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Dependents are deleted too.
    #[default]
    Background,
    /// Dependents are kept, with their owner reference removed.
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Seconds a pod gets to stop; `Some(0)` deletes at once.
    pub grace_period_seconds: Option<i64>,
    pub propagation: Propagation,
    /// Only delete if the object is still at this revision.
    pub resource_version: Option<i64>,
}

impl<S: Store + Clone> Registry<S> {
    /// A terminating pod bound to a node stays until its agent confirms its containers stopped.
    pub(super) fn awaits_agent(&self, info: &KindInfo, obj: &Value) -> bool {
        info.kind == "Pod" && !object::path_str(obj, "spec.nodeName").is_empty()
    }

    /// Deletes an object (and, with background propagation, its dependents). Returns the object
    /// as it was deleted, or as it now stands when deletion waits (grace period, finalizers).
    pub async fn delete(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        self.delete_at_depth(info, namespace, name, options, 0)
            .await
    }

    async fn delete_at_depth(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
        depth: u32,
    ) -> Result<Value, ApiError> {
        if info.kind == "Namespace" && name == "default" {
            return Err(ApiError::Invalid(
                "the default namespace cannot be deleted".into(),
            ));
        }
        let mut last = None;
        for _ in 0..RMW_ATTEMPTS_MAX {
            let current = self.get(info, namespace, name, false).await?;
            if let Some(expected) = options.resource_version {
                if expected != current.revision {
                    return Err(conflict(info, name));
                }
            }
            match self.delete_once(info, &current, options).await {
                Err(e @ ApiError::Conflict(_)) if options.resource_version.is_none() => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
                Ok((deleted, gone)) => {
                    if gone || info.kind == "Namespace" {
                        self.handle_dependents(info, &current.object, options, depth)
                            .await?;
                    }
                    return Ok(deleted);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// One attempt; returns the object and whether it is gone from the store.
    async fn delete_once(
        &self,
        info: &KindInfo,
        current: &Stored,
        options: &DeleteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let obj = &current.object;
        let key = keys::object_key(info, object::namespace(obj), object::name(obj));
        let grace = self.grace_seconds(info, obj, options);
        let waits = grace > 0 || !object::finalizers(obj).is_empty() || info.kind == "Namespace";
        if !waits {
            return match self.delete_if_unchanged(key, current.revision).await? {
                Some(revision) => Ok((object::with_resource_version(obj.clone(), revision), true)),
                None => Err(conflict(info, object::name(obj))),
            };
        }
        let mut marked = obj.clone();
        if !object::is_terminating(obj) {
            set_meta(&mut marked, "deletionTimestamp", now());
        }
        if info.kind == "Pod" {
            set_meta(&mut marked, "deletionGracePeriodSeconds", json!(grace));
        }
        if &marked == obj {
            return Ok((obj.clone(), false));
        }
        match self
            .put_if_unchanged(key, current.revision, &marked)
            .await?
        {
            Some(revision) => Ok((object::with_resource_version(marked, revision), false)),
            None => Err(conflict(info, object::name(obj))),
        }
    }

    /// Grace period of a pod on a node: the request's, else the one already granted, else the
    /// pod's `terminationGracePeriodSeconds`. Other objects have none.
    fn grace_seconds(&self, info: &KindInfo, obj: &Value, options: &DeleteOptions) -> i64 {
        if !self.awaits_agent(info, obj) {
            return 0;
        }
        let granted = object::meta(obj)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64);
        let from_spec = obj
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64);
        let grace = options
            .grace_period_seconds
            .or(granted)
            .or(from_spec)
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            .max(0);
        // A deletion already under way can be shortened, never lengthened.
        granted.map_or(grace, |g| grace.min(g))
    }

    /// Deletes (or orphans) what `owner` owns; for a namespace, everything in it.
    async fn handle_dependents(
        &self,
        info: &KindInfo,
        owner: &Value,
        options: &DeleteOptions,
        depth: u32,
    ) -> Result<(), ApiError> {
        if depth >= CASCADE_DEPTH_MAX {
            return Ok(());
        }
        let owner_uid = object::uid(owner).to_string();
        let scope = match (info.kind, info.namespaced) {
            ("Namespace", _) => Scope::Namespace(object::name(owner).to_string()),
            (_, true) => Scope::Namespace(object::namespace(owner).to_string()),
            (_, false) => Scope::All,
        };
        let mut handled = 0;
        for dependent_kind in self.kinds.iter().filter(|k| k.namespaced) {
            let everything = info.kind == "Namespace";
            let filter = if everything {
                WatchFilter::everything()
            } else {
                let owner_uid = owner_uid.clone();
                WatchFilter::new(move |o: &Value| object::owner_uids(o).contains(&owner_uid))
            };
            let items = self
                .list_all(
                    dependent_kind,
                    &scope,
                    &filter,
                    CASCADE_MAX_OBJECTS - handled,
                )
                .await?;
            for dependent in items {
                handled += 1;
                let (ns, name) = (
                    object::namespace(&dependent).to_string(),
                    object::name(&dependent).to_string(),
                );
                let outcome = match options.propagation {
                    Propagation::Orphan if !everything => {
                        self.orphan(dependent_kind, &ns, &name, &owner_uid).await
                    }
                    _ => {
                        let cascade = DeleteOptions {
                            grace_period_seconds: options.grace_period_seconds,
                            propagation: Propagation::Background,
                            resource_version: None,
                        };
                        Box::pin(self.delete_at_depth(
                            dependent_kind,
                            &ns,
                            &name,
                            &cascade,
                            depth + 1,
                        ))
                        .await
                        .map(|_| ())
                    }
                };
                match outcome {
                    Ok(()) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if info.kind == "Namespace" {
            self.remove_namespace_if_empty(info, object::name(owner))
                .await?;
        }
        Ok(())
    }

    /// Deletes a terminating namespace once nothing is left in it (pods on nodes may still be
    /// stopping; the namespace lifecycle loop calls this again later).
    pub async fn remove_namespace_if_empty(
        &self,
        info: &KindInfo,
        name: &str,
    ) -> Result<bool, ApiError> {
        let scope = Scope::Namespace(name.to_string());
        for kind in self.kinds.iter().filter(|k| k.namespaced) {
            if !self
                .list_all(kind, &scope, &WatchFilter::everything(), 1)
                .await?
                .is_empty()
            {
                return Ok(false);
            }
        }
        let current = self.get(info, "", name, false).await?;
        let key = keys::object_key(info, "", name);
        Ok(self
            .delete_if_unchanged(key, current.revision)
            .await?
            .is_some())
    }

    async fn orphan(
        &self,
        info: &KindInfo,
        namespace: &str,
        name: &str,
        owner_uid: &str,
    ) -> Result<(), ApiError> {
        for _ in 0..RMW_ATTEMPTS_MAX {
            let current = self.get(info, namespace, name, false).await?;
            let mut freed = current.object.clone();
            if !object::drop_owner(&mut freed, owner_uid) {
                return Ok(());
            }
            let key = keys::object_key(info, namespace, name);
            if self
                .put_if_unchanged(key, current.revision, &freed)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(conflict(info, name))
    }

    /// Every object of a kind in `scope` that passes `filter`, at most `max`.
    pub(super) async fn list_all(
        &self,
        info: &KindInfo,
        scope: &Scope,
        filter: &WatchFilter,
        max: usize,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        let mut options = ListOptions::default();
        loop {
            let page = self.list(info, scope, filter, &options).await?;
            out.extend(page.items);
            if out.len() >= max || page.continue_token.is_none() {
                out.truncate(max);
                return Ok(out);
            }
            options.continue_token = page.continue_token;
        }
    }
}
