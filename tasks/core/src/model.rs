//! Inputs and outputs of the five tasks: the JSON documents that flow through the state machine.
//! Every document stays far below Step Functions' 256 KiB payload limit (see `chunking`).

use serde::{Deserialize, Serialize};

use crate::control_plane::types::ApiDocument;
use crate::target::Target;

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
    /// The account-region this execution syncs; the deployment's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The fan-out execution that started this one: Step Functions links the two in the console.
    #[serde(rename = "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID", default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// A fan-out execution's targets instead of the configured ones (what the tick hands over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<Target>>,
    /// API Gateway's write events pushed through EventBridge (what the push starter starts an
    /// execution with): applied at once, besides what CloudTrail's window holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<PushedEvent>,
}

/// A write event of API Gateway that EventBridge pushed, reduced to what locates the change: the
/// request's top-level text fields (its path: ids, names, ARNs) and a created API's id. The id
/// is CloudTrail's `eventID`, the same `LookupEvents` returns, so a change applied by push is not
/// applied again by the poll that reads it later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushedEvent {
    pub id: String,
    /// When the call was made (epoch seconds).
    pub time: i64,
    pub name: String,
    #[serde(default)]
    pub request_parameters: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub response_elements: serde_json::Map<String, serde_json::Value>,
}

impl PushedEvent {
    /// The event as list-changes reads CloudTrail's.
    pub fn to_api_event(&self) -> crate::aws::cloudtrail::ApiEvent {
        crate::aws::cloudtrail::ApiEvent {
            id: self.id.clone(),
            time: self.time,
            name: self.name.clone(),
            request_parameters: serde_json::Value::Object(self.request_parameters.clone()),
            response_elements: serde_json::Value::Object(self.response_elements.clone()),
            unreadable: false,
            failed: false,
        }
    }
}

/// Whether EventBridge can push a target's changes: it receives API Gateway's calls only where a
/// CloudTrail trail logs management write events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushStatus {
    pub available: bool,
    /// The trail found, or why push is unavailable (or could not be checked).
    pub reason: String,
    /// When it was checked (epoch seconds).
    pub checked_at: i64,
}

/// The input of `ensure-runtime`: the execution's input as it was given, and the execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnsureRuntimeInput {
    /// The execution input (`{}`, `{"mode":"full"}`...), read by [`Self::execution_input`].
    pub input: serde_json::Value,
    /// `$$.Execution.Id`: who holds the account's listing while this task lists it.
    pub execution_id: String,
}

impl EnsureRuntimeInput {
    /// The execution input, refused with `InvalidInput` unless it is exactly an [`ExecutionInput`].
    pub fn execution_input(&self) -> crate::Result<ExecutionInput> {
        let mut input: ExecutionInput = parse_object("execution input", self.input.clone())?;
        if input.targets.is_some() {
            return Err(crate::error::AgentError::invalid_input(
                "execution input: \"targets\" selects the runs of a fan-out execution; a sync run names one \"target\"",
            ));
        }
        input.target = input.target.take().map(Target::checked).transpose()?;
        Ok(input)
    }
}

/// Reads `what` (a task or execution input) as a `T`, turning a contract violation into
/// `InvalidInput` that names the field.
pub fn parse_object<T: serde::de::DeserializeOwned>(what: &str, value: serde_json::Value) -> crate::Result<T> {
    // serde would read a struct from an array too (`["full"]` as `{"mode":"full"}`).
    if !value.is_object() {
        return Err(crate::AgentError::invalid_input(format!("{what}: must be a JSON object, not {value}")));
    }
    serde_json::from_value(value).map_err(|e| crate::AgentError::invalid_input(format!("{what}: {e}")))
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
    /// The account-region of the runtimes, which every later task works in.
    pub target: Target,
    pub mode: SyncMode,
    pub runtimes: Vec<RuntimeRef>,
    /// The runtimes whose heartbeat said inactive, and why: the execution's summary names them.
    #[serde(default)]
    pub inactive: Vec<InactiveRuntime>,
    /// Runtimes of stages no longer federated: deleted from the control plane (with their APIs)
    /// once they have been orphaned for `ORPHAN_GRACE_SECONDS`.
    #[serde(default)]
    pub orphaned: Vec<OrphanedRuntime>,
    /// The execution holding the account's first discovery, while it runs: this execution has
    /// no stage to work on and leaves the account to it.
    #[serde(default)]
    pub discovery_in_progress: Option<String>,
    /// The execution's pushed events, for the assets branch (always present: the workflow reads it).
    #[serde(default)]
    pub pushed: Vec<PushedEvent>,
    /// With push mode, whether the target's changes can be pushed (`null` without push mode).
    #[serde(default)]
    pub push: Option<PushStatus>,
}

