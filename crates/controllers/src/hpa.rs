//! The HorizontalPodAutoscaler algorithm (autoscaling/v2, `Resource` metrics with
//! `Utilization` targets): utilization is the pods' summed usage over their summed requests
//! (cpu in millicores, memory in bytes); `desired = ceil(ready pods × utilization / target)`,
//! no change while the ratio is within the tolerance (±10 %), the largest proposal over all
//! metrics wins, scale-down is stabilized by taking the highest recommendation of the last
//! window (default 300 s), scale-up is limited per reconcile, and the result is clamped to
//! `[minReplicas, maxReplicas]`.
//!
//! Pods are treated as Kubernetes does: pods being deleted or finished are ignored; Pending
//! pods — and, for cpu, pods that are not Ready — are "unready"; pods without a sample are
//! "missing". When unready pods exist and the ready ones ask for more, or samples are missing,
//! the ratio is recomputed assuming the worst for the direction of change (missing pods use
//! 100 % when scaling down and 0 when scaling up, unready pods 0 when scaling up), and the
//! change is dropped if that flips its direction or lands within the tolerance. Simplification:
//! "unready" for cpu is the plain Ready condition (Kubernetes also looks at the first
//! readiness after start and the cpu initialization period), and the scale-up limit is
//! `max(2 × current, current + 4)` per reconcile rather than per 15 s window.
//!
//! Recommendations are plain data: the loop keeps the returned list and passes it back.
//! `HorizontalPodAutoscalerStatus` has no `conditions` field yet, so conditions come back
//! separately in [`HpaPlan::conditions`].

use std::collections::HashMap;

use flotilla_state::objects::{
    ConditionStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus, MetricResourceName,
    MetricSourceType, MetricStatus, MetricValueStatus, Pod, PodPhase, Quantity,
    ResourceMetricStatus, Time,
};

use crate::pods;

/// Relative deviation from the target within which nothing changes.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Scale-down stabilization window.
pub const DEFAULT_DOWNSCALE_STABILIZATION_MS: i64 = 300_000;
/// Recommendations kept per autoscaler (a 15 s loop fills a 300 s window with 20).
pub const MAX_RECOMMENDATIONS: usize = 128;
/// Scale-up per reconcile is limited to `max(current × FACTOR, current + PODS)`.
pub const SCALE_UP_LIMIT_FACTOR: i32 = 2;
pub const SCALE_UP_LIMIT_PODS: i32 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HpaConfig {
    pub tolerance: f64,
    pub downscale_stabilization_ms: i64,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            tolerance: DEFAULT_TOLERANCE,
            downscale_stabilization_ms: DEFAULT_DOWNSCALE_STABILIZATION_MS,
        }
    }
}

/// One pod's latest usage sample, as the agents report it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodUsage {
    pub cpu_millicores: i64,
    pub memory_bytes: i64,
}

/// A past proposal, kept for the stabilization window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub at_ms: i64,
    pub replicas: i32,
}

/// What one autoscaler reconcile looks at.
#[derive(Clone, Copy, Debug)]
pub struct HpaInput<'a> {
    pub hpa: &'a HorizontalPodAutoscaler,
    /// `spec.replicas` of the scale target.
    pub current_replicas: i32,
    /// The target's pods (selected by its selector).
    pub pods: &'a [Pod],
    /// Usage samples by pod name; a pod without one has no metrics.
    pub usage: &'a HashMap<String, PodUsage>,
    /// The list the previous reconcile returned.
    pub recommendations: &'a [Recommendation],
    pub now_ms: i64,
}

/// `AbleToScale`, `ScalingActive` or `ScalingLimited`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HpaCondition {
    pub type_: String,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
}

/// What the loop does for one autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct HpaPlan {
    pub desired_replicas: i32,
    /// Set the target's `spec.replicas` to this, when it differs from the current count.
    pub scale_to: Option<i32>,
    pub status: HorizontalPodAutoscalerStatus,
    pub conditions: Vec<HpaCondition>,
    /// Pass back in next time.
    pub recommendations: Vec<Recommendation>,
}

