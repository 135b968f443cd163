//! The one error type of the image store, [`ImageError`], and the reasons an archive entry is
//! refused ([`UnsafeEntry`]). Every variant names the file, entry or digest it is about.

use std::io;
use std::path::{Path, PathBuf};

use super::digest::Digest;

/// Everything that can go wrong in the image store, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Sys {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("image store {} is in use by another process", root.display())]
    StoreLocked { root: PathBuf },
    #[error("{}: not an OCI image layout, OCI archive or docker-save archive ({reason})", path.display())]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{origin}: entry \"{entry}\": {reason}")]
    UnsafeEntry {
        origin: String,
        entry: String,
        reason: UnsafeEntry,
    },
    #[error("{origin}: {what} exceeds the limit of {limit} ({name})")]
    LimitExceeded {
        origin: String,
        what: String,
        limit: u64,
        name: &'static str,
    },
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: size mismatch: descriptor says {expected_bytes} bytes, found {actual_bytes}")]
    SizeMismatch {
        what: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    #[error("{what}: unsupported media type \"{media_type}\"")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{file}: invalid JSON: {source}")]
    InvalidJson {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: {reason}")]
    Malformed { file: String, reason: String },
    #[error("{what}: blob {digest} is missing")]
    MissingBlob { what: String, digest: Digest },
    #[error("invalid digest \"{value}\": {reason}")]
    InvalidDigest { value: String, reason: &'static str },
    #[error("invalid image reference \"{reference}\": {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },
    #[error("image \"{reference}\" not found")]
    NotFound { reference: String },
    #[error("image store is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("rootfs {}: {reason}", path.display())]
    Rootfs { path: PathBuf, reason: String },
}

/// Why an archive entry was refused. Unpacking is a security boundary: any of these aborts
/// the whole import and leaves the store unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeEntry {
    #[error("path escapes the layer root")]
    PathEscapes,
    #[error("absolute path")]
    AbsolutePath,
    #[error("empty path")]
    EmptyPath,
    #[error("symlink target \"{target}\" escapes the layer root")]
    SymlinkEscapes { target: String },
    #[error("absolute symlink target \"{target}\" is not allowed in an image archive")]
    AbsoluteSymlink { target: String },
    #[error("path traverses symlink \"{link}\" created earlier in the archive")]
    ThroughSymlink { link: String },
    #[error("parent \"{parent}\" is not a directory")]
    ParentNotDirectory { parent: String },
    #[error("hardlink target \"{target}\" is outside the layer")]
    HardlinkEscapes { target: String },
    #[error("hardlink target \"{target}\" was not seen earlier in the archive")]
    HardlinkUnseen { target: String },
    #[error("hardlink target \"{target}\" is not a regular file")]
    HardlinkNotFile { target: String },
    #[error("{kind} device nodes are not allowed")]
    DeviceNode { kind: &'static str },
    #[error("unsupported entry type {kind}")]
    UnsupportedType { kind: String },
    #[error("invalid whiteout name")]
    InvalidWhiteout,
    #[error("symlink target is longer than PATH_MAX")]
    SymlinkTargetTooLong,
}

impl ImageError {
    pub(crate) fn io(what: &'static str, path: &Path, source: io::Error) -> ImageError {
        ImageError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn sys(what: &'static str, path: &Path, source: nix::errno::Errno) -> ImageError {
        ImageError::Sys {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn malformed(file: impl Into<String>, reason: impl Into<String>) -> ImageError {
        ImageError::Malformed {
            file: file.into(),
            reason: reason.into(),
        }
    }
}

/// Attaches "what was being done to which path" to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T, ImageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::io(what, path, source))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, what: &'static str, path: &Path) -> Result<T, ImageError> {
        self.map_err(|source| ImageError::sys(what, path, source))
    }
}
