//! The pod status the agent reports, as pure functions of what it knows: per-container reports
//! (built by the pod worker from the runtime's view and its own restart decisions), the pod's
//! address, and the status last reported (`baseline`), whose condition transition times and
//! start time are kept when nothing changed so that an unchanged pod yields an identical
//! status — the writer compares and writes only differences.
//!
//! The phase follows the kubelet: Pending while a container waits to start for the first time,
//! Running while any runs (or all stopped but the policy restarts them), Succeeded or Failed
//! once every container stopped for good.

use std::time::SystemTime;

use flotilla_state::objects::{
    ConditionStatus, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, PodCondition, PodPhase, PodStatus, RestartPolicy, Time,
};

use crate::runtime::{self, ExitReason};

/// Waiting reason of a container that is being created.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting reason of a container whose image is not in the node's store.
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
/// Waiting reason of a container whose image reference does not parse.
pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
/// Waiting reason of a container whose image could not be read from the store.
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
/// Waiting reason of a container whose environment or volumes could not be resolved.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// Waiting reason of a container whose spec cannot be turned into a process (no command).
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
/// Terminated reason of a container killed by the agent because its lease lapsed.
pub const NODE_LEASE_LAPSED: &str = "NodeLeaseLapsed";
/// Prefix of container IDs in statuses.
pub const CONTAINER_ID_SCHEME: &str = "flotilla://";

/// What the agent reports about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport {
    pub name: String,
    pub image: String,
    /// The runtime ID of the instance `state` describes; empty before the first start.
    pub container_id: String,
    pub state: ContainerState,
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    pub restart_count: u32,
}

/// What the agent reports about the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    pub containers: Vec<ContainerReport>,
    pub restart_policy: RestartPolicy,
    pub host_ip: String,
    pub pod_ip: String,
    /// A pod-level problem (e.g. its network could not be set up): reason and message.
    pub problem: Option<(String, String)>,
}

pub fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: reason.to_string(),
            message: message.to_string(),
        }),
        ..ContainerState::default()
    }
}

pub fn running(started_at: SystemTime) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(time_of(started_at)),
        }),
        ..ContainerState::default()
    }
}

pub fn terminated_state(terminated: ContainerStateTerminated) -> ContainerState {
    ContainerState {
        terminated: Some(terminated),
        ..ContainerState::default()
    }
}

pub fn time_of(t: SystemTime) -> Time {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Time::from_unix_millis(ms)
}

/// The terminated state of an exited runtime container; `None` while it runs. `note` (why
/// the agent killed it, e.g. a failed liveness probe or a lapsed lease) replaces the message.
pub fn terminated_of(
    state: &runtime::ContainerState,
    note: Option<&Note>,
) -> Option<ContainerStateTerminated> {
    let runtime::ContainerState::Exited {
        exit_code,
        reason,
        started_at,
        finished_at,
        message,
    } = state
    else {
        return None;
    };
    let mut text = match reason {
        ExitReason::Completed => "Completed",
        ExitReason::OOMKilled => "OOMKilled",
        ExitReason::Error | ExitReason::Signaled => "Error",
    }
    .to_string();
    let mut message = message.clone().unwrap_or_default();
    if let Some(note) = note {
        if let Some(reason) = &note.reason {
            text = reason.clone();
        }
        message = note.message.clone();
    }
    Some(ContainerStateTerminated {
        exit_code: *exit_code,
        signal: (*reason == ExitReason::Signaled && *exit_code > 128).then(|| exit_code - 128),
        reason: text,
        message,
        started_at: started_at.map(time_of),
        finished_at: Some(time_of(*finished_at)),
    })
}

/// Why the agent itself stopped a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Replaces the terminated reason when set.
    pub reason: Option<String>,
    pub message: String,
}

/// The pod phase from its containers, as the kubelet computes it.
pub fn phase(policy: RestartPolicy, containers: &[ContainerReport]) -> PodPhase {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        if c.state.running.is_some() {
            running += 1;
        } else if let Some(t) = &c.state.terminated {
            stopped += 1;
            succeeded += usize::from(t.exit_code == 0);
        } else if c
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 || containers.is_empty() {
        return PodPhase::Pending;
    }
    if running > 0 {
        return PodPhase::Running;
    }
    match policy {
        RestartPolicy::Always => PodPhase::Running,
        RestartPolicy::OnFailure if stopped == succeeded => PodPhase::Succeeded,
        RestartPolicy::OnFailure => PodPhase::Running,
        RestartPolicy::Never if stopped == succeeded => PodPhase::Succeeded,
        RestartPolicy::Never => PodPhase::Failed,
    }
}

/// The full status to report. `baseline` is the status last reported (start time and
/// transition times are kept from it); `now` stamps what is new.
pub fn pod_status(report: &PodReport, baseline: Option<&PodStatus>, now: &Time) -> PodStatus {
    let phase = phase(report.restart_policy, &report.containers);
    let all_ready = !report.containers.is_empty() && report.containers.iter().all(|c| c.ready);
    let ready = all_ready && phase == PodPhase::Running;
    let flag = |b: bool| {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    };
    let conditions = [
        ("PodScheduled", ConditionStatus::True),
        ("Initialized", ConditionStatus::True),
        ("ContainersReady", flag(all_ready)),
        ("Ready", flag(ready)),
    ]
    .into_iter()
    .map(|(type_, status)| condition(type_, status, baseline, now))
    .collect();
    let (reason, message) = report.problem.clone().unwrap_or_default();
    PodStatus {
        phase: Some(phase),
        conditions,
        message,
        reason,
        host_ip: report.host_ip.clone(),
        pod_ip: report.pod_ip.clone(),
        start_time: Some(
            baseline
                .and_then(|b| b.start_time.clone())
                .unwrap_or_else(|| now.clone()),
        ),
        container_statuses: report.containers.iter().map(container_status).collect(),
    }
}

