//! Adoption after an agent restart (pure): the runtime's containers of one pod, grouped by
//! container name into the instance to keep as current (a running one, else the newest
//! exited), the one before it (kept for `logs --previous` and `lastState`), and leftovers to
//! stop and remove (duplicates, older exits, names the pod does not have).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::runtime::{ContainerId, ContainerState, ContainerStatus};

use super::context::Instances;

/// The grouping of one pod's containers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    pub instances: BTreeMap<String, Instances>,
    pub leftovers: Vec<ContainerId>,
}

/// Groups `containers` (all of one pod) for a pod with container `names`.
pub fn adopt(containers: &[ContainerStatus], names: &[String]) -> Adoption {
    let mut by_name: BTreeMap<&str, Vec<&ContainerStatus>> = BTreeMap::new();
    let mut out = Adoption::default();
    for c in containers {
        if names.iter().any(|n| n == c.id.name()) {
            by_name.entry(c.id.name()).or_default().push(c);
        } else {
            out.leftovers.push(c.id.clone());
        }
    }
    for (name, mut list) in by_name {
        // Live first, then by time, newest first.
        list.sort_by_key(|c| Reverse((c.is_running(), when(&c.state), c.id.clone())));
        let mut list = list.into_iter();
        let current = list.next().map(|c| c.id.clone());
        let previous = list
            .by_ref()
            .find(|c| !c.is_running())
            .map(|c| c.id.clone());
        out.leftovers.extend(
            containers
                .iter()
                .filter(|c| c.id.name() == name)
                .filter(|c| Some(&c.id) != current.as_ref() && Some(&c.id) != previous.as_ref())
                .map(|c| c.id.clone()),
        );
        out.instances
            .insert(name.to_string(), Instances { current, previous });
    }
    out.leftovers.sort();
    out
}

/// When a container last changed: start of a running one, end of an exited one.
fn when(state: &ContainerState) -> Option<SystemTime> {
    match state {
        ContainerState::Creating => None,
        ContainerState::Running { started_at } => Some(*started_at),
        ContainerState::Exited { finished_at, .. } => Some(*finished_at),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::ExitReason;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    /// `name.suffix` running since `t` (`run`) or exited at `t` (`exit`).
    fn c(name: &str, suffix: &str, kind: &str, t: u64) -> ContainerStatus {
        let state = match kind {
            "run" => ContainerState::Running { started_at: at(t) },
            _ => ContainerState::Exited {
                exit_code: 1,
                reason: ExitReason::Error,
                started_at: None,
                finished_at: at(t),
                message: None,
            },
        };
        ContainerStatus {
            id: ContainerId::parse(&format!("pod-1.{name}.{suffix}")).unwrap(),
            state,
            pid: None,
        }
    }

    fn id(name: &str, suffix: &str) -> ContainerId {
        ContainerId::parse(&format!("pod-1.{name}.{suffix}")).unwrap()
    }

    #[test]
    fn the_running_instance_is_kept_with_the_newest_exit_before_it() {
        let containers = vec![
            c("web", "0000000a", "exit", 10),
            c("web", "0000000b", "exit", 20),
            c("web", "0000000c", "run", 25),
            c("log", "0000000d", "exit", 30),
            c("gone", "0000000e", "run", 5),
        ];
        let names = vec!["web".to_string(), "log".to_string()];
        let got = adopt(&containers, &names);
        assert_eq!(
            got.instances["web"],
            Instances {
                current: Some(id("web", "0000000c")),
                previous: Some(id("web", "0000000b")),
            }
        );
        assert_eq!(
            got.instances["log"],
            Instances {
                current: Some(id("log", "0000000d")),
                previous: None,
            }
        );
        assert_eq!(
            got.leftovers,
            vec![id("gone", "0000000e"), id("web", "0000000a")]
        );
    }

    #[test]
    fn a_second_running_instance_is_a_leftover() {
        let containers = vec![
            c("web", "0000000a", "run", 10),
            c("web", "0000000b", "run", 20),
        ];
        let got = adopt(&containers, &["web".to_string()]);
        assert_eq!(got.instances["web"].current, Some(id("web", "0000000b")));
        assert_eq!(got.instances["web"].previous, None);
        assert_eq!(got.leftovers, vec![id("web", "0000000a")]);
    }
}
