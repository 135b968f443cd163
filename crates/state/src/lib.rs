//! Object model (Kubernetes-shaped kinds), validation, keyspace, resourceVersion and optimistic
//! concurrency, list+watch and the Cluster API service logic. It does no network or disk IO itself:
//! it is handed a store.
