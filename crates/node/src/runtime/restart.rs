//! Restart policy and crash-loop backoff as a pure function. Kubernetes' rules: `Always`
//! restarts every exit, `OnFailure` only non-zero exits, `Never` none; each restart waits an
//! exponentially growing delay (10 s, 20 s, 40 s, … capped at 5 min), reset to the initial
//! delay when the container had run for 10 min. While a restart waits, the container's
//! reason is [`CRASH_LOOP_BACK_OFF`].

use std::time::Duration;

/// The waiting reason of a container whose restart is delayed.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";

/// A pod's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// The backoff constants (configurable so tests can use milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
    /// A container that ran at least this long restarts with the initial delay again.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    /// Kubernetes' values: 10 s doubling to 5 min, reset after 10 min of running.
    fn default() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
            reset_after: Duration::from_secs(600),
        }
    }
}

/// What the agent remembers about a container name's restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackoffState {
    pub restart_count: u32,
    /// The delay used before the previous restart.
    pub last_delay: Option<Duration>,
}

/// What to do after a container exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// The policy keeps the container terminated.
    Stay,
    /// Start it again once `delay` has passed since it finished; `next` replaces the state.
    Restart { delay: Duration, next: BackoffState },
}

/// Decides about a container that exited with `exit_code` after running for `ran_for`.
pub fn decide_restart(
    policy: RestartPolicy,
    config: &BackoffConfig,
    state: BackoffState,
    exit_code: i32,
    ran_for: Duration,
) -> RestartDecision {
    let restart = match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    };
    if !restart {
        return RestartDecision::Stay;
    }
    let previous = state.last_delay.filter(|_| ran_for < config.reset_after);
    let delay = match previous {
        Some(d) => d.saturating_mul(2).min(config.max),
        None => config.initial.min(config.max),
    };
    RestartDecision::Restart {
        delay,
        next: BackoffState {
            restart_count: state.restart_count.saturating_add(1),
            last_delay: Some(delay),
        },
    }
}

/// The waiting reason at `since_exit` after the exit, for a restart delayed by `delay`:
/// [`CRASH_LOOP_BACK_OFF`] until the delay passed, then none (the restart is due).
pub fn waiting_reason(delay: Duration, since_exit: Duration) -> Option<&'static str> {
    (since_exit < delay).then_some(CRASH_LOOP_BACK_OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Feeds exits (exit code, seconds run) in order; `expected` is the delay in seconds of
    /// each decision, `None` for Stay.
    fn check(policy: RestartPolicy, exits: &[(i32, u64)], expected: &[Option<u64>]) {
        let config = BackoffConfig::default();
        let mut state = BackoffState::default();
        let mut got = Vec::new();
        for (code, ran) in exits {
            match decide_restart(policy, &config, state, *code, secs(*ran)) {
                RestartDecision::Stay => got.push(None),
                RestartDecision::Restart { delay, next } => {
                    assert_eq!(next.restart_count, state.restart_count + 1);
                    state = next;
                    got.push(Some(delay.as_secs()));
                }
            }
        }
        assert_eq!(got, expected, "{policy:?} {exits:?}");
    }

    #[test]
    fn policies_decide_which_exits_restart() {
        use RestartPolicy::*;
        check(Always, &[(0, 1), (1, 1)], &[Some(10), Some(20)]);
        check(OnFailure, &[(0, 1)], &[None]);
        check(OnFailure, &[(2, 1), (137, 1)], &[Some(10), Some(20)]);
        check(Never, &[(1, 1), (0, 1)], &[None, None]);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let crash = (1, 1);
        let long_run = (1, 600);
        check(
            RestartPolicy::Always,
            &[
                crash, crash, crash, crash, crash, crash, crash, long_run, crash,
            ],
            &[
                Some(10),
                Some(20),
                Some(40),
                Some(80),
                Some(160),
                Some(300),
                Some(300),
                Some(10),
                Some(20),
            ],
        );
    }

    #[test]
    fn millisecond_configs_work_for_tests() {
        let config = BackoffConfig {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(12),
            reset_after: Duration::from_millis(100),
        };
        let mut state = BackoffState::default();
        let mut delays = Vec::new();
        for _ in 0..3 {
            if let RestartDecision::Restart { delay, next } =
                decide_restart(RestartPolicy::Always, &config, state, 1, Duration::ZERO)
            {
                delays.push(delay.as_millis());
                state = next;
            }
        }
        assert_eq!(delays, vec![5, 10, 12]);
    }

    #[test]
    fn crash_loop_back_off_is_reported_while_waiting() {
        assert_eq!(waiting_reason(secs(10), secs(3)), Some(CRASH_LOOP_BACK_OFF));
        assert_eq!(waiting_reason(secs(10), secs(10)), None);
    }
}
