//! Object model (Kubernetes-shaped kinds), validation, keyspace, resourceVersion and optimistic
//! concurrency, list+watch and the Cluster API service logic. It does no network or disk IO itself:
//! it is handed a store.
//!
//! Codemap:
//! - [`objects`]: the kinds (`Pod`, `Deployment`, …), `Object` over all of them, `Kind`, and the
//!   value types `Quantity`, `IntOrString`, `Time`.
//! - [`manifest`]: YAML/JSON manifest text ⇄ objects, with full-path errors.
//! - [`validate`]: what kube-apiserver would refuse; [`defaults`]: what it fills in.
//! - [`selector`] and [`field_selector`]: label and field selectors as kubectl accepts them.
//! - [`error`]: the error types.
//! - [`registry`]: objects on the consensus KV — keyspace, resourceVersion, optimistic
//!   concurrency, create/update/status/patch/apply/delete, list with pagination, watch.
//! - [`service`]: the Cluster API service logic (admission = default + validate, then registry).
//! - [`informer`]: typed local caches kept current by list + watch, for loops and agents.
//!
//! Architecture invariant: the object model (`objects`, `manifest`, `validate`, `defaults`,
//! selectors) does no IO and reads no clock. The registry does IO only through the [`registry::Store`]
//! it is handed, and reads the clock only to stamp creation and deletion times.

pub mod defaults;
pub mod error;
pub mod field_selector;
pub mod informer;
pub mod manifest;
pub mod objects;
pub mod registry;
pub mod selector;
pub mod service;
pub mod validate;

pub use defaults::default;
pub use error::{FieldError, ManifestError, ManifestProblem};
pub use field_selector::FieldSelector;
pub use manifest::{parse_manifests, to_json, to_yaml};
pub use objects::{Kind, Object, Resource};
pub use selector::Selector;
pub use validate::validate;
