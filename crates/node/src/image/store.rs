//! [`ImageStore`]: opening the on-disk store, its layout and lock, and the read side
//! (`list`, `resolve`). Imports live in `import/`, removal and garbage collection in `gc.rs`.
//!
//! Layout under the root:
//! - `blobs/sha256/<hex>`: manifests, configs and layer blobs, named by their verified digest;
//! - `layers/<diff-id hex>/`: unpacked layer trees in overlayfs form, shared by all images;
//! - `refs.json`: tags → manifest digests (the garbage-collection roots);
//! - `tmp/`: staging; everything becomes visible by a rename out of it, and it is emptied on
//!   open, so a crash leaves at worst unreferenced objects for the next `gc`;
//! - `lock`: held (flock) by the one process that owns the store.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;

use super::config::ImageConfig;
use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::fsutil::{clear_dir, read_bounded};
use super::gc::{PinGuard, Pins};
use super::limits::{Limits, MAX_JSON_BYTES};
use super::reference::ImageRef;
use super::refs::Refs;
use super::spec::{ConfigFile, Manifest};

/// How often [`ImageStore::open_waiting`] tries the lock again.
pub const STORE_LOCK_POLL: Duration = Duration::from_millis(100);

/// An image ready to run: its manifest digest, how to run it, and its unpacked layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Digest of the manifest: the image's identity.
    pub digest: Digest,
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Uncompressed layer digests, bottom layer first.
    pub diff_ids: Vec<Digest>,
    /// Unpacked layer directories in overlayfs form, bottom layer first.
    pub layer_dirs: Vec<PathBuf>,
}

/// One image as `list` and `import` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub digest: Digest,
    /// Normalised `name:tag` references, sorted; empty for an untagged image.
    pub tags: Vec<String>,
    pub config_digest: Digest,
    pub layer_count: usize,
    /// Sum of the layer blob sizes as stored (compressed where the image was).
    pub size_bytes: u64,
}

/// Paths of the store layout.
#[derive(Debug, Clone)]
pub(crate) struct StorePaths {
    pub(crate) root: PathBuf,
    pub(crate) blobs: PathBuf,
    pub(crate) layers: PathBuf,
    pub(crate) tmp: PathBuf,
    pub(crate) refs: PathBuf,
}

impl StorePaths {
    fn new(root: &Path) -> StorePaths {
        StorePaths {
            root: root.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers"),
            tmp: root.join("tmp"),
            refs: root.join("refs.json"),
        }
    }

    pub(crate) fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub(crate) fn layer(&self, diff_id: &Digest) -> PathBuf {
        self.layers.join(diff_id.hex())
    }

    /// Reads and parses a JSON blob of the store.
    pub(crate) fn read_json<T: DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<T, ImageError> {
        let path = self.blob(digest);
        if !path.exists() {
            return Err(ImageError::MissingBlob {
                what: what.to_string(),
                digest: digest.clone(),
            });
        }
        let data = read_bounded(&path, MAX_JSON_BYTES, what)?;
        serde_json::from_slice(&data).map_err(|source| ImageError::InvalidJson {
            file: format!("{what} {digest}"),
            source,
        })
    }
}

