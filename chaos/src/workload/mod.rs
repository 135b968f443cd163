//! Workloads: what clients do to the cluster while faults happen, recorded for the checkers.
//!
//! - [`register`]: clients read, write and compare-and-set a few keys as registers, through any
//!   backend that implements [`register::RegisterBackend`]; [`kv`] is the backend over the
//!   store's KV API, [`configmap`] the one over the Kubernetes-shaped Cluster API (a ConfigMap's
//!   `data.value` as the register, `resourceVersion` as the compare).
//! - [`watcher`]: watch streams on the register prefix (KV Watch or Cluster API Watch), resumed
//!   across peers, for the watch checker; [`committed`] reads back the committed history the
//!   watchers are judged against.
//!
//! [`Workload`] names the register backend of a run and everything that depends on it: where
//! its registers live in the store's key space and how a stored value decodes.
//!
//! - [`churn`]: with node agents, a busybox Deployment scaled and rolled on a seeded schedule
//!   (its pods are judged by [`crate::podcheck`]: no pod on two nodes at once, convergence).
//!
//! The run driver gives every workload the same [`crate::cluster::Endpoints`] and
//! [`crate::clock::RunClock`].

pub mod churn;
pub mod committed;
pub mod configmap;
pub mod kv;
pub mod register;
pub mod watcher;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::Value;

/// The key prefix of the register workload; every key it touches starts with it.
pub const REGISTER_PREFIX: &str = "chaos/reg/";

/// The prefix of everything the harness writes (registers, probes, the fence).
pub const CHAOS_PREFIX: &str = "chaos/";

/// Which API the register workload and its watchers go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Registers are keys `chaos/reg/NNN` of the KV API.
    Kv,
    /// Registers are ConfigMaps `reg-NNN` in namespace `default`, through the Cluster API.
    #[value(name = "configmap")]
    #[serde(rename = "configmap")]
    ConfigMap,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Kv => "kv",
            Workload::ConfigMap => "configmap",
        }
    }

    /// The store key prefix of every register (register `k` is this plus `k` in three digits).
    pub fn register_prefix(self) -> &'static str {
        match self {
            Workload::Kv => REGISTER_PREFIX,
            Workload::ConfigMap => configmap::REGISTER_KEY_PREFIX,
        }
    }

    /// The prefix watchers subscribe to; the watch checker holds them to every committed change
    /// under it.
    pub fn watch_prefix(self) -> &'static str {
        match self {
            Workload::Kv => REGISTER_PREFIX,
            Workload::ConfigMap => configmap::NAMESPACE_KEY_PREFIX,
        }
    }

    /// The prefix whose history is replayed at the end; it holds the registers and the fence.
    pub fn replay_prefix(self) -> &'static str {
        match self {
            Workload::Kv => CHAOS_PREFIX,
            Workload::ConfigMap => configmap::CONFIGMAPS_KEY_PREFIX,
        }
    }

    /// A register's value from the bytes the store holds under its key.
    pub fn decode(self, stored: &[u8]) -> Value {
        match self {
            Workload::Kv => kv::decode_value(stored),
            Workload::ConfigMap => configmap::decode_object(stored),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The end of the key range that holds exactly the keys starting with `prefix` (the etcd
/// convention: the prefix with its last byte incremented).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end(b"chaos/reg/"), b"chaos/reg0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn register_keys_lie_under_the_watch_and_replay_prefixes() {
        for workload in [Workload::Kv, Workload::ConfigMap] {
            let key = register::key_name(workload.register_prefix(), 7);
            assert!(key.starts_with(workload.watch_prefix()), "{key}");
            assert!(key.starts_with(workload.replay_prefix()), "{key}");
        }
        assert_eq!(
            register::key_name(Workload::ConfigMap.register_prefix(), 7),
            "/registry/configmaps/default/reg-007"
        );
    }
}
