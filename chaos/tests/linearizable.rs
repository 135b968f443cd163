//! Tests of the register linearizability checker: hand-written histories that must pass or fail,
//! the search bound, per-key partitioning, and generated histories of a real register.

use flotilla_chaos::checker::linearizable::{
    check_linearizable, KeyResult, LinearizabilityConfig, LinearizabilityReport,
};
use flotilla_chaos::checker::Verdict;
use flotilla_chaos::history::{History, Op, OpKind, Outcome, Value};
use proptest::prelude::*;

// ---- building hand-written histories ----

/// An op on key "k"; `check` assigns ids in order.
fn op(process: u64, kind: OpKind, interval: (u64, u64), outcome: Outcome) -> Op {
    Op {
        id: 0,
        process,
        key: "k".to_owned(),
        kind,
        invoke_ns: interval.0,
        complete_ns: Some(interval.1),
        outcome,
    }
}

const OK: Outcome = Outcome::Ok { read: None };

fn write(process: u64, value: Value, interval: (u64, u64)) -> Op {
    op(process, OpKind::Write(value), interval, OK)
}

fn read(process: u64, value: Option<Value>, interval: (u64, u64)) -> Op {
    op(process, OpKind::Read, interval, Outcome::Ok { read: value })
}

fn cas(process: u64, expect: Value, new: Value, interval: (u64, u64)) -> Op {
    op(process, OpKind::Cas { expect, new }, interval, OK)
}

/// The op timed out: indeterminate, never completed.
fn info(mut op: Op) -> Op {
    op.outcome = Outcome::Info;
    op.complete_ns = None;
    op
}

fn fail(mut op: Op) -> Op {
    op.outcome = Outcome::Fail;
    op
}

fn on(key: &str, mut op: Op) -> Op {
    op.key = key.to_owned();
    op
}

fn report_of(mut ops: Vec<Op>, config: &LinearizabilityConfig) -> LinearizabilityReport {
    for (id, op) in ops.iter_mut().enumerate() {
        op.id = id as u64;
    }
    let history = History::from_ops(ops).expect("hand-written history is well formed");
    check_linearizable(&history, config)
}

