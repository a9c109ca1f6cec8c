//! Kubernetes objects on one host: the manifests users write (v1 Pod, Service, Endpoints,
//! ConfigMap, Secret, Namespace, ReplicationController; apps/v1 ReplicaSet, Deployment),
//! read strictly ([`object`]: an unknown or unsupported field is an error naming its path)
//! and checked ([`validate`]); label selectors ([`selector`]); quantities ([`quantity`]);
//! and the object store in SQLite under the state root ([`store`]).
//!
//! The types are ironpod's own rather than a generated copy of every Kubernetes field: what
//! a type has is exactly what ironpod runs, so a field it does not run is refused by the
//! parser instead of being read and ignored.
//!
//! Knows nothing of how pods run: the pod runtime and the controllers use it.

pub mod allocate;
pub mod config;
pub mod meta;
pub mod object;
pub mod pod;
pub mod quantity;
pub mod selector;
pub mod service;
pub mod store;
pub mod validate;
pub mod workload;

pub use object::{parse_manifest, Body, Kind, Object};
pub use store::{KubeStore, StoreError, Stored};
