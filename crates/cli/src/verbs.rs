//! The client verbs: apply, create, get (and watch), describe, delete, scale. Each turns its
//! arguments into Cluster API calls and prints the answers; the server does the work.

use std::io::Read;
use std::path::{Path, PathBuf};

use flotilla_api::cluster::{
    ApplyRequest, DeleteRequest, GetRequest, ListRequest, ObjectRef, ScaleRequest, WatchRequest,
};
use flotilla_state::objects::Kind;
use serde_json::Value;

use crate::client::Client;
use crate::printer::{self, Format};

/// Largest manifest input read from files or stdin.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Most events shown by `describe`.
const DESCRIBE_EVENTS_MAX: usize = 50;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn manifest_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads `-f` arguments (files, directories, `-` for stdin) as one multi-document stream.
pub fn read_manifests(paths: &[String]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for path in paths {
        let mut chunk = Vec::new();
        if path == "-" {
            std::io::stdin()
                .take(MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_end(&mut chunk)?;
            out.extend_from_slice(b"\n---\n");
            out.extend(chunk);
        } else {
            for file in manifest_files(Path::new(path))? {
                let text =
                    std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                out.extend_from_slice(b"\n---\n");
                out.extend(text);
            }
        }
        anyhow::ensure!(
            out.len() <= MAX_MANIFEST_BYTES,
            "manifests are larger than {MAX_MANIFEST_BYTES} bytes"
        );
    }
    Ok(out)
}

fn qualified(kind: Kind) -> String {
    match kind.group() {
        "" => kind.singular().to_string(),
        group => format!("{}.{group}", kind.singular()),
    }
}

pub async fn apply(
    client: &Client,
    files: &[String],
    namespace: &str,
    dry_run: bool,
    create_only: bool,
) -> anyhow::Result<()> {
    let manifests = read_manifests(files)?;
    let request = ApplyRequest {
        manifests,
        default_namespace: namespace.to_string(),
        dry_run,
    };
    let response = if create_only {
        client
            .call(|mut c| {
                let r = request.clone();
                async move { c.create_manifests(r).await }
            })
            .await?
    } else {
        client
            .call(|mut c| {
                let r = request.clone();
                async move { c.apply(r).await }
            })
            .await?
    };
    for result in response.results {
        let kind = Kind::parse(&result.kind)
            .map(qualified)
            .unwrap_or(result.kind.to_lowercase());
        let suffix = if dry_run { " (dry run)" } else { "" };
        println!("{kind}/{} {}{suffix}", result.name, result.action);
    }
    Ok(())
}

pub struct GetArgs {
    pub kind: Kind,
    pub name: Option<String>,
    pub namespace: String,
    pub all_namespaces: bool,
    pub labels: String,
    pub fields: String,
    pub format: Format,
    pub watch: bool,
}

pub async fn get(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let namespaces = args.all_namespaces && args.kind.is_namespaced();
    let (objects, revision) = match &args.name {
        Some(name) => {
            let request = GetRequest {
                r#ref: Some(ObjectRef {
                    kind: args.kind.name().into(),
                    namespace: args.namespace.clone(),
                    name: name.clone(),
                }),
                stale: false,
            };
            let response = client
                .call(|mut c| {
                    let r = request.clone();
                    async move { c.get(r).await }
                })
                .await?;
            let obj: Value = serde_json::from_slice(&response.object)?;
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (vec![obj], rv)
        }
        None => list_all(client, &args).await?,
    };
    if objects.is_empty() && !args.watch && matches!(args.format, Format::Table | Format::Wide) {
        match (args.kind.is_namespaced() && !args.all_namespaces).then_some(&args.namespace) {
            Some(ns) => eprintln!("No resources found in {ns} namespace."),
            None => eprintln!("No resources found"),
        }
        return Ok(());
    }
    print!(
        "{}",
        printer::print_list(args.kind, &objects, args.format, namespaces, now_ms())
    );
    if args.watch {
        watch(client, &args, revision, namespaces).await?;
    }
    Ok(())
}

async fn list_all(client: &Client, args: &GetArgs) -> anyhow::Result<(Vec<Value>, String)> {
    let mut objects = Vec::new();
    let mut request = ListRequest {
        kind: args.kind.name().into(),
        namespace: args.namespace.clone(),
        all_namespaces: args.all_namespaces,
        label_selector: args.labels.clone(),
        field_selector: args.fields.clone(),
        limit: 500,
        r#continue: String::new(),
        stale: false,
    };
    loop {
        let page = client
            .call(|mut c| {
                let r = request.clone();
                async move { c.list(r).await }
            })
            .await?;
        for item in &page.items {
            objects.push(serde_json::from_slice(item)?);
        }
        if page.r#continue.is_empty() {
            return Ok((objects, page.resource_version));
        }
        request.r#continue = page.r#continue;
    }
}

