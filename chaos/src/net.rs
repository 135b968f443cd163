//! Addresses and names of one run's virtual network: which /24 of 198.18.0.0/15 a run uses,
//! each host's address in it, and the names of its namespaces, veths and bridge.
//!
//! Pure: nothing here touches the system. Every name starts with [`NAME_PREFIX`] so that
//! `flotilla-chaos clean` can find a crashed run's leftovers, and every address the harness
//! ever sends traffic to passes [`is_allowed_destination`].
//!
//! A run owns one *slot*: the /24 `198.18.0.0 + slot * 256`. Slot 0 is 198.18.0.0/24, slot 511
//! is 198.19.255.0/24. Hosts are `.1` to `.250`; the harness's own end (a veth in the root
//! namespace) is `.254`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

/// Every namespace, interface, tmpfs and data directory of the harness starts with this.
pub const NAME_PREFIX: &str = "flc-";

/// Slots of 198.18.0.0/15 (512 /24 networks).
pub const SLOT_COUNT: u16 = 512;

/// Highest host number in a slot (`.1` .. `.250`).
pub const HOST_NUMBER_MAX: u8 = 250;

/// The harness's address in every slot.
pub const HARNESS_HOST_BYTE: u8 = 254;

/// The port every peer listens on inside its own namespace.
pub const PEER_PORT: u16 = 7001;

/// The port an agent's API (logs, exec) listens on inside its own namespace.
pub const AGENT_PORT: u16 = 7201;

/// The benchmark range every harness address lives in: 198.18.0.0/15.
const BENCH_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
const BENCH_PREFIX_LEN: u8 = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("slot {0} is outside 0..{SLOT_COUNT}")]
    BadSlot(u16),
    #[error("host number {0} is outside 1..={HOST_NUMBER_MAX}")]
    BadHostNumber(u16),
    #[error("every slot of 198.18.0.0/15 is in use or routed elsewhere")]
    NoFreeSlot,
    #[error("{0} is neither loopback nor in 198.18.0.0/15; the harness never sends traffic there")]
    ForbiddenDestination(Ipv4Addr),
}

/// Whether the harness may send traffic to `ip`: loopback or 198.18.0.0/15 only.
pub fn is_allowed_destination(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || in_net(ip, BENCH_NET, BENCH_PREFIX_LEN)
}

/// Refuses any destination [`is_allowed_destination`] rejects.
pub fn ensure_allowed_destination(ip: Ipv4Addr) -> Result<Ipv4Addr, NetError> {
    if is_allowed_destination(ip) {
        Ok(ip)
    } else {
        Err(NetError::ForbiddenDestination(ip))
    }
}

fn in_net(ip: Ipv4Addr, net: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = mask(prefix_len);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        len => u32::MAX << (32 - u32::from(len.min(32))),
    }
}

/// One run's /24 of 198.18.0.0/15 and the names derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunSlot(u16);

impl RunSlot {
    pub fn new(slot: u16) -> Result<Self, NetError> {
        if slot < SLOT_COUNT {
            Ok(RunSlot(slot))
        } else {
            Err(NetError::BadSlot(slot))
        }
    }

    pub fn index(self) -> u16 {
        self.0
    }

    /// The run's short id in names: three hex digits.
    pub fn id(self) -> String {
        format!("{:03x}", self.0)
    }

    /// The first address of the slot's /24.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(BENCH_NET) + u32::from(self.0) * 256)
    }

    /// Host `number` (1-based)'s address.
    pub fn host_addr(self, number: u16) -> Result<Ipv4Addr, NetError> {
        if number == 0 || number > u16::from(HOST_NUMBER_MAX) {
            return Err(NetError::BadHostNumber(number));
        }
        Ok(Ipv4Addr::from(
            u32::from(self.network()) + u32::from(number),
        ))
    }

    /// The harness's end of the network, in the root namespace.
    pub fn harness_addr(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + u32::from(HARNESS_HOST_BYTE))
    }

    /// `flc-<id>-`: the start of every name this run creates.
    pub fn name_prefix(self) -> String {
        format!("{NAME_PREFIX}{}-", self.id())
    }

    /// The network namespace of host `number`.
    pub fn host_netns(self, number: u16) -> String {
        format!("{}{number}", self.name_prefix())
    }

    /// The namespace holding the bridge (and the bridge device's name inside it).
    pub fn bridge_netns(self) -> String {
        format!("{}br", self.name_prefix())
    }

    /// Host `number`'s end of its veth pair (inside the host namespace).
    pub fn host_veth(self, number: u16) -> String {
        format!("{}h{number}", self.name_prefix())
    }

    /// The bridge's end of host `number`'s veth pair.
    pub fn bridge_port(self, number: u16) -> String {
        format!("{}b{number}", self.name_prefix())
    }

    /// The CNI bridge of agent host `number`'s pods (inside that host's namespace).
    pub fn pod_bridge(self, number: u16) -> String {
        format!("{}p{number}", self.name_prefix())
    }

    /// The harness's veth in the root namespace.
    pub fn root_veth(self) -> String {
        format!("{}r", self.name_prefix())
    }

    /// The bridge's end of the root veth.
    pub fn root_bridge_port(self) -> String {
        format!("{}rb", self.name_prefix())
    }
}

