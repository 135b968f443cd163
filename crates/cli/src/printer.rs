//! Printing objects as kubectl does: tables per kind (`-o wide` adds columns), YAML, JSON and
//! names. Objects arrive as JSON documents from the Cluster API.

use std::fmt::Write as _;

use flotilla_state::objects::Kind;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

impl Format {
    pub fn parse(text: Option<&str>) -> Result<Format, String> {
        match text {
            None => Ok(Format::Table),
            Some("wide") => Ok(Format::Wide),
            Some("yaml") => Ok(Format::Yaml),
            Some("json") => Ok(Format::Json),
            Some("name") => Ok(Format::Name),
            Some(other) => Err(format!(
                "unable to match a printer suitable for the output format {other:?}, allowed formats are: json,name,wide,yaml"
            )),
        }
    }
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn n(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// kubectl's age: `45s`, `3m`, `2m30s` (under 10 minutes), `5h`, `3d`, …
pub fn age(created: &str, now_ms: i64) -> String {
    let Ok(time) = flotilla_state::objects::Time::parse(created) else {
        return "<unknown>".into();
    };
    let secs = ((now_ms - time.unix_millis()) / 1000).max(0);
    human_duration(secs)
}

pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => match s % 60 {
            0 => format!("{}m", s / 60),
            r => format!("{}m{r}s", s / 60),
        },
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => match (s % 3600) / 60 {
            0 => format!("{}h", s / 3600),
            m => format!("{}h{m}m", s / 3600),
        },
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => match (s % 86400) / 3600 {
            0 => format!("{}d", s / 86400),
            h => format!("{}d{h}h", s / 86400),
        },
        s => format!("{}d", s / 86400),
    }
}

fn headers(kind: Kind, wide: bool, namespaces: bool) -> Vec<&'static str> {
    let mut h: Vec<&'static str> = match kind {
        Kind::Pod => vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        Kind::Deployment => vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        Kind::ReplicaSet => vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        Kind::Service => vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE"],
        Kind::Node => vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        Kind::ConfigMap => vec!["NAME", "DATA", "AGE"],
        Kind::Namespace => vec!["NAME", "STATUS", "AGE"],
        Kind::Event => vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        Kind::HorizontalPodAutoscaler => vec![
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE",
        ],
    };
    if wide {
        match kind {
            Kind::Pod => h.extend(["IP", "NODE"]),
            Kind::Deployment | Kind::ReplicaSet => h.extend(["CONTAINERS", "IMAGES", "SELECTOR"]),
            Kind::Service => h.push("SELECTOR"),
            Kind::Node => h.extend(["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION"]),
            _ => {}
        }
    }
    if namespaces && kind.is_namespaced() {
        h.insert(0, "NAMESPACE");
    }
    h
}

/// The STATUS column of a pod, as kubectl derives it.
pub fn pod_status(pod: &Value) -> String {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return "Terminating".into();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for status in statuses.into_iter().flatten() {
        let reason = s(status, "/state/waiting/reason");
        if !reason.is_empty() {
            return reason.into();
        }
        let reason = s(status, "/state/terminated/reason");
        if !reason.is_empty() && s(pod, "/status/phase") != "Succeeded" {
            return reason.into();
        }
    }
    let reason = s(pod, "/status/reason");
    if !reason.is_empty() {
        return reason.into();
    }
    match s(pod, "/status/phase") {
        "" => "Pending".into(),
        phase => phase.into(),
    }
}

