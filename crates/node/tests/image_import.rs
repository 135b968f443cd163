//! Importing images: the three side-load formats (OCI layout directory, OCI archive plain and
//! gzip, `docker save`) with plain and gzip layers; tag normalisation; verification failures
//! (digest, size, diff_id, media type) and size bounds, each leaving the store unchanged.
//! Run as root (layers are stored with overlayfs whiteouts, which need mknod).

mod image_common;

use std::fs;
use std::path::{Path, PathBuf};

use flotilla_node::image::{ImageError, ImageStore, Limits};
use image_common::{
    gzip, snapshot, tree, write_docker_save, write_oci_archive, write_oci_layout, Layer, TestImage,
};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy)]
enum Format {
    OciDir,
    OciTar,
    OciTarGz,
    DockerSave,
}

/// Writes `images` in `format` inside `dir` and returns the path to import.
fn write(format: Format, dir: &Path, images: &[TestImage]) -> PathBuf {
    match format {
        Format::OciDir => {
            let layout = dir.join("layout");
            write_oci_layout(&layout, images);
            layout
        }
        Format::OciTar | Format::OciTarGz => {
            let out = dir.join("image.tar");
            write_oci_archive(&out, images, matches!(format, Format::OciTarGz));
            out
        }
        Format::DockerSave => {
            let out = dir.join("docker.tar");
            write_docker_save(&out, images, true);
            out
        }
    }
}

fn two_layer_image(tags: &[&str], gzip_layers: bool) -> TestImage {
    let base = Layer::new()
        .dir("bin/")
        .file("bin/app", "v1")
        .file("etc/motd", "hello")
        .symlink("bin/sh", "/bin/app")
        .tar();
    let top = Layer::new().file("bin/app", "v2").file(".wh.etc", "").tar();
    TestImage::new(tags, vec![base, top], gzip_layers)
}

fn check_import(format: Format, gzip_layers: bool) {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let image = two_layer_image(&["registry.local/app:1.0"], gzip_layers);
    let source = write(format, work.path(), std::slice::from_ref(&image));

    let summaries = store.import(&source).unwrap();
    assert_eq!(summaries.len(), 1, "{format:?}");
    assert_eq!(
        summaries[0].tags,
        vec!["registry.local/app:1.0".to_string()],
        "{format:?}"
    );
    assert_eq!(summaries[0].layer_count, 2);

    let resolved = store.resolve("registry.local/app:1.0").unwrap();
    assert_eq!(resolved.config.entrypoint, vec!["/bin/app"]);
    assert_eq!(resolved.config.cmd, vec!["--serve"]);
    assert_eq!(resolved.config.env, vec!["PATH=/bin", "MODE=test"]);
    assert_eq!(resolved.config.working_dir, "/srv");
    assert_eq!(resolved.config.user, "1000:1000");
    assert_eq!(resolved.config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(
        resolved.config.labels.get("team").map(String::as_str),
        Some("flotilla")
    );
    assert_eq!(resolved.diff_ids, image.diff_ids, "{format:?}");
    assert_eq!(
        tree(&resolved.layer_dirs[0]),
        [
            "bin dir",
            "bin/app file:v1",
            "bin/sh symlink -> /bin/app",
            "etc dir",
            "etc/motd file:hello"
        ],
        "{format:?}"
    );
    assert_eq!(
        tree(&resolved.layer_dirs[1]),
        ["bin dir", "bin/app file:v2", "etc whiteout"],
        "{format:?}"
    );
    if !matches!(format, Format::DockerSave) {
        assert_eq!(
            resolved.digest, image.manifest.digest,
            "OCI imports keep the manifest digest"
        );
    }
}

#[test]
fn imports_every_format_with_plain_and_gzip_layers() {
    for format in [
        Format::OciDir,
        Format::OciTar,
        Format::OciTarGz,
        Format::DockerSave,
    ] {
        for gzip_layers in [false, true] {
            check_import(format, gzip_layers);
        }
    }
}

fn check_same_image(tagged_as: &str, resolve_as: &str) {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let image = TestImage::new(&[tagged_as], vec![Layer::new().file("f", "x").tar()], false);
    store
        .import(&write(Format::OciTar, work.path(), &[image]))
        .unwrap();
    let resolved = store.resolve(resolve_as);
    assert!(
        resolved.is_ok(),
        "tagged {tagged_as}, resolving {resolve_as}: {resolved:?}"
    );
}

#[test]
fn short_and_fully_qualified_docker_hub_names_are_the_same_ref() {
    check_same_image("busybox", "busybox:latest");
    check_same_image("busybox", "docker.io/library/busybox:latest");
    check_same_image("docker.io/library/busybox:latest", "busybox");
    check_same_image("index.docker.io/library/busybox:1.36", "busybox:1.36");
    check_same_image("docker.io/team/app:v2", "team/app:v2");
}

#[test]
fn docker_save_without_repo_tags_takes_tags_from_repositories() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let out = work.path().join("docker.tar");
    write_docker_save(&out, &[two_layer_image(&["legacy/app:old"], false)], false);
    let summaries = store.import(&out).unwrap();
    assert_eq!(summaries[0].tags, vec!["legacy/app:old".to_string()]);
}

