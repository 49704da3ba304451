//! `ack-watermark`: commits a branch's watermarks, releases its claims, and names what failed.
//!
//! Assets: a stage's watermark moves only when every chunk of its run is recorded as published
//! (by publish, in the stage's run record), with the APIs the control plane refused kept for the
//! next runs to retry; a stage whose chunk failed, or that list-changes held back, keeps its
//! watermark while every other stage moves on. Metrics: publish records each window as it is
//! accepted, so here the planned positions are only checked. Either way the answer lists each
//! failure with its stages, and the workflow fails with the first once everything else is
//! committed. The failure path of a Map iteration records its error here too
//! ([`AckRequest::ChunkFailed`]), so that the commit can name it.

use serde::Serialize;

use crate::aws::state::{ClaimOn, RunEntry, StateStore, WORK_TTL_SECONDS};
use crate::error::Result;
use crate::model::{
    AckInput, AckOutput, AckRequest, AckedWatermark, BranchFailure, ChunkFailure, Kind, REFUSED_IN_OUTPUT, Refused,
    RefusedApi, StageFailure, WatermarkUpdate, run_key,
};
use crate::telemetry;

/// The most refused APIs a stage keeps for its next runs to retry (newest first); the rest are
/// retried by the next full sync. Far more than a healthy stage has, and a bounded item.
pub const REFUSED_KEPT: usize = 500;
/// A refused API's message as kept: the control plane's details, not a whole body.
const REFUSED_MESSAGE_CHARS: usize = 300;

/// What `ack-watermark` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AckAnswer {
    Committed(AckOutput),
    /// A chunk's failure was recorded.
    Recorded {},
}

pub async fn ack_watermark(request: AckRequest, state: &impl StateStore, now: i64) -> Result<AckAnswer> {
    match request {
        AckRequest::Commit(input) => commit(input, state, now).await.map(AckAnswer::Committed),
        AckRequest::ChunkFailed(failure) => record_failure(failure, state, now).await.map(|()| AckAnswer::Recorded {}),
    }
}

async fn record_failure(failure: ChunkFailure, state: &impl StateStore, now: i64) -> Result<()> {
    let entry = RunEntry::Failure { error: &failure.error.error, cause: &failure.error.cause };
    for stage in &failure.stages {
        tracing::warn!(stage, kind = ?failure.kind, error = failure.error.error, cause = failure.error.cause, "chunk failed");
        let key = run_key(failure.kind, &failure.execution_id, stage);
        state.record_in_run(&key, entry, now + WORK_TTL_SECONDS).await?;
    }
    Ok(())
}

async fn commit(input: AckInput, state: &impl StateStore, now: i64) -> Result<AckOutput> {
    let kind = input.kind;
    let mut failed: Vec<StageFailure> = input.held_back.clone();
    let mut acked = Vec::with_capacity(input.watermarks.len());
    let mut refused: Vec<RefusedApi> = Vec::new();
    if input.branch_failed {
        // The branch ended without a commit: only the claims are released.
        failed.extend(input.claimed.iter().map(|stage| StageFailure {
            stage: stage.clone(),
            error: "BranchFailed".into(),
            cause: "the branch failed before its commit; its error is the execution's".into(),
        }));
    }
    for update in &input.watermarks {
        let outcome = match kind {
            Kind::Assets => commit_assets(update, &input.execution_id, state, now).await?,
            Kind::Metrics => check_metrics(update, &input.execution_id, state).await?,
        };
        match outcome {
            Ok((watermark, kept)) => {
                refused.extend(kept.into_iter().map(|refused| RefusedApi { stage: update.stage.clone(), refused }));
                acked.push(watermark);
            }
            Err(failure) => failed.push(failure),
        }
    }
    for watermark in &acked {
        state.record_outcome(&watermark.stage, kind, true, now).await?;
    }
    for failure in &failed {
        tracing::warn!(stage = failure.stage, ?kind, error = failure.error, cause = failure.cause, "stage held back");
        state.record_outcome(&failure.stage, kind, false, now).await?;
    }
    for stage in &input.claimed {
        state.release(ClaimOn::Branch { stage, kind }, &input.execution_id).await?;
    }
    let Reach { lag_seconds, federated } = reach(&input, &acked, state, now).await?;
    if let Some(lag) = lag_seconds {
        telemetry::emit(&telemetry::sync_lag_record(kind, lag, input.target.as_ref(), now));
    }
    if let Some(count) = federated.filter(|_| kind == Kind::Assets && !input.branch_failed && !input.claimed.is_empty())
    {
        telemetry::emit(&telemetry::apis_federated_record(count, input.target.as_ref(), now));
    }
    if kind == Kind::Assets && !input.branch_failed {
        telemetry::emit(&telemetry::refused_apis_record(refused.len(), input.target.as_ref(), now));
    }
    let refused_count = refused.len();
    refused.truncate(REFUSED_IN_OUTPUT);
    Ok(AckOutput { kind, watermarks: acked, lag_seconds, failures: grouped(failed), refused, refused_count })
}

type Committed = std::result::Result<(AckedWatermark, Vec<Refused>), StageFailure>;