/// The pod network of the run's `agent`-th agent (1-based): the /24 of 198.18.0.0/15 at slot
/// `slot + 256 + agent - 1` (mod 512), i.e. in the other /16 half from the run's own /24.
///
/// It exists only inside that agent's namespace (its CNI bridge and its pods' namespaces), and
/// nothing outside the namespace routes it, so it cannot clash with another run's slot even
/// when the numbers coincide; inside the namespace the only other route is the run's own /24,
/// which this never equals (an offset of 256 + 0..=249 is never a multiple of 512). Agents of
/// one run get distinct /24s, so every pod IP of a run is unique.
pub fn pod_cidr(slot: RunSlot, agent: u16) -> Result<String, NetError> {
    if agent == 0 || agent > u16::from(HOST_NUMBER_MAX) {
        return Err(NetError::BadHostNumber(agent));
    }
    let pod_slot = (slot.0 + SLOT_COUNT / 2 + agent - 1) % SLOT_COUNT;
    Ok(format!("{}/24", RunSlot(pod_slot).network()))
}

impl fmt::Display for RunSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.network())
    }
}

/// An IPv4 network `addr/prefix_len`, as routes are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Net {
    /// Parses `198.18.0.0/16` or a bare address (a /32).
    pub fn parse(text: &str) -> Option<Ipv4Net> {
        let (addr, prefix_len) = match text.split_once('/') {
            Some((addr, len)) => (addr, len.parse().ok().filter(|len| *len <= 32)?),
            None => (text, 32),
        };
        Some(Ipv4Net {
            addr: addr.parse().ok()?,
            prefix_len,
        })
    }

    fn overlaps(self, other: Ipv4Net) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        in_net(self.addr, other.addr, shorter)
    }
}

/// Free slots in the order a run should try them: not in `used` (slots of runs already
/// present) and not overlapping any route of the root namespace in `routes` (someone else's
/// 198.18.x network). The order starts at `start` and wraps around, so concurrent runs that
/// start at different places rarely race; the caller claims a slot atomically (by creating its
/// bridge namespace) and moves on to the next if another run got there first.
pub fn candidate_slots(used: &BTreeSet<u16>, routes: &[Ipv4Net], start: u16) -> Vec<RunSlot> {
    (0..SLOT_COUNT)
        .map(|offset| (start % SLOT_COUNT + offset) % SLOT_COUNT)
        .filter(|slot| !used.contains(slot))
        .map(RunSlot)
        .filter(|slot| {
            let net = Ipv4Net {
                addr: slot.network(),
                prefix_len: 24,
            };
            routes.iter().all(|route| !route.overlaps(net))
        })
        .collect()
}

/// The first of [`candidate_slots`].
pub fn choose_slot(
    used: &BTreeSet<u16>,
    routes: &[Ipv4Net],
    start: u16,
) -> Result<RunSlot, NetError> {
    candidate_slots(used, routes, start)
        .first()
        .copied()
        .ok_or(NetError::NoFreeSlot)
}

/// The destinations of `ip -4 route show` output, default routes skipped.
pub fn parse_routes(output: &str) -> Vec<Ipv4Net> {
    output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|first| *first != "default")
        .filter_map(Ipv4Net::parse)
        .collect()
}

