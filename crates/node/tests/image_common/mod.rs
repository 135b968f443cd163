//! Shared helpers of the image store tests: building layers (including malicious entries) with
//! the `tar` crate, writing images as an OCI layout directory, OCI archive or `docker save`
//! archive, and snapshotting a store's files to prove a failed import changed nothing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use flotilla_node::image::Digest;
use serde_json::json;
use tar::{Builder, EntryType, Header};

/// Builds one layer tar in memory, entry by entry, in the order given.
#[derive(Default)]
pub struct Layer {
    builder: Option<Builder<Vec<u8>>>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            builder: Some(Builder::new(Vec::new())),
        }
    }

    pub fn dir(self, name: &str) -> Layer {
        self.raw(name, EntryType::Directory, b"", None, 0o755)
    }

    pub fn file(self, name: &str, content: &str) -> Layer {
        self.raw(name, EntryType::Regular, content.as_bytes(), None, 0o644)
    }

    pub fn file_bytes(self, name: &str, content: &[u8]) -> Layer {
        self.raw(name, EntryType::Regular, content, None, 0o644)
    }

    pub fn symlink(self, name: &str, target: &str) -> Layer {
        self.raw(name, EntryType::Symlink, b"", Some(target), 0o777)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Layer {
        self.raw(name, EntryType::Link, b"", Some(target), 0o644)
    }

    pub fn device(self, name: &str, entry_type: EntryType) -> Layer {
        self.raw(name, entry_type, b"", None, 0o600)
    }

    /// A regular file whose path is `path_bytes` long, written with a GNU long-name header.
    pub fn long_name_file(mut self, path_bytes: usize) -> Layer {
        let component = format!("{}/", "d".repeat(99));
        let path: String =
            component.repeat(path_bytes / component.len() + 1)[..path_bytes].to_string();
        let mut header = Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        let builder = self.builder.as_mut().unwrap();
        builder
            .append_data(&mut header, path.trim_end_matches('/'), &[][..])
            .unwrap();
        self
    }

    /// A PAX extended header applying `records` to the next entry.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Layer {
        let mut data = Vec::new();
        for (key, value) in records {
            let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw("PaxHeaders/next", EntryType::XHeader, &data, None, 0o644)
    }

    /// Writes the entry name bytes verbatim (no sanitising), so hostile names reach the reader.
    pub fn raw(
        mut self,
        name: &str,
        entry_type: EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> Layer {
        let mut header = Header::new_gnu();
        let slot = &mut header.as_old_mut().name;
        assert!(
            name.len() < slot.len(),
            "test entry names must fit the header"
        );
        slot[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_entry_type(entry_type);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        self.builder
            .as_mut()
            .unwrap()
            .append(&header, data)
            .unwrap();
        self
    }

    pub fn tar(mut self) -> Vec<u8> {
        self.builder.take().unwrap().into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A blob as it will be written: bytes, digest, media type.
#[derive(Clone)]
pub struct Blob {
    pub data: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
}

impl Blob {
    pub fn new(data: Vec<u8>, media_type: &str) -> Blob {
        Blob {
            digest: Digest::of_bytes(&data),
            data,
            media_type: media_type.to_string(),
        }
    }
}

/// An image to write in one of the import formats.
#[derive(Clone)]
pub struct TestImage {
    pub tags: Vec<String>,
    pub layers: Vec<Blob>,
    pub diff_ids: Vec<Digest>,
    pub config: Blob,
    pub manifest: Blob,
}

impl TestImage {
    /// An image of `layer_tars` (bottom first), gzip-compressed when `gzip_layers`.
    pub fn new(tags: &[&str], layer_tars: Vec<Vec<u8>>, gzip_layers: bool) -> TestImage {
        let diff_ids: Vec<Digest> = layer_tars.iter().map(|t| Digest::of_bytes(t)).collect();
        let layers = layer_tars
            .into_iter()
            .map(|tar| match gzip_layers {
                true => Blob::new(gzip(&tar), "application/vnd.oci.image.layer.v1.tar+gzip"),
                false => Blob::new(tar, "application/vnd.oci.image.layer.v1.tar"),
            })
            .collect();
        let mut image = TestImage {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            layers,
            diff_ids,
            config: Blob::new(Vec::new(), ""),
            manifest: Blob::new(Vec::new(), ""),
        };
        image.rebuild();
        image
    }

    /// Recomputes config and manifest after a test changed layers or diff_ids.
    pub fn rebuild(&mut self) {
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/app"],
                "Cmd": ["--serve"],
                "Env": ["PATH=/bin", "MODE=test"],
                "WorkingDir": "/srv",
                "User": "1000:1000",
                "ExposedPorts": {"8080/tcp": {}},
                "Labels": {"team": "flotilla"}
            },
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}
        });
        self.config = Blob::new(
            serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let layers: Vec<_> = self.layers.iter().map(descriptor).collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor(&self.config),
            "layers": layers,
        });
        self.manifest = Blob::new(
            serde_json::to_vec(&manifest).unwrap(),
            "application/vnd.oci.image.manifest.v1+json",
        );
    }
}

