//! Flattening: applying stored layers in order into one plain directory, honouring whiteouts
//! (a 0:0 character device deletes the path below it) and opaque directories (lower content
//! is dropped). This is the rootfs when overlayfs is unavailable. Symlinks are copied as
//! symlinks and never followed; hardlinks within a layer stay hardlinks.

use std::collections::BTreeMap;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::{chown, lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

use super::error::{ImageError, IoContext};
use super::fsutil::{
    clear_dir, create_new, is_opaque, is_whiteout, open_regular, remove_any, sorted_names,
};
use super::limits::MAX_TREE_DEPTH;

/// Applies `layer_dirs` (bottom first) into the existing directory `dest`.
pub fn flatten_layers(layer_dirs: &[PathBuf], dest: &Path) -> Result<(), ImageError> {
    for layer in layer_dirs {
        let mut copier = LayerCopier {
            linked: BTreeMap::new(),
        };
        copier.apply_dir(layer, dest, 0)?;
    }
    Ok(())
}

struct LayerCopier {
    /// (device, inode) of files copied from this layer → their copy, to keep hardlinks.
    linked: BTreeMap<(u64, u64), PathBuf>,
}

impl LayerCopier {
    fn apply_dir(&mut self, src: &Path, dst: &Path, depth: usize) -> Result<(), ImageError> {
        if depth > MAX_TREE_DEPTH {
            return Err(ImageError::malformed(
                src.display().to_string(),
                format!("directory tree deeper than {MAX_TREE_DEPTH} (MAX_TREE_DEPTH)"),
            ));
        }
        if is_opaque(src)? {
            clear_dir(dst)?;
        }
        for name in sorted_names(src)? {
            let (from, to) = (src.join(&name), dst.join(&name));
            let meta = fs::symlink_metadata(&from).ctx("inspecting", &from)?;
            if is_whiteout(&meta) {
                remove_any(&to)?;
            } else if meta.is_dir() {
                ensure_dir(&to, &meta)?;
                self.apply_dir(&from, &to, depth + 1)?;
            } else {
                remove_any(&to)?;
                self.copy_leaf(&from, &to, &meta)?;
            }
        }
        Ok(())
    }

    fn copy_leaf(&mut self, from: &Path, to: &Path, meta: &fs::Metadata) -> Result<(), ImageError> {
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            let target = fs::read_link(from).ctx("reading symlink", from)?;
            symlink(&target, to).ctx("creating symlink", to)?;
            return lchown(to, Some(meta.uid()), Some(meta.gid())).ctx("setting owner of", to);
        }
        if file_type.is_fifo() {
            nix::unistd::mkfifo(to, Mode::from_bits_truncate(0o600)).ctx("creating fifo", to)?;
            return set_owner_mode(to, meta);
        }
        if !file_type.is_file() {
            return Err(ImageError::malformed(
                from.display().to_string(),
                "unexpected file type in a stored layer",
            ));
        }
        let inode = (meta.dev(), meta.ino());
        if meta.nlink() > 1 {
            if let Some(first) = self.linked.get(&inode) {
                return fs::hard_link(first, to).ctx("creating hardlink", to);
            }
            self.linked.insert(inode, to.to_path_buf());
        }
        let mut source = open_regular(from)?;
        let mut copy = create_new(to)?;
        io::copy(&mut source, &mut copy).ctx("copying", from)?;
        copy.set_modified(meta.modified().ctx("inspecting", from)?)
            .ctx("setting mtime of", to)?;
        drop(copy);
        set_owner_mode(to, meta)
    }
}

/// Makes `to` a directory (replacing a lower non-directory) with `meta`'s owner and mode.
fn ensure_dir(to: &Path, meta: &fs::Metadata) -> Result<(), ImageError> {
    match fs::symlink_metadata(to) {
        Ok(existing) if existing.is_dir() => {}
        Ok(_) => {
            remove_any(to)?;
            fs::create_dir(to).ctx("creating directory", to)?;
        }
        Err(_) => fs::create_dir(to).ctx("creating directory", to)?,
    }
    set_owner_mode(to, meta)
}

/// Ownership first: chown clears set-id bits that the mode then restores.
fn set_owner_mode(path: &Path, meta: &fs::Metadata) -> Result<(), ImageError> {
    if nix::unistd::geteuid().is_root() {
        chown(path, Some(meta.uid()), Some(meta.gid())).ctx("setting owner of", path)?;
    }
    fs::set_permissions(path, Permissions::from_mode(meta.mode() & 0o7777))
        .ctx("setting mode of", path)
}
