//! Linearizability of a register per key: is there one order of the recorded ops, consistent
//! with real time, in which every key behaves as a single atomic register?
//!
//! Owns the register model and the search. The search is Wing & Gong's: walk the ops in
//! invocation order, tentatively linearize any op whose call is pending, backtrack when an op's
//! return is reached before it could be linearized. Lowe's memoisation prunes it: a (set of
//! linearized ops, register value) pair already explored is never explored again. Keys are
//! checked separately (a history is linearizable iff each key's sub-history is), which keeps each
//! search small and keeps a violation on one key from hiding behind another.
//!
//! How outcomes are read (as Jepsen's Knossos and etcd's robustness tests do):
//! - `Fail` ops definitely did not happen and are dropped; a compare-and-set whose comparison
//!   failed is recorded as `Fail` and so constrains nothing.
//! - `Info` ops may or may not have happened: a write or compare-and-set may take effect at any
//!   point after its invocation (its completion counts as +infinity) or not at all; an `Info` read
//!   returned nothing and is dropped. An `Info` write whose value nobody observed (no read returned
//!   it, no compare-and-set expected it) is dropped too, since taking effect could only overwrite
//!   a value until the next write: omitting it is always at least as good.
//! - Ops that touch at the same nanosecond (one completes when the other is invoked) count as
//!   concurrent, so coarse clocks cause no false alarms.
//!
//! The register starts empty (`None`). The search is bounded by
//! [`LinearizabilityConfig::max_states_per_key`]; a key that hits it is `Unknown`, never a pass.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checker::Verdict;
use crate::history::{History, Op, OpId, OpKind, Outcome, Value};

/// Default bound on distinct search states (linearized set, register value) explored per key.
pub const DEFAULT_MAX_STATES_PER_KEY: u64 = 1_000_000;

/// Linearized ops shown before the point where a violation was found.
pub const EXPLAIN_RECENT_OPS: usize = 4;

/// Pending ops (concurrent candidates that could not be linearized) shown in a violation.
pub const EXPLAIN_MAX_PENDING_OPS: usize = 8;

/// Bounds of the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityConfig {
    /// Distinct search states explored on one key before its result is `Unknown`.
    pub max_states_per_key: u64,
}

impl Default for LinearizabilityConfig {
    fn default() -> Self {
        LinearizabilityConfig {
            max_states_per_key: DEFAULT_MAX_STATES_PER_KEY,
        }
    }
}

/// The linearizability checker's report: an overall verdict and one entry per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinearizabilityReport {
    pub verdict: Verdict,
    /// In key order.
    pub keys: Vec<KeyReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    pub key: String,
    /// Ops that took part in the search.
    pub ops_checked: usize,
    /// Ops that constrain nothing: failed ops, indeterminate reads, unobserved indeterminate writes.
    pub ops_dropped: usize,
    pub states_explored: u64,
    /// Flattened into the key's JSON object: `"result": "ok" | "violation" | "unknown"`, plus the
    /// violation's fields.
    #[serde(flatten)]
    pub result: KeyResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KeyResult {
    Ok,
    Violation(Violation),
    /// The search bound was hit before a linearization was found or ruled out.
    Unknown,
}

/// Where the search got stuck: the longest order it could build, and the op that could not be
/// fitted after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Ops in the longest linearizable prefix found.
    pub linearized_ops: usize,
    /// The register after that prefix.
    pub register: Option<Value>,
    /// The last few ops of that prefix, in linearization order.
    pub recent: Vec<OpSummary>,
    /// The op that completed without any way to linearize it (and everything pending) first.
    pub stuck: Option<OpSummary>,
    /// Other ops invoked before `stuck` completed and not yet linearized.
    pub pending: Vec<OpSummary>,
}

/// One op as shown in an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpSummary {
    pub id: OpId,
    pub process: u64,
    pub kind: OpKind,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    pub complete_ns: Option<u64>,
}

