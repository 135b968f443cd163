//! The shim binary on its own (root only): bad input never panics it, it records a Failed
//! state with the reason and says so on its handshake line and exit code.

use std::path::Path;
use std::process::Command;

const SHIM: &str = env!("CARGO_BIN_EXE_flotilla-node-shim");

/// Runs `__shim run` on a container directory whose `shim.json` holds `spec`; returns the
/// handshake line, the exit status of the first shim process and state.json's phase/error.
fn run_shim(spec: Option<&str>) -> (String, i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(spec) = spec {
        std::fs::write(dir.path().join("shim.json"), spec).unwrap();
    }
    let out = Command::new(SHIM)
        .args(["__shim", "run"])
        .arg(dir.path())
        .output()
        .unwrap();
    let handshake = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The detached shim writes its final state right before the handshake line.
    let state = read_state(&dir.path().join("state.json"));
    (handshake, out.status.code().unwrap_or(-1), state)
}

fn read_state(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}

fn check(spec: Option<&str>, reason_fragment: &str) {
    let (handshake, code, state) = run_shim(spec);
    assert!(handshake.starts_with("error "), "{spec:?}: {handshake}");
    assert!(handshake.contains(reason_fragment), "{spec:?}: {handshake}");
    assert_eq!(code, 0, "the first shim process only forks");
    assert_eq!(state["phase"], "Failed", "{spec:?}: {state}");
    let error = state["error"].as_str().unwrap_or("");
    assert!(error.contains(reason_fragment), "{spec:?}: {error}");
}

#[test]
fn bad_specs_are_recorded_as_failures() {
    check(None, "shim.json");
    check(Some("{not json"), "corrupt");
    check(Some(r#"{"id": 7}"#), "corrupt");
    let spec = r#"{"id":"bad id!","pod_uid":"p","name":"n","rootfs_dir":"/nonexistent",
                   "cgroups_path":"/x/p/c","log_max_bytes":1000}"#;
    check(Some(spec), "invalid");
}

#[test]
fn unknown_modes_are_usage_errors() {
    for args in [
        &["__shim"][..],
        &["__shim", "fly"],
        &["nonsense"],
        &["__shim", "run"],
    ] {
        let status = Command::new(SHIM).args(args).status().unwrap();
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
