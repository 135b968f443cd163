//! Real containers through the runtime (root only): exit codes and reasons, logs (follow,
//! tail, rotation), stop with SIGTERM and SIGKILL, the memory limit's OOM kill, CPU and
//! memory limits in the cgroup, exec, misuse errors, and starts that fail cleanly.

mod runtime_common;

use std::time::{Duration, Instant};

use flotilla_node::runtime::{
    CgroupMode, ContainerState, ExitReason, LogOptions, ProcIdentity, Resources, RuntimeError,
    Stream,
};
use runtime_common::{exit_of, Fixture, FixtureOptions};

/// Runs `script` to completion and checks exit code, reason and that the log holds `log`.
async fn check_run(fx: &Fixture, script: &str, code: i32, reason: ExitReason, log: &[&str]) {
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "runner")
        .await
        .unwrap();
    let id = fx.start(&sandbox, "main", script).await;
    let state = fx.wait_exited(&id).await;
    assert_eq!(exit_of(&state), (code, reason), "{script}");
    assert_eq!(fx.log_lines(&id), log, "{script}");
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
}

fn pod_uid() -> String {
    format!("pod-{:08x}", rand::random::<u32>())
}

#[tokio::test]
async fn exit_codes_reasons_and_logs() {
    let fx = Fixture::new(FixtureOptions::default());
    check_run(&fx, "echo hello; exit 3", 3, ExitReason::Error, &["hello"]).await;
    check_run(&fx, "echo ok", 0, ExitReason::Completed, &["ok"]).await;
    check_run(
        &fx,
        "echo out; echo err >&2",
        0,
        ExitReason::Completed,
        &["out", "err"],
    )
    .await;
    check_run(
        &fx,
        "printf 'no newline'",
        0,
        ExitReason::Completed,
        &["no newline"],
    )
    .await;
    check_run(&fx, "hostname", 0, ExitReason::Completed, &["runner"]).await;
    // SIGPIPE has its default action: `yes` dies quietly when `head` is done.
    check_run(&fx, "yes | head -n 1", 0, ExitReason::Completed, &["y"]).await;
    check_run(
        &fx,
        "id -u; echo $HOSTNAME",
        0,
        ExitReason::Completed,
        &["0", "runner"],
    )
    .await;
    check_run(
        &fx,
        "cat /proc/timer_list | wc -c",
        0,
        ExitReason::Completed,
        &["0"],
    )
    .await;
    check_run(
        &fx,
        "echo x > /proc/sys/kernel/hostname",
        1,
        ExitReason::Error,
        &["/bin/sh: can't create /proc/sys/kernel/hostname: Read-only file system"],
    )
    .await;
}

/// Starts `script`, stops it with `grace`, and checks the outcome and that stop took at
/// least `min_elapsed`; the init process must be gone afterwards.
async fn check_stop(
    fx: &Fixture,
    script: &str,
    grace: Duration,
    expected: (i32, ExitReason),
    min_elapsed: Duration,
) {
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "stopper")
        .await
        .unwrap();
    let id = fx.start(&sandbox, "main", script).await;
    let running = fx.runtime.status(&id).unwrap();
    assert!(
        matches!(running.state, ContainerState::Running { .. }),
        "{running:?}"
    );
    let init = ProcIdentity::of(running.pid.unwrap()).unwrap();
    // Let the shell install its trap before the signal arrives.
    wait_for_log(fx, &id, "ready").await;
    let begun = Instant::now();
    fx.runtime.stop(&id, grace).await.unwrap();
    let elapsed = begun.elapsed();
    assert!(
        elapsed >= min_elapsed,
        "{script}: stopped after {elapsed:?}"
    );
    assert!(!init.is_alive(), "{script}: init process survived");
    let state = fx.runtime.status(&id).unwrap().state;
    assert_eq!(exit_of(&state), expected, "{script}");
    fx.runtime.stop(&id, grace).await.unwrap();
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
}

