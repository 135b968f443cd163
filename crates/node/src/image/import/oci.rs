//! Reading an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`): every manifest
//! the index names (following nested image indexes to this host's platform), with every blob
//! checked against its descriptor and every layer against the config's diff_ids.

use std::path::{Path, PathBuf};

use super::super::digest::Digest;
use super::super::error::ImageError;
use super::super::fsutil::read_bounded;
use super::super::limits::{MAX_IMAGES_PER_IMPORT, MAX_INDEX_DEPTH, MAX_JSON_BYTES};
use super::super::reference::ImageRef;
use super::super::spec::{
    ConfigFile, Descriptor, Index, Manifest, OciLayout, ANNOTATION_CONTAINERD_IMAGE_NAME,
    ANNOTATION_REF_NAME, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use super::stage::{check_digest, Expect, StagedImage, Staging};
use super::{diff_ids_of, parse_json, too_many_images};

const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Stages every image of the layout at `layout`.
pub(crate) fn read_oci_layout(
    layout: &Path,
    staging: &mut Staging<'_>,
) -> Result<Vec<StagedImage>, ImageError> {
    let marker: OciLayout = parse_json(
        &read_bounded(&layout.join("oci-layout"), MAX_JSON_BYTES, "oci-layout")?,
        "oci-layout",
    )?;
    if !marker.image_layout_version.starts_with("1.") {
        let reason = format!(
            "unsupported imageLayoutVersion {}",
            marker.image_layout_version
        );
        return Err(ImageError::malformed("oci-layout", reason));
    }
    let index: Index = parse_json(
        &read_bounded(&layout.join("index.json"), MAX_JSON_BYTES, "index.json")?,
        "index.json",
    )?;
    if index.manifests.len() > MAX_IMAGES_PER_IMPORT {
        return Err(too_many_images("index.json", index.manifests.len()));
    }
    let mut images = Vec::with_capacity(index.manifests.len());
    for descriptor in &index.manifests {
        let tags = tags_of(descriptor)?;
        let manifest = select_manifest(layout, descriptor, staging, 0)?;
        stage_image(layout, &manifest, staging)?;
        images.push(StagedImage { manifest, tags });
    }
    Ok(images)
}

/// The tag an index entry carries: containerd's full name if present, else the OCI ref name.
fn tags_of(descriptor: &Descriptor) -> Result<Vec<ImageRef>, ImageError> {
    let annotations = &descriptor.annotations;
    let name = annotations
        .get(ANNOTATION_CONTAINERD_IMAGE_NAME)
        .or_else(|| annotations.get(ANNOTATION_REF_NAME));
    name.map(|n| ImageRef::parse(n)).into_iter().collect()
}

/// Follows `descriptor` through nested indexes to an image manifest, staging each document.
fn select_manifest(
    layout: &Path,
    descriptor: &Descriptor,
    staging: &mut Staging<'_>,
    depth: usize,
) -> Result<Digest, ImageError> {
    if depth > MAX_INDEX_DEPTH {
        return Err(ImageError::malformed(
            "index.json",
            format!("image indexes nest deeper than {MAX_INDEX_DEPTH}"),
        ));
    }
    let (digest, data) = read_json_blob(layout, descriptor, staging, "manifest")?;
    match document_kind(&descriptor.media_type, &data) {
        Some(DocumentKind::Manifest) => Ok(digest),
        Some(DocumentKind::Index) => {
            let index: Index = parse_json(&data, &format!("image index {digest}"))?;
            let chosen = choose_platform(&index.manifests, &digest)?;
            select_manifest(layout, chosen, staging, depth + 1)
        }
        None => Err(ImageError::UnsupportedMediaType {
            what: format!("index entry {digest}"),
            media_type: descriptor.media_type.clone(),
        }),
    }
}

enum DocumentKind {
    Index,
    Manifest,
}

fn document_kind(media_type: &str, data: &[u8]) -> Option<DocumentKind> {
    match media_type {
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => Some(DocumentKind::Index),
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => Some(DocumentKind::Manifest),
        "" => {
            let value: serde_json::Value = serde_json::from_slice(data).ok()?;
            if value.get("manifests").is_some() {
                Some(DocumentKind::Index)
            } else {
                value.get("layers").map(|_| DocumentKind::Manifest)
            }
        }
        _ => None,
    }
}

/// Picks the manifest for this host (linux on this architecture) from a multi-platform index.
fn choose_platform<'a>(
    manifests: &'a [Descriptor],
    index: &Digest,
) -> Result<&'a Descriptor, ImageError> {
    let arch = host_architecture();
    let matching = manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    });
    match (matching, manifests) {
        (Some(chosen), _) => Ok(chosen),
        (None, [only]) => Ok(only),
        (None, _) => Err(ImageError::malformed(
            format!("image index {index}"),
            format!("no manifest for platform linux/{arch}"),
        )),
    }
}

