//! The node agent: container runtime (libcontainer), image store, pod network, probes, logs,
//! restart/backoff and status reports.
//!
//! - [`image`]: the air-gapped OCI image store (import, verify, unpack, rootfs, GC).
//! - [`runtime`]: pod sandboxes and containers through libcontainer shims, logs, exec,
//!   probes, restart backoff.
//! - [`network`]: pod networking through CNI plugins.
//! - [`agent`]: the connection to the control plane: failover client, informers, heartbeats, lease.
//! - [`hollow`]: simulated nodes that register, heartbeat and report pods Running (no containers).

pub mod agent;
pub mod hollow;
pub mod image;
pub mod network;
pub mod runtime;
