//! Bounds on what one import may unpack, as named constants, and the per-import [`Budget`]
//! that enforces them. A hostile archive (decompression bomb, millions of empty entries, a
//! manifest listing thousands of images) fails with [`ImageError::LimitExceeded`].

use super::error::ImageError;

/// Most entries one tar archive (the outer archive or one layer) may hold.
pub const MAX_ARCHIVE_ENTRIES: u64 = 1_000_000;
/// Largest single file an archive may unpack to.
pub const MAX_FILE_BYTES: u64 = 16 << 30;
/// Most bytes one import may write in total: the outer archive plus every unpacked layer.
pub const MAX_TOTAL_UNPACKED_BYTES: u64 = 64 << 30;
/// Largest JSON document (index, manifest, config, manifest.json) read into memory.
pub const MAX_JSON_BYTES: u64 = 4 << 20;
/// Most images one import may declare.
pub const MAX_IMAGES_PER_IMPORT: usize = 1024;
/// Most layers one image may have; overlayfs mount options must fit in one page anyway.
pub const MAX_LAYERS_PER_IMAGE: usize = 128;
/// Most nested image indexes followed from `index.json`.
pub const MAX_INDEX_DEPTH: usize = 4;
/// Most symlinks followed while resolving one symlink target (Linux uses 40 as well).
pub const MAX_SYMLINK_HOPS: usize = 40;
/// Deepest directory tree walked when flattening or packing.
pub const MAX_TREE_DEPTH: usize = 512;

/// The limits one store applies to every import. `Limits::default()` uses the constants above;
/// tests and small nodes can lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_archive_entries: u64,
    pub max_file_bytes: u64,
    pub max_total_unpacked_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_archive_entries: MAX_ARCHIVE_ENTRIES,
            max_file_bytes: MAX_FILE_BYTES,
            max_total_unpacked_bytes: MAX_TOTAL_UNPACKED_BYTES,
        }
    }
}

/// What one import has spent so far against its [`Limits`].
#[derive(Debug)]
pub(crate) struct Budget {
    limits: Limits,
    written_bytes: u64,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            written_bytes: 0,
        }
    }

    /// Charges one file of `size_bytes` about to be written for `entry` of `origin`.
    pub(crate) fn charge_file(
        &mut self,
        origin: &str,
        entry: &str,
        size_bytes: u64,
    ) -> Result<(), ImageError> {
        if size_bytes > self.limits.max_file_bytes {
            return Err(ImageError::LimitExceeded {
                origin: origin.to_string(),
                what: format!("file \"{entry}\" of {size_bytes} bytes"),
                limit: self.limits.max_file_bytes,
                name: "MAX_FILE_BYTES",
            });
        }
        self.charge_bytes(origin, size_bytes)
    }

    /// Charges bytes read from a decompressed stream or written to disk.
    pub(crate) fn charge_bytes(&mut self, origin: &str, size_bytes: u64) -> Result<(), ImageError> {
        self.written_bytes = self.written_bytes.saturating_add(size_bytes);
        if self.written_bytes > self.limits.max_total_unpacked_bytes {
            return Err(ImageError::LimitExceeded {
                origin: origin.to_string(),
                what: format!("total unpacked size of {} bytes", self.written_bytes),
                limit: self.limits.max_total_unpacked_bytes,
                name: "MAX_TOTAL_UNPACKED_BYTES",
            });
        }
        Ok(())
    }

    /// Fails once an archive holds more than the allowed number of entries.
    pub(crate) fn check_entries(&self, origin: &str, entries: u64) -> Result<(), ImageError> {
        if entries > self.limits.max_archive_entries {
            return Err(ImageError::LimitExceeded {
                origin: origin.to_string(),
                what: "entry count".to_string(),
                limit: self.limits.max_archive_entries,
                name: "MAX_ARCHIVE_ENTRIES",
            });
        }
        Ok(())
    }
}
