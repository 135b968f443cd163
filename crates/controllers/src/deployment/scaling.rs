//! Scaling a Deployment whose `spec.replicas` changed (or that is paused): Kubernetes' `scale`,
//! with a simpler proportional split. One active ReplicaSet (or none) takes `spec.replicas`; a
//! saturated new ReplicaSet empties the old ones; otherwise a rolling Deployment spreads the
//! difference to `replicas + maxSurge` over the active ReplicaSets: each gets
//! `floor(difference × size / total)`, and the remainder goes one by one to the largest
//! (newest first when adding, oldest first when removing).

use std::cmp::Reverse;

use super::rollout::{Rollout, RsState, Target};

impl Rollout<'_> {
    /// A change of `spec.replicas` not yet applied: some active ReplicaSet was last scaled for
    /// another size.
    pub fn is_scaling_event(&self) -> bool {
        let desired = self.desired();
        self.new
            .iter()
            .chain(&self.old)
            .filter(|rs| rs.replicas > 0)
            .any(|rs| rs.desired_annotation().is_some_and(|d| d != desired))
    }

    fn targets(&self) -> Vec<Target> {
        let new = self.new.as_ref().map(|_| Target::New);
        new.into_iter()
            .chain((0..self.old.len()).map(Target::Old))
            .collect()
    }

    fn state(&self, target: Target) -> &RsState {
        match target {
            Target::New => self
                .new
                .as_ref()
                .expect("a step addressed a missing new ReplicaSet"),
            Target::Old(index) => &self.old[index],
        }
    }

    /// Kubernetes' `scale`: one active ReplicaSet (or none) takes `spec.replicas`; a saturated
    /// new ReplicaSet empties the old ones; otherwise a rolling Deployment spreads the
    /// difference to `replicas + maxSurge` over the active ReplicaSets by size.
    pub fn scale_proportionally(&mut self) {
        let active: Vec<Target> = self
            .targets()
            .into_iter()
            .filter(|&t| self.state(t).replicas > 0)
            .collect();
        if active.len() <= 1 {
            let latest = active.first().copied().or_else(|| self.latest());
            // Scaling to the same size still refreshes stale replica annotations.
            if let Some(target) = latest {
                self.scale(target, self.desired());
            }
            return;
        }
        if self.new_is_saturated() {
            for target in active.into_iter().filter(|&t| t != Target::New) {
                self.scale(target, 0);
            }
            return;
        }
        if super::is_recreate(self.d) {
            return;
        }
        self.spread(active);
    }

    /// The new ReplicaSet if any, else the most recently created old one.
    fn latest(&self) -> Option<Target> {
        if self.new.is_some() {
            return Some(Target::New);
        }
        self.old.len().checked_sub(1).map(Target::Old)
    }

    fn new_is_saturated(&self) -> bool {
        let desired = self.desired();
        self.new.as_ref().is_some_and(|rs| {
            rs.replicas == desired
                && rs.desired_annotation() == Some(desired)
                && rs.pods.available >= desired
        })
    }

    fn spread(&mut self, active: Vec<Target>) {
        let allowed = if self.desired() > 0 {
            self.desired() + self.bounds.max_surge
        } else {
            0
        };
        let sizes: Vec<i32> = active.iter().map(|&t| self.state(t).replicas).collect();
        let to_add = allowed - sizes.iter().sum::<i32>();
        // `active` lists the new ReplicaSet first, then old ones oldest first: "newest first"
        // is new, then old in reverse.
        let mut order: Vec<usize> = (0..active.len()).collect();
        let age = |i: usize| match active[i] {
            Target::New => usize::MAX,
            Target::Old(index) => index,
        };
        if to_add > 0 {
            order.sort_by_key(|&i| (Reverse(sizes[i]), Reverse(age(i))));
        } else {
            order.sort_by_key(|&i| (Reverse(sizes[i]), age(i)));
        }
        let deltas = spread_proportionally(&sizes, &order, to_add);
        for (i, target) in active.into_iter().enumerate() {
            self.scale(target, sizes[i] + deltas[i]);
        }
    }
}

/// Splits `to_add` (negative: remove) over `sizes` in proportion, floor first, then one each
/// in `order` for the remainder. Never takes a size below zero when `-to_add <= sum(sizes)`.
fn spread_proportionally(sizes: &[i32], order: &[usize], to_add: i32) -> Vec<i32> {
    let total: i64 = sizes.iter().map(|&s| i64::from(s)).sum();
    let mut deltas = vec![0i32; sizes.len()];
    if total == 0 || to_add == 0 {
        return deltas;
    }
    let magnitude = i64::from(to_add)
        .abs()
        .min(if to_add < 0 { total } else { i64::MAX });
    let sign = if to_add > 0 { 1 } else { -1 };
    let mut given = 0i64;
    for (i, &size) in sizes.iter().enumerate() {
        let share = magnitude * i64::from(size) / total;
        deltas[i] = sign * i32::try_from(share).unwrap_or(i32::MAX);
        given += share;
    }
    let mut remainder = magnitude - given;
    for &i in order.iter().cycle().take(order.len() * 2) {
        if remainder == 0 {
            break;
        }
        let room = to_add > 0 || sizes[i] + deltas[i] > 0;
        if room {
            deltas[i] += sign;
            remainder -= 1;
        }
    }
    deltas
}

#[cfg(test)]
mod tests {
    use super::spread_proportionally;

    fn check(sizes: &[i32], to_add: i32, expected: &[i32]) {
        let order: Vec<usize> = (0..sizes.len()).collect();
        let deltas = spread_proportionally(sizes, &order, to_add);
        let after: Vec<i32> = sizes.iter().zip(&deltas).map(|(s, d)| s + d).collect();
        assert_eq!(after, expected, "sizes {sizes:?} + {to_add}");
        assert_eq!(deltas.iter().sum::<i32>(), to_add);
    }

    #[test]
    fn spreads_in_proportion_and_exactly() {
        check(&[2, 2], 3, &[4, 3]);
        check(&[6, 2], 4, &[9, 3]);
        check(&[3, 1], -4, &[0, 0]);
        check(&[10, 1], -10, &[0, 1]);
        check(&[5, 5, 5], -1, &[4, 5, 5]);
    }
}
