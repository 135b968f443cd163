//! Watchers: each holds a watch stream on a key prefix from a start revision and records every
//! event it receives, for the watch checker.
//!
//! Two sources ([`WatchSource`]): the KV API's Watch on the prefix, or the Cluster API's Watch on
//! the ConfigMaps of one namespace. Cluster API events are recorded under their object's store
//! key (`/registry/configmaps/<namespace>/<name>`) at their `resourceVersion`, so both feed the
//! same checker against the same committed history; BOOKMARKs are skipped, and an ERROR event
//! ends the stream like a cancellation (a "too old" one is counted: the revision was compacted
//! and the subscription cannot resume without a gap).
//!
//! A watcher is one logical subscription. When its stream ends, errors, is cancelled, or stays
//! silent for `stall_timeout` (its peer may be partitioned away), it resumes on another random
//! serving peer from the revision after the last one it received — so its log also judges that
//! resuming loses and repeats nothing. It stops once it has received everything up to a target
//! revision the run sets at the end (see [`WatchTarget`]), or at its hard deadline.

use std::time::Duration;

use flotilla_api::cluster::WatchEvent as ObjectEvent;
use flotilla_api::kv::{WatchRequest, WatchResponse};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Status, Streaming};

use crate::checker::watch::{ReceivedEvent, WatcherLog};
use crate::client;
use crate::cluster::Endpoints;
use crate::workload::configmap;
use crate::workload::prefix_end;

/// Stream restarts one watcher may make.
pub const MAX_RESUMES: u32 = 1_000;

/// Cancel reasons kept per watcher.
const MAX_CANCEL_REASONS: usize = 20;

const RESUME_PAUSE: Duration = Duration::from_millis(200);

/// What the run wants from its watchers; it moves from `Follow` to `CatchUp` to `Stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchGoal {
    /// Keep following.
    Follow,
    /// Stop once everything through this revision has arrived.
    CatchUp(i64),
    /// Stop now.
    Stop,
}

pub type WatchTarget = watch::Receiver<WatchGoal>;

/// Which API a watcher subscribes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchSource {
    /// KV Watch on the watcher's prefix.
    Kv,
    /// Cluster API Watch on the ConfigMaps of [`configmap::NAMESPACE`]; the watcher's prefix is
    /// that namespace's key prefix.
    ConfigMaps,
}

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    pub name: String,
    pub source: WatchSource,
    pub prefix: String,
    /// First revision to receive (inclusive).
    pub start_revision: i64,
    pub stall_timeout: Duration,
    /// Events recorded at most; more are counted as dropped.
    pub max_events: usize,
    pub deadline: Instant,
    pub seed: u64,
}

/// A finished watcher: its log for the checker and how its streams went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherOutcome {
    pub log: WatcherLog,
    pub resumes: u32,
    pub events_dropped: u64,
    /// Whether it received everything through the target revision.
    pub caught_up: bool,
    pub cancel_reasons: Vec<String>,
    /// Streams that ended because the revision to resume from was compacted ("too old").
    #[serde(default)]
    pub too_old: u32,
}

struct State {
    next_revision: i64,
    outcome: WatcherOutcome,
}

impl State {
    fn caught_up(&self, target: &WatchTarget) -> bool {
        match *target.borrow() {
            WatchGoal::CatchUp(revision) => self.next_revision > revision,
            WatchGoal::Follow | WatchGoal::Stop => false,
        }
    }

    fn done(&self, target: &WatchTarget) -> bool {
        *target.borrow() == WatchGoal::Stop || self.caught_up(target)
    }

    fn note_cancel(&mut self, reason: String) {
        if self.outcome.cancel_reasons.len() < MAX_CANCEL_REASONS {
            self.outcome.cancel_reasons.push(reason);
        }
    }

    fn record(&mut self, events: Vec<(i64, String)>, max_events: usize) {
        for (revision, key) in events {
            if self.outcome.log.events.len() < max_events {
                self.outcome.log.events.push(ReceivedEvent {
                    revision: revision.max(0) as u64,
                    key,
                });
            } else {
                self.outcome.events_dropped += 1;
            }
            self.next_revision = self.next_revision.max(revision + 1);
        }
    }

