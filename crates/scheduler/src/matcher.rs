//! Selector requirements compiled to interned ids, and their evaluation against interned label
//! sets.
//!
//! Requirements live flattened in one `ExprList` (expressions plus one shared value array) so a
//! pod's whole node affinity or anti-affinity is two vectors that are cleared and refilled, not
//! reallocated, for every pod of a batch. A label set is a slice of `(key, value)` ids sorted by
//! key id.

use crate::intern::Interner;
use crate::model::{LabelSelector, SelectorOperator, SelectorRequirement};

/// Labels as interned `(key, value)` pairs, sorted by key id.
pub(crate) type Labels = [(u32, u32)];

/// A contiguous run of expressions inside an `ExprList`: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn is_empty(self) -> bool {
        self.start == self.end
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// `None` when the requirement's value is not an integer: then nothing matches.
    Gt(Option<i64>),
    Lt(Option<i64>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Expr {
    key: u32,
    op: Op,
    values: Span,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct ExprList {
    exprs: Vec<Expr>,
    values: Vec<u32>,
}

/// The value of `key` in `labels`, if present.
pub(crate) fn label_value(labels: &Labels, key: u32) -> Option<u32> {
    labels.iter().find(|(k, _)| *k == key).map(|&(_, v)| v)
}

/// Interns (or looks up) a label map into `out`, sorted by key id. Keys that resolve to the
/// unknown id are kept: they never equal a selector key, which is the right outcome.
pub(crate) fn labels_into<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    resolve: &mut impl FnMut(&str) -> u32,
    out: &mut Vec<(u32, u32)>,
) {
    out.clear();
    out.extend(labels.into_iter().map(|(k, v)| (resolve(k), resolve(v))));
    out.sort_unstable();
}

impl ExprList {
    pub(crate) fn clear(&mut self) {
        self.exprs.clear();
        self.values.clear();
    }

    fn next_span_start(&self) -> u32 {
        self.exprs.len() as u32
    }

    fn span_from(&self, start: u32) -> Span {
        Span {
            start,
            end: self.exprs.len() as u32,
        }
    }

    fn push(
        &mut self,
        key: &str,
        op: SelectorOperator,
        values: &[String],
        resolve: &mut impl FnMut(&str) -> u32,
    ) {
        let first_value = self.values.len() as u32;
        let number = || values.first().and_then(|v| v.parse::<i64>().ok());
        let op = match op {
            SelectorOperator::In => Op::In,
            SelectorOperator::NotIn => Op::NotIn,
            SelectorOperator::Exists => Op::Exists,
            SelectorOperator::DoesNotExist => Op::DoesNotExist,
            SelectorOperator::Gt => Op::Gt(number()),
            SelectorOperator::Lt => Op::Lt(number()),
        };
        if matches!(op, Op::In | Op::NotIn) {
            self.values.extend(values.iter().map(|v| resolve(v)));
        }
        self.exprs.push(Expr {
            key: resolve(key),
            op,
            values: Span {
                start: first_value,
                end: self.values.len() as u32,
            },
        });
    }

    /// Appends a node selector term (an AND of requirements) and returns its span.
    pub(crate) fn push_node_term(
        &mut self,
        requirements: &[SelectorRequirement],
        resolve: &mut impl FnMut(&str) -> u32,
    ) -> Span {
        let start = self.next_span_start();
        for r in requirements {
            self.push(&r.key, r.operator, &r.values, resolve);
        }
        self.span_from(start)
    }

    /// Appends `matchLabels` as `In` requirements, then `matchExpressions`; returns the span.
    pub(crate) fn push_label_selector(
        &mut self,
        selector: &LabelSelector,
        resolve: &mut impl FnMut(&str) -> u32,
    ) -> Span {
        let start = self.next_span_start();
        for (key, value) in &selector.match_labels {
            self.push(
                key,
                SelectorOperator::In,
                std::slice::from_ref(value),
                resolve,
            );
        }
        for r in &selector.match_expressions {
            self.push(&r.key, r.operator.into(), &r.values, resolve);
        }
        self.span_from(start)
    }

    /// Whether every expression of `span` matches `labels`; an empty span matches.
    pub(crate) fn all_match(&self, span: Span, labels: &Labels, interner: &Interner) -> bool {
        self.exprs[span.start as usize..span.end as usize]
            .iter()
            .all(|e| self.expr_matches(e, labels, interner))
    }

    fn expr_matches(&self, e: &Expr, labels: &Labels, interner: &Interner) -> bool {
        let value = label_value(labels, e.key);
        let values = &self.values[e.values.start as usize..e.values.end as usize];
        match e.op {
            Op::In => value.is_some_and(|v| values.contains(&v)),
            Op::NotIn => value.is_none_or(|v| !values.contains(&v)),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt(bound) => numeric(value, interner)
                .zip(bound)
                .is_some_and(|(n, b)| n > b),
            Op::Lt(bound) => numeric(value, interner)
                .zip(bound)
                .is_some_and(|(n, b)| n < b),
        }
    }
}

fn numeric(value: Option<u32>, interner: &Interner) -> Option<i64> {
    value.and_then(|v| interner.number(v))
}
