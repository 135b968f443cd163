//! The operation history chaos workloads record and the checkers judge.
//!
//! Owns [`Op`] (one register operation: who, which key, what, when it was invoked and completed,
//! and what came back), [`History`] (a validated list of ops, stored as JSON Lines: one op per
//! line) and [`Recorder`] (the thread-safe, bounded-memory writer workloads use while they run).
//!
//! Register values are `u64` ([`Value`]). Workloads should write unique values (for example
//! `process << 32 | counter`) so that every read names the one write it observed; the checkers
//! stay correct with repeated values, they just explain violations less sharply.
//!
//! Times are nanoseconds on one monotonic clock shared by every process of a run (the
//! [`Recorder`]'s clock), so invoke and completion times of different processes compare.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A register value. See the module documentation for why values should be unique.
pub type Value = u64;

/// Identifies one op within a history; handed out by the [`Recorder`].
pub type OpId = u64;

/// Longest line [`History::read_jsonl`] accepts; a recorded op is a few hundred bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Most ops one history may hold, so a corrupt or runaway file fails instead of eating memory.
pub const MAX_HISTORY_OPS: usize = 10_000_000;

/// Default bound on ops invoked but not yet completed in a [`Recorder`].
pub const DEFAULT_MAX_IN_FLIGHT_OPS: usize = 4096;

/// Default number of completed ops a [`Recorder`] buffers before writing them out.
pub const DEFAULT_FLUSH_BATCH_OPS: usize = 512;

/// What an op asked the register to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Read,
    Write(Value),
    /// Sets the register to `new` if it currently holds `expect` (the workload's "update if the
    /// version is still the one I read").
    Cas {
        expect: Value,
        new: Value,
    },
}

/// What came back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The op took effect. For a read, `read` is the value returned (`None`: the key was empty);
    /// writes and compare-and-sets leave it `None`.
    Ok { read: Option<Value> },
    /// The op definitely did not take effect (rejected, or a compare-and-set whose comparison
    /// failed).
    Fail,
    /// Indeterminate: timed out or the connection was lost; the op may or may not have taken
    /// effect, at any time after its invocation.
    Info,
}

/// One recorded register operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    pub id: OpId,
    /// The client (thread or task) that issued the op; one process has one op in flight at a time.
    pub process: u64,
    pub key: String,
    pub kind: OpKind,
    pub invoke_ns: u64,
    /// `None` only for an [`Outcome::Info`] op that never completed (the run ended first).
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Read => write!(f, "read"),
            OpKind::Write(value) => write!(f, "write {value}"),
            OpKind::Cas { expect, new } => write!(f, "cas {expect}->{new}"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok { read: Some(value) } => write!(f, "ok {value}"),
            Outcome::Ok { read: None } => write!(f, "ok"),
            Outcome::Fail => write!(f, "fail"),
            Outcome::Info => write!(f, "info"),
        }
    }
}

/// Why a history could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history line {line}: {source}")]
    Malformed {
        line: usize,
        source: serde_json::Error,
    },
    #[error("history line {line}: longer than {max_bytes} bytes")]
    LineTooLong { line: usize, max_bytes: usize },
    #[error("history holds more than {max_ops} ops")]
    TooManyOps { max_ops: usize },
    #[error("op {id}: completes at {complete_ns} ns, before its invocation at {invoke_ns} ns")]
    CompletesBeforeInvoke {
        id: OpId,
        invoke_ns: u64,
        complete_ns: u64,
    },
    #[error("op {id}: outcome {outcome} needs a completion time")]
    MissingCompletion { id: OpId, outcome: Outcome },
    #[error("op id {id} appears more than once")]
    DuplicateId { id: OpId },
    #[error("encoding op: {0}")]
    Encode(serde_json::Error),
    #[error("history io: {0}")]
    Io(#[from] io::Error),
}

/// A validated history: op ids are unique, every op that completed did so no earlier than it was
/// invoked, and only indeterminate ops may lack a completion time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Op>,
}

/// A history read from JSON Lines, with whether a truncated last line was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedHistory {
    pub history: History,
    /// The file ended inside a line (the recorder crashed mid-write); that line was dropped.
    pub truncated_last_line: bool,
}

