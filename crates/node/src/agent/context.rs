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
/// Status writes per second over all pods of the node.
pub const STATUS_WRITES_PER_SECOND: u32 = 100;

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

/// Spaces events at least `1 / rate` apart: callers wait for their slot.
pub struct RateLimiter {
    spacing: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    pub fn per_second(rate: u32) -> RateLimiter {
        RateLimiter {
            spacing: Duration::from_secs(1) / rate.max(1),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// Waits until this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.spacing;
            slot
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

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_callers() {
        let limiter = RateLimiter::per_second(10);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