fn descriptor(blob: &Blob) -> serde_json::Value {
    json!({"mediaType": blob.media_type, "digest": blob.digest.to_string(), "size": blob.data.len()})
}

/// Writes `images` as an OCI image layout directory at `dir`.
pub fn write_oci_layout(dir: &Path, images: &[TestImage]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut manifests = Vec::new();
    for image in images {
        for blob in image.layers.iter().chain([&image.config, &image.manifest]) {
            fs::write(blobs.join(blob.digest.hex()), &blob.data).unwrap();
        }
        let tags: Vec<Option<&String>> = match image.tags.is_empty() {
            true => vec![None],
            false => image.tags.iter().map(Some).collect(),
        };
        for tag in tags {
            let mut entry = descriptor(&image.manifest);
            if let Some(tag) = tag {
                entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
            }
            manifests.push(entry);
        }
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Tars up directory `dir` (files and directories only) into `out`, gzip-compressed if asked.
pub fn tar_directory(dir: &Path, out: &Path, compress: bool) {
    let mut builder = Builder::new(Vec::new());
    builder.append_dir_all(".", dir).unwrap();
    let data = builder.into_inner().unwrap();
    fs::write(out, if compress { gzip(&data) } else { data }).unwrap();
}

/// Writes `images` as an OCI archive (a tar of the layout) at `out`.
pub fn write_oci_archive(out: &Path, images: &[TestImage], compress: bool) {
    let layout = tempfile::tempdir().unwrap();
    write_oci_layout(layout.path(), images);
    tar_directory(layout.path(), out, compress);
}

/// Writes `images` in the classic `docker save` format: `manifest.json`, `<hex>.json` configs,
/// `<id>/layer.tar` layers and `repositories`.
pub fn write_docker_save(out: &Path, images: &[TestImage], with_repo_tags: bool) {
    let mut builder = Builder::new(Vec::new());
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in images {
        let config_name = format!("{}.json", image.config.digest.hex());
        append(&mut builder, &config_name, &image.config.data);
        let mut layer_names = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let id = Digest::of_bytes(format!("{}-{i}", image.config.digest).as_bytes());
            let name = format!("{}/layer.tar", id.hex());
            append(&mut builder, &name, &layer.data);
            layer_names.push(name);
        }
        let top_id = layer_names
            .last()
            .map(|n| n.split('/').next().unwrap().to_string())
            .unwrap_or_default();
        for tag in &image.tags {
            let (repo, tag) = tag.rsplit_once(':').unwrap();
            repositories
                .entry(repo.to_string())
                .or_default()
                .insert(tag.to_string(), top_id.clone());
        }
        let repo_tags = if with_repo_tags {
            image.tags.clone()
        } else {
            Vec::new()
        };
        manifest.push(json!({"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}));
    }
    append(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    append(
        &mut builder,
        "repositories",
        &serde_json::to_vec(&repositories).unwrap(),
    );
    fs::write(out, builder.into_inner().unwrap()).unwrap();
}

fn append(builder: &mut Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut header = Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    builder.append_data(&mut header, name, data).unwrap();
}

/// Every path under `root` with its type, size and content digest (never following symlinks):
/// two equal snapshots mean nothing visible changed.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(name);
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let kind = meta.file_type();
        let description = if kind.is_dir() {
            walk(root, &path, out);
            "dir".to_string()
        } else if kind.is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if kind.is_file() {
            format!(
                "file {} {}",
                meta.len(),
                Digest::of_bytes(&fs::read(&path).unwrap())
            )
        } else if kind.is_char_device() {
            format!("char {}", meta.rdev())
        } else {
            "other".to_string()
        };
        out.insert(rel, description);
    }
}

/// The tree under `root` as "path kind[:content]" lines, for asserting on a rootfs or layer.
pub fn tree(root: &Path) -> Vec<String> {
    snapshot(root)
        .into_iter()
        .map(|(path, description)| {
            let full = root.join(&path);
            let shown = match description.split(' ').next().unwrap() {
                "file" => format!("file:{}", fs::read_to_string(&full).unwrap_or_default()),
                "dir" => "dir".to_string(),
                "char" => "whiteout".to_string(),
                _ => description,
            };
            format!("{} {shown}", path.display())
        })
        .collect()
}

/// Extended attribute `name` of `path` itself, if set.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = CString::new(name).unwrap();
    let mut value = vec![0u8; 256];
    // SAFETY: NUL-terminated strings; the length passed is the buffer's.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n >= 0).then(|| value[..n as usize].to_vec())
}

/// Number of mounts at or below `dir` in this process's mount table. Only this test's own
/// directory is counted: other processes on the machine may mount things meanwhile.
pub fn mounts_under(dir: &Path) -> usize {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.to_string_lossy().into_owned();
    table
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|mount_point| mount_point.starts_with(&prefix))
        })
        .count()
}
