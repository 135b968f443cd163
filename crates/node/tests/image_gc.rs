//! Removing images and garbage collection: shared layers survive until their last image goes,
//! pinned images (a running container) are never collected, and the store's lock, crash
//! leftovers and concurrent imports behave. Run as root (whiteouts and overlay mounts).

mod image_common;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use flotilla_node::image::{prepare_rootfs, GcReport, ImageError, ImageStore};
use image_common::{tree, write_oci_archive, Layer, TestImage};
use tempfile::TempDir;

fn image(tag: &str, own_file: &str) -> TestImage {
    let shared = Layer::new().file("shared", "base").tar();
    TestImage::new(
        &[tag],
        vec![shared, Layer::new().file(own_file, tag).tar()],
        true,
    )
}

fn import(store: &ImageStore, work: &Path, images: &[TestImage]) {
    let path = work.join(format!("import-{}.tar", images[0].manifest.digest.hex()));
    write_oci_archive(&path, images, false);
    store.import(&path).unwrap();
}

/// (blob files, layer directories) currently in the store.
fn counts(store: &ImageStore) -> (usize, usize) {
    let count = |dir: &str| fs::read_dir(store.root().join(dir)).unwrap().count();
    (count("blobs/sha256"), count("layers"))
}

#[test]
fn remove_collects_only_what_no_other_image_uses() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    import(&store, work.path(), &[image("a:1", "a"), image("b:1", "b")]);
    // 2 × (manifest + config + own layer) + 1 shared layer blob; 3 layer trees.
    assert_eq!(counts(&store), (7, 3));

    let report = store.remove("a:1").unwrap();
    assert_eq!(
        report,
        GcReport {
            removed_blobs: 3,
            removed_layers: 1
        }
    );
    assert!(matches!(
        store.resolve("a:1"),
        Err(ImageError::NotFound { .. })
    ));
    let b = store.resolve("b:1").unwrap();
    assert_eq!(tree(&b.layer_dirs[0]), ["shared file:base"]);
    assert_eq!(tree(&b.layer_dirs[1]), ["b file:b:1"]);

    store.remove("docker.io/library/b:1").unwrap();
    assert_eq!(counts(&store), (0, 0));
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        store.remove("b:1"),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn removing_one_of_two_tags_keeps_the_image() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let mut both = image("app:1", "app");
    both.tags.push("app:stable".to_string());
    import(&store, work.path(), &[both]);
    assert_eq!(store.remove("app:1").unwrap(), GcReport::default());
    assert_eq!(
        store.list().unwrap()[0].tags,
        vec!["app:stable".to_string()]
    );
}

#[test]
fn pinned_images_survive_removal_until_released_needs_root() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    import(&store, work.path(), &[image("app:1", "app")]);
    let resolved = store.resolve("app:1").unwrap();
    let pin = store.pin(&resolved);
    let rootfs = prepare_rootfs(&resolved, &work.path().join("container")).unwrap();

    assert_eq!(
        store.remove("app:1").unwrap(),
        GcReport::default(),
        "a pinned image was collected"
    );
    assert!(store.resolve("app:1").is_err(), "the tag is gone at once");
    assert_eq!(tree(rootfs.path()), ["app file:app:1", "shared file:base"]);
    assert_eq!(store.gc().unwrap(), GcReport::default());

    rootfs.release().unwrap();
    drop(pin);
    assert_eq!(
        store.gc().unwrap(),
        GcReport {
            removed_blobs: 4,
            removed_layers: 2
        }
    );
    assert_eq!(counts(&store), (0, 0));
}

#[test]
fn opening_a_store_waits_for_another_holder_within_a_bound() {
    let work = TempDir::new().unwrap();
    let root = work.path().join("store");
    let held = ImageStore::open(&root).unwrap();
    assert!(matches!(
        ImageStore::open_waiting(&root, Duration::from_millis(300)),
        Err(ImageError::StoreLocked { .. })
    ));
    let releaser = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    ImageStore::open_waiting(&root, Duration::from_secs(10))
        .expect("opened once the other holder let go");
    releaser.join().unwrap();
}

#[test]
fn one_process_owns_a_store_and_crash_leftovers_are_dropped_on_open() {
    let work = TempDir::new().unwrap();
    let root = work.path().join("store");
    let store = ImageStore::open(&root).unwrap();
    assert!(matches!(
        ImageStore::open(&root),
        Err(ImageError::StoreLocked { .. })
    ));
    fs::create_dir_all(root.join("tmp/import-crashed/layer-1")).unwrap();
    fs::write(root.join("tmp/import-crashed/blob-2"), "half written").unwrap();
    drop(store);
    let _reopened = ImageStore::open(&root).unwrap();
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}

#[test]
fn concurrent_imports_all_land() {
    const IMPORTS: usize = 4;
    let work = TempDir::new().unwrap();
    let store = Arc::new(ImageStore::open(&work.path().join("store")).unwrap());
    let paths: Vec<_> = (0..IMPORTS)
        .map(|i| {
            let path = work.path().join(format!("{i}.tar"));
            write_oci_archive(
                &path,
                &[image(&format!("app:{i}"), &format!("f{i}"))],
                i % 2 == 0,
            );
            path
        })
        .collect();
    let threads: Vec<_> = paths
        .into_iter()
        .map(|path| {
            let store = Arc::clone(&store);
            thread::spawn(move || store.import(&path).map(|s| s.len()))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap().unwrap(), 1);
    }
    assert_eq!(store.list().unwrap().len(), IMPORTS);
    assert_eq!(counts(&store), (3 * IMPORTS + 1, IMPORTS + 1));
}