fn containers(v: &Value, pointer: &str) -> Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn selector_text(selector: Option<&Value>) -> String {
    let Some(map) = selector.and_then(Value::as_object) else {
        return "<none>".into();
    };
    if map.is_empty() {
        return "<none>".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

fn row(kind: Kind, obj: &Value, wide: bool, namespaces: bool, now_ms: i64) -> Vec<String> {
    let name = s(obj, "/metadata/name").to_string();
    let age = age(s(obj, "/metadata/creationTimestamp"), now_ms);
    let mut r: Vec<String> = match kind {
        Kind::Pod => {
            let statuses = containers(obj, "/status/containerStatuses");
            let total = containers(obj, "/spec/containers").len();
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count();
            let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
            vec![
                name,
                format!("{ready}/{total}"),
                pod_status(obj),
                restarts.to_string(),
                age,
            ]
        }
        Kind::Deployment => vec![
            name,
            format!(
                "{}/{}",
                n(obj, "/status/readyReplicas"),
                n(obj, "/spec/replicas")
            ),
            n(obj, "/status/updatedReplicas").to_string(),
            n(obj, "/status/availableReplicas").to_string(),
            age,
        ],
        Kind::ReplicaSet => vec![
            name,
            n(obj, "/spec/replicas").to_string(),
            n(obj, "/status/replicas").to_string(),
            n(obj, "/status/readyReplicas").to_string(),
            age,
        ],
        Kind::Service => {
            let ports = containers(obj, "/spec/ports")
                .iter()
                .map(|p| {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => format!("{}:{np}/{proto}", n(p, "/port")),
                        None => format!("{}/{proto}", n(p, "/port")),
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            let ip = match s(obj, "/spec/clusterIP") {
                "" => "<none>",
                ip => ip,
            };
            vec![
                name,
                s(obj, "/spec/type").to_string(),
                ip.to_string(),
                ports,
                age,
            ]
        }
        Kind::Node => {
            let ready = containers(obj, "/status/conditions")
                .iter()
                .find(|c| s(c, "/type") == "Ready")
                .map(|c| s(c, "/status") == "True");
            let mut status = match ready {
                Some(true) => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let version = match s(obj, "/status/nodeInfo/kubeletVersion") {
                "" => "<none>",
                v => v,
            };
            vec![name, status, "<none>".into(), age, version.into()]
        }
        Kind::ConfigMap => {
            let count = |p: &str| {
                obj.pointer(p)
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            };
            vec![
                name,
                (count("/data") + count("/binaryData")).to_string(),
                age,
            ]
        }
        Kind::Namespace => vec![name, s(obj, "/status/phase").to_string(), age],
        Kind::Event => {
            let last = match s(obj, "/lastTimestamp") {
                "" => s(obj, "/metadata/creationTimestamp"),
                t => t,
            };
            vec![
                self::age(last, now_ms),
                s(obj, "/type").to_string(),
                s(obj, "/reason").to_string(),
                format!(
                    "{}/{}",
                    s(obj, "/involvedObject/kind").to_lowercase(),
                    s(obj, "/involvedObject/name")
                ),
                s(obj, "/message").to_string(),
            ]
        }
        Kind::HorizontalPodAutoscaler => {
            let targets = containers(obj, "/spec/metrics")
                .iter()
                .map(|m| {
                    let current = containers(obj, "/status/currentMetrics")
                        .iter()
                        .find(|c| s(c, "/resource/name") == s(m, "/resource/name"))
                        .map(|c| format!("{}%", n(c, "/resource/current/averageUtilization")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!(
                        "{}: {current}/{}%",
                        s(m, "/resource/name"),
                        n(m, "/resource/target/averageUtilization")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                name,
                format!(
                    "{}/{}",
                    s(obj, "/spec/scaleTargetRef/kind"),
                    s(obj, "/spec/scaleTargetRef/name")
                ),
                targets,
                n(obj, "/spec/minReplicas").max(1).to_string(),
                n(obj, "/spec/maxReplicas").to_string(),
                n(obj, "/status/currentReplicas").to_string(),
                age,
            ]
        }
    };
    if wide {
        match kind {
            Kind::Pod => {
                let or_none = |v: &str| {
                    if v.is_empty() {
                        "<none>".to_string()
                    } else {
                        v.to_string()
                    }
                };
                r.push(or_none(s(obj, "/status/podIP")));
                r.push(or_none(s(obj, "/spec/nodeName")));
            }
            Kind::Deployment | Kind::ReplicaSet => {
                let cs = containers(obj, "/spec/template/spec/containers");
                r.push(
                    cs.iter()
                        .map(|c| s(c, "/name"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                r.push(
                    cs.iter()
                        .map(|c| s(c, "/image"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                r.push(selector_text(obj.pointer("/spec/selector/matchLabels")));
            }
            Kind::Service => r.push(selector_text(obj.pointer("/spec/selector"))),
            Kind::Node => {
                let ip = containers(obj, "/status/addresses")
                    .iter()
                    .find(|a| s(a, "/type") == "InternalIP")
                    .map(|a| s(a, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into());
                r.push(ip);
                r.push(s(obj, "/status/nodeInfo/osImage").to_string());
                r.push(s(obj, "/status/nodeInfo/kernelVersion").to_string());
            }
            _ => {}
        }
    }
    if namespaces && kind.is_namespaced() {
        r.insert(0, s(obj, "/metadata/namespace").to_string());
    }
    r
}

/// Renders rows as a left-aligned table with three spaces between columns, like kubectl.
pub fn render_table(headers: &[&str], rows: &[Vec<String>], with_headers: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}   ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    if with_headers {
        line(headers.to_vec());
    }
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Prints a list of objects of one kind in `format`.
pub fn print_list(
    kind: Kind,
    objects: &[Value],
    format: Format,
    namespaces: bool,
    now_ms: i64,
) -> String {
    match format {
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| row(kind, o, wide, namespaces, now_ms))
                .collect();
            render_table(&headers(kind, wide, namespaces), &rows, true)
        }
        Format::Name => objects
            .iter()
            .map(|o| format!("{}/{}\n", kind.singular(), s(o, "/metadata/name")))
            .collect(),
        Format::Json => {
            let doc = match objects {
                [one] => one.clone(),
                many => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            serde_json::to_string_pretty(&doc).expect("JSON") + "\n"
        }
        Format::Yaml => {
            let doc = match objects {
                [one] => one.clone(),
                many => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            serde_yaml::to_string(&doc).expect("YAML")
        }
    }
}

/// One table row of a watch event (no header).
pub fn print_row(kind: Kind, obj: &Value, format: Format, namespaces: bool, now_ms: i64) -> String {
    match format {
        Format::Table | Format::Wide => {
            let wide = format == Format::Wide;
            render_table(
                &headers(kind, wide, namespaces),
                &[row(kind, obj, wide, namespaces, now_ms)],
                false,
            )
        }
        other => print_list(kind, std::slice::from_ref(obj), other, namespaces, now_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-01-01T00:10:00Z
    const NOW_MS: i64 = 1_767_226_200_000;

    fn check(kind: Kind, objects: Vec<Value>, format: Format, namespaces: bool, expected: &str) {
        let printed = print_list(kind, &objects, format, namespaces, NOW_MS);
        assert_eq!(
            printed, expected,
            "\n--- printed:\n{printed}--- expected:\n{expected}"
        );
    }

    fn pod(name: &str, phase: &str, ready: bool, restarts: i64, waiting: Option<&str>) -> Value {
        let state = match waiting {
            Some(reason) => json!({"waiting": {"reason": reason}}),
            None => json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        };
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase, "podIP": "198.18.0.5", "containerStatuses": [
                {"name": "c", "ready": ready, "restartCount": restarts, "state": state}
            ]}
        })
    }

    #[test]
    fn pod_tables() {
        let pods = vec![
            pod("web-1", "Running", true, 0, None),
            pod("web-2", "Running", false, 7, Some("CrashLoopBackOff")),
        ];
        check(
            Kind::Pod,
            pods.clone(),
            Format::Table,
            false,
            "NAME    READY   STATUS             RESTARTS   AGE\n\
             web-1   1/1     Running            0          10m\n\
             web-2   0/1     CrashLoopBackOff   7          10m\n",
        );
        check(
            Kind::Pod,
            pods,
            Format::Wide,
            true,
            "NAMESPACE   NAME    READY   STATUS             RESTARTS   AGE   IP           NODE\n\
             default     web-1   1/1     Running            0          10m   198.18.0.5   node-1\n\
             default     web-2   0/1     CrashLoopBackOff   7          10m   198.18.0.5   node-1\n",
        );
    }

    #[test]
    fn deployment_service_configmap_node_tables() {
        let deploy = json!({
            "metadata": {"name": "web", "creationTimestamp": "2026-01-01T00:09:15Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "httpd", "image": "busybox:1.36"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        check(
            Kind::Deployment,
            vec![deploy],
            Format::Wide,
            false,
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES         SELECTOR\n\
             web    2/3     3            2           45s   httpd        busybox:1.36   app=web\n",
        );
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2025-12-29T00:10:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "198.19.0.10", "selector": {"app": "web"},
                     "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 443}]}
        });
        check(
            Kind::Service,
            vec![svc],
            Format::Table,
            false,
            "NAME   TYPE       CLUSTER-IP    PORT(S)                AGE\n\
             web    NodePort   198.19.0.10   80:30080/TCP,443/TCP   3d\n",
        );
        let cm = json!({"metadata": {"name": "cfg", "creationTimestamp": "2026-01-01T00:05:30Z"}, "data": {"a": "1", "b": "2"}});
        check(
            Kind::ConfigMap,
            vec![cm],
            Format::Table,
            false,
            "NAME   DATA   AGE\ncfg    2      4m30s\n",
        );
        let node = json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2025-12-31T22:10:00Z"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "nodeInfo": {"kubeletVersion": "flotilla-0.1.0"}}
        });
        check(
            Kind::Node,
            vec![node],
            Format::Table,
            false,
            "NAME     STATUS                     ROLES    AGE    VERSION\n\
             node-1   Ready,SchedulingDisabled   <none>   120m   flotilla-0.1.0\n",
        );
    }

    #[test]
    fn names_and_documents() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}});
        check(
            Kind::ConfigMap,
            vec![cm.clone()],
            Format::Name,
            false,
            "configmap/cfg\n",
        );
        check(
            Kind::ConfigMap,
            vec![cm.clone()],
            Format::Yaml,
            false,
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n",
        );
        let two = print_list(
            Kind::ConfigMap,
            &[cm.clone(), cm],
            Format::Json,
            false,
            NOW_MS,
        );
        let parsed: Value = serde_json::from_str(&two).unwrap();
        assert_eq!(parsed["kind"], "List");
        assert_eq!(parsed["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn ages_like_kubectl() {
        for (secs, expected) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 5, "3h"),
            (5 * 3600 + 1800, "5h30m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 7200, "3d2h"),
            (40 * 86400, "40d"),
        ] {
            assert_eq!(human_duration(secs), expected, "{secs}s");
        }
    }
}
