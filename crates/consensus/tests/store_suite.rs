//! openraft's own storage test suite against the RocksDB log store and state machine.

use flotilla_consensus::db;
use flotilla_consensus::durable::Durability;
use flotilla_consensus::log_store::LogStore;
use flotilla_consensus::snapshot::SnapshotStore;
use flotilla_consensus::state_machine::StateMachine;
use flotilla_consensus::watch::{WatchConfig, WatchHub};
use flotilla_consensus::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = db::open(&dir.path().join("db")).expect("open rocksdb");
        let hub = WatchHub::new(0, WatchConfig::default());
        let snapshots =
            SnapshotStore::open(dir.path().join("snapshots"), db.clone()).expect("snapshot dir");
        // The suite applies entries that it never appended: the state machine waits for no log.
        let sm = StateMachine::open(db.clone(), hub, snapshots, Durability::ungated())?;
        let log = LogStore::new(db, 1, Durability::new())?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("storage suite failed: {e}");
    }
}
