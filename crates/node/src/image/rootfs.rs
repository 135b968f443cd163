//! Container root filesystems built from an image: an overlayfs mount (shared read-only layers
//! below, the container's own upper and work directories above) when the kernel allows, else a
//! flattened private copy. [`Rootfs`] owns the mount: `release` (or drop) unmounts and removes
//! it, and every error path of `prepare_rootfs` undoes what it did, so mounts never leak.
//!
//! Layout inside the container directory: `rootfs/` (what the container sees) and `overlay/`
//! (`upper/`, `work/`, and `empty/` for an image without layers).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::{ImageError, IoContext};
use super::flatten::flatten_layers;
use super::store::Image;

const ROOTFS_DIR: &str = "rootfs";
const OVERLAY_DIR: &str = "overlay";
/// The kernel copies mount options into one page; longer option strings are refused.
const MAX_MOUNT_OPTIONS_BYTES: usize = 4095;

/// How a rootfs was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsKind {
    Overlay,
    Copy,
}

/// Which way `prepare_rootfs_with` may build a rootfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootfsStrategy {
    /// overlayfs, falling back to a copy when the mount fails.
    Auto,
    OverlayOnly,
    CopyOnly,
}

/// A prepared container root filesystem. Unmounted and removed by [`Rootfs::release`] or,
/// failing that, on drop.
#[derive(Debug)]
pub struct Rootfs {
    container_dir: PathBuf,
    path: PathBuf,
    kind: RootfsKind,
    active: bool,
}

/// Prepares `container_dir/rootfs` for `image`: overlayfs when available, else a copy.
pub fn prepare_rootfs(image: &Image, container_dir: &Path) -> Result<Rootfs, ImageError> {
    prepare_rootfs_with(image, container_dir, RootfsStrategy::Auto)
}

/// Prepares `container_dir/rootfs` for `image` the way `strategy` allows.
pub fn prepare_rootfs_with(
    image: &Image,
    container_dir: &Path,
    strategy: RootfsStrategy,
) -> Result<Rootfs, ImageError> {
    let path = container_dir.join(ROOTFS_DIR);
    fs::create_dir_all(container_dir).ctx("creating container directory", container_dir)?;
    match fs::create_dir(&path) {
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(rootfs_error(
                &path,
                "already exists; release or adopt the old rootfs first",
            ));
        }
        other => other.ctx("creating", &path)?,
    }
    let mut rootfs = Rootfs {
        container_dir: container_dir.to_path_buf(),
        path,
        kind: RootfsKind::Overlay,
        active: true,
    };
    // On any error `rootfs` is dropped, which undoes whatever was done.
    let overlay_result = match strategy {
        RootfsStrategy::CopyOnly => None,
        _ => Some(mount_overlay(image, &rootfs.container_dir, &rootfs.path)),
    };
    match (overlay_result, strategy) {
        (Some(Ok(())), _) => return Ok(rootfs),
        (Some(Err(e)), RootfsStrategy::OverlayOnly) => return Err(e),
        (Some(Err(_)), _) => remove_overlay_dirs(&rootfs.container_dir)?,
        (None, _) => {}
    }
    rootfs.kind = RootfsKind::Copy;
    flatten_layers(&image.layer_dirs, &rootfs.path)?;
    Ok(rootfs)
}

impl Rootfs {
    /// Takes over a rootfs prepared earlier (for example before an agent restart).
    pub fn adopt(container_dir: &Path) -> Result<Rootfs, ImageError> {
        let path = container_dir.join(ROOTFS_DIR);
        let meta = fs::symlink_metadata(&path).ctx("inspecting", &path)?;
        let parent = fs::metadata(container_dir).ctx("inspecting", container_dir)?;
        let kind = if meta.dev() != parent.dev() {
            RootfsKind::Overlay
        } else {
            RootfsKind::Copy
        };
        Ok(Rootfs {
            container_dir: container_dir.to_path_buf(),
            path,
            kind,
            active: true,
        })
    }

    /// The directory the container uses as `/`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> RootfsKind {
        self.kind
    }

    /// Unmounts (for overlay) and removes the rootfs and the container's writable layer.
    pub fn release(mut self) -> Result<(), ImageError> {
        self.teardown()
    }

    /// Stops managing the rootfs without tearing it down (the container outlives this
    /// process); a later [`Rootfs::adopt`] takes it back.
    pub fn keep(mut self) -> PathBuf {
        self.active = false;
        self.path.clone()
    }

    fn teardown(&mut self) -> Result<(), ImageError> {
        if !self.active {
            return Ok(());
        }
        if self.kind == RootfsKind::Overlay {
            unmount(&self.path)?;
            // Only an empty mount point is removed: never delete through a live mount.
            match fs::remove_dir(&self.path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    return Err(ImageError::io("removing", &self.path, e))
                }
                _ => {}
            }
        } else if self.path.exists() {
            fs::remove_dir_all(&self.path).ctx("removing", &self.path)?;
        }
        remove_overlay_dirs(&self.container_dir)?;
        self.active = false;
        Ok(())
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        // Best effort; `release` reports errors to callers that want them.
        let _ = self.teardown();
    }
}

fn mount_overlay(image: &Image, container_dir: &Path, target: &Path) -> Result<(), ImageError> {
    let overlay = container_dir.join(OVERLAY_DIR);
    let (upper, work) = (overlay.join("upper"), overlay.join("work"));
    for dir in [&upper, &work] {
        fs::create_dir_all(dir).ctx("creating", dir)?;
    }
    if let Some(missing) = image.layer_dirs.iter().find(|dir| !dir.is_dir()) {
        return Err(rootfs_error(missing, "layer directory is missing"));
    }
    let mut lowers: Vec<PathBuf> = image.layer_dirs.iter().rev().cloned().collect();
    if lowers.is_empty() {
        let empty = overlay.join("empty");
        fs::create_dir(&empty).ctx("creating", &empty)?;
        lowers.push(empty);
    }
    let options =
        overlay_options(&lowers, &upper, &work).map_err(|reason| rootfs_error(target, reason))?;
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .ctx("mounting overlayfs on", target)
}

/// `lowerdir=top:…:bottom,upperdir=…,workdir=…`, refusing paths overlayfs cannot parse.
fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> Result<String, &'static str> {
    let all = lowers.iter().map(PathBuf::as_path).chain([upper, work]);
    for path in all {
        if path
            .as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err("overlayfs paths must not contain ',', ':' or '\\'");
        }
    }
    let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    if options.len() > MAX_MOUNT_OPTIONS_BYTES {
        return Err("too many layers for one overlayfs mount (options exceed one page)");
    }
    Ok(options)
}

/// Unmounts `path`, detaching lazily if it is busy; "not mounted" counts as done.
fn unmount(path: &Path) -> Result<(), ImageError> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => {
            umount2(path, MntFlags::MNT_DETACH).ctx("detaching overlayfs from", path)
        }
        Err(errno) => Err(ImageError::sys("unmounting", path, errno)),
    }
}

fn remove_overlay_dirs(container_dir: &Path) -> Result<(), ImageError> {
    let overlay = container_dir.join(OVERLAY_DIR);
    match fs::remove_dir_all(&overlay) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(ImageError::io("removing", &overlay, e)),
        _ => Ok(()),
    }
}

fn rootfs_error(path: &Path, reason: &str) -> ImageError {
    ImageError::Rootfs {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
