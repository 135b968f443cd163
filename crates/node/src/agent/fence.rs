//! Self-fencing (design decision 6): when the lease lapses — no heartbeat accepted for `lease`,
//! by this host's monotonic clock — the agent kills every running container at once and
//! starts nothing until a heartbeat is accepted again. The leader reschedules a silent node's
//! pods only after `lease + margin` by its own clock, so by then they are stopped here.
//!
//! [`Fence`] is the shared flag and the record of which containers it killed and why (the pod
//! status reports it); [`run`] is the watchdog that sets and clears it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::heartbeat::Lease;
use crate::runtime::{ContainerId, Readable, Runtime};

/// Containers remembered as killed by the fence (oldest forgotten first).
pub const MAX_FENCE_NOTES: usize = 4096;
/// Longest pause between two looks at the lease.
const MAX_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// Whether the agent is fenced, and the containers the fence killed.
pub struct Fence {
    fenced: watch::Sender<bool>,
    notes: Mutex<(HashMap<ContainerId, String>, VecDeque<ContainerId>)>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            fenced: watch::channel(false).0,
            notes: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }
}

impl Fence {
    pub fn is_fenced(&self) -> bool {
        *self.fenced.borrow()
    }

    /// Changes whenever the agent becomes fenced or is released.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.fenced.subscribe()
    }

    /// Why the fence killed `id`, if it did.
    pub fn note(&self, id: &ContainerId) -> Option<String> {
        self.lock().0.get(id).cloned()
    }

    fn set(&self, fenced: bool) -> bool {
        self.fenced
            .send_if_modified(|f| std::mem::replace(f, fenced) != fenced)
    }

    fn record(&self, id: &ContainerId, why: &str) {
        let mut notes = self.lock();
        if notes.0.insert(id.clone(), why.to_string()).is_none() {
            notes.1.push_back(id.clone());
        }
        while notes.1.len() > MAX_FENCE_NOTES {
            if let Some(old) = notes.1.pop_front() {
                notes.0.remove(&old);
            }
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (HashMap<ContainerId, String>, VecDeque<ContainerId>)> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Watches the lease until the task is dropped; while it has lapsed, kills whatever runs.
pub async fn run(fence: Arc<Fence>, lease: Arc<Lease>, runtime: Arc<Runtime>, started: Instant) {
    let period = (lease.duration() / 20).min(MAX_CHECK_PERIOD);
    let mut published = None;
    loop {
        publish_lease(&lease, &runtime, &mut published);
        if lease.valid(started) {
            if fence.set(false) {
                tracing::info!("lease renewed: the agent starts containers again");
            }
        } else {
            let why = format!(
                "killed by the agent: no heartbeat accepted for {} ms, the node lease lapsed",
                lease.duration().as_millis()
            );
            let newly = fence.set(true);
            if newly {
                tracing::warn!(
                    lease_ms = lease.duration().as_millis() as u64,
                    "lease lapsed: stopping every container"
                );
            }
            kill_running(&fence, &runtime, &why, newly).await;
        }
        tokio::time::sleep(period).await;
    }
}

/// Writes the lease's expiry to the file the containers' shims watch, when it moved, so the
/// containers stop on time even if this agent dies.
fn publish_lease(lease: &Lease, runtime: &Runtime, published: &mut Option<Instant>) {
    let (Some(path), Some(renewed)) = (runtime.config().lease_file.as_ref(), lease.last_renewed())
    else {
        return;
    };
    if *published == Some(renewed) {
        return;
    }
    let now_ns = crate::runtime::lease::monotonic_now_ns();
    let renewed_ns = now_ns.saturating_sub(renewed.elapsed().as_nanos() as u64);
    let valid_until = renewed_ns + lease.duration().as_nanos() as u64;
    match crate::runtime::lease::write(path, valid_until) {
        Ok(()) => *published = Some(renewed),
        Err(e) => {
            tracing::error!(error = %e, path = %path.display(), "cannot publish the node lease")
        }
    }
}

/// SIGKILLs every running container at once and waits for them to be gone. A container
/// whose record cannot be read is reported (as an error on the first look of a lapse, not on
/// each of the looks every period after it) and killed through its cgroup (see
/// `Runtime::stop`); its shim also kills it when it sees the lease lapse.
async fn kill_running(fence: &Fence, runtime: &Runtime, why: &str, first_look: bool) {
    let Readable { listed, unreadable } = match runtime.list_readable() {
        Ok(readable) => readable,
        Err(e) => {
            tracing::error!(error = %e, "fenced but cannot list containers");
            return;
        }
    };
    let mut unknown = Vec::with_capacity(unreadable.len());
    for (id, e) in unreadable {
        if first_look {
            tracing::error!(container = %id, error = %e, "fenced but cannot read the container's record");
        } else {
            tracing::debug!(container = %id, error = %e, "fenced but cannot read the container's record");
        }
        unknown.push(id);
    }
    let running: Vec<ContainerId> = listed
        .into_iter()
        .filter(|c| c.is_running())
        .map(|c| c.id)
        .collect();
    for id in &running {
        fence.record(id, why);
    }
    // A container without a readable record fails the same way every look: an error once.
    let kills = running
        .iter()
        .map(|id| (id, true))
        .chain(unknown.iter().map(|id| (id, first_look)))
        .map(|(id, loud)| async move {
            if let Err(e) = runtime.stop(id, Duration::ZERO).await {
                if loud {
                    tracing::error!(container = %id, error = %e, "fence could not kill a container");
                } else {
                    tracing::debug!(container = %id, error = %e, "fence could not kill a container");
                }
            }
        });
    futures::future::join_all(kills).await;
}
