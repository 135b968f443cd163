//! Malformed and hostile RPCs get errors and leave the store unchanged.

mod support;

use flotilla_api::kv::kv_client::KvClient;
use flotilla_api::kv::{compare, Compare, PutRequest, RangeRequest, TxnRequest};
use flotilla_api::raft::raft_transport_client::RaftTransportClient;
use flotilla_api::raft::RaftPayload;
use support::{put, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rpcs_are_refused_and_change_nothing() {
    let cluster = Cluster::start(1).await;
    let node = cluster.node(1);
    put(node, "stay", "v").await;
    let before = node.status().unwrap();
    let endpoint = format!("http://{}", cluster.peers[&1].addr);

    let mut raft = RaftTransportClient::connect(endpoint.clone())
        .await
        .unwrap();
    for garbage in [vec![], vec![0xff; 7], b"not bincode at all".to_vec()] {
        let append = raft
            .append_entries(RaftPayload {
                data: garbage.clone(),
            })
            .await;
        assert_eq!(append.unwrap_err().code(), tonic::Code::InvalidArgument);
        let vote = raft
            .vote(RaftPayload {
                data: garbage.clone(),
            })
            .await;
        assert_eq!(vote.unwrap_err().code(), tonic::Code::InvalidArgument);
        let forward = raft.forward(RaftPayload { data: garbage }).await;
        assert_eq!(forward.unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    let mut kv = KvClient::connect(endpoint).await.unwrap();
    let oversized = kv
        .put(PutRequest {
            key: vec![b'k'; 5000],
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await;
    assert_eq!(oversized.unwrap_err().code(), tonic::Code::InvalidArgument);
    let too_big = kv
        .put(PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 3 * 1024 * 1024],
            ..Default::default()
        })
        .await;
    assert!(
        too_big.is_err(),
        "a request over the message limit is refused"
    );
    let mismatched = kv
        .txn(TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: b"stay".to_vec(),
                target_union: Some(compare::TargetUnion::Value(b"v".to_vec())),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(mismatched.code(), tonic::Code::InvalidArgument);
    assert!(
        mismatched.message().contains("compare[0]"),
        "{}",
        mismatched.message()
    );
    let negative = kv
        .range(RangeRequest {
            key: b"stay".to_vec(),
            limit: -1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        negative.message().contains("limit"),
        "{}",
        negative.message()
    );

    let after = node.status().unwrap();
    assert_eq!(after.revision, before.revision, "nothing was written");
    assert_eq!(after.term, before.term, "no election was provoked");
    cluster.shutdown().await;
}