/// Runs every case and reports all that disagree at once.
fn check(cases: Vec<(&str, Vec<Op>, Verdict)>) {
    let mut wrong = Vec::new();
    for (name, ops, expected) in cases {
        let report = report_of(ops, &LinearizabilityConfig::default());
        if report.verdict != expected {
            wrong.push(format!("{name}: expected {expected}, got {report}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---- hand-written histories ----

#[test]
fn linearizable_histories_pass() {
    use Verdict::Valid;
    check(vec![
        ("empty history", vec![], Valid),
        (
            "read of the initial empty register",
            vec![read(0, None, (0, 5))],
            Valid,
        ),
        (
            "write then read",
            vec![write(0, 1, (0, 10)), read(1, Some(1), (20, 30))],
            Valid,
        ),
        (
            "concurrent writes, read sees the first",
            vec![
                write(0, 1, (0, 10)),
                write(1, 2, (0, 10)),
                read(2, Some(1), (20, 30)),
            ],
            Valid,
        ),
        (
            "concurrent writes, read sees the second",
            vec![
                write(0, 1, (0, 10)),
                write(1, 2, (0, 10)),
                read(2, Some(2), (20, 30)),
            ],
            Valid,
        ),
        (
            "read concurrent with a write sees the old value",
            vec![
                write(0, 1, (0, 10)),
                write(1, 2, (20, 40)),
                read(2, Some(1), (25, 30)),
            ],
            Valid,
        ),
        (
            "read concurrent with a write sees the new value",
            vec![
                write(0, 1, (0, 10)),
                write(1, 2, (20, 40)),
                read(2, Some(2), (25, 30)),
            ],
            Valid,
        ),
        (
            "ops touching at one instant count as concurrent",
            vec![write(0, 1, (0, 10)), read(1, None, (10, 20))],
            Valid,
        ),
        (
            "compare-and-set chain",
            vec![
                write(0, 1, (0, 10)),
                cas(1, 1, 2, (20, 30)),
                cas(2, 2, 3, (40, 50)),
                read(0, Some(3), (60, 70)),
            ],
            Valid,
        ),
        (
            "concurrent compare-and-sets ordered by their expectations",
            vec![
                write(0, 1, (0, 10)),
                cas(1, 2, 3, (20, 50)),
                cas(2, 1, 2, (20, 50)),
            ],
            Valid,
        ),
        (
            "failed compare-and-set constrains nothing",
            vec![
                write(0, 1, (0, 10)),
                cas(1, 1, 2, (20, 30)),
                fail(cas(2, 1, 3, (20, 30))),
            ],
            Valid,
        ),
        (
            "indeterminate write that happened",
            vec![
                write(0, 1, (0, 10)),
                info(write(1, 2, (20, 30))),
                read(2, Some(2), (100, 110)),
            ],
            Valid,
        ),
        (
            "indeterminate write that did not happen",
            vec![
                write(0, 1, (0, 10)),
                info(write(1, 2, (20, 30))),
                read(2, Some(1), (100, 110)),
            ],
            Valid,
        ),
        (
            "indeterminate write takes effect long after it timed out",
            vec![
                write(0, 1, (0, 10)),
                info(write(1, 2, (20, 30))),
                read(2, Some(1), (100, 110)),
                read(2, Some(2), (200, 210)),
            ],
            Valid,
        ),
        (
            "indeterminate compare-and-set that happened",
            vec![
                write(0, 1, (0, 10)),
                info(cas(1, 1, 2, (20, 30))),
                read(2, Some(2), (40, 50)),
            ],
            Valid,
        ),
        (
            "indeterminate read constrains nothing",
            vec![write(0, 1, (0, 10)), info(read(1, None, (20, 30)))],
            Valid,
        ),
        (
            "failed write, later read of the previous value",
            vec![
                write(0, 1, (0, 10)),
                fail(write(1, 2, (20, 30))),
                read(2, Some(1), (40, 50)),
            ],
            Valid,
        ),
    ]);
}

#[test]
fn non_linearizable_histories_fail() {
    use Verdict::Invalid;
    check(vec![
        (
            "stale read after a completed write",
            vec![
                write(0, 1, (0, 10)),
                write(0, 2, (20, 30)),
                read(1, Some(1), (40, 50)),
            ],
            Invalid,
        ),
        (
            "lost acknowledged write",
            vec![write(0, 1, (0, 10)), read(1, None, (20, 30))],
            Invalid,
        ),
        (
            "read of a value never written",
            vec![write(0, 1, (0, 10)), read(1, Some(7), (20, 30))],
            Invalid,
        ),
        (
            "two successful compare-and-sets from the same expected value",
            vec![
                write(0, 1, (0, 10)),
                cas(1, 1, 2, (20, 30)),
                cas(2, 1, 3, (20, 30)),
            ],
            Invalid,
        ),
        (
            "read going back in time",
            vec![
                write(0, 1, (0, 10)),
                write(1, 2, (0, 10)),
                read(2, Some(2), (20, 30)),
                read(3, Some(1), (40, 50)),
            ],
            Invalid,
        ),
        (
            "read of a failed write's value",
            vec![fail(write(0, 1, (0, 10))), read(1, Some(1), (20, 30))],
            Invalid,
        ),
        (
            "read of an indeterminate write before it was invoked",
            vec![read(1, Some(2), (0, 10)), info(write(0, 2, (20, 30)))],
            Invalid,
        ),
        (
            "indeterminate write read, then the older value again",
            vec![
                write(0, 1, (0, 10)),
                info(write(1, 2, (20, 30))),
                read(2, Some(2), (100, 110)),
                read(2, Some(1), (120, 130)),
            ],
            Invalid,
        ),
        (
            "compare-and-set whose expectation never held",
            vec![write(0, 1, (0, 10)), cas(1, 5, 6, (20, 30))],
            Invalid,
        ),
    ]);
}

/// Checks the explanation of a single-key violation: the op that could not be linearized, the
/// register after the longest prefix, and the ops in that prefix.
fn check_explanation(ops: Vec<Op>, stuck_id: u64, register: Option<Value>, prefix_len: usize) {
    let report = report_of(ops, &LinearizabilityConfig::default());
    let KeyResult::Violation(violation) = &report.keys[0].result else {
        panic!("expected a violation, got {report}");
    };
    let stuck = violation.stuck.as_ref().map(|op| op.id);
    assert_eq!(stuck, Some(stuck_id), "{report}");
    assert_eq!(violation.register, register, "{report}");
    assert_eq!(violation.linearized_ops, prefix_len, "{report}");
}

#[test]
fn violation_names_the_stuck_op_and_the_state_before_it() {
    // The stale read (op 2) comes after both writes; the register then holds 2.
    check_explanation(
        vec![
            write(0, 1, (0, 10)),
            write(0, 2, (20, 30)),
            read(1, Some(1), (40, 50)),
        ],
        2,
        Some(2),
        2,
    );
    // The second compare-and-set (op 2) finds 2 where it expected 1.
    check_explanation(
        vec![
            write(0, 1, (0, 10)),
            cas(1, 1, 2, (20, 30)),
            cas(2, 1, 3, (20, 30)),
        ],
        2,
        Some(2),
        2,
    );
    // Nothing can precede a read of a value never written.
    check_explanation(vec![read(1, Some(7), (0, 10))], 0, None, 0);
}

#[test]
fn summary_line_names_verdict_key_and_op() {
    let ops = vec![
        on("apples", write(0, 1, (0, 10))),
        on("apples", read(1, None, (20, 30))),
    ];
    let summary = report_of(ops, &LinearizabilityConfig::default()).to_string();
    assert!(!summary.contains('\n'), "{summary}");
    for expected in ["INVALID", "\"apples\"", "op 1 ", "20..30 ns"] {
        assert!(
            summary.contains(expected),
            "{expected:?} missing in {summary}"
        );
    }
}

#[test]
fn report_serialises_for_the_run_report() {
    let ops = vec![write(0, 1, (0, 10)), read(1, Some(7), (20, 30))];
    let report = report_of(ops, &LinearizabilityConfig::default());
    let json = serde_json::to_value(&report).expect("report serialises");
    assert_eq!(json["verdict"], "invalid");
    assert_eq!(json["keys"][0]["result"], "violation");
    assert_eq!(json["keys"][0]["stuck"]["id"], 1);
    assert_eq!(json["keys"][0]["stuck"]["complete_ns"], 30);
}

#[test]
fn search_bound_yields_unknown_not_a_pass() {
    let ops: Vec<Op> = (0..6)
        .map(|i| write(0, i + 1, (i * 10, i * 10 + 5)))
        .collect();
    let tight = LinearizabilityConfig {
        max_states_per_key: 3,
    };
    let report = report_of(ops.clone(), &tight);
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert_eq!(report.keys[0].result, KeyResult::Unknown);
    assert!(report.to_string().contains("unknown"), "{report}");
    let roomy = LinearizabilityConfig {
        max_states_per_key: 6,
    };
    assert_eq!(report_of(ops, &roomy).verdict, Verdict::Valid);
}

#[test]
fn violation_outranks_unknown_on_another_key() {
    let mut ops: Vec<Op> = (0..6)
        .map(|i| on("busy", write(0, i + 1, (i * 10, i * 10 + 5))))
        .collect();
    ops.push(on("bad", read(1, Some(9), (0, 5))));
    let tight = LinearizabilityConfig {
        max_states_per_key: 3,
    };
    assert_eq!(report_of(ops, &tight).verdict, Verdict::Invalid);
}

#[test]
fn keys_are_separate_registers() {
    // As one register these would pass; per key, "b" reads a value only "a" ever held.
    let ops = vec![
        on("a", write(0, 1, (0, 10))),
        on("b", read(1, Some(1), (20, 30))),
    ];
    let report = report_of(ops, &LinearizabilityConfig::default());
    assert_eq!(report.verdict, Verdict::Invalid, "{report}");
    let results: Vec<(&str, bool)> = report
        .keys
        .iter()
        .map(|key| (key.key.as_str(), key.result == KeyResult::Ok))
        .collect();
    assert_eq!(results, vec![("a", true), ("b", false)]);
}

#[test]
fn a_violation_on_one_key_does_not_hide_among_many_valid_keys() {
    let mut ops = Vec::new();
    for key in ["a", "b", "c", "d"] {
        ops.push(on(key, write(0, 1, (0, 10))));
        ops.push(on(key, read(1, Some(1), (20, 30))));
    }
    ops.push(on("c", write(2, 2, (40, 50))));
    ops.push(on("c", read(3, Some(1), (60, 70))));
    let report = report_of(ops, &LinearizabilityConfig::default());
    let bad: Vec<&str> = report
        .keys
        .iter()
        .filter(|key| key.result != KeyResult::Ok)
        .map(|key| key.key.as_str())
        .collect();
    assert_eq!(bad, vec!["c"], "{report}");
}

#[test]
fn dropped_ops_are_counted_not_checked() {
    let ops = vec![
        write(0, 1, (0, 10)),
        fail(write(1, 2, (0, 10))),
        info(read(2, None, (0, 10))),
        info(write(3, 3, (0, 10))),
        read(4, Some(1), (20, 30)),
    ];
    let report = report_of(ops, &LinearizabilityConfig::default());
    assert_eq!(report.verdict, Verdict::Valid);
    assert_eq!(
        (report.keys[0].ops_checked, report.keys[0].ops_dropped),
        (2, 3)
    );
}

// ---- generated histories of a real register ----

/// One op of a generated workload; times are relative to the process's previous op.
#[derive(Debug, Clone)]
struct Planned {
    process: u64,
    key: u8,
    /// 0: read, 1: write, 2: compare-and-set.
    kind: u8,
    value: Value,
    /// For a compare-and-set: `None` expects whatever the register holds when it takes effect.
    expect: Option<Value>,
    gap_ns: u64,
    duration_ns: u64,
    /// Where inside its interval the op takes effect, in thousandths.
    point_permille: u64,
    /// 0: took effect but indeterminate (never completed); 1: indeterminate (timed out) and did
    /// not take effect; 2: rejected; otherwise normal.
    fate: u8,
}

/// Runs `plan` against a real sequential register per key, each op taking effect at a point
/// strictly inside its interval, and records what a client would have seen.
fn simulate(plan: &[Planned]) -> History {
    let mut free_at_ns = std::collections::HashMap::new();
    let mut ops = Vec::new();
    let mut points = Vec::new();
    for (id, planned) in plan.iter().enumerate() {
        let free = free_at_ns.entry(planned.process).or_insert(0);
        let invoke_ns = *free + planned.gap_ns;
        let complete_ns = invoke_ns + planned.duration_ns.max(2);
        *free = complete_ns;
        let inside_ns = 1 + planned.point_permille * (complete_ns - invoke_ns - 2) / 1000;
        points.push((invoke_ns + inside_ns, id));
        let kind = match planned.kind {
            0 => OpKind::Read,
            1 => OpKind::Write(planned.value),
            _ => OpKind::Cas {
                expect: planned.expect.unwrap_or(0),
                new: planned.value,
            },
        };
        let key = format!("key-{}", planned.key);
        let (process, complete_ns) = (planned.process, Some(complete_ns));
        let outcome = OK;
        ops.push(Op {
            id: id as u64,
            process,
            key,
            kind,
            invoke_ns,
            complete_ns,
            outcome,
        });
    }
    points.sort_unstable();
    let mut registers = std::collections::HashMap::new();
    for (_, id) in points {
        let register = registers.entry(ops[id].key.clone()).or_insert(None);
        apply(&plan[id], &mut ops[id], register);
    }
    History::from_ops(ops).expect("simulated history is well formed")
}

/// Applies one planned op to `register` at its linearization point and fills in its outcome.
fn apply(planned: &Planned, op: &mut Op, register: &mut Option<Value>) {
    match planned.fate {
        1 => return op.outcome = Outcome::Info,
        2 => return op.outcome = Outcome::Fail,
        _ => {}
    }
    op.outcome = match op.kind {
        OpKind::Read => Outcome::Ok { read: *register },
        OpKind::Write(value) => {
            *register = Some(value);
            OK
        }
        OpKind::Cas { expect, new } => {
            let expect = planned.expect.or(*register).unwrap_or(expect);
            op.kind = OpKind::Cas { expect, new };
            if *register == Some(expect) {
                *register = Some(new);
                OK
            } else {
                Outcome::Fail
            }
        }
    };
    if planned.fate == 0 {
        op.outcome = Outcome::Info;
        op.complete_ns = None;
    }
}

fn planned_op(processes: u64, keys: u8, values: Value) -> impl Strategy<Value = Planned> {
    (
        (
            0..processes,
            0..keys,
            0u8..3,
            1..=values,
            proptest::option::of(1..=values),
        ),
        (0u64..20, 2u64..40, 0u64..1000, 0u8..12),
    )
        .prop_map(
            |((process, key, kind, value, expect), (gap_ns, duration_ns, point_permille, fate))| {
                Planned {
                    process,
                    key,
                    kind,
                    value,
                    expect,
                    gap_ns,
                    duration_ns,
                    point_permille,
                    fate,
                }
            },
        )
}

proptest! {
    #[test]
    fn histories_of_a_real_register_are_valid(
        plan in proptest::collection::vec(planned_op(4, 2, 4), 1..40)
    ) {
        let history = simulate(&plan);
        let report = check_linearizable(&history, &LinearizabilityConfig::default());
        prop_assert_eq!(report.verdict, Verdict::Valid, "{}\n{:?}", report, history.ops());
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        plan in proptest::collection::vec(planned_op(4, 2, 4), 1..40)
    ) {
        let mut ops = simulate(&plan).ops().to_vec();
        let Some(read) = ops.iter_mut().find(|op| matches!(op.outcome, Outcome::Ok { .. }) && op.kind == OpKind::Read) else {
            return Ok(());
        };
        read.outcome = Outcome::Ok { read: Some(999) };
        let history = History::from_ops(ops).expect("still well formed");
        let report = check_linearizable(&history, &LinearizabilityConfig::default());
        prop_assert_eq!(report.verdict, Verdict::Invalid, "{}", report);
    }
}

/// An independent, exhaustive judge for tiny single-key histories: tries every order of the
/// completed ops plus any subset of the indeterminate ones that respects real time.
fn brute_force_linearizable(ops: &[Op]) -> bool {
    let candidates: Vec<&Op> = ops
        .iter()
        .filter(|op| match op.outcome {
            Outcome::Fail => false,
            Outcome::Info => op.kind != OpKind::Read,
            Outcome::Ok { .. } => true,
        })
        .collect();
    extend_order(&candidates, &mut vec![false; candidates.len()], None)
}

fn extend_order(ops: &[&Op], used: &mut Vec<bool>, register: Option<Value>) -> bool {
    let required_left = |used: &[bool]| {
        ops.iter()
            .zip(used)
            .filter(|(op, used)| !**used && op.outcome != Outcome::Info)
            .map(|(op, _)| op.complete_ns.unwrap_or(u64::MAX))
            .min()
    };
    let Some(deadline_ns) = required_left(used) else {
        return true;
    };
    for index in 0..ops.len() {
        if used[index] || ops[index].invoke_ns > deadline_ns {
            continue;
        }
        let next = match (ops[index].kind, ops[index].outcome) {
            (OpKind::Read, Outcome::Ok { read }) => (read == register).then_some(register),
            (OpKind::Read, _) => None,
            (OpKind::Write(value), _) => Some(Some(value)),
            (OpKind::Cas { expect, new }, _) => (register == Some(expect)).then_some(Some(new)),
        };
        if let Some(next) = next {
            used[index] = true;
            let found = extend_order(ops, used, next);
            used[index] = false;
            if found {
                return true;
            }
        }
    }
    false
}

fn arbitrary_op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        Just(OpKind::Read),
        (1u64..4).prop_map(OpKind::Write),
        (1u64..4, 1u64..4).prop_map(|(expect, new)| OpKind::Cas { expect, new }),
    ];
    let outcome = prop_oneof![
        3 => proptest::option::of(1u64..4).prop_map(|read| Outcome::Ok { read }),
        1 => Just(Outcome::Fail),
        1 => Just(Outcome::Info),
    ];
    (kind, outcome, 0u64..30, 0u64..30).prop_map(|(kind, outcome, invoke_ns, duration_ns)| {
        let outcome = match (kind, outcome) {
            (OpKind::Read, outcome) => outcome,
            (_, Outcome::Ok { .. }) => OK,
            (_, outcome) => outcome,
        };
        let complete_ns = (outcome != Outcome::Info).then_some(invoke_ns + duration_ns);
        Op {
            id: 0,
            process: 0,
            key: "k".to_owned(),
            kind,
            invoke_ns,
            complete_ns,
            outcome,
        }
    })
}

proptest! {
    #[test]
    fn agrees_with_brute_force_on_small_histories(
        ops in proptest::collection::vec(arbitrary_op(), 0..7)
    ) {
        let expected = if brute_force_linearizable(&ops) { Verdict::Valid } else { Verdict::Invalid };
        let report = report_of(ops.clone(), &LinearizabilityConfig::default());
        prop_assert_eq!(report.verdict, expected, "{}\n{:?}", report, ops);
    }
}

/// A small deterministic generator (xorshift) for the large history below.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn ten_thousand_ops_over_ten_keys_with_five_processes_check_valid() {
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let plan: Vec<Planned> = (0..10_000u64)
        .map(|index| Planned {
            process: random.below(5),
            key: random.below(10) as u8,
            kind: random.below(3) as u8,
            value: index + 1,
            expect: None,
            gap_ns: random.below(50),
            duration_ns: 2 + random.below(100),
            point_permille: random.below(1000),
            fate: random.below(100) as u8,
        })
        .collect();
    let history = simulate(&plan);
    let report = check_linearizable(&history, &LinearizabilityConfig::default());
    assert_eq!(report.verdict, Verdict::Valid, "{report}");
    assert_eq!(report.keys.len(), 10);
}