/// A runtime the agent registered for a stage it no longer federates (a stage removed from
/// `STAGES`, a stage without deployed APIs any more, an id from a former `RUNTIME_ID_TEMPLATE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrphanedRuntime {
    pub runtime_id: String,
    pub stage: String,
    /// When it was first found orphaned (epoch seconds).
    pub since: i64,
    /// Whether this run deleted it from the control plane (after the grace period).
    pub deleted: bool,
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
    /// The deployment's own account-region when absent.
    #[serde(default)]
    pub target: Option<Target>,
    pub kind: Kind,
    pub mode: SyncMode,
    pub runtimes: Vec<RuntimeRef>,
    /// The execution's id (`$$.Execution.Id`): who holds the claims taken for this run.
    pub execution_id: String,
    /// Assets: the write events pushed to this execution.
    #[serde(default)]
    pub pushed: Vec<PushedEvent>,
}

/// A unit of work of one Map iteration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Chunk {
    Assets(AssetChunk),
    Metrics(MetricsChunk),
}

impl Chunk {
    pub fn target(&self) -> Option<&Target> {
        match self {
            Self::Assets(chunk) => chunk.target.as_ref(),
            Self::Metrics(chunk) => chunk.target.as_ref(),
        }
    }

    /// Places the chunk in `target`'s account-region.
    pub fn set_target(&mut self, target: Option<Target>) {
        match self {
            Self::Assets(chunk) => chunk.target = target,
            Self::Metrics(chunk) => chunk.target = target,
        }
    }
}

/// APIs of one runtime to publish (REST API ids) or remove (control plane API ids).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssetChunk {
    /// The account-region of the runtime; the deployment's own when null. Always written: the
    /// workflow reads `$.target`.
    #[serde(default)]
    pub target: Option<Target>,
    pub runtime_id: String,
    pub stage: String,
    /// The state table item where this run records, for the stage, which chunks were published
    /// and which APIs the control plane refused ([`run_key`]); read by `ack-watermark`.
    pub run: String,
    /// The chunk's position among the stage's chunks of the run.
    pub index: usize,
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
    /// Transform has stored a report for each window: a later transform of the chunk (the rest
    /// of a chunk that outlived one invocation) does not read CloudWatch for them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reports_stored: bool,
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
    /// The account-region of the runtimes; the deployment's own when null. Always written.
    #[serde(default)]
    pub target: Option<Target>,
    pub runtimes: Vec<RuntimeWindows>,
}

/// A watermark to commit once every chunk of the stage was published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatermarkUpdate {
    pub stage: String,
    /// Epoch seconds: everything before it has been published.
    pub position: i64,
    /// Assets: when the state this run publishes was read from API Gateway (epoch seconds); a
    /// later full sync never applies a listing made before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<i64>,
    /// Assets: the stage's chunks this run; the watermark moves only once every one of them is
    /// recorded as published in `run`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: usize,
    /// Assets: the run record ([`AssetChunk::run`]) when the stage has chunks or carries
    /// refused APIs over from earlier runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Set when this position closes a full reconciliation (epoch seconds of its start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_sync_at: Option<i64>,
    /// Assets: the key of the CloudTrail events applied that the next window re-reads, so that
    /// it skips them instead of applying each change again on every run within the overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_events: Option<String>,
    /// Assets: the pushed events this run applied (`<time>#<id>`), remembered so that the poll
    /// reading them later does not apply them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<String>,
    /// Assets: remembered pushed events no window will read again (before the new position's
    /// overlap), forgotten with the move.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forget_pushed: Vec<String>,
    /// Assets: only pushed events were applied; the watermark stays where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pushed_only: bool,
}