    fn note_end(&mut self, reason: String) {
        if reason.contains("too old") {
            self.outcome.too_old += 1;
        }
        self.note_cancel(reason);
    }
}

/// Runs one watcher until it has caught up with the target or its deadline passes.
pub async fn run(
    config: WatcherConfig,
    endpoints: Endpoints,
    mut target: WatchTarget,
) -> WatcherOutcome {
    let mut state = State {
        next_revision: config.start_revision,
        outcome: WatcherOutcome {
            log: WatcherLog {
                name: config.name.clone(),
                prefix: config.prefix.clone(),
                start_revision: config.start_revision.max(0) as u64,
                events: Vec::new(),
            },
            resumes: 0,
            events_dropped: 0,
            caught_up: false,
            cancel_reasons: Vec::new(),
            too_old: 0,
        },
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    while Instant::now() < config.deadline && state.outcome.resumes < MAX_RESUMES {
        if state.done(&target) {
            break;
        }
        if let Some(endpoint) = endpoints.pick(&mut rng) {
            if let Some(stream) =
                open(&config, endpoint.addr, state.next_revision, &mut state).await
            {
                follow(&config, stream, &mut state, &mut target).await;
            }
        }
        if state.done(&target) {
            break;
        }
        state.outcome.resumes += 1;
        tokio::time::sleep(RESUME_PAUSE).await;
    }
    state.outcome.caught_up = state.caught_up(&target);
    state.outcome
}

/// One open stream of either source.
enum Stream {
    Kv(Streaming<WatchResponse>),
    Objects(Streaming<ObjectEvent>),
}

/// What one message of a stream brought.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// Changes as (revision, store key); may be empty (a bookmark, a progress message).
    Events(Vec<(i64, String)>),
    /// The server ended the subscription, saying why.
    Ended(String),
}

impl Stream {
    /// The next message; `Ok(None)` when the stream closed.
    async fn next(&mut self) -> Result<Option<Received>, Status> {
        match self {
            Stream::Kv(stream) => Ok(stream.message().await?.map(|r| kv_received(&r))),
            Stream::Objects(stream) => Ok(stream.message().await?.map(|e| object_received(&e))),
        }
    }
}

fn kv_received(response: &WatchResponse) -> Received {
    if response.canceled {
        return Received::Ended(response.cancel_reason.clone());
    }
    let events = response
        .events
        .iter()
        .filter_map(|event| event.kv.as_ref())
        .map(|kv| {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            (kv.mod_revision, key)
        })
        .collect();
    Received::Events(events)
}

/// A Cluster API watch event as a change of the object's store key at its resourceVersion.
/// An event the checker could not place (no name or version) is recorded at revision 0 under an
/// empty key, which the checker flags.
fn object_received(event: &ObjectEvent) -> Received {
    match event.r#type.as_str() {
        "BOOKMARK" => Received::Events(Vec::new()),
        "ERROR" => Received::Ended(format!("ERROR event: {}", event.error)),
        _ => {
            let object: serde_json::Value =
                serde_json::from_slice(&event.object).unwrap_or_default();
            let field = |pointer: &str| object.pointer(pointer).and_then(|v| v.as_str());
            let revision = configmap::resource_version(&object).unwrap_or(0);
            let key = match (field("/metadata/namespace"), field("/metadata/name")) {
                (Some(namespace), Some(name)) => configmap::object_key(namespace, name),
                _ => String::new(),
            };
            Received::Events(vec![(revision, key)])
        }
    }
}

async fn open(
    config: &WatcherConfig,
    addr: std::net::SocketAddr,
    start_revision: i64,
    state: &mut State,
) -> Option<Stream> {
    let opened = tokio::time::timeout(
        config.stall_timeout,
        open_source(config, addr, start_revision),
    )
    .await;
    match opened {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(reason)) => {
            state.note_end(format!("{addr}: {reason}"));
            None
        }
        Err(_) => None,
    }
}

