//! Adoption across an agent crash (root only): a child process (this test binary re-executed)
//! runs a runtime, starts a container and is SIGKILLed; a new runtime on the same state
//! directory lists the container as running with the same init pid, has not started it
//! again, can exec into it, stop and remove it. Root filesystems a dead agent prepared but
//! never used are released on request.

mod runtime_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_node::image::prepare_rootfs;
use flotilla_node::runtime::{
    container_cgroup, ContainerId, ContainerSpec, ContainerState, ExitReason, Resources, Runtime,
    UserSpec,
};
use runtime_common::{busybox_image, exit_of, hierarchies, Fixture, FixtureOptions};

/// Set in the child: the fixture directory it shares with the parent.
const CHILD_DIR_ENV: &str = "FLOTILLA_ADOPT_CHILD_DIR";
/// Set in the child: the cgroup parent it shares with the parent.
const CHILD_CGROUP_ENV: &str = "FLOTILLA_ADOPT_CHILD_CGROUP";
const SCRIPT: &str = "trap 'exit 0' TERM; echo ready; sleep 1000 & wait";

/// The "agent" that gets killed; a no-op unless run by `adoption_after_agent_sigkill`.
#[tokio::test]
async fn adoption_child_agent() {
    let (Some(dir), Some(cgroup)) = (
        std::env::var_os(CHILD_DIR_ENV),
        std::env::var_os(CHILD_CGROUP_ENV),
    ) else {
        return;
    };
    let dir = Path::new(&dir);
    let busybox = busybox_image(&dir.join("child"));
    let mut config = flotilla_node::runtime::RuntimeConfig::new(
        &dir.join("state"),
        Path::new(runtime_common::SHIM),
    );
    config.cgroup_parent = cgroup.into_string().unwrap();
    let runtime = Runtime::new(config).unwrap();
    let sandbox = runtime
        .create_sandbox("pod-adopt", "adoptee")
        .await
        .unwrap();
    let rootfs = prepare_rootfs(&busybox.image, &runtime.rootfs_dir().unwrap()).unwrap();
    let spec = ContainerSpec {
        name: "main".into(),
        argv: vec!["/bin/sh".into(), "-c".into(), SCRIPT.into()],
        env: busybox.image.config.env.clone(),
        working_dir: String::new(),
        user: UserSpec::default(),
        rootfs,
        resources: Resources::default(),
        mounts: Vec::new(),
    };
    let id = runtime.start_container(&sandbox, spec).await.unwrap();
    let pid = runtime.status(&id).unwrap().pid.unwrap();
    // A file, not stdout: libtest may capture a test's output.
    let report = dir.join("adopt.txt");
    std::fs::write(dir.join("adopt.tmp"), format!("{id} {pid}")).unwrap();
    std::fs::rename(dir.join("adopt.tmp"), report).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// Runs the child agent, returns (container id, init pid) once it started the container,
/// then SIGKILLs it.
fn run_and_kill_child(fx: &Fixture) -> (ContainerId, i32) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "adoption_child_agent",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, fx.dir.path())
        .env(CHILD_CGROUP_ENV, &fx.cgroup_parent)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let report = fx.dir.path().join("adopt.txt");
    let deadline = Instant::now() + runtime_common::WAIT_LIMIT;
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&report) {
            break Some(text);
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let text = text.expect("the child agent started a container");
    let mut words = text.split(' ');
    let id = ContainerId::parse(words.next().unwrap()).unwrap();
    let pid = words.next().unwrap().parse().unwrap();
    (id, pid)
}

#[tokio::test]
async fn adoption_after_agent_sigkill() {
    let fx = Fixture::new(FixtureOptions::default());
    let (id, pid) = run_and_kill_child(&fx);

    let runtime = Runtime::new(fx.runtime.config().clone()).unwrap();
    let listed = runtime.list().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    assert!(
        matches!(listed[0].state, ContainerState::Running { .. }),
        "{listed:?}"
    );
    assert_eq!(listed[0].pid, Some(pid), "same init process");
    let sandboxes = runtime.list_sandboxes().unwrap();
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0].hostname, "adoptee");

    // Not started twice: the pod has one container cgroup holding sh and sleep.
    let memory = hierarchies(runtime.cgroup_mode())
        .into_iter()
        .find(|h| h.ends_with("memory"));
    if let Some(memory) = memory {
        let cgroup = container_cgroup(&fx.cgroup_parent, "pod-adopt", id.as_str());
        let pod_dir = memory.join(cgroup.parent().unwrap().strip_prefix("/").unwrap());
        let containers = std::fs::read_dir(&pod_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .count();
        assert_eq!(containers, 1);
        let procs = std::fs::read_to_string(
            memory
                .join(cgroup.strip_prefix("/").unwrap())
                .join("cgroup.procs"),
        )
        .unwrap();
        assert_eq!(procs.lines().count(), 2, "{procs}");
        assert!(procs.lines().any(|p| p == pid.to_string()));
    }

    let argv = vec!["echo".to_string(), "adopted".to_string()];
    let out = runtime
        .exec(&id, &argv, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"adopted\n");
    runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
    let state = runtime.status(&id).unwrap().state;
    assert_eq!(exit_of(&state), (0, ExitReason::Completed));
    runtime.remove(&id).await.unwrap();
    runtime.remove_sandbox("pod-adopt").await.unwrap();
    assert!(runtime.list().unwrap().is_empty());
    assert!(fx.mounts().is_empty(), "{:?}", fx.mounts());
    assert_eq!((fx.processes(), fx.cgroup_dirs()), (0, 0));
}

