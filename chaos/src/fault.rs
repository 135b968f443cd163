//! Faults and fault schedules: what can go wrong, and when, decided from a seed.
//!
//! Pure. A [`Fault`] names *what* happens and carries every random choice already made (as a
//! `pick` seed), so that one seed gives one schedule whatever the cluster looks like; *which*
//! hosts a fault hits is resolved only when it starts, against the members of that moment
//! ([`Target::resolve`], [`PartitionPlan::resolve`]). [`plan`] lays faults out as windows
//! `[start, end)` separated by quiet gaps, after a warm-up and before a quiet tail; faults never
//! overlap, and every one is healed at its end.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::netfault::{Permille, Shape};

/// Quiet time at the start of a run, before the first fault.
pub const WARMUP_MS: u64 = 2_000;

/// Quiet time at the end of the workload, after the last fault is healed.
pub const TAIL_QUIET_MS: u64 = 2_000;

/// Most faults one run schedules.
pub const MAX_FAULTS_PER_RUN: usize = 1_000;

/// Which hosts a fault hits, resolved against the members when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "target")]
pub enum Target {
    /// The current leader (the first member if no leader is known).
    Leader,
    /// `count` members chosen at random (by `pick`); all of them if there are fewer.
    Random { count: u16, pick: u64 },
}

impl Target {
    /// The hosts hit, given the members (ascending host numbers) and the leader.
    pub fn resolve(&self, members: &[u16], leader: Option<u16>) -> Vec<u16> {
        match *self {
            Target::Leader => match leader.filter(|l| members.contains(l)) {
                Some(leader) => vec![leader],
                None => members.first().copied().into_iter().collect(),
            },
            Target::Random { count, pick } => {
                let mut chosen = members.to_vec();
                chosen.shuffle(&mut StdRng::seed_from_u64(pick));
                chosen.truncate(usize::from(count));
                chosen.sort_unstable();
                chosen
            }
        }
    }
}

/// A network partition or loss pattern, before it is fitted to the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "partition")]
pub enum PartitionPlan {
    Isolate {
        target: Target,
    },
    /// A random minority (1 to ⌊(n-1)/2⌋ hosts) against the rest.
    Split {
        pick: u64,
    },
    Ring {
        pick: u64,
    },
    Bridge {
        pick: u64,
    },
    OneWayLoss {
        target: Target,
        loss_permille: Permille,
    },
    RandomLoss {
        loss_permille: Permille,
    },
}

impl PartitionPlan {
    /// The concrete shape over `members` (indices into it), given the leader.
    pub fn resolve(&self, members: &[u16], leader: Option<u16>) -> Shape {
        let n = members.len();
        let index_of = |target: &Target| {
            let host = target
                .resolve(members, leader)
                .first()
                .copied()
                .unwrap_or(0);
            members.iter().position(|&m| m == host).unwrap_or(0)
        };
        let shuffled = |pick: u64| {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut StdRng::seed_from_u64(pick));
            order
        };
        match self {
            PartitionPlan::Isolate { target } => Shape::Isolate {
                host: index_of(target),
            },
            PartitionPlan::Split { pick } => {
                let max_minority = (n.saturating_sub(1) / 2).max(1);
                let size = 1 + (*pick as usize % max_minority);
                let minority: BTreeSet<usize> = shuffled(*pick).into_iter().take(size).collect();
                Shape::Split { minority }
            }
            PartitionPlan::Ring { pick } => Shape::Ring {
                order: shuffled(*pick),
            },
            PartitionPlan::Bridge { pick } => Shape::Bridge {
                hub: shuffled(*pick).first().copied().unwrap_or(0),
            },
            PartitionPlan::OneWayLoss {
                target,
                loss_permille,
            } => Shape::OneWayLoss {
                deaf: index_of(target),
                loss_permille: *loss_permille,
            },
            PartitionPlan::RandomLoss { loss_permille } => Shape::RandomLoss {
                loss_permille: *loss_permille,
            },
        }
    }
}

