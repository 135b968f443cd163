//! The matrix: every chosen scenario × a range of seeds, one run after another, summed up in a
//! table (see [`crate::report::matrix_table`]) and written to `matrix.json`.

use std::path::Path;

use crate::error::ChaosError;
use crate::report::{MatrixEntry, Report};
use crate::run::{self, RunConfig};

/// Most runs one matrix makes.
pub const MAX_MATRIX_RUNS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct MatrixConfig {
    pub scenarios: Vec<String>,
    pub first_seed: u64,
    pub seeds: u64,
    /// Settings shared by every run; its scenario and seed are replaced per run.
    pub base: RunConfig,
}

/// Runs the matrix, calling `each` after every run (for progress output).
pub async fn run_matrix(
    config: &MatrixConfig,
    mut each: impl FnMut(&MatrixEntry, Option<&Report>),
) -> Result<Vec<MatrixEntry>, ChaosError> {
    let runs = config.scenarios.len() as u64 * config.seeds;
    if runs > MAX_MATRIX_RUNS as u64 {
        return Err(ChaosError::Config(format!(
            "{runs} runs is more than the matrix allows ({MAX_MATRIX_RUNS})"
        )));
    }
    let mut entries = Vec::new();
    for scenario in &config.scenarios {
        for seed in config.first_seed..config.first_seed + config.seeds {
            let mut run_config = config.base.clone();
            run_config.scenario = scenario.clone();
            run_config.seed = seed;
            let (entry, report) = match run::run(&run_config).await {
                Ok(report) => (MatrixEntry::from_report(&report), Some(report)),
                Err(e) => (errored(scenario, seed, &e), None),
            };
            each(&entry, report.as_ref());
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn errored(scenario: &str, seed: u64, error: &ChaosError) -> MatrixEntry {
    MatrixEntry {
        scenario: scenario.to_string(),
        seed,
        verdict: None,
        error: Some(error.to_string()),
        ops_per_s: 0.0,
        p99_ms: 0.0,
        failed_checks: Vec::new(),
    }
}

/// Writes the entries as `matrix.json` in `dir`.
pub fn write_matrix(dir: &Path, entries: &[MatrixEntry]) -> Result<(), ChaosError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ChaosError::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join("matrix.json");
    let text = serde_json::to_string_pretty(entries).map_err(|source| ChaosError::Json {
        what: "matrix".into(),
        source,
    })?;
    std::fs::write(&path, text)
        .map_err(|e| ChaosError::io(format!("writing {}", path.display()), e))
}
