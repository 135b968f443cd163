//! The path policy of archive unpacking, as pure functions: how an entry name becomes a path
//! relative to the unpack root (or is refused), and where a symlink target lands once resolved
//! against the symlinks the same archive created earlier (or that it escapes the root).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::error::UnsafeEntry;
use super::limits::MAX_SYMLINK_HOPS;

/// Turns a raw tar entry name into a path relative to the unpack root. A single leading `./`
/// is accepted; absolute names and `..` components are refused. The root itself is the empty
/// path.
pub(crate) fn normalize_entry_path(raw: &[u8]) -> Result<PathBuf, UnsafeEntry> {
    if raw.is_empty() {
        return Err(UnsafeEntry::EmptyPath);
    }
    if raw[0] == b'/' {
        return Err(UnsafeEntry::AbsolutePath);
    }
    let mut rel = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            // std keeps only a leading `.` as a component; interior ones are dropped.
            Component::CurDir => {}
            Component::Normal(name) => rel.push(name),
            Component::ParentDir => return Err(UnsafeEntry::PathEscapes),
            Component::RootDir | Component::Prefix(_) => return Err(UnsafeEntry::AbsolutePath),
        }
    }
    Ok(rel)
}

/// One step of a path being resolved.
enum Step {
    Root,
    Up,
    Name(OsString),
}

fn steps(path: &Path) -> impl Iterator<Item = Step> + '_ {
    path.components().filter_map(|c| match c {
        Component::RootDir | Component::Prefix(_) => Some(Step::Root),
        Component::CurDir => None,
        Component::ParentDir => Some(Step::Up),
        Component::Normal(name) => Some(Step::Name(name.to_os_string())),
    })
}

/// Resolves symlink `link` (relative to the root) pointing at `target`, following the
/// symlinks that `symlink_at` knows (relative path → target) as the kernel would inside the
/// container, but treating `..` above the root as an escape. Returns the resolved path
/// relative to the root, or `None` if resolution leaves the root or follows more than
/// [`MAX_SYMLINK_HOPS`] symlinks.
pub(crate) fn resolve_symlink(
    link: &Path,
    target: &Path,
    symlink_at: impl Fn(&Path) -> Option<PathBuf>,
) -> Option<PathBuf> {
    let mut resolved: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(OsStr::to_os_string).collect())
        .unwrap_or_default();
    let mut pending: VecDeque<Step> = steps(target).collect();
    let mut hops = 0;
    while let Some(step) = pending.pop_front() {
        match step {
            Step::Root => resolved.clear(),
            Step::Up => {
                resolved.pop()?;
            }
            Step::Name(name) => {
                resolved.push(name);
                let here: PathBuf = resolved.iter().collect();
                if let Some(next) = symlink_at(&here) {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return None;
                    }
                    resolved.pop();
                    for step in steps(&next).collect::<Vec<_>>().into_iter().rev() {
                        pending.push_front(step);
                    }
                }
            }
        }
    }
    Some(resolved.iter().collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn check_name(raw: &str, expected: Result<&str, UnsafeEntry>) {
        let got = normalize_entry_path(raw.as_bytes());
        assert_eq!(got, expected.map(PathBuf::from), "entry {raw:?}");
    }

    #[test]
    fn entry_names_are_relative_and_confined() {
        check_name("a/b", Ok("a/b"));
        check_name("./a/b/", Ok("a/b"));
        check_name("./", Ok(""));
        check_name(".", Ok(""));
        check_name("a/./b", Ok("a/b"));
        check_name("a//b", Ok("a/b"));
        check_name("/etc/passwd", Err(UnsafeEntry::AbsolutePath));
        check_name("../etc/passwd", Err(UnsafeEntry::PathEscapes));
        check_name("a/../../b", Err(UnsafeEntry::PathEscapes));
        check_name("a/..", Err(UnsafeEntry::PathEscapes));
        check_name("", Err(UnsafeEntry::EmptyPath));
    }

    fn check_link(link: &str, target: &str, earlier: &[(&str, &str)], expected: Option<&str>) {
        let symlinks: BTreeMap<PathBuf, PathBuf> = earlier
            .iter()
            .map(|(l, t)| (PathBuf::from(l), PathBuf::from(t)))
            .collect();
        let got = resolve_symlink(Path::new(link), Path::new(target), |p| {
            symlinks.get(p).cloned()
        });
        assert_eq!(
            got,
            expected.map(PathBuf::from),
            "{link} -> {target} with {earlier:?}"
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root_or_are_refused() {
        check_link("bin/sh", "busybox", &[], Some("bin/busybox"));
        check_link("bin/sh", "/bin/busybox", &[], Some("bin/busybox"));
        check_link("usr/lib/x", "../../etc/x", &[], Some("etc/x"));
        check_link("a", "..", &[], None);
        check_link("a/b", "../../etc/passwd", &[], None);
        check_link("x", "/../../etc/passwd", &[], None);
        check_link("x", "/etc/../../root", &[], None);
        // Through an earlier symlink that points deeper, `..` climbs back out of it.
        check_link("p", "d/../..", &[("d", "a/b")], Some(""));
        // Through an earlier symlink pointing at the root, one more `..` escapes.
        check_link("p", "up/..", &[("up", "/")], None);
        check_link("loop", "l1", &[("l1", "l2"), ("l2", "l1")], None);
    }
}
