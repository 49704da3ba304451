//! `publish`: sends one batch to the control plane.
//!
//! Upserts and deletes are idempotent, so a retried or replayed assets batch leaves the control
//! plane as one run would. The metrics POST is not: each window is sent once, in order per
//! runtime, and recorded as sent (the metrics watermark) the moment the control plane accepts
//! it, so a retried publish, a failure elsewhere or an overlapping execution never sends it again.
//! A window whose answer was lost (sent, then a timeout or a reset) may have been stored: it is
//! recorded as sent too, and logged, because the contract offers no way to ask and a window
//! counted twice is worse than a window reported missing. So is a window whose task ended before
//! recording the answer (Lambda's timeout cut it off): each POST is preceded by an in-flight mark
//! on the stage's item, which the next attempt finds past the watermark.
//!
//! New windows start only while the invocation has time left for one more window's worst case
//! (every attempt of the request timing out), so a cut-off is the exception, not the way a slow
//! control plane ends a task.

use std::time::{Duration, Instant};

use crate::aws::state::{StateStore, report_key};
use crate::control_plane::{ControlPlane, Upserted};
use crate::error::{AgentError, Result};
use crate::model::{Batch, Chunk, MetricsChunk, PublishOutput, RuntimeWindows};
use crate::telemetry;

/// The function's timeout as deployed (`statemachine/functions.json`), for a Lambda runtime
/// that announces no usable deadline (`cargo lambda watch` sends a constant).
pub const TIMEOUT_WITHOUT_DEADLINE: Duration = Duration::from_secs(280);
/// A window's time besides its request: loading its report and the two state writes around it.
const WINDOW_STATE_TIME: Duration = Duration::from_secs(15);

/// The instant after which no new window starts: the invocation's deadline less the longest a
/// window can take (`longest_request`, the control plane client's worst case, and its state
/// writes), so a window in flight is recorded before Lambda stops the function.
pub fn send_until(started: Instant, deadline: Option<Instant>, longest_request: Duration) -> Instant {
    let deadline = deadline.unwrap_or(started + TIMEOUT_WITHOUT_DEADLINE);
    deadline.checked_sub(longest_request + WINDOW_STATE_TIME).map_or(started, |until| until.max(started))
}

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
        let stage = &runtime.stage;
        let stored = self.state.load(stage).await?;
        let mut sent_until = stored.metrics_watermark;
        let windows = runtime.windows();
        let next_end = windows.iter().map(|&(_, end)| end).find(|&end| sent_until.is_none_or(|sent| sent < end));
        if let Some(end) = next_end.filter(|end| stored.metrics_in_flight == Some(*end)) {
            // The POST of the next window started, and its task ended before recording the
            // answer (Lambda cut it off). The control plane may hold the window: it is in doubt,
            // never resent. (Windows go in order: only the next one can have been in flight.)
            self.state.advance_metrics_watermark(stage, end, now).await?;
            sent_until = Some(end);
            self.window_in_doubt(runtime, end, "the task sending it was cut off", now);
        }
        for (_, end) in windows {
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
            self.state.set_metrics_in_flight(stage, Some(end)).await?;
            match self.control_plane.send_metrics(&runtime.runtime_id, &report).await {
                Ok(()) => {}
                Err(AgentError::DeliveryUnknown(cause)) => {
                    self.state.advance_metrics_watermark(stage, end, now).await?;
                    self.window_in_doubt(runtime, end, &cause, now);
                    // The runtime's later windows wait for the workflow's retry, after its backoff.
                    return Err(AgentError::ControlPlaneUnavailable(format!(
                        "runtime {}: the answer to the window ending {end} was lost; it is recorded as sent and not resent",
                        runtime.runtime_id
                    )));
                }
                Err(refused) => {
                    // Not stored: the retry sends it. (Should this write fail, the window would be
                    // taken for in doubt: never twice, at worst missing.)
                    self.state.set_metrics_in_flight(stage, None).await?;
                    return Err(refused);
                }
            }
            // Should this write not land (an AWS error, the timeout), the in-flight mark makes the
            // next attempt take the window for in doubt rather than send it again.
            self.state.advance_metrics_watermark(stage, end, now).await?;
            sent_until = Some(end);
            output.windows_sent += 1;
        }
        Ok(())
    }

    fn window_in_doubt(&self, runtime: &RuntimeWindows, window_end: i64, cause: &str, now: i64) {
        tracing::warn!(
            runtime_id = runtime.runtime_id,
            stage = runtime.stage,
            window_end,
            cause,
            "metrics window in doubt: recorded as sent, never resent"
        );
        telemetry::emit(&telemetry::windows_in_doubt_record(1, now));
    }
}
