//! `flotilla cluster up|down|status`: a real multi-peer cluster of separate processes on loopback
//! ports, to try high availability by hand. `up` starts N server peers and M agents (each with
//! its own data directory, log file, pod subnet inside 198.18.0.0/15 and bridge) and records
//! them in `DIR/cluster.json`; `down` stops them.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest cluster `up` starts (a bound on processes and ports).
pub const MAX_SERVERS: usize = 7;
pub const MAX_AGENTS: usize = 32;
/// First loopback port of server peers (peer i listens on BASE + i).
const SERVER_BASE_PORT: u16 = 7101;
/// First loopback port of agent APIs.
const AGENT_BASE_PORT: u16 = 7201;
/// How long `down` waits for servers after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `down` waits for agents, which stop their pods first (each within its grace period).
const AGENT_STOP_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
pub struct Member {
    pub role: String,
    pub name: String,
    pub pid: u32,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterFile {
    pub servers: Vec<String>,
    pub members: Vec<Member>,
}

fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

fn spawn(
    dir: &Path,
    role: &str,
    name: &str,
    addr: &str,
    args: Vec<String>,
) -> anyhow::Result<Member> {
    let data_dir = dir.join(name);
    fs::create_dir_all(&data_dir)?;
    let log = dir.join(format!("{name}.log"));
    let out = File::create(&log)?;
    let child = Command::new(std::env::current_exe()?)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok(Member {
        role: role.into(),
        name: name.into(),
        pid: child.id(),
        addr: addr.into(),
        data_dir,
        log,
    })
}

pub fn up(dir: &Path, servers: usize, agents: usize, hollow: Option<usize>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_SERVERS).contains(&servers),
        "--servers must be 1..={MAX_SERVERS}"
    );
    anyhow::ensure!(
        agents <= MAX_AGENTS,
        "--agents must be at most {MAX_AGENTS}"
    );
    anyhow::ensure!(
        !state_file(dir).exists(),
        "{} already holds a cluster; run `flotilla cluster down --dir {}` first",
        dir.display(),
        dir.display()
    );
    fs::create_dir_all(dir)?;
    let addrs: Vec<String> = (0..servers)
        .map(|i| format!("127.0.0.1:{}", SERVER_BASE_PORT + i as u16))
        .collect();
    let initial = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let name = format!("server-{}", i + 1);
        let data = dir.join(&name).display().to_string();
        let args = vec![
            "server".into(),
            "--id".into(),
            (i + 1).to_string(),
            "--listen".into(),
            addr.clone(),
            "--data-dir".into(),
            data,
            "--initial-cluster".into(),
            initial.clone(),
        ];
        members.push(spawn(dir, "server", &name, addr, args)?);
    }
    let server_list = addrs.join(",");
    for i in 0..agents {
        let name = format!("agent-{}", i + 1);
        let addr = format!("127.0.0.1:{}", AGENT_BASE_PORT + i as u16);
        let mut args = vec![
            "agent".into(),
            "--name".into(),
            name.clone(),
            "--servers".into(),
            server_list.clone(),
            "--data-dir".into(),
            dir.join(&name).display().to_string(),
            "--listen".into(),
            addr.clone(),
            "--pod-cidr".into(),
            format!("198.18.{}.0/24", 100 + i),
            "--bridge".into(),
            bridge_name(&name),
        ];
        match hollow {
            Some(n) => args.extend(["--hollow".into(), n.to_string()]),
            // `cluster down` stops everything: pods, their mounts and namespaces included.
            None => args.push("--stop-pods-on-exit".into()),
        }
        members.push(spawn(dir, "agent", &name, &addr, args)?);
    }
    let file = ClusterFile {
        servers: addrs.clone(),
        members,
    };
    fs::write(state_file(dir), serde_json::to_vec_pretty(&file)?)?;
    println!(
        "cluster up in {}: {servers} servers, {agents} agents (logs: {}/*.log)",
        dir.display(),
        dir.display()
    );
    println!("  export FLOTILLA_SERVER={server_list}");
    println!("  flotilla get nodes");
    println!("  flotilla cluster down --dir {}", dir.display());
    Ok(())
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The pod bridge of agent `agent-N`: `flcN`.
fn bridge_name(agent: &str) -> String {
    format!("flc{}", agent.trim_start_matches("agent-"))
}

pub fn down(dir: &Path, wipe: bool) -> anyhow::Result<()> {
    let path = state_file(dir);
    let file: ClusterFile = serde_json::from_slice(
        &fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
    )?;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    // Agents first, so their pods are stopped while the control plane still answers.
    for role in ["agent", "server"] {
        let members: Vec<&Member> = file.members.iter().filter(|m| m.role == role).collect();
        for m in &members {
            let _ = kill(Pid::from_raw(m.pid as i32), Signal::SIGTERM);
        }
        let grace = if role == "agent" {
            AGENT_STOP_GRACE
        } else {
            STOP_GRACE
        };
        let deadline = Instant::now() + grace;
        while members.iter().any(|m| alive(m.pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for m in members.iter().filter(|m| alive(m.pid)) {
            let _ = kill(Pid::from_raw(m.pid as i32), Signal::SIGKILL);
        }
    }
    for m in file.members.iter().filter(|m| m.role == "agent") {
        // CNI's bridge plugin leaves the pod bridge behind when the last pod goes.
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &bridge_name(&m.name)])
            .stderr(std::process::Stdio::null())
            .status();
    }
    fs::remove_file(&path)?;
    if wipe {
        for m in &file.members {
            let _ = fs::remove_dir_all(&m.data_dir);
            let _ = fs::remove_file(&m.log);
        }
    }
    println!(
        "cluster in {} stopped{}",
        dir.display(),
        if wipe { " and wiped" } else { "" }
    );
    Ok(())
}

pub fn status(dir: &Path) -> anyhow::Result<()> {
    let path = state_file(dir);
    let file: ClusterFile = serde_json::from_slice(
        &fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
    )?;
    let rows: Vec<Vec<String>> = file
        .members
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.role.clone(),
                m.addr.clone(),
                m.pid.to_string(),
                if alive(m.pid) {
                    "running".into()
                } else {
                    "stopped".into()
                },
            ]
        })
        .collect();
    print!(
        "{}",
        crate::printer::render_table(&["NAME", "ROLE", "ADDRESS", "PID", "STATE"], &rows, true)
    );
    Ok(())
}
