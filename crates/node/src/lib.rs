//! The node agent: container runtime (libcontainer), image store, pod network, probes, logs,
//! restart/backoff and status reports.
//!
//! - [`image`]: the air-gapped OCI image store (import, verify, unpack, rootfs, GC).

pub mod image;
