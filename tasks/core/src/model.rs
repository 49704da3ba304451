//! Inputs and outputs of the five tasks: the JSON documents that flow through the state machine.
//! Every document stays far below Step Functions' 256 KiB payload limit (see `chunking`).

use serde::{Deserialize, Serialize};

use crate::control_plane::types::ApiDocument;

/// Which branch of the workflow a task serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Assets,
    Metrics,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Incremental from the watermark, full when one is due.
    #[default]
    Auto,
    /// Full reconciliation now.
    Full,
}

/// The execution input: `{}` on schedule, `{"mode":"full"}` by hand, optionally `stages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionInput {
    #[serde(default)]
    pub mode: SyncMode,
    /// Overrides the configured stages for this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<String>>,
}

/// One federated stage, i.e. one control plane runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRef {
    /// The id the runtime has in the control plane.
    pub runtime_id: String,
    pub stage: String,
}

/// Output of `ensure-runtime`, input of both branches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimesReady {
    pub mode: SyncMode,
    pub runtimes: Vec<RuntimeRef>,
    /// The runtimes whose heartbeat said inactive, and why: the execution's summary names them.
    #[serde(default)]
    pub inactive: Vec<InactiveRuntime>,
}

/// A runtime reported inactive to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InactiveRuntime {
    pub stage: String,
    pub runtime_id: String,
    pub reason: InactiveReason,
}

/// Why a heartbeat says inactive: it is active only when the stage is deployed and the agent's
/// last run for it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InactiveReason {
    /// The last full sync found no API deployed to the stage (a typo in `STAGES`, say).
    NoDeployedApi,
    /// No run has synced the stage yet (a new runtime).
    NotSyncedYet,
    /// A branch's last run for the stage failed.
    LastRunFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListChangesInput {
    pub kind: Kind,
    pub mode: SyncMode,
    pub runtimes: Vec<RuntimeRef>,
    /// The execution's id (`$$.Execution.Id`): who holds the claims taken for this run.
    pub execution_id: String,
}

/// A unit of work of one Map iteration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Chunk {
    Assets(AssetChunk),
    Metrics(MetricsChunk),
}

/// APIs of one runtime to publish (REST API ids) or remove (control plane API ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetChunk {
    pub runtime_id: String,
    pub stage: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upserts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletes: Vec<String>,
    /// The state table item holding the current state of the upserted APIs, read by list-changes:
    /// transform builds the documents from it without calling API Gateway again, so a retried
    /// chunk costs no API Gateway call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// The due metrics windows of one runtime: `[start, end)` cut at `interval` (see
/// [`crate::metrics::split_windows`]), read from CloudWatch together and sent one by one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeWindows {
    pub runtime_id: String,
    pub stage: String,
    pub start: i64,
    pub end: i64,
    pub interval: i64,
}

impl RuntimeWindows {
    pub fn windows(&self) -> Vec<(i64, i64)> {
        crate::metrics::split_windows(self.start, self.end, self.interval)
    }
}

/// One Map iteration of the metrics branch: several runtimes' windows, a bounded number in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsChunk {
    pub runtimes: Vec<RuntimeWindows>,
}

/// A watermark to commit once every publish of the run succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatermarkUpdate {
    pub stage: String,
    /// Epoch seconds: everything before it has been published.
    pub position: i64,
    /// Set when this position closes a full reconciliation (epoch seconds of its start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_sync_at: Option<i64>,
    /// Assets: the key of the CloudTrail events applied that the next window re-reads, so that
    /// it skips them instead of applying each change again on every run within the overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_events: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSummary {
    pub full_runtimes: usize,
    pub incremental_runtimes: usize,
    pub upserts: usize,
    pub deletes: usize,
    pub windows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListChangesOutput {
    pub kind: Kind,
    pub chunks: Vec<Chunk>,
    pub watermarks: Vec<WatermarkUpdate>,
    /// Stages this execution claimed for the branch; `ack-watermark` releases them.
    pub claimed: Vec<String>,
    /// Stages skipped because an overlapping execution holds their claim.
    pub skipped: Vec<String>,
    pub summary: ChangeSummary,
}

/// Output of `transform`, input of `publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Batch {
    #[serde(rename_all = "camelCase")]
    Assets {
        runtime_id: String,
        upserts: Vec<ApiDocument>,
        deletes: Vec<String>,
        /// What did not fit in this batch's payload budget; the workflow loops on it.
        next: Option<AssetChunk>,
    },
    /// The chunk whose window reports transform stored in the state table (a report of a
    /// window with 2,500 APIs is far larger than a state payload may be).
    Metrics(MetricsChunk),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishOutput {
    /// The runtimes the batch was for.
    pub runtime_ids: Vec<String>,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    /// Metrics windows the control plane accepted in this invocation.
    pub windows_sent: usize,
    /// Windows skipped because an earlier attempt had them accepted already.
    pub windows_already_sent: usize,
    /// The chunk to transform next (the rest of an oversized chunk), or null.
    pub next: Option<Chunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckInput {
    pub kind: Kind,
    pub execution_id: String,
    /// Empty on a failed branch: then the claims are only released.
    pub watermarks: Vec<WatermarkUpdate>,
    #[serde(default)]
    pub claimed: Vec<String>,
    /// Set on the failure path: the claimed stages' runs are recorded as failed.
    #[serde(default)]
    pub branch_failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckedWatermark {
    pub stage: String,
    /// Assets: the position committed. Metrics: the end of the last window sent (0: none yet).
    pub position: i64,
    /// Assets: false when the stored watermark was already at or past `position`. Metrics:
    /// whether every window planned for the run was sent.
    pub advanced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckOutput {
    pub kind: Kind,
    pub watermarks: Vec<AckedWatermark>,
    /// Seconds between now and the newest acked watermark: how far behind the control plane is.
    pub lag_seconds: Option<i64>,
}
