//! Network fault shapes and the firewall rules that make them: which host stops hearing which,
//! and the exact `iptables` / `tc` arguments each host's namespace gets.
//!
//! Pure: a [`Shape`] over `n` hosts becomes, per host, a list of [`Rule`]s; [`Rule::iptables_args`]
//! spells a rule for the host's own [`FAULT_CHAIN`]. A cut is always made at the receiver
//! (`INPUT`, matched by source address), so the harness's own traffic (from `.254`) is never
//! cut by a partition — clients and checkers keep reaching every host, as in Jepsen. Random
//! loss ([`Shape::RandomLoss`]) applies to everything that crosses a host's veth, harness
//! traffic included.
//!
//! Shapes (hosts are indices into the current member list):
//! - `Isolate`: one host hears no peer and no peer hears it.
//! - `Split`: a minority and a majority that cannot hear each other.
//! - `Ring`: hosts on a ring, each hears only its nearest neighbours — every host sees a
//!   majority, and no two hosts see the same majority. Needs at least [`RING_MIN_HOSTS`] hosts.
//! - `Bridge`: two halves that cannot hear each other, and one hub that hears both.
//! - `OneWayLoss`: one host drops a share of what its peers send it; what it sends arrives.
//! - `RandomLoss`: every host drops a share of the packets crossing its veth, both ways.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The iptables chain in each host namespace that holds fault rules; `INPUT` and `OUTPUT` of the
/// host's veth jump to it, and healing flushes it.
pub const FAULT_CHAIN: &str = "FLC";

/// The smallest cluster in which a ring differs from a full mesh.
pub const RING_MIN_HOSTS: usize = 5;

/// A packet-drop probability in thousandths (0..=1000).
pub type Permille = u16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("{shape} needs at least {min} hosts, the cluster has {hosts}")]
    TooFewHosts {
        shape: &'static str,
        min: usize,
        hosts: usize,
    },
    #[error("host index {index} is outside the {hosts} hosts")]
    NoSuchHost { index: usize, hosts: usize },
    #[error("drop probability {0}‰ is above 1000‰")]
    BadProbability(Permille),
}

/// A concrete network fault over hosts `0..n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "shape")]
pub enum Shape {
    Isolate {
        host: usize,
    },
    Split {
        minority: BTreeSet<usize>,
    },
    /// `order` is the ring: `order[k]` neighbours `order[k-1]` and `order[k+1]`.
    Ring {
        order: Vec<usize>,
    },
    Bridge {
        hub: usize,
    },
    OneWayLoss {
        deaf: usize,
        loss_permille: Permille,
    },
    RandomLoss {
        loss_permille: Permille,
    },
}

/// One firewall rule in a host's [`FAULT_CHAIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Drop packets from `src` (with `loss_permille` of 1000 meaning all of them).
    DropFrom {
        src: Ipv4Addr,
        loss_permille: Permille,
    },
    /// Drop this share of every packet crossing the veth, in and out.
    DropAny { loss_permille: Permille },
}

impl Rule {
    /// The arguments of `iptables` that append this rule to the fault chain.
    pub fn iptables_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["-A".into(), FAULT_CHAIN.into()];
        let loss = match *self {
            Rule::DropFrom { src, loss_permille } => {
                args.extend(["-s".into(), format!("{src}/32")]);
                loss_permille
            }
            Rule::DropAny { loss_permille } => loss_permille,
        };
        if loss < 1000 {
            args.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
            args.push(probability_text(loss));
        }
        args.extend(["-j".into(), "DROP".into()]);
        args
    }
}

/// `250` → `"0.250"`, the form `--probability` takes.
pub fn probability_text(loss_permille: Permille) -> String {
    format!("{}.{:03}", loss_permille / 1000, loss_permille % 1000)
}

