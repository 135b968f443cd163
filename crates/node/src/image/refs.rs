//! `refs.json`: which manifest each tag names, plus images imported without a tag. It is the
//! root set of garbage collection and is replaced atomically (write in `tmp/`, rename).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::ImageError;
use super::fsutil::write_atomic;
use super::limits::MAX_JSON_BYTES;
use super::reference::ImageRef;

/// The tag table of the store.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Refs {
    /// `name:tag` (normalised) → manifest digest.
    tags: BTreeMap<String, Digest>,
    /// Manifests imported without any tag; listed and removable by digest.
    untagged: BTreeSet<Digest>,
}

impl Refs {
    /// Loads `refs.json`; a missing file is an empty table (a new store).
    pub(crate) fn load(path: &Path) -> Result<Refs, ImageError> {
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Refs::default()),
            Err(e) => return Err(ImageError::io("reading", path, e)),
        };
        if data.len() as u64 > MAX_JSON_BYTES * 16 {
            return Err(ImageError::Corrupt {
                reason: format!("{} is implausibly large", path.display()),
            });
        }
        serde_json::from_slice(&data).map_err(|source| ImageError::InvalidJson {
            file: path.display().to_string(),
            source,
        })
    }

    /// Replaces `path` with this table, crash-safely.
    pub(crate) fn save(&self, path: &Path, tmp_dir: &Path) -> Result<(), ImageError> {
        let data = serde_json::to_vec_pretty(self)
            .map_err(|e| ImageError::io("encoding", path, e.into()))?;
        write_atomic(tmp_dir, path, &data)
    }

    /// Points `reference` (a tag) at `digest`, or records `digest` as untagged when `None`.
    pub(crate) fn add(&mut self, reference: Option<&ImageRef>, digest: &Digest) {
        match reference {
            Some(ImageRef::Tagged { .. }) => {
                self.tags.insert(
                    reference.map(ToString::to_string).unwrap_or_default(),
                    digest.clone(),
                );
                self.untagged.remove(digest);
            }
            _ if self.tags_of(digest).is_empty() => {
                self.untagged.insert(digest.clone());
            }
            _ => {}
        }
    }

    /// The manifest a reference names, if the table holds it.
    pub(crate) fn lookup(&self, reference: &ImageRef) -> Option<Digest> {
        match reference {
            ImageRef::Tagged { .. } => self.tags.get(&reference.to_string()).cloned(),
            ImageRef::Digest { digest, .. } => {
                self.roots().contains(digest).then(|| digest.clone())
            }
        }
    }

    /// Drops a reference: a tag, or every tag of a digest. Returns false if nothing matched.
    pub(crate) fn remove(&mut self, reference: &ImageRef) -> bool {
        match reference {
            ImageRef::Tagged { .. } => self.tags.remove(&reference.to_string()).is_some(),
            ImageRef::Digest { digest, .. } => {
                let before = self.tags.len();
                self.tags.retain(|_, d| d != digest);
                let untagged = self.untagged.remove(digest);
                untagged || self.tags.len() != before
            }
        }
    }

    /// Every manifest some reference keeps alive.
    pub(crate) fn roots(&self) -> BTreeSet<Digest> {
        self.tags.values().chain(&self.untagged).cloned().collect()
    }

    /// The tags naming `digest`, sorted.
    pub(crate) fn tags_of(&self, digest: &Digest) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(tag, _)| tag.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_moves_and_untagged_images_stay_listed() {
        let (a, b) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));
        let busybox = ImageRef::parse("busybox").unwrap();
        let mut refs = Refs::default();
        refs.add(Some(&busybox), &a);
        refs.add(None, &b);
        assert_eq!(
            refs.lookup(&ImageRef::parse("docker.io/library/busybox:latest").unwrap()),
            Some(a.clone())
        );
        refs.add(Some(&busybox), &b);
        assert_eq!(refs.roots(), BTreeSet::from([b.clone()]));
        assert!(refs.remove(&ImageRef::Digest {
            name: None,
            digest: b
        }));
        assert!(refs.roots().is_empty());
    }
}
