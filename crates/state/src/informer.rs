//! Informers: a local, typed cache of one kind kept current by list + watch, shared by the
//! leader's loops and by node agents. Level-triggered consumers read the whole cache when told
//! something changed; they never depend on seeing every event.
//!
//! The cache relists when its watch is too old (compaction) or breaks, so it converges on the
//! store's state whatever happens to the stream.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::registry::object::MetaText;
use crate::registry::{
    object, raw, ApiError, EventType, ListOptions, ObjectEvent, Registry, Scope, Store, WatchFilter,
};
use crate::service::{kind_info, object_filter};
use crate::Kind;

/// Pause before relisting after an error (doubling up to [`RELIST_BACKOFF_MAX`]).
const RELIST_BACKOFF_MIN: Duration = Duration::from_millis(100);
const RELIST_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of object events (a watch).
pub trait EventStream: Send {
    fn next(&mut self) -> BoxFuture<'_, Result<ObjectEvent, ApiError>>;
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Value>,
    pub resource_version: i64,
    pub continue_token: Option<String>,
}

/// Where an informer lists and watches: the in-process registry, or the Cluster API over gRPC.
pub trait ObjectSource: Send + Sync + 'static {
    fn list(
        &self,
        query: &Query,
        continue_token: Option<String>,
    ) -> BoxFuture<'_, Result<Page, ApiError>>;
    fn watch(
        &self,
        query: &Query,
        after: i64,
    ) -> BoxFuture<'_, Result<Box<dyn EventStream>, ApiError>>;
}

/// What an informer caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: Kind,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub label_selector: String,
    pub field_selector: String,
}

impl Query {
    pub fn all(kind: Kind) -> Self {
        Query {
            kind,
            namespace: None,
            label_selector: String::new(),
            field_selector: String::new(),
        }
    }

    pub fn with_fields(mut self, fields: impl Into<String>) -> Self {
        self.field_selector = fields.into();
        self
    }

    fn scope(&self) -> Scope {
        match &self.namespace {
            Some(ns) if self.kind.is_namespaced() => Scope::Namespace(ns.clone()),
            _ => Scope::All,
        }
    }

    fn filter(&self) -> Result<WatchFilter, ApiError> {
        object_filter(self.kind, &self.label_selector, &self.field_selector)
            .map_err(|s| ApiError::Invalid(s.message().to_string()))
    }
}

struct RegistryWatch(crate::registry::ObjectWatch);

impl EventStream for RegistryWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<ObjectEvent, ApiError>> {
        Box::pin(self.0.next())
    }
}

impl<S: Store + Clone> ObjectSource for Registry<S> {
    fn list(
        &self,
        query: &Query,
        continue_token: Option<String>,
    ) -> BoxFuture<'_, Result<Page, ApiError>> {
        let query = query.clone();
        Box::pin(async move {
            let filter = query.filter()?;
            let options = ListOptions {
                limit: 0,
                continue_token,
                stale: true,
            };
            let page = Registry::list(
                self,
                kind_info(query.kind),
                &query.scope(),
                &filter,
                &options,
            )
            .await?;
            Ok(Page {
                items: page.items,
                resource_version: page.resource_version,
                continue_token: page.continue_token,
            })
        })
    }

    fn watch(
        &self,
        query: &Query,
        after: i64,
    ) -> BoxFuture<'_, Result<Box<dyn EventStream>, ApiError>> {
        let query = query.clone();
        Box::pin(async move {
            let filter = query.filter()?;
            let bookmarks = Some(Duration::from_secs(5));
            let watch = Registry::watch(
                self,
                kind_info(query.kind),
                &query.scope(),
                filter,
                Some(after),
                bookmarks,
            )?;
            Ok(Box::new(RegistryWatch(watch)) as Box<dyn EventStream>)
        })
    }
}

/// One cached object.
#[derive(Debug)]
pub struct Cached<T> {
    pub object: Arc<T>,
    pub revision: i64,
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached {
            object: self.object.clone(),
            revision: self.revision,
        }
    }
}

/// What an object is grouped by in a grouped cache (e.g. the uid of its controller); `None`:
/// in no group.
pub type GroupKey<T> = fn(&T) -> Option<String>;

/// The members of one group, and a version that changes whenever one of them does.
struct Group<T> {
    /// The members by key, each as the cache holds it: reading a group looks nothing up.
    members: BTreeMap<String, Cached<T>>,
    version: u64,
}

impl<T> Default for Group<T> {
    fn default() -> Self {
        Group {
            members: BTreeMap::new(),
            version: 0,
        }
    }
}

/// The groups of a grouped cache, kept up to date as objects change.
struct Groups<T> {
    key_of: GroupKey<T>,
    by_key: HashMap<String, Group<T>>,
    /// The last version given to a group; versions are never reused.
    clock: u64,
}