/// The content-addressed image store of one node. Safe to share between threads, and one
/// process at a time may open a root.
///
/// Locking: `lock` serialises short critical sections (reading or replacing `refs.json`,
/// publishing staged objects). Imports stage for a long time without it, holding
/// `collector` shared so that no garbage collection deletes an object an import found in
/// the store and decided not to stage again; `remove` and `gc` hold `collector` exclusively.
/// Order: `collector` before `lock`.
pub struct ImageStore {
    pub(crate) paths: StorePaths,
    pub(crate) limits: Limits,
    pub(crate) pins: Pins,
    lock: Mutex<()>,
    collector: RwLock<()>,
    _owner: Flock<File>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` with the default [`Limits`].
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        ImageStore::open_with_limits(root, Limits::default())
    }

    /// Opens the store at `root`, waiting up to `wait` while another process holds it (an
    /// `image import` into a stopped node's store takes seconds): polls every
    /// [`STORE_LOCK_POLL`] and gives up with [`ImageError::StoreLocked`].
    pub fn open_waiting(root: &Path, wait: Duration) -> Result<ImageStore, ImageError> {
        let deadline = Instant::now() + wait;
        let mut logged = false;
        loop {
            match ImageStore::open(root) {
                Err(ImageError::StoreLocked { .. }) if Instant::now() < deadline => {
                    if !logged {
                        tracing::info!(
                            store = %root.display(),
                            wait_s = wait.as_secs(),
                            "image store held by another process; waiting for it"
                        );
                        logged = true;
                    }
                    std::thread::sleep(STORE_LOCK_POLL);
                }
                opened => return opened,
            }
        }
    }

    /// Opens the store with explicit import limits.
    pub fn open_with_limits(root: &Path, limits: Limits) -> Result<ImageStore, ImageError> {
        let paths = StorePaths::new(root);
        for dir in [&paths.blobs, &paths.layers, &paths.tmp] {
            fs::create_dir_all(dir).ctx("creating store directory", dir)?;
        }
        let lock_path = root.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx("opening", &lock_path)?;
        let owner = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(owner) => owner,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(ImageError::StoreLocked {
                    root: root.to_path_buf(),
                })
            }
            Err((_, errno)) => return Err(ImageError::sys("locking", &lock_path, errno)),
        };
        // Leftovers of an import or gc that crashed: never visible, safe to drop.
        clear_dir(&paths.tmp)?;
        Ok(ImageStore {
            paths,
            limits,
            pins: Pins::default(),
            lock: Mutex::new(()),
            collector: RwLock::new(()),
            _owner: owner,
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.paths.root
    }

    /// Every image some reference keeps, sorted by digest.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let _guard = self.lock();
        let refs = Refs::load(&self.paths.refs)?;
        refs.roots()
            .iter()
            .map(|d| self.summary(d, &refs))
            .collect()
    }

    /// Looks up a reference (`busybox`, `busybox:1.36`, `name@sha256:…`, `sha256:…`).
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let _guard = self.lock();
        self.resolve_locked(reference)
    }

    /// Resolves and pins in one step, so no `remove` can collect the layers in between: what
    /// the runtime calls before `prepare_rootfs`.
    pub fn acquire(&self, reference: &str) -> Result<(Image, PinGuard), ImageError> {
        let _guard = self.lock();
        let image = self.resolve_locked(reference)?;
        let pin = self.pin(&image);
        Ok((image, pin))
    }

    fn resolve_locked(&self, reference: &str) -> Result<Image, ImageError> {
        let parsed = ImageRef::parse(reference)?;
        let refs = Refs::load(&self.paths.refs)?;
        let digest = refs.lookup(&parsed).ok_or_else(|| ImageError::NotFound {
            reference: reference.to_string(),
        })?;
        self.load_image(&digest)
    }

    /// Reads an image's manifest and config and checks its layers are unpacked.
    pub(crate) fn load_image(&self, digest: &Digest) -> Result<Image, ImageError> {
        let manifest: Manifest = self.paths.read_json(digest, "manifest")?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        let config: ConfigFile = self.paths.read_json(&config_digest, "image config")?;
        let diff_ids = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        let layer_dirs: Vec<PathBuf> = diff_ids.iter().map(|d| self.paths.layer(d)).collect();
        if let Some(missing) = layer_dirs.iter().find(|dir| !dir.is_dir()) {
            return Err(ImageError::Corrupt {
                reason: format!(
                    "image {digest}: layer directory {} is missing",
                    missing.display()
                ),
            });
        }
        Ok(Image {
            digest: digest.clone(),
            config_digest,
            config: ImageConfig::from_file(&config),
            diff_ids,
            layer_dirs,
        })
    }

    pub(crate) fn summary(&self, digest: &Digest, refs: &Refs) -> Result<ImageSummary, ImageError> {
        let manifest: Manifest = self.paths.read_json(digest, "manifest")?;
        Ok(ImageSummary {
            digest: digest.clone(),
            tags: refs.tags_of(digest),
            config_digest: Digest::parse(&manifest.config.digest)?,
            layer_count: manifest.layers.len(),
            size_bytes: manifest.layers.iter().map(|l| l.size).sum(),
        })
    }

    /// The short mutation lock. The data is on disk, so a panic elsewhere while holding it
    /// leaves nothing half-updated in memory: a poisoned lock is taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held by an import for its whole duration: garbage collection waits for it.
    pub(crate) fn import_guard(&self) -> RwLockReadGuard<'_, ()> {
        self.collector
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Held by garbage collection: waits for running imports and keeps new ones out.
    pub(crate) fn collector_guard(&self) -> RwLockWriteGuard<'_, ()> {
        self.collector
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
