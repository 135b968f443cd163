//! Leader-only reconcile loops: deployments/replicasets, node lifecycle and eviction, autoscaler,
//! endpoints, garbage collection.
