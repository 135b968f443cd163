//! What the harness's end-to-end tests share: the `flotilla` binary under test and the run
//! directory a `flotilla-chaos run` wrote.

use std::path::{Path, PathBuf};

use flotilla_chaos::report::Report;

pub use flotilla_chaos::flotilla_bin;

/// The one run directory under `out` (the one holding a report.json).
pub fn run_dir(out: &Path) -> PathBuf {
    std::fs::read_dir(out)
        .expect("output directory")
        .filter_map(Result::ok)
        .find(|e| e.path().join("report.json").is_file())
        .expect("a run directory with report.json")
        .path()
}

/// The report of the one run under `out`.
pub fn find_report(out: &Path) -> Report {
    let text = std::fs::read_to_string(run_dir(out).join("report.json")).expect("report.json");
    serde_json::from_str(&text).expect("report.json parses as a Report")
}