async fn wait_for_log(fx: &Fixture, id: &flotilla_node::runtime::ContainerId, line: &str) {
    let deadline = Instant::now() + runtime_common::WAIT_LIMIT;
    while !fx.log_lines(id).iter().any(|l| l == line) {
        assert!(Instant::now() < deadline, "{id} never logged {line:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stop_sends_term_then_kill_after_the_grace_period() {
    let fx = Fixture::new(FixtureOptions::default());
    let long = Duration::from_secs(60);
    let short = Duration::from_secs(2);
    // A process that handles TERM exits by itself, long before the grace period ends
    // (were TERM not delivered, the stop would end in SIGKILL after 60 s).
    let handles_term = "trap 'echo bye; exit 0' TERM; echo ready; sleep 1000 & wait";
    check_stop(
        &fx,
        handles_term,
        long,
        (0, ExitReason::Completed),
        Duration::ZERO,
    )
    .await;
    // One that ignores TERM is killed once the grace period is over.
    let ignores_term = "trap '' TERM; echo ready; sleep 1000";
    check_stop(&fx, ignores_term, short, (137, ExitReason::Signaled), short).await;
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_reported_as_oom_killed() {
    let fx = Fixture::new(FixtureOptions::default());
    let check = |script: &'static str, expected: (i32, ExitReason)| {
        let fx = &fx;
        async move {
            let sandbox = fx.runtime.create_sandbox(&pod_uid(), "hog").await.unwrap();
            let limited = Resources {
                memory_limit_bytes: Some(32 << 20),
                ..Resources::default()
            };
            let spec = fx.spec_with("main", script, limited);
            let id = fx.runtime.start_container(&sandbox, spec).await.unwrap();
            let state = fx.wait_exited(&id).await;
            assert_eq!(exit_of(&state), expected, "{script}");
            fx.runtime.remove(&id).await.unwrap();
            fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
        }
    };
    // busybox `tail` buffers a newline-free input whole: 200 MiB against a 32 MiB limit.
    check(
        "head -c 200m /dev/zero | tail",
        (137, ExitReason::OOMKilled),
    )
    .await;
    check(
        "head -c 1m /dev/zero | tail | wc -c",
        (0, ExitReason::Completed),
    )
    .await;
}

/// Runs `argv` in `id` and checks exit code, stdout and stderr.
async fn check_exec(
    fx: &Fixture,
    id: &flotilla_node::runtime::ContainerId,
    argv: &[&str],
    expected: (i32, &str, &str),
) {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let out = fx
        .runtime
        .exec(id, &argv, Duration::from_secs(20))
        .await
        .unwrap();
    let got = (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let expected = (expected.0, expected.1.to_string(), expected.2.to_string());
    assert_eq!(got, expected, "{argv:?}");
    assert!(!out.timed_out && !out.truncated);
}

#[tokio::test]
async fn exec_runs_commands_inside_the_container() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "exec-host")
        .await
        .unwrap();
    let script = "echo secret > /tmp/mark; trap 'exit 0' TERM; echo ready; sleep 1000 & wait";
    let id = fx.start(&sandbox, "main", script).await;
    wait_for_log(&fx, &id, "ready").await;
    check_exec(&fx, &id, &["echo", "hi"], (0, "hi\n", "")).await;
    check_exec(&fx, &id, &["cat", "/tmp/mark"], (0, "secret\n", "")).await;
    check_exec(&fx, &id, &["hostname"], (0, "exec-host\n", "")).await;
    let both = ["sh", "-c", "echo out; echo err >&2; exit 7"];
    check_exec(&fx, &id, &both, (7, "out\n", "err\n")).await;
    check_exec(&fx, &id, &["sh", "-c", "yes | head -n 1"], (0, "y\n", "")).await;
    // The exec'd process sees the container's PID namespace: its init is PID 1.
    check_exec(
        &fx,
        &id,
        &["sh", "-c", "cat /proc/1/cmdline | head -c 7"],
        (0, "/bin/sh", ""),
    )
    .await;

    let argv = vec!["sleep".to_string(), "30".to_string()];
    let slow = fx
        .runtime
        .exec(&id, &argv, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(slow.timed_out, "{slow:?}");
    assert_eq!(slow.exit_code, 137);

    let missing = vec!["/no/such/binary".to_string()];
    let result = fx.runtime.exec(&id, &missing, Duration::from_secs(5)).await;
    assert!(
        matches!(result, Err(RuntimeError::Helper { .. })),
        "{result:?}"
    );

    fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
    let stopped = fx.runtime.exec(&id, &argv, Duration::from_secs(5)).await;
    assert!(
        matches!(stopped, Err(RuntimeError::Invalid { .. })),
        "{stopped:?}"
    );
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
}

fn contents(lines: &[flotilla_node::runtime::LogLine]) -> Vec<(Stream, String)> {
    lines
        .iter()
        .map(|l| (l.stream, String::from_utf8_lossy(&l.content).into_owned()))
        .collect()
}

#[tokio::test]
async fn logs_tail_and_follow() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "logger")
        .await
        .unwrap();
    let script = "for i in 1 2 3 4; do echo line$i; sleep 0.2; done; echo oops >&2";
    let id = fx.start(&sandbox, "main", script).await;
    let follow = LogOptions {
        tail_lines: None,
        follow: true,
    };
    let followed = fx
        .runtime
        .logs(&id, follow)
        .unwrap()
        .collect()
        .await
        .unwrap();
    let out = |s: &str| (Stream::Stdout, s.to_string());
    let expected = vec![
        out("line1"),
        out("line2"),
        out("line3"),
        out("line4"),
        (Stream::Stderr, "oops".to_string()),
    ];
    assert_eq!(contents(&followed), expected);
    fx.wait_exited(&id).await;
    let tail = LogOptions {
        tail_lines: Some(2),
        follow: false,
    };
    let last = fx.runtime.logs(&id, tail).unwrap().collect().await.unwrap();
    assert_eq!(contents(&last), expected[3..].to_vec());
    fx.runtime.remove(&id).await.unwrap();
    let gone = fx.runtime.logs(&id, tail);
    assert!(matches!(gone, Err(RuntimeError::NotFound { .. })));
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
}

