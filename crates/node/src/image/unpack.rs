//! Safe unpacking of tar archives into a fresh directory: image layers (with OCI whiteouts
//! turned into overlayfs whiteouts and opaque markers) and the outer archive of an import.
//!
//! This is a security boundary. The unpacker keeps its own map of everything it created, so
//! it never follows a symlink on the host: entries with `..` or absolute names, symlinks that
//! resolve outside the root, paths through earlier symlinks, hardlinks to anything but a
//! regular file seen earlier, and device nodes are refused, failing the whole import.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use nix::sys::stat::Mode;
use tar::{Entry, EntryType, Header};

use super::entry_path::{normalize_entry_path, resolve_symlink};
use super::error::{ImageError, IoContext, UnsafeEntry};
use super::fsutil::{create_new, display, make_whiteout, remove_any, set_opaque, set_xattr, under};
use super::limits::Budget;
use super::metered::{Meter, MeteredReader};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// aufs bookkeeping names (`.wh..wh.plnk`, …): meaningless outside aufs, skipped.
const AUFS_META_PREFIX: &str = ".wh..wh.";
/// Linux refuses symlink targets of PATH_MAX bytes or more.
const MAX_SYMLINK_TARGET_BYTES: usize = 4096;
/// PAX records carrying extended attributes (as GNU tar and Docker write them).
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Extended attributes kept from image layers: file capabilities and user attributes.
/// `trusted.*` is dropped: overlayfs interprets it, and only the store may set it.
const KEPT_XATTR_PREFIXES: [&str; 2] = ["security.capability", "user."];
/// Mode of directories the archive implies but does not list.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Which kind of archive is being unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchiveKind {
    /// An image layer: whiteouts apply, ownership and modes are kept, FIFOs allowed.
    Layer,
    /// The outer archive of an import: only files and directories; symlinks and hardlinks
    /// become hard links to the regular file they resolve to.
    Outer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink(PathBuf),
    Whiteout,
    Fifo,
}

/// Unpacks `reader` (an uncompressed tar stream) into the empty directory `dest` and returns
/// the reader, positioned after the archive's end, so the caller can drain and hash the rest.
pub(crate) fn unpack<R: Read>(
    reader: R,
    dest: &Path,
    kind: ArchiveKind,
    origin: &str,
    budget: &mut Budget,
) -> Result<R, ImageError> {
    let meter = Rc::new(Meter::default());
    let mut unpacker = Unpacker {
        root: dest.to_path_buf(),
        origin: origin.to_string(),
        kind,
        budget,
        tree: BTreeMap::new(),
        as_root: nix::unistd::geteuid().is_root(),
        meter: Rc::clone(&meter),
    };
    let mut archive = tar::Archive::new(MeteredReader::new(reader, meter));
    let mut count = 0u64;
    for entry in archive.entries().map_err(|e| unpacker.read_error(e))? {
        let mut entry = entry.map_err(|e| unpacker.read_error(e))?;
        unpacker.meter.entry_started();
        count += 1;
        unpacker.budget.check_entries(&unpacker.origin, count)?;
        unpacker.apply(&mut entry)?;
        unpacker.skip_rest(&mut entry)?;
    }
    if kind == ArchiveKind::Outer {
        unpacker.materialise_links()?;
    }
    Ok(archive.into_inner().into_inner())
}

/// Ownership, permissions and modification time of an entry.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_secs: u64,
}

struct Unpacker<'b> {
    root: PathBuf,
    origin: String,
    kind: ArchiveKind,
    budget: &'b mut Budget,
    tree: BTreeMap<PathBuf, Node>,
    as_root: bool,
    meter: Rc<Meter>,
}

