//! The custom resources, in Eraser's API group so that Eraser's manifests
//! apply unchanged: `ImageList` (what to remove by hand) and `ImageJob` (one
//! run over the nodes, with what each node removed).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::report::{ImageEntry, Status as PassStatus, Summary};

/// Eraser still serves v1alpha1 with the same schema; so do we, deprecated.
const DEPRECATED_VERSION: &str = "v1alpha1";
const DEPRECATION_WARNING: &str = "eraser.sh/v1alpha1 is deprecated; use eraser.sh/v1";

/// `kubectl apply` an ImageList named `imagelist` to remove images from every
/// selected node. `"*"` removes every unused, unexcluded image.
#[derive(CustomResource, Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "eraser.sh",
    version = "v1",
    kind = "ImageList",
    plural = "imagelists",
    singular = "imagelist",
    status = "ImageListStatus",
    printcolumn = r#"{"name":"Success","type":"integer","jsonPath":".status.success"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Skipped","type":"integer","jsonPath":".status.skipped"}"#,
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".status.job"}"#,
    printcolumn = r#"{"name":"Last run","type":"date","jsonPath":".status.timestamp"}"#
)]
pub struct ImageListSpec {
    /// Images to remove: ids, tags, digests, `repo@digest`, `prefix/*`, `repo:*`, or `*` for every unused image.
    pub images: Vec<String>,
}

/// The outcome of the last run for this list. Per-node detail is in the
/// ImageJob named by `job`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageListStatus {
    /// When the last run for this list completed.
    pub timestamp: Option<Time>,
    /// Nodes whose worker succeeded.
    pub success: i64,
    /// Nodes whose worker failed, timed out in Pending, or never started.
    pub failed: i64,
    /// Nodes left out by the node filter, Windows and virtual nodes.
    pub skipped: i64,
    /// The ImageJob that ran this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Running, Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "job_phase")]
    pub phase: Option<JobPhase>,
    /// Images removed across all nodes.
    #[serde(default)]
    pub removed: i64,
    /// Images the run would have removed, when it was a dry run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub would_remove: i64,
    /// Bytes freed across all nodes, as the runtime reports image sizes.
    #[serde(default)]
    pub bytes_freed: i64,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The list's `metadata.generation` that the run named by `job` ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Running`, `Complete` and `Failed`, as on the ImageJob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One run of workers over the selected nodes. Kept after the run as the
/// record of what each node removed.
#[derive(CustomResource, Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "eraser.sh",
    version = "v1",
    kind = "ImageJob",
    plural = "imagejobs",
    singular = "imagejob",
    status = "ImageJobStatus",
    printcolumn = r#"{"name":"Trigger","type":"string","jsonPath":".spec.trigger"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.succeeded"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Skipped","type":"integer","jsonPath":".status.skipped"}"#,
    printcolumn = r#"{"name":"Removed","type":"integer","jsonPath":".status.removed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ImageJobSpec {
    /// What started the run.
    pub trigger: Trigger,
    /// The ImageList's images, for a manual run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    /// The sha256 the workers were told to pin, when the policy is not the built-in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sha256: Option<String>,
    /// The worker image.
    pub worker_image: String,
    /// Every worker reports what it would remove and removes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// The rollout rules, fixed when the run starts.
    pub rollout: RolloutSpec,
}

/// Taken from the config when a run starts, so a config edit mid-run
/// applies to the next run rather than half of this one.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Worker pods at once.
    pub max_concurrency: i64,
    /// Seconds a pod may stay Pending before its node counts as failed.
    pub pending_timeout_seconds: i64,
    /// Seconds a node's worker may take in all before it is deleted and the
    /// node counts as failed.
    #[serde(default)]
    pub node_timeout_seconds: i64,
    /// `(succeeded + skipped) / desired` needed for Completed.
    pub success_ratio: f64,
    /// Seconds finished pods stay after a Completed run.
    pub delay_on_success_seconds: i64,
    /// Seconds finished pods stay after a Failed run.
    pub delay_on_failure_seconds: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The interval elapsed (`manager.scheduling`).
    Automatic,
    /// The ImageList `imagelist` was created or changed.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Automatic => "automatic",
            Trigger::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum JobPhase {
    Running,
    Completed,
    Failed,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Running => "Running",
            JobPhase::Completed => "Completed",
            JobPhase::Failed => "Failed",
        }
    }
}

