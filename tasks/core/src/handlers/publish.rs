//! `publish`: sends one batch to the control plane.
//!
//! Upserts and deletes are idempotent, so a retried or replayed assets batch leaves the control
//! plane as one run would. The metrics POST is not: each window is sent once, in order per
//! runtime, and recorded as sent (the metrics watermark) the moment the control plane accepts
//! it, so a retried publish, a failure elsewhere or an overlapping execution never sends it again.
//! A window whose answer was lost (sent, then a timeout or a reset) may have been stored: it is
//! recorded as sent too, and logged, because the contract offers no way to ask and a window
//! counted twice is worse than a window reported missing.

use std::time::{Duration, Instant};

use crate::aws::state::{StateStore, report_key};
use crate::control_plane::{ControlPlane, Upserted};
use crate::error::{AgentError, Result};
use crate::model::{Batch, Chunk, Kind, MetricsChunk, PublishOutput, RuntimeWindows};
use crate::telemetry;

/// How long one invocation starts new windows: well inside the function's 280-second timeout,
/// so the window in flight is recorded before Lambda stops the function.
pub const WINDOW_SENDING_BUDGET: Duration = Duration::from_secs(200);

pub struct Publish<'a, C, S> {
    pub control_plane: &'a C,
    pub state: &'a S,
    /// New windows are not started after this instant; the next run sends them.
    pub send_until: Instant,
}

impl<C: ControlPlane, S: StateStore> Publish<'_, C, S> {
    pub async fn run(&self, batch: Batch, now: i64) -> Result<PublishOutput> {
        match batch {
            Batch::Assets { runtime_id, upserts, deletes, next } => {
                let (mut created, mut updated, mut deleted) = (0, 0, 0);
                for document in &upserts {
                    match self.control_plane.upsert_api(&runtime_id, document).await? {
                        Upserted::Created => created += 1,
                        Upserted::Updated => updated += 1,
                    }
                }
                for api_id in &deletes {
                    if self.control_plane.delete_api(&runtime_id, api_id).await? {
                        deleted += 1;
                    }
                }
                tracing::info!(runtime_id, created, updated, deleted, "assets published");
                Ok(PublishOutput {
                    runtime_ids: vec![runtime_id],
                    created,
                    updated,
                    deleted,
                    next: next.map(Chunk::Assets),
                    ..PublishOutput::default()
                })
            }
            Batch::Metrics(chunk) => self.metrics(chunk, now).await,
        }
    }

    /// Sends each runtime's windows in order. A failure stops that runtime's later windows and
    /// not the other runtimes'; the first failure is then returned, so the workflow retries the
    /// batch (which skips every window already accepted).
    async fn metrics(&self, chunk: MetricsChunk, now: i64) -> Result<PublishOutput> {
        let mut output = PublishOutput::default();
        let mut first_failure = None;
        for runtime in &chunk.runtimes {
            output.runtime_ids.push(runtime.runtime_id.clone());
            if let Err(error) = self.send_windows(runtime, now, &mut output).await {
                tracing::warn!(runtime_id = runtime.runtime_id, %error, "metrics windows stopped");
                first_failure.get_or_insert(error);
            }
        }
        tracing::info!(sent = output.windows_sent, already_sent = output.windows_already_sent, "metrics published");
        match first_failure {
            Some(error) => Err(error),
            None => Ok(output),
        }
    }

    async fn send_windows(&self, runtime: &RuntimeWindows, now: i64, output: &mut PublishOutput) -> Result<()> {
        let mut sent_until = self.state.load(&runtime.stage).await?.metrics_watermark;
        for (_, end) in runtime.windows() {
            if sent_until.is_some_and(|sent| sent >= end) {
                output.windows_already_sent += 1;
                continue;
            }
            if Instant::now() >= self.send_until {
                return Err(AgentError::ControlPlaneUnavailable(format!(
                    "runtime {}: windows from {end} left for the next attempt: the time budget is spent",
                    runtime.runtime_id
                )));
            }
            let report = self.state.load_report(&report_key(&runtime.runtime_id, end)).await?;
            let delivery = self.control_plane.send_metrics(&runtime.runtime_id, &report).await;
            if let Err(error) = &delivery
                && !matches!(error, AgentError::DeliveryUnknown(_))
            {
                return delivery;
            }
            // The only gap in which an accepted window can be sent twice: until this write lands.
            self.state.advance_watermark(&runtime.stage, Kind::Metrics, end, None, now).await?;
            sent_until = Some(end);
            if let Err(error) = delivery {
                tracing::warn!(
                    runtime_id = runtime.runtime_id,
                    stage = runtime.stage,
                    window_end = end,
                    %error,
                    "metrics window in doubt: recorded as sent, never resent"
                );
                telemetry::emit(&telemetry::windows_in_doubt_record(1, now));
                // The runtime's later windows wait for the workflow's retry, after its backoff.
                return Err(AgentError::ControlPlaneUnavailable(format!(
                    "runtime {}: the answer to the window ending {end} was lost; it is recorded as sent and not resent",
                    runtime.runtime_id
                )));
            }
            output.windows_sent += 1;
        }
        Ok(())
    }
}
