//! Chaos harness: hosts in network namespaces, fault injection, workloads, history checkers and
//! reports.
//!
//! This crate so far holds the pure-logic half: [`history`] (the operation log workloads record,
//! as JSON Lines) and [`checker`] (linearizability of registers, watch delivery, and "one pod
//! never ran on two hosts at once"). Checkers take data and return serialisable reports; they do
//! no IO.

pub mod checker;
pub mod history;