/// One thing that goes wrong, healed at the end of its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "fault")]
pub enum Fault {
    /// kill -9; heal: restart.
    Kill { target: Target },
    /// SIGSTOP; heal: SIGCONT.
    Pause { target: Target },
    /// iptables rules in the hosts' namespaces; heal: flush them.
    Partition { partition: PartitionPlan },
    /// tc tbf on the target's veth; heal: remove it.
    Bandwidth { target: Target, rate_kbit: u32 },
    /// Peer-to-peer traffic of the target through the delay proxy; heal: no delay.
    Delay {
        target: Target,
        delay_ms: u32,
        jitter_ms: u32,
    },
    /// Fill the target's tmpfs; heal: free it and restart the peer if it stopped.
    DiskFull { target: Target },
    /// Start: a fresh peer joins. Heal: `remove` (another member) is removed and stopped.
    Membership { remove: Target },
    /// Stop (SIGTERM) and restart every member, one after another.
    RollingRestart,
    /// Shift the target's wall clock (libfaketime) by `offset_s`; heal: no shift.
    ClockSkew { target: Target, offset_s: i64 },
    /// kill -9 of one node agent (agent `pick % agents` of the agents of that moment); its
    /// shims and containers keep running until the lease's self-fencing stops them. Heal:
    /// restart the agent, which adopts or tears down what is left.
    AgentLoss { pick: u64 },
}

impl Fault {
    /// A short name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Partition { partition } => match partition {
                PartitionPlan::Isolate { .. } => "partition-isolate",
                PartitionPlan::Split { .. } => "partition-majority",
                PartitionPlan::Ring { .. } => "partition-ring",
                PartitionPlan::Bridge { .. } => "partition-bridge",
                PartitionPlan::OneWayLoss { .. } => "one-way-loss",
                PartitionPlan::RandomLoss { .. } => "packet-loss",
            },
            Fault::Bandwidth { .. } => "bandwidth",
            Fault::Delay { .. } => "delay",
            Fault::DiskFull { .. } => "disk-full",
            Fault::Membership { .. } => "membership",
            Fault::RollingRestart => "rolling-restart",
            Fault::ClockSkew { .. } => "clock-skew",
            Fault::AgentLoss { .. } => "agent-loss",
        }
    }

    /// How long this kind of fault lasts and how long the quiet after it is, in ms.
    pub fn timing(&self) -> Timing {
        match self {
            Fault::RollingRestart => Timing::new((12_000, 20_000), (2_000, 4_000)),
            Fault::Membership { .. } => Timing::new((5_000, 9_000), (2_000, 4_000)),
            Fault::DiskFull { .. } => Timing::new((4_000, 8_000), (3_000, 5_000)),
            // Long enough for the lease to lapse and the leader to replace the pods (≈ 5 s).
            Fault::AgentLoss { .. } => Timing::new((6_000, 10_000), (3_000, 5_000)),
            _ => Timing::new((3_000, 8_000), (2_000, 4_000)),
        }
    }
}

/// Window and gap bounds of a fault kind, in ms (inclusive ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub window_ms: (u64, u64),
    pub gap_ms: (u64, u64),
}

impl Timing {
    const fn new(window_ms: (u64, u64), gap_ms: (u64, u64)) -> Self {
        Timing { window_ms, gap_ms }
    }
}

/// A fault and its window, in ms since the workload started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFault {
    pub start_ms: u64,
    pub end_ms: u64,
    pub fault: Fault,
}

/// What a scenario's fault picker can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanContext {
    pub peers: u16,
    /// Node agents of the run (0: none, so no agent faults).
    pub agents: u16,
}

/// Chooses the next fault of a scenario.
pub type Picker = fn(&mut StdRng, &PlanContext) -> Fault;

/// The schedule of a run without agents: same seed, picker, duration and peers → same schedule.
pub fn plan(picker: Picker, seed: u64, duration_ms: u64, peers: u16) -> Vec<PlannedFault> {
    plan_with(picker, seed, duration_ms, PlanContext { peers, agents: 0 })
}

