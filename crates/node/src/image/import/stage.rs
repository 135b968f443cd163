//! The staging area of one import under `tmp/`: blobs copied in while their digest is checked,
//! layers unpacked while their diff_id is checked, and the commit that renames everything into
//! the store and updates `refs.json`. Dropping an uncommitted staging area deletes it, so a
//! failed import leaves the store exactly as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tempfile::TempDir;

use super::super::digest::{Digest, HashingReader, HashingWriter};
use super::super::error::{ImageError, IoContext};
use super::super::fsutil::{create_new, fsync_dir, open_regular, read_bounded};
use super::super::limits::{Budget, Limits, MAX_JSON_BYTES};
use super::super::reference::ImageRef;
use super::super::refs::Refs;
use super::super::store::StorePaths;
use super::super::unpack::{unpack, ArchiveKind};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Layer media types are accepted when they end like this (OCI and Docker spellings).
const LAYER_MEDIA_SUFFIXES: [&str; 4] = [".tar", ".tar+gzip", ".tar.gzip", ".tar.gz"];
/// Chunk size for draining a layer stream after its tar end.
const DRAIN_CHUNK_BYTES: usize = 64 << 10;

/// How a layer blob is compressed, found from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// What a blob is expected to be; `None` fields are computed rather than checked.
#[derive(Debug, Default)]
pub(crate) struct Expect {
    pub(crate) digest: Option<Digest>,
    pub(crate) size_bytes: Option<u64>,
}

/// An image fully staged: its manifest digest and the tags to point at it.
#[derive(Debug)]
pub(crate) struct StagedImage {
    pub(crate) manifest: Digest,
    pub(crate) tags: Vec<ImageRef>,
}

pub(crate) struct Staging<'s> {
    paths: &'s StorePaths,
    dir: TempDir,
    budget: Budget,
    blobs: BTreeMap<Digest, PathBuf>,
    layers: BTreeMap<Digest, PathBuf>,
    /// Layer blobs whose diff_id this import already checked.
    verified: BTreeSet<(Digest, Digest)>,
    next_id: u64,
}

impl<'s> Staging<'s> {
    pub(crate) fn new(paths: &'s StorePaths, limits: Limits) -> Result<Staging<'s>, ImageError> {
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&paths.tmp)
            .ctx("creating staging directory in", &paths.tmp)?;
        Ok(Staging {
            paths,
            dir,
            budget: Budget::new(limits),
            blobs: BTreeMap::new(),
            layers: BTreeMap::new(),
            verified: BTreeSet::new(),
            next_id: 0,
        })
    }

    /// A new empty directory inside the staging area.
    pub(crate) fn scratch_dir(&mut self, label: &str) -> Result<PathBuf, ImageError> {
        self.next_id += 1;
        let path = self.dir.path().join(format!("{label}-{}", self.next_id));
        fs::create_dir(&path).ctx("creating staging directory", &path)?;
        Ok(path)
    }

    pub(crate) fn budget(&mut self) -> &mut Budget {
        &mut self.budget
    }

