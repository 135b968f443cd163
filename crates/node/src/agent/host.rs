//! Facts about this host that the Node reports: CPUs, memory, kernel, OS image, architecture,
//! and the address the node is reached at. Reading is thin IO; parsing is pure and tested.

use std::net::{IpAddr, Ipv4Addr};

/// What the host offers and runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub kernel_version: String,
    pub os_image: String,
    /// Kubernetes' spelling: `amd64`, `arm64`, …
    pub architecture: String,
}

impl HostFacts {
    pub fn read() -> HostFacts {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        HostFacts {
            cpu_millis: cpus as i64 * 1000,
            memory_bytes: mem_total_bytes(&meminfo).unwrap_or(0),
            kernel_version: kernel.trim().to_string(),
            os_image: pretty_name(&os_release).unwrap_or_else(|| "Linux".to_string()),
            architecture: kube_arch(std::env::consts::ARCH).to_string(),
        }
    }
}

/// `MemTotal:  16314140 kB` → bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: i64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"` → the name.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    (!value.is_empty()).then(|| value.to_string())
}

/// Rust's architecture names → Go's (which Kubernetes uses).
pub fn kube_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The node's address: `listen_ip` unless it is unspecified, then the first non-loopback
/// IPv4 address of an interface that is up, else loopback.
pub fn node_ip(listen_ip: IpAddr) -> IpAddr {
    if !listen_ip.is_unspecified() {
        return listen_ip;
    }
    let found = nix::ifaddrs::getifaddrs().ok().and_then(|addrs| {
        addrs
            .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
            .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
            .find(|ip| !ip.is_loopback())
    });
    IpAddr::V4(found.unwrap_or(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release_are_parsed() {
        let meminfo = "MemTotal:       16314140 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(16_314_140 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: x kB\n"), None);
        let os = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            pretty_name(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("NAME=x\n"), None);
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("riscv64"), "riscv64");
    }

    #[test]
    fn a_specific_listen_ip_is_the_node_ip() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(node_ip(ip), ip);
        assert!(!node_ip("0.0.0.0".parse().unwrap()).is_unspecified());
    }
}
