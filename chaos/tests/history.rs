//! Tests of the history format (JSON Lines, validation) and the recorder.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_chaos::history::{
    Clock, History, HistoryError, Op, OpKind, Outcome, RecordError, Recorder, RecorderConfig,
    MAX_LINE_BYTES,
};

fn op(id: u64, kind: OpKind, invoke_ns: u64, complete_ns: Option<u64>, outcome: Outcome) -> Op {
    let key = format!("key-{}", id % 2);
    Op {
        id,
        process: id % 3,
        key,
        kind,
        invoke_ns,
        complete_ns,
        outcome,
    }
}

fn sample_ops() -> Vec<Op> {
    vec![
        op(
            0,
            OpKind::Write(7),
            10,
            Some(20),
            Outcome::Ok { read: None },
        ),
        op(1, OpKind::Read, 15, Some(25), Outcome::Ok { read: Some(7) }),
        op(
            2,
            OpKind::Cas { expect: 7, new: 8 },
            30,
            Some(40),
            Outcome::Fail,
        ),
        op(3, OpKind::Write(9), 35, None, Outcome::Info),
    ]
}

fn sample_jsonl() -> String {
    let history = History::from_ops(sample_ops()).expect("valid");
    let mut out = Vec::new();
    history.write_jsonl(&mut out).expect("writes to memory");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// Reads `text` and returns the op ids and the truncation flag, or the error's message.
fn check_read(text: &str) -> Result<(Vec<u64>, bool), String> {
    match History::read_jsonl(text.as_bytes()) {
        Ok(loaded) => {
            let ids = loaded.history.ops().iter().map(|op| op.id).collect();
            Ok((ids, loaded.truncated_last_line))
        }
        Err(error) => Err(error.to_string()),
    }
}

#[test]
fn round_trips_through_json_lines() {
    let text = sample_jsonl();
    assert_eq!(text.lines().count(), 4);
    let loaded = History::read_jsonl(text.as_bytes()).expect("reads back");
    assert_eq!(loaded.history.ops(), sample_ops().as_slice());
    assert!(!loaded.truncated_last_line);
}

#[test]
fn truncated_last_line_is_dropped_and_reported() {
    let text = sample_jsonl();
    let cut = text.trim_end().len() - 7;
    assert_eq!(check_read(&text[..cut]), Ok((vec![0, 1, 2], true)));
    // A file cut right after a newline lost nothing.
    let whole_lines: String = text
        .lines()
        .take(2)
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(check_read(&whole_lines), Ok((vec![0, 1], false)));
    // A last line complete except for its newline is an op, not a truncation.
    assert_eq!(check_read(text.trim_end()), Ok((vec![0, 1, 2, 3], false)));
}

#[test]
fn malformed_lines_are_errors_naming_the_line() {
    let text = sample_jsonl();
    let lines: Vec<&str> = text.lines().collect();
    let cases = [
        // A cut-short line in the middle is corruption, not a crash at the end.
        (
            format!("{}\n{}\n{}\n", lines[0], &lines[1][..10], lines[2]),
            "line 2",
        ),
        // Cut short but newline-terminated: something else wrote that newline.
        (format!("{}\n{}\n", lines[0], &lines[1][..10]), "line 2"),
        (format!("{}\nnot json\n", lines[0]), "line 2"),
        (lines[0].replace("\"process\"", "\"proces\""), "line 1"),
        (format!("\n{}\n{{\"id\":9}}\n", lines[0]), "line 3"),
        ("x".repeat(MAX_LINE_BYTES + 1), "longer than"),
    ];
    for (text, expected) in cases {
        let message = check_read(&text).expect_err("malformed history must not load");
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }
}

#[test]
fn inconsistent_ops_are_rejected() {
    let ok = Outcome::Ok { read: None };
    let cases = [
        (
            vec![op(0, OpKind::Read, 50, Some(40), ok)],
            "before its invocation",
        ),
        (
            vec![op(0, OpKind::Write(1), 50, None, ok)],
            "needs a completion time",
        ),
        (
            vec![op(0, OpKind::Write(1), 50, None, Outcome::Fail)],
            "needs a completion time",
        ),
        (
            vec![
                op(4, OpKind::Read, 0, Some(1), ok),
                op(4, OpKind::Read, 2, Some(3), ok),
            ],
            "op id 4 appears more than once",
        ),
    ];
    for (ops, expected) in cases {
        let error = History::from_ops(ops).expect_err("inconsistent history");
        assert!(
            error.to_string().contains(expected),
            "{expected:?} not in {error}"
        );
    }
    let text = "{\"id\":0,\"process\":0,\"key\":\"k\",\"kind\":\"read\",\"invoke_ns\":5,\
                \"complete_ns\":1,\"outcome\":\"fail\"}\n";
    let error = History::read_jsonl(text.as_bytes()).expect_err("completes before invoke");
    assert!(
        matches!(error, HistoryError::CompletesBeforeInvoke { id: 0, .. }),
        "{error}"
    );
}

// ---- recorder ----

/// A clock the test advances by hand.
#[derive(Clone, Default)]
struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn set(&self, now_ns: u64) {
        self.0.store(now_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A writer whose contents the test can inspect while the recorder owns it.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn lines(&self) -> usize {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn recorder(config: RecorderConfig) -> (Recorder<SharedBuffer>, ManualClock, SharedBuffer) {
    let (clock, buffer) = (ManualClock::default(), SharedBuffer::default());
    let recorder = Recorder::with_clock(buffer.clone(), config, Box::new(clock.clone()));
    (recorder, clock, buffer)
}

fn config(max_in_flight_ops: usize, flush_batch_ops: usize) -> RecorderConfig {
    RecorderConfig {
        max_in_flight_ops,
        flush_batch_ops,
    }
}

#[test]
fn recorder_times_ops_and_writes_unfinished_ones_as_indeterminate() {
    let (recorder, clock, _) = recorder(config(8, 8));
    clock.set(100);
    let write = recorder.invoke(1, "a", OpKind::Write(5)).expect("room");
    clock.set(110);
    let read = recorder.invoke(2, "a", OpKind::Read).expect("room");
    clock.set(150);
    recorder
        .complete(write, Outcome::Ok { read: None })
        .expect("in flight");
    let out = recorder.finish().expect("writes");
    let loaded =
        History::read_jsonl(out.0.lock().expect("not poisoned").as_slice()).expect("valid");
    let got: Vec<(u64, u64, Option<u64>, Outcome)> = loaded
        .history
        .ops()
        .iter()
        .map(|op| (op.id, op.invoke_ns, op.complete_ns, op.outcome))
        .collect();
    let expected = vec![
        (write, 100, Some(150), Outcome::Ok { read: None }),
        (read, 110, None, Outcome::Info),
    ];
    assert_eq!(got, expected);
}

#[test]
fn recorder_flushes_in_batches() {
    let (recorder, _, buffer) = recorder(config(8, 2));
    let ids: Vec<u64> = (0..3)
        .map(|p| recorder.invoke(p, "k", OpKind::Read).expect("room"))
        .collect();
    recorder.complete(ids[0], Outcome::Fail).expect("in flight");
    assert_eq!(buffer.lines(), 0, "one completed op stays buffered");
    recorder.complete(ids[1], Outcome::Fail).expect("in flight");
    assert_eq!(buffer.lines(), 2, "a full batch is written");
    recorder.complete(ids[2], Outcome::Fail).expect("in flight");
    recorder.flush().expect("writes");
    assert_eq!(buffer.lines(), 3);
}

#[test]
fn recorder_refuses_past_its_bound_and_unknown_ops() {
    let (recorder, _, _) = recorder(config(2, 8));
    let first = recorder.invoke(0, "k", OpKind::Read).expect("room");
    recorder.invoke(1, "k", OpKind::Read).expect("room");
    let refused = recorder.invoke(2, "k", OpKind::Read);
    assert!(matches!(
        refused,
        Err(RecordError::TooManyInFlight { max: 2 })
    ));
    recorder.complete(first, Outcome::Info).expect("in flight");
    recorder.invoke(2, "k", OpKind::Read).expect("room again");
    let twice = recorder.complete(first, Outcome::Info);
    assert!(matches!(twice, Err(RecordError::NotInFlight { .. })));
}

#[test]
fn recorder_is_shared_between_threads() {
    let (recorder, _, _) = recorder(config(64, 16));
    let recorder = Arc::new(recorder);
    let workers: Vec<_> = (0..4u64)
        .map(|process| {
            let recorder = Arc::clone(&recorder);
            std::thread::spawn(move || {
                for value in 0..100 {
                    let id = recorder
                        .invoke(process, "k", OpKind::Write(value))
                        .expect("room");
                    recorder
                        .complete(id, Outcome::Ok { read: None })
                        .expect("in flight");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker finished");
    }
    let recorder = Arc::into_inner(recorder).expect("workers are done");
    let out = recorder.finish().expect("writes");
    let bytes = out.0.lock().expect("not poisoned").clone();
    let loaded = History::read_jsonl(bytes.as_slice()).expect("unique ids, valid times");
    assert_eq!(loaded.history.ops().len(), 400);
}