/// An optional phase: a plain string enum. The derived schema of an
/// `Option` of an enum lists `null` among the values, which kubectl's
/// validation refuses (`unknown object type "nil"`).
fn job_phase(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "enum": ["Running", "Completed", "Failed"],
    })
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageJobStatus {
    /// Running, then Completed or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "job_phase")]
    pub phase: Option<JobPhase>,
    /// Every node listed, skipped ones included (as Eraser counts).
    pub desired: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped: i64,
    /// `(succeeded + skipped) / desired`, in floating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When the finished worker pods are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<Time>,
    /// The worker pods are gone; the job stays as the record.
    #[serde(default)]
    pub pods_deleted: bool,
    /// Images removed on all nodes.
    #[serde(default)]
    pub removed: i64,
    /// Images a dry run would have removed on all nodes.
    #[serde(default)]
    pub would_remove: i64,
    #[serde(default)]
    pub bytes_freed: i64,
    /// Nodes whose pass completed degraded (failed scans or removals).
    #[serde(default)]
    pub degraded: i64,
    /// The registry policy (`registry://…@sha256:…`) the run's workers were
    /// given, after vetting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The node that runs a newly vetted policy dry before the others start
    /// (`scour.policy.canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The ImageJob's `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Running` (True while nodes remain), then `Complete` or `Failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// One entry per selected or skipped node.
    #[serde(default)]
    pub nodes: Vec<NodeResult>,
}

/// What happened on one node.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    pub name: String,
    pub phase: NodePhase,
    /// The worker pod, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// Why the node was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The worker's own verdict on its pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PassStatus>,
    /// The worker's counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The NodeReports holding every image this node removed, would remove
    /// or failed to remove, with reasons and sizes (`kubectl get nodereport
    /// NAME -o yaml`); several when the node had very many.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum NodePhase {
    /// Waiting for a rollout slot.
    #[default]
    Queued,
    /// The worker pod exists and has not finished.
    Running,
    Succeeded,
    Failed,
    /// Left out: node filter, Windows, virtual kubelet.
    Skipped,
}

impl NodePhase {
    pub fn is_done(self) -> bool {
        matches!(self, NodePhase::Succeeded | NodePhase::Failed | NodePhase::Skipped)
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Everything one node's worker did in one run: every image it removed,
/// would have removed (a dry run) or failed to remove, with the policy's
/// reason and the image's size. The controller reads it from the worker
/// pod's log when the pod ends and keeps it, owned by the run's ImageJob,
/// after the pod is gone. A node with more images than one object holds
/// has several, numbered by `part`.
#[derive(CustomResource, Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "scour.dev",
    version = "v1",
    kind = "NodeReport",
    plural = "nodereports",
    singular = "nodereport",
    printcolumn = r#"{"name":"Job","type":"string","jsonPath":".spec.job"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.node"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".spec.status"}"#,
    printcolumn = r#"{"name":"Removed","type":"integer","jsonPath":".spec.summary.removed"}"#,
    printcolumn = r#"{"name":"Would-remove","type":"integer","jsonPath":".spec.summary.wouldRemove"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","jsonPath":".spec.summary.failed"}"#,
    printcolumn = r#"{"name":"Part","type":"string","jsonPath":".spec.partOf"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeReportSpec {
    /// The ImageJob (run).
    pub job: String,
    pub node: String,
    /// `1/1`, or `2/3` for the second of three parts.
    pub part_of: String,
    /// The worker's verdict on its pass: ok, degraded or failed.
    pub status: PassStatus,
    #[serde(default)]
    pub dry_run: bool,
    /// The policy's sha256.
    pub policy: String,
    /// Every image is listed. False when the worker's log could not be
    /// read, and only the termination summary's first entries are here;
    /// `incomplete` says why.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// The worker's counts for the whole node.
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<ImageEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub would_remove: Vec<ImageEntry>,
    /// Removals that failed; the reason is the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<ImageEntry>,
    /// What went wrong in the pass (scan failures, failed removals).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The CRDs: ImageList and ImageJob served at v1 (storage) and at Eraser's
/// deprecated v1alpha1, and scour's NodeReport.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [ImageList::crd(), ImageJob::crd()]
        .into_iter()
        .map(with_deprecated_version)
        .chain([NodeReport::crd()])
        .collect()
}

fn with_deprecated_version(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let Some(mut old) = crd.spec.versions.first().cloned() else {
        return crd;
    };
    old.name = DEPRECATED_VERSION.into();
    old.storage = false;
    old.deprecated = Some(true);
    old.deprecation_warning = Some(DEPRECATION_WARNING.into());
    crd.spec.versions.push(old);
    crd
}

/// The CRDs as a multi-document YAML stream, as `scour crd` prints them and
/// the chart ships them.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        // The CRDs are built from constants; the deploy tests check the output.
        #[allow(clippy::expect_used)]
        out.push_str(&serde_yaml::to_string(&crd).expect("CRDs serialize"));
    }
    out
}
