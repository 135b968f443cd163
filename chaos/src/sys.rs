//! Running the system tools the harness drives (`ip`, `iptables`, `tc`), each bounded by a
//! timeout, with failures turned into [`ChaosError::Command`] that carry the tool's stderr.

use std::process::{Command as StdCommand, Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::error::ChaosError;

/// Longest any one system command may take before it is killed and reported.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

fn describe(program: &str, args: &[String]) -> String {
    let mut text = program.to_string();
    for arg in args {
        text.push(' ');
        text.push_str(arg);
    }
    text
}

fn check(command: String, output: Output) -> Result<String, ChaosError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(ChaosError::Command {
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Runs `program args…` and returns its stdout, or an error with its stderr.
pub async fn run(program: &str, args: &[String]) -> Result<String, ChaosError> {
    let command = describe(program, args);
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(Ok(output)) => check(command, output),
        Ok(Err(source)) => Err(ChaosError::io(format!("starting `{command}`"), source)),
        Err(_) => Err(ChaosError::CommandTimeout {
            command,
            timeout_ms: COMMAND_TIMEOUT.as_millis() as u64,
        }),
    }
}

/// `run` with string-slice arguments.
pub async fn run_str(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    run(program, &args).await
}

/// Runs `program args…` inside network namespace `netns` (through `ip netns exec`).
pub async fn run_in_netns(
    netns: &str,
    program: &str,
    args: &[String],
) -> Result<String, ChaosError> {
    let mut full: Vec<String> = vec!["netns".into(), "exec".into(), netns.into(), program.into()];
    full.extend(args.iter().cloned());
    run("ip", &full).await
}

/// `iptables -w …` inside `netns`.
pub async fn iptables(netns: &str, args: &[String]) -> Result<String, ChaosError> {
    let mut full = vec!["-w".to_string()];
    full.extend(args.iter().cloned());
    run_in_netns(netns, "iptables", &full).await
}

/// The blocking twin of [`run`], for teardown in `Drop` and for `clean`, where no runtime may
/// be available. No timeout: the tools it runs (`ip … del`) do not block on the network.
pub fn run_blocking(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let command = describe(program, &owned);
    let output = StdCommand::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChaosError::io(format!("starting `{command}`"), source))?;
    check(command, output)
}

/// Whether the harness runs as root (it needs namespaces, iptables and mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
