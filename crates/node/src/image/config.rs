//! [`ImageConfig`], what the runtime needs from an image config (entrypoint, cmd, env, working
//! dir, user, ports, labels), and [`resolve_argv`], the Kubernetes rule that combines it with a
//! container's `command` and `args`.

use std::collections::BTreeMap;

use super::spec::{ConfigFile, ContainerConfig};

/// How an image asks to be run. Empty vectors and strings mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in image order.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `port/proto` entries such as `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// OCI architecture (`amd64`, `arm64`, …); empty when the image does not say.
    pub architecture: String,
    pub os: String,
}

impl ImageConfig {
    pub(crate) fn from_file(file: &ConfigFile) -> ImageConfig {
        let empty = ContainerConfig::default();
        let c = file.config.as_ref().unwrap_or(&empty);
        ImageConfig {
            entrypoint: c.entrypoint.clone().unwrap_or_default(),
            cmd: c.cmd.clone().unwrap_or_default(),
            env: c.env.clone().unwrap_or_default(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            user: c.user.clone().unwrap_or_default(),
            exposed_ports: c
                .exposed_ports
                .as_ref()
                .map(|ports| ports.keys().cloned().collect())
                .unwrap_or_default(),
            labels: c.labels.clone().unwrap_or_default(),
            architecture: file.architecture.clone(),
            os: file.os.clone(),
        }
    }

    pub(crate) fn to_container_config(&self) -> ContainerConfig {
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let some_str = |s: &String| (!s.is_empty()).then(|| s.clone());
        ContainerConfig {
            entrypoint: some_vec(&self.entrypoint),
            cmd: some_vec(&self.cmd),
            env: some_vec(&self.env),
            working_dir: some_str(&self.working_dir),
            user: some_str(&self.user),
            exposed_ports: (!self.exposed_ports.is_empty()).then(|| {
                let empty_object = || serde_json::Value::Object(Default::default());
                self.exposed_ports
                    .iter()
                    .map(|p| (p.clone(), empty_object()))
                    .collect()
            }),
            labels: (!self.labels.is_empty()).then(|| self.labels.clone()),
        }
    }
}

/// The argv a container runs, as Kubernetes resolves it: a container `command` replaces the
/// image Entrypoint and drops the image Cmd; `args` replaces the image Cmd. Empty means unset.
pub fn resolve_argv(
    image_entrypoint: &[String],
    image_cmd: &[String],
    pod_command: &[String],
    pod_args: &[String],
) -> Vec<String> {
    let (head, tail) = match (pod_command.is_empty(), pod_args.is_empty()) {
        (false, _) => (pod_command, pod_args),
        (true, false) => (image_entrypoint, pod_args),
        (true, true) => (image_entrypoint, image_cmd),
    };
    head.iter().chain(tail).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn check(entrypoint: &str, cmd: &str, command: &str, args: &str, expected: &str) {
        let got = resolve_argv(
            &words(entrypoint),
            &words(cmd),
            &words(command),
            &words(args),
        );
        assert_eq!(
            got,
            words(expected),
            "ep={entrypoint:?} cmd={cmd:?} command={command:?} args={args:?}"
        );
    }

    #[test]
    fn argv_follows_the_kubernetes_table() {
        // entrypoint    cmd          command      args        -> argv
        check("/ep", "a b", "", "", "/ep a b");
        check("/ep", "a b", "/cmd", "", "/cmd");
        check("/ep", "a b", "", "x y", "/ep x y");
        check("/ep", "a b", "/cmd", "x", "/cmd x");
        check("", "/bin/sh -c true", "", "", "/bin/sh -c true");
        check("", "/bin/sh", "", "-x", "-x");
        check("", "", "", "", "");
    }
}
