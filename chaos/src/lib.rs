//! Chaos harness: hosts in network namespaces, fault injection, workloads, history checkers and
//! reports.
//!
//! The pure half decides: [`history`] (the operation log workloads record, as JSON Lines),
//! [`checker`] (linearizability of registers, watch delivery, "one pod never ran on two hosts at
//! once"), [`net`] (addresses in 198.18.0.0/15 and names), [`netfault`] (partition shapes →
//! iptables rules), [`fault`] and [`scenario`] (seeded fault schedules) and [`report`].
//!
//! The IO half acts: [`host`] and [`cluster`] (namespaces, bridge, peer and agent processes),
//! [`image`] (the busybox image agents run), [`proxy`]
//! (delay), [`nemesis`] (carrying faults out), [`workload`] (clients and watchers),
//! [`verify`] and [`podcheck`] (end-of-run checks against the live cluster and the agents'
//! journals), [`run`] (one run, start to finish)
//! and [`clean`] / [`podclean`] (removing leftovers, agents' containers, mounts and cgroups
//! included).

pub mod checker;
pub mod clean;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod error;
pub mod fault;
pub mod history;
pub mod host;
pub mod image;
pub mod matrix;
pub mod nemesis;
pub mod net;
pub mod netfault;
pub mod podcheck;
pub mod podclean;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sys;
pub mod verify;
pub mod workload;

pub use error::ChaosError;

/// The `flotilla` binary a test or harness run drives: `$FLOTILLA_BIN`, or the one built next to
/// the running executable (or next to its `deps/` directory, where cargo puts test binaries).
/// Panics, saying how to build it, when it is missing.
pub fn flotilla_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("FLOTILLA_BIN") {
        return std::path::PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe
        .parent()
        .expect("the executable's directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("flotilla");
    assert!(
        bin.is_file(),
        "{} is missing: cargo build -p flotilla-cli --bin flotilla",
        bin.display()
    );
    bin
}
