//! Placement: filter + score as a pure function of (pod, cluster snapshot) -> decision, and batch
//! placement. No IO.
