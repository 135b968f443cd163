//! `pack_directory`: builds a single-layer, tagged OCI archive from a directory (used by tests
//! and the demo to make a busybox image without a registry). The output is deterministic:
//! entries sorted bytewise, fixed mtimes, root ownership, gzip without a timestamp, so the
//! same directory always yields the same digest.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use tar::{Builder, EntryType, Header};

use super::config::ImageConfig;
use super::digest::{Digest, HashingWriter};
use super::error::{ImageError, IoContext};
use super::fsutil::{open_regular, sorted_names};
use super::import::host_architecture;
use super::limits::MAX_TREE_DEPTH;
use super::reference::ImageRef;
use super::spec::{
    ConfigFile, Descriptor, Index, Manifest, OciLayout, RootFs, ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_MANIFEST, OCI_LAYOUT_VERSION,
};

/// Modification time written for every entry: the epoch, so output does not depend on when
/// files were touched.
const PACK_MTIME_SECS: u64 = 0;
/// Mode of the files and directories of the outer archive itself.
const ARCHIVE_FILE_MODE: u32 = 0o644;
const ARCHIVE_DIR_MODE: u32 = 0o755;

/// Packs `dir` as a one-layer image tagged `name_tag`, run as `config` says, into the OCI
/// archive `out_file`. Returns the manifest digest (the image's identity after import).
pub fn pack_directory(
    dir: &Path,
    name_tag: &str,
    config: &ImageConfig,
    out_file: &Path,
) -> Result<Digest, ImageError> {
    let reference = ImageRef::parse(name_tag)?;
    if reference.digest().is_some() {
        return Err(ImageError::InvalidReference {
            reference: name_tag.to_string(),
            reason: "an image to pack needs a name:tag, not a digest",
        });
    }
    let out_dir = out_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".pack-")
        .tempdir_in(out_dir)
        .ctx("creating staging directory in", out_dir)?;
    let layer_path = staging.path().join("layer.tar.gz");
    let (layer_digest, layer_size, diff_id) = write_layer(dir, &layer_path)?;
    let config_data = config_json(config, &diff_id)?;
    let config_digest = Digest::of_bytes(&config_data);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
        config: Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            &config_digest,
            config_data.len() as u64,
        ),
        layers: vec![Descriptor::new(
            MEDIA_TYPE_OCI_LAYER_GZIP,
            &layer_digest,
            layer_size,
        )],
    };
    let manifest_data = to_json(&manifest, "manifest")?;
    let manifest_digest = Digest::of_bytes(&manifest_data);
    let mut manifest_desc = Descriptor::new(
        MEDIA_TYPE_OCI_MANIFEST,
        &manifest_digest,
        manifest_data.len() as u64,
    );
    manifest_desc
        .annotations
        .insert(ANNOTATION_REF_NAME.to_string(), reference.to_string());
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
        manifests: vec![manifest_desc],
    };
    let mut blobs: BTreeMap<String, BlobSource> = BTreeMap::new();
    blobs.insert(
        config_digest.hex().to_string(),
        BlobSource::Bytes(config_data),
    );
    blobs.insert(
        manifest_digest.hex().to_string(),
        BlobSource::Bytes(manifest_data),
    );
    blobs.insert(layer_digest.hex().to_string(), BlobSource::File(layer_path));
    let archive_path = staging.path().join("image.tar");
    write_archive(&archive_path, &to_json(&index, "index.json")?, &blobs)?;
    fs::rename(&archive_path, out_file).ctx("writing", out_file)?;
    Ok(manifest_digest)
}

/// Writes the gzip layer of `dir`; returns (blob digest, blob size, diff_id).
fn write_layer(dir: &Path, layer_path: &Path) -> Result<(Digest, u64, Digest), ImageError> {
    let file = HashingWriter::new(File::create(layer_path).ctx("creating", layer_path)?);
    let gzip = GzBuilder::new()
        .mtime(0)
        .write(file, Compression::default());
    let mut builder = Builder::new(HashingWriter::new(gzip));
    let mut tree = TreeWriter {
        builder: &mut builder,
        linked: BTreeMap::new(),
    };
    tree.write_dir(dir, Path::new(""), 0)?;
    let uncompressed = builder.into_inner().ctx("finishing layer", layer_path)?;
    let (gzip, diff_id, _) = uncompressed.into_parts();
    let compressed = gzip.finish().ctx("finishing layer", layer_path)?;
    let (_, digest, size_bytes) = compressed.into_parts();
    Ok((digest, size_bytes, diff_id))
}

struct TreeWriter<'b, W: Write> {
    builder: &'b mut Builder<W>,
    /// (device, inode) of multiply-linked files already written → their archive path.
    linked: BTreeMap<(u64, u64), PathBuf>,
}

