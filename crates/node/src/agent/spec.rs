//! From a Pod's container to what the runtime runs: environment (image env, then the
//! container's `env` with `valueFrom.configMapKeyRef` read through the Cluster API and
//! `$(VAR)` references expanded), requests and limits as runtime [`Resources`], the image user,
//! and the volume mounts. Everything except the ConfigMap reads is pure.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use flotilla_api::cluster::{GetRequest, ObjectRef};
use flotilla_state::objects::{ConfigMap, Container, EnvVar};
use tonic::Code;

use super::client::ApiClient;
use super::status::CREATE_CONTAINER_CONFIG_ERROR;
use crate::runtime::{Resources, UserSpec, VolumeMount};

/// Why a container cannot be started yet: the waiting reason and message to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub reason: &'static str,
    pub message: String,
}

impl Blocker {
    pub fn config(message: impl Into<String>) -> Blocker {
        Blocker {
            reason: CREATE_CONTAINER_CONFIG_ERROR,
            message: message.into(),
        }
    }
}

/// A pod volume ready on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVolume {
    pub path: PathBuf,
    /// Mounted read-only whatever the container asks (configMap volumes).
    pub read_only: bool,
}

/// Requests and limits as the runtime applies them (CPU in millicores, memory in bytes).
pub fn resources(container: &Container) -> Resources {
    let positive = |v: i64| (v > 0).then_some(v as u64);
    let r = &container.resources;
    Resources {
        cpu_request_millis: r
            .requests
            .get("cpu")
            .and_then(|q| positive(q.milli_value())),
        cpu_limit_millis: r.limits.get("cpu").and_then(|q| positive(q.milli_value())),
        memory_limit_bytes: r.limits.get("memory").and_then(|q| positive(q.value())),
    }
}

/// The image's `User` (`uid`, `uid:gid`, empty for root). Names would need the image's
/// `/etc/passwd`, which the agent does not read.
pub fn user_of(image_user: &str) -> Result<UserSpec, Blocker> {
    if image_user.is_empty() {
        return Ok(UserSpec::default());
    }
    let (uid, gid) = image_user.split_once(':').unwrap_or((image_user, ""));
    let parse = |s: &str| s.parse::<u32>().ok();
    match (parse(uid), gid) {
        (Some(uid), "") => Ok(UserSpec {
            uid,
            gid: uid,
            additional_gids: Vec::new(),
        }),
        (Some(uid), gid) => parse(gid)
            .map(|gid| UserSpec {
                uid,
                gid,
                additional_gids: Vec::new(),
            })
            .ok_or_else(|| {
                Blocker::config(format!(
                    "image user {image_user:?}: the group is not numeric"
                ))
            }),
        (None, _) => Err(Blocker::config(format!(
            "image user {image_user:?} is not numeric; user names are not supported"
        ))),
    }
}