#[test]
fn docker_25_archives_take_the_full_name_from_the_containerd_annotation() {
    // Docker 25+ `docker save` writes an OCI layout whose index carries the full name in
    // io.containerd.image.name and only the tag in the OCI ref name, plus a manifest.json.
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let image = two_layer_image(&["1.36"], true);
    let layout = work.path().join("layout");
    write_oci_layout(&layout, std::slice::from_ref(&image));
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["io.containerd.image.name"] =
        "docker.io/library/busybox:1.36".into();
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let blob = |d: &flotilla_node::image::Digest| format!("blobs/sha256/{}", d.hex());
    let manifest = serde_json::json!([{
        "Config": blob(&image.config.digest),
        "RepoTags": ["busybox:1.36"],
        "Layers": image.layers.iter().map(|l| blob(&l.digest)).collect::<Vec<_>>(),
    }]);
    fs::write(
        layout.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let archive = work.path().join("docker25.tar");
    image_common::tar_directory(&layout, &archive, false);
    // Imported through a symlink, as an operator's "current" link would be.
    let link = work.path().join("current.tar");
    std::os::unix::fs::symlink(&archive, &link).unwrap();

    let summaries = store.import(&link).unwrap();
    assert_eq!(summaries[0].tags, vec!["busybox:1.36".to_string()]);
    assert_eq!(summaries[0].digest, image.manifest.digest);
}

#[test]
fn acquire_resolves_and_pins_in_one_step() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    store
        .import(&write(
            Format::OciTar,
            work.path(),
            &[two_layer_image(&["app:1"], true)],
        ))
        .unwrap();
    let (image, pin) = store.acquire("app:1").unwrap();
    assert_eq!(pin.digest(), &image.digest);
    store.remove("app:1").unwrap();
    assert!(
        image.layer_dirs.iter().all(|dir| dir.is_dir()),
        "a pinned image lost its layers"
    );
    drop(pin);
    store.gc().unwrap();
    assert!(image.layer_dirs.iter().all(|dir| !dir.exists()));
}

#[test]
fn untagged_images_are_listed_and_resolvable_by_digest() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let image = TestImage::new(&[], vec![Layer::new().file("f", "x").tar()], true);
    let summaries = store
        .import(&write(
            Format::OciDir,
            work.path(),
            std::slice::from_ref(&image),
        ))
        .unwrap();
    assert!(summaries[0].tags.is_empty());
    assert_eq!(store.list().unwrap(), summaries);
    let digest = image.manifest.digest.to_string();
    assert_eq!(
        store.resolve(&digest).unwrap().digest,
        image.manifest.digest
    );
}

#[test]
fn reimport_and_shared_layers_are_stored_once() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let base = Layer::new().file("shared", "base").tar();
    let a = TestImage::new(
        &["a"],
        vec![base.clone(), Layer::new().file("a", "1").tar()],
        true,
    );
    let b = TestImage::new(&["b"], vec![base, Layer::new().file("b", "2").tar()], true);
    let source = write(Format::OciTar, work.path(), &[a, b]);
    store.import(&source).unwrap();
    let before = snapshot(store.root());
    store.import(&source).unwrap();
    assert_eq!(
        snapshot(store.root()),
        before,
        "re-importing changes nothing"
    );
    assert_eq!(
        fs::read_dir(store.root().join("layers")).unwrap().count(),
        3
    );
    assert_eq!(store.list().unwrap().len(), 2);
}

/// Imports what `make` writes into a store that already holds an image, expecting an error
/// whose message contains `expected`, and a store byte-for-byte unchanged.
fn check_refused(limits: Limits, make: impl FnOnce(&Path) -> PathBuf, expected: &str) {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open_with_limits(&work.path().join("store"), limits).unwrap();
    let existing = work.path().join("existing");
    fs::create_dir(&existing).unwrap();
    store
        .import(&write(
            Format::OciTar,
            &existing,
            &[two_layer_image(&["existing"], true)],
        ))
        .unwrap();
    let before = snapshot(store.root());

    let source = make(work.path());
    let err = store.import(&source).expect_err(expected);
    assert!(
        err.to_string().contains(expected),
        "expected {expected:?} in: {err}"
    );
    assert_eq!(
        snapshot(store.root()),
        before,
        "store changed by a failed import ({expected})"
    );
    assert!(store.resolve("existing").is_ok());
}

