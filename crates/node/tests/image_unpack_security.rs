//! The unpacking security boundary: every kind of hostile layer entry is refused with a message
//! naming the entry and the reason, nothing is written outside the store, and the store is
//! left exactly as it was. Also the legitimate cousins (absolute symlinks that stay inside the
//! image, hardlinks to earlier files) are accepted. Run as root (mknod for whiteouts).

mod image_common;

use std::fs;

use flotilla_node::image::ImageStore;
use image_common::{snapshot, tree, write_oci_archive, write_oci_layout, xattr, Layer, TestImage};
use tar::EntryType;
use tempfile::TempDir;

/// Imports a one-layer image made of `layer` into a store holding another image; expects a
/// refusal mentioning `entry` and `reason`, an unchanged store, and no file named `canary`
/// anywhere above the store.
fn check_refused(layer: Layer, entry: &str, reason: &str) {
    let work = TempDir::new().unwrap();
    let store_root = work.path().join("a/b/store");
    let store = ImageStore::open(&store_root).unwrap();
    let good = TestImage::new(&["good"], vec![Layer::new().file("ok", "fine").tar()], true);
    let good_path = work.path().join("good.tar");
    write_oci_archive(&good_path, &[good], false);
    store.import(&good_path).unwrap();
    let before = snapshot(store.root());

    let bad = TestImage::new(&["evil:1"], vec![layer.tar()], true);
    let bad_path = work.path().join("evil.tar");
    write_oci_archive(&bad_path, &[bad], false);
    let err = store.import(&bad_path).expect_err(reason).to_string();
    assert!(
        err.contains(&format!("entry \"{entry}\": {reason}")),
        "for {entry:?} expected {reason:?}, got: {err}"
    );
    assert_eq!(
        snapshot(store.root()),
        before,
        "store changed after refusing {entry:?}"
    );
    assert!(store.resolve("evil:1").is_err());
    let escaped = snapshot(work.path())
        .into_keys()
        .filter(|p| p.ends_with("canary"))
        .collect::<Vec<_>>();
    assert!(escaped.is_empty(), "{entry:?} wrote {escaped:?}");
}

#[test]
fn path_escapes_are_refused() {
    check_refused(
        Layer::new().file("../canary", "x"),
        "../canary",
        "path escapes the layer root",
    );
    check_refused(
        Layer::new().file("./a/../../canary", "x"),
        "./a/../../canary",
        "path escapes the layer root",
    );
    check_refused(
        Layer::new().file("/canary", "x"),
        "/canary",
        "absolute path",
    );
    check_refused(Layer::new().dir("/etc/"), "/etc/", "absolute path");
}

#[test]
fn escaping_symlinks_are_refused() {
    check_refused(
        Layer::new().symlink("evil", "/../../../canary"),
        "evil",
        "symlink target \"/../../../canary\" escapes the layer root",
    );
    check_refused(
        Layer::new().dir("a/").symlink("a/evil", "../../canary"),
        "a/evil",
        "symlink target \"../../canary\" escapes the layer root",
    );
    // Chained: `up` points at the root, so `up/..` is above it.
    check_refused(
        Layer::new()
            .symlink("up", "/")
            .symlink("evil", "up/../canary"),
        "evil",
        "symlink target \"up/../canary\" escapes the layer root",
    );
}

#[test]
fn writing_through_an_earlier_symlink_is_refused() {
    check_refused(
        Layer::new().symlink("etc", "/etc").file("etc/canary", "x"),
        "etc/canary",
        "path traverses symlink \"etc\" created earlier in the archive",
    );
    check_refused(
        Layer::new()
            .dir("d/")
            .symlink("d/link", ".")
            .dir("d/link/sub/"),
        "d/link/sub/",
        "path traverses symlink \"d/link\"",
    );
}

#[test]
fn bad_hardlinks_are_refused() {
    check_refused(
        Layer::new().hardlink("h", "../canary"),
        "h",
        "hardlink target \"../canary\" is outside the layer",
    );
    check_refused(
        Layer::new().hardlink("h", "/etc/passwd"),
        "h",
        "hardlink target \"/etc/passwd\" is outside the layer",
    );
    check_refused(
        Layer::new().hardlink("h", "later").file("later", "x"),
        "h",
        "hardlink target \"later\" was not seen earlier in the archive",
    );
    check_refused(
        Layer::new().dir("d/").hardlink("h", "d"),
        "h",
        "hardlink target \"d\" is not a regular file",
    );
    check_refused(
        Layer::new()
            .file("f", "x")
            .symlink("s", "/")
            .hardlink("h", "s/f"),
        "h",
        "hardlink target \"s/f\" was not seen earlier in the archive",
    );
}

