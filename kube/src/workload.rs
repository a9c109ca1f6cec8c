//! Workloads that keep pods running: v1 ReplicationController, apps/v1 ReplicaSet and
//! Deployment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::ObjectMeta;
use crate::pod::{Condition, PodSpec};
use crate::quantity::IntOrString;
use crate::selector::LabelSelector;

/// The pods a workload makes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodTemplateSpec {
    /// Labels and annotations of its pods.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Its pods' spec.
    pub spec: PodSpec,
}

/// A ReplicationController's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicationControllerSpec {
    /// How many pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// The labels its pods carry (default: the template's labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// Its pods.
    pub template: PodTemplateSpec,
    /// Seconds a pod must be ready before it counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i64>,
}

/// A ReplicaSet's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    /// How many pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Which pods are its own.
    pub selector: LabelSelector,
    /// Its pods.
    pub template: PodTemplateSpec,
    /// Seconds a pod must be ready before it counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i64>,
}

/// A Deployment's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// How many pods (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i64>,
    /// Which pods are its own.
    pub selector: LabelSelector,
    /// Its pods.
    pub template: PodTemplateSpec,
    /// How pods are replaced by new ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Old ReplicaSets kept for `rollout undo` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i64>,
    /// Seconds a pod must be ready before it counts as available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i64>,
    /// Seconds a rollout may make no progress before it is reported failed (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i64>,
    /// A paused deployment starts no rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StrategyType>,
    /// Limits of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// A Deployment's strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrategyType {
    /// New pods come up while old ones go down.
    RollingUpdate,
    /// Every old pod goes before new ones come.
    Recreate,
}

/// Limits of a rolling update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Pods over `replicas` while updating (default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Pods under `replicas` that may be unavailable while updating (default 25%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

/// A ReplicationController's or ReplicaSet's `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Pods it has.
    pub replicas: i64,
    /// Pods with the template's labels.
    #[serde(default)]
    pub fully_labeled_replicas: i64,
    /// Pods ready.
    #[serde(default)]
    pub ready_replicas: i64,
    /// Pods ready for `minReadySeconds`.
    #[serde(default)]
    pub available_replicas: i64,
    /// The generation this status is of.
    #[serde(default)]
    pub observed_generation: i64,
}

/// A Deployment's `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// Pods of all its ReplicaSets.
    pub replicas: i64,
    /// Pods of the newest template.
    #[serde(default)]
    pub updated_replicas: i64,
    /// Pods ready.
    #[serde(default)]
    pub ready_replicas: i64,
    /// Pods available.
    #[serde(default)]
    pub available_replicas: i64,
    /// Pods missing or not available.
    #[serde(default)]
    pub unavailable_replicas: i64,
    /// The generation this status is of.
    #[serde(default)]
    pub observed_generation: i64,
    /// `Available`, `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