/// Moves the stage's assets watermark if every chunk of its run was published, keeping the APIs
/// refused (those carried over and those refused now) for the next runs.
async fn commit_assets(
    update: &WatermarkUpdate,
    execution_id: &str,
    state: &impl StateStore,
    now: i64,
) -> Result<Committed> {
    let record = match &update.run {
        Some(key) => state.load_run(key).await?,
        None => Default::default(),
    };
    let published = (0..update.chunks).filter(|index| record.chunks_done.contains(index)).count();
    if published < update.chunks {
        let (error, cause) = record.failure.unwrap_or_else(|| {
            (
                "ChunkNotPublished".into(),
                format!("run {execution_id} published {published} of {} chunks", update.chunks),
            )
        });
        let cause = format!("stage {}: {cause}", update.stage);
        return Ok(Err(StageFailure { stage: update.stage.clone(), error, cause }));
    }
    if update.pushed_only {
        // The watermark stays. The events are remembered only when the control plane took every
        // change: otherwise the poll applies them again and keeps what is refused for retries.
        let refused = kept_refusals(&update.stage, record.refused);
        match refused.is_empty() {
            true => state.record_pushed(&update.stage, &update.pushed).await?,
            false => tracing::warn!(
                stage = update.stage,
                refused = refused.len(),
                "pushed changes refused; left to the poll, which retries them"
            ),
        }
        let watermark = AckedWatermark { stage: update.stage.clone(), position: update.position, advanced: false };
        return Ok(Ok((watermark, refused)));
    }
    let kept = kept_refusals(&update.stage, record.refused);
    let advanced = state.advance_assets_watermark(update, &kept, now).await?;
    if !advanced {
        tracing::info!(stage = update.stage, position = update.position, "watermark already at or past");
    }
    // Remembered after the move, which forgets the entries no window reads any more.
    state.record_pushed(&update.stage, &update.pushed).await?;
    let watermark = AckedWatermark { stage: update.stage.clone(), position: update.position, advanced };
    Ok(Ok((watermark, kept)))
}

/// Whether publish sent the stage's windows up to the planned position; the chunk's recorded
/// failure, if any, says why not.
async fn check_metrics(update: &WatermarkUpdate, execution_id: &str, state: &impl StateStore) -> Result<Committed> {
    let sent = state.load(&update.stage).await?.metrics_watermark;
    if sent.is_some_and(|sent| sent >= update.position) {
        let watermark = AckedWatermark { stage: update.stage.clone(), position: update.position, advanced: true };
        return Ok(Ok((watermark, Vec::new())));
    }
    let record = state.load_run(&run_key(Kind::Metrics, execution_id, &update.stage)).await?;
    let (error, cause) = record.failure.unwrap_or_else(|| {
        ("WindowsNotSent".into(), "the control plane did not accept every window planned; the next run resumes".into())
    });
    let cause = format!("stage {} (windows sent up to {}): {cause}", update.stage, sent.unwrap_or_default());
    Ok(Err(StageFailure { stage: update.stage.clone(), error, cause }))
}

/// The refused APIs a stage keeps: the newest [`REFUSED_KEPT`], messages cut short.
fn kept_refusals(stage: &str, mut refused: Vec<Refused>) -> Vec<Refused> {
    refused.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.id.cmp(&b.id)));
    if refused.len() > REFUSED_KEPT {
        tracing::warn!(
            stage,
            refused = refused.len(),
            kept = REFUSED_KEPT,
            "the oldest refused APIs wait for the next full sync"
        );
        refused.truncate(REFUSED_KEPT);
    }
    for entry in &mut refused {
        if let Some((cut, _)) = entry.message.char_indices().nth(REFUSED_MESSAGE_CHARS) {
            entry.message.truncate(cut);
        }
    }
    refused
}

/// Where the stages this run claimed stand after the commit.
struct Reach {
    /// How far behind the control plane is for the branch's worst stage: now less the oldest
    /// watermark (a stage held back counts with the watermark it kept).
    lag_seconds: Option<i64>,
    /// Assets: the APIs the stages' catalogs hold, when each stage's count is known.
    federated: Option<usize>,
}

async fn reach(input: &AckInput, acked: &[AckedWatermark], state: &impl StateStore, now: i64) -> Result<Reach> {
    let mut oldest: Option<i64> = None;
    let mut federated = Some(0);
    for stage in &input.claimed {
        let advanced = acked.iter().find(|w| &w.stage == stage && w.advanced).map(|w| w.position);
        // An advanced metrics watermark is all the metrics branch needs; the assets branch reads the
        // stage's catalog size besides.
        let stored = match (advanced, input.kind) {
            (Some(_), Kind::Metrics) => None,
            _ => Some(state.load(stage).await?),
        };
        let position = advanced.or_else(|| {
            stored.as_ref().and_then(|stored| match input.kind {
                Kind::Assets => stored.assets_watermark,
                Kind::Metrics => stored.metrics_watermark,
            })
        });
        if let Some(position) = position {
            oldest = Some(oldest.map_or(position, |o| o.min(position)));
        }
        let deployed = stored.and_then(|stored| stored.deployed_apis).map(|count| count as usize);
        federated = federated.zip(deployed).map(|(sum, count)| sum + count);
    }
    Ok(Reach { lag_seconds: oldest.map(|position| now - position), federated })
}

/// The failures by cause, in the order they were met: one entry per error type, with the first
/// cause and every stage it held back.
fn grouped(failed: Vec<StageFailure>) -> Vec<BranchFailure> {
    let mut groups: Vec<BranchFailure> = Vec::new();
    for StageFailure { stage, error, cause } in failed {
        match groups.iter_mut().find(|group| group.error == error) {
            Some(group) => group.stages.push(stage),
            None => groups.push(BranchFailure { error, cause, stages: vec![stage] }),
        }
    }
    groups
}
