//! `flotilla dev` (root, real containers): Ctrl-C stops it cleanly, leaving no mounts behind,
//! and running it again resumes the same cluster.

use std::time::Duration;

use flotilla_e2e::agent::busybox_image;
use flotilla_e2e::dev::Dev;
use flotilla_e2e::user::{cli, eventually, examples_dir, ok, ready_count};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotilla_dev_stopped_and_started_resumes_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let image = busybox_image(dir.path(), "busybox:latest");
    let data = dir.path().join("dev");
    std::fs::create_dir_all(data.join("agent/images/import")).unwrap();
    std::fs::copy(&image, data.join("agent/images/import/busybox.tar")).unwrap();
    let mut dev = Dev::start(&data, "198.18.170.0/24", &dir.path().join("dev.log"));
    let api = dev.api.clone();
    eventually(Duration::from_secs(30), "dev node Ready", || {
        let out = cli(&api, &["get", "nodes"], None);
        String::from_utf8_lossy(&out.stdout)
            .contains(" Ready ")
            .then_some(())
    });
    let hello = examples_dir().join("hello.yaml");
    ok(cli(&api, &["apply", "-f", hello.to_str().unwrap()], None));
    ok(cli(
        &api,
        &["scale", "deployment/hello", "--replicas", "2"],
        None,
    ));
    eventually(Duration::from_secs(60), "2 ready", || {
        (ready_count(&api, "app=hello") == 2).then_some(())
    });
    let status = dev.interrupt().unwrap();
    assert!(
        status.success(),
        "Ctrl-C stops flotilla dev cleanly: {status:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(
        mounts.matches(data.to_str().unwrap()).count(),
        0,
        "no mounts left behind"
    );

    dev.spawn();
    eventually(
        Duration::from_secs(60),
        "the same cluster, running again",
        || {
            let out = cli(&api, &["get", "deployment", "hello", "-o", "json"], None);
            let d: Value = serde_json::from_slice(&out.stdout).ok()?;
            (d["spec"]["replicas"] == 2 && ready_count(&api, "app=hello") == 2).then_some(())
        },
    );
}
