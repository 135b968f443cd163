//! `flotilla rollout status|history|undo deployment/NAME`: the deciding is in
//! `flotilla_controllers::deployment`; this reads objects, calls it and prints.

use std::time::{Duration, Instant};

use flotilla_api::cluster::{ListRequest, ObjectRef, PatchRequest};
use flotilla_controllers::deployment::{rollback_template, rollout_history, rollout_status};
use flotilla_state::objects::{Deployment, ReplicaSet};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::client::Client;

/// Pause between polls of `rollout status`.
const STATUS_POLL: Duration = Duration::from_millis(500);

fn typed<T: DeserializeOwned>(bytes: &[u8]) -> anyhow::Result<T> {
    let mut value: Value = serde_json::from_slice(bytes)?;
    if let Some(map) = value.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    Ok(serde_json::from_value(value)?)
}

async fn deployment(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Deployment> {
    typed(&client.get_object("Deployment", namespace, name).await?)
}

async fn owned_replicasets(client: &Client, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
    let request = ListRequest {
        kind: "ReplicaSet".into(),
        namespace: d.metadata.namespace.clone(),
        ..Default::default()
    };
    let page = client
        .call(|mut c| {
            let r = request.clone();
            async move { c.list(r).await }
        })
        .await?;
    let mut owned = Vec::new();
    for item in &page.items {
        let rs: ReplicaSet = typed(item)?;
        if rs
            .metadata
            .controller_owner()
            .is_some_and(|o| o.uid == d.metadata.uid)
        {
            owned.push(rs);
        }
    }
    Ok(owned)
}

/// Prints progress until the rollout is done (or `timeout` passes).
pub async fn status(
    client: &Client,
    namespace: &str,
    name: &str,
    watch: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let d = deployment(client, namespace, name).await?;
        let status = rollout_status(&d).map_err(|e| anyhow::anyhow!("{e}"))?;
        if status.message != last {
            println!("{}", status.message);
            last = status.message.clone();
        }
        if status.done || !watch {
            return Ok(());
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            anyhow::bail!("timed out waiting for the rollout to finish");
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}

pub async fn history(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let d = deployment(client, namespace, name).await?;
    let rss = owned_replicasets(client, &d).await?;
    println!("deployment.apps/{name}");
    let rows: Vec<Vec<String>> = rollout_history(&rss)
        .into_iter()
        .map(|e| {
            vec![
                e.revision.to_string(),
                e.change_cause.unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    print!(
        "{}",
        crate::printer::render_table(&["REVISION", "CHANGE-CAUSE"], &rows, true)
    );
    Ok(())
}

pub async fn undo(
    client: &Client,
    namespace: &str,
    name: &str,
    to_revision: Option<i64>,
) -> anyhow::Result<()> {
    let d = deployment(client, namespace, name).await?;
    let rss = owned_replicasets(client, &d).await?;
    let template = rollback_template(&d, &rss, to_revision).map_err(|e| anyhow::anyhow!("{e}"))?;
    let patch = json!({"spec": {"template": serde_json::to_value(&template)?}});
    let request = PatchRequest {
        r#ref: Some(ObjectRef {
            kind: "Deployment".into(),
            namespace: namespace.into(),
            name: name.into(),
        }),
        patch: serde_json::to_vec(&patch)?,
    };
    client
        .call(|mut c| {
            let r = request.clone();
            async move { c.patch(r).await }
        })
        .await?;
    println!("deployment.apps/{name} rolled back");
    Ok(())
}
