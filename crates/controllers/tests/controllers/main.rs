//! Behaviour tests of the controllers' plans, at the crate boundary: each module drives one
//! controller through small `check(...)` helpers over data tables.

mod deployment;
mod events;
mod expectations;
mod fixtures;
mod gc;
mod hpa;
mod node_lifecycle;
mod replicaset;
mod rollout_props;
mod sim;
