//! The register backend over the Cluster API: register `reg-NNN` is a ConfigMap of that name in
//! namespace `default`, its value the decimal text in `data.value`.
//!
//! - read: a linearizable `Get`; NOT_FOUND is the empty register.
//! - write: an `Apply` of the ConfigMap with the new value (created on the first write).
//! - compare-and-set: a linearizable `Get`; if the value is not the expected one the op failed,
//!   else an `Update` of that object, carrying its `metadata.resourceVersion`, with the new
//!   value. ABORTED (the object changed since the Get) means it did not take effect. The op's
//!   invocation is recorded before the Get and its completion after the Update, so the checker
//!   judges the whole interval.
//!
//! Also owns where these objects live in the store's key space (for the committed-history
//! reader, which reads them back through the KV API) and how a stored object decodes.

use flotilla_api::cluster::cluster_api_client::ClusterApiClient;
use flotilla_api::cluster::{ApplyRequest, GetRequest, ObjectRef, ObjectRequest};
use serde_json::{json, Value as Json};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client;
use crate::cluster::Endpoint;
use crate::error::ChaosError;
use crate::history::Value;
use crate::workload::kv::UNPARSABLE_VALUE;
use crate::workload::register::{OpError, RegisterBackend, RegisterConn};

/// The namespace the registers live in.
pub const NAMESPACE: &str = "default";

/// The key prefix of every ConfigMap in the store.
pub const CONFIGMAPS_KEY_PREFIX: &str = "/registry/configmaps/";

/// The key prefix of the ConfigMaps in [`NAMESPACE`].
pub const NAMESPACE_KEY_PREFIX: &str = "/registry/configmaps/default/";

/// The key prefix of the registers: the key of ConfigMap `reg-007` is this plus `007`.
pub const REGISTER_KEY_PREFIX: &str = "/registry/configmaps/default/reg-";

const KIND: &str = "ConfigMap";

pub struct ConfigMapRegisters;

pub struct ConfigMapConn {
    client: ClusterApiClient<Channel>,
}

impl RegisterBackend for ConfigMapRegisters {
    type Conn = ConfigMapConn;

    fn connect(&self, endpoint: Endpoint) -> Result<ConfigMapConn, ChaosError> {
        Ok(ConfigMapConn {
            client: client::cluster_api(endpoint.addr)?,
        })
    }
}

/// The ConfigMap name of a register key (`…/default/reg-007` → `reg-007`).
pub fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The store key of a ConfigMap.
pub fn object_key(namespace: &str, name: &str) -> String {
    format!("{CONFIGMAPS_KEY_PREFIX}{namespace}/{name}")
}

/// A ConfigMap manifest holding `value` (JSON, which the Cluster API takes as YAML too).
pub fn manifest(namespace: &str, name: &str, value: &str) -> Vec<u8> {
    let object = json!({
        "apiVersion": "v1",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "data": {"value": value},
    });
    object.to_string().into_bytes()
}

/// The register value in a ConfigMap as JSON text (stored or returned by the API); anything
/// that is not a ConfigMap with a numeric `data.value` reads as [`UNPARSABLE_VALUE`].
pub fn decode_object(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Json>(bytes)
        .ok()
        .and_then(|object| register_value(&object))
        .unwrap_or(UNPARSABLE_VALUE)
}

fn register_value(object: &Json) -> Option<Value> {
    object.pointer("/data/value")?.as_str()?.parse().ok()
}

/// The `metadata.resourceVersion` of an object as the API returned it.
pub fn resource_version(object: &Json) -> Option<i64> {
    object
        .pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// Whether a failed write proves it was not applied. ABORTED (every attempt of an apply met a
/// conflict, or an update's resourceVersion was stale), rejections and a missing object or
/// namespace are definite; UNAVAILABLE, deadlines, internal and transport errors are not.
fn write_error(status: &Status) -> OpError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Aborted
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::NotFound
        | Code::AlreadyExists => OpError::Definite(message),
        _ => OpError::Indeterminate(message),
    }
}

fn read_error(status: &Status) -> OpError {
    OpError::Indeterminate(format!("{:?}: {}", status.code(), status.message()))
}

