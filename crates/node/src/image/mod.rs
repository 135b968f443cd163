//! The node's image store: air-gapped side-loading of OCI images (OCI layout directories, OCI
//! archives, `docker save` archives) into a content-addressed, crash-safe store under the
//! agent's data directory, shared by all containers of the node.
//!
//! Codemap:
//! - `store` — [`ImageStore`]: layout, lock, `list`, `resolve`; `import/` — `import`;
//!   `gc` — `remove`, `gc`, `pin`.
//! - `unpack` + `entry_path` — the security boundary: safe tar unpacking, whiteouts.
//! - `flatten` — layers applied into one plain directory; `rootfs` — overlayfs or copy
//!   rootfs for a container; `pack` — a directory packed into an OCI archive.
//! - `config` — [`ImageConfig`] and [`resolve_argv`]; `reference` — name normalisation;
//!   `digest`, `spec`, `limits`, `error`, `fsutil` — shared pieces.
//!
//! Architecture invariant: nothing becomes visible in the store except by a rename out of
//! `tmp/` after every digest was verified, so a failed import changes nothing.
//! Architecture invariant: unpacking never follows a symlink on the host.

mod config;
mod digest;
mod entry_path;
mod error;
mod flatten;
mod fsutil;
mod gc;
mod import;
mod limits;
mod metered;
mod pack;
mod reference;
mod refs;
mod rootfs;
mod spec;
mod store;
mod unpack;

pub use config::{resolve_argv, ImageConfig};
pub use digest::Digest;
pub use error::{ImageError, UnsafeEntry};
pub use flatten::flatten_layers;
pub use gc::{GcReport, PinGuard};
pub use limits::{
    Limits, MAX_ARCHIVE_ENTRIES, MAX_FILE_BYTES, MAX_IMAGES_PER_IMPORT, MAX_INDEX_DEPTH,
    MAX_JSON_BYTES, MAX_LAYERS_PER_IMAGE, MAX_SYMLINK_HOPS, MAX_TOTAL_UNPACKED_BYTES,
    MAX_TREE_DEPTH,
};
pub use metered::MAX_ENTRY_METADATA_BYTES;
pub use pack::pack_directory;
pub use reference::ImageRef;
pub use rootfs::{prepare_rootfs, prepare_rootfs_with, Rootfs, RootfsKind, RootfsStrategy};
pub use store::{Image, ImageStore, ImageSummary};
