//! How the leader's loops write: typed objects into batched, revision-conditional puts (one Raft
//! entry per batch), new objects with names and system fields filled in, and events — among
//! them the `LeaderElection` event each term begins with.

use std::time::{SystemTime, UNIX_EPOCH};

use flotilla_state::objects::{Event, ObjectMeta, Pod, PodPhase, PodStatus, Resource};
use flotilla_state::registry::{generated_name, new_uid, now, now_time, ApiError, PreparedWrite};
use flotilla_state::service::kind_info;
use flotilla_state::Kind;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;

use super::TermContext;

/// Writes per Raft entry when a loop has many.
pub const WRITE_BATCH_MAX: usize = 256;
/// Batches of one commit in flight at once: the leader's proposer carries those that wait
/// together in one log entry, so a loop with thousands of writes does not pay a Raft round
/// trip per batch in turn. With 4, creating 150,000 pods in `bench-sched` (b) waited on
/// commits with a sixth of the CPU idle; 8 used it (26.5–28.3 s down to 25.2–26.1 s); 16 gained
/// nothing more. At most this many batches of one commit wait on the Raft log at once.
pub const COMMIT_BATCHES_IN_FLIGHT: usize = 8;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A write of `object` conditional on it still being at `revision` (0: it must not exist).
pub fn write<R: Resource + Serialize>(object: R, revision: i64) -> Result<PreparedWrite, ApiError> {
    PreparedWrite::of_typed(kind_info(R::KIND), object, revision)
}

/// A new object: a name from `generateName` when it has none, a uid, a creation time and, but
/// for events and config maps, generation 1.
pub fn new_object<R: Resource + Serialize>(mut object: R) -> Result<PreparedWrite, ApiError> {
    let meta = object.metadata_mut();
    meta.name = name_for_new(meta);
    meta.uid = new_uid();
    meta.creation_timestamp = Some(now_time());
    if R::KIND != Kind::Event && R::KIND != Kind::ConfigMap {
        meta.generation = 1;
    }
    write(object, 0)
}

/// The name a new object gets: its own, or one generated from its `generateName`.
pub fn name_for_new(meta: &ObjectMeta) -> String {
    if meta.name.is_empty() {
        generated_name(&meta.generate_name)
    } else {
        meta.name.clone()
    }
}

/// A new pod (see [`new_object`]), Pending whatever status it was given.
pub fn new_pod(mut pod: Pod) -> Result<PreparedWrite, ApiError> {
    pod.status = Some(PodStatus {
        phase: Some(PodPhase::Pending),
        ..PodStatus::default()
    });
    new_object(pod)
}

/// Commits writes in batches of at most `batch_max`, [`COMMIT_BATCHES_IN_FLIGHT`] at a time;
/// returns per write whether it landed, in order. Batches are independent: each write is
/// conditional on its own revision, so their order of landing does not matter. The writes move
/// into their batches: their keys and JSON are not copied again.
pub async fn commit_batched(
    ctx: &TermContext,
    writes: Vec<PreparedWrite>,
    batch_max: usize,
) -> Result<Vec<bool>, ApiError> {
    let mut landed = Vec::with_capacity(writes.len());
    let mut rest = writes.into_iter();
    let mut in_flight = FuturesOrdered::new();
    loop {
        while in_flight.len() < COMMIT_BATCHES_IN_FLIGHT {
            let batch: Vec<PreparedWrite> = rest.by_ref().take(batch_max.max(1)).collect();
            if batch.is_empty() {
                break;
            }
            in_flight.push_back(ctx.registry.put_many_if_unchanged(batch));
        }
        match in_flight.next().await {
            Some(batch) => landed.extend(batch?),
            None => return Ok(landed),
        }
    }
}

/// [`commit_batched`] with [`WRITE_BATCH_MAX`] writes per batch.
pub async fn commit(ctx: &TermContext, writes: Vec<PreparedWrite>) -> Result<Vec<bool>, ApiError> {
    commit_batched(ctx, writes, WRITE_BATCH_MAX).await
}

/// Records events: new ones are created; a repeat of an existing one bumps its count.
pub async fn record_events(ctx: &TermContext, events: Vec<Event>) -> Result<(), ApiError> {
    let info = kind_info(Kind::Event);
    let mut fresh = Vec::new();
    for event in events {
        let (ns, name) = (
            event.metadata.namespace.clone(),
            event.metadata.name.clone(),
        );
        match ctx.registry.get_opt(info, &ns, &name, true).await? {
            None => fresh.push(new_object(event)?),
            Some(stored) => {
                let mut body = stored.object.clone();
                if let Some(map) = body.as_object_mut() {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                let existing: Event =
                    serde_json::from_value(body).map_err(|e| ApiError::Internal(e.to_string()))?;
                let merged = flotilla_controllers::events::merge_event(&existing, &event);
                fresh.push(write(merged, stored.revision)?);
            }
        }
    }
    commit(ctx, fresh).await.map(|_| ())
}

/// Records, as the term's first write, that this peer leads: a `LeaderElection` event in the
/// `default` namespace (`flotilla get events`), one per term.
pub async fn announce_leadership(ctx: std::sync::Arc<TermContext>) {
    let peer = ctx.registry.store().peer();
    let write = leader_event(peer, ctx.term);
    match commit(&ctx, vec![write]).await {
        Ok(landed) if landed.first() == Some(&true) => {
            tracing::info!(term = ctx.term, peer, "leadership recorded")
        }
        // The loops restarted within the term: its event is already there.
        Ok(_) => tracing::debug!(term = ctx.term, "leadership already recorded"),
        Err(e) => tracing::warn!(term = ctx.term, error = %e, "recording leadership"),
    }
}

fn leader_event(peer: u64, term: u64) -> PreparedWrite {
    let stamp = now();
    let object = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("flotilla-leader.term-{term}"),
            "namespace": "default",
            "uid": new_uid(),
            "creationTimestamp": stamp,
        },
        "reason": "LeaderElection",
        "message": format!("peer {peer} became leader in term {term}"),
        "type": "Normal",
        "source": {"component": "control-plane", "host": format!("peer-{peer}")},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    });
    PreparedWrite::of_value(kind_info(Kind::Event), &object, 0)
}
