//! A pod's directory on the node, `DATA_DIR/pods/<uid>/`: its volumes (`volumes/<name>/`) and
//! its journal (`journal.json`) — what the agent must remember across its own restarts and
//! the runtime does not record: restart counts and backoff per container, and the image each
//! container instance runs on (to pin it again after a restart).
//!
//! The journal is written by rename, so a crash leaves the old or the new one. The directory
//! is removed only when nothing is mounted below it (memory-backed emptyDirs are unmounted
//! first).

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::runtime::mounts::{mounts_under, remove_dir_safely, unmount};
use crate::runtime::{BackoffState, RuntimeError};

/// Largest journal read back (a pod has at most a few dozen containers).
pub const MAX_JOURNAL_BYTES: u64 = 1 << 20;
/// Pod directories listed at most (far above a node's pod capacity).
pub const MAX_POD_DIRS: usize = 100_000;
const JOURNAL_FILE: &str = "journal.json";
const VOLUMES_DIR: &str = "volumes";

/// What is remembered about one container name of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerJournal {
    pub restart_count: u32,
    pub last_delay_ms: Option<u64>,
    /// Image manifest digest (`sha256:…`) per container instance ID.
    pub images: BTreeMap<String, String>,
}

impl ContainerJournal {
    pub fn backoff(&self) -> BackoffState {
        BackoffState {
            restart_count: self.restart_count,
            last_delay: self.last_delay_ms.map(Duration::from_millis),
        }
    }

    pub fn set_backoff(&mut self, state: BackoffState) {
        self.restart_count = state.restart_count;
        self.last_delay_ms = state.last_delay.map(|d| d.as_millis() as u64);
    }
}

/// `journal.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub namespace: String,
    pub name: String,
    pub containers: BTreeMap<String, ContainerJournal>,
}

/// The directory of one pod.
#[derive(Debug, Clone)]
pub struct PodDir {
    dir: PathBuf,
}

impl PodDir {
    pub fn new(pods_dir: &Path, uid: &str) -> PodDir {
        PodDir {
            dir: pods_dir.join(uid),
        }
    }

    pub fn volume(&self, name: &str) -> PathBuf {
        self.dir.join(VOLUMES_DIR).join(name)
    }

    /// The journal, or an empty one when there is none (or it is unreadable).
    pub fn load(&self) -> Journal {
        let path = self.dir.join(JOURNAL_FILE);
        let mut data = Vec::new();
        let read =
            fs::File::open(&path).and_then(|f| f.take(MAX_JOURNAL_BYTES).read_to_end(&mut data));
        match read {
            Ok(_) => serde_json::from_slice(&data).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "journal unreadable; starting afresh");
                Journal::default()
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Journal::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "journal unreadable");
                Journal::default()
            }
        }
    }

    /// Writes the journal atomically (temporary file, fsync, rename).
    pub fn save(&self, journal: &Journal) -> Result<(), RuntimeError> {
        fs::create_dir_all(&self.dir).map_err(|e| io("creating", &self.dir, e))?;
        let path = self.dir.join(JOURNAL_FILE);
        let tmp = self.dir.join(format!(".{JOURNAL_FILE}.tmp"));
        let data = serde_json::to_vec(journal).unwrap_or_default();
        let written = fs::File::create(&tmp).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &data)?;
            f.sync_all()
        });
        written.map_err(|e| io("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))
    }

    /// Unmounts whatever is mounted below the directory (memory emptyDirs) and deletes it.
    pub fn remove(&self) -> Result<(), RuntimeError> {
        for mount in mounts_under(&self.dir) {
            unmount(&mount)?;
        }
        remove_dir_safely(&self.dir)
    }
}

/// Pod UIDs that have a directory under `pods_dir`.
pub fn pod_dir_uids(pods_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    entries
        .take(MAX_POD_DIRS)
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_round_trip_and_directories_go_away() {
        let root = tempfile::tempdir().unwrap();
        let pod = PodDir::new(root.path(), "uid-1");
        assert_eq!(pod.load(), Journal::default());
        let mut journal = Journal {
            namespace: "default".into(),
            name: "web".into(),
            ..Journal::default()
        };
        let entry = journal.containers.entry("main".into()).or_default();
        entry.set_backoff(BackoffState {
            restart_count: 3,
            last_delay: Some(Duration::from_millis(40)),
        });
        entry
            .images
            .insert("uid-1.main.0000abcd".into(), "sha256:ab".into());
        pod.save(&journal).unwrap();
        assert_eq!(pod.load(), journal);
        assert_eq!(pod.load().containers["main"].backoff().restart_count, 3);
        fs::create_dir_all(pod.volume("data")).unwrap();
        assert_eq!(pod_dir_uids(root.path()), vec!["uid-1".to_string()]);
        pod.remove().unwrap();
        assert!(pod_dir_uids(root.path()).is_empty());
        pod.remove().unwrap();
    }
}
