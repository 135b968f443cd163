//! What the runtime reports about a container: [`ContainerId`], [`ContainerStatus`] and the
//! pure mapping from a shim's recorded [`ShimState`] plus liveness checks to a
//! [`ContainerState`] (so a shim that died, or a container whose exit was never recorded, is
//! reported rather than trusted).

use std::fmt;
use std::time::SystemTime;

use rand::Rng;

use super::error::RuntimeError;
use super::spec::validate_name;
use super::state::{from_unix_nanos, Phase, ShimState};

/// Exit code reported when the real one is unknown (the shim died before recording it).
pub const UNKNOWN_EXIT_CODE: i32 = 255;
/// Exit code reported for a container that never started (as Kubernetes' StartError).
pub const START_FAILED_EXIT_CODE: i32 = 128;
/// Longest container ID: `<pod-uid>.<name>.<8 hex>`.
const MAX_ID_BYTES: usize = 63 + 1 + 63 + 1 + 8;

/// A container of this node: `<pod-uid>.<name>.<suffix>`, unique across restarts of the
/// same container name (each restart is a new container, as in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    pub(crate) fn generate(pod_uid: &str, name: &str) -> ContainerId {
        let suffix: u32 = rand::thread_rng().gen();
        ContainerId(format!("{pod_uid}.{name}.{suffix:08x}"))
    }

    /// Parses an ID as `list` or `start_container` returned it.
    pub fn parse(text: &str) -> Result<ContainerId, RuntimeError> {
        let parts: Vec<&str> = text.split('.').collect();
        let shaped = parts.len() == 3
            && text.len() <= MAX_ID_BYTES
            && parts[2].len() == 8
            && parts[2].bytes().all(|b| b.is_ascii_hexdigit());
        if !shaped {
            return Err(RuntimeError::invalid(
                format!("container id {text:?}"),
                "expected <pod-uid>.<name>.<8 hex digits>",
            ));
        }
        validate_name("pod uid", parts[0])?;
        validate_name("container name", parts[1])?;
        Ok(ContainerId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn pod_uid(&self) -> &str {
        self.0.split('.').next().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.0.split('.').nth(1).unwrap_or("")
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a container's init process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// Exit code 0.
    Completed,
    /// A non-zero exit code, or the container could not start or was lost.
    Error,
    /// The container's cgroup recorded an OOM kill.
    OOMKilled,
    /// Killed by a signal (the exit code is 128 + signal).
    Signaled,
}

/// A container's life as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// The shim is creating the container (seen only after an agent restart mid-start).
    Creating,
    Running {
        started_at: SystemTime,
    },
    Exited {
        exit_code: i32,
        reason: ExitReason,
        started_at: Option<SystemTime>,
        finished_at: SystemTime,
        /// Why it failed when the exit code alone does not say (start error, lost shim).
        message: Option<String>,
    },
}

/// One container, as `status` and `list` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub state: ContainerState,
    /// The init process's pid on the host while it runs.
    pub pid: Option<i32>,
}

impl ContainerStatus {
    pub fn is_running(&self) -> bool {
        matches!(
            self.state,
            ContainerState::Running { .. } | ContainerState::Creating
        )
    }
}

/// Liveness of the processes a state names, checked by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Liveness {
    pub shim: bool,
    pub init: bool,
}

/// Maps a recorded state and the liveness of its processes to what is reported. `now` stands
/// in for the finish time when the shim died without recording one.
pub(crate) fn derive_state(
    state: &ShimState,
    alive: Liveness,
    now: SystemTime,
) -> (ContainerState, Option<i32>) {
    let started_at = state.started_at_ns.map(from_unix_nanos);
    let finished_at = state.finished_at_ns.map(from_unix_nanos).unwrap_or(now);
    let lost = |message: &str| ContainerState::Exited {
        exit_code: UNKNOWN_EXIT_CODE,
        reason: ExitReason::Error,
        started_at,
        finished_at,
        message: Some(message.to_string()),
    };
    match state.phase {
        Phase::Creating if alive.shim => (ContainerState::Creating, None),
        Phase::Creating => (lost("the shim died while creating the container"), None),
        // While the shim lives, it is about to record the exit: still report it running.
        Phase::Running if alive.init || alive.shim => {
            let started_at = started_at.unwrap_or(now);
            let pid = state.init.filter(|_| alive.init).map(|p| p.pid);
            (ContainerState::Running { started_at }, pid)
        }
        Phase::Running => (lost("the shim died before recording the exit"), None),
        Phase::Failed => (
            ContainerState::Exited {
                exit_code: START_FAILED_EXIT_CODE,
                reason: ExitReason::Error,
                started_at,
                finished_at,
                message: state.error.clone(),
            },
            None,
        ),
        Phase::Exited => (exited(state, started_at, finished_at), None),
    }
}

