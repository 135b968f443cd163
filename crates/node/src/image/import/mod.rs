//! `ImageStore::import`: side-loading images from files (OCI layout directory, OCI archive,
//! `docker save` archive). Everything is staged and verified under `tmp/` first and published
//! by renames only when the whole import succeeded.

mod docker;
mod oci;
mod source;
mod stage;

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::digest::Digest;
use super::error::ImageError;
use super::limits::{MAX_IMAGES_PER_IMPORT, MAX_LAYERS_PER_IMAGE};
use super::refs::Refs;
use super::spec::ConfigFile;
use super::store::{ImageStore, ImageSummary};
use source::{open_source, Format};
use stage::{StagedImage, Staging};

pub(crate) use oci::host_architecture;

impl ImageStore {
    /// Imports every image found at `path` and returns them as now stored. On any error the
    /// store is left exactly as it was. Staging runs without the store lock, so lookups and
    /// other imports proceed meanwhile; only `remove` and `gc` wait.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageSummary>, ImageError> {
        let _no_collection = self.import_guard();
        let mut staging = Staging::new(&self.paths, self.limits)?;
        let (dir, format) = open_source(path, &mut staging)?;
        let images = match format {
            Format::OciLayout => oci::read_oci_layout(&dir, &mut staging)?,
            Format::DockerSave => docker::read_docker_save(&dir, &mut staging)?,
        };
        let images = merge_duplicates(images);
        let _guard = self.lock();
        staging.commit(&images)?;
        let refs = Refs::load(&self.paths.refs)?;
        images
            .iter()
            .map(|image| self.summary(&image.manifest, &refs))
            .collect()
    }
}

/// One entry per manifest, with the union of the tags that named it.
fn merge_duplicates(images: Vec<StagedImage>) -> Vec<StagedImage> {
    let mut merged: BTreeMap<Digest, StagedImage> = BTreeMap::new();
    for image in images {
        let slot = merged
            .entry(image.manifest.clone())
            .or_insert_with(|| StagedImage {
                manifest: image.manifest.clone(),
                tags: Vec::new(),
            });
        for tag in image.tags {
            if !slot.tags.contains(&tag) {
                slot.tags.push(tag);
            }
        }
    }
    merged.into_values().collect()
}

pub(crate) fn parse_json<T: DeserializeOwned>(data: &[u8], file: &str) -> Result<T, ImageError> {
    serde_json::from_slice(data).map_err(|source| ImageError::InvalidJson {
        file: file.to_string(),
        source,
    })
}

/// The config's `rootfs.diff_ids`, parsed and bounded.
pub(crate) fn diff_ids_of(
    config: &ConfigFile,
    config_digest: &Digest,
) -> Result<Vec<Digest>, ImageError> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() > MAX_LAYERS_PER_IMAGE {
        return Err(ImageError::LimitExceeded {
            origin: format!("image config {config_digest}"),
            what: format!("{} layers", diff_ids.len()),
            limit: MAX_LAYERS_PER_IMAGE as u64,
            name: "MAX_LAYERS_PER_IMAGE",
        });
    }
    diff_ids.iter().map(|d| Digest::parse(d)).collect()
}

pub(crate) fn too_many_images(file: &str, count: usize) -> ImageError {
    ImageError::LimitExceeded {
        origin: file.to_string(),
        what: format!("{count} images"),
        limit: MAX_IMAGES_PER_IMPORT as u64,
        name: "MAX_IMAGES_PER_IMPORT",
    }
}
