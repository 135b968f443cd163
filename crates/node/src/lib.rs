//! The node agent: container runtime (libcontainer), image store, pod network, probes, logs,
//! restart/backoff and status reports.
//!
//! - [`image`]: the air-gapped OCI image store (import, verify, unpack, rootfs, GC).
//! - [`runtime`]: pod sandboxes and containers through libcontainer shims, logs, exec,
//!   probes, restart backoff.
//! - [`network`]: pod networking through CNI plugins.

pub mod image;
pub mod network;
pub mod runtime;
