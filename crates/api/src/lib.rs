//! Code generated from `proto/` by tonic and prost. No logic lives here.

/// Peer-to-peer transport of the embedded Raft store.
pub mod raft {
    tonic::include_proto!("flotilla.raft");
}

/// The client-facing MVCC key-value API of the embedded store.
pub mod kv {
    tonic::include_proto!("flotilla.kv");
}

/// The Kubernetes-shaped Cluster API.
pub mod cluster {
    tonic::include_proto!("flotilla.cluster");
}

/// The node API: agent heartbeats to the leader.
pub mod node {
    tonic::include_proto!("flotilla.node");
}

/// The agent API: logs and exec, served by each node agent for the CLI.
pub mod agent {
    tonic::include_proto!("flotilla.agent");
}