/// Checks every key of `history` as an independent register.
pub fn check_linearizable(
    history: &History,
    config: &LinearizabilityConfig,
) -> LinearizabilityReport {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history.ops() {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: Vec<KeyReport> = by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, config))
        .collect();
    let verdict = overall_verdict(&keys);
    LinearizabilityReport { verdict, keys }
}

fn overall_verdict(keys: &[KeyReport]) -> Verdict {
    let any = |wanted: fn(&KeyResult) -> bool| keys.iter().any(|key| wanted(&key.result));
    if any(|result| matches!(result, KeyResult::Violation(_))) {
        Verdict::Invalid
    } else if any(|result| matches!(result, KeyResult::Unknown)) {
        Verdict::Unknown
    } else {
        Verdict::Valid
    }
}

fn check_key(key: &str, ops: &[&Op], config: &LinearizabilityConfig) -> KeyReport {
    let relevant = relevant_ops(ops);
    let (result, states_explored) = Search::new(&relevant).run(config.max_states_per_key);
    KeyReport {
        key: key.to_owned(),
        ops_checked: relevant.len(),
        ops_dropped: ops.len() - relevant.len(),
        states_explored,
        result,
    }
}

/// Drops the ops that constrain nothing (see the module documentation).
fn relevant_ops<'a>(ops: &[&'a Op]) -> Vec<&'a Op> {
    let kept: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| match op.outcome {
            Outcome::Fail => false,
            Outcome::Info => op.kind != OpKind::Read,
            Outcome::Ok { .. } => true,
        })
        .collect();
    let observed: HashSet<Value> = kept.iter().filter_map(|op| observed_value(op)).collect();
    kept.into_iter()
        .filter(|op| {
            op.outcome != Outcome::Info || written_value(op).is_none_or(|v| observed.contains(&v))
        })
        .collect()
}

/// The written value `op` depends on having seen, if any.
fn observed_value(op: &Op) -> Option<Value> {
    match (op.kind, op.outcome) {
        (OpKind::Read, Outcome::Ok { read }) => read,
        (OpKind::Cas { expect, .. }, _) => Some(expect),
        _ => None,
    }
}

/// The value `op` leaves in the register when it takes effect, if it writes.
fn written_value(op: &Op) -> Option<Value> {
    match op.kind {
        OpKind::Write(value) | OpKind::Cas { new: value, .. } => Some(value),
        OpKind::Read => None,
    }
}

/// The register model: the register after `op` takes effect on `register`, or `None` if `op`
/// cannot take effect there.
fn step(register: Option<Value>, op: &Op) -> Option<Option<Value>> {
    match op.kind {
        OpKind::Read => match op.outcome {
            Outcome::Ok { read } => (read == register).then_some(register),
            Outcome::Fail | Outcome::Info => None,
        },
        OpKind::Write(value) => Some(Some(value)),
        OpKind::Cas { expect, new } => (register == Some(expect)).then_some(Some(new)),
    }
}

/// Index meaning "no node" in the event list.
const NIL: usize = usize::MAX;
/// The list's sentinel head node.
const HEAD: usize = 0;

/// One call or return event in the doubly linked event list.
struct Node {
    op: usize,
    is_call: bool,
    /// For a call, its return node (`NIL` for an op that never returns, i.e. `Info`).
    partner: usize,
    prev: usize,
    next: usize,
}

/// A tentatively linearized op and the register before it, to undo on backtrack.
struct Frame {
    call: usize,
    register_before: Option<Value>,
}

struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Bitset {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    fn set(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }
}

/// The search over one key's ops.
struct Search<'a> {
    ops: &'a [&'a Op],
    nodes: Vec<Node>,
}

