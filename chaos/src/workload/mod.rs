//! Workloads: what clients do to the cluster while faults happen, recorded for the checkers.
//!
//! - [`register`]: clients read, write and compare-and-set a few keys as registers, through any
//!   backend that implements [`register::RegisterBackend`]; [`kv`] is the backend over the
//!   store's KV API. A backend over the Kubernetes-shaped Cluster API (a ConfigMap's data as the
//!   register, `resourceVersion` as the compare) plugs in the same way once that API exists.
//! - [`watcher`]: watch streams on the register prefix, resumed across peers, for the watch
//!   checker; [`committed`] reads back the committed history the watchers are judged against.
//!
//! A workload that churns deployments over node agents (for the no-double-run checker) will be a
//! sibling module that records `checker::overlap::PodRecord`s; the run driver gives every
//! workload the same [`crate::cluster::Endpoints`] and [`crate::clock::RunClock`].

pub mod committed;
pub mod kv;
pub mod register;
pub mod watcher;

/// The key prefix of the register workload; every key it touches starts with it.
pub const REGISTER_PREFIX: &str = "chaos/reg/";

/// The prefix of everything the harness writes (registers, probes, the fence).
pub const CHAOS_PREFIX: &str = "chaos/";

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
}
