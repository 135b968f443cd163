//! Small filesystem helpers shared by the store: overlayfs whiteouts and opaque markers,
//! atomic file replacement, directory fsync, bounded reads and sorted directory listings.

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use super::error::{ImageError, IoContext};

/// The xattr overlayfs reads to treat a lower directory as opaque.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Creates an overlayfs whiteout (a 0:0 character device) at `path`.
pub(crate) fn make_whiteout(path: &Path) -> Result<(), ImageError> {
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).ctx("creating whiteout", path)
}

/// True if `meta` is an overlayfs whiteout.
pub(crate) fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Marks directory `path` opaque: lower layers' contents are hidden below it.
pub(crate) fn set_opaque(path: &Path) -> Result<(), ImageError> {
    set_xattr(path, OPAQUE_XATTR, b"y")
}

/// Sets extended attribute `name` on `path` itself (never a symlink's target).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), ImageError> {
    let c_path = c_path(path)?;
    let c_name = CString::new(name)
        .map_err(|_| ImageError::malformed(name, "attribute name contains a NUL byte"))?;
    // SAFETY: both strings are NUL-terminated and `value` outlives the call.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(ImageError::io("setting extended attribute on", path, err));
    }
    Ok(())
}

/// True if directory `path` carries the opaque marker.
pub(crate) fn is_opaque(path: &Path) -> Result<bool, ImageError> {
    let c_path = c_path(path)?;
    let name = CString::new(OPAQUE_XATTR).expect("constant has no NUL");
    let mut value = [0u8; 8];
    // SAFETY: both strings are NUL-terminated; the buffer length passed is the buffer's.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(false),
            _ => Err(ImageError::io("reading opaque marker", path, err)),
        };
    }
    Ok(&value[..n as usize] == b"y")
}

fn c_path(path: &Path) -> Result<CString, ImageError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::malformed(path.display().to_string(), "path contains a NUL byte"))
}

/// Fsyncs a directory so that renames into it survive a crash.
pub(crate) fn fsync_dir(path: &Path) -> Result<(), ImageError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .ctx("syncing directory", path)
}

/// Replaces `dest` with `data` atomically: write a sibling in `tmp_dir`, fsync, rename.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<(), ImageError> {
    let mut staged =
        tempfile::NamedTempFile::new_in(tmp_dir).ctx("creating staging file in", tmp_dir)?;
    staged.write_all(data).ctx("writing", staged.path())?;
    staged.as_file().sync_all().ctx("syncing", staged.path())?;
    staged
        .persist(dest)
        .map_err(|e| ImageError::io("replacing", dest, e.error))?;
    fsync_dir(dest.parent().unwrap_or(Path::new("/")))
}

/// Reads a whole regular file of at most `max_bytes` (never follows a final symlink).
pub(crate) fn read_bounded(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    let file = open_regular(path)?;
    let mut data = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut data)
        .ctx("reading", path)?;
    if data.len() as u64 > max_bytes {
        return Err(ImageError::LimitExceeded {
            origin: what.to_string(),
            what: format!("file {}", path.display()),
            limit: max_bytes,
            name: "MAX_JSON_BYTES",
        });
    }
    Ok(data)
}

/// Opens `path` for reading, refusing anything but a regular file (and never a symlink).
pub(crate) fn open_regular(path: &Path) -> Result<File, ImageError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx("opening", path)?;
    let meta = file.metadata().ctx("inspecting", path)?;
    if !meta.is_file() {
        return Err(ImageError::malformed(
            path.display().to_string(),
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Creates a new file (never following or replacing anything already at `path`).
pub(crate) fn create_new(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .ctx("creating", path)
}

/// The names in a directory, sorted bytewise so walks are deterministic.
pub(crate) fn sorted_names(dir: &Path) -> Result<Vec<OsString>, ImageError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).ctx("listing", dir)? {
        names.push(entry.ctx("listing", dir)?.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Removes whatever is at `path` (file, symlink, device or whole directory tree) without
/// following symlinks; a missing path is not an error.
pub(crate) fn remove_any(path: &Path) -> Result<(), ImageError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("inspecting", path, e)),
    };
    if meta.is_dir() {
        fs::remove_dir_all(path).ctx("removing directory", path)
    } else {
        fs::remove_file(path).ctx("removing", path)
    }
}

/// Removes every child of directory `dir`, keeping `dir` itself.
pub(crate) fn clear_dir(dir: &Path) -> Result<(), ImageError> {
    for name in sorted_names(dir)? {
        remove_any(&dir.join(name))?;
    }
    Ok(())
}

/// `path` rendered for messages, relative paths as they appeared in an archive.
pub(crate) fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Returns `base/<rel>`; used where the relative path was validated already.
pub(crate) fn under(base: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}
