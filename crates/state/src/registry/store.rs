//! The store the registry is handed: the embedded Raft KV. A trait, so the registry's logic does
//! no IO of its own and tests can hand it a single-peer store.

use std::future::Future;
use std::sync::Arc;

use flotilla_consensus::{
    KeyRange, RangeQuery, RangeResult, StoreError, StoreNode, WatchError, Watcher, WriteRequest,
    WriteResponse,
};

pub trait Store: Send + Sync + 'static {
    /// Reads a range; returns it with the store revision it was read at.
    fn range(
        &self,
        query: RangeQuery,
        serializable: bool,
    ) -> impl Future<Output = Result<(RangeResult, i64), StoreError>> + Send;

    /// Commits a write through the leader.
    fn write(
        &self,
        request: WriteRequest,
    ) -> impl Future<Output = Result<WriteResponse, StoreError>> + Send;

    /// Watches a key range from a revision (0: after the current one).
    fn watch(&self, range: KeyRange, start_revision: i64) -> Result<Watcher, WatchError>;
}

impl Store for Arc<StoreNode> {
    fn range(
        &self,
        query: RangeQuery,
        serializable: bool,
    ) -> impl Future<Output = Result<(RangeResult, i64), StoreError>> + Send {
        StoreNode::range(self, query, serializable)
    }

    fn write(
        &self,
        request: WriteRequest,
    ) -> impl Future<Output = Result<WriteResponse, StoreError>> + Send {
        StoreNode::write(self, request)
    }

    fn watch(&self, range: KeyRange, start_revision: i64) -> Result<Watcher, WatchError> {
        StoreNode::watch(self, range, start_revision)
    }
}
