//! The Cluster API service logic: manifests and objects in, validated and defaulted through the
//! object model, stored through the [`Registry`]; errors mapped to gRPC codes. The gRPC server
//! itself (sockets) belongs to the peer that mounts this service.

use std::pin::Pin;
use std::time::Duration;

use flotilla_api::cluster as pb;
use flotilla_api::cluster::cluster_api_server::ClusterApi;
use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::field_selector::{Field, FieldSelector};
use crate::objects::{Kind, Object};
use crate::registry::sparse::Paths;
use crate::registry::{
    object, ApiError, DeleteOptions, KindInfo, ListOptions, Propagation, Registry, Scope, Store,
    WatchFilter,
};
use crate::selector::Selector;

/// Most objects one apply or create request may carry.
pub const MAX_OBJECTS_PER_REQUEST: usize = 1_000;
/// Responses buffered per watch stream between the registry and gRPC.
pub const WATCH_STREAM_BUFFER: usize = 64;
/// Pause between BOOKMARK events of a quiet watch that asked for them.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

const fn info(kind: Kind) -> KindInfo {
    KindInfo {
        kind: kind.name(),
        api_version: kind.api_version(),
        plural: kind.plural(),
        namespaced: kind.is_namespaced(),
        has_status: !matches!(kind, Kind::ConfigMap | Kind::Event),
        has_spec: !matches!(kind, Kind::ConfigMap | Kind::Event),
    }
}

/// Every kind the registry stores.
pub static KINDS: [KindInfo; 9] = [
    info(Kind::Namespace),
    info(Kind::Node),
    info(Kind::Pod),
    info(Kind::Deployment),
    info(Kind::ReplicaSet),
    info(Kind::Service),
    info(Kind::ConfigMap),
    info(Kind::Event),
    info(Kind::HorizontalPodAutoscaler),
];

pub fn kind_info(kind: Kind) -> &'static KindInfo {
    KINDS
        .iter()
        .find(|k| k.kind == kind.name())
        .expect("every kind is in KINDS")
}

pub fn to_status(e: ApiError) -> Status {
    let message = e.to_string();
    match e {
        ApiError::NotFound { .. } => Status::not_found(message),
        ApiError::AlreadyExists { .. } => Status::already_exists(message),
        ApiError::Conflict(_) => Status::aborted(message),
        ApiError::Invalid(_) => Status::invalid_argument(message),
        ApiError::Expired(_) => Status::out_of_range(message),
        ApiError::Unavailable(_) => Status::unavailable(message),
        ApiError::Fenced(_) => Status::failed_precondition(message),
        ApiError::Internal(_) => Status::internal(message),
    }
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Fills defaults, checks an object and turns it into its stored JSON form.
pub fn admit(mut obj: Object, default_namespace: &str) -> Result<(KindInfo, Value), ApiError> {
    let kind = obj.kind();
    if kind.is_namespaced() {
        if obj.namespace().is_empty() {
            obj.metadata_mut().namespace = default_namespace.to_string();
        }
    } else {
        obj.metadata_mut().namespace = String::new();
    }
    crate::default(&mut obj);
    crate::validate(&obj).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        ApiError::Invalid(format!(
            "{} {:?} is invalid: {}",
            kind.name(),
            obj.name(),
            lines.join("; ")
        ))
    })?;
    let value = serde_json::to_value(&obj).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((*kind_info(kind), value))
}

/// Parses one object sent as JSON (or YAML).
fn parse_one(bytes: &[u8]) -> Result<Object, Status> {
    // Clients and agents send one JSON object: decoded straight into its kind, it skips the
    // manifest reader's generic document tree (a third of a status write's CPU). Anything that
    // does not decode that way goes through the manifest reader, whose errors name the field.
    if bytes.first() == Some(&b'{') {
        if let Ok(object) = serde_json::from_slice::<Object>(bytes) {
            return Ok(object);
        }
    }
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("object: not UTF-8"))?;
    let mut objects = crate::parse_manifests(text).map_err(invalid)?;
    match objects.len() {
        1 => Ok(objects.remove(0)),
        n => Err(invalid(format!("expected one object, got {n}"))),
    }
}

