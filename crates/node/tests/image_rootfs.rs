//! Container root filesystems (needs root: mknod, xattrs, and overlayfs mounts): whiteouts and
//! opaque directories give the same merged tree flattened or through overlayfs; a container's
//! writes never reach the shared layers; and no mount outlives its `Rootfs`, on success, drop
//! or any error path (counted in /proc/self/mountinfo).

mod image_common;

use std::fs;
use std::path::{Path, PathBuf};

use flotilla_node::image::{
    flatten_layers, prepare_rootfs, prepare_rootfs_with, Image, ImageStore, Rootfs, RootfsKind,
    RootfsStrategy,
};
use image_common::{mounts_under, snapshot, tree, write_oci_layout, Layer, TestImage};
use tempfile::TempDir;

/// The merged tree of [`whiteout_image`]: `b`, `a/file1`, `c/old` and `nothing` are hidden,
/// the file `e` became a directory.
const MERGED: [&str; 8] = [
    "a dir",
    "a/file2 file:2",
    "c dir",
    "c/new file:new",
    "d dir",
    "d/keep file:keep",
    "e dir",
    "e/inner file:in",
];

fn whiteout_image() -> TestImage {
    let lower = Layer::new()
        .file("a/file1", "1")
        .file("a/file2", "2")
        .file("b/x", "x")
        .file("c/old", "old")
        .file("d/keep", "keep")
        .file("e", "file-e")
        .tar();
    let upper = Layer::new()
        .file(".wh.b", "")
        .file("a/.wh.file1", "")
        .file("c/.wh..wh..opq", "")
        .file("c/new", "new")
        .file("e/inner", "in")
        .file(".wh.nothing", "")
        .tar();
    TestImage::new(&["whiteouts"], vec![lower, upper], true)
}

/// A store in `work/store` holding [`whiteout_image`], and the resolved image.
fn store_with_image(work: &Path) -> (ImageStore, Image) {
    let store = ImageStore::open(&work.join("store")).unwrap();
    let layout = work.join("layout");
    write_oci_layout(&layout, &[whiteout_image()]);
    store.import(&layout).unwrap();
    let image = store.resolve("whiteouts").unwrap();
    (store, image)
}

#[test]
fn flattening_applies_whiteouts_and_opaque_dirs() {
    let work = TempDir::new().unwrap();
    let (_store, image) = store_with_image(work.path());
    let dest = work.path().join("flat");
    fs::create_dir(&dest).unwrap();
    flatten_layers(&image.layer_dirs, &dest).unwrap();
    assert_eq!(tree(&dest), MERGED);
}

/// Prepares a rootfs the way `strategy` says, checks the merged tree, writes into it as a
/// container would, and checks the shared layers, a second container and the mount table.
fn check_rootfs(strategy: RootfsStrategy, expected_kind: RootfsKind) {
    let work = TempDir::new().unwrap();
    let (store, image) = store_with_image(work.path());
    let mounts_before = mounts_under(work.path());
    let store_before = snapshot(store.root());

    let first = prepare_rootfs_with(&image, &work.path().join("c1"), strategy).unwrap();
    let second = prepare_rootfs_with(&image, &work.path().join("c2"), strategy).unwrap();
    assert_eq!(first.kind(), expected_kind);
    assert_eq!(tree(first.path()), MERGED, "{strategy:?}");
    let extra_mounts = if expected_kind == RootfsKind::Overlay {
        2
    } else {
        0
    };
    assert_eq!(mounts_under(work.path()), mounts_before + extra_mounts);

    fs::write(first.path().join("a/file2"), "changed by c1").unwrap();
    fs::remove_file(first.path().join("d/keep")).unwrap();
    fs::write(first.path().join("c/created"), "c1").unwrap();
    assert_eq!(
        snapshot(store.root()),
        store_before,
        "a container write reached the shared layers"
    );
    assert_eq!(
        tree(second.path()),
        MERGED,
        "a container write reached another container"
    );

    first.release().unwrap();
    drop(second);
    assert_eq!(
        mounts_under(work.path()),
        mounts_before,
        "{strategy:?} leaked a mount"
    );
    for container in ["c1", "c2"] {
        let left: Vec<PathBuf> = snapshot(&work.path().join(container)).into_keys().collect();
        assert!(left.is_empty(), "{container} still holds {left:?}");
    }
}

#[test]
fn overlay_rootfs_merges_layers_and_isolates_writes_needs_root() {
    check_rootfs(RootfsStrategy::OverlayOnly, RootfsKind::Overlay);
    check_rootfs(RootfsStrategy::Auto, RootfsKind::Overlay);
}

#[test]
fn copy_rootfs_merges_layers_and_isolates_writes() {
    check_rootfs(RootfsStrategy::CopyOnly, RootfsKind::Copy);
}

/// An image whose second layer directory does not exist, so every way of building fails.
fn broken(image: &Image, work: &Path) -> Image {
    let mut broken = image.clone();
    broken.layer_dirs[1] = work.join("no-such-layer");
    broken
}

#[test]
fn failed_rootfs_preparation_leaves_no_mount_and_no_directory_needs_root() {
    let work = TempDir::new().unwrap();
    let (_store, image) = store_with_image(work.path());
    let broken = broken(&image, work.path());
    let mounts_before = mounts_under(work.path());
    for strategy in [
        RootfsStrategy::OverlayOnly,
        RootfsStrategy::Auto,
        RootfsStrategy::CopyOnly,
    ] {
        let container = work.path().join(format!("{strategy:?}"));
        let err = prepare_rootfs_with(&broken, &container, strategy).unwrap_err();
        assert!(
            err.to_string().contains("no-such-layer"),
            "{strategy:?}: {err}"
        );
        assert_eq!(
            mounts_under(work.path()),
            mounts_before,
            "{strategy:?} leaked a mount"
        );
        assert!(
            snapshot(&container).is_empty(),
            "{strategy:?} left files behind"
        );
    }
}

#[test]
fn a_second_rootfs_in_the_same_directory_is_refused_needs_root() {
    let work = TempDir::new().unwrap();
    let (_store, image) = store_with_image(work.path());
    let container = work.path().join("c");
    let mounts_before = mounts_under(work.path());
    let first = prepare_rootfs(&image, &container).unwrap();
    let err = prepare_rootfs(&image, &container).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        tree(first.path()),
        MERGED,
        "the refused attempt damaged the first rootfs"
    );
    first.release().unwrap();
    assert_eq!(mounts_under(work.path()), mounts_before);
}

#[test]
fn a_kept_rootfs_can_be_adopted_and_released_needs_root() {
    let work = TempDir::new().unwrap();
    let (_store, image) = store_with_image(work.path());
    let container = work.path().join("c");
    let mounts_before = mounts_under(work.path());
    let path = prepare_rootfs(&image, &container).unwrap().keep();
    assert_eq!(
        mounts_under(work.path()),
        mounts_before + 1,
        "keep() must not unmount"
    );
    assert_eq!(tree(&path), MERGED);
    let adopted = Rootfs::adopt(&container).unwrap();
    assert_eq!(adopted.kind(), RootfsKind::Overlay);
    adopted.release().unwrap();
    assert_eq!(mounts_under(work.path()), mounts_before);
    assert!(!path.exists());
}