/// The rules each host gets: `result[i]` for `hosts[i]`.
pub fn rules(shape: &Shape, hosts: &[Ipv4Addr]) -> Result<Vec<Vec<Rule>>, ShapeError> {
    let n = hosts.len();
    let mut per_host: Vec<BTreeSet<Rule>> = vec![BTreeSet::new(); n];
    match shape {
        Shape::OneWayLoss {
            deaf,
            loss_permille,
        } => {
            check_host(*deaf, n)?;
            check_loss(*loss_permille)?;
            let senders = hosts.iter().enumerate().filter(|(i, _)| i != deaf);
            for (_, &src) in senders {
                per_host[*deaf].insert(Rule::DropFrom {
                    src,
                    loss_permille: *loss_permille,
                });
            }
        }
        Shape::RandomLoss { loss_permille } => {
            check_loss(*loss_permille)?;
            for rules in &mut per_host {
                rules.insert(Rule::DropAny {
                    loss_permille: *loss_permille,
                });
            }
        }
        cut_shape => {
            for (receiver, sender) in cuts(cut_shape, n)? {
                per_host[receiver].insert(Rule::DropFrom {
                    src: hosts[sender],
                    loss_permille: 1000,
                });
            }
        }
    }
    Ok(per_host.into_iter().map(Vec::from_iter).collect())
}

/// The directed cuts of a partition shape: `(receiver, sender)` pairs where every packet from
/// `sender` to `receiver` is dropped. Loss shapes have no full cuts.
pub fn cuts(shape: &Shape, n: usize) -> Result<BTreeSet<(usize, usize)>, ShapeError> {
    let groups: Vec<BTreeSet<usize>> = match shape {
        Shape::Isolate { host } => {
            check_host(*host, n)?;
            vec![BTreeSet::from([*host]), others(n, &[*host])]
        }
        Shape::Split { minority } => {
            for &host in minority {
                check_host(host, n)?;
            }
            let minority_list: Vec<usize> = minority.iter().copied().collect();
            vec![minority.clone(), others(n, &minority_list)]
        }
        Shape::Ring { order } => return ring_cuts(order, n),
        Shape::Bridge { hub } => return bridge_cuts(*hub, n),
        Shape::OneWayLoss { .. } | Shape::RandomLoss { .. } => return Ok(BTreeSet::new()),
    };
    Ok(cut_between_groups(&groups))
}

fn check_host(index: usize, hosts: usize) -> Result<(), ShapeError> {
    if index < hosts {
        Ok(())
    } else {
        Err(ShapeError::NoSuchHost { index, hosts })
    }
}

fn check_loss(loss_permille: Permille) -> Result<(), ShapeError> {
    if loss_permille <= 1000 {
        Ok(())
    } else {
        Err(ShapeError::BadProbability(loss_permille))
    }
}

fn others(n: usize, excluded: &[usize]) -> BTreeSet<usize> {
    (0..n).filter(|i| !excluded.contains(i)).collect()
}

/// Every host of one group stops hearing every host of every other group, both ways.
fn cut_between_groups(groups: &[BTreeSet<usize>]) -> BTreeSet<(usize, usize)> {
    let mut cut = BTreeSet::new();
    for (gi, a) in groups.iter().enumerate() {
        for b in groups.iter().skip(gi + 1) {
            for &x in a {
                for &y in b {
                    cut.insert((x, y));
                    cut.insert((y, x));
                }
            }
        }
    }
    cut
}

/// How many neighbours on each side a ring host keeps so that it sees a majority.
fn ring_reach(n: usize) -> usize {
    let majority = n / 2 + 1;
    (majority - 1).div_ceil(2)
}