fn exited(
    state: &ShimState,
    started_at: Option<SystemTime>,
    finished_at: SystemTime,
) -> ContainerState {
    let exit_code = state.exit_code.unwrap_or(UNKNOWN_EXIT_CODE);
    let reason = if state.oom_killed {
        ExitReason::OOMKilled
    } else if state.signal.is_some() {
        ExitReason::Signaled
    } else if exit_code == 0 {
        ExitReason::Completed
    } else {
        ExitReason::Error
    };
    ContainerState::Exited {
        exit_code,
        reason,
        started_at,
        finished_at,
        message: state.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::procs::ProcIdentity;

    fn state(phase: Phase, code: Option<i32>, signal: Option<i32>, oom: bool) -> ShimState {
        let pid = ProcIdentity {
            pid: 10,
            start_ticks: 1,
        };
        ShimState {
            phase,
            init: Some(ProcIdentity { pid: 11, ..pid }),
            started_at_ns: Some(1_000),
            finished_at_ns: code.map(|_| 2_000),
            exit_code: code,
            signal,
            oom_killed: oom,
            ..ShimState::creating(pid)
        }
    }

    /// (phase, exit code, signal, oom, shim alive, init alive) → (reason or "running"/"creating", code)
    #[allow(clippy::too_many_arguments)]
    fn check(
        phase: Phase,
        code: Option<i32>,
        signal: Option<i32>,
        oom: bool,
        shim: bool,
        init: bool,
        expected: &str,
        expected_code: Option<i32>,
    ) {
        let s = state(phase, code, signal, oom);
        let (got, pid) = derive_state(&s, Liveness { shim, init }, SystemTime::now());
        let (label, got_code) = match &got {
            ContainerState::Creating => ("creating".to_string(), None),
            ContainerState::Running { .. } => ("running".to_string(), None),
            ContainerState::Exited {
                reason, exit_code, ..
            } => (format!("{reason:?}"), Some(*exit_code)),
        };
        assert_eq!(
            (label.as_str(), got_code),
            (expected, expected_code),
            "{s:?}"
        );
        assert_eq!(pid.is_some(), expected == "running" && init, "pid of {s:?}");
    }

    #[test]
    fn recorded_states_map_to_reported_states() {
        use Phase::*;
        //    phase     code     signal  oom    shim   init   -> reported     code
        check(Creating, None, None, false, true, false, "creating", None);
        check(
            Creating,
            None,
            None,
            false,
            false,
            false,
            "Error",
            Some(255),
        );
        check(Running, None, None, false, true, true, "running", None);
        check(Running, None, None, false, false, true, "running", None);
        check(Running, None, None, false, true, false, "running", None);
        check(Running, None, None, false, false, false, "Error", Some(255));
        check(
            Exited,
            Some(0),
            None,
            false,
            false,
            false,
            "Completed",
            Some(0),
        );
        check(Exited, Some(3), None, false, false, false, "Error", Some(3));
        check(
            Exited,
            Some(137),
            Some(9),
            false,
            false,
            false,
            "Signaled",
            Some(137),
        );
        check(
            Exited,
            Some(137),
            Some(9),
            true,
            false,
            false,
            "OOMKilled",
            Some(137),
        );
        check(
            Exited,
            Some(1),
            None,
            true,
            false,
            false,
            "OOMKilled",
            Some(1),
        );
        check(Failed, None, None, false, false, false, "Error", Some(128));
    }

    fn check_id(text: &str, ok: bool) {
        assert_eq!(ContainerId::parse(text).is_ok(), ok, "{text}");
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = ContainerId::generate("pod-1", "web");
        assert_eq!(ContainerId::parse(id.as_str()).unwrap(), id);
        assert_eq!((id.pod_uid(), id.name()), ("pod-1", "web"));
        check_id("pod-1.web.0000abcd", true);
        check_id("pod-1.web", false);
        check_id("pod-1.web.xyz", false);
        check_id("../x.web.0000abcd", false);
        check_id("pod-1.Web.0000abcd", false);
    }
}