/// The schedule of a run: same seed, picker, duration and context → same schedule.
pub fn plan_with(
    picker: Picker,
    seed: u64,
    duration_ms: u64,
    context: PlanContext,
) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let last_end_ms = duration_ms.saturating_sub(TAIL_QUIET_MS);
    let mut faults = Vec::new();
    let mut at_ms = WARMUP_MS;
    while faults.len() < MAX_FAULTS_PER_RUN {
        let fault = picker(&mut rng, &context);
        let timing = fault.timing();
        let window_ms = rng.gen_range(timing.window_ms.0..=timing.window_ms.1);
        let gap_ms = rng.gen_range(timing.gap_ms.0..=timing.gap_ms.1);
        if at_ms + timing.window_ms.0 > last_end_ms {
            break;
        }
        let end_ms = (at_ms + window_ms).min(last_end_ms);
        faults.push(PlannedFault {
            start_ms: at_ms,
            end_ms,
            fault,
        });
        at_ms = end_ms + gap_ms;
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_fault(rng: &mut StdRng, context: &PlanContext) -> Fault {
        let target = Target::Random {
            count: rng.gen_range(1..=context.peers),
            pick: rng.gen(),
        };
        match rng.gen_range(0..3) {
            0 => Fault::Kill { target },
            1 => Fault::Pause { target },
            _ => Fault::RollingRestart,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for seed in 0..50 {
            let a = plan(any_fault, seed, 60_000, 3);
            let b = plan(any_fault, seed, 60_000, 3);
            assert_eq!(a, b, "seed {seed}");
            assert!(!a.is_empty(), "seed {seed}: a minute holds faults");
        }
        let differing = (0..50)
            .filter(|&s| plan(any_fault, s, 60_000, 3) != plan(any_fault, s + 1, 60_000, 3))
            .count();
        assert!(differing > 40, "seeds barely change the schedule");
    }

    #[test]
    fn windows_stay_inside_the_run_and_never_overlap() {
        for seed in 0..200 {
            for duration_ms in [5_000, 20_000, 60_000, 300_000] {
                let faults = plan(any_fault, seed, duration_ms, 5);
                let mut previous_end = 0;
                for f in &faults {
                    assert!(f.start_ms >= WARMUP_MS.max(previous_end), "{f:?}");
                    assert!(f.start_ms < f.end_ms, "{f:?}");
                    assert!(f.end_ms <= duration_ms - TAIL_QUIET_MS, "{f:?}");
                    previous_end = f.end_ms;
                }
            }
        }
        assert!(plan(any_fault, 1, 3_000, 3).is_empty());
    }

    #[test]
    fn targets_resolve_against_current_members() {
        let members = [1, 2, 3, 5];
        assert_eq!(Target::Leader.resolve(&members, Some(3)), [3]);
        assert_eq!(Target::Leader.resolve(&members, Some(4)), [1]);
        assert_eq!(Target::Leader.resolve(&members, None), [1]);
        let three = Target::Random { count: 3, pick: 9 };
        let chosen = three.resolve(&members, None);
        assert_eq!(chosen.len(), 3);
        assert!(chosen.iter().all(|h| members.contains(h)));
        assert_eq!(
            chosen,
            three.resolve(&members, Some(2)),
            "resolution is deterministic"
        );
        let all = Target::Random { count: 9, pick: 1 };
        assert_eq!(all.resolve(&members, None), members);
    }

    #[test]
    fn partition_plans_fit_the_members() {
        let members = [2, 4, 6, 7, 9];
        for pick in 0..100 {
            match (PartitionPlan::Split { pick }).resolve(&members, None) {
                Shape::Split { minority } => {
                    assert!((1..=2).contains(&minority.len()), "{minority:?}");
                    assert!(minority.iter().all(|&i| i < members.len()));
                }
                other => panic!("{other:?}"),
            }
            match (PartitionPlan::Ring { pick }).resolve(&members, None) {
                Shape::Ring { mut order } => {
                    order.sort_unstable();
                    assert_eq!(order, [0, 1, 2, 3, 4]);
                }
                other => panic!("{other:?}"),
            }
        }
        let isolate_leader = PartitionPlan::Isolate {
            target: Target::Leader,
        };
        assert_eq!(
            isolate_leader.resolve(&members, Some(7)),
            Shape::Isolate { host: 3 }
        );
    }
}
