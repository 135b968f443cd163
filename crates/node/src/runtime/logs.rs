//! `Runtime::logs`: reading a container's CRI log (the rotated file, then the live one),
//! optionally only the last lines, optionally following new output until the container has
//! exited and everything was read. Records reach the caller through a bounded channel.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::container::ContainerId;
use super::error::RuntimeError;
use super::logfile::{parse_line, LogLine, MAX_LINE_BYTES};
use super::service::Runtime;
use super::state::{read_json, ContainerPaths, Phase, ShimState};

/// Records buffered between the reader task and the caller.
pub const LOG_STREAM_BUFFER: usize = 256;
/// Most lines a `tail` keeps in memory.
pub const MAX_TAIL_LINES: usize = 100_000;
/// How often a follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Longest unfinished record held while following (a record is at most MAX_LINE_BYTES of
/// content plus its header); anything longer is not a record and is dropped.
const MAX_PENDING_BYTES: usize = MAX_LINE_BYTES + 256;
/// Bytes read from the file at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Which part of the log to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last `n` records present now (at most [`MAX_TAIL_LINES`]); `None` for all.
    pub tail_lines: Option<usize>,
    /// Keep streaming new records until the container exited and its log was read.
    pub follow: bool,
}

/// The records of one `logs` call, in order.
pub struct LogStream {
    rx: mpsc::Receiver<Result<LogLine, RuntimeError>>,
}

impl LogStream {
    /// The next record; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<LogLine, RuntimeError>> {
        self.rx.recv().await
    }

    /// Reads the stream to its end (use without `follow`, or for a container that exits).
    pub async fn collect(mut self) -> Result<Vec<LogLine>, RuntimeError> {
        let mut out = Vec::new();
        while let Some(line) = self.next().await {
            out.push(line?);
        }
        Ok(out)
    }
}

impl Runtime {
    /// Streams the container's log as `options` say.
    pub fn logs(&self, id: &ContainerId, options: LogOptions) -> Result<LogStream, RuntimeError> {
        let paths = self.container_paths(id);
        if !paths.dir.is_dir() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        let (tx, rx) = mpsc::channel(LOG_STREAM_BUFFER);
        tokio::spawn(async move {
            if let Err(e) = stream_log(&paths, options, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(LogStream { rx })
    }
}

type Sender = mpsc::Sender<Result<LogLine, RuntimeError>>;

async fn stream_log(
    paths: &ContainerPaths,
    options: LogOptions,
    tx: &Sender,
) -> Result<(), RuntimeError> {
    let mut reader = LogReader::open(&paths.log());
    let mut existing = read_whole(&paths.rotated_log());
    existing.extend(reader.read_new());
    let keep = options
        .tail_lines
        .map_or(usize::MAX, |n| n.min(MAX_TAIL_LINES));
    let skip = existing.len().saturating_sub(keep);
    for line in existing.into_iter().skip(skip) {
        if tx.send(Ok(line)).await.is_err() {
            return Ok(());
        }
    }
    if !options.follow {
        return Ok(());
    }
    loop {
        // Checked before reading, so output written just before the exit is still sent.
        let done = container_done(paths);
        for line in reader.read_new() {
            if tx.send(Ok(line)).await.is_err() {
                return Ok(());
            }
        }
        if done {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Whether the container can write no more output.
fn container_done(paths: &ContainerPaths) -> bool {
    match read_json::<ShimState>(&paths.state()) {
        Ok(state) => match state.phase {
            Phase::Exited | Phase::Failed => true,
            Phase::Creating | Phase::Running => !state.shim.is_alive(),
        },
        Err(_) => true,
    }
}

/// All records of a file that is no longer written (the rotated log).
fn read_whole(path: &Path) -> VecDeque<LogLine> {
    let mut data = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut data);
    }
    split_records(&data, &mut Vec::new()).into()
}

/// Complete records in `pending ++ data`; the unfinished tail stays in `pending`.
fn split_records(data: &[u8], pending: &mut Vec<u8>) -> Vec<LogLine> {
    pending.extend_from_slice(data);
    let Some(last_newline) = pending.iter().rposition(|b| *b == b'\n') else {
        if pending.len() > MAX_PENDING_BYTES {
            pending.clear();
        }
        return Vec::new();
    };
    let complete: Vec<u8> = pending.drain(..=last_newline).collect();
    complete
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// Reads the live log incrementally, following it across a rotation.
struct LogReader {
    path: PathBuf,
    file: Option<File>,
    pending: Vec<u8>,
}

impl LogReader {
    fn open(path: &Path) -> LogReader {
        LogReader {
            path: path.to_path_buf(),
            file: File::open(path).ok(),
            pending: Vec::new(),
        }
    }

    /// Records appended since the last call. When the file was rotated, the rest of the old
    /// file comes first, then the new file from its start.
    fn read_new(&mut self) -> Vec<LogLine> {
        let mut out = self.drain_current();
        let current_inode = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        let open_inode = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.ino());
        if current_inode.is_some() && current_inode != open_inode {
            self.file = File::open(&self.path).ok();
            self.pending.clear();
            out.extend(self.drain_current());
        }
        out
    }

    fn drain_current(&mut self) -> Vec<LogLine> {
        let Some(file) = self.file.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend(split_records(&buf[..n], &mut self.pending)),
            }
        }
        // Keep the position at the end; a truncation (never done by the writer) rewinds.
        if let (Ok(pos), Ok(meta)) = (file.stream_position(), file.metadata()) {
            if meta.len() < pos {
                let _ = file.seek(SeekFrom::Start(0));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_split_across_reads_are_joined() {
        let mut pending = Vec::new();
        let first = split_records(b"2024-01-01T00:00:00Z stdout F he", &mut pending);
        assert!(first.is_empty());
        let second = split_records(b"llo\n2024-01-01T00:00:01Z stderr F x\n", &mut pending);
        let contents: Vec<&[u8]> = second.iter().map(|l| l.content.as_slice()).collect();
        assert_eq!(contents, vec![&b"hello"[..], &b"x"[..]]);
        assert!(pending.is_empty());
    }
}