#[tokio::test]
async fn a_failed_start_leaves_nothing_behind() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "broken")
        .await
        .unwrap();
    let mounts_before = fx.mounts().len();
    let mut spec = fx.spec("main", "true");
    spec.argv = vec!["/no/such/binary".to_string()];
    let result = fx.runtime.start_container(&sandbox, spec).await;
    assert!(
        matches!(result, Err(RuntimeError::StartFailed { .. })),
        "{result:?}"
    );
    assert!(fx.runtime.list().unwrap().is_empty());
    assert_eq!(fx.mounts().len(), mounts_before, "rootfs released");
    assert_eq!(fx.processes(), 0);
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
    assert_eq!(fx.cgroup_dirs(), 0);
}

#[tokio::test]
async fn logs_are_rotated_at_the_cap() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "chatty")
        .await
        .unwrap();
    // About 2.7 MB of records against the fixture's 1 MiB cap.
    let script = "yes 0123456789012345678901234567890123456789 | head -n 30000; echo last";
    let id = fx.start(&sandbox, "main", script).await;
    fx.wait_exited(&id).await;
    let log = fx.runtime.log_path(&id);
    let rotated = log.with_file_name("container.log.1");
    let cap = fx.runtime.config().log_max_bytes;
    let size = |path: &std::path::Path| std::fs::metadata(path).unwrap().len();
    assert!(size(&log) <= cap, "live log: {} bytes", size(&log));
    let rotated_size = size(&rotated);
    assert!(
        rotated_size <= cap && rotated_size > cap / 2,
        "rotated: {rotated_size} bytes"
    );
    assert_eq!(fx.log_lines(&id).last().map(String::as_str), Some("last"));
    let all = fx
        .runtime
        .logs(&id, LogOptions::default())
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(
        all.len() < 30_001,
        "older records were dropped: {}",
        all.len()
    );
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
}

#[tokio::test]
async fn misuse_is_a_typed_error() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx.runtime.create_sandbox("pod-misuse", "m").await.unwrap();
    let again = fx.runtime.create_sandbox("pod-misuse", "m").await;
    assert!(
        matches!(again, Err(RuntimeError::SandboxExists { .. })),
        "{again:?}"
    );
    let bad = fx.runtime.create_sandbox("Pod/../x", "m").await;
    assert!(matches!(bad, Err(RuntimeError::Invalid { .. })), "{bad:?}");
    let id = fx
        .start(&sandbox, "main", "trap 'exit 0' TERM; sleep 1000 & wait")
        .await;
    let running = fx.runtime.remove(&id).await;
    assert!(
        matches!(running, Err(RuntimeError::StillRunning { .. })),
        "{running:?}"
    );
    let busy = fx.runtime.remove_sandbox("pod-misuse").await;
    assert!(
        matches!(busy, Err(RuntimeError::SandboxBusy { .. })),
        "{busy:?}"
    );
    fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove(&id).await.unwrap();
    let gone = fx.runtime.status(&id);
    assert!(
        matches!(gone, Err(RuntimeError::NotFound { .. })),
        "{gone:?}"
    );
    fx.runtime.remove_sandbox("pod-misuse").await.unwrap();
    let missing = fx.runtime.sandbox("pod-misuse");
    assert!(
        matches!(missing, Err(RuntimeError::SandboxNotFound { .. })),
        "{missing:?}"
    );
}

