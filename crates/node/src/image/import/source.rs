//! What an import was given: an OCI image layout directory, or a tar archive (optionally gzip
//! compressed) holding an OCI layout or a `docker save` image. Archives are unpacked safely
//! into the staging area; the result is always a directory and its format.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::super::error::{ImageError, IoContext};
use super::super::fsutil::open_regular;
use super::super::unpack::{unpack, ArchiveKind};
use super::stage::Staging;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Offset and value of the ustar magic in a tar header (POSIX and GNU archives).
const TAR_MAGIC_OFFSET: usize = 257;
const TAR_MAGIC: &[u8] = b"ustar";

/// The layout found in an import source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    OciLayout,
    DockerSave,
}

/// Resolves an import path to a directory holding an OCI layout or a `docker save` tree.
pub(crate) fn open_source(
    path: &Path,
    staging: &mut Staging<'_>,
) -> Result<(PathBuf, Format), ImageError> {
    // The operator's own symlinks (`/images/current.tar`) are followed; inside, nothing is.
    let path = &fs::canonicalize(path).ctx("resolving import source", path)?;
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        extract(path, staging)?
    };
    let format = detect(path, &dir)?;
    Ok((dir, format))
}

fn detect(source: &Path, dir: &Path) -> Result<Format, ImageError> {
    if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
        return Ok(Format::OciLayout);
    }
    if dir.join("manifest.json").is_file() {
        return Ok(Format::DockerSave);
    }
    Err(ImageError::UnknownFormat {
        path: source.to_path_buf(),
        reason: "found neither oci-layout + index.json nor manifest.json".to_string(),
    })
}

/// Unpacks a (possibly gzip-compressed) tar archive into a fresh staging directory.
fn extract(path: &Path, staging: &mut Staging<'_>) -> Result<PathBuf, ImageError> {
    let mut reader = BufReader::new(open_regular(path)?);
    let head = reader.fill_buf().ctx("reading", path)?.to_vec();
    let origin = format!("archive {}", path.display());
    let stream: Box<dyn Read> = if head.starts_with(&GZIP_MAGIC) {
        Box::new(MultiGzDecoder::new(reader))
    } else if head.starts_with(&ZSTD_MAGIC) {
        return Err(ImageError::UnsupportedMediaType {
            what: origin,
            media_type: "zstd-compressed archive".to_string(),
        });
    } else if head.get(TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + TAR_MAGIC.len()) == Some(TAR_MAGIC) {
        Box::new(reader)
    } else {
        return Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "not a directory, tar or gzip-compressed tar".to_string(),
        });
    };
    let dest = staging.scratch_dir("source")?;
    unpack(stream, &dest, ArchiveKind::Outer, &origin, staging.budget())?;
    Ok(dest)
}