async fn watch(
    client: &Client,
    args: &GetArgs,
    revision: String,
    namespaces: bool,
) -> anyhow::Result<()> {
    let request = WatchRequest {
        kind: args.kind.name().into(),
        namespace: args.namespace.clone(),
        all_namespaces: args.all_namespaces,
        label_selector: args.labels.clone(),
        field_selector: match &args.name {
            Some(name) => format!("metadata.name={name}"),
            None => args.fields.clone(),
        },
        resource_version: revision,
        bookmarks: false,
    };
    let mut api = client.api(0, None)?;
    let mut stream = api.watch(request).await?.into_inner();
    while let Some(event) = stream.message().await? {
        if event.r#type == "ERROR" {
            anyhow::bail!("watch ended: {}", event.error);
        }
        if event.r#type == "BOOKMARK" {
            continue;
        }
        let obj: Value = serde_json::from_slice(&event.object)?;
        print!(
            "{}",
            printer::print_row(args.kind, &obj, args.format, namespaces, now_ms())
        );
    }
    Ok(())
}

pub async fn describe(
    client: &Client,
    kind: Kind,
    name: &str,
    namespace: &str,
) -> anyhow::Result<()> {
    let object = client.get_object(kind.name(), namespace, name).await?;
    let obj: Value = serde_json::from_slice(&object)?;
    print!("{}", crate::describe::render(kind, &obj, now_ms()));
    let events = ListRequest {
        kind: "Event".into(),
        namespace: if kind.is_namespaced() {
            namespace.into()
        } else {
            "default".into()
        },
        all_namespaces: !kind.is_namespaced(),
        field_selector: format!(
            "involvedObject.kind={},involvedObject.name={name}",
            kind.name()
        ),
        limit: DESCRIBE_EVENTS_MAX as i64,
        ..Default::default()
    };
    let page = client
        .call(|mut c| {
            let r = events.clone();
            async move { c.list(r).await }
        })
        .await?;
    let events: Vec<Value> = page
        .items
        .iter()
        .filter_map(|i| serde_json::from_slice(i).ok())
        .collect();
    print!("{}", crate::describe::render_events(&events, now_ms()));
    Ok(())
}

pub struct DeleteArgs {
    pub grace_period: Option<i64>,
    pub cascade: String,
}

pub async fn delete(
    client: &Client,
    targets: Vec<(Kind, String, String)>,
    args: &DeleteArgs,
) -> anyhow::Result<()> {
    let propagation = match args.cascade.as_str() {
        "background" | "true" | "" => "Background",
        "orphan" | "false" => "Orphan",
        other => anyhow::bail!("--cascade must be background or orphan, not {other:?}"),
    };
    let mut failed = false;
    for (kind, namespace, name) in targets {
        let request = DeleteRequest {
            r#ref: Some(ObjectRef {
                kind: kind.name().into(),
                namespace,
                name: name.clone(),
            }),
            grace_period_seconds: args.grace_period,
            propagation: propagation.into(),
            resource_version: String::new(),
        };
        match client
            .call(|mut c| {
                let r = request.clone();
                async move { c.delete(r).await }
            })
            .await
        {
            Ok(_) => println!("{}/{name} deleted", qualified(kind)),
            Err(status) => {
                eprintln!("{}", crate::client::describe_status(&status));
                failed = true;
            }
        }
    }
    anyhow::ensure!(!failed, "some objects could not be deleted");
    Ok(())
}

/// The objects named in manifests, for `delete -f`.
pub fn targets_of_manifests(
    files: &[String],
    namespace: &str,
) -> anyhow::Result<Vec<(Kind, String, String)>> {
    let text = read_manifests(files)?;
    let text = String::from_utf8(text)?;
    let objects =
        flotilla_state::manifest::parse_manifests(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(objects
        .iter()
        .map(|o| {
            let kind = o.kind();
            let ns = match o.namespace() {
                "" => namespace.to_string(),
                ns => ns.to_string(),
            };
            (kind, ns, o.name().to_string())
        })
        .collect())
}

pub async fn scale(
    client: &Client,
    kind: Kind,
    name: &str,
    namespace: &str,
    replicas: i32,
) -> anyhow::Result<()> {
    let request = ScaleRequest {
        r#ref: Some(ObjectRef {
            kind: kind.name().into(),
            namespace: namespace.into(),
            name: name.into(),
        }),
        replicas,
    };
    client
        .call(|mut c| {
            let r = request.clone();
            async move { c.scale(r).await }
        })
        .await?;
    println!("{}/{name} scaled", qualified(kind));
    Ok(())
}