/// The slot of a name this harness created (`flc-1a2-…`), if it is one.
pub fn slot_of_name(name: &str) -> Option<u16> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (id, _) = rest.split_once('-')?;
    if id.len() != 3 {
        return None;
    }
    u16::from_str_radix(id, 16)
        .ok()
        .filter(|slot| *slot < SLOT_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(n: u16) -> RunSlot {
        RunSlot::new(n).unwrap()
    }

    #[test]
    fn every_host_address_of_every_slot_is_in_the_benchmark_range() {
        for n in 0..SLOT_COUNT {
            let s = slot(n);
            for host in 1..=u16::from(HOST_NUMBER_MAX) {
                let ip = s.host_addr(host).unwrap();
                assert!(is_allowed_destination(ip), "{ip}");
                assert_eq!(ip.octets()[3] as u16, host);
            }
            assert!(is_allowed_destination(s.harness_addr()));
        }
        assert_eq!(slot(0).host_addr(1).unwrap(), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(slot(511).harness_addr(), Ipv4Addr::new(198, 19, 255, 254));
    }

    #[test]
    fn pod_networks_are_distinct_and_never_the_runs_own_slot() {
        let check = |slot_index: u16, agent: u16, expected: &str| {
            assert_eq!(pod_cidr(slot(slot_index), agent).unwrap(), expected);
        };
        check(0, 1, "198.19.0.0/24");
        check(0x1ff, 1, "198.18.255.0/24");
        check(0x1ff, 2, "198.19.0.0/24");
        check(300, 3, "198.18.46.0/24");
        for n in 0..SLOT_COUNT {
            let own = format!("{}", slot(n));
            let pods: BTreeSet<String> = (1..=u16::from(HOST_NUMBER_MAX))
                .map(|a| pod_cidr(slot(n), a).unwrap())
                .collect();
            assert_eq!(pods.len(), usize::from(HOST_NUMBER_MAX));
            assert!(!pods.contains(&own), "slot {n}");
        }
        assert_eq!(pod_cidr(slot(1), 0), Err(NetError::BadHostNumber(0)));
    }

    #[test]
    fn out_of_range_slots_and_hosts_are_refused() {
        assert_eq!(RunSlot::new(512), Err(NetError::BadSlot(512)));
        assert_eq!(slot(3).host_addr(0), Err(NetError::BadHostNumber(0)));
        assert_eq!(slot(3).host_addr(251), Err(NetError::BadHostNumber(251)));
    }

    #[test]
    fn only_loopback_and_198_18_slash_15_are_allowed_destinations() {
        let check = |ip: [u8; 4], allowed: bool| {
            let ip = Ipv4Addr::from(ip);
            assert_eq!(is_allowed_destination(ip), allowed, "{ip}");
        };
        check([127, 0, 0, 1], true);
        check([127, 9, 9, 9], true);
        check([198, 18, 0, 1], true);
        check([198, 19, 255, 255], true);
        check([198, 17, 255, 255], false);
        check([198, 20, 0, 0], false);
        check([192, 0, 2, 1], false);
        check([10, 0, 0, 1], false);
        check([8, 8, 8, 8], false);
    }

    #[test]
    fn names_fit_linux_interface_names_and_carry_the_prefix() {
        let s = slot(0x1ff);
        let names = [
            s.host_netns(250),
            s.bridge_netns(),
            s.host_veth(250),
            s.bridge_port(250),
            s.pod_bridge(250),
            s.root_veth(),
            s.root_bridge_port(),
        ];
        for name in names {
            assert!(name.len() <= 15, "{name} is longer than IFNAMSIZ-1");
            assert!(name.starts_with("flc-1ff-"), "{name}");
            assert_eq!(slot_of_name(&name), Some(0x1ff));
        }
        assert_eq!(slot_of_name("flc-zzz-1"), None);
        assert_eq!(slot_of_name("cni0"), None);
    }

    #[test]
    fn slot_choice_skips_used_slots_and_routed_networks() {
        let check = |used: &[u16], routes: &str, start: u16, expected: u16| {
            let used: BTreeSet<u16> = used.iter().copied().collect();
            let chosen = choose_slot(&used, &parse_routes(routes), start).unwrap();
            assert_eq!(chosen.index(), expected, "used {used:?}, routes {routes:?}");
        };
        check(&[], "", 300, 300);
        check(&[300, 301], "", 300, 302);
        // Someone's CNI bridge holds 198.19.44.0/22: slots 256+44 .. 256+47 are taken.
        check(&[], "198.19.44.0/22 dev cni0 proto kernel", 300, 304);
        check(&[511], "default via 192.0.2.1 dev eth0", 511, 0);
        let everything = parse_routes("198.18.0.0/15 dev x");
        assert_eq!(
            choose_slot(&BTreeSet::new(), &everything, 0),
            Err(NetError::NoFreeSlot)
        );
    }
}
