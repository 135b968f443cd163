//! The container log format and its writer: CRI lines `<RFC3339Nano> <stdout|stderr> <F|P>
//! <content>\n` in a size-capped file with one rotated generation, so a container's output
//! never uses more than `2 × max_bytes` of disk. Output lines longer than
//! [`MAX_LINE_BYTES`] are split into partial (`P`) records, so the writer's memory is bounded
//! too. Parsing lives here as well, so the format has one owner.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// Longest log record content; longer lines become several partial records.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Smallest accepted cap of the live log file (a record must fit).
pub const MIN_LOG_MAX_BYTES: u64 = 2 * MAX_LINE_BYTES as u64;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of a container log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 time with nanoseconds, UTC, as written.
    pub time: String,
    pub stream: Stream,
    /// The line continues in the next record of the same stream.
    pub partial: bool,
    /// The bytes, without the newline.
    pub content: Vec<u8>,
}

/// Parses one record (without its trailing newline); `None` for a malformed line.
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or_default().to_vec();
    Some(LogLine {
        time,
        stream,
        partial,
        content,
    })
}

fn format_time(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Appends records to `path`, rotating it to `rotated` when it would exceed `max_bytes`.
pub struct LogWriter {
    path: PathBuf,
    rotated: PathBuf,
    max_bytes: u64,
    file: File,
    size_bytes: u64,
}

impl LogWriter {
    pub fn open(path: &Path, rotated: &Path, max_bytes: u64) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size_bytes = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            rotated: rotated.to_path_buf(),
            max_bytes: max_bytes.max(MIN_LOG_MAX_BYTES),
            file,
            size_bytes,
        })
    }

    /// Writes one record; `content` must not contain a newline and is at most
    /// [`MAX_LINE_BYTES`] long.
    pub fn write_record(
        &mut self,
        now: SystemTime,
        stream: Stream,
        partial: bool,
        content: &[u8],
    ) -> io::Result<()> {
        let tag = if partial { "P" } else { "F" };
        let head = format!("{} {} {tag} ", format_time(now), stream.name());
        let record_bytes = (head.len() + content.len() + 1) as u64;
        if self.size_bytes > 0 && self.size_bytes + record_bytes > self.max_bytes {
            self.rotate()?;
        }
        let mut record = Vec::with_capacity(record_bytes as usize);
        record.extend_from_slice(head.as_bytes());
        record.extend_from_slice(content);
        record.push(b'\n');
        self.file.write_all(&record)?;
        self.size_bytes += record_bytes;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, &self.rotated)?;
        self.file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.path)?;
        self.size_bytes = 0;
        Ok(())
    }
}

/// Splits a byte stream into records: complete lines, and [`MAX_LINE_BYTES`] chunks of lines
/// that are longer. Holds at most one unfinished line.
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> LineSplitter {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes read from the stream, writing every record they complete.
    pub fn feed(&mut self, data: &[u8], out: &mut LogWriter, now: SystemTime) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = MAX_LINE_BYTES - self.pending.len();
            let window = &rest[..rest.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&window[..i]);
                    out.write_record(now, self.stream, false, &self.pending)?;
                    self.pending.clear();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    rest = &rest[window.len()..];
                    if self.pending.len() == MAX_LINE_BYTES {
                        out.write_record(now, self.stream, true, &self.pending)?;
                        self.pending.clear();
                    }
                }
            }
        }
        Ok(())
    }

    /// The stream ended: an unfinished last line is written as a full record.
    pub fn finish(&mut self, out: &mut LogWriter, now: SystemTime) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        out.write_record(now, self.stream, false, &self.pending)?;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<LogLine> {
        let data = fs::read(path).unwrap_or_default();
        data.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| parse_line(l).expect("well-formed record"))
            .collect()
    }

    /// Feeds `chunks` to a stdout splitter and returns (partial flag, content) per record.
    fn check(chunks: &[&[u8]], expected: &[(bool, Vec<u8>)]) {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = (dir.path().join("log"), dir.path().join("log.1"));
        let mut writer = LogWriter::open(&log, &old, 1 << 20).unwrap();
        let mut splitter = LineSplitter::new(Stream::Stdout);
        for chunk in chunks {
            splitter
                .feed(chunk, &mut writer, SystemTime::now())
                .unwrap();
        }
        splitter.finish(&mut writer, SystemTime::now()).unwrap();
        let got: Vec<(bool, Vec<u8>)> = records(&log)
            .into_iter()
            .map(|r| (r.partial, r.content))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn lines_become_records() {
        let full = |s: &str| (false, s.as_bytes().to_vec());
        check(&[b"hello\nworld\n"], &[full("hello"), full("world")]);
        check(
            &[b"hel", b"lo\nwor", b"ld"],
            &[full("hello"), full("world")],
        );
        check(&[b"\n\n"], &[full(""), full("")]);
        check(&[b"a b  c\n"], &[full("a b  c")]);
        check(&[], &[]);
    }

    #[test]
    fn long_lines_are_split_into_partial_records() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        let mut input = long.clone();
        input.push(b'\n');
        check(
            &[&input],
            &[
                (true, vec![b'x'; MAX_LINE_BYTES]),
                (true, vec![b'x'; MAX_LINE_BYTES]),
                (false, vec![b'x'; 5]),
            ],
        );
    }

    #[test]
    fn rotation_keeps_both_files_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = (dir.path().join("log"), dir.path().join("log.1"));
        let cap = MIN_LOG_MAX_BYTES;
        let mut writer = LogWriter::open(&log, &old, cap).unwrap();
        let line = vec![b'y'; 1000];
        for _ in 0..200 {
            writer
                .write_record(SystemTime::now(), Stream::Stderr, false, &line)
                .unwrap();
        }
        for path in [&log, &old] {
            let size = fs::metadata(path).unwrap().len();
            assert!(size <= cap, "{} is {size} bytes", path.display());
            assert!(records(path).iter().all(|r| r.stream == Stream::Stderr));
        }
    }

    #[test]
    fn malformed_records_are_rejected() {
        assert!(parse_line(b"2024-01-01T00:00:00Z stdout F hi").is_some());
        assert!(parse_line(b"2024-01-01T00:00:00Z stdout F").is_some());
        assert!(parse_line(b"2024-01-01T00:00:00Z stdin F hi").is_none());
        assert!(parse_line(b"2024-01-01T00:00:00Z stdout X hi").is_none());
        assert!(parse_line(b"garbage").is_none());
    }
}
