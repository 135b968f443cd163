//! Watch delivery checker: did every watcher see each committed change in its key prefix exactly
//! once, in revision order?
//!
//! Owns the input shapes ([`CommittedHistory`], as recorded by a reader of the store, and one
//! [`WatcherLog`] per watcher) and the per-watcher verdicts. A watcher's `start_revision` is
//! inclusive, as in the store's watch API: it may receive events of that revision and later.
//!
//! Per watcher, the checker reports:
//! - an event at a lower revision than one already received (`OutOfOrder`); several events at one
//!   revision are fine when they are distinct keys of one multi-key revision;
//! - the same (revision, key) received twice (`Duplicate`);
//! - an event the committed history does not have, one before the start revision, or one outside
//!   the prefix (`NotCommitted`, `BeforeStart`, `OutsidePrefix`);
//! - a committed change in the prefix, at a revision from the start through the highest revision
//!   received, that never arrived (`Gap`). A watcher that received nothing proves nothing here.
//!
//! The committed history must cover every revision the watchers received.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checker::Verdict;

/// Violations kept per watcher in the report; the total is still counted.
pub const MAX_VIOLATIONS_PER_WATCHER: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// One change committed at a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEvent {
    pub key: String,
    pub kind: EventKind,
}

/// Every committed revision and the keys it changed, as a reader of the store saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedHistory {
    revisions: BTreeMap<u64, Vec<CommittedEvent>>,
}

impl CommittedHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one change of `revision` (a multi-key revision is recorded once per key).
    pub fn record(&mut self, revision: u64, key: &str, kind: EventKind) {
        let event = CommittedEvent {
            key: key.to_owned(),
            kind,
        };
        self.revisions.entry(revision).or_default().push(event);
    }

    pub fn revisions(&self) -> &BTreeMap<u64, Vec<CommittedEvent>> {
        &self.revisions
    }
}

/// One event a watcher received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedEvent {
    pub revision: u64,
    pub key: String,
}

/// What one watcher asked for and received, in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherLog {
    pub name: String,
    pub prefix: String,
    pub start_revision: u64,
    pub events: Vec<ReceivedEvent>,
}

