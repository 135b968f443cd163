//! The scenario catalogue: each scenario's name, one-line description, what its hosts need
//! (tmpfs data dirs, libfaketime, the delay proxy, a minimum cluster size) and the picker that
//! chooses its faults from the run's seeded RNG.

use rand::rngs::StdRng;
use rand::Rng;

use crate::fault::{Fault, PartitionPlan, Picker, PlanContext, Target};
use crate::netfault::RING_MIN_HOSTS;

/// Size of each host's tmpfs in scenarios that fill disks.
pub const DISK_TMPFS_BYTES: u64 = 256 * 1024 * 1024;

/// Whether a scenario runs its peers under libfaketime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Faketime {
    #[default]
    Off,
    /// When it is installed; clock faults are skipped (and say so) when it is not.
    IfInstalled,
    /// The scenario refuses to run without it.
    Required,
}

/// What a scenario's hosts need beyond a namespace and a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub min_peers: u16,
    /// Node agents the scenario needs (it raises `--agents` to this).
    pub min_agents: u16,
    /// Data dirs on a tmpfs of this size.
    pub tmpfs_bytes: Option<u64>,
    /// Whether peers run under libfaketime.
    pub faketime: Faketime,
    /// Peer-to-peer traffic goes through the delay proxy.
    pub delay_proxy: bool,
}

pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
    pub needs: Needs,
    pub picker: Picker,
}

const BASIC: Needs = Needs {
    min_peers: 3,
    min_agents: 0,
    tmpfs_bytes: None,
    faketime: Faketime::Off,
    delay_proxy: false,
};

/// Agents the agent scenarios raise `--agents` to: losing one still leaves two nodes.
pub const SCENARIO_AGENTS: u16 = 3;

const WITH_AGENTS: Needs = Needs {
    min_agents: SCENARIO_AGENTS,
    ..BASIC
};

/// Every scenario, in the order `list` prints them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "kill",
        description: "kill -9 one peer, the leader or a majority, then restart it",
        needs: BASIC,
        picker: pick_kill,
    },
    Scenario {
        name: "pause",
        description: "SIGSTOP one peer, the leader or a majority, then SIGCONT",
        needs: BASIC,
        picker: pick_pause,
    },
    Scenario {
        name: "partition-isolate",
        description: "cut one peer (often the leader) off from every other peer",
        needs: BASIC,
        picker: pick_isolate,
    },
    Scenario {
        name: "partition-majority",
        description: "split the peers into a random minority and a majority",
        needs: BASIC,
        picker: pick_split,
    },
    Scenario {
        name: "partition-ring",
        description: "each peer hears only its ring neighbours: every peer sees a different majority (5+ peers)",
        needs: Needs {
            min_peers: RING_MIN_HOSTS as u16,
            ..BASIC
        },
        picker: pick_ring,
    },
    Scenario {
        name: "partition-bridge",
        description: "two halves that cannot hear each other and one peer that hears both",
        needs: BASIC,
        picker: pick_bridge,
    },
    Scenario {
        name: "one-way-loss",
        description: "one peer drops 60-100% of what other peers send it; what it sends arrives",
        needs: BASIC,
        picker: pick_one_way,
    },
    Scenario {
        name: "packet-loss",
        description: "every peer drops 2-20% of its packets, in and out (iptables statistic)",
        needs: BASIC,
        picker: pick_loss,
    },
    Scenario {
        name: "bandwidth",
        description: "cap one peer's outgoing bandwidth at 64-512 kbit/s (tc tbf)",
        needs: BASIC,
        picker: pick_bandwidth,
    },
    Scenario {
        name: "delay",
        description: "delay one or more peers' peer-to-peer traffic by 50-500 ms (userspace proxy)",
        needs: Needs {
            delay_proxy: true,
            ..BASIC
        },
        picker: pick_delay,
    },
    Scenario {
        name: "disk-full",
        description: "fill one peer's data disk (tmpfs); it must stop or refuse writes, then recover",
        needs: Needs {
            tmpfs_bytes: Some(DISK_TMPFS_BYTES),
            ..BASIC
        },
        picker: pick_disk_full,
    },
    Scenario {
        name: "membership",
        description: "a fresh peer joins with --join, then another voter is removed (MemberRemove)",
        needs: BASIC,
        picker: pick_membership,
    },
    Scenario {
        name: "rolling-restart",
        description: "stop (SIGTERM) and restart every peer, one after another",
        needs: BASIC,
        picker: pick_rolling,
    },
    Scenario {
        name: "clock-skew",
        description: "shift one peer's wall clock by up to a day either way (libfaketime)",
        needs: Needs {
            faketime: Faketime::Required,
            ..BASIC
        },
        picker: pick_clock,
    },
    Scenario {
        name: "agent-loss",
        description: "kill -9 one node agent (its containers run on until its lease lapses), then restart it (3+ agents)",
        needs: WITH_AGENTS,
        picker: pick_agent_loss,
    },
    Scenario {
        name: "churn",
        description: "while deployments churn: kill -9 the leader (controllers fail over) or one agent (3+ agents)",
        needs: WITH_AGENTS,
        picker: pick_churn,
    },
    Scenario {
        name: "mixed",
        description: "a random fault of any kind above in each window (delay excepted)",
        needs: Needs {
            tmpfs_bytes: Some(DISK_TMPFS_BYTES),
            faketime: Faketime::IfInstalled,
            ..BASIC
        },
        picker: pick_mixed,
    },
];

pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

fn majority(peers: u16) -> u16 {
    peers / 2 + 1
}

/// The leader (a third of the time), one random peer, or now and then a majority.
fn process_target(rng: &mut StdRng, context: &PlanContext) -> Target {
    match rng.gen_range(0..10) {
        0..=2 => Target::Leader,
        3..=7 => Target::Random {
            count: 1,
            pick: rng.gen(),
        },
        _ => Target::Random {
            count: majority(context.peers),
            pick: rng.gen(),
        },
    }
}

/// The leader half of the time, otherwise one random peer.
fn one_peer(rng: &mut StdRng) -> Target {
    if rng.gen_bool(0.5) {
        Target::Leader
    } else {
        Target::Random {
            count: 1,
            pick: rng.gen(),
        }
    }
}

fn pick_kill(rng: &mut StdRng, context: &PlanContext) -> Fault {
    Fault::Kill {
        target: process_target(rng, context),
    }
}

fn pick_pause(rng: &mut StdRng, context: &PlanContext) -> Fault {
    Fault::Pause {
        target: process_target(rng, context),
    }
}

fn partition(partition: PartitionPlan) -> Fault {
    Fault::Partition { partition }
}

fn pick_isolate(rng: &mut StdRng, _: &PlanContext) -> Fault {
    partition(PartitionPlan::Isolate {
        target: one_peer(rng),
    })
}

fn pick_split(rng: &mut StdRng, _: &PlanContext) -> Fault {
    partition(PartitionPlan::Split { pick: rng.gen() })
}

fn pick_ring(rng: &mut StdRng, _: &PlanContext) -> Fault {
    partition(PartitionPlan::Ring { pick: rng.gen() })
}

fn pick_bridge(rng: &mut StdRng, _: &PlanContext) -> Fault {
    partition(PartitionPlan::Bridge { pick: rng.gen() })
}

fn pick_one_way(rng: &mut StdRng, _: &PlanContext) -> Fault {
    partition(PartitionPlan::OneWayLoss {
        target: one_peer(rng),
        loss_permille: rng.gen_range(6..=10) * 100,
    })
}

fn pick_loss(rng: &mut StdRng, _: &PlanContext) -> Fault {
    partition(PartitionPlan::RandomLoss {
        loss_permille: rng.gen_range(20..=200),
    })
}

fn pick_bandwidth(rng: &mut StdRng, _: &PlanContext) -> Fault {
    Fault::Bandwidth {
        target: one_peer(rng),
        rate_kbit: 64 << rng.gen_range(0..=3),
    }
}

fn pick_delay(rng: &mut StdRng, context: &PlanContext) -> Fault {
    let target = if rng.gen_bool(0.3) {
        Target::Random {
            count: context.peers,
            pick: rng.gen(),
        }
    } else {
        one_peer(rng)
    };
    Fault::Delay {
        target,
        delay_ms: rng.gen_range(50..=500),
        jitter_ms: rng.gen_range(0..=100),
    }
}