impl ConfigMapConn {
    /// A linearizable Get: the object as stored, or `None` when there is none.
    async fn get(&mut self, name: &str) -> Result<Option<Json>, Status> {
        let request = GetRequest {
            r#ref: Some(ObjectRef {
                kind: KIND.into(),
                namespace: NAMESPACE.into(),
                name: name.into(),
            }),
            stale: false,
        };
        match self.client.get(request).await {
            Ok(response) => {
                let bytes = response.into_inner().object;
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Status::internal(format!("Get returned no JSON object: {e}")))
            }
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(status),
        }
    }
}

/// `object` with `data.value` set to `value`; `None` if it is not a JSON object.
fn with_value(mut object: Json, value: Value) -> Option<Json> {
    let root = object.as_object_mut()?;
    root.insert("data".into(), json!({"value": value.to_string()}));
    Some(object)
}

impl RegisterConn for ConfigMapConn {
    async fn read(&mut self, key: &str) -> Result<Option<Value>, OpError> {
        let object = self
            .get(object_name(key))
            .await
            .map_err(|s| read_error(&s))?;
        Ok(object.map(|o| register_value(&o).unwrap_or(UNPARSABLE_VALUE)))
    }

    async fn write(&mut self, key: &str, value: Value) -> Result<(), OpError> {
        let request = ApplyRequest {
            manifests: manifest(NAMESPACE, object_name(key), &value.to_string()),
            default_namespace: NAMESPACE.into(),
            dry_run: false,
        };
        self.client
            .apply(request)
            .await
            .map_err(|s| write_error(&s))?;
        Ok(())
    }

    async fn cas(&mut self, key: &str, expect: Value, new: Value) -> Result<bool, OpError> {
        // Nothing is written before the Update: a failed Get proves the op did not happen.
        let current = self
            .get(object_name(key))
            .await
            .map_err(|s| OpError::Definite(format!("Get before update: {}", s.message())))?;
        let Some(current) = current else {
            return Ok(false);
        };
        if register_value(&current) != Some(expect) || resource_version(&current).is_none() {
            return Ok(false);
        }
        let object = with_value(current, new)
            .ok_or_else(|| OpError::Definite("Get returned a non-object".into()))?;
        let request = ObjectRequest {
            object: object.to_string().into_bytes(),
            default_namespace: NAMESPACE.into(),
        };
        match self.client.update(request).await {
            Ok(_) => Ok(true),
            Err(status) if status.code() == Code::Aborted => Ok(false),
            Err(status) => Err(write_error(&status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_objects_decode_to_their_value() {
        let check = |bytes: &[u8], expected: Value| assert_eq!(decode_object(bytes), expected);
        check(&manifest(NAMESPACE, "reg-001", "42"), 42);
        check(
            br#"{"kind":"ConfigMap","metadata":{"name":"reg-001","resourceVersion":"9"},"data":{"value":"7"}}"#,
            7,
        );
        check(
            br#"{"kind":"ConfigMap","data":{"other":"7"}}"#,
            UNPARSABLE_VALUE,
        );
        check(br#"{"data":{"value":"x"}}"#, UNPARSABLE_VALUE);
        check(b"7", UNPARSABLE_VALUE);
    }

    #[test]
    fn keys_and_names_correspond() {
        let key = object_key(NAMESPACE, "reg-003");
        assert_eq!(key, "/registry/configmaps/default/reg-003");
        assert!(key.starts_with(REGISTER_KEY_PREFIX));
        assert_eq!(object_name(&key), "reg-003");
    }

    #[test]
    fn a_new_value_keeps_the_version_the_update_compares() {
        let object = json!({"metadata": {"name": "reg-000", "resourceVersion": "12"}, "data": {"value": "1"}});
        let updated = with_value(object, 2).unwrap();
        assert_eq!(resource_version(&updated), Some(12));
        assert_eq!(register_value(&updated), Some(2));
        assert_eq!(with_value(json!(3), 2), None);
    }

    #[test]
    fn only_proven_failures_are_definite() {
        let check = |code: Code, definite: bool| {
            let error = write_error(&Status::new(code, "m"));
            assert_eq!(matches!(error, OpError::Definite(_)), definite, "{code:?}");
        };
        check(Code::Aborted, true);
        check(Code::InvalidArgument, true);
        check(Code::FailedPrecondition, true);
        check(Code::NotFound, true);
        check(Code::Unavailable, false);
        check(Code::DeadlineExceeded, false);
        check(Code::Internal, false);
        check(Code::Unknown, false);
    }
}