/// This host's architecture in OCI spelling.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Stages the config and layers of the (already staged) image manifest `digest`.
fn stage_image(
    layout: &Path,
    digest: &Digest,
    staging: &mut Staging<'_>,
) -> Result<(), ImageError> {
    let what = format!("manifest {digest}");
    let manifest: Manifest = parse_json(&staging.read_blob(digest, &what)?, &what)?;
    let config_type = manifest.config.media_type.as_str();
    if ![MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG, ""].contains(&config_type) {
        return Err(ImageError::UnsupportedMediaType {
            what: format!("{what}: config"),
            media_type: config_type.to_string(),
        });
    }
    let (config_digest, config_data) =
        read_json_blob(layout, &manifest.config, staging, "image config")?;
    let config: ConfigFile = parse_json(&config_data, &format!("image config {config_digest}"))?;
    let diff_ids = diff_ids_of(&config, &config_digest)?;
    if diff_ids.len() != manifest.layers.len() {
        let reason = format!(
            "{} layers but the config lists {} diff_ids",
            manifest.layers.len(),
            diff_ids.len()
        );
        return Err(ImageError::malformed(what, reason));
    }
    for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
        let blob = Digest::parse(&layer.digest)?;
        let layer_what = format!("layer {}", blob.short());
        let src = blob_file(layout, &blob);
        if !src.is_file() && staging.blob_path(&blob).is_none() {
            return Err(ImageError::MissingBlob { what, digest: blob });
        }
        let expect = Expect {
            digest: Some(blob.clone()),
            size_bytes: Some(layer.size),
        };
        staging.stage_file(&src, &expect, &layer_what)?;
        staging.stage_layer(&blob, &layer.media_type, diff_id)?;
    }
    Ok(())
}

/// Reads a JSON blob named by `descriptor` from the layout (or, if the layout lacks it, from
/// the store), verifies size and digest, and stages it.
fn read_json_blob(
    layout: &Path,
    descriptor: &Descriptor,
    staging: &mut Staging<'_>,
    what: &str,
) -> Result<(Digest, Vec<u8>), ImageError> {
    let digest = Digest::parse(&descriptor.digest)?;
    let what = format!("{what} {digest}");
    let src = blob_file(layout, &digest);
    if !src.exists() {
        return Ok((digest.clone(), staging.read_blob(&digest, &what)?));
    }
    let data = read_bounded(&src, MAX_JSON_BYTES, &what)?;
    if data.len() as u64 != descriptor.size {
        return Err(ImageError::SizeMismatch {
            what,
            expected_bytes: descriptor.size,
            actual_bytes: data.len() as u64,
        });
    }
    check_digest(&what, &digest, &Digest::of_bytes(&data))?;
    staging.stage_bytes(&data, &digest)?;
    Ok((digest, data))
}

fn blob_file(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs").join("sha256").join(digest.hex())
}
