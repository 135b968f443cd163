//! The autoscaler: Kubernetes' worked examples, tolerance, bounds, unready and missing pods,
//! stabilization, and the status it reports.

use std::collections::{BTreeMap, HashMap};

use flotilla_controllers::hpa::{
    reconcile_hpa, HpaConfig, HpaInput, HpaPlan, PodUsage, Recommendation,
};
use flotilla_state::objects::{
    ConditionStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricResourceName,
    MetricSourceType, MetricSpec, MetricTarget, MetricTargetType, Pod, Quantity,
    ResourceMetricSource,
};

use crate::fixtures::{at, pod, T0};

/// A pod of the notation in `fixtures`, requesting 100m cpu and 100Mi memory.
fn requesting(spec: &str) -> Pod {
    let mut pod = pod(spec, "uid-web-1");
    let requests: BTreeMap<String, Quantity> = [("cpu", "100m"), ("memory", "100Mi")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Quantity::parse(v).expect("quantity")))
        .collect();
    pod.spec.containers = vec![flotilla_state::objects::Container {
        name: "web".to_owned(),
        ..Default::default()
    }];
    pod.spec.containers[0].resources.requests = requests;
    pod
}

fn metric(name: MetricResourceName, percent: i32) -> MetricSpec {
    MetricSpec {
        type_: MetricSourceType::Resource,
        resource: Some(ResourceMetricSource {
            name,
            target: MetricTarget {
                type_: MetricTargetType::Utilization,
                average_utilization: Some(percent),
            },
        }),
    }
}

fn hpa(min: i32, max: i32, metrics: Vec<MetricSpec>) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        spec: HorizontalPodAutoscalerSpec {
            min_replicas: Some(min),
            max_replicas: max,
            metrics,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Pods as `(notation, cpu millicores used; None = no sample)`; memory use is the same percent
/// of the 100Mi request.
fn run(
    autoscaler: &HorizontalPodAutoscaler,
    current: i32,
    pods: &[(&str, Option<i64>)],
    recommendations: &[Recommendation],
    now_ms: i64,
) -> HpaPlan {
    let all: Vec<Pod> = pods.iter().map(|(spec, _)| requesting(spec)).collect();
    let usage: HashMap<String, PodUsage> = all
        .iter()
        .zip(pods)
        .filter_map(|(pod, (_, used))| {
            let cpu = (*used)?;
            Some((
                pod.metadata.name.clone(),
                PodUsage {
                    cpu_millicores: cpu,
                    memory_bytes: cpu * 100 * 1024 * 1024 / 100,
                },
            ))
        })
        .collect();
    let input = HpaInput {
        hpa: autoscaler,
        current_replicas: current,
        pods: &all,
        usage: &usage,
        recommendations,
        now_ms,
    };
    reconcile_hpa(&input, &HpaConfig::default())
}

fn reason<'a>(plan: &'a HpaPlan, type_: &str) -> (ConditionStatus, &'a str) {
    let condition = plan
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present");
    (condition.status, condition.reason.as_str())
}

/// Checks the desired replicas for a cpu target of `target`% with bounds `[min, max]`.
fn check(
    target: i32,
    min: i32,
    max: i32,
    current: i32,
    pods: &[(&str, Option<i64>)],
    desired: i32,
) {
    let plan = run(
        &hpa(min, max, vec![metric(MetricResourceName::Cpu, target)]),
        current,
        pods,
        &[],
        T0,
    );
    assert_eq!(
        plan.desired_replicas, desired,
        "{pods:?}: {:?}",
        plan.conditions
    );
    assert_eq!(plan.scale_to, (desired != current).then_some(desired));
}

const R: &str = "p ready";

#[test]
fn kubernetes_examples() {
    // 3 pods at 90% of their request, target 50% → ceil(3 × 1.8) = 6.
    check(
        50,
        1,
        10,
        3,
        &[
            ("a ready", Some(90)),
            ("b ready", Some(90)),
            ("c ready", Some(90)),
        ],
        6,
    );
    // 3 pods at 20% → ceil(3 × 0.4) = 2.
    check(
        50,
        1,
        10,
        3,
        &[
            ("a ready", Some(20)),
            ("b ready", Some(20)),
            ("c ready", Some(20)),
        ],
        2,
    );
}

