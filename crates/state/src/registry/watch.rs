//! Watches over objects: the store's key events turned into ADDED / MODIFIED / DELETED as seen
//! through the caller's selectors (an object that stops matching is DELETED for this watcher),
//! plus BOOKMARK events that tell a quiet watcher how far it is up to date.

use std::collections::VecDeque;
use std::time::Duration;

use flotilla_consensus::types::EventKind;
use flotilla_consensus::{WatchError, Watcher};
use serde_json::Value;

use super::keys::{self, KindInfo, Scope};
use super::object;
use super::sparse::Paths;
use super::{ApiError, Registry, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
}

impl EventType {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ObjectEvent {
    pub kind: EventType,
    /// The object as JSON text with its resourceVersion set (for DELETED, its last state; for
    /// BOOKMARK, only kind and resourceVersion). Text, not a `Value`: most watchers pass it on
    /// or decode it into a type, and neither needs the `Value` in between.
    pub object: Vec<u8>,
    /// The revision this event brings the watcher up to.
    pub revision: i64,
}

impl ObjectEvent {
    /// The object parsed.
    pub fn value(&self) -> Result<Value, ApiError> {
        Ok(serde_json::from_slice(&self.object)?)
    }
}

/// `value` (stored JSON text) as a watch event's object: with `metadata.resourceVersion` set.
/// Spliced into the text where it can be; parsed and written out again otherwise.
fn event_object(value: &[u8], revision: i64) -> Result<Vec<u8>, ApiError> {
    match super::raw::with_resource_version(value, revision) {
        Some(text) => Ok(text),
        None => {
            let parsed: Value = serde_json::from_slice(value)?;
            Ok(serde_json::to_vec(&object::with_resource_version(
                parsed, revision,
            ))?)
        }
    }
}

/// A test of one object.
type ObjectTest = Box<dyn Fn(&Value) -> bool + Send + Sync>;

/// Which objects a list or a watch shows, from the caller's selectors.
pub struct WatchFilter {
    /// `None`: every object (no selector), known without looking at the object.
    test: Option<ObjectTest>,
    /// The only paths `test` reads, when known: objects are then decoded sparsely.
    reads: Option<Paths>,
}

impl WatchFilter {
    /// Shows every object.
    pub fn everything() -> WatchFilter {
        WatchFilter {
            test: None,
            reads: None,
        }
    }

    /// Shows the objects `test` accepts.
    pub fn new(test: impl Fn(&Value) -> bool + Send + Sync + 'static) -> WatchFilter {
        WatchFilter {
            test: Some(Box::new(test)),
            reads: None,
        }
    }

    /// Shows the objects `test` accepts, where `test` reads nothing but `reads`: it is given
    /// the object with only those paths.
    pub fn reading(
        reads: Paths,
        test: impl Fn(&Value) -> bool + Send + Sync + 'static,
    ) -> WatchFilter {
        WatchFilter {
            test: Some(Box::new(test)),
            reads: Some(reads),
        }
    }

    /// Whether the object stored as `json` is shown.
    pub fn matches_json(&self, json: &[u8]) -> Result<bool, ApiError> {
        let Some(test) = &self.test else {
            return Ok(true);
        };
        let object = match &self.reads {
            Some(reads) => reads.decode(json)?,
            None => serde_json::from_slice(json)?,
        };
        Ok(test(&object))
    }

