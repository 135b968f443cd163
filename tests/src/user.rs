//! Driving a cluster the way a user does: the `flotilla` CLI as a child process, its JSON output
//! parsed, and polling until what the user waits for holds (each wait bounded by its timeout).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flotilla_bin;

/// How often [`eventually`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// `flotilla --server SERVERS ARGS…`, with `stdin` fed to it when given.
pub fn cli(servers: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(flotilla_bin())
        .arg("--server")
        .arg(servers)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run flotilla");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait for flotilla")
}

/// The stdout of a command that must succeed (panics with its output otherwise).
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "flotilla failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The stderr of a command that must fail (panics with its output otherwise).
pub fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).expect("utf-8 output")
}

/// `get KIND -l SELECTOR -o json` in the default namespace; empty when the call fails.
pub fn list(servers: &str, kind: &str, selector: &str) -> Vec<Value> {
    let out = cli(servers, &["get", kind, "-l", selector, "-o", "json"], None);
    if !out.status.success() {
        return Vec::new();
    }
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    match doc.get("items") {
        Some(items) => items.as_array().cloned().unwrap_or_default(),
        None if doc.is_object() => vec![doc],
        None => Vec::new(),
    }
}

/// The pods matching `selector` (all pods for an empty selector).
pub fn pods(servers: &str, selector: &str) -> Vec<Value> {
    list(servers, "pods", selector)
}

/// Running, not terminating, and every container ready.
pub fn is_running_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true))
}

pub fn ready_count(servers: &str, selector: &str) -> usize {
    pods(servers, selector)
        .iter()
        .filter(|p| is_running_ready(p))
        .count()
}

/// Waits until `check` yields a value, polling every [`POLL_INTERVAL`], at most `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`eventually`] for async checks (gRPC calls from a tokio test), polling every 100 ms.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The repository's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}
