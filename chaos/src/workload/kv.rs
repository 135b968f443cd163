//! The register backend over the store's KV API: a read is a linearizable `Range` of one key, a
//! write a `Put`, a compare-and-set a `Txn` (value == expected → put new). Values are stored as
//! decimal text.

use flotilla_api::kv::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_api::kv::kv_client::KvClient;
use flotilla_api::kv::request_op::Request as TxnOp;
use flotilla_api::kv::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client;
use crate::cluster::Endpoint;
use crate::error::ChaosError;
use crate::history::Value;
use crate::workload::register::{OpError, RegisterBackend, RegisterConn};

/// What a read reports for a stored value that is not one of the workload's numbers; nobody
/// writes it, so the linearizability checker flags the read.
pub const UNPARSABLE_VALUE: Value = Value::MAX;

pub struct KvRegisters;

pub struct KvConn {
    client: KvClient<Channel>,
}

impl RegisterBackend for KvRegisters {
    type Conn = KvConn;

    fn connect(&self, endpoint: Endpoint) -> Result<KvConn, ChaosError> {
        Ok(KvConn {
            client: client::kv(endpoint.addr)?,
        })
    }
}

/// Parses a stored register value.
pub fn decode_value(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(UNPARSABLE_VALUE)
}

pub fn encode_value(value: Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Whether an error proves a write was not applied. Anything that may have reached the leader
/// (unavailable after forwarding, deadline, internal) is indeterminate.
fn write_error(status: Status) -> OpError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            OpError::Definite(message)
        }
        _ => OpError::Indeterminate(message),
    }
}

fn read_error(status: Status) -> OpError {
    OpError::Indeterminate(format!("{:?}: {}", status.code(), status.message()))
}

impl RegisterConn for KvConn {
    async fn read(&mut self, key: &str) -> Result<Option<Value>, OpError> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable: false,
            ..Default::default()
        };
        let response = self.client.range(request).await.map_err(read_error)?;
        let response = response.into_inner();
        Ok(response.kvs.first().map(|kv| decode_value(&kv.value)))
    }

    async fn write(&mut self, key: &str, value: Value) -> Result<(), OpError> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: encode_value(value),
            ..Default::default()
        };
        self.client.put(request).await.map_err(write_error)?;
        Ok(())
    }

    async fn cas(&mut self, key: &str, expect: Value, new: Value) -> Result<bool, OpError> {
        let request = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Value as i32,
                key: key.as_bytes().to_vec(),
                target_union: Some(TargetUnion::Value(encode_value(expect))),
            }],
            success: vec![RequestOp {
                request: Some(TxnOp::RequestPut(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: encode_value(new),
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
            request_id: String::new(),
        };
        let response = self.client.txn(request).await.map_err(write_error)?;
        Ok(response.into_inner().succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_flagged() {
        assert_eq!(decode_value(&encode_value(42)), 42);
        assert_eq!(decode_value(b"x"), UNPARSABLE_VALUE);
    }

    #[test]
    fn only_rejections_are_definite() {
        let check = |code: Code, definite: bool| {
            let error = write_error(Status::new(code, "m"));
            assert_eq!(matches!(error, OpError::Definite(_)), definite, "{code:?}");
        };
        check(Code::InvalidArgument, true);
        check(Code::FailedPrecondition, true);
        check(Code::Unavailable, false);
        check(Code::DeadlineExceeded, false);
        check(Code::Internal, false);
        check(Code::Unknown, false);
    }
}