    pub fn is_everything(&self) -> bool {
        self.test.is_none()
    }
}

/// Reopens the store watch at a revision, after the live queue overflowed.
type Reopen = Box<dyn Fn(i64) -> Result<Watcher, WatchError> + Send + Sync>;

/// A watch on one kind in a scope.
///
/// A watcher whose live queue overflows (it fell behind: [`WatchError::FellBehind`]) is
/// reopened at the revision it had reached, so it catches up from the stored history instead of
/// failing; only a compacted revision, a reset or a shutdown ends it (relist, then watch again).
pub struct ObjectWatch {
    info: KindInfo,
    watcher: Watcher,
    reopen: Reopen,
    filter: WatchFilter,
    pending: VecDeque<ObjectEvent>,
    /// Everything up to here has been delivered.
    delivered: i64,
    bookmark_every: Option<Duration>,
}

impl<S: Store + Clone> Registry<S> {
    /// Watches objects of `info` in `scope` changed after `after_revision` (a list's
    /// resourceVersion); `None` watches from now on. A compacted revision fails with Expired.
    pub fn watch(
        &self,
        info: &KindInfo,
        scope: &Scope,
        filter: WatchFilter,
        after_revision: Option<i64>,
        bookmark_every: Option<Duration>,
    ) -> Result<ObjectWatch, ApiError> {
        let start = after_revision.map_or(0, |rv| rv + 1);
        let range = keys::scope_range(info, scope);
        let watcher = self
            .store
            .watch(range.clone(), start)
            .map_err(watch_error)?;
        let delivered = watcher.next_revision() - 1;
        let store = self.store.clone();
        Ok(ObjectWatch {
            info: *info,
            watcher,
            reopen: Box::new(move |from| store.watch(range.clone(), from)),
            filter,
            pending: VecDeque::new(),
            delivered,
            bookmark_every,
        })
    }
}

fn watch_error(e: WatchError) -> ApiError {
    match e {
        WatchError::Compacted { .. } | WatchError::FellBehind { .. } | WatchError::Reset => {
            ApiError::Expired(e.to_string())
        }
        WatchError::TooMany(_) | WatchError::Closed => ApiError::Unavailable(e.to_string()),
        WatchError::Storage(msg) => ApiError::Internal(msg),
    }
}

impl ObjectWatch {
    /// The next event. Errors end the watch; `Expired` means: relist, then watch again.
    pub async fn next(&mut self) -> Result<ObjectEvent, ApiError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let batch = match self.bookmark_every {
                Some(every) => match tokio::time::timeout(every, self.watcher.next()).await {
                    Ok(batch) => batch,
                    Err(_) => return Ok(self.bookmark()),
                },
                None => self.watcher.next().await,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(WatchError::FellBehind { next_revision, .. }) => {
                    // Everything before `next_revision` was delivered: no gap, no repeat.
                    tracing::debug!(
                        kind = self.info.kind,
                        next_revision,
                        "watcher fell behind; catching up from history"
                    );
                    self.watcher = (self.reopen)(next_revision).map_err(watch_error)?;
                    continue;
                }
                Err(e) => return Err(watch_error(e)),
            };
            for event in batch.events {
                if let Some(translated) = self.translate(event)? {
                    self.pending.push_back(translated);
                }
            }
            self.delivered = batch.revision;
        }
    }

    fn bookmark(&self) -> ObjectEvent {
        ObjectEvent {
            kind: EventType::Bookmark,
            object: serde_json::json!({
                "apiVersion": self.info.api_version,
                "kind": self.info.kind,
                "metadata": {"resourceVersion": self.delivered.to_string()},
            })
            .to_string()
            .into_bytes(),
            revision: self.delivered,
        }
    }

    fn translate(&self, event: flotilla_consensus::Event) -> Result<Option<ObjectEvent>, ApiError> {
        let revision = event.kv.mod_revision;
        let (kind, object) = match event.kind {
            EventKind::Delete => {
                let Some(prev) = &event.prev_kv else {
                    return Ok(None);
                };
                if !self.filter.matches_json(&prev.value)? {
                    return Ok(None);
                }
                (EventType::Deleted, event_object(&prev.value, revision)?)
            }
            EventKind::Put if self.filter.is_everything() => {
                // No selector: the object is passed on without parsing it, and it showed before
                // if there was one.
                let kind = match event.prev_kv {
                    Some(_) => EventType::Modified,
                    None => EventType::Added,
                };
                (kind, event_object(&event.kv.value, revision)?)
            }
            EventKind::Put => {
                let was_visible = match &event.prev_kv {
                    None => false,
                    Some(prev) => self.filter.matches_json(&prev.value)?,
                };
                let kind = match (self.filter.matches_json(&event.kv.value)?, was_visible) {
                    (true, true) => EventType::Modified,
                    (true, false) => EventType::Added,
                    (false, true) => EventType::Deleted,
                    (false, false) => return Ok(None),
                };
                (kind, event_object(&event.kv.value, revision)?)
            }
        };
        Ok(Some(ObjectEvent {
            kind,
            object,
            revision,
        }))
    }
}