async fn open_source(
    config: &WatcherConfig,
    addr: std::net::SocketAddr,
    start_revision: i64,
) -> Result<Stream, String> {
    match config.source {
        WatchSource::Kv => {
            let mut client = client::watch(addr).map_err(|e| e.to_string())?;
            let request = WatchRequest {
                key: config.prefix.as_bytes().to_vec(),
                range_end: prefix_end(config.prefix.as_bytes()),
                start_revision,
                prev_kv: false,
            };
            let response = client.watch(request).await.map_err(|s| status_text(&s))?;
            Ok(Stream::Kv(response.into_inner()))
        }
        WatchSource::ConfigMaps => {
            let mut client = client::cluster_api(addr).map_err(|e| e.to_string())?;
            let request = flotilla_api::cluster::WatchRequest {
                kind: "ConfigMap".into(),
                namespace: configmap::NAMESPACE.into(),
                // Events after this revision, i.e. from `start_revision` on.
                resource_version: (start_revision - 1).max(0).to_string(),
                ..Default::default()
            };
            let response = client.watch(request).await.map_err(|s| status_text(&s))?;
            Ok(Stream::Objects(response.into_inner()))
        }
    }
}

fn status_text(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Reads one stream until it ends, stalls, is cancelled, or the watcher is done.
async fn follow(
    config: &WatcherConfig,
    mut stream: Stream,
    state: &mut State,
    target: &mut WatchTarget,
) {
    loop {
        let message = tokio::select! {
            message = tokio::time::timeout(config.stall_timeout, stream.next()) => message,
            changed = target.changed() => {
                if changed.is_err() || state.done(target) {
                    return;
                }
                continue;
            }
        };
        let events = match message {
            Ok(Ok(Some(Received::Events(events)))) => events,
            Ok(Ok(Some(Received::Ended(reason)))) => {
                state.note_end(reason);
                return;
            }
            Ok(Err(status)) => {
                state.note_end(status_text(&status));
                return;
            }
            // Ended, or silent for too long: resume elsewhere.
            Ok(Ok(None)) | Err(_) => return,
        };
        state.record(events, config.max_events);
        if state.done(target) || Instant::now() >= config.deadline {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, object: &str) -> ObjectEvent {
        ObjectEvent {
            r#type: kind.into(),
            object: object.as_bytes().to_vec(),
            error: String::new(),
        }
    }

    #[test]
    fn object_events_become_changes_of_their_store_key() {
        let check = |e: ObjectEvent, expected: Received| assert_eq!(object_received(&e), expected);
        let cm = r#"{"kind":"ConfigMap","metadata":{"name":"reg-002","namespace":"default","resourceVersion":"41"}}"#;
        let key = "/registry/configmaps/default/reg-002".to_string();
        check(
            event("ADDED", cm),
            Received::Events(vec![(41, key.clone())]),
        );
        check(
            event("MODIFIED", cm),
            Received::Events(vec![(41, key.clone())]),
        );
        check(event("DELETED", cm), Received::Events(vec![(41, key)]));
        check(
            event("BOOKMARK", r#"{"metadata":{"resourceVersion":"50"}}"#),
            Received::Events(vec![]),
        );
        let mut error = event("ERROR", "");
        error.error = "too old resource version: 3; relist".into();
        check(
            error,
            Received::Ended("ERROR event: too old resource version: 3; relist".into()),
        );
        // Unplaceable events are kept, for the checker to flag.
        check(
            event("ADDED", "{}"),
            Received::Events(vec![(0, String::new())]),
        );
    }

    #[test]
    fn too_old_endings_are_counted() {
        let mut state = State {
            next_revision: 1,
            outcome: WatcherOutcome {
                log: WatcherLog {
                    name: "w".into(),
                    prefix: "p/".into(),
                    start_revision: 1,
                    events: Vec::new(),
                },
                resumes: 0,
                events_dropped: 0,
                caught_up: false,
                cancel_reasons: Vec::new(),
                too_old: 0,
            },
        };
        state.note_end("ERROR event: too old resource version: 3; relist".into());
        state.note_end("peer went away".into());
        assert_eq!(state.outcome.too_old, 1);
        assert_eq!(state.outcome.cancel_reasons.len(), 2);
        state.record(vec![(7, "p/a".into())], 10);
        assert_eq!(state.next_revision, 8);
    }
}
