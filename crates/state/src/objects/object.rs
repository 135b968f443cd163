//! `Object`: any one supported object, tagged by apiVersion + kind on the wire, and the
//! `Resource` trait that lets generic code move between `Object` and a concrete kind.
//!
//! On the wire an object is one map with `apiVersion` and `kind` first (as kubectl writes it).
//! Decoding reads those two keys and then hands the rest of the map straight to the kind's struct,
//! so stored objects are parsed once; input with other keys first is buffered and decoded the slow
//! way.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    ConfigMap, Deployment, Event, HorizontalPodAutoscaler, Kind, Namespace, Node, ObjectMeta, Pod,
    ReplicaSet, Service,
};
use crate::manifest;

/// Any supported object. Variants are boxed so an `Object` is two words whatever its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Object {
    Namespace(Box<Namespace>),
    Node(Box<Node>),
    Pod(Box<Pod>),
    Deployment(Box<Deployment>),
    ReplicaSet(Box<ReplicaSet>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    Event(Box<Event>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
}

/// Runs `$body` with `$inner` bound to the concrete kind inside `$object`.
macro_rules! with_inner {
    ($object:expr, $inner:ident => $body:expr) => {
        match $object {
            Object::Namespace($inner) => $body,
            Object::Node($inner) => $body,
            Object::Pod($inner) => $body,
            Object::Deployment($inner) => $body,
            Object::ReplicaSet($inner) => $body,
            Object::Service($inner) => $body,
            Object::ConfigMap($inner) => $body,
            Object::Event($inner) => $body,
            Object::HorizontalPodAutoscaler($inner) => $body,
        }
    };
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Service(_) => Kind::Service,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Event(_) => Kind::Event,
            Object::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
        }
    }

    pub fn api_version(&self) -> &'static str {
        self.kind().api_version()
    }

    pub fn metadata(&self) -> &ObjectMeta {
        with_inner!(self, inner => &inner.metadata)
    }

    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        with_inner!(self, inner => &mut inner.metadata)
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// `metadata.namespace`, empty for cluster-scoped kinds.
    pub fn namespace(&self) -> &str {
        &self.metadata().namespace
    }

    /// The concrete kind, if this object is one: `object.downcast_ref::<Pod>()`.
    pub fn downcast_ref<R: Resource>(&self) -> Option<&R> {
        R::from_object_ref(self)
    }

    pub fn downcast_mut<R: Resource>(&mut self) -> Option<&mut R> {
        R::from_object_mut(self)
    }
}

/// A concrete kind (`Pod`, `Deployment`, …) that converts to and from [`Object`].
pub trait Resource: Sized + Into<Object> {
    const KIND: Kind;
    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn from_object_ref(object: &Object) -> Option<&Self>;
    fn from_object_mut(object: &mut Object) -> Option<&mut Self>;
    /// Unwraps the kind, or gives the object back if it is another kind.
    fn try_from_object(object: Object) -> Result<Self, Object>;
}

macro_rules! impl_resource {
    ($($kind:ident),+) => {$(
        impl Resource for $kind {
            const KIND: Kind = Kind::$kind;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn from_object_ref(object: &Object) -> Option<&Self> {
                match object {
                    Object::$kind(inner) => Some(inner),
                    _ => None,
                }
            }
            fn from_object_mut(object: &mut Object) -> Option<&mut Self> {
                match object {
                    Object::$kind(inner) => Some(inner),
                    _ => None,
                }
            }
            fn try_from_object(object: Object) -> Result<Self, Object> {
                match object {
                    Object::$kind(inner) => Ok(*inner),
                    other => Err(other),
                }
            }
        }

        impl From<$kind> for Object {
            fn from(inner: $kind) -> Object {
                Object::$kind(Box::new(inner))
            }
        }
    )+};
}

impl_resource!(
    Namespace,
    Node,
    Pod,
    Deployment,
    ReplicaSet,
    Service,
    ConfigMap,
    Event,
    HorizontalPodAutoscaler
);

/// An object on the wire: type meta first, then the kind's own fields.
#[derive(Serialize)]
struct Typed<'a, T> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

/// `object` as JSON with its type meta first, as [`Object`] writes it, serialised straight from
/// the typed value.
pub fn typed_json<R: Resource + Serialize>(object: &R) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Typed {
        api_version: R::KIND.api_version(),
        kind: R::KIND.name(),
        inner: object,
    })
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kind = self.kind();
        with_inner!(self, inner => Typed {
            api_version: kind.api_version(),
            kind: kind.name(),
            inner: &**inner,
        }
        .serialize(serializer))
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with apiVersion and kind")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut api_version: Option<String> = None;
        let mut kind: Option<String> = None;
        while api_version.is_none() || kind.is_none() {
            let Some(key) = map.next_key::<String>()? else {
                break;
            };
            match key.as_str() {
                "apiVersion" if api_version.is_none() => api_version = Some(map.next_value()?),
                "kind" if kind.is_none() => kind = Some(map.next_value()?),
                _ => return decode_buffered(api_version, kind, key, map),
            }
        }
        let api_version = api_version.ok_or_else(|| de::Error::missing_field("apiVersion"))?;
        let kind = kind.ok_or_else(|| de::Error::missing_field("kind"))?;
        let kind = manifest::resolve_kind("", &api_version, &kind).map_err(de::Error::custom)?;
        decode_rest(kind, MapAccessDeserializer::new(map))
    }
}

/// Decodes the fields after apiVersion and kind directly into the kind's struct.
fn decode_rest<'de, D: Deserializer<'de>>(kind: Kind, rest: D) -> Result<Object, D::Error> {
    fn typed<'de, T: Deserialize<'de> + Into<Object>, D: Deserializer<'de>>(
        rest: D,
    ) -> Result<Object, D::Error> {
        serde_path_to_error::deserialize::<_, T>(rest)
            .map(Into::into)
            .map_err(|error| {
                let path = manifest::render_path(error.path());
                let message = manifest::describe_serde_error(&error.inner().to_string());
                de::Error::custom(manifest::join_path(&path, message))
            })
    }
    match kind {
        Kind::Namespace => typed::<Namespace, D>(rest),
        Kind::Node => typed::<Node, D>(rest),
        Kind::Pod => typed::<Pod, D>(rest),
        Kind::Deployment => typed::<Deployment, D>(rest),
        Kind::ReplicaSet => typed::<ReplicaSet, D>(rest),
        Kind::Service => typed::<Service, D>(rest),
        Kind::ConfigMap => typed::<ConfigMap, D>(rest),
        Kind::Event => typed::<Event, D>(rest),
        Kind::HorizontalPodAutoscaler => typed::<HorizontalPodAutoscaler, D>(rest),
    }
}

/// The slow path for maps whose first keys are not apiVersion and kind: buffer the whole map and
/// decode it as a manifest document.
fn decode_buffered<'de, A: MapAccess<'de>>(
    api_version: Option<String>,
    kind: Option<String>,
    pending_key: String,
    mut map: A,
) -> Result<Object, A::Error> {
    let mut buffer = serde_yaml::Mapping::new();
    if let Some(api_version) = api_version {
        buffer.insert("apiVersion".into(), api_version.into());
    }
    if let Some(kind) = kind {
        buffer.insert("kind".into(), kind.into());
    }
    let pending_value: serde_yaml::Value = map.next_value()?;
    buffer.insert(pending_key.into(), pending_value);
    while let Some((key, value)) = map.next_entry::<String, serde_yaml::Value>()? {
        buffer.insert(key.into(), value);
    }
    manifest::decode_object(serde_yaml::Value::Mapping(buffer)).map_err(de::Error::custom)
}