impl<T> Groups<T> {
    fn touch(&mut self, group: &str) -> Option<&mut Group<T>> {
        self.clock += 1;
        let clock = self.clock;
        let group = self.by_key.get_mut(group)?;
        group.version = clock;
        Some(group)
    }

    fn join(&mut self, group: String, key: &str, member: &Cached<T>) {
        self.clock += 1;
        let entry = self.by_key.entry(group).or_default();
        entry.version = self.clock;
        entry.members.insert(key.to_string(), member.clone());
    }

    fn leave(&mut self, group: &str, key: &str) {
        if let Some(g) = self.touch(group) {
            g.members.remove(key);
            if g.members.is_empty() {
                self.by_key.remove(group);
            }
        }
    }

    /// Records that the object at `key` changed from `old` to `new` (either may be absent).
    fn moved(&mut self, key: &str, old: Option<&T>, new: Option<&Cached<T>>) {
        let old = old.and_then(|o| (self.key_of)(o));
        let new = new.and_then(|n| Some(((self.key_of)(&n.object)?, n)));
        match (old, new) {
            (Some(old), Some((group, member))) if old == group => {
                if let Some(slot) = self.touch(&group).and_then(|g| g.members.get_mut(key)) {
                    *slot = member.clone();
                }
            }
            (old, new) => {
                if let Some(old) = old {
                    self.leave(&old, key);
                }
                if let Some((group, member)) = new {
                    self.join(group, key, member);
                }
            }
        }
    }

    fn rebuild(&mut self, objects: &HashMap<String, Cached<T>>) {
        self.by_key.clear();
        for (key, cached) in objects {
            if let Some(group) = (self.key_of)(&cached.object) {
                self.join(group, key, cached);
            }
        }
    }
}

/// The objects of a cache and, in a grouped cache, their groups: under one lock, so a group is
/// always read as it was with the objects.
struct Objects<T> {
    by_key: HashMap<String, Cached<T>>,
    groups: Option<Groups<T>>,
}

/// The cache of an informer: `namespace/name` → object; optionally grouped (see
/// [`spawn_grouped_informer`]).
pub struct Cache<T> {
    objects: RwLock<Objects<T>>,
    /// Bumped on every change; consumers wait on it.
    changes: watch::Sender<u64>,
    /// Bumped whenever objects may have left the cache (a deletion or a relist).
    removals: AtomicU64,
    synced: watch::Sender<bool>,
}

