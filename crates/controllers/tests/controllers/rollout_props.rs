//! Property: whatever the order in which pods become ready or unready, time passes, terminating
//! pods disappear, templates change and the ReplicaSet loop lags behind, a rolling update's plans never take the total above
//! `replicas + maxSurge` nor availability below `replicas - maxUnavailable` (or below what it
//! already was) — `Sim::step` and `Sim::step_deployment_only` assert both on every plan — and the rollout still finishes once
//! pods are healthy.

use flotilla_controllers::deployment::rollout_bounds;
use flotilla_controllers::pods;
use flotilla_state::objects::IntOrString;
use proptest::prelude::*;

use crate::fixtures::{deployment, set_ready_state};
use crate::sim::Sim;

#[derive(Clone, Debug)]
enum Op {
    Step,
    DeploymentOnly,
    ReplicaSetsOnly,
    Ready(usize),
    Unready(usize),
    FinishTerminations,
    AdvanceSeconds(i64),
    NewImage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Step),
        2 => Just(Op::DeploymentOnly),
        2 => Just(Op::ReplicaSetsOnly),
        4 => any::<usize>().prop_map(Op::Ready),
        1 => any::<usize>().prop_map(Op::Unready),
        1 => Just(Op::FinishTerminations),
        1 => (1i64..8).prop_map(Op::AdvanceSeconds),
        1 => Just(Op::NewImage),
    ]
}

fn bound() -> impl Strategy<Value = IntOrString> {
    prop_oneof![
        (0..3).prop_map(IntOrString::Int),
        prop::sample::select(vec!["0%", "10%", "25%", "50%", "100%"]).prop_map(IntOrString::from),
    ]
}

/// Sets the readiness of the `pick`-th active pod (modulo their number), if any.
fn set_readiness(sim: &mut Sim, pick: usize, ready: bool) {
    let now = sim.now_ms;
    let mut active: Vec<&mut flotilla_state::objects::Pod> =
        sim.pods.iter_mut().filter(|p| pods::is_active(p)).collect();
    if active.is_empty() {
        return;
    }
    let count = active.len();
    set_ready_state(active[pick % count], ready.then_some(now));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn rolling_updates_never_break_their_bounds(
        replicas in 1..7i32,
        surge in bound(),
        unavailable in bound(),
        min_ready_seconds in prop::sample::select(vec![0, 3]),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut d = deployment(replicas, "v0", surge, unavailable);
        d.spec.min_ready_seconds = Some(min_ready_seconds);
        prop_assume!(rollout_bounds(&d).is_ok());
        let mut sim = Sim::rolled_out(d);
        let mut version = 0;
        for op in ops {
            match op {
                Op::Step => {
                    sim.step();
                }
                Op::DeploymentOnly => {
                    sim.step_deployment_only();
                }
                Op::ReplicaSetsOnly => sim.reconcile_replicasets(),
                Op::Ready(pick) => set_readiness(&mut sim, pick, true),
                Op::Unready(pick) => set_readiness(&mut sim, pick, false),
                Op::FinishTerminations => sim.finish_terminations(),
                Op::AdvanceSeconds(seconds) => sim.advance(seconds * 1000),
                Op::NewImage => {
                    version += 1;
                    sim.set_image(&format!("v{version}"));
                }
            }
        }
        sim.roll_out();
        prop_assert_eq!(sim.new_and_old(), (replicas, 0));
    }
}