#[test]
fn within_tolerance_nothing_changes() {
    check(
        50,
        1,
        10,
        3,
        &[
            ("a ready", Some(54)),
            ("b ready", Some(54)),
            ("c ready", Some(54)),
        ],
        3,
    );
    check(
        50,
        1,
        10,
        3,
        &[
            ("a ready", Some(46)),
            ("b ready", Some(46)),
            ("c ready", Some(46)),
        ],
        3,
    );
    check(
        50,
        1,
        10,
        3,
        &[
            ("a ready", Some(57)),
            ("b ready", Some(57)),
            ("c ready", Some(57)),
        ],
        4,
    );
}

#[test]
fn bounds_clamp_and_say_why() {
    let three_at = |m| {
        vec![
            ("a ready", Some(m)),
            ("b ready", Some(m)),
            ("c ready", Some(m)),
        ]
    };
    let plan = run(
        &hpa(2, 10, vec![metric(MetricResourceName::Cpu, 50)]),
        3,
        &three_at(1),
        &[],
        T0,
    );
    assert_eq!(
        (plan.desired_replicas, reason(&plan, "ScalingLimited")),
        (2, (ConditionStatus::True, "TooFewReplicas"))
    );
    let plan = run(
        &hpa(1, 5, vec![metric(MetricResourceName::Cpu, 50)]),
        3,
        &three_at(500),
        &[],
        T0,
    );
    assert_eq!(
        (plan.desired_replicas, reason(&plan, "ScalingLimited")),
        (5, (ConditionStatus::True, "TooManyReplicas"))
    );
    let plan = run(
        &hpa(1, 100, vec![metric(MetricResourceName::Cpu, 50)]),
        3,
        &three_at(500),
        &[],
        T0,
    );
    assert_eq!(
        (plan.desired_replicas, reason(&plan, "ScalingLimited")),
        (7, (ConditionStatus::True, "ScaleUpLimit"))
    );
    let plan = run(
        &hpa(1, 10, vec![metric(MetricResourceName::Cpu, 50)]),
        3,
        &three_at(90),
        &[],
        T0,
    );
    assert_eq!(
        reason(&plan, "ScalingLimited"),
        (ConditionStatus::False, "DesiredWithinRange")
    );
    assert_eq!(
        reason(&plan, "ScalingActive"),
        (ConditionStatus::True, "ValidMetricFound")
    );
}

#[test]
fn missing_samples_assume_the_worst_for_the_direction() {
    // Up: 3 at 60% suggests 1.2×, but the missing pod at 0% makes it 0.9×: no change.
    check(
        50,
        1,
        10,
        4,
        &[
            ("a ready", Some(60)),
            ("b ready", Some(60)),
            ("c ready", Some(60)),
            ("d ready", None),
        ],
        4,
    );
    // Down: 3 at 10% with the missing pod at 100% → 32% → ceil(4 × 0.64) = 3, not 1.
    check(
        50,
        1,
        10,
        4,
        &[
            ("a ready", Some(10)),
            ("b ready", Some(10)),
            ("c ready", Some(10)),
            ("d ready", None),
        ],
        3,
    );
}

#[test]
fn unready_pods_damp_scale_up() {
    // Ready pods at 100% suggest 2×; counting the unready at 0% gives 1.0×: no change.
    check(
        50,
        1,
        10,
        4,
        &[
            ("a ready", Some(100)),
            ("b ready", Some(100)),
            ("c", Some(100)),
            ("d pending", None),
        ],
        4,
    );
    // Terminating and failed pods are ignored altogether.
    check(
        50,
        1,
        10,
        2,
        &[
            ("a ready", Some(90)),
            ("b ready", Some(90)),
            ("c deleting ready", Some(0)),
            ("d failed", None),
        ],
        4,
    );
}

