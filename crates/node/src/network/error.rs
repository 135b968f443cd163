//! [`NetworkError`]: failures of pod networking, naming the plugin and CNI command involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid network config {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("CNI plugin {} is missing", path.display())]
    PluginMissing { path: PathBuf },
    #[error("running CNI plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI {command} with {plugin} failed (code {code:?}): {message}")]
    PluginFailed {
        plugin: String,
        command: &'static str,
        code: Option<u64>,
        message: String,
    },
    #[error("CNI {command} with {plugin} did not finish within {timeout_ms} ms")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout_ms: u64,
    },
    #[error("CNI {plugin} returned an unusable result: {reason}")]
    BadResult { plugin: String, reason: String },
}