/// Everything the search loop mutates.
struct SearchState {
    linearized: Bitset,
    cache: HashSet<(Vec<u64>, Option<Value>)>,
    stack: Vec<Frame>,
    register: Option<Value>,
    required_left: usize,
    states_explored: u64,
    deepest: Option<Violation>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [&'a Op]) -> Self {
        // (time, 0 = call / 1 = return, op): calls sort before returns at the same instant.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            events.push((op.invoke_ns, 0, index));
            if let (Outcome::Ok { .. }, Some(complete_ns)) = (op.outcome, op.complete_ns) {
                events.push((complete_ns, 1, index));
            }
        }
        events.sort_unstable();
        Search {
            ops,
            nodes: link_events(&events),
        }
    }

    /// Returns the key's result and the number of states explored.
    fn run(mut self, max_states: u64) -> (KeyResult, u64) {
        let mut s = SearchState {
            linearized: Bitset::new(self.ops.len()),
            cache: HashSet::new(),
            stack: Vec::new(),
            register: None,
            required_left: self.ops.iter().filter(|op| is_required(op)).count(),
            states_explored: 0,
            deepest: None,
        };
        let mut cursor = self.nodes[HEAD].next;
        while s.required_left > 0 {
            if cursor != NIL && self.nodes[cursor].is_call {
                if !self.try_linearize(cursor, &mut s) {
                    cursor = self.nodes[cursor].next;
                    continue;
                }
                if s.states_explored > max_states {
                    return (KeyResult::Unknown, s.states_explored);
                }
                cursor = self.nodes[HEAD].next;
                continue;
            }
            // An op returned before it could be linearized: undo the latest choice.
            if s.deepest
                .as_ref()
                .is_none_or(|v| s.stack.len() > v.linearized_ops)
            {
                s.deepest = Some(self.explain(&s, cursor));
            }
            let Some(frame) = s.stack.pop() else {
                let violation = match s.deepest.take() {
                    Some(violation) => violation,
                    None => self.explain(&s, cursor),
                };
                return (KeyResult::Violation(violation), s.states_explored);
            };
            cursor = self.undo(frame, &mut s);
        }
        (KeyResult::Ok, s.states_explored)
    }

    /// Linearizes the op called at `call` next if the model allows it and the resulting state is
    /// new; returns whether it did.
    fn try_linearize(&mut self, call: usize, s: &mut SearchState) -> bool {
        let op_index = self.nodes[call].op;
        let Some(register_after) = step(s.register, self.ops[op_index]) else {
            return false;
        };
        s.linearized.set(op_index);
        if !s.cache.insert((s.linearized.words.clone(), register_after)) {
            s.linearized.clear(op_index);
            return false;
        }
        s.states_explored += 1;
        s.stack.push(Frame {
            call,
            register_before: s.register,
        });
        s.register = register_after;
        s.required_left -= usize::from(is_required(self.ops[op_index]));
        self.lift(call);
        true
    }

    /// Undoes `frame`; returns the node to continue from (the one after the undone call).
    fn undo(&mut self, frame: Frame, s: &mut SearchState) -> usize {
        let op_index = self.nodes[frame.call].op;
        s.linearized.clear(op_index);
        s.register = frame.register_before;
        s.required_left += usize::from(is_required(self.ops[op_index]));
        self.unlift(frame.call);
        self.nodes[frame.call].next
    }

    /// Removes a call and its return from the list; the nodes keep their links for `unlift`.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let partner = self.nodes[call].partner;
        if partner != NIL {
            self.unlink(partner);
        }
    }

    /// Puts back what `lift` removed, in reverse order.
    fn unlift(&mut self, call: usize) {
        let partner = self.nodes[call].partner;
        if partner != NIL {
            self.relink(partner);
        }
        self.relink(call);
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.nodes[node].prev, self.nodes[node].next);
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.nodes[node].prev, self.nodes[node].next);
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    /// Describes the state of the search when it reached the return at `stuck`.
    fn explain(&self, s: &SearchState, stuck: usize) -> Violation {
        let skip = s.stack.len().saturating_sub(EXPLAIN_RECENT_OPS);
        let recent = s.stack[skip..]
            .iter()
            .map(|frame| summary(self.ops[self.nodes[frame.call].op]))
            .collect();
        let stuck_op = (stuck != NIL).then(|| self.nodes[stuck].op);
        let mut pending = Vec::new();
        let mut node = self.nodes[HEAD].next;
        while node != stuck && node != NIL && pending.len() < EXPLAIN_MAX_PENDING_OPS {
            let Node { op, is_call, .. } = self.nodes[node];
            if is_call && Some(op) != stuck_op {
                pending.push(summary(self.ops[op]));
            }
            node = self.nodes[node].next;
        }
        Violation {
            linearized_ops: s.stack.len(),
            register: s.register,
            recent,
            stuck: stuck_op.map(|op| summary(self.ops[op])),
            pending,
        }
    }
}