fn tampered(format: Format, change: impl FnOnce(&mut TestImage)) -> impl FnOnce(&Path) -> PathBuf {
    move |dir| {
        let mut image = two_layer_image(&["bad:1"], true);
        change(&mut image);
        write(format, dir, &[image])
    }
}

#[test]
fn verification_failures_are_refused_and_change_nothing() {
    let defaults = Limits::default();
    // A layer blob whose bytes no longer match the descriptor's digest.
    check_refused(
        defaults,
        tampered(Format::OciDir, |image| {
            let last = image.layers[1].data.len() - 1;
            image.layers[1].data[last] ^= 0xff;
        }),
        "digest mismatch",
    );
    check_refused(
        defaults,
        tampered(Format::OciTar, |image| {
            image.layers[0].data.push(0);
        }),
        "size mismatch",
    );
    // The config claims a different uncompressed content.
    for format in [Format::OciTarGz, Format::DockerSave] {
        check_refused(
            defaults,
            tampered(format, |image| {
                image.diff_ids[1] = flotilla_node::image::Digest::of_bytes(b"other");
                image.rebuild();
            }),
            "(diff_id): digest mismatch",
        );
    }
    check_refused(
        defaults,
        tampered(Format::OciDir, |image| {
            image.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar+zstd".to_string();
            image.rebuild();
        }),
        "unsupported media type \"application/vnd.oci.image.layer.v1.tar+zstd\"",
    );
    check_refused(
        defaults,
        tampered(Format::DockerSave, |image| {
            let zstd_frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
            image.layers[0] = image_common::Blob::new(zstd_frame, "");
        }),
        "unsupported media type \"zstd-compressed layer\"",
    );
}

#[test]
fn missing_blobs_and_unknown_files_are_refused() {
    let defaults = Limits::default();
    check_refused(
        defaults,
        |dir| {
            let source = write(Format::OciDir, dir, &[two_layer_image(&["bad:1"], false)]);
            let image = two_layer_image(&["bad:1"], false);
            fs::remove_file(
                source
                    .join("blobs/sha256")
                    .join(image.layers[1].digest.hex()),
            )
            .unwrap();
            source
        },
        "is missing",
    );
    check_refused(
        defaults,
        |dir| {
            let path = dir.join("notes.txt");
            fs::write(&path, "not an image").unwrap();
            path
        },
        "not an OCI image layout, OCI archive or docker-save archive",
    );
    check_refused(
        defaults,
        |dir| {
            let path = dir.join("broken.tar.gz");
            fs::write(&path, gzip(b"definitely not a tar stream, just some bytes")).unwrap();
            path
        },
        "broken.tar.gz: reading tar stream",
    );
}

fn small_limits(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    change(&mut limits);
    limits
}

fn big_layer_image(dir: &Path) -> PathBuf {
    let mut layer = Layer::new();
    for i in 0..40 {
        layer = layer.file(&format!("f{i}"), &"z".repeat(1000));
    }
    write(
        Format::OciTarGz,
        dir,
        &[TestImage::new(&["big"], vec![layer.tar()], true)],
    )
}

#[test]
fn size_bounds_are_enforced() {
    // Each limit is set below what the big image needs but above what the existing one does.
    check_refused(
        small_limits(|l| l.max_archive_entries = 30),
        big_layer_image,
        "entry count exceeds the limit of 30 (MAX_ARCHIVE_ENTRIES)",
    );
    check_refused(
        small_limits(|l| l.max_file_bytes = 999),
        big_layer_image,
        "exceeds the limit of 999 (MAX_FILE_BYTES)",
    );
    check_refused(
        small_limits(|l| l.max_total_unpacked_bytes = 30_000),
        big_layer_image,
        "(MAX_TOTAL_UNPACKED_BYTES)",
    );
}

#[test]
fn errors_name_the_layer_and_entry() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let layer = Layer::new().file("../etc/passwd", "root::0:0").tar();
    let image = TestImage::new(&["evil"], vec![layer], false);
    let short = image.layers[0].digest.short();
    let err = store
        .import(&write(Format::OciTar, work.path(), &[image]))
        .unwrap_err();
    assert!(matches!(err, ImageError::UnsafeEntry { .. }));
    assert_eq!(
        err.to_string(),
        format!("layer {short}: entry \"../etc/passwd\": path escapes the layer root")
    );
}