fn pick_disk_full(rng: &mut StdRng, _: &PlanContext) -> Fault {
    Fault::DiskFull {
        target: one_peer(rng),
    }
}

fn pick_membership(rng: &mut StdRng, _: &PlanContext) -> Fault {
    Fault::Membership {
        remove: one_peer(rng),
    }
}

fn pick_rolling(_: &mut StdRng, _: &PlanContext) -> Fault {
    Fault::RollingRestart
}

fn pick_clock(rng: &mut StdRng, _: &PlanContext) -> Fault {
    let magnitude_s: i64 = rng.gen_range(60..=86_400);
    let offset_s = if rng.gen_bool(0.5) {
        magnitude_s
    } else {
        -magnitude_s
    };
    Fault::ClockSkew {
        target: one_peer(rng),
        offset_s,
    }
}

fn pick_agent_loss(rng: &mut StdRng, _: &PlanContext) -> Fault {
    Fault::AgentLoss { pick: rng.gen() }
}

/// The leader (so the deployment and replica-set controllers and the scheduler move) or an
/// agent, half the time each.
fn pick_churn(rng: &mut StdRng, context: &PlanContext) -> Fault {
    if rng.gen_bool(0.5) {
        Fault::Kill {
            target: Target::Leader,
        }
    } else {
        pick_agent_loss(rng, context)
    }
}

fn pick_mixed(rng: &mut StdRng, context: &PlanContext) -> Fault {
    let mut pickers: Vec<Picker> = vec![
        pick_kill,
        pick_pause,
        pick_isolate,
        pick_split,
        pick_bridge,
        pick_one_way,
        pick_loss,
        pick_bandwidth,
        pick_disk_full,
        pick_membership,
        pick_rolling,
        pick_clock,
    ];
    if usize::from(context.peers) >= RING_MIN_HOSTS {
        pickers.push(pick_ring);
    }
    if context.agents > 0 {
        pickers.push(pick_agent_loss);
    }
    let picker = pickers[rng.gen_range(0..pickers.len())];
    picker(rng, context)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::fault::{plan, plan_with};

    fn kinds(picker: Picker, seeds: u64, peers: u16, agents: u16) -> BTreeSet<&'static str> {
        let context = PlanContext { peers, agents };
        (0..seeds)
            .flat_map(|seed| plan_with(picker, seed, 120_000, context))
            .map(|f| f.fault.name())
            .collect()
    }

    #[test]
    fn every_scenario_plans_its_own_kind_of_fault() {
        for scenario in SCENARIOS {
            let peers = scenario.needs.min_peers.max(3);
            let faults = plan(scenario.picker, 7, 60_000, peers);
            assert!(!faults.is_empty(), "{}", scenario.name);
            if !["mixed", "churn"].contains(&scenario.name) {
                for f in &faults {
                    assert_eq!(f.fault.name(), scenario.name, "{f:?}");
                }
            }
        }
        let churn = find("churn").unwrap();
        assert_eq!(kinds(churn.picker, 10, 3, 3), ["agent-loss", "kill"].into());
        assert!(churn.needs.min_agents >= 2 && find("agent-loss").unwrap().needs.min_agents >= 2);
    }

    #[test]
    fn mixed_loses_agents_only_when_there_are_agents() {
        assert!(!kinds(pick_mixed, 20, 3, 0).contains("agent-loss"));
        assert!(kinds(pick_mixed, 20, 3, 3).contains("agent-loss"));
    }

    #[test]
    fn mixed_mixes_and_names_are_unique() {
        let kinds: std::collections::BTreeSet<&str> = (0..20)
            .flat_map(|seed| plan(pick_mixed, seed, 120_000, 3))
            .map(|f| f.fault.name())
            .collect();
        assert!(kinds.len() >= 8, "{kinds:?}");
        assert!(
            !kinds.contains("partition-ring"),
            "3 peers cannot form a ring"
        );
        let names: std::collections::BTreeSet<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        assert_eq!(names.len(), SCENARIOS.len());
        assert!(find("kill").is_some() && find("nope").is_none());
    }
}