    /// Where blob `digest` can be read: staged by this import or already in the store.
    pub(crate) fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        if let Some(path) = self.blobs.get(digest) {
            return Some(path.clone());
        }
        let in_store = self.paths.blob(digest);
        in_store.is_file().then_some(in_store)
    }

    /// Stages small in-memory content (manifests, configs) whose digest is known.
    pub(crate) fn stage_bytes(&mut self, data: &[u8], digest: &Digest) -> Result<(), ImageError> {
        if self.blob_path(digest).is_some() {
            return Ok(());
        }
        let path = self.scratch_file("blob");
        let mut file = create_new(&path)?;
        io::Write::write_all(&mut file, data).ctx("writing", &path)?;
        self.budget.charge_bytes("staging", data.len() as u64)?;
        self.blobs.insert(digest.clone(), path);
        Ok(())
    }

    /// Copies blob file `src` into staging while hashing it, and checks it against `expect`.
    /// A blob the store already holds is only hashed, not copied again; a layout may also
    /// omit such a blob entirely.
    pub(crate) fn stage_file(
        &mut self,
        src: &Path,
        expect: &Expect,
        what: &str,
    ) -> Result<(Digest, u64), ImageError> {
        let already_have = expect
            .digest
            .as_ref()
            .and_then(|d| self.blob_path(d).map(|path| (d.clone(), path)));
        if let Some((digest, path)) = &already_have {
            if !src.exists() {
                let size_bytes = fs::metadata(path).ctx("inspecting", path)?.len();
                return Ok((digest.clone(), size_bytes));
            }
        }
        let mut source = open_regular(src)?;
        let size_bytes = source.metadata().ctx("inspecting", src)?.len();
        check_size(what, expect.size_bytes, size_bytes)?;
        let staged = if already_have.is_some() {
            None
        } else {
            self.budget
                .charge_file(what, &src.display().to_string(), size_bytes)?;
            Some(self.scratch_file("blob"))
        };
        let sink: Box<dyn io::Write> = match &staged {
            Some(path) => Box::new(create_new(path)?),
            None => Box::new(io::sink()),
        };
        let mut sink = HashingWriter::new(sink);
        io::copy(&mut source, &mut sink).ctx("copying", src)?;
        let (_, digest, copied_bytes) = sink.into_parts();
        check_size(what, Some(size_bytes), copied_bytes)?;
        if let Some(expected) = &expect.digest {
            check_digest(what, expected, &digest)?;
        }
        if let Some(path) = staged {
            self.blobs.insert(digest.clone(), path);
        }
        Ok((digest, size_bytes))
    }

    /// Reads a staged or stored JSON blob (bounded by [`MAX_JSON_BYTES`]).
    pub(crate) fn read_blob(&self, digest: &Digest, what: &str) -> Result<Vec<u8>, ImageError> {
        let path = self
            .blob_path(digest)
            .ok_or_else(|| ImageError::MissingBlob {
                what: what.to_string(),
                digest: digest.clone(),
            })?;
        read_bounded(&path, MAX_JSON_BYTES, what)
    }

    /// Unpacks layer blob `blob` (unless its tree is already in the store or staged) and checks
    /// that its uncompressed content hashes to `diff_id`. Returns how the blob is compressed.
    pub(crate) fn stage_layer(
        &mut self,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
    ) -> Result<Compression, ImageError> {
        let origin = format!("layer {}", blob.short());
        let path = self
            .blob_path(blob)
            .ok_or_else(|| ImageError::MissingBlob {
                what: origin.clone(),
                digest: blob.clone(),
            })?;
        let (compression, reader) = open_layer(&path, media_type, &origin)?;
        if self.verified.contains(&(blob.clone(), diff_id.clone())) {
            return Ok(compression);
        }
        let mut hashing = HashingReader::new(reader);
        let have_tree = self.layers.contains_key(diff_id) || self.paths.layer(diff_id).is_dir();
        if !have_tree {
            let dest = self.scratch_dir("layer")?;
            unpack(
                &mut hashing,
                &dest,
                ArchiveKind::Layer,
                &origin,
                &mut self.budget,
            )?;
            self.layers.insert(diff_id.clone(), dest);
        }
        self.drain(&mut hashing, &origin)?;
        let what = format!("{origin}: uncompressed content (diff_id)");
        check_digest(&what, diff_id, &hashing.finish())?;
        self.verified.insert((blob.clone(), diff_id.clone()));
        Ok(compression)
    }

    /// Reads a layer stream to its end (the tar padding, or the whole stream when the tree is
    /// already unpacked), charging the bytes so a decompression bomb is bounded.
    fn drain(&mut self, reader: &mut impl Read, origin: &str) -> Result<(), ImageError> {
        let mut chunk = vec![0u8; DRAIN_CHUNK_BYTES];
        loop {
            let n = reader
                .read(&mut chunk)
                .map_err(|e| ImageError::malformed(origin, format!("reading layer stream: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            self.budget.charge_bytes(origin, n as u64)?;
        }
    }

    /// Makes everything staged visible: blobs, then layers, then the tags that name them.
    /// Each step is a rename, so a crash in between leaves only unreferenced objects.
    pub(crate) fn commit(self, images: &[StagedImage]) -> Result<(), ImageError> {
        let staging = fs::File::open(self.dir.path()).ctx("opening", self.dir.path())?;
        nix::unistd::syncfs(staging.as_raw_fd()).ctx("syncing", self.dir.path())?;
        for (digest, path) in &self.blobs {
            publish(path, &self.paths.blob(digest))?;
        }
        fsync_dir(&self.paths.blobs)?;
        for (diff_id, path) in &self.layers {
            publish(path, &self.paths.layer(diff_id))?;
        }
        fsync_dir(&self.paths.layers)?;
        let mut refs = Refs::load(&self.paths.refs)?;
        for image in images {
            for tag in &image.tags {
                refs.add(Some(tag), &image.manifest);
            }
            if image.tags.is_empty() {
                refs.add(None, &image.manifest);
            }
        }
        refs.save(&self.paths.refs, &self.paths.tmp)
    }

    fn scratch_file(&mut self, label: &str) -> PathBuf {
        self.next_id += 1;
        self.dir.path().join(format!("{label}-{}", self.next_id))
    }
}

/// Renames a staged object into place unless the store already has it (content-addressed,
/// so an existing one is identical, even if a concurrent import published it first).
fn publish(staged: &Path, dest: &Path) -> Result<(), ImageError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Ok(());
    }
    match fs::rename(staged, dest) {
        Err(_) if fs::symlink_metadata(dest).is_ok() => Ok(()),
        other => other.ctx("publishing", dest),
    }
}

/// Opens a layer blob for reading its uncompressed tar stream.
fn open_layer(
    path: &Path,
    media_type: &str,
    origin: &str,
) -> Result<(Compression, Box<dyn Read>), ImageError> {
    let unsupported = || ImageError::UnsupportedMediaType {
        what: origin.to_string(),
        media_type: media_type.to_string(),
    };
    if !media_type.is_empty() && !LAYER_MEDIA_SUFFIXES.iter().any(|s| media_type.ends_with(s)) {
        return Err(unsupported());
    }
    let mut reader = BufReader::new(open_regular(path)?);
    let head = reader.fill_buf().ctx("reading", path)?;
    if head.starts_with(&ZSTD_MAGIC) {
        return Err(ImageError::UnsupportedMediaType {
            what: origin.to_string(),
            media_type: "zstd-compressed layer".to_string(),
        });
    }
    if head.starts_with(&GZIP_MAGIC) {
        return Ok((Compression::Gzip, Box::new(MultiGzDecoder::new(reader))));
    }
    Ok((Compression::None, Box::new(reader)))
}

pub(crate) fn check_digest(
    what: &str,
    expected: &Digest,
    actual: &Digest,
) -> Result<(), ImageError> {
    if expected != actual {
        return Err(ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

fn check_size(
    what: &str,
    expected_bytes: Option<u64>,
    actual_bytes: u64,
) -> Result<(), ImageError> {
    match expected_bytes {
        Some(expected_bytes) if expected_bytes != actual_bytes => Err(ImageError::SizeMismatch {
            what: what.to_string(),
            expected_bytes,
            actual_bytes,
        }),
        _ => Ok(()),
    }
}