impl History {
    /// Validates `ops` (see [`History`]) and keeps them in the given order.
    pub fn from_ops(ops: Vec<Op>) -> Result<Self, HistoryError> {
        if ops.len() > MAX_HISTORY_OPS {
            return Err(HistoryError::TooManyOps {
                max_ops: MAX_HISTORY_OPS,
            });
        }
        let mut ids = HashSet::with_capacity(ops.len());
        for op in &ops {
            validate_op(op)?;
            if !ids.insert(op.id) {
                return Err(HistoryError::DuplicateId { id: op.id });
            }
        }
        Ok(History { ops })
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Reads one op per line. Blank lines are skipped. A last line that is cut short (no newline,
    /// and the JSON ends early) is dropped and reported in [`LoadedHistory`]; any other malformed
    /// line is an error naming its 1-based line number.
    ///
    /// ```
    /// use flotilla_chaos::history::{History, OpKind, Outcome};
    ///
    /// let text = concat!(
    ///     r#"{"id":0,"process":1,"key":"k","kind":{"write":5},"invoke_ns":10,"#,
    ///     r#""complete_ns":20,"outcome":{"ok":{"read":null}}}"#, "\n",
    ///     r#"{"id":1,"process":2,"key":"k","kind":{"cas":{"expect":5,"new":6}},"#,
    ///     r#""invoke_ns":15,"complete_ns":null,"outcome":"info"}"#, "\n",
    ///     r#"{"id":2,"process":1,"key":"k","kind":"read","invoke_ns":30,"complete_ns":3"#,
    /// );
    /// let loaded = History::read_jsonl(text.as_bytes())?;
    /// assert!(loaded.truncated_last_line);
    /// let ops = loaded.history.ops();
    /// assert_eq!(ops[1].kind, OpKind::Cas { expect: 5, new: 6 });
    /// assert_eq!(ops[1].outcome, Outcome::Info);
    /// # Ok::<(), flotilla_chaos::history::HistoryError>(())
    /// ```
    pub fn read_jsonl(mut reader: impl BufRead) -> Result<LoadedHistory, HistoryError> {
        let mut ops = Vec::new();
        let mut buf = Vec::new();
        let mut line = 0;
        loop {
            line += 1;
            let Some(complete_line) = read_bounded_line(&mut reader, &mut buf, line)? else {
                break;
            };
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Op>(&buf) {
                Ok(op) => ops.push(op),
                Err(source) if !complete_line && source.is_eof() => {
                    let history = History::from_ops(ops)?;
                    return Ok(LoadedHistory {
                        history,
                        truncated_last_line: true,
                    });
                }
                Err(source) => return Err(HistoryError::Malformed { line, source }),
            }
            if ops.len() > MAX_HISTORY_OPS {
                return Err(HistoryError::TooManyOps {
                    max_ops: MAX_HISTORY_OPS,
                });
            }
        }
        Ok(LoadedHistory {
            history: History::from_ops(ops)?,
            truncated_last_line: false,
        })
    }

    /// Writes one op per line, in the history's order.
    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        let mut buf = Vec::new();
        for op in &self.ops {
            buf.clear();
            encode_line(op, &mut buf).map_err(HistoryError::Encode)?;
            writer.write_all(&buf)?;
        }
        writer.flush()?;
        Ok(())
    }
}

fn validate_op(op: &Op) -> Result<(), HistoryError> {
    match (op.complete_ns, op.outcome) {
        (None, Outcome::Info) => Ok(()),
        (None, outcome) => Err(HistoryError::MissingCompletion { id: op.id, outcome }),
        (Some(complete_ns), _) if complete_ns < op.invoke_ns => {
            Err(HistoryError::CompletesBeforeInvoke {
                id: op.id,
                invoke_ns: op.invoke_ns,
                complete_ns,
            })
        }
        (Some(_), _) => Ok(()),
    }
}

/// Reads the next line into `buf` (newline stripped). Returns `None` at end of input, otherwise
/// whether the line was terminated by a newline.
fn read_bounded_line(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    line: usize,
) -> Result<Option<bool>, HistoryError> {
    buf.clear();
    let limit_bytes = MAX_LINE_BYTES as u64 + 1;
    let read_bytes = reader.by_ref().take(limit_bytes).read_until(b'\n', buf)?;
    if read_bytes == 0 {
        return Ok(None);
    }
    let terminated = buf.last() == Some(&b'\n');
    if terminated {
        buf.pop();
    }
    if buf.len() > MAX_LINE_BYTES {
        return Err(HistoryError::LineTooLong {
            line,
            max_bytes: MAX_LINE_BYTES,
        });
    }
    Ok(Some(terminated))
}

fn encode_line(op: &Op, buf: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *buf, op)?;
    buf.push(b'\n');
    Ok(())
}

/// The time source of a [`Recorder`]: nanoseconds on a monotonic clock.
pub trait Clock: Send + Sync {
    fn now_ns(&self) -> u64;
}