impl WatermarkUpdate {
    /// A plain move of `stage`'s watermark to `position`.
    pub fn at(stage: &str, position: i64) -> Self {
        Self {
            stage: stage.to_owned(),
            position,
            read_at: None,
            chunks: 0,
            run: None,
            full_sync_at: None,
            applied_events: None,
            pushed: Vec::new(),
            forget_pushed: Vec::new(),
            pushed_only: false,
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The key of the state table item recording one branch's run of one stage: the chunks
/// published, the APIs refused, a failure; written by publish and the failure path, read by
/// `ack-watermark`, and expiring after a day.
pub fn run_key(kind: Kind, execution_id: &str, stage: &str) -> String {
    let kind = match kind {
        Kind::Assets => "assets",
        Kind::Metrics => "metrics",
    };
    format!("#run#{kind}#{execution_id}#{stage}")
}

/// What publish did to one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Upsert,
    Delete,
}

/// An API the control plane refused (a `4xx` other than 401, 403, 429 for its upsert or
/// delete): left out of the run, so every other API is published, and retried by later runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// The API's id in the control plane (`<apiId>_<stage>`).
    pub id: String,
    pub operation: Operation,
    /// The error's `errorType` (`InvalidInput`, `ControlPlaneRejected`).
    pub error: String,
    pub message: String,
    /// When it was refused (epoch seconds).
    pub at: i64,
}

/// Why a stage's branch did not complete this run: named in the execution output, recorded as
/// the stage's failed run; the stage's work is retried by the next run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageFailure {
    pub stage: String,
    /// The `errorType` of the failure.
    pub error: String,
    pub cause: String,
}

/// One cause of a branch's failure and the stages it held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BranchFailure {
    pub error: String,
    pub cause: String,
    pub stages: Vec<String>,
}

/// A refused API as the execution output names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedApi {
    pub stage: String,
    #[serde(flatten)]
    pub refused: Refused,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSummary {
    pub full_runtimes: usize,
    pub incremental_runtimes: usize,
    pub upserts: usize,
    pub deletes: usize,
    pub windows: usize,
    /// Pushed events applied (each counted once per stage it was applied to); absent when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pushed_events: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListChangesOutput {
    /// The input's target, for the commit.
    pub target: Option<Target>,
    pub kind: Kind,
    pub chunks: Vec<Chunk>,
    pub watermarks: Vec<WatermarkUpdate>,
    /// Stages this execution claimed for the branch; `ack-watermark` releases them.
    pub claimed: Vec<String>,
    /// Stages skipped because an overlapping execution holds their claim, or (assets) because
    /// another execution is listing the account.
    pub skipped: Vec<String>,
    /// Stages whose work failed while it was planned (a full sync that would empty a runtime,
    /// a runtime the control plane does not know): the other stages go on.
    #[serde(default)]
    pub held_back: Vec<StageFailure>,
    pub summary: ChangeSummary,
}

/// Output of `transform`, input of `publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Batch {
    #[serde(rename_all = "camelCase")]
    Assets {
        /// The account-region of the runtime; the deployment's own when null. Always written.
        #[serde(default)]
        target: Option<Target>,
        runtime_id: String,
        stage: String,
        /// The chunk's run record, position and snapshot (see [`AssetChunk`]).
        run: String,
        index: usize,
        snapshot: Option<String>,
        upserts: Vec<ApiDocument>,
        deletes: Vec<String>,
        /// What did not fit in this batch's payload budget; the workflow loops on it.
        next: Option<Box<AssetChunk>>,
    },
    /// The chunk whose window reports transform stored in the state table (a report of a
    /// window with 2,500 APIs is far larger than a state payload may be).
    Metrics(MetricsChunk),
}

impl Batch {
    pub fn target(&self) -> Option<&Target> {
        match self {
            Self::Assets { target, .. } => target.as_ref(),
            Self::Metrics(chunk) => chunk.target.as_ref(),
        }
    }
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
    /// APIs the control plane refused in this batch (recorded in the run, retried later).
    pub refused: usize,
    /// The chunk to transform next (the rest of an oversized chunk), or null.
    pub next: Option<Chunk>,
}

/// The input of `ack-watermark`: a branch's commit, or a chunk's failure to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum AckRequest {
    Commit(AckInput),
    ChunkFailed(ChunkFailure),
}

