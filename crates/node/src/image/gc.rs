//! Removing references and garbage-collecting what no reference or running container needs:
//! the in-use registry ([`ImageStore::pin`] → [`PinGuard`]) and the mark-and-sweep over
//! `blobs/` and `layers/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::{Arc, Mutex};

use super::digest::Digest;
use super::error::{ImageError, IoContext};
use super::fsutil::{fsync_dir, sorted_names};
use super::reference::ImageRef;
use super::refs::Refs;
use super::spec::{ConfigFile, Manifest};
use super::store::{Image, ImageStore};

/// Images in use by container root filesystems: manifest digest → number of pins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pins(Arc<Mutex<BTreeMap<Digest, usize>>>);

impl Pins {
    fn add(&self, digest: &Digest) {
        *self.lock().entry(digest.clone()).or_default() += 1;
    }

    fn release(&self, digest: &Digest) {
        let mut pins = self.lock();
        if let Some(count) = pins.get_mut(digest) {
            *count -= 1;
            if *count == 0 {
                pins.remove(digest);
            }
        }
    }

    fn snapshot(&self) -> BTreeSet<Digest> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Digest, usize>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps an image's blobs and layers from garbage collection while held (a container runs on
/// them). Dropping it makes them collectable by the next `remove` or `gc`.
#[derive(Debug)]
pub struct PinGuard {
    pins: Pins,
    digest: Digest,
}

impl PinGuard {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        self.pins.release(&self.digest);
    }
}

/// What one garbage collection deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: usize,
    pub removed_layers: usize,
}

impl ImageStore {
    /// Marks `image` as in use until the guard is dropped.
    pub fn pin(&self, image: &Image) -> PinGuard {
        self.pins.add(&image.digest);
        PinGuard {
            pins: self.pins.clone(),
            digest: image.digest.clone(),
        }
    }

    /// Removes a reference (a tag, or all tags of `sha256:…`), then collects what is no longer
    /// referenced or pinned.
    pub fn remove(&self, reference: &str) -> Result<GcReport, ImageError> {
        let parsed = ImageRef::parse(reference)?;
        let _no_imports = self.collector_guard();
        let _guard = self.lock();
        let mut refs = Refs::load(&self.paths.refs)?;
        if !refs.remove(&parsed) {
            return Err(ImageError::NotFound {
                reference: reference.to_string(),
            });
        }
        refs.save(&self.paths.refs, &self.paths.tmp)?;
        self.collect_garbage(&refs)
    }

    /// Deletes every blob and layer that no reference and no pin needs.
    pub fn gc(&self) -> Result<GcReport, ImageError> {
        let _no_imports = self.collector_guard();
        let _guard = self.lock();
        let refs = Refs::load(&self.paths.refs)?;
        self.collect_garbage(&refs)
    }

    fn collect_garbage(&self, refs: &Refs) -> Result<GcReport, ImageError> {
        let mut live_blobs = BTreeSet::new();
        let mut live_layers = BTreeSet::new();
        for digest in refs.roots().union(&self.pins.snapshot()) {
            self.mark(digest, &mut live_blobs, &mut live_layers)?;
        }
        let removed_blobs = self.sweep_blobs(&live_blobs)?;
        let removed_layers = self.sweep_layers(&live_layers)?;
        Ok(GcReport {
            removed_blobs,
            removed_layers,
        })
    }

    /// Adds what image `digest` needs to the live sets. Any unreadable root aborts the
    /// collection: deleting on partial knowledge could remove a running container's layers.
    fn mark(
        &self,
        digest: &Digest,
        live_blobs: &mut BTreeSet<String>,
        live_layers: &mut BTreeSet<String>,
    ) -> Result<(), ImageError> {
        let manifest: Manifest = self.paths.read_json(digest, "manifest")?;
        let config_digest = Digest::parse(&manifest.config.digest)?;
        let config: ConfigFile = self.paths.read_json(&config_digest, "image config")?;
        live_blobs.insert(digest.hex().to_string());
        live_blobs.insert(config_digest.hex().to_string());
        for layer in &manifest.layers {
            live_blobs.insert(Digest::parse(&layer.digest)?.hex().to_string());
        }
        for diff_id in &config.rootfs.diff_ids {
            live_layers.insert(Digest::parse(diff_id)?.hex().to_string());
        }
        Ok(())
    }

    fn sweep_blobs(&self, live: &BTreeSet<String>) -> Result<usize, ImageError> {
        let mut removed = 0;
        for name in sorted_names(&self.paths.blobs)? {
            if live.contains(name.to_string_lossy().as_ref()) {
                continue;
            }
            let path = self.paths.blobs.join(&name);
            fs::remove_file(&path).ctx("removing blob", &path)?;
            removed += 1;
        }
        fsync_dir(&self.paths.blobs)?;
        Ok(removed)
    }

    /// Layer trees vanish atomically: renamed into `tmp/` first, then deleted.
    fn sweep_layers(&self, live: &BTreeSet<String>) -> Result<usize, ImageError> {
        let mut removed = 0;
        for name in sorted_names(&self.paths.layers)? {
            if live.contains(name.to_string_lossy().as_ref()) {
                continue;
            }
            let path = self.paths.layers.join(&name);
            let doomed = self
                .paths
                .tmp
                .join(format!("gc-{}", name.to_string_lossy()));
            fs::rename(&path, &doomed).ctx("retiring layer", &path)?;
            fs::remove_dir_all(&doomed).ctx("removing layer", &doomed)?;
            removed += 1;
        }
        fsync_dir(&self.paths.layers)?;
        Ok(removed)
    }
}
