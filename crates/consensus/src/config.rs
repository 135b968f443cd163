//! Settings of a store peer, with defaults for a LAN (or loopback) cluster.

use std::path::PathBuf;
use std::time::Duration;

use crate::types::NodeId;
use crate::watch::WatchConfig;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub id: NodeId,
    /// Address peers and clients reach this peer at (`host:port`).
    pub advertise_addr: String,
    pub data_dir: PathBuf,
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    /// openraft 0.9 adds a leader lease of `election_timeout_max_ms` before that (a follower
    /// that knows a leader waits lease + timeout, 550–700 ms with these defaults), so a new
    /// leader is in place within a second of the old one dying.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    pub keep_entries_after_snapshot: u64,
    /// Most entries in one append RPC.
    pub max_entries_per_append: u64,
    /// Bytes of snapshot per chunk RPC.
    pub snapshot_chunk_bytes: u64,
    /// Deadline of one peer RPC (append, vote); snapshot chunks get `snapshot_chunk_timeout`.
    pub rpc_timeout: Duration,
    pub snapshot_chunk_timeout: Duration,
    /// Deadline of one client request (write, linearizable read, membership change).
    pub request_timeout: Duration,
    pub watch: WatchConfig,
}

impl StoreConfig {
    pub fn new(
        id: NodeId,
        advertise_addr: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        StoreConfig {
            id,
            advertise_addr: advertise_addr.into(),
            data_dir: data_dir.into(),
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 350,
            snapshot_every_entries: 20_000,
            keep_entries_after_snapshot: 5_000,
            max_entries_per_append: 512,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
            rpc_timeout: Duration::from_secs(2),
            snapshot_chunk_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            watch: WatchConfig::default(),
        }
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        let config = openraft::Config {
            cluster_name: "flotilla".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.snapshot_chunk_timeout.as_millis() as u64,
            max_payload_entries: self.max_entries_per_append,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            ..Default::default()
        };
        config.validate()
    }
}
