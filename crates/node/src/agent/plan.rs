//! The decisions about one container, as pure functions: what the runtime shows of its current
//! instance ([`Observed`]), what to do about an exit ([`decide`], the restart policy with the
//! runtime's backoff), and the next step ([`plan`]). The pod worker executes the steps.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::runtime::{decide_restart, BackoffConfig, BackoffState, RestartDecision, RestartPolicy};

/// What the runtime shows of a container name's current instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No instance was started (or the runtime lost it).
    Never,
    Creating,
    Running {
        started_at: SystemTime,
    },
    /// The instance exited (or could not start: then `ran_for` is zero).
    Exited {
        exit_code: i32,
        ran_for: Duration,
        finished_at: SystemTime,
    },
}

/// What was decided about one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The restart policy keeps the container terminated.
    Stay,
    /// Start the next instance at `at` (`delay` after the exit), with backoff state `next`.
    RestartAt {
        at: Instant,
        delay: Duration,
        next: BackoffState,
    },
}

/// The next thing to do for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing: it runs, or it stays terminated, or starting is not allowed now.
    Keep,
    /// Start an instance that will carry backoff state `backoff`.
    Start { backoff: BackoffState },
    /// Wait for the restart delay (CrashLoopBackOff), then look again.
    WaitUntil(Instant),
    /// Its liveness probe failed: stop it (the exit is then decided like any other).
    Kill,
}

/// Decides about an exit observed now.
pub fn decide(
    policy: RestartPolicy,
    config: &BackoffConfig,
    backoff: BackoffState,
    exit_code: i32,
    ran_for: Duration,
    finished_at: SystemTime,
) -> Decision {
    match decide_restart(policy, config, backoff, exit_code, ran_for) {
        RestartDecision::Stay => Decision::Stay,
        RestartDecision::Restart { delay, next } => Decision::RestartAt {
            at: instant_of(finished_at) + delay,
            delay,
            next,
        },
    }
}

/// The monotonic instant of a wall-clock time in the past (now, for a future one).
pub fn instant_of(t: SystemTime) -> Instant {
    let age = SystemTime::now().duration_since(t).unwrap_or_default();
    let now = Instant::now();
    now.checked_sub(age).unwrap_or(now)
}

/// The next step for a container. `may_start` is false while the agent is fenced, while the
/// pod's sandbox is not ready, or once the pod finished for good.
pub fn plan(
    observed: &Observed,
    decision: Option<&Decision>,
    backoff: BackoffState,
    liveness_failed: bool,
    may_start: bool,
    now: Instant,
) -> Step {
    match (observed, decision) {
        (Observed::Creating, _) => Step::Keep,
        (Observed::Running { .. }, _) if liveness_failed => Step::Kill,
        (Observed::Running { .. }, _) => Step::Keep,
        (Observed::Never, _) if may_start => Step::Start { backoff },
        (Observed::Never, _) => Step::Keep,
        (Observed::Exited { .. }, None | Some(Decision::Stay)) => Step::Keep,
        (Observed::Exited { .. }, Some(Decision::RestartAt { at, .. })) if now < *at => {
            Step::WaitUntil(*at)
        }
        (Observed::Exited { .. }, Some(Decision::RestartAt { next, .. })) if may_start => {
            Step::Start { backoff: *next }
        }
        (Observed::Exited { .. }, Some(Decision::RestartAt { .. })) => Step::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn exited() -> Observed {
        Observed::Exited {
            exit_code: 1,
            ran_for: ms(5),
            finished_at: SystemTime::now(),
        }
    }

    fn check(
        observed: Observed,
        decision: Option<Decision>,
        liveness_failed: bool,
        may_start: bool,
        expected: Step,
        now: Instant,
    ) {
        let backoff = BackoffState::default();
        let got = plan(
            &observed,
            decision.as_ref(),
            backoff,
            liveness_failed,
            may_start,
            now,
        );
        assert_eq!(
            got, expected,
            "{observed:?} {decision:?} live_failed={liveness_failed} may={may_start}"
        );
    }

    #[test]
    fn steps_follow_the_observation_and_the_decision() {
        let now = Instant::now();
        let next = BackoffState {
            restart_count: 1,
            last_delay: Some(ms(10)),
        };
        let later = Decision::RestartAt {
            at: now + ms(10),
            delay: ms(10),
            next,
        };
        let due = Decision::RestartAt {
            at: now,
            delay: ms(10),
            next,
        };
        let first = Step::Start {
            backoff: BackoffState::default(),
        };
        let running = Observed::Running {
            started_at: SystemTime::now(),
        };
        //    observed          decision      live   may    -> step
        check(Observed::Never, None, false, true, first, now);
        check(Observed::Never, None, false, false, Step::Keep, now);
        check(running.clone(), None, false, true, Step::Keep, now);
        check(running, None, true, false, Step::Kill, now);
        check(Observed::Creating, None, true, true, Step::Keep, now);
        check(exited(), Some(Decision::Stay), false, true, Step::Keep, now);
        check(
            exited(),
            Some(later),
            false,
            true,
            Step::WaitUntil(now + ms(10)),
            now,
        );
        check(
            exited(),
            Some(due),
            false,
            true,
            Step::Start { backoff: next },
            now,
        );
        check(exited(), Some(due), false, false, Step::Keep, now);
    }

    #[test]
    fn decisions_apply_the_policy_and_the_backoff() {
        let config = BackoffConfig {
            initial: ms(100),
            max: ms(300),
            reset_after: Duration::from_secs(60),
        };
        let finished = SystemTime::now();
        let d = decide(
            RestartPolicy::OnFailure,
            &config,
            BackoffState::default(),
            0,
            ms(1),
            finished,
        );
        assert_eq!(d, Decision::Stay);
        let d = decide(
            RestartPolicy::Always,
            &config,
            BackoffState {
                restart_count: 2,
                last_delay: Some(ms(200)),
            },
            1,
            ms(1),
            finished,
        );
        let Decision::RestartAt { delay, next, at } = d else {
            panic!("{d:?}")
        };
        assert_eq!((delay, next.restart_count), (ms(300), 3));
        assert!(
            at > Instant::now() + ms(200),
            "the delay counts from the exit"
        );
    }
}
