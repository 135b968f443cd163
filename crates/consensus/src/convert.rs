//! Conversions between the `flotilla.kv` protobuf messages and the store's own types. Malformed
//! messages become INVALID_ARGUMENT with the offending field named.

use flotilla_api::kv as pb;
use tonic::Status;

use crate::mvcc::RangeQuery;
use crate::types::{
    Compare, CompareOp, CompareTarget, DeleteOp, Event, EventKind, KeyRange, KeyValue, OpResult,
    PutOp, RangeOp, RangeResult, Rejection, Txn, TxnOp, WriteOp, WriteRequest,
};

fn request_id(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}

fn non_negative(value: i64, field: &str) -> Result<usize, Status> {
    usize::try_from(value).map_err(|_| {
        Status::invalid_argument(format!("{field}: must not be negative, got {value}"))
    })
}

pub fn range_query(req: &pb::RangeRequest) -> Result<RangeQuery, Status> {
    if req.revision < 0 {
        return Err(Status::invalid_argument(format!(
            "revision: must not be negative, got {}",
            req.revision
        )));
    }
    Ok(RangeQuery {
        range: KeyRange::between(req.key.clone(), req.range_end.clone()),
        limit: non_negative(req.limit, "limit")?,
        revision: req.revision,
        keys_only: req.keys_only,
        count_only: req.count_only,
    })
}

pub fn put_op(req: pb::PutRequest) -> PutOp {
    PutOp {
        key: req.key,
        value: req.value,
        prev_kv: req.prev_kv,
    }
}

pub fn delete_op(req: pb::DeleteRangeRequest) -> DeleteOp {
    DeleteOp {
        range: KeyRange::between(req.key, req.range_end),
        prev_kv: req.prev_kv,
    }
}

pub fn put_request(req: pb::PutRequest) -> WriteRequest {
    let id = request_id(req.request_id.clone());
    WriteRequest {
        request_id: id,
        fence_term: None,
        op: WriteOp::Put(put_op(req)),
    }
}

pub fn delete_request(req: pb::DeleteRangeRequest) -> WriteRequest {
    let id = request_id(req.request_id.clone());
    WriteRequest {
        request_id: id,
        fence_term: None,
        op: WriteOp::Delete(delete_op(req)),
    }
}

fn compare(index: usize, c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult, CompareTarget as T, TargetUnion as U};
    let field = format!("compare[{index}]");
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => CompareOp::Equal,
        Ok(CompareResult::NotEqual) => CompareOp::NotEqual,
        Ok(CompareResult::Greater) => CompareOp::Greater,
        Ok(CompareResult::Less) => CompareOp::Less,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "{field}.result: unknown value {}",
                c.result
            )))
        }
    };
    let target = match (T::try_from(c.target), c.target_union) {
        (Ok(T::Version), Some(U::Version(v))) => CompareTarget::Version(v),
        (Ok(T::Create), Some(U::CreateRevision(v))) => CompareTarget::CreateRevision(v),
        (Ok(T::Mod), Some(U::ModRevision(v))) => CompareTarget::ModRevision(v),
        (Ok(T::Value), Some(U::Value(v))) => CompareTarget::Value(v),
        (Ok(T::Exists), Some(U::Exists(v))) => CompareTarget::Exists(v),
        (Ok(target), _) => {
            return Err(Status::invalid_argument(format!(
                "{field}: target {target:?} needs its matching target_union value"
            )))
        }
        (Err(_), _) => {
            return Err(Status::invalid_argument(format!(
                "{field}.target: unknown value {}",
                c.target
            )))
        }
    };
    Ok(Compare {
        key: c.key,
        op,
        target,
    })
}

fn txn_ops(branch: &str, ops: Vec<pb::RequestOp>) -> Result<Vec<TxnOp>, Status> {
    use pb::request_op::Request as R;
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| match op.request {
            Some(R::RequestPut(put)) => Ok(TxnOp::Put(put_op(put))),
            Some(R::RequestDeleteRange(del)) => Ok(TxnOp::Delete(delete_op(del))),
            Some(R::RequestRange(range)) => {
                if range.revision != 0 {
                    return Err(Status::invalid_argument(format!(
                        "{branch}[{i}].request_range.revision: ranges inside a transaction read the current revision"
                    )));
                }
                Ok(TxnOp::Range(RangeOp {
                    range: KeyRange::between(range.key, range.range_end),
                    limit: non_negative(range.limit, &format!("{branch}[{i}].request_range.limit"))?,
                    keys_only: range.keys_only,
                    count_only: range.count_only,
                }))
            }
            None => Err(Status::invalid_argument(format!("{branch}[{i}]: empty operation"))),
        })
        .collect()
}

pub fn txn_request(req: pb::TxnRequest) -> Result<WriteRequest, Status> {
    let compares = req
        .compare
        .into_iter()
        .enumerate()
        .map(|(i, c)| compare(i, c))
        .collect::<Result<_, _>>()?;
    Ok(WriteRequest {
        request_id: request_id(req.request_id),
        fence_term: None,
        op: WriteOp::Txn(Txn {
            compares,
            success: txn_ops("success", req.success)?,
            failure: txn_ops("failure", req.failure)?,
        }),
    })
}

pub fn key_value(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
    }
}

pub fn range_response(header: pb::ResponseHeader, result: RangeResult) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: result.kvs.into_iter().map(key_value).collect(),
        more: result.more,
        count: result.count,
    }
}

pub fn op_response(header: &pb::ResponseHeader, result: OpResult) -> pb::ResponseOp {
    use pb::response_op::Response as R;
    let response = match result {
        OpResult::Range(range) => R::ResponseRange(range_response(*header, range)),
        OpResult::Put { prev_kv } => R::ResponsePut(pb::PutResponse {
            header: Some(*header),
            prev_kv: prev_kv.map(key_value),
        }),
        OpResult::Delete { deleted, prev_kvs } => R::ResponseDeleteRange(pb::DeleteRangeResponse {
            header: Some(*header),
            deleted,
            prev_kvs: prev_kvs.into_iter().map(key_value).collect(),
        }),
    };
    pb::ResponseOp {
        response: Some(response),
    }
}

pub fn event(e: Event, with_prev: bool) -> pb::Event {
    pb::Event {
        r#type: match e.kind {
            EventKind::Put => pb::event::EventType::Put as i32,
            EventKind::Delete => pb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv)),
        prev_kv: if with_prev {
            e.prev_kv.map(key_value)
        } else {
            None
        },
    }
}

pub fn rejection(r: Rejection) -> Status {
    let message = r.to_string();
    match r {
        Rejection::Invalid(_) => Status::invalid_argument(message),
        Rejection::Fenced { .. } => Status::failed_precondition(message),
        Rejection::AlreadyCompacted { .. } | Rejection::FutureRevision { .. } => {
            Status::out_of_range(message)
        }
    }
}