/// Builds the doubly linked list of sorted `events` behind a sentinel head at index 0.
fn link_events(events: &[(u64, u8, usize)]) -> Vec<Node> {
    let mut nodes = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: if events.is_empty() { NIL } else { 1 },
    });
    let mut call_node_of_op = BTreeMap::new();
    for (position, &(_, kind, op)) in events.iter().enumerate() {
        let node = position + 1;
        let next = if node < events.len() { node + 1 } else { NIL };
        nodes.push(Node {
            op,
            is_call: kind == 0,
            partner: NIL,
            prev: position,
            next,
        });
        if kind == 0 {
            call_node_of_op.insert(op, node);
        } else if let Some(&call) = call_node_of_op.get(&op) {
            nodes[call].partner = node;
        }
    }
    nodes
}

/// Whether the op must take effect (it completed successfully) rather than may.
fn is_required(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok { .. })
}

fn summary(op: &Op) -> OpSummary {
    OpSummary {
        id: op.id,
        process: op.process,
        kind: op.kind,
        outcome: op.outcome,
        invoke_ns: op.invoke_ns,
        complete_ns: op.complete_ns,
    }
}

impl fmt::Display for OpSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, process, kind, outcome) = (self.id, self.process, self.kind, self.outcome);
        write!(f, "op {id} (process {process} {kind} -> {outcome}, ")?;
        match self.complete_ns {
            Some(complete_ns) => write!(f, "{}..{complete_ns} ns)", self.invoke_ns),
            None => write!(f, "{}.. ns, never completed)", self.invoke_ns),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let register = match self.register {
            Some(value) => value.to_string(),
            None => "empty".to_owned(),
        };
        write!(
            f,
            "after {} linearized ops the register is {register}",
            self.linearized_ops
        )?;
        if let Some(last) = self.recent.last() {
            write!(f, " (last: {last})")?;
        }
        if let Some(stuck) = &self.stuck {
            write!(f, "; {stuck} cannot be linearized")?;
        }
        if !self.pending.is_empty() {
            let pending: Vec<String> = self.pending.iter().map(ToString::to_string).collect();
            write!(f, "; also pending: {}", pending.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            KeyResult::Ok => write!(f, "key {:?}: ok", self.key),
            KeyResult::Violation(violation) => write!(f, "key {:?}: {violation}", self.key),
            KeyResult::Unknown => write!(
                f,
                "key {:?}: unknown after {} states",
                self.key, self.states_explored
            ),
        }
    }
}

impl fmt::Display for LinearizabilityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: usize = self.keys.iter().map(|key| key.ops_checked).sum();
        let keys = self.keys.len();
        write!(
            f,
            "linearizability: {} ({keys} keys, {ops} ops checked)",
            self.verdict
        )?;
        let bad: Vec<&KeyReport> = self
            .keys
            .iter()
            .filter(|key| match self.verdict {
                Verdict::Invalid => matches!(key.result, KeyResult::Violation(_)),
                Verdict::Unknown => matches!(key.result, KeyResult::Unknown),
                Verdict::Valid => false,
            })
            .collect();
        match bad.first() {
            Some(first) => write!(f, "; {} bad keys, first {first}", bad.len()),
            None => Ok(()),
        }
    }
}