pub fn cache_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl<T: DeserializeOwned + Send + Sync + 'static> Cache<T> {
    fn new(key_of: Option<GroupKey<T>>) -> Arc<Self> {
        let groups = key_of.map(|key_of| Groups {
            key_of,
            by_key: HashMap::new(),
            clock: 0,
        });
        Arc::new(Cache {
            objects: RwLock::new(Objects {
                by_key: HashMap::new(),
                groups,
            }),
            changes: watch::channel(0).0,
            removals: AtomicU64::new(0),
            synced: watch::channel(false).0,
        })
    }

    /// Every cached object (cheap: shared pointers).
    pub fn snapshot(&self) -> Vec<Cached<T>> {
        self.objects
            .read()
            .expect("cache lock")
            .by_key
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Cached<T>> {
        self.objects
            .read()
            .expect("cache lock")
            .by_key
            .get(&cache_key(namespace, name))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.objects.read().expect("cache lock").by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The version of group `group` and its members (of a grouped cache). The version changes
    /// whenever a member is added, changed or removed, so whoever saw the same version before
    /// has seen the group as it is; an empty or unknown group is version 0.
    pub fn group(&self, group: &str) -> (u64, Vec<Cached<T>>) {
        let objects = self.objects.read().expect("cache lock");
        let Some(g) = objects.groups.as_ref().and_then(|g| g.by_key.get(group)) else {
            return (0, Vec::new());
        };
        let members = g.members.values().cloned().collect();
        (g.version, members)
    }

    /// The version of group `group` alone (see [`Cache::group`]).
    pub fn group_version(&self, group: &str) -> u64 {
        let objects = self.objects.read().expect("cache lock");
        objects
            .groups
            .as_ref()
            .and_then(|g| g.by_key.get(group))
            .map_or(0, |g| g.version)
    }

    /// A count that grows whenever objects may have left the cache: whoever saw the same count
    /// before has seen every removal since.
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// A count that grows with every change to the cache: whoever saw the same count before has
    /// seen the cache as it is.
    pub fn version(&self) -> u64 {
        *self.changes.borrow()
    }

    /// A receiver that changes whenever the cache does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn decode(body: Value) -> Option<(String, Cached<T>)> {
        let key = cache_key(object::namespace(&body), object::name(&body));
        let revision = object::meta_str(&body, "resourceVersion")
            .parse()
            .unwrap_or(0);
        Self::cached(key, Self::typed(body), revision)
    }

    /// `body` as a `T`: typed kinds carry apiVersion and kind in their type, not as fields.
    fn typed(mut body: Value) -> Result<T, serde_json::Error> {
        if let Some(map) = body.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        serde_json::from_value::<T>(body)
    }

    /// A watched object, decoded from its text straight into `T` (no `Value` in between).
    fn decode_text(text: &[u8], revision: i64) -> Option<(String, Cached<T>)> {
        let key = match MetaText::read(text) {
            Ok(meta) => cache_key(&meta.namespace, &meta.name),
            Err(e) => {
                tracing::warn!(error = %e, "watched object has no readable name; skipped");
                return None;
            }
        };
        let decoded = match raw::without_type_fields(text) {
            Some(typed) => serde_json::from_slice::<T>(&typed),
            None => serde_json::from_slice::<Value>(text).and_then(Self::typed),
        };
        Self::cached(key, decoded, revision)
    }

    fn cached(
        key: String,
        decoded: Result<T, serde_json::Error>,
        revision: i64,
    ) -> Option<(String, Cached<T>)> {
        match decoded {
            Ok(object) => Some((
                key,
                Cached {
                    object: Arc::new(object),
                    revision,
                },
            )),
            Err(e) => {
                tracing::warn!(key, error = %e, "cached object does not decode; skipped");
                None
            }
        }
    }

    fn replace_all(&self, items: Vec<Value>) {
        let fresh: HashMap<String, Cached<T>> =
            items.into_iter().filter_map(Self::decode).collect();
        let mut objects = self.objects.write().expect("cache lock");
        if let Some(groups) = objects.groups.as_mut() {
            groups.rebuild(&fresh);
        }
        objects.by_key = fresh;
        drop(objects);
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.bump();
        self.synced.send_replace(true);
    }

    fn apply(&self, event: ObjectEvent) {
        match event.kind {
            EventType::Bookmark => return,
            EventType::Deleted => {
                let Ok(meta) = MetaText::read(&event.object) else {
                    tracing::warn!("deleted object has no readable name; relist to drop it");
                    return;
                };
                let key = cache_key(&meta.namespace, &meta.name);
                let mut objects = self.objects.write().expect("cache lock");
                let old = objects.by_key.remove(&key);
                if let Some(groups) = objects.groups.as_mut() {
                    groups.moved(&key, old.as_ref().map(|o| &*o.object), None);
                }
                drop(objects);
                self.removals.fetch_add(1, Ordering::SeqCst);
            }
            EventType::Added | EventType::Modified => {
                if let Some((key, cached)) = Self::decode_text(&event.object, event.revision) {
                    let mut guard = self.objects.write().expect("cache lock");
                    let Objects { by_key, groups } = &mut *guard;
                    if let Some(groups) = groups {
                        let old = by_key.get(&key).map(|o| &*o.object);
                        groups.moved(&key, old, Some(&cached));
                    }
                    by_key.insert(key, cached);
                }
            }
        }
        self.bump();
    }
}

/// Starts an informer task; it runs until the returned cache and every clone of it are dropped
/// or `stop` resolves.
pub fn spawn_informer<T, S>(
    source: Arc<S>,
    query: Query,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Arc<Cache<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
    S: ObjectSource + ?Sized,
{
    spawn(source, query, stop, Cache::<T>::new(None))
}

/// [`spawn_informer`] whose cache also groups its objects by `key_of` (see [`Cache::group`]):
/// a loop that works group by group reads one group without scanning every object.
pub fn spawn_grouped_informer<T, S>(
    source: Arc<S>,
    query: Query,
    stop: impl Future<Output = ()> + Send + 'static,
    key_of: GroupKey<T>,
) -> Arc<Cache<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
    S: ObjectSource + ?Sized,
{
    spawn(source, query, stop, Cache::<T>::new(Some(key_of)))
}

fn spawn<T, S>(
    source: Arc<S>,
    query: Query,
    stop: impl Future<Output = ()> + Send + 'static,
    cache: Arc<Cache<T>>,
) -> Arc<Cache<T>>
where
    T: DeserializeOwned + Send + Sync + 'static,
    S: ObjectSource + ?Sized,
{
    let weak = Arc::downgrade(&cache);
    tokio::spawn(async move {
        tokio::select! {
            _ = run(source, query, weak) => {}
            _ = stop => {}
        }
    });
    cache
}

async fn run<T, S>(source: Arc<S>, query: Query, cache: std::sync::Weak<Cache<T>>)
where
    T: DeserializeOwned + Send + Sync + 'static,
    S: ObjectSource + ?Sized,
{
    let mut backoff = RELIST_BACKOFF_MIN;
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        match list_and_watch(&*source, &query, &strong).await {
            Ok(()) => backoff = RELIST_BACKOFF_MIN,
            Err(e) => {
                tracing::debug!(kind = %query.kind, error = %e, "informer relists");
                drop(strong);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RELIST_BACKOFF_MAX);
            }
        }
    }
}

