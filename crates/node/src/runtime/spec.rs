//! [`ContainerSpec`]: what the agent asks the runtime to run, in plain data (filled from a Pod
//! container and its image), plus name validation shared by containers and sandboxes.

use std::path::PathBuf;

use crate::image::Rootfs;

use super::error::RuntimeError;

/// Longest container name or pod UID accepted (a DNS label is 63 bytes, a UUID 36).
pub const MAX_NAME_BYTES: usize = 63;
/// Most argv entries, environment entries or mounts one container may have.
pub const MAX_SPEC_ITEMS: usize = 1024;

/// One container of a pod, ready to run.
#[derive(Debug)]
pub struct ContainerSpec {
    /// The container's name inside its pod (a DNS label).
    pub name: String,
    /// The command line, already resolved by [`crate::image::resolve_argv`]; not empty.
    pub argv: Vec<String>,
    /// `KEY=value` entries. `PATH` gets a default when absent, `HOSTNAME` is always set.
    pub env: Vec<String>,
    /// Working directory inside the container; empty means `/`.
    pub working_dir: String,
    pub user: UserSpec,
    /// The container's root filesystem; the runtime owns it from now on and releases it on
    /// `remove` (or when starting fails).
    pub rootfs: Rootfs,
    pub resources: Resources,
    pub mounts: Vec<VolumeMount>,
}

/// Numeric user and groups the container process runs as; the default is root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resource requests and limits. `None` means "not set".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU request in millicores, mapped to cgroup shares (weight on v2).
    pub cpu_request_millis: Option<u64>,
    /// CPU limit in millicores, mapped to a CFS quota per period.
    pub cpu_limit_millis: Option<u64>,
    /// Memory limit; a container that exceeds it is OOM-killed.
    pub memory_limit_bytes: Option<u64>,
}

/// A host directory or file (hostPath or an emptyDir the agent created) bound into the
/// container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub host_path: PathBuf,
    /// Absolute path inside the container.
    pub container_path: String,
    pub read_only: bool,
}

/// Accepts pod UIDs and container names: 1..=63 bytes of `[a-z0-9-]`, not starting with `-`.
/// They become file names, cgroup names and libcontainer IDs, so nothing else is allowed.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<(), RuntimeError> {
    let reason = if name.is_empty() || name.len() > MAX_NAME_BYTES {
        "must be 1 to 63 bytes long"
    } else if name.starts_with('-') {
        "must not start with '-'"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "may contain only lower-case letters, digits and '-'"
    } else {
        return Ok(());
    };
    Err(RuntimeError::invalid(format!("{what} {name:?}"), reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool) {
        assert_eq!(validate_name("name", name).is_ok(), ok, "{name:?}");
    }

    #[test]
    fn names_are_dns_labels() {
        check("web", true);
        check("0f8e7c2a-1b2c-4d5e-8f90-123456789abc", true);
        check("", false);
        check("-x", false);
        check("Web", false);
        check("a/b", false);
        check("a.b", false);
        check("..", false);
        check(&"a".repeat(63), true);
        check(&"a".repeat(64), false);
    }
}
