//! The node lease file: the agent writes until when (on `CLOCK_MONOTONIC`, which every process
//! of the host shares) its lease is valid; each container's shim reads it and kills its
//! container once that time has passed. So the node self-fences (design decision 6) even when the
//! agent process itself is dead, while an agent that restarts within the lease adopts its
//! containers untouched.

use std::path::Path;
use std::time::Duration;

/// How often a shim looks at the lease.
pub const LEASE_CHECK_PERIOD: Duration = Duration::from_millis(200);

/// Nanoseconds on the host's monotonic clock.
pub fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records that the lease holds until `valid_until_ns` (monotonic). Atomic (write + rename).
pub fn write(path: &Path, valid_until_ns: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, valid_until_ns.to_string())?;
    std::fs::rename(&tmp, path)
}

/// What the lease file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Valid,
    Lapsed,
    /// No readable lease: none written yet, or the file is gone.
    Absent,
}

/// Reads the lease recorded in `path`.
pub fn read(path: &Path) -> Lease {
    match std::fs::read_to_string(path) {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(until) if monotonic_now_ns() > until => Lease::Lapsed,
            Ok(_) => Lease::Valid,
            Err(_) => Lease::Absent,
        },
        Err(_) => Lease::Absent,
    }
}

/// Whether a shim must fence its container. A lease that was never seen enforces nothing (a
/// runtime used without an agent, or a container started before the first renewal); one that
/// was seen and is now gone — the agent's data directory was deleted under it — counts as
/// lapsed, so containers never outlive their node's state.
pub fn must_fence(lease: Lease, seen_before: bool) -> bool {
    match lease {
        Lease::Lapsed => true,
        Lease::Valid => false,
        Lease::Absent => seen_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapses_only_after_the_recorded_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease");
        assert_eq!(read(&path), Lease::Absent, "no file yet");
        assert!(
            !must_fence(read(&path), false),
            "never seen: nothing to enforce"
        );
        write(&path, monotonic_now_ns() + 60_000_000_000).unwrap();
        assert_eq!(read(&path), Lease::Valid);
        write(&path, monotonic_now_ns().saturating_sub(1)).unwrap();
        assert!(must_fence(read(&path), true));
    }

    #[test]
    fn a_lease_that_disappears_fences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease");
        write(&path, monotonic_now_ns() + 60_000_000_000).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(must_fence(read(&path), true));
    }
}