#[tokio::test]
async fn orphaned_root_filesystems_are_released_and_used_ones_kept() {
    let fx = Fixture::new(FixtureOptions::default());
    let sandbox = fx.runtime.create_sandbox("pod-orphans", "o").await.unwrap();
    let id = fx
        .start(&sandbox, "main", "trap 'exit 0' TERM; sleep 1000 & wait")
        .await;
    // An agent that died between preparing a rootfs and starting its container.
    let dir = fx.runtime.rootfs_dir().unwrap();
    prepare_rootfs(&fx.busybox.image, &dir).unwrap().keep();
    assert_eq!(fx.mounts().len(), 5, "two rootfs and three namespaces");

    let young = fx
        .runtime
        .remove_orphan_rootfs(Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        young, 0,
        "a recent rootfs may belong to a start in progress"
    );
    assert_eq!(fx.runtime.remove_orphan_rootfs(Duration::ZERO).unwrap(), 1);
    assert!(!dir.exists());
    assert_eq!(fx.mounts().len(), 4);
    let argv = vec!["true".to_string()];
    let out = fx
        .runtime
        .exec(&id, &argv, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "the running container kept its rootfs");

    fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
    fx.runtime.remove(&id).await.unwrap();
    fx.runtime.remove_sandbox("pod-orphans").await.unwrap();
    assert_eq!(fx.runtime.remove_orphan_rootfs(Duration::ZERO).unwrap(), 0);
    assert!(fx.mounts().is_empty());
}

/// What an agent's passes and teardowns read: one pod's containers only, and the sandboxes by
/// name.
#[tokio::test]
async fn one_pods_containers_and_every_sandbox_are_listed() {
    let fx = Fixture::new(FixtureOptions::default());
    let a = fx.runtime.create_sandbox("pod-list-a", "a").await.unwrap();
    let b = fx.runtime.create_sandbox("pod-list-b", "b").await.unwrap();
    let script = "trap 'exit 0' TERM; sleep 1000 & wait";
    let in_a = fx.start(&a, "main", script).await;
    let in_b = fx.start(&b, "main", script).await;

    assert_eq!(
        fx.runtime.sandbox_uids().unwrap(),
        ["pod-list-a", "pod-list-b"]
    );
    let of = |uid: &str| -> Vec<_> {
        let listed = fx.runtime.list_pod(uid).unwrap();
        listed.into_iter().map(|c| c.id).collect()
    };
    assert_eq!(of("pod-list-a"), std::slice::from_ref(&in_a));
    assert_eq!(of("pod-list-b"), std::slice::from_ref(&in_b));
    assert!(of("pod-list-c").is_empty());

    for (id, pod) in [(in_a, "pod-list-a"), (in_b, "pod-list-b")] {
        fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
        fx.runtime.remove(&id).await.unwrap();
        fx.runtime.remove_sandbox(pod).await.unwrap();
    }
    assert!(fx.runtime.sandbox_uids().unwrap().is_empty());
    assert!(fx.mounts().is_empty());
}

/// One container whose record is corrupt fails `list`, but hides none of the others from
/// `list_readable` (which the fence kills through).
#[tokio::test]
async fn a_corrupt_record_hides_no_other_container_from_list_readable() {
    let fx = Fixture::new(FixtureOptions::default());
    let a = fx
        .runtime
        .create_sandbox("pod-corrupt-a", "a")
        .await
        .unwrap();
    let b = fx
        .runtime
        .create_sandbox("pod-corrupt-b", "b")
        .await
        .unwrap();
    let script = "trap 'exit 0' TERM; sleep 1000 & wait";
    let bad = fx.start(&a, "main", script).await;
    let good = fx.start(&b, "main", script).await;
    let record = fx
        .state_dir()
        .join("containers")
        .join(bad.to_string())
        .join("state.json");
    let intact = std::fs::read(&record).unwrap();
    std::fs::write(&record, b"{ not json").unwrap();

    assert!(fx.runtime.list().is_err(), "list refuses to guess");
    let flotilla_node::runtime::Readable { listed, unreadable } =
        fx.runtime.list_readable().unwrap();
    let listed: Vec<_> = listed
        .into_iter()
        .map(|c| (c.id.clone(), c.is_running()))
        .collect();
    assert_eq!(listed, [(good.clone(), true)]);
    let unreadable: Vec<_> = unreadable.into_iter().map(|(id, _)| id).collect();
    assert_eq!(unreadable, std::slice::from_ref(&bad));

    std::fs::write(&record, intact).unwrap();
    for (id, pod) in [(bad, "pod-corrupt-a"), (good, "pod-corrupt-b")] {
        fx.runtime.stop(&id, Duration::from_secs(30)).await.unwrap();
        fx.runtime.remove(&id).await.unwrap();
        fx.runtime.remove_sandbox(pod).await.unwrap();
    }
    assert!(fx.mounts().is_empty());
}

/// A sandbox directory that never got its record (the agent died between the two) counts as
/// a sandbox once it is older than any creation takes, and is removed like one.
#[tokio::test]
async fn an_abandoned_sandbox_directory_is_listed_once_old_and_removed() {
    let fx = Fixture::new(FixtureOptions::default());
    let dir = fx.state_dir().join("sandboxes").join("pod-abandoned");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(
        fx.runtime.sandbox_uids().unwrap().is_empty(),
        "a creation may still be in progress"
    );
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::open(&dir)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    assert_eq!(fx.runtime.sandbox_uids().unwrap(), ["pod-abandoned"]);
    assert!(
        fx.runtime.list_sandboxes().unwrap().is_empty(),
        "it has no record to show"
    );
    fx.runtime.remove_sandbox("pod-abandoned").await.unwrap();
    assert!(!dir.exists());
    assert!(fx.runtime.sandbox_uids().unwrap().is_empty());
}