fn condition(
    type_: &str,
    status: ConditionStatus,
    baseline: Option<&PodStatus>,
    now: &Time,
) -> PodCondition {
    let before = baseline.and_then(|b| b.conditions.iter().find(|c| c.type_ == type_));
    let since = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(now.clone()),
    };
    PodCondition {
        type_: type_.to_string(),
        status,
        reason: String::new(),
        message: String::new(),
        last_probe_time: None,
        last_transition_time: since,
    }
}

fn container_status(c: &ContainerReport) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        ready: c.ready,
        restart_count: c.restart_count.min(i32::MAX as u32) as i32,
        image: c.image.clone(),
        container_id: if c.container_id.is_empty() {
            String::new()
        } else {
            format!("{CONTAINER_ID_SCHEME}{}", c.container_id)
        },
        state: Some(c.state.clone()),
        last_state: c.last_state.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn exited(code: i32, reason: ExitReason) -> runtime::ContainerState {
        runtime::ContainerState::Exited {
            exit_code: code,
            reason,
            started_at: Some(at(1)),
            finished_at: at(2),
            message: None,
        }
    }

    /// A container report from a short spelling: "run", "wait", "ok" (exit 0), "fail"
    /// (exit 1), "loop" (waiting after a failed run).
    fn container(kind: &str) -> ContainerReport {
        let term =
            |code| terminated_state(terminated_of(&exited(code, ExitReason::Error), None).unwrap());
        let (state, last_state, ready) = match kind {
            "run" => (running(at(1)), None, true),
            "wait" => (waiting(CONTAINER_CREATING, ""), None, false),
            "ok" => (term(0), None, false),
            "fail" => (term(1), None, false),
            "loop" => (waiting("CrashLoopBackOff", ""), Some(term(1)), false),
            other => panic!("{other}"),
        };
        ContainerReport {
            name: kind.into(),
            image: "busybox".into(),
            container_id: String::new(),
            state,
            last_state,
            ready,
            restart_count: 0,
        }
    }

    fn check(policy: RestartPolicy, kinds: &[&str], expected: PodPhase) {
        let containers: Vec<ContainerReport> = kinds.iter().map(|k| container(k)).collect();
        assert_eq!(phase(policy, &containers), expected, "{policy:?} {kinds:?}");
    }

    #[test]
    fn phases_follow_the_kubelet() {
        use PodPhase::*;
        use RestartPolicy::*;
        check(Always, &["wait"], Pending);
        check(Always, &["run", "wait"], Pending);
        check(Always, &["run"], Running);
        check(Always, &["loop"], Running);
        check(Always, &["ok"], Running);
        check(OnFailure, &["ok", "ok"], Succeeded);
        check(OnFailure, &["ok", "fail"], Running);
        check(Never, &["ok", "fail"], Failed);
        check(Never, &["ok"], Succeeded);
        check(Never, &["run", "fail"], Running);
        check(Never, &[], Pending);
    }

    #[test]
    fn exits_map_to_kubernetes_reasons() {
        let t = terminated_of(&exited(137, ExitReason::OOMKilled), None).unwrap();
        assert_eq!(
            (t.reason.as_str(), t.exit_code, t.signal),
            ("OOMKilled", 137, None)
        );
        let t = terminated_of(&exited(143, ExitReason::Signaled), None).unwrap();
        assert_eq!((t.reason.as_str(), t.signal), ("Error", Some(15)));
        let t = terminated_of(&exited(0, ExitReason::Completed), None).unwrap();
        assert_eq!(t.reason, "Completed");
        let note = Note {
            reason: Some(NODE_LEASE_LAPSED.into()),
            message: "lease".into(),
        };
        let t = terminated_of(&exited(137, ExitReason::Signaled), Some(&note)).unwrap();
        assert_eq!(
            (t.reason.as_str(), t.message.as_str()),
            (NODE_LEASE_LAPSED, "lease")
        );
        let running = runtime::ContainerState::Running { started_at: at(1) };
        assert!(terminated_of(&running, None).is_none());
    }

    fn report(kinds: &[&str]) -> PodReport {
        PodReport {
            containers: kinds.iter().map(|k| container(k)).collect(),
            restart_policy: RestartPolicy::Always,
            host_ip: "127.0.0.1".into(),
            pod_ip: "198.18.1.2".into(),
            problem: None,
        }
    }

    #[test]
    fn an_unchanged_pod_reports_an_identical_status() {
        let t0 = Time::from_unix_millis(1_000);
        let t1 = Time::from_unix_millis(9_000);
        let first = pod_status(&report(&["wait"]), None, &t0);
        assert_eq!(first.phase, Some(PodPhase::Pending));
        assert_eq!(first.start_time, Some(t0.clone()));
        let again = pod_status(&report(&["wait"]), Some(&first), &t1);
        assert_eq!(again, first, "nothing changed, nothing to write");
        let running = pod_status(&report(&["run"]), Some(&first), &t1);
        assert_eq!(running.phase, Some(PodPhase::Running));
        assert_eq!(running.start_time, Some(t0.clone()), "start time is kept");
        let ready = running
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, ConditionStatus::True);
        assert_eq!(ready.last_transition_time, Some(t1.clone()));
        let scheduled = &running.conditions[0];
        assert_eq!(scheduled.last_transition_time, Some(t0));
    }
}