/// Re-checks a JSON object produced by a patch.
fn readmit(value: Value, namespace: &str) -> Result<Value, ApiError> {
    let obj: Object = serde_json::from_value(value)
        .map_err(|e| ApiError::Invalid(format!("patched object: {e}")))?;
    admit(obj, namespace).map(|(_, v)| v)
}

fn parse_kind(text: &str) -> Result<Kind, Status> {
    Kind::parse(text).map_err(invalid)
}

fn scope_of(kind: Kind, namespace: &str, all: bool) -> Scope {
    if all || !kind.is_namespaced() {
        Scope::All
    } else if namespace.is_empty() {
        Scope::Namespace("default".into())
    } else {
        Scope::Namespace(namespace.to_string())
    }
}

/// The JSON path a selectable field is read from.
fn json_path(field: Field) -> &'static str {
    match field {
        Field::Source => "source.component",
        other => other.path(),
    }
}

/// Where label selectors read an object's labels.
const LABELS_PATH: &str = "metadata.labels";

/// A filter over stored objects from the label and field selectors of a request.
pub fn object_filter(kind: Kind, labels: &str, fields: &str) -> Result<WatchFilter, Status> {
    let labels = Selector::parse(labels).map_err(invalid)?;
    let fields = FieldSelector::parse(fields).map_err(invalid)?;
    fields.check_kind(kind).map_err(invalid)?;
    let requirements = fields.requirements().to_vec();
    if labels.is_empty() && requirements.is_empty() {
        return Ok(WatchFilter::everything());
    }
    let mut reads: Vec<&str> = requirements.iter().map(|r| json_path(r.field)).collect();
    if !labels.is_empty() {
        reads.push(LABELS_PATH);
    }
    Ok(WatchFilter::reading(
        Paths::new(reads),
        move |obj: &Value| {
            let fields_ok = requirements.iter().all(|r| {
                let mut value = object::path_str(obj, json_path(r.field));
                if r.field == Field::SpecUnschedulable && value.is_empty() {
                    value = "false".into();
                }
                (value == r.value) != r.negated
            });
            fields_ok && (labels.is_empty() || labels.matches(&object::labels(obj)))
        },
    ))
}

fn object_bytes(obj: &Value) -> Vec<u8> {
    serde_json::to_vec(obj).expect("JSON values serialise")
}

fn object_ref(r: Option<pb::ObjectRef>) -> Result<(Kind, String, String), Status> {
    let r = r.ok_or_else(|| invalid("ref: Required value"))?;
    let kind = parse_kind(&r.kind)?;
    if r.name.is_empty() {
        return Err(invalid("ref.name: Required value"));
    }
    let namespace = match (kind.is_namespaced(), r.namespace.is_empty()) {
        (false, _) => String::new(),
        (true, true) => "default".to_string(),
        (true, false) => r.namespace,
    };
    Ok((kind, namespace, r.name))
}

#[derive(Clone)]
pub struct ClusterApiService<S: Store + Clone> {
    registry: Registry<S>,
}

impl<S: Store + Clone> ClusterApiService<S> {
    pub fn new(registry: Registry<S>) -> Self {
        ClusterApiService { registry }
    }

