//! The embedded Raft store of Flotilla: openraft over one RocksDB instance, holding an etcd-like
//! MVCC key-value state machine (revisions, txn with compares, range at a revision, watch from a
//! revision, compaction), with a gRPC transport between peers and a gRPC client API.
//!
//! It knows nothing of pods or nodes: the `state` crate gives keys and values their meaning.

// openraft's storage traits fix their error type (`StorageError`, ~224 bytes); helpers that feed
// those traits return it as it is rather than boxing and unboxing at every call.
#![allow(clippy::result_large_err)]

mod batch;
pub mod config;
pub mod convert;
pub mod db;
pub mod durable;
pub mod error;
pub mod forward;
pub mod kv_service;
pub mod log_store;
pub mod mvcc;
pub mod network;
pub mod node;
pub mod propose;
pub mod read_index;
pub mod snapshot;
pub mod state_machine;
pub mod transport_service;
pub mod types;
pub mod watch;

use std::sync::Arc;

use flotilla_api::kv::cluster_server::ClusterServer;
use flotilla_api::kv::kv_server::KvServer;
use flotilla_api::kv::watch_server::WatchServer;
use flotilla_api::raft::raft_transport_server::RaftTransportServer;
use tonic::transport::server::Router;
use tonic::transport::Server;

pub use config::StoreConfig;
pub use error::StoreError;
pub use forward::Member;
pub use mvcc::RangeQuery;
pub use node::{Status, StoreNode};
pub use types::*;
pub use watch::{WatchBatch, WatchError, Watcher};

/// Largest client request the KV service decodes: the write limit plus protobuf framing.
pub const MAX_CLIENT_REQUEST_BYTES: usize = types::limits::MAX_REQUEST_BYTES + 64 * 1024;
/// Largest response the KV service encodes: a full range page plus framing.
pub const MAX_CLIENT_RESPONSE_BYTES: usize =
    types::limits::MAX_RANGE_RESPONSE_BYTES + 16 * 1024 * 1024;
/// HTTP/2 streams a client may reset before the server accepted them, per connection, before
/// the server closes the connection (h2's default is 20; see [`router`]).
pub const PENDING_ACCEPT_RESETS_MAX: usize = 1024;

/// Accepted connections of a gRPC server, with Nagle's algorithm off. Without this, a server
/// fed through `serve_with_incoming` answers small requests only after the peer's delayed ACK
/// (tens of milliseconds per call).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(30)))
}

/// A gRPC router serving the Raft transport and the store's client API for `node`. Callers may
/// add more services before serving it.
///
/// Peers cancel Raft RPCs at their deadline (an append is given one heartbeat interval), which
/// resets the HTTP/2 stream; a busy peer that has not yet accepted those streams would answer
/// h2's default of 20 such resets by closing the whole connection (`too_many_resets`), taking
/// every in-flight heartbeat and append with it. The bound is raised, not removed.
pub fn router(node: Arc<StoreNode>) -> Router {
    let kv = kv_service::KvService::new(node.clone());
    Server::builder()
        .tcp_nodelay(true)
        .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS_MAX))
        .add_service(
            RaftTransportServer::new(transport_service::TransportService::new(node))
                .max_decoding_message_size(network::MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(network::MAX_PEER_MESSAGE_BYTES),
        )
        .add_service(
            KvServer::new(kv.clone())
                .max_decoding_message_size(MAX_CLIENT_REQUEST_BYTES)
                .max_encoding_message_size(MAX_CLIENT_RESPONSE_BYTES),
        )
        .add_service(WatchServer::new(kv.clone()))
        .add_service(ClusterServer::new(kv))
}