impl Unpacker<'_> {
    fn apply<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let entry_type = entry.header().entry_type();
        // Global PAX headers carry no file (POSIX names them /tmp/GlobalHead.*): skip them.
        if matches!(entry_type, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = normalize_entry_path(&raw).map_err(|r| self.refuse(&name, r))?;
        if self.kind == ArchiveKind::Layer && is_whiteout_name(&rel) {
            return self.whiteout(&name, &rel);
        }
        if rel.as_os_str().is_empty() && !entry_type.is_dir() {
            return Err(self.refuse(&name, UnsafeEntry::EmptyPath));
        }
        let meta = self.meta(&name, entry.header())?;
        let xattrs = self.kept_xattrs(entry);
        match entry_type {
            EntryType::Directory => self.directory(&name, &rel, &meta),
            EntryType::Regular | EntryType::Continuous => self.file(&name, &rel, &meta, entry),
            EntryType::Symlink => {
                self.symlink(&name, &rel, &self.link_target(&name, entry)?, &meta)
            }
            EntryType::Link => self.hardlink(&name, &rel, &self.link_target(&name, entry)?),
            EntryType::Char => {
                Err(self.refuse(&name, UnsafeEntry::DeviceNode { kind: "character" }))
            }
            EntryType::Block => Err(self.refuse(&name, UnsafeEntry::DeviceNode { kind: "block" })),
            EntryType::Fifo if self.kind == ArchiveKind::Layer => self.fifo(&name, &rel, &meta),
            other => Err(self.refuse(
                &name,
                UnsafeEntry::UnsupportedType {
                    kind: format!("{other:?}"),
                },
            )),
        }?;
        // After ownership and mode: chown clears security.capability.
        let keeps_xattrs = matches!(
            self.tree.get(&rel),
            Some(Node::File | Node::Dir | Node::Fifo)
        );
        if keeps_xattrs && !matches!(entry_type, EntryType::Link) {
            let path = under(&self.root, &rel);
            for (attribute, value) in xattrs {
                set_xattr(&path, &attribute, &value)?;
            }
        }
        Ok(())
    }

    /// Extended attributes of a layer entry that the store keeps (see [`KEPT_XATTR_PREFIXES`]).
    fn kept_xattrs<R: Read>(&self, entry: &mut Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
        if self.kind != ArchiveKind::Layer {
            return Vec::new();
        }
        let Ok(Some(extensions)) = entry.pax_extensions() else {
            return Vec::new();
        };
        extensions
            .filter_map(Result::ok)
            .filter_map(|ext| {
                let attribute = ext.key().ok()?.strip_prefix(PAX_XATTR_PREFIX)?;
                let kept = KEPT_XATTR_PREFIXES.iter().any(|p| attribute.starts_with(p));
                kept.then(|| (attribute.to_string(), ext.value_bytes().to_vec()))
            })
            .collect()
    }

    /// Reads what the unpacker left of an entry's contents (a whiteout or link with data),
    /// as contents, so it counts against the size budget rather than the metadata bound.
    fn skip_rest<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), ImageError> {
        let skipped = self
            .meter
            .contents(|| io::copy(entry, &mut io::sink()))
            .map_err(|e| self.read_error(e))?;
        self.budget.charge_bytes(&self.origin, skipped)
    }

    fn directory(&mut self, name: &str, rel: &Path, meta: &Meta) -> Result<(), ImageError> {
        if !rel.as_os_str().is_empty() {
            self.ensure_parents(name, rel)?;
            self.make_dir(rel)?;
        }
        self.apply_meta(rel, meta)
    }

    /// Makes `rel` a directory of this archive, replacing a non-directory in its way. A
    /// directory replacing a whiteout of the same layer becomes opaque, as the whiteout asked
    /// for the lower content to be hidden.
    fn make_dir(&mut self, rel: &Path) -> Result<(), ImageError> {
        let existing = self.tree.get(rel).cloned();
        if existing == Some(Node::Dir) {
            return Ok(());
        }
        self.clear_slot(rel)?;
        let path = under(&self.root, rel);
        fs::create_dir(&path).ctx("creating directory", &path)?;
        fs::set_permissions(&path, Permissions::from_mode(IMPLICIT_DIR_MODE))
            .ctx("setting mode of", &path)?;
        if existing == Some(Node::Whiteout) {
            set_opaque(&path)?;
        }
        self.tree.insert(rel.to_path_buf(), Node::Dir);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        name: &str,
        rel: &Path,
        meta: &Meta,
        entry: &mut Entry<'_, R>,
    ) -> Result<(), ImageError> {
        let size_bytes = entry.size();
        self.budget.charge_file(&self.origin, name, size_bytes)?;
        self.ensure_parents(name, rel)?;
        self.clear_slot(rel)?;
        let path = under(&self.root, rel);
        let mut file = create_new(&path)?;
        let copied = self
            .meter
            .contents(|| io::copy(&mut entry.take(size_bytes), &mut file))
            .map_err(|e| self.read_error(e))?;
        if copied != size_bytes {
            return Err(self.read_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated entry",
            )));
        }
        if self.kind == ArchiveKind::Layer {
            let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.mtime_secs);
            file.set_modified(mtime).ctx("setting mtime of", &path)?;
        }
        drop(file);
        self.tree.insert(rel.to_path_buf(), Node::File);
        self.apply_meta(rel, meta)
    }

    fn symlink(
        &mut self,
        name: &str,
        rel: &Path,
        target: &Path,
        meta: &Meta,
    ) -> Result<(), ImageError> {
        let target_text = display(target);
        if self.kind == ArchiveKind::Outer && target.is_absolute() {
            return Err(self.refuse(
                name,
                UnsafeEntry::AbsoluteSymlink {
                    target: target_text,
                },
            ));
        }
        if target.as_os_str().len() >= MAX_SYMLINK_TARGET_BYTES {
            return Err(self.refuse(name, UnsafeEntry::SymlinkTargetTooLong));
        }
        if resolve_symlink(rel, target, |p| self.symlink_at(p)).is_none() {
            return Err(self.refuse(
                name,
                UnsafeEntry::SymlinkEscapes {
                    target: target_text,
                },
            ));
        }
        self.ensure_parents(name, rel)?;
        self.clear_slot(rel)?;
        if self.kind == ArchiveKind::Layer {
            let path = under(&self.root, rel);
            symlink(target, &path).ctx("creating symlink", &path)?;
            if self.as_root {
                lchown(&path, Some(meta.uid), Some(meta.gid)).ctx("setting owner of", &path)?;
            }
        }
        self.tree
            .insert(rel.to_path_buf(), Node::Symlink(target.to_path_buf()));
        Ok(())
    }

    fn hardlink(&mut self, name: &str, rel: &Path, target: &Path) -> Result<(), ImageError> {
        let target_text = display(target);
        let target_rel = normalize_entry_path(target.as_os_str().as_bytes())
            .ok()
            .filter(|t| !t.as_os_str().is_empty())
            .ok_or_else(|| {
                self.refuse(
                    name,
                    UnsafeEntry::HardlinkEscapes {
                        target: target_text.clone(),
                    },
                )
            })?;
        if target_rel == rel {
            return Ok(());
        }
        self.ensure_parents(name, rel)?;
        self.clear_slot(rel)?;
        match self.tree.get(&target_rel) {
            Some(Node::File) => {}
            None => {
                return Err(self.refuse(
                    name,
                    UnsafeEntry::HardlinkUnseen {
                        target: target_text,
                    },
                ))
            }
            Some(_) => {
                return Err(self.refuse(
                    name,
                    UnsafeEntry::HardlinkNotFile {
                        target: target_text,
                    },
                ))
            }
        }
        let (from, to) = (under(&self.root, &target_rel), under(&self.root, rel));
        fs::hard_link(&from, &to).ctx("creating hardlink", &to)?;
        self.tree.insert(rel.to_path_buf(), Node::File);
        Ok(())
    }

    fn fifo(&mut self, name: &str, rel: &Path, meta: &Meta) -> Result<(), ImageError> {
        self.ensure_parents(name, rel)?;
        self.clear_slot(rel)?;
        let path = under(&self.root, rel);
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).ctx("creating fifo", &path)?;
        self.tree.insert(rel.to_path_buf(), Node::Fifo);
        self.apply_meta(rel, meta)
    }

    /// Applies `.wh.<name>` (hide `<name>` of lower layers) or `.wh..wh..opq` (make the
    /// directory opaque). Content of the same layer wins over its own whiteouts.
    fn whiteout(&mut self, name: &str, rel: &Path) -> Result<(), ImageError> {
        let file_name = rel.file_name().unwrap_or_default().as_bytes();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if file_name == OPAQUE_WHITEOUT.as_bytes() {
            self.ensure_parents(name, rel)?;
            return set_opaque(&under(&self.root, &parent));
        }
        if file_name.starts_with(AUFS_META_PREFIX.as_bytes()) {
            return Ok(());
        }
        let hidden = &file_name[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.refuse(name, UnsafeEntry::InvalidWhiteout));
        }
        let hidden = OsStr::from_bytes(hidden);
        let target = parent.join(hidden);
        self.ensure_parents(name, &target)?;
        if self.tree.contains_key(&target) {
            return Ok(());
        }
        make_whiteout(&under(&self.root, &target))?;
        self.tree.insert(target, Node::Whiteout);
        Ok(())
    }

    /// Makes every ancestor of `rel` a directory of this archive, refusing to go through a
    /// symlink or a file. A whiteout in the way becomes an opaque directory.
    fn ensure_parents(&mut self, name: &str, rel: &Path) -> Result<(), ImageError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            match self.tree.get(&prefix) {
                Some(Node::Dir) => {}
                None | Some(Node::Whiteout) => self.make_dir(&prefix)?,
                Some(Node::Symlink(_)) => {
                    let link = display(&prefix);
                    return Err(self.refuse(name, UnsafeEntry::ThroughSymlink { link }));
                }
                Some(Node::File) | Some(Node::Fifo) => {
                    let parent = display(&prefix);
                    return Err(self.refuse(name, UnsafeEntry::ParentNotDirectory { parent }));
                }
            }
        }
        Ok(())
    }

    /// Removes what this archive put at `rel` (and, for a directory, everything below it).
    fn clear_slot(&mut self, rel: &Path) -> Result<(), ImageError> {
        let Some(old) = self.tree.remove(rel) else {
            return Ok(());
        };
        if old == Node::Dir {
            let below: Vec<PathBuf> = self
                .tree
                .range(rel.to_path_buf()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(rel))
                .cloned()
                .collect();
            for key in below {
                self.tree.remove(&key);
            }
        }
        remove_any(&under(&self.root, rel))
    }

    fn apply_meta(&self, rel: &Path, meta: &Meta) -> Result<(), ImageError> {
        if self.kind == ArchiveKind::Outer {
            return Ok(());
        }
        let path = under(&self.root, rel);
        // Ownership first: chown clears set-id bits that the mode then restores.
        if self.as_root {
            lchown(&path, Some(meta.uid), Some(meta.gid)).ctx("setting owner of", &path)?;
        }
        fs::set_permissions(&path, Permissions::from_mode(meta.mode)).ctx("setting mode of", &path)
    }

    /// Outer archives: replaces every symlink by a hard link to the regular file it resolves to
    /// in the final tree; symlinks to directories or to nothing are dropped.
    fn materialise_links(&mut self) -> Result<(), ImageError> {
        let symlinks: Vec<(PathBuf, PathBuf)> = self
            .tree
            .iter()
            .filter_map(|(path, node)| match node {
                Node::Symlink(target) => Some((path.clone(), target.clone())),
                _ => None,
            })
            .collect();
        for (link, target) in &symlinks {
            let name = display(link);
            let resolved =
                resolve_symlink(link, target, |p| self.symlink_at(p)).ok_or_else(|| {
                    self.refuse(
                        &name,
                        UnsafeEntry::SymlinkEscapes {
                            target: display(target),
                        },
                    )
                })?;
            if self.tree.get(&resolved) == Some(&Node::File) {
                let to = under(&self.root, link);
                fs::hard_link(under(&self.root, &resolved), &to).ctx("creating hardlink", &to)?;
            }
        }
        Ok(())
    }

    fn symlink_at(&self, rel: &Path) -> Option<PathBuf> {
        match self.tree.get(rel) {
            Some(Node::Symlink(target)) => Some(target.clone()),
            _ => None,
        }
    }

    /// Numeric header fields; an all-blank field (some writers leave them empty) reads as 0.
    fn meta(&self, name: &str, header: &Header) -> Result<Meta, ImageError> {
        let old = header.as_old();
        let field = |r: io::Result<u64>, raw: &[u8], what: &str| {
            let blank = raw.iter().all(|b| matches!(b, 0 | b' '));
            let value = if blank { Some(0) } else { r.ok() };
            value.and_then(|v| u32::try_from(v).ok()).ok_or_else(|| {
                ImageError::malformed(&self.origin, format!("entry \"{name}\": invalid {what}"))
            })
        };
        Ok(Meta {
            mode: field(header.mode().map(u64::from), &old.mode, "mode")? & 0o7777,
            uid: field(header.uid(), &old.uid, "uid")?,
            gid: field(header.gid(), &old.gid, "gid")?,
            mtime_secs: header.mtime().unwrap_or(0),
        })
    }

    fn link_target<R: Read>(
        &self,
        name: &str,
        entry: &Entry<'_, R>,
    ) -> Result<PathBuf, ImageError> {
        match entry.link_name_bytes() {
            Some(bytes) if !bytes.is_empty() => Ok(PathBuf::from(OsStr::from_bytes(&bytes))),
            _ => Err(ImageError::malformed(
                &self.origin,
                format!("entry \"{name}\": link without a target"),
            )),
        }
    }

    fn refuse(&self, entry: &str, reason: UnsafeEntry) -> ImageError {
        ImageError::UnsafeEntry {
            origin: self.origin.clone(),
            entry: entry.to_string(),
            reason,
        }
    }

    fn read_error(&self, e: io::Error) -> ImageError {
        ImageError::malformed(&self.origin, format!("reading tar stream: {e}"))
    }
}

fn is_whiteout_name(rel: &Path) -> bool {
    rel.file_name()
        .is_some_and(|n| n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()))
}
