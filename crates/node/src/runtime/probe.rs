//! Probe scheduling as a pure state machine: [`ProbeState`] decides when a probe is due and
//! turns a run of outcomes into a result with Kubernetes' semantics (`initialDelaySeconds`,
//! `periodSeconds`, `failureThreshold`, `successThreshold`). Time is the offset since the
//! container started, passed in by the caller, so tests drive it synthetically; the IO lives
//! in `probe_exec.rs`.

use std::time::Duration;

/// How often and how strictly a probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    /// Consecutive successes that make a failed probe succeed again (≥ 1).
    pub success_threshold: u32,
    /// Consecutive failures that make a probe fail (≥ 1).
    pub failure_threshold: u32,
}

impl Default for ProbeTiming {
    /// Kubernetes' defaults: no delay, every 10 s, 1 s timeout, 1 success, 3 failures.
    fn default() -> ProbeTiming {
        ProbeTiming {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

/// What a probe currently says about its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Not yet decided (a startup probe before its first verdict).
    Unknown,
    Success,
    Failure,
}

/// The outcome of one probe run (a timeout is a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    Failure,
}

/// One probe of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    timing: ProbeTiming,
    next_due: Duration,
    in_flight: bool,
    successes: u32,
    failures: u32,
    result: ProbeResult,
}

impl ProbeState {
    /// A probe for a container that just started. Kubernetes starts liveness probes as
    /// `Success`, readiness probes as `Failure` and startup probes as `Unknown`.
    pub fn new(timing: ProbeTiming, initial: ProbeResult) -> ProbeState {
        let timing = ProbeTiming {
            success_threshold: timing.success_threshold.max(1),
            failure_threshold: timing.failure_threshold.max(1),
            period: timing.period.max(Duration::from_millis(1)),
            ..timing
        };
        ProbeState {
            next_due: timing.initial_delay,
            timing,
            in_flight: false,
            successes: 0,
            failures: 0,
            result: initial,
        }
    }

    pub fn timing(&self) -> &ProbeTiming {
        &self.timing
    }

    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// When the next probe should start (offset since the container started).
    pub fn next_due(&self) -> Duration {
        self.next_due
    }

    /// Whether a probe should start at `now`: it is due and none is running.
    pub fn is_due(&self, now: Duration) -> bool {
        !self.in_flight && now >= self.next_due
    }

    /// A probe starts at `now`; the next one is due a period later.
    pub fn begin(&mut self, now: Duration) {
        self.in_flight = true;
        self.next_due = now + self.timing.period;
    }

    /// Records a finished probe; returns the new result when it changed.
    pub fn record(&mut self, outcome: ProbeOutcome) -> Option<ProbeResult> {
        self.in_flight = false;
        let before = self.result;
        match outcome {
            ProbeOutcome::Success => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                if self.successes >= self.timing.success_threshold {
                    self.result = ProbeResult::Success;
                }
            }
            ProbeOutcome::Failure => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                if self.failures >= self.timing.failure_threshold {
                    self.result = ProbeResult::Failure;
                }
            }
        }
        (self.result != before).then_some(self.result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Steps: (time in s, outcome of a probe started then or None to check it is not due)
    /// → the expected result after each step, with `changed` marking a transition.
    fn check(
        timing: ProbeTiming,
        initial: ProbeResult,
        steps: &[(u64, Option<ProbeOutcome>, ProbeResult, bool)],
    ) {
        let mut probe = ProbeState::new(timing, initial);
        for (i, (at, outcome, expected, changed)) in steps.iter().enumerate() {
            let now = secs(*at);
            match outcome {
                None => assert!(!probe.is_due(now), "step {i}: not due at {at}s"),
                Some(outcome) => {
                    assert!(probe.is_due(now), "step {i}: due at {at}s");
                    probe.begin(now);
                    assert!(!probe.is_due(now), "step {i}: in flight");
                    let transition = probe.record(*outcome);
                    assert_eq!(transition.is_some(), *changed, "step {i}: transition");
                }
            }
            assert_eq!(probe.result(), *expected, "step {i}");
        }
    }

    use ProbeOutcome::{Failure as F, Success as S};
    use ProbeResult::{Failure, Success, Unknown};

    #[test]
    fn liveness_fails_after_the_failure_threshold() {
        let timing = ProbeTiming {
            initial_delay: secs(5),
            period: secs(10),
            failure_threshold: 3,
            ..ProbeTiming::default()
        };
        check(
            timing,
            Success,
            &[
                (0, None, Success, false),
                (4, None, Success, false),
                (5, Some(F), Success, false),
                (14, None, Success, false),
                (15, Some(F), Success, false),
                (25, Some(S), Success, false),
                (35, Some(F), Success, false),
                (45, Some(F), Success, false),
                (55, Some(F), Failure, true),
            ],
        );
    }

    #[test]
    fn readiness_needs_the_success_threshold_to_recover() {
        let timing = ProbeTiming {
            period: secs(1),
            success_threshold: 2,
            failure_threshold: 1,
            ..ProbeTiming::default()
        };
        check(
            timing,
            Failure,
            &[
                (0, Some(S), Failure, false),
                (1, Some(S), Success, true),
                (2, Some(F), Failure, true),
                (3, Some(S), Failure, false),
                (4, Some(F), Failure, false),
                (5, Some(S), Failure, false),
                (6, Some(S), Success, true),
            ],
        );
    }

    #[test]
    fn startup_probe_leaves_unknown_on_its_first_verdict() {
        let timing = ProbeTiming {
            period: secs(2),
            failure_threshold: 2,
            ..ProbeTiming::default()
        };
        check(
            timing,
            Unknown,
            &[
                (0, Some(F), Unknown, false),
                (1, None, Unknown, false),
                (2, Some(F), Failure, true),
            ],
        );
        check(timing, Unknown, &[(0, Some(S), Success, true)]);
    }

    #[test]
    fn a_slow_probe_delays_the_next_one_and_zero_thresholds_count_as_one() {
        let timing = ProbeTiming {
            period: secs(10),
            success_threshold: 0,
            failure_threshold: 0,
            ..ProbeTiming::default()
        };
        let mut probe = ProbeState::new(timing, Success);
        probe.begin(secs(0));
        assert!(!probe.is_due(secs(30)), "still in flight");
        assert_eq!(probe.record(F), Some(Failure));
        assert!(probe.is_due(secs(30)));
        assert_eq!(probe.next_due(), secs(10));
    }
}