/// Lists everything, then follows the watch until it breaks; returns the reason to relist.
async fn list_and_watch<T, S>(
    source: &S,
    query: &Query,
    cache: &Arc<Cache<T>>,
) -> Result<(), ApiError>
where
    T: DeserializeOwned + Send + Sync + 'static,
    S: ObjectSource + ?Sized,
{
    let mut items = Vec::new();
    let mut token = None;
    let revision = loop {
        let page = source.list(query, token).await?;
        items.extend(page.items);
        match page.continue_token {
            Some(next) => token = Some(next),
            None => break page.resource_version,
        }
    };
    cache.replace_all(items);
    let mut stream = source.watch(query, revision).await?;
    loop {
        let event = stream.next().await?;
        if Arc::strong_count(cache) <= 1 {
            // Only this task holds the cache: nobody reads it any more.
            return Ok(());
        }
        cache.apply(event);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: EventType, name: &str, revision: i64) -> ObjectEvent {
        ObjectEvent {
            kind,
            object: json!({"metadata": {"namespace": "default", "name": name,
                "resourceVersion": revision.to_string()}})
            .to_string()
            .into_bytes(),
            revision,
        }
    }

    fn owned(name: &str, owner: &str, revision: i64) -> ObjectEvent {
        ObjectEvent {
            kind: EventType::Added,
            object: json!({"metadata": {"namespace": "default", "name": name,
                "resourceVersion": revision.to_string()}, "owner": owner})
            .to_string()
            .into_bytes(),
            revision,
        }
    }

    fn names(members: &[Cached<Value>]) -> Vec<String> {
        let mut names: Vec<String> = members
            .iter()
            .map(|c| c.object["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn groups_follow_their_members_and_every_change_shows_in_the_version() {
        let owner = |v: &Value| {
            v["owner"]
                .as_str()
                .filter(|o| !o.is_empty())
                .map(String::from)
        };
        let cache = Cache::<Value>::new(Some(owner));
        cache.replace_all(vec![]);
        let (version, members) = cache.group("x");
        assert_eq!((version, members.len()), (0, 0));

        cache.apply(owned("a", "x", 2));
        cache.apply(owned("b", "x", 3));
        cache.apply(owned("c", "y", 4));
        let (v1, members) = cache.group("x");
        assert_eq!(names(&members), ["a", "b"]);
        let (y1, _) = cache.group("y");

        // A member that changes bumps its group only.
        let mut changed = owned("a", "x", 5);
        changed.kind = EventType::Modified;
        cache.apply(changed);
        let (v2, members) = cache.group("x");
        assert!(v2 > v1);
        assert_eq!(members.iter().map(|c| c.revision).max(), Some(5));
        assert_eq!(cache.group("y").0, y1, "another group is untouched");

        // Moving to another group, or to none, leaves the first and joins the second.
        cache.apply(owned("b", "y", 6));
        let (v3, members) = cache.group("x");
        assert!(v3 > v2);
        assert_eq!(names(&members), ["a"]);
        assert_eq!(names(&cache.group("y").1), ["b", "c"]);
        cache.apply(owned("c", "", 7));
        assert_eq!(names(&cache.group("y").1), ["b"]);

        // Deletion, and a relist that rebuilds every group.
        cache.apply(event(EventType::Deleted, "a", 8));
        let (version, members) = cache.group("x");
        assert_eq!((version, members.len()), (0, 0), "an emptied group is gone");
        let (y2, _) = cache.group("y");
        cache.replace_all(vec![
            json!({"metadata": {"namespace": "default", "name": "b", "resourceVersion": "6"}, "owner": "y"}),
        ]);
        let (y3, members) = cache.group("y");
        assert!(y3 > y2, "a relist gives every group a new version");
        assert_eq!(names(&members), ["b"]);
    }

    #[test]
    fn removals_count_deletions_and_relists_but_not_updates() {
        let cache = Cache::<Value>::new(None);
        cache.replace_all(vec![]);
        let start = cache.removals();
        cache.apply(event(EventType::Added, "a", 2));
        cache.apply(event(EventType::Modified, "a", 3));
        assert_eq!(cache.removals(), start, "nothing left the cache");
        cache.apply(event(EventType::Deleted, "a", 4));
        assert_eq!(cache.removals(), start + 1);
        assert!(cache.is_empty());
        cache.replace_all(vec![]);
        assert_eq!(cache.removals(), start + 2, "a relist may drop anything");
    }
}