fn ring_cuts(order: &[usize], n: usize) -> Result<BTreeSet<(usize, usize)>, ShapeError> {
    if n < RING_MIN_HOSTS {
        return Err(ShapeError::TooFewHosts {
            shape: "a ring",
            min: RING_MIN_HOSTS,
            hosts: n,
        });
    }
    let mut position = vec![usize::MAX; n];
    for (k, &host) in order.iter().enumerate() {
        check_host(host, n)?;
        position[host] = k;
    }
    if let Some(missing) = position.iter().position(|&k| k == usize::MAX) {
        return Err(ShapeError::NoSuchHost {
            index: missing,
            hosts: order.len(),
        });
    }
    let reach = ring_reach(n);
    let mut cut = BTreeSet::new();
    for a in 0..n {
        for b in 0..n {
            let distance = position[a].abs_diff(position[b]);
            let ring_distance = distance.min(n - distance);
            if a != b && ring_distance > reach {
                cut.insert((a, b));
            }
        }
    }
    Ok(cut)
}

fn bridge_cuts(hub: usize, n: usize) -> Result<BTreeSet<(usize, usize)>, ShapeError> {
    check_host(hub, n)?;
    if n < 3 {
        return Err(ShapeError::TooFewHosts {
            shape: "a bridge",
            min: 3,
            hosts: n,
        });
    }
    let rest: Vec<usize> = (0..n).filter(|&i| i != hub).collect();
    let (left, right) = rest.split_at(rest.len() / 2);
    let groups = [
        left.iter().copied().collect(),
        right.iter().copied().collect(),
    ];
    Ok(cut_between_groups(&groups))
}

/// `tc` arguments that cap a veth's egress at `rate_kbit` (token bucket filter).
pub fn bandwidth_args(dev: &str, rate_kbit: u32) -> Vec<String> {
    // A burst of at least one MTU-sized packet per tick, and a queue that holds ~400 ms.
    let burst_bytes = (rate_kbit * 1000 / 8 / 10).max(4096);
    let args = [
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{rate_kbit}kbit"),
        "burst",
        &burst_bytes.to_string(),
        "latency",
        "400ms",
    ];
    args.iter().map(|a| a.to_string()).collect()
}