    /// Parses and admits every object of the manifests before anything is written, so that a
    /// bad document changes nothing. Namespaces come first so later objects can live in them.
    fn admit_manifests(
        &self,
        request: &pb::ApplyRequest,
    ) -> Result<Vec<(KindInfo, Value)>, Status> {
        let text =
            std::str::from_utf8(&request.manifests).map_err(|_| invalid("manifests: not UTF-8"))?;
        let objects = crate::parse_manifests(text).map_err(invalid)?;
        if objects.len() > MAX_OBJECTS_PER_REQUEST {
            return Err(invalid(format!(
                "{} objects in one request; the limit is {MAX_OBJECTS_PER_REQUEST}",
                objects.len()
            )));
        }
        let namespace = match request.default_namespace.as_str() {
            "" => "default",
            ns => ns,
        };
        let mut admitted = objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                admit(o, namespace).map_err(|e| invalid(format!("document {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        admitted.sort_by_key(|(info, _)| info.kind != "Namespace");
        Ok(admitted)
    }

    /// Makes sure the `default` namespace exists; called when a peer starts.
    pub async fn ensure_default_namespace(&self) -> Result<(), ApiError> {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        match self.registry.create(kind_info(Kind::Namespace), ns).await {
            Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn registry(&self) -> &Registry<S> {
        &self.registry
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store + Clone> ClusterApi for ClusterApiService<S> {
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let request = request.into_inner();
        let admitted = self.admit_manifests(&request)?;
        let kinds: Vec<KindInfo> = admitted.iter().map(|(info, _)| *info).collect();
        let applied: Vec<(Value, &str)> = if request.dry_run {
            admitted
                .into_iter()
                .map(|(_, obj)| (obj, "checked"))
                .collect()
        } else {
            self.registry
                .apply_all(admitted)
                .await
                .map_err(to_status)?
                .into_iter()
                .map(|(obj, action)| (obj, action.as_str()))
                .collect()
        };
        let results = kinds
            .iter()
            .zip(applied)
            .map(|(info, (stored, action))| pb::Applied {
                kind: info.kind.into(),
                namespace: object::namespace(&stored).into(),
                name: object::name(&stored).into(),
                action: action.into(),
                object: object_bytes(&stored),
            })
            .collect();
        Ok(Response::new(pb::ApplyResponse { results }))
    }

    async fn create_manifests(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let request = request.into_inner();
        let admitted = self.admit_manifests(&request)?;
        let mut results = Vec::with_capacity(admitted.len());
        for (info, obj) in admitted {
            let stored = if request.dry_run {
                obj
            } else {
                self.registry.create(&info, obj).await.map_err(to_status)?
            };
            results.push(pb::Applied {
                kind: info.kind.into(),
                namespace: object::namespace(&stored).into(),
                name: object::name(&stored).into(),
                action: "created".into(),
                object: object_bytes(&stored),
            });
        }
        Ok(Response::new(pb::ApplyResponse { results }))
    }

    async fn create(
        &self,
        request: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (info, obj) =
            admit(parse_one(&request.object)?, &request.default_namespace).map_err(to_status)?;
        let stored = self.registry.create(&info, obj).await.map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&stored),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (kind, namespace, name) = object_ref(request.r#ref)?;
        let stored = self
            .registry
            .get(kind_info(kind), &namespace, &name, request.stale)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&stored.object),
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let request = request.into_inner();
        let kind = parse_kind(&request.kind)?;
        let filter = object_filter(kind, &request.label_selector, &request.field_selector)?;
        let options = ListOptions {
            limit: usize::try_from(request.limit)
                .map_err(|_| invalid("limit: must not be negative"))?,
            continue_token: (!request.r#continue.is_empty()).then_some(request.r#continue),
            stale: request.stale,
        };
        let scope = scope_of(kind, &request.namespace, request.all_namespaces);
        let page = self
            .registry
            .list(kind_info(kind), &scope, &filter, &options)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListResponse {
            items: page.items.iter().map(object_bytes).collect(),
            resource_version: page.resource_version.to_string(),
            r#continue: page.continue_token.unwrap_or_default(),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (info, obj) =
            admit(parse_one(&request.object)?, &request.default_namespace).map_err(to_status)?;
        let stored = self.registry.update(&info, obj).await.map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&stored),
        }))
    }

    async fn update_status(
        &self,
        request: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (info, obj) =
            admit(parse_one(&request.object)?, &request.default_namespace).map_err(to_status)?;
        let stored = self
            .registry
            .update_status(&info, obj)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&stored),
        }))
    }

    async fn patch(
        &self,
        request: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (kind, namespace, name) = object_ref(request.r#ref)?;
        let patch: Value =
            serde_json::from_slice(&request.patch).map_err(|e| invalid(format!("patch: {e}")))?;
        if !patch.is_object() {
            return Err(invalid("patch: a merge patch is a JSON object"));
        }
        let ns = namespace.clone();
        let stored = self
            .registry
            .patch(kind_info(kind), &namespace, &name, &patch, move |v| {
                readmit(v, &ns)
            })
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&stored),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (kind, namespace, name) = object_ref(request.r#ref)?;
        let propagation = match request.propagation.as_str() {
            "" | "Background" | "Foreground" => Propagation::Background,
            "Orphan" => Propagation::Orphan,
            other => return Err(invalid(format!("propagation: Unsupported value: {other:?}: supported values: \"Background\", \"Orphan\""))),
        };
        let resource_version = match request.resource_version.as_str() {
            "" => None,
            rv => Some(object::parse_resource_version(rv).map_err(invalid)?),
        };
        let options = DeleteOptions {
            grace_period_seconds: request.grace_period_seconds,
            propagation,
            resource_version,
        };
        let deleted = self
            .registry
            .delete(kind_info(kind), &namespace, &name, &options)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&deleted),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let request = request.into_inner();
        let kind = parse_kind(&request.kind)?;
        let filter = object_filter(kind, &request.label_selector, &request.field_selector)?;
        let after = match request.resource_version.as_str() {
            "" | "0" => None,
            rv => Some(object::parse_resource_version(rv).map_err(invalid)?),
        };
        let scope = scope_of(kind, &request.namespace, request.all_namespaces);
        let bookmarks = request.bookmarks.then_some(BOOKMARK_INTERVAL);
        let mut watch = self
            .registry
            .watch(kind_info(kind), &scope, filter, after, bookmarks)
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(WATCH_STREAM_BUFFER);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = watch.next() => next,
                    _ = tx.closed() => return,
                };
                let event = match next {
                    Ok(event) => pb::WatchEvent {
                        r#type: event.kind.as_str().into(),
                        object: event.object,
                        error: String::new(),
                    },
                    Err(e) => pb::WatchEvent {
                        r#type: "ERROR".into(),
                        object: Vec::new(),
                        error: e.to_string(),
                    },
                };
                let last = event.r#type == "ERROR";
                if tx.send(Ok(event)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn scale(
        &self,
        request: Request<pb::ScaleRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        let request = request.into_inner();
        let (kind, namespace, name) = object_ref(request.r#ref)?;
        if !matches!(kind, Kind::Deployment | Kind::ReplicaSet) {
            return Err(invalid(format!(
                "{} cannot be scaled; scale a Deployment or ReplicaSet",
                kind.plural()
            )));
        }
        let stored = self
            .registry
            .scale(kind_info(kind), &namespace, &name, request.replicas)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ObjectResponse {
            object: object_bytes(&stored),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_one;

    #[test]
    fn an_api_object_decodes_as_its_manifest_does_and_fails_naming_the_field() {
        let pod = r#"{"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox",
                "ports": [{"containerPort": 80}],
                "resources": {"requests": {"cpu": "250m", "memory": 64}}}]},
            "status": {"phase": "Running", "podIP": "198.18.0.9",
                "conditions": [{"type": "Ready", "status": "True"}]}}"#;
        let manifest = crate::parse_manifests(pod).unwrap().remove(0);
        assert_eq!(parse_one(pod.as_bytes()).unwrap(), manifest);
        // Type meta after the fields takes the object's buffered path: the same object.
        let reordered = r#"{"metadata": {"name": "cm"}, "data": {"k": "v"}, "kind": "ConfigMap", "apiVersion": "v1"}"#;
        assert_eq!(
            parse_one(reordered.as_bytes()).unwrap(),
            crate::parse_manifests(reordered).unwrap().remove(0)
        );

        let bad = pod.replace(r#""nodeName": "n1""#, r#""nodeName": "n1", "bogus": 1"#);
        let error = parse_one(bad.as_bytes()).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().contains("spec.bogus"),
            "{}",
            error.message()
        );
        let two = format!("{pod}\n{pod}");
        let error = parse_one(two.as_bytes()).unwrap_err();
        assert!(
            error.message().contains("expected one object, got 2"),
            "{}",
            error.message()
        );
    }
}
