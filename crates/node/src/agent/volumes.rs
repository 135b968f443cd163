//! A pod's volumes on the host, prepared before its first container starts: `emptyDir` (a
//! directory in the pod's directory, or a tmpfs for `medium: Memory`, sized by `sizeLimit`),
//! `hostPath` (checked or created according to its `type`) and `configMap` (its keys written
//! as files, mounted read-only). Everything lives under the pod directory and goes with it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use flotilla_state::objects::{
    EmptyDirVolumeSource, HostPathType, HostPathVolumeSource, Pod, StorageMedium,
};
use nix::mount::{mount, MsFlags};

use super::client::ApiClient;
use super::poddir::PodDir;
use super::spec::{config_map, Blocker, HostVolume};
use crate::runtime::mounts::mounts_under;

/// Largest ConfigMap key written as a file name.
const MAX_KEY_BYTES: usize = 253;

/// Prepares every volume of `pod`; safe to repeat (existing volumes are kept).
pub async fn prepare(
    client: &ApiClient,
    pod: &Pod,
    dir: &PodDir,
) -> Result<BTreeMap<String, HostVolume>, Blocker> {
    let mut out = BTreeMap::new();
    for volume in &pod.spec.volumes {
        let path = dir.volume(&volume.name);
        let prepared = if let Some(empty) = &volume.empty_dir {
            empty_dir(&path, empty).map(|()| HostVolume {
                path,
                read_only: false,
            })
        } else if let Some(host) = &volume.host_path {
            host_path(host).map(|()| HostVolume {
                path: host.path.clone().into(),
                read_only: false,
            })
        } else if let Some(source) = &volume.config_map {
            let map = config_map(client, &pod.metadata.namespace, &source.name).await?;
            let map = map
                .ok_or_else(|| Blocker::config(format!("configmap {:?} not found", source.name)))?;
            write_config_map(&path, &map.data, &map.binary_data).map(|()| HostVolume {
                path,
                read_only: true,
            })
        } else {
            Err(format!("volume {:?} has no source", volume.name))
        };
        let prepared =
            prepared.map_err(|e| Blocker::config(format!("volume {:?}: {e}", volume.name)))?;
        out.insert(volume.name.clone(), prepared);
    }
    Ok(out)
}

fn empty_dir(path: &Path, source: &EmptyDirVolumeSource) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    if source.medium != Some(StorageMedium::Memory) {
        // Any user of the pod may write, as in Kubernetes.
        return fs::set_permissions(path, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("chmod {}: {e}", path.display()));
    }
    if mounts_under(path).iter().any(|m| m == path) {
        return Ok(());
    }
    let mut options = "mode=1777".to_string();
    if let Some(limit) = source.size_limit.as_ref().filter(|q| q.value() > 0) {
        options.push_str(&format!(",size={}", limit.value()));
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        flags,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mounting tmpfs on {}: {e}", path.display()))
}

fn host_path(source: &HostPathVolumeSource) -> Result<(), String> {
    let path = Path::new(&source.path);
    let meta = fs::metadata(path);
    let kind = source.type_.unwrap_or(HostPathType::Unset);
    let ok = match (kind, &meta) {
        (HostPathType::Unset, _) => true,
        (HostPathType::DirectoryOrCreate, Err(_)) => {
            fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
            true
        }
        (HostPathType::FileOrCreate, Err(_)) => {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            true
        }
        (HostPathType::DirectoryOrCreate | HostPathType::Directory, Ok(m)) => m.is_dir(),
        (HostPathType::FileOrCreate | HostPathType::File, Ok(m)) => m.is_file(),
        (HostPathType::Socket, Ok(m)) => m.file_type().is_socket(),
        (HostPathType::CharDevice, Ok(m)) => m.file_type().is_char_device(),
        (HostPathType::BlockDevice, Ok(m)) => m.file_type().is_block_device(),
        (_, Err(_)) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("hostPath {} is not a {kind}", path.display()))
    }
}

/// Writes each key as a file (text keys as they are, binary keys base64-decoded).
fn write_config_map(
    dir: &Path,
    data: &BTreeMap<String, String>,
    binary: &BTreeMap<String, String>,
) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let decoded = binary.iter().map(|(k, v)| {
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map(|bytes| (k, bytes))
            .map_err(|e| format!("binaryData {k:?}: {e}"))
    });
    let text = data.iter().map(|(k, v)| Ok((k, v.as_bytes().to_vec())));
    for entry in text.chain(decoded) {
        let (key, bytes) = entry?;
        if !safe_key(key) {
            return Err(format!("key {key:?} is not a file name"));
        }
        let tmp = dir.join(format!(".{key}.tmp"));
        fs::write(&tmp, &bytes).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        fs::rename(&tmp, dir.join(key)).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    }
    Ok(())
}

fn safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_map_keys_become_files_and_bad_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data: BTreeMap<String, String> = [("app.conf".to_string(), "x=1".to_string())].into();
        let binary: BTreeMap<String, String> = [("b.bin".to_string(), "AAEC".to_string())].into();
        write_config_map(dir.path(), &data, &binary).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("app.conf")).unwrap(),
            "x=1"
        );
        assert_eq!(fs::read(dir.path().join("b.bin")).unwrap(), vec![0, 1, 2]);
        let evil: BTreeMap<String, String> = [("../x".to_string(), "y".to_string())].into();
        assert!(write_config_map(dir.path(), &evil, &BTreeMap::new()).is_err());
        assert!(!dir.path().parent().unwrap().join("x").exists());
    }

    fn check_host(path: &Path, kind: HostPathType, ok: bool) {
        let source = HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some(kind),
        };
        assert_eq!(host_path(&source).is_ok(), ok, "{} {kind}", path.display());
    }

    #[test]
    fn host_paths_are_checked_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "").unwrap();
        check_host(dir.path(), HostPathType::Directory, true);
        check_host(&file, HostPathType::Directory, false);
        check_host(&file, HostPathType::File, true);
        check_host(&dir.path().join("missing"), HostPathType::File, false);
        check_host(
            &dir.path().join("new"),
            HostPathType::DirectoryOrCreate,
            true,
        );
        assert!(dir.path().join("new").is_dir());
        check_host(&dir.path().join("nf"), HostPathType::FileOrCreate, true);
        assert!(dir.path().join("nf").is_file());
        check_host(&dir.path().join("anything"), HostPathType::Unset, true);
    }
}