impl<W: Write> TreeWriter<'_, W> {
    fn write_dir(&mut self, dir: &Path, rel: &Path, depth: usize) -> Result<(), ImageError> {
        if depth > MAX_TREE_DEPTH {
            return Err(ImageError::malformed(
                dir.display().to_string(),
                "directory tree deeper than MAX_TREE_DEPTH",
            ));
        }
        for name in sorted_names(dir)? {
            let (path, entry_rel) = (dir.join(&name), rel.join(&name));
            let meta = fs::symlink_metadata(&path).ctx("inspecting", &path)?;
            if meta.is_dir() {
                let mut header = header(EntryType::Directory, meta.permissions().mode(), 0);
                self.builder
                    .append_data(&mut header, &entry_rel, io::empty())
                    .ctx("packing", &path)?;
                self.write_dir(&path, &entry_rel, depth + 1)?;
            } else {
                self.write_leaf(&path, &entry_rel, &meta)?;
            }
        }
        Ok(())
    }

    fn write_leaf(
        &mut self,
        path: &Path,
        rel: &Path,
        meta: &fs::Metadata,
    ) -> Result<(), ImageError> {
        let mode = meta.permissions().mode();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(path).ctx("reading symlink", path)?;
            let mut header = header(EntryType::Symlink, mode, 0);
            return self
                .builder
                .append_link(&mut header, rel, &target)
                .ctx("packing", path);
        }
        if !meta.is_file() {
            return Err(ImageError::malformed(
                path.display().to_string(),
                "cannot pack a device, socket or fifo",
            ));
        }
        let inode = (meta.dev(), meta.ino());
        if let Some(first) = self.linked.get(&inode) {
            let mut header = header(EntryType::Link, mode, 0);
            return self
                .builder
                .append_link(&mut header, rel, first)
                .ctx("packing", path);
        }
        if meta.nlink() > 1 {
            self.linked.insert(inode, rel.to_path_buf());
        }
        let file = open_regular(path)?;
        let mut header = header(EntryType::Regular, mode, meta.len());
        self.builder
            .append_data(&mut header, rel, file.take(meta.len()))
            .ctx("packing", path)
    }
}

fn header(entry_type: EntryType, mode: u32, size_bytes: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode & 0o7777);
    header.set_size(size_bytes);
    header.set_mtime(PACK_MTIME_SECS);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn config_json(config: &ImageConfig, diff_id: &Digest) -> Result<Vec<u8>, ImageError> {
    let or_default = |value: &str, default: &str| {
        if value.is_empty() {
            default.to_string()
        } else {
            value.to_string()
        }
    };
    let file = ConfigFile {
        architecture: or_default(&config.architecture, host_architecture()),
        os: or_default(&config.os, "linux"),
        config: Some(config.to_container_config()),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: vec![diff_id.to_string()],
        },
    };
    to_json(&file, "image config")
}

enum BlobSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// Writes the OCI layout as a tar: `oci-layout`, `index.json`, then blobs sorted by digest.
fn write_archive(
    path: &Path,
    index: &[u8],
    blobs: &BTreeMap<String, BlobSource>,
) -> Result<(), ImageError> {
    let mut builder = Builder::new(File::create(path).ctx("creating", path)?);
    let layout = to_json(
        &OciLayout {
            image_layout_version: OCI_LAYOUT_VERSION.to_string(),
        },
        "oci-layout",
    )?;
    append_bytes(&mut builder, "oci-layout", &layout, path)?;
    append_bytes(&mut builder, "index.json", index, path)?;
    for dir in ["blobs", "blobs/sha256"] {
        let mut header = header(EntryType::Directory, ARCHIVE_DIR_MODE, 0);
        builder
            .append_data(&mut header, dir, io::empty())
            .ctx("writing", path)?;
    }
    for (hex, source) in blobs {
        let name = format!("blobs/sha256/{hex}");
        match source {
            BlobSource::Bytes(data) => append_bytes(&mut builder, &name, data, path)?,
            BlobSource::File(file) => {
                let size_bytes = fs::metadata(file).ctx("inspecting", file)?.len();
                let mut header = header(EntryType::Regular, ARCHIVE_FILE_MODE, size_bytes);
                builder
                    .append_data(&mut header, &name, open_regular(file)?)
                    .ctx("writing", path)?;
            }
        }
    }
    let file = builder.into_inner().ctx("finishing", path)?;
    file.sync_all().ctx("syncing", path)
}

fn append_bytes(
    builder: &mut Builder<File>,
    name: &str,
    data: &[u8],
    path: &Path,
) -> Result<(), ImageError> {
    let mut header = header(EntryType::Regular, ARCHIVE_FILE_MODE, data.len() as u64);
    builder
        .append_data(&mut header, name, data)
        .ctx("writing", path)
}

fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec(value).map_err(|source| ImageError::InvalidJson {
        file: what.to_string(),
        source,
    })
}
