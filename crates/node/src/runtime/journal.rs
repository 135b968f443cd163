//! The node's run journal: one JSON line per container start and stop, appended by the
//! container's shim itself, so the record is complete even when the agent dies. Checkers use it
//! to prove that one pod never ran on two nodes at once.
//!
//! Format: `{"pod_uid":"…","container":"…","event":"started"|"stopped","at_ns":…}` (Unix
//! nanoseconds). The file is rotated at [`JOURNAL_MAX_BYTES`]; one rotated file is kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Size at which the journal is rotated (`journal.jsonl` → `journal.1.jsonl`).
pub const JOURNAL_MAX_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunEvent {
    Started,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub pod_uid: String,
    pub container: String,
    pub event: RunEvent,
    pub at_ns: u64,
}

pub fn journal_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.jsonl")
}

fn rotated_path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.1.jsonl")
}

/// Appends one record (a single `write` of one line, so concurrent shims do not interleave).
pub fn append(state_dir: &Path, record: &RunRecord) -> std::io::Result<()> {
    let path = journal_path(state_dir);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= JOURNAL_MAX_BYTES) {
        let _ = std::fs::rename(&path, rotated_path(state_dir));
    }
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    file.write_all(&line)
}

/// Every record of the node, oldest first (the rotated file, then the live one). Lines that do
/// not parse (a torn last line after a crash) are skipped.
pub fn read(state_dir: &Path) -> Vec<RunRecord> {
    [rotated_path(state_dir), journal_path(state_dir)]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back_skipping_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let record = |event| RunRecord {
            pod_uid: "u1".into(),
            container: "c".into(),
            event,
            at_ns: 7,
        };
        append(dir.path(), &record(RunEvent::Started)).unwrap();
        append(dir.path(), &record(RunEvent::Stopped)).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(dir.path()))
            .unwrap();
        file.write_all(b"{\"pod_uid\":\"u2\",\"cont").unwrap();
        let records = read(dir.path());
        assert_eq!(
            records,
            vec![record(RunEvent::Started), record(RunEvent::Stopped)]
        );
    }
}
