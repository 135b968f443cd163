//! Informers: a local, typed cache of one kind kept current by list + watch, shared by the
//! leader's loops and by node agents. Level-triggered consumers read the whole cache when told
//! something changed; they never depend on seeing every event.
//!
//! The cache relists when its watch is too old (compaction) or breaks, so it converges on the
//! store's state whatever happens to the stream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

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

/// Only an object's name and namespace, read without building the rest.
#[derive(serde::Deserialize)]
struct KeyOnly {
    metadata: KeyMeta,
}

#[derive(serde::Deserialize)]
struct KeyMeta {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

/// The cache of an informer: `namespace/name` → object.
pub struct Cache<T> {
    objects: RwLock<HashMap<String, Cached<T>>>,
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
    fn new() -> Arc<Self> {
        Arc::new(Cache {
            objects: RwLock::new(HashMap::new()),
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
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Cached<T>> {
        self.objects
            .read()
            .expect("cache lock")
            .get(&cache_key(namespace, name))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.objects.read().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    fn decode(mut body: Value) -> Option<(String, Cached<T>)> {
        let key = cache_key(object::namespace(&body), object::name(&body));
        let revision = object::meta_str(&body, "resourceVersion")
            .parse()
            .unwrap_or(0);
        // Typed kinds carry apiVersion and kind in their type, not as fields.
        if let Some(map) = body.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        Self::cached(key, serde_json::from_value::<T>(body), revision)
    }

    /// A watched object, decoded from its text straight into `T` (no `Value` in between).
    fn decode_text(text: &[u8], revision: i64) -> Option<(String, Cached<T>)> {
        let key = match serde_json::from_slice::<KeyOnly>(text) {
            Ok(k) => cache_key(&k.metadata.namespace, &k.metadata.name),
            Err(e) => {
                tracing::warn!(error = %e, "watched object has no readable name; skipped");
                return None;
            }
        };
        let decoded = match raw::without_type_fields(text) {
            Some(typed) => serde_json::from_slice::<T>(&typed),
            None => serde_json::from_slice::<Value>(text).and_then(|mut body| {
                if let Some(map) = body.as_object_mut() {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                serde_json::from_value::<T>(body)
            }),
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
        *self.objects.write().expect("cache lock") = fresh;
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.bump();
        self.synced.send_replace(true);
    }

    fn apply(&self, event: ObjectEvent) {
        match event.kind {
            EventType::Bookmark => return,
            EventType::Deleted => {
                let Ok(k) = serde_json::from_slice::<KeyOnly>(&event.object) else {
                    tracing::warn!("deleted object has no readable name; relist to drop it");
                    return;
                };
                let key = cache_key(&k.metadata.namespace, &k.metadata.name);
                self.objects.write().expect("cache lock").remove(&key);
                self.removals.fetch_add(1, Ordering::SeqCst);
            }
            EventType::Added | EventType::Modified => {
                if let Some((key, cached)) = Self::decode_text(&event.object, event.revision) {
                    self.objects
                        .write()
                        .expect("cache lock")
                        .insert(key, cached);
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
    let cache = Cache::<T>::new();
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

    #[test]
    fn removals_count_deletions_and_relists_but_not_updates() {
        let cache = Cache::<Value>::new();
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
