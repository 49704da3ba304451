//! `ack-watermark`: commits a branch's watermarks and releases its claims.
//!
//! Assets: the workflow reaches it with watermarks only after every publish of the branch
//! succeeded (the conditional write keeps each watermark monotonic), and without any on a failed
//! branch, to release the claims. Metrics: publish records each window as it is accepted, so
//! here the planned positions are only checked; a stage left short fails the branch with
//! `WindowsNotSent` once its claims are released.

use crate::aws::state::StateStore;
use crate::error::{AgentError, Result};
use crate::model::{AckInput, AckOutput, AckedWatermark, Kind};
use crate::telemetry;

pub async fn ack_watermark(input: AckInput, state: &impl StateStore, now: i64) -> Result<AckOutput> {
    if input.branch_failed {
        // What the next heartbeats report: these stages' last run failed.
        for stage in &input.claimed {
            state.record_outcome(stage, input.kind, false, now).await?;
        }
    }
    let mut acked = Vec::with_capacity(input.watermarks.len());
    for update in input.watermarks {
        let (position, advanced) = match input.kind {
            Kind::Assets => {
                let advanced = state.advance_assets_watermark(&update, now).await?;
                if !advanced {
                    tracing::info!(stage = update.stage, position = update.position, "watermark already at or past");
                }
                (update.position, advanced)
            }
            Kind::Metrics => {
                let sent = state.load(&update.stage).await?.metrics_watermark;
                (sent.unwrap_or_default(), sent.is_some_and(|sent| sent >= update.position))
            }
        };
        acked.push(AckedWatermark { stage: update.stage, position, advanced });
    }
    for watermark in &acked {
        state
            .record_outcome(&watermark.stage, input.kind, watermark.advanced || input.kind == Kind::Assets, now)
            .await?;
    }
    for stage in &input.claimed {
        state.release(stage, input.kind, &input.execution_id).await?;
    }
    let lag_seconds = acked.iter().map(|w| w.position).max().map(|newest| now - newest);
    if let Some(lag) = lag_seconds {
        telemetry::emit(&telemetry::sync_lag_record(input.kind, lag, now));
    }
    let short: Vec<String> = acked.iter().filter(|w| !w.advanced).map(|w| w.stage.clone()).collect();
    if input.kind == Kind::Metrics && !short.is_empty() {
        return Err(AgentError::WindowsNotSent { stages: short });
    }
    Ok(AckOutput { kind: input.kind, watermarks: acked, lag_seconds })
}
