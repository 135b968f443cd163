//! Image references (`busybox`, `busybox:1.36`, `docker.io/library/busybox:latest`,
//! `name@sha256:…`, bare `sha256:…`) and their normalisation to one familiar form, so that the
//! short and the fully qualified Docker Hub spellings name the same image, as in Kubernetes.

use std::fmt;

use super::digest::Digest;
use super::error::ImageError;

const DEFAULT_TAG: &str = "latest";
const DOCKER_HUB_DOMAINS: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];
const DOCKER_HUB_OFFICIAL_PREFIX: &str = "library/";
/// Longest reference accepted, the limit Docker uses for a full name.
const MAX_REFERENCE_LEN: usize = 255;
/// Longest tag accepted (OCI distribution spec).
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference: either `name:tag` or a digest (optionally with a name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImageRef {
    Tagged {
        name: String,
        tag: String,
    },
    Digest {
        name: Option<String>,
        digest: Digest,
    },
}

impl ImageRef {
    /// Parses and normalises a reference: `busybox` → `busybox:latest`,
    /// `docker.io/library/busybox:latest` → `busybox:latest`.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageError> {
        let invalid = |reason| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason,
        };
        if reference.is_empty() || reference.len() > MAX_REFERENCE_LEN {
            return Err(invalid("must be 1 to 255 characters"));
        }
        if let Ok(digest) = Digest::parse(reference) {
            return Ok(ImageRef::Digest { name: None, digest });
        }
        if let Some((name_part, digest)) = reference.split_once('@') {
            let digest = Digest::parse(digest).map_err(|_| invalid("invalid digest after '@'"))?;
            let (name, _tag) = split_tag(name_part);
            let name = normalise_name(name).map_err(invalid)?;
            return Ok(ImageRef::Digest {
                name: Some(name),
                digest,
            });
        }
        let (name, tag) = split_tag(reference);
        let tag = tag.unwrap_or(DEFAULT_TAG);
        if !valid_tag(tag) {
            return Err(invalid("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
        }
        let name = normalise_name(name).map_err(invalid)?;
        Ok(ImageRef::Tagged {
            name,
            tag: tag.to_string(),
        })
    }

    /// The digest this reference pins, if it is a digest reference.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            ImageRef::Tagged { .. } => None,
            ImageRef::Digest { digest, .. } => Some(digest),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Tagged { name, tag } => write!(f, "{name}:{tag}"),
            ImageRef::Digest {
                name: Some(name),
                digest,
            } => write!(f, "{name}@{digest}"),
            ImageRef::Digest { name: None, digest } => write!(f, "{digest}"),
        }
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Splits `name[:tag]`; a colon before the last `/` belongs to a registry port, not a tag.
fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            Some(&reference[last_slash + i + 1..]),
        ),
        None => (reference, None),
    }
}

/// Drops the Docker Hub domain and its `library/` prefix, and validates every component.
fn normalise_name(name: &str) -> Result<String, &'static str> {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (Some(first), rest),
        _ => (None, name),
    };
    if let Some(domain) = domain {
        if !valid_domain(domain) {
            return Err("invalid registry domain");
        }
    }
    if path.is_empty() || !path.split('/').all(valid_path_component) {
        return Err("name components must be lowercase letters, digits and . _ - separators");
    }
    let on_docker_hub = domain.is_none_or(|d| DOCKER_HUB_DOMAINS.contains(&d));
    if !on_docker_hub {
        return Ok(format!("{}/{path}", domain.unwrap_or_default()));
    }
    match path.strip_prefix(DOCKER_HUB_OFFICIAL_PREFIX) {
        Some(official) if !official.contains('/') => Ok(official.to_string()),
        _ => Ok(path.to_string()),
    }
}

fn looks_like_domain(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn valid_path_component(component: &str) -> bool {
    let is_separator = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let bytes = component.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || is_separator(b))
        && !is_separator(bytes[0])
        && !is_separator(bytes[bytes.len() - 1])
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<&str>) {
        let got = ImageRef::parse(input).ok().map(|r| r.to_string());
        assert_eq!(got.as_deref(), expected, "parsing {input:?}");
    }

    #[test]
    fn normalises_to_the_familiar_form() {
        let hex = "0123456789abcdef".repeat(4);
        check("busybox", Some("busybox:latest"));
        check("busybox:1.36", Some("busybox:1.36"));
        check("docker.io/library/busybox:latest", Some("busybox:latest"));
        check("index.docker.io/library/busybox", Some("busybox:latest"));
        check("library/busybox", Some("busybox:latest"));
        check("docker.io/someone/app:v1", Some("someone/app:v1"));
        check(
            "registry.local:5000/team/app",
            Some("registry.local:5000/team/app:latest"),
        );
        check("localhost/app:dev", Some("localhost/app:dev"));
        check(
            &format!("busybox@sha256:{hex}"),
            Some(&format!("busybox@sha256:{hex}")),
        );
        check(
            &format!("busybox:1@sha256:{hex}"),
            Some(&format!("busybox@sha256:{hex}")),
        );
        check(&format!("sha256:{hex}"), Some(&format!("sha256:{hex}")));
    }

    #[test]
    fn refuses_malformed_references() {
        check("", None);
        check("BusyBox", None);
        check("busybox:", None);
        check("busybox:-bad", None);
        check("a//b", None);
        check("-app", None);
        check("busybox@sha256:short", None);
        check(&"a".repeat(300), None);
    }
}