/// The value of cgroup file `file` of controller `controller` for container `id`.
fn cgroup_value(
    fx: &Fixture,
    id: &flotilla_node::runtime::ContainerId,
    controller: &str,
    file: &str,
) -> String {
    let path =
        flotilla_node::runtime::container_cgroup(&fx.cgroup_parent, id.pod_uid(), id.as_str());
    let relative = path.strip_prefix("/").unwrap();
    let root = std::path::Path::new(flotilla_node::runtime::CGROUP_ROOT);
    let dir = match fx.runtime.cgroup_mode() {
        CgroupMode::V1 => root.join(controller).join(relative),
        CgroupMode::V2 => root.join(relative),
    };
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn cpu_and_memory_limits_reach_the_cgroup() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx
        .runtime
        .create_sandbox(&pod_uid(), "limited")
        .await
        .unwrap();
    let resources = Resources {
        cpu_request_millis: Some(250),
        cpu_limit_millis: Some(500),
        memory_limit_bytes: Some(64 << 20),
    };
    let spec = fx.spec_with("main", "trap 'exit 0' TERM; sleep 1000 & wait", resources);
    let id = fx.runtime.start_container(&sandbox, spec).await.unwrap();
    let expected: &[(&str, &str, &str)] = match fx.runtime.cgroup_mode() {
        CgroupMode::V1 => &[
            ("cpu", "cpu.shares", "256"),
            ("cpu", "cpu.cfs_quota_us", "50000"),
            ("cpu", "cpu.cfs_period_us", "100000"),
            ("memory", "memory.limit_in_bytes", "67108864"),
        ],
        CgroupMode::V2 => &[
            ("cpu", "cpu.max", "50000 100000"),
            ("memory", "memory.max", "67108864"),
        ],
    };
    for &(controller, file, value) in expected {
        assert_eq!(cgroup_value(&fx, &id, controller, file), value, "{file}");
    }
    fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
}

/// The command line of process `pid`, arguments separated by spaces.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Pids whose command line is a shim running the container `id`.
fn shims_of(fx: &Fixture, id: &flotilla_node::runtime::ContainerId) -> Vec<u32> {
    let wanted = format!(
        "__shim run {} ",
        fx.state_dir()
            .join("containers")
            .join(id.as_str())
            .display()
    );
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| command_line(*pid).contains(&wanted))
        .collect()
}

#[tokio::test]
async fn shims_are_forked_by_a_zygote_and_exec_takes_over_when_it_dies() {
    const IDLE: &str = "trap 'exit 0' TERM; sleep 1000 & wait";
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx.runtime.create_sandbox(&pod_uid(), "zyg").await.unwrap();
    assert_eq!(fx.runtime.zygote_pid().await, None, "started on first use");

    let forked = fx.start(&sandbox, "forked", IDLE).await;
    let zygote = fx.runtime.zygote_pid().await.expect("a zygote runs");
    assert!(command_line(zygote).contains("__shim zygote"), "{zygote}");
    // The forked shim shows its own command line, as an exec'd one would.
    assert_eq!(shims_of(&fx, &forked).len(), 1, "one shim of {forked}");
    assert!(fx.runtime.status(&forked).unwrap().is_running());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let execd = fx.start(&sandbox, "execd", IDLE).await;
    assert!(fx.runtime.status(&execd).unwrap().is_running());
    assert_eq!(
        fx.runtime.zygote_pid().await,
        None,
        "a failed zygote is dropped, not retried at once"
    );
    assert_eq!(shims_of(&fx, &execd).len(), 1);
    assert!(
        fx.runtime.status(&forked).unwrap().is_running(),
        "the zygote's death touches no running shim"
    );

    for id in [&forked, &execd] {
        fx.runtime.stop(id, Duration::from_secs(30)).await.unwrap();
        fx.runtime.remove(id).await.unwrap();
    }
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
    assert_eq!(fx.processes(), 0);

    let exec_only = Fixture::new(FixtureOptions {
        no_zygote: true,
        ..Default::default()
    });
    let sandbox = exec_only
        .runtime
        .create_sandbox(&pod_uid(), "plain")
        .await
        .unwrap();
    let id = exec_only.start(&sandbox, "main", IDLE).await;
    assert!(exec_only.runtime.status(&id).unwrap().is_running());
    assert_eq!(exec_only.runtime.zygote_pid().await, None);
    exec_only
        .runtime
        .stop(&id, Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_container_with_an_unreadable_record_is_stopped_through_its_cgroup() {
    const STUBBORN: &str = "trap '' TERM; sleep 1000 & wait";
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx.runtime.create_sandbox(&pod_uid(), "torn").await.unwrap();
    let id = fx.start(&sandbox, "main", STUBBORN).await;
    let state_file = fx
        .state_dir()
        .join("containers")
        .join(id.as_str())
        .join("state.json");
    std::fs::write(&state_file, b"{ torn").unwrap();
    assert!(matches!(
        fx.runtime.status(&id),
        Err(RuntimeError::CorruptState { .. })
    ));

    fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
    // The shim recorded the kill, replacing the torn record.
    let state = fx.wait_exited(&id).await;
    assert_eq!(exit_of(&state), (137, ExitReason::Signaled));
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox(&sandbox.pod_uid).await.unwrap();
    assert_eq!(fx.processes(), 0);
}
