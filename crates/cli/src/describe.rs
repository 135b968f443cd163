//! `describe`: an object rendered for reading — name, namespace, labels, the notable fields of
//! its kind, then everything else in spec and status as indented `Key: value` lines — followed
//! by the events that name it.

use std::fmt::Write as _;

use flotilla_state::objects::Kind;
use serde_json::Value;

use crate::printer::{self, age};

/// Nesting shown before a subtree is summarised.
const MAX_DEPTH: usize = 8;

/// `containerID` → `Container ID`: a word starts at an upper-case letter that follows a
/// lower-case letter or digit, or that begins a capitalised word after an acronym (`IPAddress`
/// → `IP Address`); acronyms stay whole, a plural one too (`podIPs` → `Pod IPs`).
fn title_case(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
            continue;
        }
        let prev = chars[i - 1];
        // The `s` of a plural acronym (`podIPs`) belongs to the acronym.
        let plural = chars.get(i + 1) == Some(&'s')
            && chars.get(i + 2).is_none_or(|after| after.is_uppercase());
        let next_lower = !plural && chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let starts_word = c.is_uppercase()
            && (prev.is_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_uppercase() && next_lower));
        if starts_word {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Maps whose keys are data (label keys, config keys), printed as written.
const VERBATIM_MAPS: [&str; 7] = [
    "labels",
    "annotations",
    "matchLabels",
    "selector",
    "nodeSelector",
    "data",
    "binaryData",
];

fn render_value(out: &mut String, key: &str, v: &Value, indent: usize) {
    render_entry(
        out,
        &title_case(key),
        v,
        indent,
        VERBATIM_MAPS.contains(&key),
    );
}

fn render_entry(out: &mut String, label: &str, v: &Value, indent: usize, verbatim_children: bool) {
    let pad = "  ".repeat(indent);
    let child = |out: &mut String, k: &str, v: &Value| {
        let label = if verbatim_children {
            k.to_string()
        } else {
            title_case(k)
        };
        render_entry(out, &label, v, indent + 1, VERBATIM_MAPS.contains(&k));
    };
    match v {
        Value::Object(map) if map.is_empty() => {
            let _ = writeln!(out, "{pad}{label}:  <none>");
        }
        Value::Object(map) if indent < MAX_DEPTH => {
            let _ = writeln!(out, "{pad}{label}:");
            for (k, v) in map {
                child(out, k, v);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let joined = items.iter().map(scalar).collect::<Vec<_>>().join(", ");
            let shown = if joined.is_empty() {
                "<none>".to_string()
            } else {
                joined
            };
            let _ = writeln!(out, "{pad}{label}:  {shown}");
        }
        Value::Array(items) if indent < MAX_DEPTH => {
            let _ = writeln!(out, "{pad}{label}:");
            for (i, item) in items.iter().enumerate() {
                render_entry(out, &format!("[{i}]"), item, indent + 1, false);
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{label}:  {}", scalar(other));
        }
    }
}

fn map_lines(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect::<Vec<_>>()
            .join("\n              "),
        _ => "<none>".into(),
    }
}

pub fn render(kind: Kind, obj: &Value, now_ms: i64) -> String {
    let mut out = String::new();
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let field = |p: &str| meta.pointer(p).map(scalar).unwrap_or_default();
    let _ = writeln!(out, "Name:         {}", field("/name"));
    if kind.is_namespaced() {
        let _ = writeln!(out, "Namespace:    {}", field("/namespace"));
    }
    let _ = writeln!(out, "Kind:         {}", kind.name());
    let _ = writeln!(out, "Labels:       {}", map_lines(meta.get("labels")));
    let _ = writeln!(out, "Annotations:  {}", map_lines(meta.get("annotations")));
    let created = field("/creationTimestamp");
    let _ = writeln!(
        out,
        "Created:      {created} ({} ago)",
        age(&created, now_ms)
    );
    if let Some(t) = meta.get("deletionTimestamp") {
        let _ = writeln!(out, "Terminating:  since {}", scalar(t));
    }
    if kind == Kind::Pod {
        let _ = writeln!(out, "Status:       {}", printer::pod_status(obj));
        let _ = writeln!(
            out,
            "Node:         {}",
            obj.pointer("/spec/nodeName")
                .map(scalar)
                .unwrap_or("<none>".into())
        );
        let _ = writeln!(
            out,
            "IP:           {}",
            obj.pointer("/status/podIP")
                .map(scalar)
                .unwrap_or("<none>".into())
        );
    }
    if let Some(owners) = meta.get("ownerReferences").and_then(Value::as_array) {
        for owner in owners {
            let _ = writeln!(
                out,
                "Controlled By:  {}/{}",
                owner.get("kind").map(scalar).unwrap_or_default(),
                owner.get("name").map(scalar).unwrap_or_default()
            );
        }
    }
    for (key, value) in obj.as_object().into_iter().flatten() {
        if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            render_value(&mut out, key, value, 0);
        }
    }
    out
}

pub fn render_events(events: &[Value], now_ms: i64) -> String {
    if events.is_empty() {
        return "Events:       <none>\n".into();
    }
    let when = |e: &Value| {
        e.get("lastTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| flotilla_state::objects::Time::parse(t).ok())
            .map_or(0, |t| t.unix_millis())
    };
    let mut events: Vec<&Value> = events.iter().collect();
    events.sort_by_key(|e| when(e));
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let when = e
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or_else(|| {
                    e.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                })
                .unwrap_or("");
            let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
            let age = if count > 1 {
                format!("{} (x{count})", age(when, now_ms))
            } else {
                age(when, now_ms)
            };
            vec![
                e.get("type").map(scalar).unwrap_or_default(),
                e.get("reason").map(scalar).unwrap_or_default(),
                age,
                e.pointer("/source/component")
                    .map(scalar)
                    .unwrap_or_default(),
                e.get("message").map(scalar).unwrap_or_default(),
            ]
        })
        .collect();
    let table = printer::render_table(&["Type", "Reason", "Age", "From", "Message"], &rows, true);
    let indented: String = table.lines().map(|l| format!("  {l}\n")).collect();
    format!("Events:\n{indented}")
}

#[cfg(test)]
mod tests {
    use super::title_case;

    #[test]
    fn field_names_read_as_words_and_acronyms_stay_whole() {
        for (key, shown) in [
            ("phase", "Phase"),
            ("restartCount", "Restart Count"),
            ("containerID", "Container ID"),
            ("hostIP", "Host IP"),
            ("podIPs", "Pod IPs"),
            ("IPAddress", "IP Address"),
            ("startedAt", "Started At"),
            ("http2Port", "Http2 Port"),
        ] {
            assert_eq!(title_case(key), shown, "{key}");
        }
    }
}
