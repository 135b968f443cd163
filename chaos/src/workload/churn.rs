//! Deployment churn over node agents: one busybox Deployment ([`DEPLOYMENT`] in [`NAMESPACE`],
//! pods labelled `app=`[`APP`], an httpd with a TCP readiness probe) that the workload creates,
//! then scales up and down and rolls (a new `CHURN_REVISION` env value, so a new ReplicaSet)
//! on a schedule drawn from the run's seed, through the Cluster API. Every op is an `Apply` of
//! the whole manifest to a random serving peer, recorded with its invoke and complete times
//! (ms on the run's clock) and outcome — `ok`, `fail` (a definite rejection) or `info` (timeout,
//! unavailable, transport: it may have taken effect) — and written to `churn.jsonl`.
//!
//! The schedule ([`plan_ops`]) and the manifest ([`manifest`]) are pure; [`run`] is the loop.

use std::path::Path;
use std::time::Duration;

use flotilla_api::cluster::ApplyRequest;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::Code;

use crate::client;
use crate::clock::RunClock;
use crate::cluster::Endpoints;
use crate::error::ChaosError;
use crate::image::IMAGE;

pub const DEPLOYMENT: &str = "churn";
pub const NAMESPACE: &str = "default";
/// The `app` label of the Deployment's pods.
pub const APP: &str = "chaos-churn";
/// The env variable whose value names the pod template's revision.
pub const REVISION_ENV: &str = "CHURN_REVISION";

/// Most ops one run plans (a 1 h run at the shortest gap has fewer).
pub const MAX_CHURN_OPS: usize = 10_000;

/// Salt mixed into the run's seed, so churn and register schedules are independent.
const SEED_SALT: u64 = 0xc4_0123_5eed;

#[derive(Debug, Clone)]
pub struct ChurnConfig {
    /// Replicas at creation and the most any scale asks for.
    pub max_replicas: u32,
    /// The fewest a scale asks for.
    pub min_replicas: u32,
    /// Pause between two ops, ms (inclusive range).
    pub gap_ms: (u64, u64),
    /// The last op starts before this (ms on the run's clock).
    pub duration_ms: u64,
    /// Deadline of one Apply.
    pub op_timeout: Duration,
    pub seed: u64,
}

impl ChurnConfig {
    /// 6 replicas at first, scales between 2 and 6, an op every 1.5–4 s, 5 s per Apply.
    pub fn new(seed: u64, duration_ms: u64) -> Self {
        ChurnConfig {
            max_replicas: 6,
            min_replicas: 2,
            gap_ms: (1_500, 4_000),
            duration_ms,
            op_timeout: Duration::from_secs(5),
            seed,
        }
    }
}

/// What the Deployment should look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub replicas: u32,
    pub revision: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum ChurnKind {
    Create { replicas: u32 },
    Scale { replicas: u32 },
    Roll { revision: u32 },
}

/// One planned op: when it starts and the Deployment it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedOp {
    pub at_ms: u64,
    pub kind: ChurnKind,
    pub desired: Desired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnOutcome {
    Ok,
    Fail,
    Info,
}

/// One op as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChurnOp {
    pub id: u64,
    /// The peer the Apply went to (0: none was serving).
    pub peer: u64,
    pub kind: ChurnKind,
    pub desired: Desired,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub outcome: ChurnOutcome,
    pub error: Option<String>,
}

/// The churn schedule: a create at 0, then scales (60 %) and rolls (40 %) separated by gaps,
/// each scale to a replica count other than the current one. Same seed → same schedule.
pub fn plan_ops(config: &ChurnConfig) -> Vec<PlannedOp> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ SEED_SALT);
    let mut desired = Desired {
        replicas: config.max_replicas,
        revision: 1,
    };
    let mut ops = vec![PlannedOp {
        at_ms: 0,
        kind: ChurnKind::Create {
            replicas: desired.replicas,
        },
        desired,
    }];
    let mut at_ms = 0;
    while ops.len() < MAX_CHURN_OPS {
        at_ms += rng.gen_range(config.gap_ms.0..=config.gap_ms.1);
        if at_ms >= config.duration_ms {
            break;
        }
        let kind = if rng.gen_bool(0.6) && config.max_replicas > config.min_replicas {
            let mut replicas = desired.replicas;
            while replicas == desired.replicas {
                replicas = rng.gen_range(config.min_replicas..=config.max_replicas);
            }
            desired.replicas = replicas;
            ChurnKind::Scale { replicas }
        } else {
            desired.revision += 1;
            ChurnKind::Roll {
                revision: desired.revision,
            }
        };
        ops.push(PlannedOp {
            at_ms,
            kind,
            desired,
        });
    }
    ops
}

/// The Deployment manifest (JSON, which the Cluster API takes as YAML).
pub fn manifest(desired: Desired) -> Vec<u8> {
    // sh stays PID 1 and stops httpd on SIGTERM, so replaced pods go away quickly.
    let script = "httpd -f -p 8080 & trap 'kill $!; exit 0' TERM; wait $!";
    let object = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "replicas": desired.replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "app",
                        "image": IMAGE,
                        "command": ["sh", "-c", script],
                        "env": [{"name": REVISION_ENV, "value": desired.revision.to_string()}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    });
    object.to_string().into_bytes()
}

/// Whether a failed Apply proves it was not applied (see the register workload's rules).
pub fn outcome_of(code: Code) -> ChurnOutcome {
    match code {
        Code::Aborted
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::NotFound
        | Code::AlreadyExists => ChurnOutcome::Fail,
        _ => ChurnOutcome::Info,
    }
}