/// Nanoseconds since the clock was created, from [`Instant`].
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Memory bounds of a [`Recorder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecorderConfig {
    /// Ops invoked and not yet completed; one more invocation is refused.
    pub max_in_flight_ops: usize,
    /// Completed ops buffered before they are written out together.
    pub flush_batch_ops: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            max_in_flight_ops: DEFAULT_MAX_IN_FLIGHT_OPS,
            flush_batch_ops: DEFAULT_FLUSH_BATCH_OPS,
        }
    }
}

/// Why the recorder refused an event.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{max} ops already in flight; complete some before invoking more")]
    TooManyInFlight { max: usize },
    #[error("op {id} is not in flight (never invoked, or already completed)")]
    NotInFlight { id: OpId },
    #[error("encoding op: {0}")]
    Encode(serde_json::Error),
    #[error("writing history: {0}")]
    Io(#[from] io::Error),
    #[error("recorder lock poisoned by a panicking thread")]
    Poisoned,
}

/// Records ops as workloads run them and writes completed ops to `W` as JSON Lines in batches.
///
/// Memory holds at most `max_in_flight_ops` open ops plus `flush_batch_ops` completed ones. Lines
/// appear in completion order; [`Recorder::finish`] writes ops still in flight as
/// [`Outcome::Info`] without a completion time.
pub struct Recorder<W: Write> {
    clock: Box<dyn Clock>,
    config: RecorderConfig,
    state: Mutex<RecorderState<W>>,
}

struct RecorderState<W> {
    next_id: OpId,
    in_flight: HashMap<OpId, Op>,
    batch: Vec<Op>,
    writer: W,
}

impl<W: Write> Recorder<W> {
    /// A recorder timing ops with a [`MonotonicClock`] started now.
    pub fn new(writer: W, config: RecorderConfig) -> Self {
        Self::with_clock(writer, config, Box::new(MonotonicClock::new()))
    }

    pub fn with_clock(writer: W, config: RecorderConfig, clock: Box<dyn Clock>) -> Self {
        let state = RecorderState {
            next_id: 0,
            in_flight: HashMap::new(),
            batch: Vec::new(),
            writer,
        };
        Recorder {
            clock,
            config,
            state: Mutex::new(state),
        }
    }

    /// Records that `process` is about to issue `kind` on `key`; call it before sending.
    pub fn invoke(&self, process: u64, key: &str, kind: OpKind) -> Result<OpId, RecordError> {
        let mut state = self.lock()?;
        if state.in_flight.len() >= self.config.max_in_flight_ops {
            return Err(RecordError::TooManyInFlight {
                max: self.config.max_in_flight_ops,
            });
        }
        let id = state.next_id;
        state.next_id += 1;
        let op = Op {
            id,
            process,
            key: key.to_owned(),
            kind,
            invoke_ns: self.clock.now_ns(),
            complete_ns: None,
            outcome: Outcome::Info,
        };
        state.in_flight.insert(id, op);
        Ok(id)
    }

    /// Records the outcome of op `id`; call it after the reply (or the timeout) arrived.
    pub fn complete(&self, id: OpId, outcome: Outcome) -> Result<(), RecordError> {
        let complete_ns = self.clock.now_ns();
        let mut state = self.lock()?;
        let mut op = state
            .in_flight
            .remove(&id)
            .ok_or(RecordError::NotInFlight { id })?;
        op.complete_ns = Some(complete_ns.max(op.invoke_ns));
        op.outcome = outcome;
        state.batch.push(op);
        if state.batch.len() >= self.config.flush_batch_ops {
            state.write_batch()?;
        }
        Ok(())
    }

    /// Writes buffered completed ops out now.
    pub fn flush(&self) -> Result<(), RecordError> {
        self.lock()?.write_batch()
    }

    /// Writes every buffered op, then the ops still in flight as indeterminate, and returns the
    /// writer.
    pub fn finish(self) -> Result<W, RecordError> {
        let mut state = self.state.into_inner().map_err(|_| RecordError::Poisoned)?;
        let mut open: Vec<Op> = state.in_flight.drain().map(|(_, op)| op).collect();
        open.sort_by_key(|op| op.id);
        state.batch.extend(open);
        state.write_batch()?;
        Ok(state.writer)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, RecorderState<W>>, RecordError> {
        self.state.lock().map_err(|_| RecordError::Poisoned)
    }
}

impl<W: Write> RecorderState<W> {
    /// Writes the batch as one buffer. The batch is gone even if writing fails: a retry after a
    /// partial write would corrupt the file, so an IO error ends the recording.
    fn write_batch(&mut self) -> Result<(), RecordError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for op in std::mem::take(&mut self.batch) {
            encode_line(&op, &mut buf).map_err(RecordError::Encode)?;
        }
        self.writer.write_all(&buf)?;
        self.writer.flush()?;
        Ok(())
    }
}
