//! The node agent: it registers this machine as a `Node`, holds the lease its heartbeats renew
//! (fencing itself when it lapses), watches the pods bound here and runs them as containers,
//! reports their status, and serves their logs and exec on the agent API.
//!
//! Codemap:
//! - `run` — [`Agent`] (`start`, `shutdown`) and [`run`]; `config` — [`AgentConfig`];
//!   `error` — [`AgentError`].
//! - Control plane: `client` (failover API client), `source` (informers over the API),
//!   `heartbeat` (heartbeats and the [`heartbeat::Lease`]), `register` (the Node object),
//!   `host` (what the Node reports of the machine).
//! - Pods: `dispatch` (informer → one worker per pod UID; fencing of stale orders and
//!   tombstones), `worker` (the level-triggered reconcile pass of one pod), `instance`
//!   (starting a container instance), `teardown` (stopping, removing, confirming deletion),
//!   `adopt` and `plan` (pure decisions), `record` (per-container memory), `spec` and
//!   `volumes` (env, resources, mounts), `probes`, `poddir` (per-pod journal and volumes).
//! - Status: `status` (pure), `report` (bounded, conditional writes).
//! - `fence` — self-fencing on lease lapse; `images` — side-loading from `images/import/`;
//!   `service` — the agent API (logs, exec); `context` — what the tasks share.
//!
//! Architecture invariant: a pod worker is handed only versions of its pod newer than the
//! one it has, and a UID whose teardown finished is never started again.
//! Architecture invariant: while fenced, the agent starts nothing and kills whatever runs.
//! Architecture invariant: the agent never blocks a pod's reconcile on a status write.

mod adopt;
pub mod client;
mod config;
mod context;
mod dispatch;
mod error;
mod fence;
pub mod heartbeat;
mod host;
mod images;
mod instance;
mod plan;
mod poddir;
mod probes;
mod record;
mod register;
mod report;
mod run;
mod service;
pub mod source;
mod spec;
mod status;
mod teardown;
mod volumes;
mod worker;

pub use config::{AgentConfig, Reserved, DEFAULT_MAX_PODS};
pub use error::AgentError;
pub use images::MAX_IMPORTS_PER_SCAN;
pub use register::AGENT_ENDPOINT_ANNOTATION;
pub use run::{run, Agent};
pub use service::{DEFAULT_EXEC_TIMEOUT, MAX_EXECS, MAX_EXEC_TIMEOUT, MAX_LOG_STREAMS};
pub use status::{CONTAINER_ID_SCHEME, IMAGE_PULL_BACK_OFF, NODE_LEASE_LAPSED};