#[test]
fn failures_and_a_zero_target_do_not_scale() {
    let cpu = || hpa(1, 10, vec![metric(MetricResourceName::Cpu, 50)]);
    let plan = run(&cpu(), 3, &[("a ready", None), ("b ready", None)], &[], T0);
    assert_eq!(
        (plan.scale_to, reason(&plan, "ScalingActive")),
        (None, (ConditionStatus::False, "FailedGetResourceMetric"))
    );
    let plan = run(&cpu(), 3, &[], &[], T0);
    assert_eq!(plan.scale_to, None);
    assert!(
        plan.conditions[1]
            .message
            .contains("no pods returned by selector"),
        "{:?}",
        plan.conditions
    );
    let plan = run(&cpu(), 0, &[(R, Some(90))], &[], T0);
    assert_eq!(
        (plan.desired_replicas, reason(&plan, "ScalingActive")),
        (0, (ConditionStatus::False, "ScalingDisabled"))
    );
    let mut no_request = requesting("a ready");
    no_request.spec.containers[0].resources.requests.clear();
    let usage = HashMap::from([(
        "a".to_owned(),
        PodUsage {
            cpu_millicores: 90,
            memory_bytes: 0,
        },
    )]);
    let input = HpaInput {
        hpa: &cpu(),
        current_replicas: 1,
        pods: &[no_request],
        usage: &usage,
        recommendations: &[],
        now_ms: T0,
    };
    let plan = reconcile_hpa(&input, &HpaConfig::default());
    assert_eq!(
        plan.conditions[1].message,
        "missing request for cpu in container web of Pod a"
    );
}

#[test]
fn the_largest_proposal_over_metrics_wins() {
    let both = hpa(
        1,
        10,
        vec![
            metric(MetricResourceName::Cpu, 90),
            metric(MetricResourceName::Memory, 30),
        ],
    );
    let plan = run(
        &both,
        2,
        &[("a ready", Some(60)), ("b ready", Some(60))],
        &[],
        T0,
    );
    // cpu: 60/90 → 2; memory: 60/30 → 4.
    assert_eq!(plan.desired_replicas, 4);
    assert_eq!(plan.status.current_metrics.len(), 2);
    let memory = plan.status.current_metrics[1]
        .resource
        .as_ref()
        .expect("resource status");
    assert_eq!(memory.current.average_utilization, Some(60));
    assert_eq!(
        memory.current.average_value,
        Some(Quantity::parse("60Mi").expect("quantity"))
    );
}

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    let autoscaler = hpa(1, 10, vec![metric(MetricResourceName::Cpu, 50)]);
    let eight_at_25: Vec<(&str, Option<i64>)> = vec![(R, Some(25)); 8];
    let eight_at_25: Vec<(String, Option<i64>)> = eight_at_25
        .iter()
        .enumerate()
        .map(|(i, (_, u))| (format!("p{i} ready"), *u))
        .collect();
    let pods: Vec<(&str, Option<i64>)> =
        eight_at_25.iter().map(|(s, u)| (s.as_str(), *u)).collect();
    let earlier = [Recommendation {
        at_ms: T0 - 60_000,
        replicas: 8,
    }];
    let plan = run(&autoscaler, 8, &pods, &earlier, T0);
    assert_eq!(
        (plan.desired_replicas, reason(&plan, "AbleToScale")),
        (8, (ConditionStatus::True, "ScaleDownStabilized"))
    );
    assert_eq!(
        plan.recommendations,
        vec![
            earlier[0],
            Recommendation {
                at_ms: T0,
                replicas: 4
            }
        ]
    );
    // 300 s after the high recommendation it has left the window.
    let later = run(&autoscaler, 8, &pods, &plan.recommendations, T0 + 240_000);
    assert_eq!(
        (later.desired_replicas, reason(&later, "AbleToScale")),
        (4, (ConditionStatus::True, "ReadyForNewScale"))
    );
    assert_eq!(later.status.last_scale_time, Some(at(T0 + 240_000)));
    assert_eq!(
        later.recommendations.len(),
        2,
        "the expired recommendation is dropped"
    );
}

#[test]
fn status_reports_what_was_measured() {
    let plan = run(
        &hpa(1, 10, vec![metric(MetricResourceName::Cpu, 50)]),
        3,
        &[
            ("a ready", Some(90)),
            ("b ready", Some(90)),
            ("c ready", Some(90)),
        ],
        &[],
        T0,
    );
    let status = &plan.status;
    assert_eq!(
        (
            status.current_replicas,
            status.desired_replicas,
            status.last_scale_time.clone()
        ),
        (3, 6, Some(at(T0)))
    );
    let cpu = status.current_metrics[0]
        .resource
        .as_ref()
        .expect("resource status");
    assert_eq!(
        (
            cpu.current.average_utilization,
            cpu.current.average_value.clone()
        ),
        (Some(90), Some(Quantity::from_milli(90)))
    );
}
