//! Checkers that judge a chaos run after the fact, from recorded data only (no IO).
//!
//! - [`linearizable`]: every key behaves as one atomic register (reads, writes, compare-and-set).
//! - [`watch`]: every watcher saw each committed change in its range once, in revision order.
//! - [`overlap`]: one pod identity never ran on two hosts at the same time.
//!
//! Each returns a serialisable report for the run's JSON report, whose `Display` is a one-line
//! summary for humans.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod linearizable;
pub mod overlap;
pub mod watch;

/// The overall judgement of a checker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The recorded data satisfies the property.
    Valid,
    /// The recorded data proves the property was broken.
    Invalid,
    /// The checker gave up (a search bound was hit): neither a pass nor a failure.
    Unknown,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Verdict::Valid => "valid",
            Verdict::Invalid => "INVALID",
            Verdict::Unknown => "unknown",
        };
        f.write_str(word)
    }
}
