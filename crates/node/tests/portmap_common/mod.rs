//! Tests that use CNI's `portmap` (host ports) share its NAT chains: [`PORTMAP_TESTS`] runs
//! them one at a time, [`PortmapChains`] removes what they set up even when they fail, and
//! [`nat_rules_for`] shows what is in place.
// Each test binary uses a part.
#![allow(dead_code)]

/// Lines of the NAT table that forward `port`.
pub fn nat_rules_for(port: u16) -> Vec<String> {
    let out = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("--dport {port} ")))
        .map(str::to_string)
        .collect()
}

/// Held by each test that uses portmap: one test's [`PortmapChains`] must not remove the shared
/// chains while another adds its rules.
pub static PORTMAP_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// When dropped, removes the port forwards of the test's pods (left behind when the test
/// failed: portmap's DEL finds them by network name and pod), then the NAT chains portmap
/// shares between pods and its jumps to them, once no pod's rule is left in them: the plugin
/// leaves those behind on its last DEL.
pub struct PortmapChains {
    network: String,
    pods: Vec<String>,
}

impl PortmapChains {
    /// For the pods `pods` (CNI container ids: pod UIDs) of the CNI network `network`.
    pub fn new(network: &str, pods: &[&str]) -> PortmapChains {
        PortmapChains {
            network: network.to_string(),
            pods: pods.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Also removes the forwards of `pod` when dropped.
    pub fn add_pod(&mut self, pod: &str) {
        self.pods.push(pod.to_string());
    }

    /// portmap DEL for `pod`, run as the agent runs it, without waiting on an async runtime.
    fn remove_forwards(&self, pod: &str) {
        use std::io::Write;
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.network,
            "type": "portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 1, "protocol": "tcp"}]},
        });
        let child = std::process::Command::new("/usr/lib/cni/portmap")
            .env_clear()
            .env("CNI_COMMAND", "DEL")
            .env("CNI_CONTAINERID", pod)
            .env("CNI_NETNS", "")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn();
        if let Ok(mut child) = child {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(config.to_string().as_bytes());
            }
            let _ = child.wait();
        }
    }
}

impl Drop for PortmapChains {
    fn drop(&mut self) {
        for pod in &self.pods {
            self.remove_forwards(pod);
        }
        let iptables = |args: &[&str]| {
            std::process::Command::new("iptables")
                .args(["-t", "nat"])
                .args(args)
                .output()
                .map(|o| {
                    (
                        o.status.success(),
                        String::from_utf8_lossy(&o.stdout).into_owned(),
                    )
                })
                .unwrap_or((false, String::new()))
        };
        let (_, dnat) = iptables(&["-S", "CNI-HOSTPORT-DNAT"]);
        if dnat.lines().any(|l| l.starts_with("-A ")) {
            return;
        }
        // The jumps portmap adds to its shared chains.
        let local = [
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            "CNI-HOSTPORT-DNAT",
        ];
        for hook in ["PREROUTING", "OUTPUT"] {
            let mut args = vec!["-D", hook];
            args.extend_from_slice(&local);
            iptables(&args);
        }
        let masquerade = "CNI portfwd requiring masquerade";
        iptables(&[
            "-D",
            "POSTROUTING",
            "-m",
            "comment",
            "--comment",
            masquerade,
            "-j",
            "CNI-HOSTPORT-MASQ",
        ]);
        for chain in [
            "CNI-HOSTPORT-DNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ] {
            iptables(&["-F", chain]);
            iptables(&["-X", chain]);
        }
    }
}
