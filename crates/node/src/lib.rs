//! The node agent: container runtime (libcontainer), image store, pod network, probes, logs,
//! restart/backoff and status reports.
