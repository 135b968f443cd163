//! What the agent's tasks share ([`Ctx`]): config, API client, runtime, image store, the
//! fence, the pod directory the agent API looks pods up in, the tombstones of pods whose
//! deletion finished, and the global bound on status writes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::client::ApiClient;
use super::config::AgentConfig;
use super::fence::Fence;
use crate::image::ImageStore;
use crate::runtime::{ContainerId, Runtime};

/// Pod UIDs remembered as finished (oldest forgotten first); UIDs are never reused, so this
/// only has to outlast the cluster's memory of the pod.
pub const MAX_TOMBSTONES: usize = 10_000;
/// Status writes per second over all pods of the node, sustained.
pub const STATUS_WRITES_PER_SECOND: u32 = 100;
/// Status writes the node may make at once above that rate (kubelet's `--kube-api-burst`).
/// Every pod started writes twice (creating, then running): without a burst, N writes asked
/// for together take N × 10 ms, so a full node of 110 pods started at once (after an agent
/// restart, say) would need 2.2 s to report them however fast they started.
pub const STATUS_WRITES_BURST: u32 = 200;

pub struct Ctx {
    pub config: AgentConfig,
    pub client: ApiClient,
    pub runtime: Arc<Runtime>,
    pub images: Arc<ImageStore>,
    pub node_ip: IpAddr,
    pub fence: Arc<Fence>,
    pub directory: Arc<Directory>,
    pub tombstones: Tombstones,
    pub status_rate: RateLimiter,
}

/// Pod UIDs whose teardown finished: they are never started again.
#[derive(Default)]
pub struct Tombstones(Mutex<(HashSet<String>, VecDeque<String>)>);

impl Tombstones {
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().0.contains(uid)
    }

    pub fn insert(&self, uid: &str) {
        let mut t = self.lock();
        if t.0.insert(uid.to_string()) {
            t.1.push_back(uid.to_string());
        }
        while t.1.len() > MAX_TOMBSTONES {
            if let Some(old) = t.1.pop_front() {
                t.0.remove(&old);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, VecDeque<String>)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The instances of one container name: the one running (or last run) and the one before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instances {
    pub current: Option<ContainerId>,
    pub previous: Option<ContainerId>,
}

/// One pod as the agent API sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodEntry {
    pub uid: String,
    /// Container names in spec order, with their instances.
    pub containers: Vec<(String, Instances)>,
}

/// `namespace/name` → the pod's containers, kept by the pod workers.
#[derive(Default)]
pub struct Directory(RwLock<HashMap<String, PodEntry>>);

impl Directory {
    pub fn publish(&self, namespace: &str, name: &str, entry: PodEntry) {
        let key = format!("{namespace}/{name}");
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.get(&key) != Some(&entry) {
            map.insert(key, entry);
        }
    }

    /// Forgets the pod if the entry is still the one of `uid`.
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let key = format!("{namespace}/{name}");
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.get(&key).is_some_and(|e| e.uid == uid) {
            map.remove(&key);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(&format!("{namespace}/{name}")).cloned()
    }
}

/// A token bucket: up to `burst` events at once, `rate` per second sustained; callers past
/// that wait for their slot, in the order they asked. Kept as the time the next event would
/// be due at the sustained rate (the generic cell rate algorithm), so it needs no refill task.
pub struct RateLimiter {
    spacing: Duration,
    /// How far ahead of now that due time may run before callers wait: `burst - 1` spacings.
    ahead: Duration,
    due: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(rate_per_second: u32, burst: u32) -> RateLimiter {
        let spacing = Duration::from_secs(1) / rate_per_second.max(1);
        RateLimiter {
            spacing,
            ahead: spacing * burst.max(1).saturating_sub(1),
            due: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits until this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut due = self.due.lock().await;
            let now = Instant::now();
            let this = (*due).max(now);
            *due = this + self.spacing;
            this.checked_sub(self.ahead).map_or(now, |t| t.max(now))
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Container names of a pod with their instances, in spec order.
pub fn entry_of(uid: &str, names: &[String], instances: &BTreeMap<String, Instances>) -> PodEntry {
    PodEntry {
        uid: uid.to_string(),
        containers: names
            .iter()
            .map(|n| (n.clone(), instances.get(n).cloned().unwrap_or_default()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_are_bounded_and_forget_the_oldest() {
        let t = Tombstones::default();
        for i in 0..MAX_TOMBSTONES + 5 {
            t.insert(&format!("uid-{i}"));
        }
        assert!(!t.contains("uid-0"));
        assert!(t.contains("uid-5"));
        assert!(t.contains(&format!("uid-{}", MAX_TOMBSTONES + 4)));
    }

    /// How long `n` callers in turn wait for `limiter` (in the paused clock of the test).
    async fn acquire_n(limiter: &RateLimiter, n: usize) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            limiter.acquire().await;
        }
        start.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_callers() {
        let limiter = RateLimiter::new(10, 1);
        assert_eq!(acquire_n(&limiter, 5).await, Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_lets_a_burst_through_then_keeps_the_rate() {
        let limiter = RateLimiter::new(10, 3);
        let start = Instant::now();
        let burst = acquire_n(&limiter, 3).await;
        assert_eq!(burst, Duration::ZERO, "the burst waits for nothing");
        acquire_n(&limiter, 2).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(200),
            "then 10 a second"
        );
        // Idle for long enough, the whole burst is available again, and no more.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(acquire_n(&limiter, 4).await, Duration::from_millis(100));
    }
}