/// `tc` arguments that remove the cap again.
pub fn bandwidth_reset_args(dev: &str) -> Vec<String> {
    ["qdisc", "del", "dev", dev, "root"]
        .iter()
        .map(|a| a.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(198, 18, 7, i)).collect()
    }

    /// Whether `receiver` hears everything `sender` sends under `rules`.
    fn hears(rules: &[Vec<Rule>], hosts: &[Ipv4Addr], receiver: usize, sender: usize) -> bool {
        !rules[receiver].iter().any(|rule| match rule {
            Rule::DropFrom { src, .. } => *src == hosts[sender],
            Rule::DropAny { .. } => true,
        })
    }

    /// The set of hosts each host hears (itself included), for a cut shape over `n` hosts.
    fn views(shape: &Shape, n: u8) -> Vec<BTreeSet<usize>> {
        let hosts = hosts(n);
        let rules = rules(shape, &hosts).unwrap();
        (0..hosts.len())
            .map(|r| {
                (0..hosts.len())
                    .filter(|&s| s == r || hears(&rules, &hosts, r, s))
                    .collect()
            })
            .collect()
    }

    fn check_views(shape: Shape, n: u8, expected: &[&[usize]]) {
        let expected: Vec<BTreeSet<usize>> = expected
            .iter()
            .map(|v| v.iter().copied().collect())
            .collect();
        assert_eq!(views(&shape, n), expected, "{shape:?} over {n} hosts");
    }

    #[test]
    fn isolate_cuts_one_host_off_both_ways() {
        check_views(Shape::Isolate { host: 1 }, 3, &[&[0, 2], &[1], &[0, 2]]);
    }

    #[test]
    fn split_separates_minority_from_majority() {
        let minority = BTreeSet::from([0, 3]);
        check_views(
            Shape::Split { minority },
            5,
            &[&[0, 3], &[1, 2, 4], &[1, 2, 4], &[0, 3], &[1, 2, 4]],
        );
    }

    #[test]
    fn ring_gives_every_host_a_different_majority() {
        for n in [5u8, 6, 7] {
            let order: Vec<usize> = (0..n as usize).rev().collect();
            let views = views(&Shape::Ring { order }, n);
            let majority = n as usize / 2 + 1;
            for view in &views {
                assert!(view.len() >= majority, "{view:?} of {n}");
                assert!(
                    view.len() < n as usize,
                    "{view:?}: a ring must cut something"
                );
            }
            let distinct: BTreeSet<&BTreeSet<usize>> = views.iter().collect();
            assert_eq!(distinct.len(), n as usize, "{views:?}");
        }
        check_views(
            Shape::Ring {
                order: vec![0, 1, 2, 3, 4],
            },
            5,
            &[&[4, 0, 1], &[0, 1, 2], &[1, 2, 3], &[2, 3, 4], &[3, 4, 0]],
        );
    }

    #[test]
    fn ring_needs_five_hosts() {
        let shape = Shape::Ring {
            order: vec![0, 1, 2],
        };
        assert!(matches!(
            rules(&shape, &hosts(3)),
            Err(ShapeError::TooFewHosts { min: 5, .. })
        ));
    }

    #[test]
    fn bridge_hub_hears_both_halves_that_cannot_hear_each_other() {
        check_views(Shape::Bridge { hub: 0 }, 3, &[&[0, 1, 2], &[0, 1], &[0, 2]]);
        check_views(
            Shape::Bridge { hub: 2 },
            5,
            &[
                &[0, 1, 2],
                &[0, 1, 2],
                &[0, 1, 2, 3, 4],
                &[2, 3, 4],
                &[2, 3, 4],
            ],
        );
    }

    #[test]
    fn one_way_loss_only_affects_what_the_deaf_host_receives() {
        let hosts = hosts(3);
        let shape = Shape::OneWayLoss {
            deaf: 2,
            loss_permille: 700,
        };
        let rules = rules(&shape, &hosts).unwrap();
        assert!(rules[0].is_empty() && rules[1].is_empty());
        let args: Vec<Vec<String>> = rules[2].iter().map(Rule::iptables_args).collect();
        assert_eq!(
            args[0].join(" "),
            "-A FLC -s 198.18.7.1/32 -m statistic --mode random --probability 0.700 -j DROP"
        );
        assert_eq!(args.len(), 2);
    }

    #[test]
    fn iptables_arguments_of_each_rule_kind() {
        let check =
            |rule: Rule, expected: &str| assert_eq!(rule.iptables_args().join(" "), expected);
        let src = Ipv4Addr::new(198, 19, 1, 4);
        check(
            Rule::DropFrom {
                src,
                loss_permille: 1000,
            },
            "-A FLC -s 198.19.1.4/32 -j DROP",
        );
        check(
            Rule::DropAny { loss_permille: 50 },
            "-A FLC -m statistic --mode random --probability 0.050 -j DROP",
        );
    }

    #[test]
    fn random_loss_reaches_every_host_and_bad_shapes_are_refused() {
        let rules = rules(&Shape::RandomLoss { loss_permille: 100 }, &hosts(3)).unwrap();
        assert!(rules
            .iter()
            .all(|r| r == &[Rule::DropAny { loss_permille: 100 }]));
        let bad = [
            Shape::Isolate { host: 3 },
            Shape::RandomLoss {
                loss_permille: 1001,
            },
            Shape::Bridge { hub: 9 },
        ];
        for shape in bad {
            assert!(super::rules(&shape, &hosts(3)).is_err(), "{shape:?}");
        }
    }

    #[test]
    fn bandwidth_arguments() {
        assert_eq!(
            bandwidth_args("flc-001-h1", 256).join(" "),
            "qdisc replace dev flc-001-h1 root tbf rate 256kbit burst 4096 latency 400ms"
        );
        assert_eq!(
            bandwidth_reset_args("flc-001-h1").join(" "),
            "qdisc del dev flc-001-h1 root"
        );
    }
}