/// The autoscaler's decision at `input.now_ms`.
pub fn reconcile_hpa(input: &HpaInput<'_>, config: &HpaConfig) -> HpaPlan {
    let spec = &input.hpa.spec;
    let min = spec.min_replicas.unwrap_or(1);
    let current = input.current_replicas;
    let mut conditions = vec![condition(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
    )];
    let mut plan = HpaPlan {
        desired_replicas: current,
        scale_to: None,
        status: base_status(input),
        conditions: Vec::new(),
        recommendations: within_window(input, config),
    };
    if current == 0 && min != 0 {
        let message = "scaling is disabled since the replica count of the target is zero";
        conditions.push(condition(
            "ScalingActive",
            false,
            "ScalingDisabled",
            message,
        ));
        plan.conditions = conditions;
        return plan;
    }
    let proposal = match propose(input, config) {
        Ok(proposal) => proposal,
        Err(message) => {
            conditions.push(condition(
                "ScalingActive",
                false,
                "FailedGetResourceMetric",
                &message,
            ));
            plan.conditions = conditions;
            return plan;
        }
    };
    plan.status.current_metrics = proposal.metrics;
    conditions.push(condition(
        "ScalingActive",
        true,
        "ValidMetricFound",
        &proposal.message,
    ));
    let stabilized = stabilize(&mut plan.recommendations, proposal.replicas, input.now_ms);
    conditions[0] = able_to_scale(stabilized != proposal.replicas);
    let (desired, limit) = clamp(current, stabilized, min, spec.max_replicas);
    conditions.push(limit);
    plan.conditions = conditions;
    plan.desired_replicas = desired;
    plan.status.desired_replicas = desired;
    if desired != current {
        plan.scale_to = Some(desired);
        plan.status.last_scale_time = Some(Time::from_unix_millis(input.now_ms));
    }
    plan
}