/// Carries out the schedule against `endpoints` and writes `churn.jsonl` into `run_dir`.
pub async fn run(
    config: ChurnConfig,
    endpoints: Endpoints,
    clock: RunClock,
    run_dir: &Path,
) -> Result<Vec<ChurnOp>, ChaosError> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ SEED_SALT ^ 1);
    let mut done = Vec::new();
    for (id, planned) in plan_ops(&config).into_iter().enumerate() {
        tokio::time::sleep_until(clock.at_ms(planned.at_ms).into()).await;
        let op = apply(&config, &endpoints, &mut rng, clock, id as u64, planned).await;
        tracing::debug!(?op, "churn op");
        done.push(op);
    }
    write_ops(&run_dir.join("churn.jsonl"), &done)?;
    Ok(done)
}

async fn apply(
    config: &ChurnConfig,
    endpoints: &Endpoints,
    rng: &mut StdRng,
    clock: RunClock,
    id: u64,
    planned: PlannedOp,
) -> ChurnOp {
    let invoke_ms = clock.elapsed_ms();
    let endpoint = endpoints.pick(rng);
    let (outcome, error) = match endpoint {
        None => (ChurnOutcome::Fail, Some("no serving peer".to_string())),
        Some(endpoint) => match client::cluster_api(endpoint.addr) {
            Err(e) => (ChurnOutcome::Fail, Some(e.to_string())),
            Ok(mut api) => {
                let request = ApplyRequest {
                    manifests: manifest(planned.desired),
                    default_namespace: NAMESPACE.into(),
                    dry_run: false,
                };
                match tokio::time::timeout(config.op_timeout, api.apply(request)).await {
                    Ok(Ok(_)) => (ChurnOutcome::Ok, None),
                    Ok(Err(status)) => (
                        outcome_of(status.code()),
                        Some(format!("{:?}: {}", status.code(), status.message())),
                    ),
                    Err(_) => (ChurnOutcome::Info, Some("timed out".into())),
                }
            }
        },
    };
    ChurnOp {
        id,
        peer: endpoint.map_or(0, |e| e.peer),
        kind: planned.kind,
        desired: planned.desired,
        invoke_ms,
        complete_ms: clock.elapsed_ms(),
        outcome,
        error,
    }
}

fn write_ops(path: &Path, ops: &[ChurnOp]) -> Result<(), ChaosError> {
    let mut text = String::new();
    for op in ops {
        let line = serde_json::to_string(op).map_err(|source| ChaosError::Json {
            what: "a churn op".into(),
            source,
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| ChaosError::io(format!("writing {}", path.display()), e))
}

/// Op counts by outcome: (ok, fail, info).
pub fn count_outcomes(ops: &[ChurnOp]) -> (usize, usize, usize) {
    let count = |o: ChurnOutcome| ops.iter().filter(|op| op.outcome == o).count();
    (
        count(ChurnOutcome::Ok),
        count(ChurnOutcome::Fail),
        count(ChurnOutcome::Info),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(seed: u64, duration_ms: u64) -> Vec<PlannedOp> {
        let config = ChurnConfig::new(seed, duration_ms);
        let ops = plan_ops(&config);
        assert_eq!(
            ops,
            plan_ops(&config),
            "seed {seed}: same seed, same schedule"
        );
        assert_eq!(
            ops[0].kind,
            ChurnKind::Create {
                replicas: config.max_replicas
            }
        );
        for pair in ops.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let gap = after.at_ms - before.at_ms;
            assert!(
                (config.gap_ms.0..=config.gap_ms.1).contains(&gap),
                "{pair:?}"
            );
            assert!(after.at_ms < duration_ms);
            match after.kind {
                ChurnKind::Scale { replicas } => {
                    assert_ne!(replicas, before.desired.replicas, "{pair:?}");
                    assert!((config.min_replicas..=config.max_replicas).contains(&replicas));
                    assert_eq!(after.desired.revision, before.desired.revision);
                }
                ChurnKind::Roll { revision } => {
                    assert_eq!(revision, before.desired.revision + 1, "{pair:?}");
                    assert_eq!(after.desired.replicas, before.desired.replicas);
                }
                ChurnKind::Create { .. } => panic!("a second create: {pair:?}"),
            }
        }
        ops
    }

    #[test]
    fn schedules_scale_both_ways_and_roll() {
        let ops: Vec<PlannedOp> = (0..10).flat_map(|seed| check(seed, 60_000)).collect();
        let scales_down = ops
            .windows(2)
            .any(|p| p[1].desired.replicas < p[0].desired.replicas);
        let scales_up = ops
            .windows(2)
            .any(|p| p[1].desired.replicas > p[0].desired.replicas && p[1].at_ms > 0);
        let rolls = ops.iter().any(|o| matches!(o.kind, ChurnKind::Roll { .. }));
        assert!(scales_down && scales_up && rolls);
        assert_ne!(check(1, 60_000), check(2, 60_000));
        assert_eq!(check(3, 1_000).len(), 1, "a short run only creates");
    }

    #[test]
    fn the_manifest_carries_replicas_revision_and_probe() {
        let text = manifest(Desired {
            replicas: 4,
            revision: 7,
        });
        let object: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(object["spec"]["replicas"], 4);
        let container = &object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["env"][0]["value"], "7");
        assert_eq!(container["image"], IMAGE);
        assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], 8080);
        assert_eq!(object["spec"]["selector"]["matchLabels"]["app"], APP);
    }

    #[test]
    fn only_rejections_are_definite_failures() {
        assert_eq!(outcome_of(Code::InvalidArgument), ChurnOutcome::Fail);
        assert_eq!(outcome_of(Code::Unavailable), ChurnOutcome::Info);
        assert_eq!(outcome_of(Code::DeadlineExceeded), ChurnOutcome::Info);
    }
}
