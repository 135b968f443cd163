//! `v1 Event`s the controllers emit: building one with a stable name, merging a repeat into the
//! stored one (count and lastTimestamp) instead of creating another object, and a per-loop budget
//! so a flapping object cannot flood the log.
//!
//! The name is `<object>.<hash>` where the hash covers the involved object's uid, the reason and
//! the message: the same report about the same object always has the same name, so the loop can
//! `get` it and, if present, update it with [`merge_event`].

use std::collections::HashMap;

use flotilla_state::objects::{
    Event, EventSource, EventType, Kind, ObjectMeta, ObjectReference, Time,
};

use crate::hash::fnv1a_64;

/// Events one pass of one loop may emit; further distinct events are dropped and counted.
pub const MAX_EVENTS_PER_LOOP: usize = 64;
/// Longest object name (DNS subdomain), which an event name must not exceed either.
const MAX_NAME_BYTES: usize = 253;
/// Where cluster-scoped objects' events live, as in Kubernetes.
const CLUSTER_EVENTS_NAMESPACE: &str = "default";

/// What an event is about, as a `v1 ObjectReference`.
pub fn involved_object(kind: Kind, metadata: &ObjectMeta) -> ObjectReference {
    ObjectReference {
        api_version: kind.api_version().to_owned(),
        kind: kind.name().to_owned(),
        namespace: metadata.namespace.clone(),
        name: metadata.name.clone(),
        uid: metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The report itself: severity, a CamelCase reason, a sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub message: &'a str,
}

/// The stable event name `<object>.<16 hex digits>`, with the object part shortened so the whole
/// stays a valid object name.
pub fn event_name(involved: &ObjectReference, reason: &str, message: &str) -> String {
    let hash = fnv1a_64(&[
        involved.uid.as_bytes(),
        b"\0",
        reason.as_bytes(),
        b"\0",
        message.as_bytes(),
    ]);
    let suffix = format!(".{hash:016x}");
    let mut object = involved.name.as_str();
    if object.len() + suffix.len() > MAX_NAME_BYTES {
        let mut end = MAX_NAME_BYTES - suffix.len();
        while !object.is_char_boundary(end) {
            end -= 1;
        }
        object = &object[..end];
    }
    format!("{object}{suffix}")
}

/// A new event (count 1, first = last = `now_ms`) from `component` about `involved`.
pub fn new_event(
    involved: ObjectReference,
    report: Report<'_>,
    component: &str,
    now_ms: i64,
) -> Event {
    let namespace = if involved.namespace.is_empty() {
        CLUSTER_EVENTS_NAMESPACE.to_owned()
    } else {
        involved.namespace.clone()
    };
    let now = Time::from_unix_millis(now_ms);
    Event {
        metadata: ObjectMeta {
            name: event_name(&involved, report.reason, report.message),
            namespace,
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: report.reason.to_owned(),
        message: report.message.to_owned(),
        type_: Some(report.type_),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: component.to_owned(),
            host: String::new(),
        }),
    }
}

/// The stored event updated by a repeat: its metadata (resourceVersion included, for a
/// conditional update) and first timestamp are kept; count adds up; last timestamp moves on.
pub fn merge_event(stored: &Event, repeat: &Event) -> Event {
    let count = stored
        .count
        .unwrap_or(1)
        .saturating_add(repeat.count.unwrap_or(1));
    let last_timestamp = match (&stored.last_timestamp, &repeat.last_timestamp) {
        (Some(a), Some(b)) => Some(a.max(b).clone()),
        (a, b) => a.clone().or_else(|| b.clone()),
    };
    Event {
        count: Some(count),
        last_timestamp,
        first_timestamp: stored
            .first_timestamp
            .clone()
            .or_else(|| repeat.first_timestamp.clone()),
        ..stored.clone()
    }
}

/// The events of one loop pass: repeats within the pass are merged, and at most `limit` distinct
/// events are kept; the rest are counted in [`EventBudget::dropped`].
#[derive(Clone, Debug)]
pub struct EventBudget {
    limit: usize,
    events: Vec<Event>,
    index_by_name: HashMap<String, usize>,
    dropped: usize,
}

impl EventBudget {
    pub fn new(limit: usize) -> EventBudget {
        EventBudget {
            limit,
            events: Vec::new(),
            index_by_name: HashMap::new(),
            dropped: 0,
        }
    }

    /// Adds `event`, merging it into an earlier one of the same name. Returns false if dropped.
    pub fn record(&mut self, event: Event) -> bool {
        if let Some(&index) = self.index_by_name.get(&event.metadata.name) {
            self.events[index] = merge_event(&self.events[index], &event);
            return true;
        }
        if self.events.len() >= self.limit {
            self.dropped += 1;
            return false;
        }
        self.index_by_name
            .insert(event.metadata.name.clone(), self.events.len());
        self.events.push(event);
        true
    }

    /// Distinct events refused because the budget was spent.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The events to write, in the order first recorded.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

impl Default for EventBudget {
    fn default() -> Self {
        EventBudget::new(MAX_EVENTS_PER_LOOP)
    }
}
