//! What a pod worker remembers about one container name: its current and previous instances,
//! restart backoff, the decision about the current exit, why it cannot start (if so), the
//! image pins of its instances, its probes, and why the agent killed an instance.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::image::PinGuard;
use crate::runtime::{BackoffState, ContainerId};

use super::context::Instances;
use super::plan::Decision;
use super::probes::ProbeHandle;
use super::spec::Blocker;
use super::status::Note;

/// The instance a container name is at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Current {
    /// Nothing started yet.
    #[default]
    None,
    Instance(ContainerId),
    /// The runtime could not start it (counts as an exit with the start-failure code).
    StartFailed {
        at: SystemTime,
        message: String,
    },
}

#[derive(Default)]
pub struct ContainerRecord {
    pub current: Current,
    pub previous: Option<ContainerId>,
    pub backoff: BackoffState,
    /// The decision about the exit of `current`, keyed by [`ContainerRecord::exit_token`].
    pub decided: Option<(String, Decision)>,
    /// Why no instance can be started now (reported as the waiting reason).
    pub blocker: Option<Blocker>,
    /// Images of the current and previous instances (their root filesystems use them).
    pub pins: HashMap<ContainerId, PinGuard>,
    pub liveness: Option<ProbeHandle>,
    pub readiness: Option<ProbeHandle>,
    /// The instance the probes run against.
    pub probed: Option<ContainerId>,
    /// Why the agent killed an instance (liveness), for its terminated message.
    pub notes: HashMap<ContainerId, Note>,
}

impl ContainerRecord {
    /// Identifies the exit of the current instance (a restart starts a new one).
    pub fn exit_token(&self) -> Option<String> {
        match &self.current {
            Current::None => None,
            Current::Instance(id) => Some(id.to_string()),
            Current::StartFailed { at, .. } => {
                let nanos = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                Some(format!("start-failed@{nanos}"))
            }
        }
    }

    /// The decision about the current exit, if one was made.
    pub fn decision(&self) -> Option<&Decision> {
        let token = self.exit_token()?;
        self.decided
            .as_ref()
            .filter(|(t, _)| *t == token)
            .map(|(_, d)| d)
    }

    pub fn current_id(&self) -> Option<&ContainerId> {
        match &self.current {
            Current::Instance(id) => Some(id),
            _ => None,
        }
    }

    pub fn instances(&self) -> Instances {
        Instances {
            current: self.current_id().cloned(),
            previous: self.previous.clone(),
        }
    }

    pub fn stop_probes(&mut self) {
        self.liveness = None;
        self.readiness = None;
        self.probed = None;
    }

    /// Forgets pins and notes of instances that are neither current nor previous.
    pub fn prune(&mut self) {
        let keep = self.instances();
        let kept = |id: &ContainerId| {
            Some(id) == keep.current.as_ref() || Some(id) == keep.previous.as_ref()
        };
        self.pins.retain(|id, _| kept(id));
        self.notes.retain(|id, _| kept(id));
    }
}
