//! Mount-table helpers: which mount points lie under a directory (read from
//! `/proc/self/mountinfo`), unmounting that tolerates "not mounted", and the guard that a
//! directory is only ever deleted when nothing is mounted below it.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::error::{IoContext, RuntimeError};

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `path` (lazily, so a busy mount still disappears from the tree); a path that is
/// not a mount point, or does not exist, counts as done.
pub fn unmount(path: &Path) -> Result<(), RuntimeError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(RuntimeError::sys(
            format!("unmounting {}", path.display()),
            errno,
        )),
    }
}

/// Deletes `dir` recursively, but refuses while anything is mounted below it: deleting
/// through a live mount would destroy data that is not ours.
pub fn remove_dir_safely(dir: &Path) -> Result<(), RuntimeError> {
    if let Some(mount) = mounts_under(dir).first() {
        return Err(RuntimeError::invalid(
            format!("removal of {}", dir.display()),
            format!("{} is still mounted", mount.display()),
        ));
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.ctx("removing", dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\134b"), r"/a\b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn a_directory_without_mounts_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("x/y");
        fs::create_dir_all(&inner).unwrap();
        remove_dir_safely(&dir.path().join("x")).unwrap();
        assert!(!dir.path().join("x").exists());
        remove_dir_safely(&dir.path().join("x")).unwrap();
    }
}