/// One broken promise; `index` is the event's position in the watcher's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum WatchViolation {
    OutOfOrder {
        index: usize,
        revision: u64,
        key: String,
        previous_revision: u64,
    },
    Duplicate {
        index: usize,
        revision: u64,
        key: String,
        first_index: usize,
    },
    NotCommitted {
        index: usize,
        revision: u64,
        key: String,
    },
    BeforeStart {
        index: usize,
        revision: u64,
        key: String,
    },
    OutsidePrefix {
        index: usize,
        revision: u64,
        key: String,
    },
    Gap {
        revision: u64,
        key: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatcherReport {
    pub name: String,
    pub events_received: usize,
    pub violations_total: usize,
    /// The first [`MAX_VIOLATIONS_PER_WATCHER`] violations.
    pub violations: Vec<WatchViolation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchReport {
    pub verdict: Verdict,
    pub watchers: Vec<WatcherReport>,
}

/// Checks every watcher against the committed history.
pub fn check_watches(committed: &CommittedHistory, watchers: &[WatcherLog]) -> WatchReport {
    let committed_set: HashSet<(u64, &str)> = committed
        .revisions
        .iter()
        .flat_map(|(&revision, events)| events.iter().map(move |e| (revision, e.key.as_str())))
        .collect();
    let watchers: Vec<WatcherReport> = watchers
        .iter()
        .map(|watcher| check_watcher(committed, &committed_set, watcher))
        .collect();
    let verdict = if watchers.iter().all(|w| w.violations_total == 0) {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    WatchReport { verdict, watchers }
}

/// Collects at most [`MAX_VIOLATIONS_PER_WATCHER`] violations and counts them all.
struct Violations {
    kept: Vec<WatchViolation>,
    total: usize,
}

impl Violations {
    fn push(&mut self, violation: WatchViolation) {
        self.total += 1;
        if self.kept.len() < MAX_VIOLATIONS_PER_WATCHER {
            self.kept.push(violation);
        }
    }
}

fn check_watcher(
    committed: &CommittedHistory,
    committed_set: &HashSet<(u64, &str)>,
    watcher: &WatcherLog,
) -> WatcherReport {
    let mut found = Violations {
        kept: Vec::new(),
        total: 0,
    };
    let seen = check_received(committed_set, watcher, &mut found);
    if let Some(highest) = watcher.events.iter().map(|e| e.revision).max() {
        let range = committed.revisions.range(watcher.start_revision..=highest);
        for (&revision, events) in range {
            for event in events {
                let key = event.key.as_str();
                if key.starts_with(&watcher.prefix) && !seen.contains_key(&(revision, key)) {
                    let key = key.to_owned();
                    found.push(WatchViolation::Gap { revision, key });
                }
            }
        }
    }
    WatcherReport {
        name: watcher.name.clone(),
        events_received: watcher.events.len(),
        violations_total: found.total,
        violations: found.kept,
    }
}

/// Checks each received event on its own and against the ones before it; returns where each
/// (revision, key) was first received.
fn check_received<'w>(
    committed_set: &HashSet<(u64, &str)>,
    watcher: &'w WatcherLog,
    found: &mut Violations,
) -> HashMap<(u64, &'w str), usize> {
    let mut seen: HashMap<(u64, &str), usize> = HashMap::new();
    let mut highest_revision: Option<u64> = None;
    for (index, event) in watcher.events.iter().enumerate() {
        let (revision, key) = (event.revision, event.key.clone());
        if let Some(&first_index) = seen.get(&(revision, event.key.as_str())) {
            found.push(WatchViolation::Duplicate {
                index,
                revision,
                key,
                first_index,
            });
            continue;
        }
        seen.insert((revision, event.key.as_str()), index);
        if let Some(previous_revision) = highest_revision.filter(|&h| revision < h) {
            found.push(WatchViolation::OutOfOrder {
                index,
                revision,
                key: key.clone(),
                previous_revision,
            });
        }
        highest_revision = highest_revision.max(Some(revision));
        if let Some(violation) = misplaced(committed_set, watcher, index, event) {
            found.push(violation);
        }
    }
    seen
}

/// An event that should not have reached this watcher at all.
fn misplaced(
    committed_set: &HashSet<(u64, &str)>,
    watcher: &WatcherLog,
    index: usize,
    event: &ReceivedEvent,
) -> Option<WatchViolation> {
    let (revision, key) = (event.revision, event.key.clone());
    if !event.key.starts_with(&watcher.prefix) {
        Some(WatchViolation::OutsidePrefix {
            index,
            revision,
            key,
        })
    } else if revision < watcher.start_revision {
        Some(WatchViolation::BeforeStart {
            index,
            revision,
            key,
        })
    } else if !committed_set.contains(&(revision, event.key.as_str())) {
        Some(WatchViolation::NotCommitted {
            index,
            revision,
            key,
        })
    } else {
        None
    }
}

impl fmt::Display for WatchViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchViolation::OutOfOrder {
                index,
                revision,
                key,
                previous_revision,
            } => write!(
                f,
                "event {index} ({key:?} at revision {revision}) came after revision {previous_revision}"
            ),
            WatchViolation::Duplicate {
                index,
                revision,
                key,
                first_index,
            } => write!(
                f,
                "event {index} ({key:?} at revision {revision}) repeats event {first_index}"
            ),
            WatchViolation::NotCommitted { index, revision, key } => write!(
                f,
                "event {index} ({key:?} at revision {revision}) was never committed"
            ),
            WatchViolation::BeforeStart { index, revision, key } => write!(
                f,
                "event {index} ({key:?} at revision {revision}) precedes the start revision"
            ),
            WatchViolation::OutsidePrefix { index, revision, key } => write!(
                f,
                "event {index} ({key:?} at revision {revision}) is outside the prefix"
            ),
            WatchViolation::Gap { revision, key } => {
                write!(f, "missed {key:?} at revision {revision}")
            }
        }
    }
}

impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events: usize = self.watchers.iter().map(|w| w.events_received).sum();
        let bad: Vec<&WatcherReport> = self
            .watchers
            .iter()
            .filter(|w| w.violations_total > 0)
            .collect();
        write!(
            f,
            "watch: {} ({} watchers, {events} events",
            self.verdict,
            self.watchers.len()
        )?;
        match bad.first() {
            None => write!(f, ")"),
            Some(first) => {
                let violations: usize = bad.iter().map(|w| w.violations_total).sum();
                write!(f, ", {violations} violations in {} watchers)", bad.len())?;
                match first.violations.first() {
                    Some(violation) => write!(f, "; watcher {:?}: {violation}", first.name),
                    None => Ok(()),
                }
            }
        }
    }
}
