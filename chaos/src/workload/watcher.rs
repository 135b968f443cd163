//! Watchers: each holds a Watch stream on a key prefix from a start revision and records every
//! event it receives, for the watch checker.
//!
//! A watcher is one logical subscription. When its stream ends, errors, is cancelled, or stays
//! silent for `stall_timeout` (its peer may be partitioned away), it resumes on another random
//! serving peer from the revision after the last one it received — so its log also judges that
//! resuming loses and repeats nothing. It stops once it has received everything up to a target
//! revision the run sets at the end (see [`WatchTarget`]), or at its hard deadline.

use std::time::Duration;

use flotilla_api::kv::{WatchRequest, WatchResponse};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Streaming;

use crate::checker::watch::{ReceivedEvent, WatcherLog};
use crate::client;
use crate::cluster::Endpoints;
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

#[derive(Debug, Clone)]
pub struct WatcherConfig {
    pub name: String,
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

    fn record(&mut self, response: &WatchResponse, max_events: usize) {
        for event in &response.events {
            let Some(kv) = &event.kv else { continue };
            let revision = kv.mod_revision;
            if self.outcome.log.events.len() < max_events {
                self.outcome.log.events.push(ReceivedEvent {
                    revision: revision.max(0) as u64,
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                });
            } else {
                self.outcome.events_dropped += 1;
            }
            self.next_revision = self.next_revision.max(revision + 1);
        }
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

async fn open(
    config: &WatcherConfig,
    addr: std::net::SocketAddr,
    start_revision: i64,
    state: &mut State,
) -> Option<Streaming<WatchResponse>> {
    let mut client = match client::watch(addr) {
        Ok(client) => client,
        Err(e) => {
            state.note_cancel(e.to_string());
            return None;
        }
    };
    let request = WatchRequest {
        key: config.prefix.as_bytes().to_vec(),
        range_end: prefix_end(config.prefix.as_bytes()),
        start_revision,
        prev_kv: false,
    };
    match tokio::time::timeout(config.stall_timeout, client.watch(request)).await {
        Ok(Ok(response)) => Some(response.into_inner()),
        Ok(Err(status)) => {
            state.note_cancel(format!("{addr}: {}", status.message()));
            None
        }
        Err(_) => None,
    }
}

/// Reads one stream until it ends, stalls, is cancelled, or the watcher is done.
async fn follow(
    config: &WatcherConfig,
    mut stream: Streaming<WatchResponse>,
    state: &mut State,
    target: &mut WatchTarget,
) {
    loop {
        let message = tokio::select! {
            message = tokio::time::timeout(config.stall_timeout, stream.message()) => message,
            changed = target.changed() => {
                if changed.is_err() || state.done(target) {
                    return;
                }
                continue;
            }
        };
        let response = match message {
            Ok(Ok(Some(response))) => response,
            Ok(Err(status)) => {
                state.note_cancel(status.message().to_string());
                return;
            }
            // Ended, or silent for too long: resume elsewhere.
            Ok(Ok(None)) | Err(_) => return,
        };
        if response.canceled {
            state.note_cancel(response.cancel_reason.clone());
            return;
        }
        state.record(&response, config.max_events);
        if state.done(target) || Instant::now() >= config.deadline {
            return;
        }
    }
}