impl AckRequest {
    pub fn target(&self) -> Option<&Target> {
        match self {
            Self::Commit(input) => input.target.as_ref(),
            Self::ChunkFailed(failure) => failure.target.as_ref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckInput {
    /// The deployment's own account-region when absent.
    #[serde(default)]
    pub target: Option<Target>,
    pub kind: Kind,
    pub execution_id: String,
    /// Empty on a failed branch: then the claims are only released.
    pub watermarks: Vec<WatermarkUpdate>,
    #[serde(default)]
    pub claimed: Vec<String>,
    /// Stages list-changes held back (see [`ListChangesOutput::held_back`]).
    #[serde(default)]
    pub held_back: Vec<StageFailure>,
    /// Set on the failure path: the claimed stages' runs are recorded as failed.
    #[serde(default)]
    pub branch_failed: bool,
}

/// A Map iteration that failed after its retries: its error, recorded in the run of each of its
/// stages so that `ack-watermark` names it (the stages' watermarks stay where they are whether or
/// not this record lands: only chunks recorded as published move them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChunkFailure {
    /// The deployment's own account-region when absent.
    #[serde(default)]
    pub target: Option<Target>,
    pub kind: Kind,
    pub execution_id: String,
    pub stages: Vec<String>,
    /// Step Functions' error object of the `Catch`: `{"Error": ..., "Cause": ...}`.
    pub error: CaughtError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaughtError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
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
    /// Seconds between now and the oldest watermark of the branch's stages: how far behind the
    /// control plane is for its worst stage.
    pub lag_seconds: Option<i64>,
    /// Why stages did not complete, grouped by cause; the workflow fails with the first after
    /// the other stages were committed.
    #[serde(default)]
    pub failures: Vec<BranchFailure>,
    /// APIs the control plane refuses, by stage (at most [`REFUSED_IN_OUTPUT`]); retried by
    /// later runs and every full sync.
    #[serde(default)]
    pub refused: Vec<RefusedApi>,
    /// How many APIs the control plane refuses in the branch's stages, all told.
    #[serde(default)]
    pub refused_count: usize,
}

/// The most refused APIs the execution output names; the logs and the state table name all.
pub const REFUSED_IN_OUTPUT: usize = 20;

/// The input of `targets`, the fan-out's function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum TargetsRequest {
    /// Lists the targets, each with the execution input of its run.
    #[serde(rename_all = "camelCase")]
    Plan {
        /// The fan-out execution's input: `{}`, `{"mode":"full"}`, optionally `stages`.
        input: serde_json::Value,
        /// `$$.Execution.Id`: each run names it as the execution that started it.
        execution_id: String,
    },
    /// A target's run failed (`error` as the Map's Catch gives it): its reason, kept short.
    #[serde(rename_all = "camelCase")]
    Failed { target: Target, error: CaughtError },
    /// Every target's outcome: the execution's output, and each target's metric.
    #[serde(rename_all = "camelCase")]
    Report { results: Vec<TargetOutcome> },
    /// The schedule's run: idle targets served in-process, the others handed to the workflow.
    #[serde(rename_all = "camelCase")]
    Tick {
        /// EventBridge Scheduler's `<aws.scheduler.scheduled-time>`: names the execution a
        /// tick starts, so that a repeated invocation of the same tick starts none.
        #[serde(default)]
        scheduled_time: Option<String>,
    },
}

/// What the `targets` function is invoked with: an action, or (as the push starter) a batch of
/// SQS messages, told apart by its `Records`.
#[derive(Debug, Clone)]
pub enum TargetsInvocation {
    Action(TargetsRequest),
    Push(crate::handlers::push::SqsBatch),
}

impl<'de> Deserialize<'de> for TargetsInvocation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        match value.get("Records") {
            Some(_) => serde_json::from_value(value).map(Self::Push).map_err(D::Error::custom),
            None => serde_json::from_value(value).map(Self::Action).map_err(D::Error::custom),
        }
    }
}

/// The runs of a fan-out execution: one execution of the sync workflow per target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlan {
    pub runs: Vec<ExecutionInput>,
    /// How many targets run at once (`TARGET_CONCURRENCY`): the Map's `MaxConcurrencyPath`.
    pub concurrency: u64,
}

/// How one target's run ended: `failure` is set when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetOutcome {
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<TargetFailure>,
}

/// Why a target's run failed: its error type and a short cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetFailure {
    pub error: String,
    pub cause: String,
}

/// The fan-out execution's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetsReport {
    pub targets: usize,
    pub succeeded: usize,
    /// Each failed target and why; the next run tries it again.
    pub failed: Vec<FailedTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedTarget {
    pub target: Target,
    pub error: String,
    pub cause: String,
}

/// What a tick did: its answer, and its log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TickReport {
    pub targets: usize,
    /// Targets whose run was done in-process: heartbeats and an idle commit.
    pub idle: usize,
    /// Targets left to the workflow and why (at most [`HANDED_OVER_IN_REPORT`]).
    pub handed_over: Vec<HandedOver>,
    pub handed_over_count: usize,
    /// The execution started for them; `None` when every target was idle, or when this tick
    /// had already started it (a repeated invocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
}

/// The most handed-over targets a tick's report names; its log names each.
pub const HANDED_OVER_IN_REPORT: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandedOver {
    pub target: Target,
    pub reason: String,
}

/// The answer of `targets`, by request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetsAnswer {
    Plan(TargetPlan),
    Failed(TargetOutcome),
    Report(TargetsReport),
    Tick(TickReport),
    Push(crate::handlers::push::BatchResponse),
}
