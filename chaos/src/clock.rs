//! The one clock of a run: history timestamps (ns) and fault times (ms) are both measured from
//! the moment the run's clock was created, so they line up in the report.

use std::time::Instant;

use crate::history::Clock;

#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    origin: Instant,
}

impl RunClock {
    pub fn start() -> Self {
        RunClock {
            origin: Instant::now(),
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` after the origin.
    pub fn at_ms(&self, ms: u64) -> Instant {
        self.origin + std::time::Duration::from_millis(ms)
    }
}

impl Clock for RunClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