fn base_status(input: &HpaInput<'_>) -> HorizontalPodAutoscalerStatus {
    let previous = input.hpa.status.clone().unwrap_or_default();
    HorizontalPodAutoscalerStatus {
        observed_generation: input.hpa.metadata.generation,
        last_scale_time: previous.last_scale_time,
        current_replicas: input.current_replicas,
        desired_replicas: input.current_replicas,
        current_metrics: previous.current_metrics,
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> HpaCondition {
    HpaCondition {
        type_: type_.to_owned(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

fn able_to_scale(stabilized: bool) -> HpaCondition {
    if stabilized {
        let message = "recent recommendations were higher than current one, applying the \
                       highest recent recommendation";
        condition("AbleToScale", true, "ScaleDownStabilized", message)
    } else {
        let message = "recommended size matches current size";
        condition("AbleToScale", true, "ReadyForNewScale", message)
    }
}

/// The kept recommendations still inside the window.
fn within_window(input: &HpaInput<'_>, config: &HpaConfig) -> Vec<Recommendation> {
    let cutoff = input.now_ms - config.downscale_stabilization_ms;
    let mut kept: Vec<Recommendation> = input
        .recommendations
        .iter()
        .filter(|r| r.at_ms > cutoff)
        .copied()
        .collect();
    kept.sort_by_key(|r| r.at_ms);
    kept
}

/// Records `proposal` and returns the highest recommendation in the window.
fn stabilize(recommendations: &mut Vec<Recommendation>, proposal: i32, now_ms: i64) -> i32 {
    let highest = recommendations
        .iter()
        .map(|r| r.replicas)
        .fold(proposal, i32::max);
    if recommendations.len() >= MAX_RECOMMENDATIONS {
        recommendations.remove(0);
    }
    recommendations.push(Recommendation {
        at_ms: now_ms,
        replicas: proposal,
    });
    highest
}

/// Applies the scale-up limit and `[min, max]`, with the `ScalingLimited` condition.
fn clamp(current: i32, wanted: i32, min: i32, max: i32) -> (i32, HpaCondition) {
    let scale_up_limit = current
        .saturating_mul(SCALE_UP_LIMIT_FACTOR)
        .max(current.saturating_add(SCALE_UP_LIMIT_PODS));
    let (upper, upper_reason, upper_message) = if max > scale_up_limit {
        let message = "the desired replica count is increasing faster than the maximum scale rate";
        (scale_up_limit, "ScaleUpLimit", message)
    } else {
        let message = "the desired replica count is more than the maximum replica count";
        (max, "TooManyReplicas", message)
    };
    if wanted < min {
        let message = "the desired replica count is less than the minimum replica count";
        return (
            min,
            condition("ScalingLimited", true, "TooFewReplicas", message),
        );
    }
    if wanted > upper {
        return (
            upper,
            condition("ScalingLimited", true, upper_reason, upper_message),
        );
    }
    let message = "the desired count is within the acceptable range";
    (
        wanted,
        condition("ScalingLimited", false, "DesiredWithinRange", message),
    )
}

/// The largest proposal over all metrics, with their statuses.
struct Proposal {
    replicas: i32,
    metrics: Vec<MetricStatus>,
    message: String,
}

fn propose(input: &HpaInput<'_>, config: &HpaConfig) -> Result<Proposal, String> {
    let metrics = &input.hpa.spec.metrics;
    if metrics.is_empty() {
        return Err("the HPA has no metrics".to_owned());
    }
    let mut best: Option<(i32, MetricResourceName)> = None;
    let mut statuses = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let resource = metric
            .resource
            .as_ref()
            .ok_or("invalid metric: a Resource metric needs `resource`")?;
        let target = resource
            .target
            .average_utilization
            .filter(|t| *t > 0)
            .ok_or("invalid metric: a Utilization target needs a positive averageUtilization")?;
        let result = resource_replicas(resource.name, target, input, config.tolerance)?;
        statuses.push(metric_status(resource.name, &result));
        if best.is_none_or(|(replicas, _)| result.replicas > replicas) {
            best = Some((result.replicas, resource.name));
        }
    }
    let (replicas, name) = best.ok_or("the HPA has no metrics")?;
    Ok(Proposal {
        replicas,
        metrics: statuses,
        message: format!(
            "the HPA was able to successfully calculate a replica count from {name} resource \
             utilization (percentage of request)"
        ),
    })
}

fn metric_status(name: MetricResourceName, result: &ResourceResult) -> MetricStatus {
    let average_value = match name {
        MetricResourceName::Cpu => Quantity::from_milli(result.average_usage),
        MetricResourceName::Memory => Quantity::from_bytes(result.average_usage),
    };
    MetricStatus {
        type_: MetricSourceType::Resource,
        resource: Some(ResourceMetricStatus {
            name,
            current: MetricValueStatus {
                average_utilization: Some(result.utilization_percent),
                average_value: Some(average_value),
            },
        }),
    }
}

struct ResourceResult {
    replicas: i32,
    utilization_percent: i32,
    /// Mean usage of the ready pods (millicores or bytes).
    average_usage: i64,
}

/// Kubernetes' `GetResourceReplicas` for one resource.
fn resource_replicas(
    name: MetricResourceName,
    target_percent: i32,
    input: &HpaInput<'_>,
    tolerance: f64,
) -> Result<ResourceResult, String> {
    if input.pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".to_owned());
    }
    let groups = group_pods(input.pods, input.usage, name);
    if groups.ready.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".to_owned());
    }
    let mut samples = Vec::with_capacity(input.pods.len());
    for (pod, used) in &groups.ready {
        samples.push((*used, pod_request(pod, name)?));
    }
    let (percent, average_usage) = utilization(&samples)?;
    let ratio = f64::from(percent) / f64::from(target_percent);
    let current = input.current_replicas;
    let result = |replicas| ResourceResult {
        replicas,
        utilization_percent: percent,
        average_usage,
    };
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(result(current));
        }
        return Ok(result(ceil_replicas(ratio * groups.ready.len() as f64)));
    }
    for pod in &groups.missing {
        let request = pod_request(pod, name)?;
        let assumed = if ratio < 1.0 {
            request * i64::from(target_percent.max(100)) / 100
        } else {
            0
        };
        samples.push((assumed, request));
    }
    if scale_up_with_unready {
        for pod in &groups.unready {
            samples.push((0, pod_request(pod, name)?));
        }
    }
    let (new_utilization, _) = utilization(&samples)?;
    let new_ratio = f64::from(new_utilization) / f64::from(target_percent);
    let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if (1.0 - new_ratio).abs() <= tolerance || flipped {
        return Ok(result(current));
    }
    let replicas = ceil_replicas(new_ratio * samples.len() as f64);
    let backwards =
        (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current);
    Ok(result(if backwards { current } else { replicas }))
}

