//! Reading a `docker save` tree (`manifest.json`, `<id>.json` configs, layer tars, and the
//! legacy `repositories` file): configs are hashed, layers checked against the config's
//! diff_ids, and an OCI manifest is written for each image so the store holds one format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::super::digest::Digest;
use super::super::entry_path::normalize_entry_path;
use super::super::error::ImageError;
use super::super::fsutil::read_bounded;
use super::super::limits::{MAX_IMAGES_PER_IMPORT, MAX_JSON_BYTES};
use super::super::reference::ImageRef;
use super::super::spec::{
    ConfigFile, Descriptor, DockerManifestEntry, DockerRepositories, Manifest,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_TAR,
    MEDIA_TYPE_OCI_MANIFEST,
};
use super::stage::{check_digest, Compression, Expect, StagedImage, Staging};
use super::{diff_ids_of, parse_json, too_many_images};

const CONFIG_SUFFIX: &str = ".json";

/// Stages every image listed in `dir/manifest.json`.
pub(crate) fn read_docker_save(
    dir: &Path,
    staging: &mut Staging<'_>,
) -> Result<Vec<StagedImage>, ImageError> {
    let data = read_bounded(&dir.join("manifest.json"), MAX_JSON_BYTES, "manifest.json")?;
    let entries: Vec<DockerManifestEntry> = parse_json(&data, "manifest.json")?;
    if entries.len() > MAX_IMAGES_PER_IMPORT {
        return Err(too_many_images("manifest.json", entries.len()));
    }
    let repositories = read_repositories(dir)?;
    entries
        .iter()
        .map(|entry| stage_entry(dir, entry, &repositories, staging))
        .collect()
}

fn read_repositories(dir: &Path) -> Result<DockerRepositories, ImageError> {
    let path = dir.join("repositories");
    if !path.exists() {
        return Ok(BTreeMap::new());
    }
    parse_json(
        &read_bounded(&path, MAX_JSON_BYTES, "repositories")?,
        "repositories",
    )
}

fn stage_entry(
    dir: &Path,
    entry: &DockerManifestEntry,
    repositories: &DockerRepositories,
    staging: &mut Staging<'_>,
) -> Result<StagedImage, ImageError> {
    let config_data = read_bounded(&member(dir, &entry.config)?, MAX_JSON_BYTES, "image config")?;
    let config_digest = Digest::of_bytes(&config_data);
    let config_what = format!("image config {}", entry.config);
    if let Some(named) = digest_in_name(&entry.config) {
        check_digest(&config_what, &named, &config_digest)?;
    }
    staging.stage_bytes(&config_data, &config_digest)?;
    let config: ConfigFile = parse_json(&config_data, &config_what)?;
    let diff_ids = diff_ids_of(&config, &config_digest)?;
    if diff_ids.len() != entry.layers.len() {
        let reason = format!(
            "{} layers but the config lists {} diff_ids",
            entry.layers.len(),
            diff_ids.len()
        );
        return Err(ImageError::malformed(
            format!("manifest.json entry {}", entry.config),
            reason,
        ));
    }
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (layer_path, diff_id) in entry.layers.iter().zip(&diff_ids) {
        layers.push(stage_layer(dir, layer_path, diff_id, staging)?);
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_string()),
        config: Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            &config_digest,
            config_data.len() as u64,
        ),
        layers,
    };
    let manifest_data =
        serde_json::to_vec(&manifest).map_err(|source| ImageError::InvalidJson {
            file: format!("manifest for {}", entry.config),
            source,
        })?;
    let manifest_digest = Digest::of_bytes(&manifest_data);
    staging.stage_bytes(&manifest_data, &manifest_digest)?;
    Ok(StagedImage {
        manifest: manifest_digest,
        tags: tags_of(entry, repositories)?,
    })
}

fn stage_layer(
    dir: &Path,
    layer_path: &str,
    diff_id: &Digest,
    staging: &mut Staging<'_>,
) -> Result<Descriptor, ImageError> {
    let expect = Expect {
        digest: digest_in_name(layer_path),
        size_bytes: None,
    };
    let what = format!("layer {layer_path}");
    let (blob, size_bytes) = staging.stage_file(&member(dir, layer_path)?, &expect, &what)?;
    let media_type = match staging.stage_layer(&blob, "", diff_id)? {
        Compression::Gzip => MEDIA_TYPE_OCI_LAYER_GZIP,
        Compression::None => MEDIA_TYPE_OCI_LAYER_TAR,
    };
    Ok(Descriptor::new(media_type, &blob, size_bytes))
}

/// Tags from `RepoTags`, or else from `repositories` entries naming this image's top layer.
fn tags_of(
    entry: &DockerManifestEntry,
    repositories: &DockerRepositories,
) -> Result<Vec<ImageRef>, ImageError> {
    let repo_tags = entry.repo_tags.clone().unwrap_or_default();
    if !repo_tags.is_empty() {
        return repo_tags.iter().map(|t| ImageRef::parse(t)).collect();
    }
    let top_layer_id = entry
        .layers
        .last()
        .and_then(|l| Path::new(l).parent())
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    let mut tags = Vec::new();
    for (repository, tag_ids) in repositories {
        for (tag, id) in tag_ids {
            if Some(id) == top_layer_id.as_ref() {
                tags.push(ImageRef::parse(&format!("{repository}:{tag}"))?);
            }
        }
    }
    Ok(tags)
}

/// A file named in `manifest.json`, which must stay inside the archive.
fn member(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    match normalize_entry_path(name.as_bytes()) {
        Ok(rel) if !rel.as_os_str().is_empty() => Ok(dir.join(rel)),
        _ => Err(ImageError::malformed(
            "manifest.json",
            format!("path \"{name}\" is not inside the archive"),
        )),
    }
}

/// The digest a file name states: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let path = Path::new(name);
    let file_name = path.file_name()?.to_str()?;
    let in_blobs = path
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|p| p == "sha256");
    let hex = if in_blobs {
        file_name
    } else {
        file_name.strip_suffix(CONFIG_SUFFIX)?
    };
    Digest::from_hex(hex).ok()
}
