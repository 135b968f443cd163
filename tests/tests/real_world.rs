//! A typical real-world Kubernetes manifest (tests/manifests/shop.yaml: Deployments and Services
//! with requests, env and ports, images side-loaded beforehand) applies unchanged and runs on
//! `flotilla dev` (root, real containers); the same file with something unsupported in it is
//! rejected with a path-precise message and changes nothing.

use std::path::PathBuf;
use std::time::Duration;

use flotilla_e2e::agent::busybox_image;
use flotilla_e2e::dev::Dev;
use flotilla_e2e::user::{cli, eventually, fails, is_running_ready, ok, pods};
use serde_json::Value;

const SHOP: &str = "app.kubernetes.io/part-of=shop";

fn shop_manifest() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/shop.yaml");
    std::fs::read_to_string(path).unwrap()
}

/// Edits of the manifest that must be refused whole, and what the message must name.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "a field Flotilla does not support, in the second Deployment",
        "          workingDir: /www\n",
        "          workingDir: /www\n          securityContext: {runAsNonRoot: true}\n",
    ),
    (
        "a kind Flotilla does not serve, at the end of the file",
        "      nodePort: 30080\n",
        "      nodePort: 30080\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: shop}\nspec: {}\n",
    ),
    (
        "a malformed quantity",
        "limits: {memory: 128Mi}",
        "limits: {memory: 128XB}",
    ),
];

const REFUSED_MESSAGES: &[&str] = &[
    "spec.template.spec.containers[0].securityContext",
    "Ingress",
    "spec.template.spec.containers[0].resources.limits.memory",
];

fn exec(api: &str, pod: &str, command: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--"];
    args.extend_from_slice(command);
    ok(cli(api, &args, None)).trim().to_string()
}

fn get_json(api: &str, kind: &str, name: &str) -> Value {
    serde_json::from_str(&ok(cli(api, &["get", kind, name, "-o", "json"], None))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_world_manifest_runs_unchanged_and_unsupported_parts_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("dev");
    let import = data.join("agent/images/import");
    std::fs::create_dir_all(&import).unwrap();
    for tag in [
        "registry.example.com/shop/cache:7.2",
        "registry.example.com/shop/frontend:1.4.2",
    ] {
        let image = busybox_image(dir.path(), tag);
        std::fs::copy(&image, import.join(image.file_name().unwrap())).unwrap();
    }
    let dev = Dev::start(&data, "198.18.171.0/24", &dir.path().join("dev.log"));
    let api = dev.api.clone();
    eventually(Duration::from_secs(30), "dev node Ready", || {
        let out = cli(&api, &["get", "nodes"], None);
        String::from_utf8_lossy(&out.stdout)
            .contains(" Ready ")
            .then_some(())
    });
    let manifest = shop_manifest();
    ok(cli(&api, &["apply", "-f", "-"], Some(&manifest)));
    let running = eventually(Duration::from_secs(60), "3 shop pods ready", || {
        let ps = pods(&api, SHOP);
        (ps.len() == 3 && ps.iter().all(is_running_ready)).then_some(ps)
    });

    let frontend = running
        .iter()
        .find(|p| p["metadata"]["labels"]["app.kubernetes.io/name"] == "shop-frontend")
        .unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        exec(&api, &frontend, &["sh", "-c", "echo $LOG_LEVEL"]),
        "info"
    );
    assert_eq!(
        exec(&api, &frontend, &["sh", "-c", "echo $CACHE_HOST"]),
        "shop-cache"
    );
    assert_eq!(exec(&api, &frontend, &["pwd"]), "/www");
    let page = exec(&api, &frontend, &["wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert_eq!(page, "shop at eu-west");
    let services = ok(cli(&api, &["get", "svc"], None));
    assert!(services.contains("shop-frontend"), "{services}");
    assert!(
        services.contains("30080"),
        "the NodePort is kept: {services}"
    );

    for ((what, from, to), expected) in REFUSED.iter().zip(REFUSED_MESSAGES) {
        assert!(manifest.contains(from), "{what}: the edit applies");
        let edited = manifest
            .replacen(from, to, 1)
            .replace("LOG_LEVEL: info", "LOG_LEVEL: debug")
            .replace("replicas: 2", "replicas: 4");
        let stderr = fails(cli(&api, &["apply", "-f", "-"], Some(&edited)));
        assert!(
            stderr.contains(expected),
            "{what}: {expected:?} in {stderr}"
        );
        let config = get_json(&api, "cm", "shop-config");
        assert_eq!(
            config["data"]["LOG_LEVEL"], "info",
            "{what}: nothing applied"
        );
        let deployment = get_json(&api, "deployment", "shop-frontend");
        assert_eq!(deployment["spec"]["replicas"], 2, "{what}: nothing applied");
    }
    drop(dev);
}
