//! The node's container runtime: pod sandboxes (shared network, IPC and UTS namespaces) and
//! containers run through youki's libcontainer, each by its own single-threaded shim process
//! that outlives the agent, so an agent restart adopts running containers instead of
//! duplicating them. Plus the pure logic the agent schedules around containers: probes and
//! restart backoff.
//!
//! Codemap:
//! - `service` — [`Runtime`], [`RuntimeConfig`], state-directory layout, `status`, `list`;
//!   `lifecycle` — `start_container`, `stop`, `remove`; `sandbox` — [`Sandbox`] create and
//!   remove; `exec` — `exec`; `logs` — `logs`.
//! - `shim/` — the helper processes (`__shim run|exec|cleanup|zygote`), the only code that
//!   calls libcontainer; `helper` — spawning them and waiting on pidfds; `podns` — creating and
//!   pinning a pod's own namespaces on a short-lived agent thread; `zygote` — the agent's end
//!   of the process that forks container shims.
//! - `spec` — [`ContainerSpec`]; `oci` — the OCI spec built from it (pure); `cgroups` — v1/v2
//!   paths, OOM counters and killing a cgroup; `state` — on-disk records; `procs` — pid + start-time identity;
//!   `container` — reported status (pure); `logfile` — CRI log format; `mounts` — mount table.
//! - `probe` — [`ProbeState`] (pure); `probe_exec` — probe IO; `restart` — restart policy
//!   and backoff (pure).
//!
//! Architecture invariant: no libcontainer call, `clone` or `setns` happens in the agent
//! process; only shims and helpers (fresh single-threaded processes) do them. The one
//! `unshare` in the agent (network, IPC and UTS only, which move just the calling thread) runs
//! on a thread spawned for it that exits right after (`podns`).
//! Architecture invariant: only a container's shim writes its `state.json`, always by rename.
//! Architecture invariant: a directory is never deleted while something is mounted below it.

mod cgroups;
mod container;
mod error;
mod exec;
mod helper;
pub mod journal;
pub mod lease;
mod lifecycle;
mod logfile;
mod logs;
pub(crate) mod mounts;
mod oci;
mod podns;
mod probe;
mod probe_exec;
mod procs;
mod restart;
mod sandbox;
mod service;
pub mod shim;
mod spec;
mod state;
mod zygote;

pub use cgroups::{container_cgroup, pod_cgroup, CgroupMode, CGROUP_ROOT};
pub use container::{
    ContainerId, ContainerState, ContainerStatus, ExitReason, START_FAILED_EXIT_CODE,
    UNKNOWN_EXIT_CODE,
};
pub use error::RuntimeError;
pub use exec::{ExecOutput, MAX_EXEC_OUTPUT_BYTES};
pub use helper::MAX_HELPER_STDERR_BYTES;
pub use logfile::{parse_line, LogLine, Stream, MAX_LINE_BYTES, MIN_LOG_MAX_BYTES};
pub use logs::{LogOptions, LogStream, LOG_STREAM_BUFFER, MAX_TAIL_LINES};
pub use oci::{
    cpu_quota_us, cpu_shares, PodNamespaces, CPU_PERIOD_US, DEFAULT_CAPABILITIES, MASKED_PATHS,
    NOFILE_LIMIT, READONLY_PATHS,
};
pub use probe::{ProbeOutcome, ProbeResult, ProbeState, ProbeTiming};
pub use probe_exec::{http_get_status, run_probe, tcp_connects, ProbeAction};
pub use procs::ProcIdentity;
pub use restart::{
    decide_restart, waiting_reason, BackoffConfig, BackoffState, RestartDecision, RestartPolicy,
    CRASH_LOOP_BACK_OFF,
};
pub use sandbox::{Sandbox, SandboxNetwork, MAX_HOSTNAME_BYTES};
pub use service::{Readable, Runtime, RuntimeConfig, MAX_LISTED};
pub use spec::{ContainerSpec, Resources, UserSpec, VolumeMount, MAX_NAME_BYTES, MAX_SPEC_ITEMS};
pub use state::MAX_STATE_FILE_BYTES;
pub use zygote::{ZYGOTE_REPLY_TIMEOUT, ZYGOTE_RETRY};