fn ceil_replicas(value: f64) -> i32 {
    // `as` saturates on overflow and maps NaN to 0.
    value.ceil() as i32
}

struct PodGroups<'a> {
    ready: Vec<(&'a Pod, i64)>,
    unready: Vec<&'a Pod>,
    missing: Vec<&'a Pod>,
}

fn group_pods<'a>(
    all: &'a [Pod],
    usage: &HashMap<String, PodUsage>,
    name: MetricResourceName,
) -> PodGroups<'a> {
    let mut groups = PodGroups {
        ready: Vec::new(),
        unready: Vec::new(),
        missing: Vec::new(),
    };
    for pod in all {
        let finished = matches!(pod.phase(), PodPhase::Failed | PodPhase::Succeeded);
        if pod.metadata.deletion_timestamp.is_some() || finished {
            continue;
        }
        if pod.phase() == PodPhase::Pending {
            groups.unready.push(pod);
            continue;
        }
        let Some(sample) = usage.get(&pod.metadata.name) else {
            groups.missing.push(pod);
            continue;
        };
        if name == MetricResourceName::Cpu && !pods::is_ready(pod) {
            groups.unready.push(pod);
            continue;
        }
        let used = match name {
            MetricResourceName::Cpu => sample.cpu_millicores,
            MetricResourceName::Memory => sample.memory_bytes,
        };
        groups.ready.push((pod, used));
    }
    groups
}

/// The pod's summed container requests of `name` (millicores or bytes); every container must
/// request it.
fn pod_request(pod: &Pod, name: MetricResourceName) -> Result<i64, String> {
    let mut total: i64 = 0;
    for container in &pod.spec.containers {
        let request = container
            .resources
            .requests
            .get(name.as_str())
            .ok_or_else(|| {
                format!(
                    "missing request for {name} in container {} of Pod {}",
                    container.name, pod.metadata.name
                )
            })?;
        let amount = match name {
            MetricResourceName::Cpu => request.milli_value(),
            MetricResourceName::Memory => request.value(),
        };
        total = total.saturating_add(amount);
    }
    Ok(total)
}

/// `(usage × 100 / requests as an integer percent, mean usage)` over `(usage, request)` pairs.
fn utilization(samples: &[(i64, i64)]) -> Result<(i32, i64), String> {
    let used: i128 = samples.iter().map(|(u, _)| i128::from(*u)).sum();
    let requested: i128 = samples.iter().map(|(_, r)| i128::from(*r)).sum();
    if requested == 0 {
        return Err("no metrics returned matched known pods".to_owned());
    }
    let percent = i32::try_from(used * 100 / requested).unwrap_or(i32::MAX);
    let count = i128::try_from(samples.len()).unwrap_or(1).max(1);
    let average = i64::try_from(used / count).unwrap_or(i64::MAX);
    Ok((percent, average))
}