/// Kubernetes' `$(VAR)` expansion: a reference to a variable defined earlier is replaced,
/// `$$` stands for `$`, anything else is left as written.
pub fn expand(value: &str, defined: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let reference = after.strip_prefix('(').and_then(|inner| {
            inner
                .find(')')
                .map(|end| (&inner[..end], &inner[end + 1..]))
        });
        match reference.and_then(|(name, tail)| defined.get(name).map(|v| (v, tail))) {
            Some((value, tail)) => {
                out.push_str(value);
                rest = tail;
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The image's environment overridden by the container's (`KEY=value` entries).
pub fn merge_env(image_env: &[String], container_env: &[(String, String)]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let image_pairs = image_env.iter().map(|e| {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        (k.to_string(), v.to_string())
    });
    for (key, value) in image_pairs.chain(container_env.iter().cloned()) {
        if !values.contains_key(&key) {
            keys.push(key.clone());
        }
        values.insert(key, value);
    }
    keys.into_iter()
        .map(|k| format!("{k}={}", values[&k]))
        .collect()
}

/// The container's own variables with their values: literal values expanded against the
/// ones before them, ConfigMap references read through the API (each ConfigMap once).
pub async fn container_env(
    client: &ApiClient,
    namespace: &str,
    env: &[EnvVar],
) -> Result<Vec<(String, String)>, Blocker> {
    let mut maps: HashMap<String, Option<ConfigMap>> = HashMap::new();
    let mut defined: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(env.len());
    for var in env {
        let key_ref = var
            .value_from
            .as_ref()
            .and_then(|f| f.config_map_key_ref.as_ref());
        let value = match key_ref {
            None => expand(&var.value, &defined),
            Some(selector) => {
                if !maps.contains_key(&selector.name) {
                    let map = config_map(client, namespace, &selector.name).await?;
                    maps.insert(selector.name.clone(), map);
                }
                let optional = selector.optional == Some(true);
                match (&maps[&selector.name], optional) {
                    (Some(map), _) if map.data.contains_key(&selector.key) => {
                        map.data[&selector.key].clone()
                    }
                    (_, true) => continue,
                    (Some(_), false) => {
                        return Err(Blocker::config(format!(
                            "couldn't find key {} in ConfigMap {namespace}/{}",
                            selector.key, selector.name
                        )))
                    }
                    (None, false) => {
                        return Err(Blocker::config(format!(
                            "configmap {:?} not found",
                            selector.name
                        )))
                    }
                }
            }
        };
        defined.insert(var.name.clone(), value.clone());
        out.push((var.name.clone(), value));
    }
    Ok(out)
}

/// Reads a ConfigMap through the Cluster API; `None` when it does not exist.
pub async fn config_map(
    client: &ApiClient,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigMap>, Blocker> {
    let request = GetRequest {
        r#ref: Some(ObjectRef {
            kind: "ConfigMap".into(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }),
        stale: false,
    };
    let response = client
        .call(|mut c| {
            let r = request.clone();
            async move { c.get(r).await }
        })
        .await;
    let object = match response {
        Ok(object) => object.object,
        Err(status) if status.code() == Code::NotFound => return Ok(None),
        Err(status) => {
            return Err(Blocker::config(format!(
                "reading configmap {name:?}: {}",
                status.message()
            )))
        }
    };
    let mut value: serde_json::Value = serde_json::from_slice(&object)
        .map_err(|e| Blocker::config(format!("configmap {name:?}: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| Blocker::config(format!("configmap {name:?}: {e}")))
}

/// The container's volume mounts on the host paths of the pod's prepared volumes.
pub fn mounts(
    container: &Container,
    volumes: &BTreeMap<String, HostVolume>,
) -> Result<Vec<VolumeMount>, Blocker> {
    container
        .volume_mounts
        .iter()
        .map(|m| {
            let volume = volumes
                .get(&m.name)
                .ok_or_else(|| Blocker::config(format!("volume {:?} is not ready", m.name)))?;
            Ok(VolumeMount {
                host_path: volume.path.clone(),
                container_path: m.mount_path.clone(),
                read_only: volume.read_only || m.read_only == Some(true),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use flotilla_state::objects::{Quantity, ResourceRequirements};

    use super::*;

    fn check_expand(value: &str, expected: &str) {
        let defined: HashMap<String, String> = [
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(expand(value, &defined), expected, "{value:?}");
    }

    #[test]
    fn references_to_earlier_variables_are_expanded() {
        check_expand("plain", "plain");
        check_expand("$(A)", "1");
        check_expand("a-$(A)-$(B)", "a-1-x y");
        check_expand("$(C)", "$(C)");
        check_expand("$$(A)", "$(A)");
        check_expand("$(A", "$(A");
        check_expand("cost: 5$", "cost: 5$");
    }

    #[test]
    fn container_env_overrides_image_env_in_place() {
        let image = vec!["PATH=/bin".to_string(), "A=image".to_string()];
        let ours = vec![
            ("A".to_string(), "pod".to_string()),
            ("B".to_string(), "2".to_string()),
        ];
        assert_eq!(merge_env(&image, &ours), vec!["PATH=/bin", "A=pod", "B=2"]);
    }

    fn check_user(text: &str, expected: Option<(u32, u32)>) {
        let got = user_of(text).ok().map(|u| (u.uid, u.gid));
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn numeric_image_users_are_accepted() {
        check_user("", Some((0, 0)));
        check_user("1000", Some((1000, 1000)));
        check_user("1000:50", Some((1000, 50)));
        check_user("nobody", None);
        check_user("1000:staff", None);
    }

    #[test]
    fn requests_and_limits_become_runtime_resources() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        let container = Container {
            resources: ResourceRequirements {
                requests: [("cpu".to_string(), q("250m"))].into_iter().collect(),
                limits: [
                    ("cpu".to_string(), q("1")),
                    ("memory".to_string(), q("64Mi")),
                ]
                .into_iter()
                .collect(),
            },
            ..Container::default()
        };
        let r = resources(&container);
        assert_eq!(r.cpu_request_millis, Some(250));
        assert_eq!(r.cpu_limit_millis, Some(1000));
        assert_eq!(r.memory_limit_bytes, Some(64 << 20));
        assert_eq!(resources(&Container::default()), Resources::default());
    }
}
