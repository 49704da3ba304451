//! `ack-watermark`: commits a branch's watermarks and releases its claims. The workflow reaches
//! it with watermarks only after every publish of the branch succeeded (the conditional write
//! keeps each watermark monotonic), and without any on a failed branch, to release the claims.

use crate::aws::state::StateStore;
use crate::error::Result;
use crate::model::{AckInput, AckOutput, AckedWatermark};
use crate::telemetry;

pub async fn ack_watermark(input: AckInput, state: &impl StateStore, now: i64) -> Result<AckOutput> {
    let lag_seconds = input.watermarks.iter().map(|w| w.position).max().map(|newest| now - newest);
    let mut acked = Vec::with_capacity(input.watermarks.len());
    for update in input.watermarks {
        let advanced =
            state.advance_watermark(&update.stage, input.kind, update.position, update.full_sync_at, now).await?;
        if !advanced {
            tracing::info!(stage = update.stage, position = update.position, "watermark already at or past position");
        }
        acked.push(AckedWatermark { stage: update.stage, position: update.position, advanced });
    }
    for stage in &input.claimed {
        state.release(stage, input.kind, &input.execution_id).await?;
    }
    if let Some(lag) = lag_seconds {
        telemetry::emit(&telemetry::sync_lag_record(input.kind, lag, now));
    }
    Ok(AckOutput { kind: input.kind, watermarks: acked, lag_seconds })
}