#[test]
fn device_nodes_are_refused() {
    check_refused(
        Layer::new().device("dev/null", EntryType::Char),
        "dev/null",
        "character device nodes are not allowed",
    );
    check_refused(
        Layer::new().device("dev/sda", EntryType::Block),
        "dev/sda",
        "block device nodes are not allowed",
    );
}

#[test]
fn oversized_headers_are_refused_before_they_are_read_into_memory() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let before = snapshot(store.root());
    let layer = Layer::new().long_name_file(2 << 20).tar();
    let path = work.path().join("long.tar");
    write_oci_archive(
        &path,
        &[TestImage::new(&["long"], vec![layer], true)],
        false,
    );
    let err = store.import(&path).unwrap_err().to_string();
    assert!(err.contains("(MAX_ENTRY_METADATA_BYTES)"), "{err}");
    assert_eq!(snapshot(store.root()), before);
    // A long but plausible name (1000 bytes) is fine.
    assert_eq!(
        import_layer(Layer::new().long_name_file(1000)).len(),
        10,
        "9 directories and the file"
    );
}

#[test]
fn pax_xattrs_keep_user_attributes_but_never_trusted_ones_needs_root() {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let layer = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.note", b"kept"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ])
        .dir("d/")
        .pax(&[
            ("SCHILY.xattr.user.origin", b"pax"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .file("d/f", "x")
        .tar();
    let layout = work.path().join("layout");
    write_oci_layout(&layout, &[TestImage::new(&["xattrs"], vec![layer], false)]);
    store.import(&layout).unwrap();
    let root = &store.resolve("xattrs").unwrap().layer_dirs[0];
    assert_eq!(
        xattr(&root.join("d"), "user.note").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        xattr(&root.join("d/f"), "user.origin").as_deref(),
        Some(&b"pax"[..])
    );
    assert_eq!(xattr(&root.join("d"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&root.join("d/f"), "trusted.overlay.redirect"), None);
}

#[test]
fn malformed_whiteouts_are_refused() {
    check_refused(
        Layer::new().file("a/.wh...", ""),
        "a/.wh...",
        "invalid whiteout name",
    );
}

#[test]
fn hostile_outer_archives_are_refused() {
    for (name, entry, reason) in [
        ("../canary", "../canary", "path escapes the layer root"),
        (
            "blobs/../../canary",
            "blobs/../../canary",
            "path escapes the layer root",
        ),
    ] {
        let work = TempDir::new().unwrap();
        let store = ImageStore::open(&work.path().join("a/store")).unwrap();
        let before = snapshot(store.root());
        let path = work.path().join("outer.tar");
        fs::write(&path, Layer::new().file(name, "x").tar()).unwrap();
        let err = store.import(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("entry \"{entry}\": {reason}")),
            "{err}"
        );
        assert_eq!(snapshot(store.root()), before);
    }
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let path = work.path().join("outer.tar");
    fs::write(
        &path,
        Layer::new().symlink("index.json", "/etc/passwd").tar(),
    )
    .unwrap();
    let err = store.import(&path).unwrap_err().to_string();
    assert!(
        err.contains("absolute symlink target \"/etc/passwd\" is not allowed"),
        "{err}"
    );
}

/// Imports a one-layer image and returns the stored layer tree.
fn import_layer(layer: Layer) -> Vec<String> {
    let work = TempDir::new().unwrap();
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let layout = work.path().join("layout");
    write_oci_layout(
        &layout,
        &[TestImage::new(&["ok"], vec![layer.tar()], false)],
    );
    store.import(&layout).unwrap();
    tree(&store.resolve("ok").unwrap().layer_dirs[0])
}

#[test]
fn legitimate_links_are_kept() {
    let got = import_layer(
        Layer::new()
            .file("./bin/busybox", "bb")
            .symlink("bin/sh", "/bin/busybox")
            .symlink("bin/ls", "busybox")
            .symlink("usr/bin/env", "../../bin/busybox")
            .hardlink("bin/sh2", "./bin/busybox")
            .symlink("dangling", "/nowhere"),
    );
    assert_eq!(
        got,
        [
            "bin dir",
            "bin/busybox file:bb",
            "bin/ls symlink -> busybox",
            "bin/sh symlink -> /bin/busybox",
            "bin/sh2 file:bb",
            "dangling symlink -> /nowhere",
            "usr dir",
            "usr/bin dir",
            "usr/bin/env symlink -> ../../bin/busybox",
        ]
    );
}

#[test]
fn a_later_entry_replaces_an_earlier_one_without_writing_through_it() {
    // `f` is a hardlink of `victim`; rewriting `f` must not change `victim`.
    let got = import_layer(
        Layer::new()
            .file("victim", "original")
            .hardlink("f", "victim")
            .file("f", "replaced")
            .symlink("s", "victim")
            .file("s", "plain file now"),
    );
    assert_eq!(
        got,
        [
            "f file:replaced",
            "s file:plain file now",
            "victim file:original"
        ]
    );
}
