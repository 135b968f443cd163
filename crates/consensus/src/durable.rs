//! How much of this peer's Raft log is on disk, shared by the log (which advances it), the state
//! machine (which applies nothing beyond it) and the transport (which tells followers of no commit
//! beyond it).
//!
//! openraft 0.9 waits for the leader's own fsync before it sends new entries to the followers, so
//! a write paid two fsyncs in turn (the leader's, then a follower's). The leader instead reports
//! its own appends written at once and fsyncs them while they are being replicated (Raft thesis,
//! §10.2.1). openraft may then count an entry committed when a follower has it on disk and the
//! leader does not yet; nothing anyone can observe follows from that until the leader's fsync
//! lands, because:
//! - the state machine applies an entry (and so answers its client or a read) only once the local
//!   log holds it on disk: [`Durability::wait_for`];
//! - the leader tells followers of a commit no further than its own log is on disk:
//!   [`Durability::clamp_commit`];
//! - a follower reports an append only once it is on disk, as before.
//!
//! So every entry applied anywhere is on disk on the leader and on a majority with it, exactly as
//! if the leader had waited.

use std::sync::Arc;

use openraft::CommittedLeaderId;
use tokio::sync::watch;

use crate::types::LogId;

#[derive(Debug, Clone, Default)]
struct State {
    /// Bumped by every truncation: a flush of entries appended before it says nothing about the
    /// entries appended after it at the same indexes.
    generation: u64,
    /// The last log entry known to be on disk, with every entry before it.
    last: Option<LogId>,
    /// Why the log could not be flushed; the peer stops applying.
    failed: Option<String>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Durability {
    state: watch::Sender<State>,
}

impl Durability {
    /// Nothing known to be on disk yet; the log store sets where its log ends when it opens.
    pub fn new() -> Arc<Durability> {
        Arc::new(Durability {
            state: watch::Sender::new(State::default()),
        })
    }

    /// For a state machine driven without a Raft log (tests of apply on its own): every index
    /// counts as on disk, so it never waits.
    pub fn ungated() -> Arc<Durability> {
        let everything = LogId::new(CommittedLeaderId::new(u64::MAX, 0), u64::MAX);
        Arc::new(Durability {
            state: watch::Sender::new(State {
                last: Some(everything),
                ..State::default()
            }),
        })
    }

    /// The generation an append is written in; see [`Durability::flushed`].
    pub(crate) fn generation(&self) -> u64 {
        self.state.borrow().generation
    }

    /// Entries up to `upto`, appended in `generation`, are on disk.
    pub(crate) fn flushed(&self, generation: u64, upto: LogId) {
        self.state.send_if_modified(|s| {
            let newer = s.last.is_none_or(|last| upto.index > last.index);
            if s.generation == generation && newer {
                s.last = Some(upto);
                true
            } else {
                false
            }
        });
    }

    /// The whole log is on disk and ends at `last` (after opening it, or a synced truncation).
    pub(crate) fn reset(&self, last: Option<LogId>) {
        self.state.send_modify(|s| {
            s.generation += 1;
            s.last = last;
        });
    }

    /// The log could not be flushed, or was closed: waiters get `reason` (the first one given),
    /// and so does every later wait.
    pub(crate) fn failed(&self, reason: String) {
        self.state.send_modify(|s| {
            s.failed.get_or_insert(reason);
        });
    }

    /// The commit a leader may tell its followers of: `committed`, or less when its own log is
    /// not yet on disk that far.
    pub(crate) fn clamp_commit(&self, committed: Option<LogId>) -> Option<LogId> {
        match (committed, self.state.borrow().last) {
            (Some(c), Some(last)) if c.index > last.index => Some(last),
            (Some(_), None) => None,
            (committed, _) => committed,
        }
    }

    /// Waits until the log is on disk up to `index`.
    pub(crate) async fn wait_for(&self, index: u64) -> Result<(), String> {
        let reached =
            |s: &State| s.failed.is_some() || s.last.is_some_and(|last| last.index >= index);
        let mut changes = self.state.subscribe();
        let state = changes
            .wait_for(reached)
            .await
            .map_err(|_| "the Raft log was closed".to_string())?;
        match &state.failed {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    async fn settles(durability: &Durability, index: u64) -> Option<Result<(), String>> {
        tokio::time::timeout(Duration::from_millis(50), durability.wait_for(index))
            .await
            .ok()
    }

    #[tokio::test]
    async fn apply_waits_until_the_log_is_on_disk_that_far() {
        let durability = Durability::new();
        durability.reset(Some(log_id(1, 3)));
        assert_eq!(settles(&durability, 3).await, Some(Ok(())));
        assert_eq!(
            settles(&durability, 5).await,
            None,
            "index 5 is not on disk yet"
        );

        let waiting = {
            let durability = durability.clone();
            tokio::spawn(async move { durability.wait_for(5).await })
        };
        durability.flushed(durability.generation(), log_id(1, 4));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "4 on disk does not release a wait for 5"
        );
        durability.flushed(durability.generation(), log_id(1, 5));
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_flush_from_before_a_truncation_says_nothing_about_the_entries_after_it() {
        let durability = Durability::new();
        durability.reset(Some(log_id(1, 2)));
        let before = durability.generation();
        // Entries 3..=6 of term 1 were appended; a new leader's log replaces them from 4 on.
        durability.reset(Some(log_id(1, 3)));
        durability.flushed(before, log_id(1, 6));
        assert_eq!(settles(&durability, 4).await, None);
        assert_eq!(
            durability.clamp_commit(Some(log_id(2, 5))),
            Some(log_id(1, 3))
        );
        durability.flushed(durability.generation(), log_id(2, 5));
        assert_eq!(settles(&durability, 5).await, Some(Ok(())));
    }

    #[tokio::test]
    async fn followers_hear_of_no_commit_beyond_the_leaders_disk() {
        let durability = Durability::new();
        assert_eq!(durability.clamp_commit(Some(log_id(1, 1))), None);
        durability.reset(Some(log_id(1, 7)));
        assert_eq!(durability.clamp_commit(None), None);
        assert_eq!(
            durability.clamp_commit(Some(log_id(1, 5))),
            Some(log_id(1, 5))
        );
        assert_eq!(
            durability.clamp_commit(Some(log_id(1, 9))),
            Some(log_id(1, 7))
        );
    }

    #[tokio::test]
    async fn a_failed_flush_fails_every_wait() {
        let durability = Durability::new();
        durability.reset(Some(log_id(1, 1)));
        durability.failed("disk gone".into());
        assert_eq!(settles(&durability, 2).await, Some(Err("disk gone".into())));
        assert_eq!(settles(&durability, 1).await, Some(Err("disk gone".into())));
    }
}
