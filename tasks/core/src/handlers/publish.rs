//! `publish`: sends one batch to the control plane.
//!
//! Upserts and deletes are idempotent, so a retried or replayed assets batch leaves the control
//! plane as one run would. An API the control plane refuses (a `4xx` about that request) is
//! recorded in the stage's run and left out, so every other API is published; the chunk is
//! recorded as published once its last batch went through, which is what lets `ack-watermark`
//! move the stage's watermark.
//!
//! The metrics POST is not idempotent: each window is sent once, in order per runtime, and
//! recorded as sent (the metrics watermark) the moment the control plane accepts it, so a retried
//! publish, a failure elsewhere or an overlapping execution never sends it again. A window whose
//! answer was lost (sent, then a timeout or a reset) may have been stored: it is recorded as sent
//! too, and logged, because the contract offers no way to ask and a window counted twice is worse
//! than a window reported missing. So is a window whose task ended before recording the answer
//! (Lambda's timeout cut it off): each POST is preceded by an in-flight mark on the stage's item,
//! which the next attempt finds past the watermark.
//!
//! New requests start only while the invocation has time left for their worst case (every
//! attempt timing out); what is left over goes back to the workflow as the batch's `next`, so a
//! slow control plane makes more invocations, not a cut-off one.

use std::time::{Duration, Instant};

use crate::aws::state::{RunEntry, StateStore, WORK_TTL_SECONDS, report_key};
use crate::control_plane::types::ApiDocument;
use crate::control_plane::{ControlPlane, Upserted};
use crate::error::{AgentError, Result};
use crate::mapping::aws_api_id;
use crate::model::{AssetChunk, Batch, Chunk, MetricsChunk, Operation, PublishOutput, Refused, RuntimeWindows};
use crate::target::Target;
use crate::telemetry;

/// A request's time besides the control plane's answer: the state writes around it.
const STATE_TIME: Duration = Duration::from_secs(agent_settings::PUBLISH_STATE_WRITES_SECONDS);

pub struct Publish<'a, C, S> {
    pub control_plane: &'a C,
    pub state: &'a S,
    /// When Lambda stops the invocation.
    pub deadline: Instant,
    /// The longest one control plane request can take with its repetitions.
    pub longest_request: Duration,
}

/// One batch of APIs, as publish works through it.
struct AssetBatch<'b> {
    runtime_id: &'b str,
    stage: &'b str,
    run: &'b str,
}

impl<C: ControlPlane, S: StateStore> Publish<'_, C, S> {
    pub async fn run(&self, batch: Batch, now: i64) -> Result<PublishOutput> {
        match batch {
            Batch::Assets { target, runtime_id, stage, run, index, snapshot, upserts, deletes, next } => {
                let batch = AssetBatch { runtime_id: &runtime_id, stage: &stage, run: &run };
                let mut output = PublishOutput { runtime_ids: vec![runtime_id.clone()], ..PublishOutput::default() };
                let left = self.assets(&batch, &upserts, &deletes, now, &mut output).await?;
                // What this batch did not reach comes before what did not fit it.
                let rest = match (left, next) {
                    (None, next) => next.map(|next| *next),
                    (Some((mut upserts, mut deletes)), next) => {
                        if let Some(next) = next.map(|next| *next) {
                            upserts.extend(next.upserts);
                            deletes.extend(next.deletes);
                        }
                        let (runtime_id, stage, run) = (runtime_id.clone(), stage.clone(), run.clone());
                        Some(AssetChunk { target, runtime_id, stage, run, index, upserts, deletes, snapshot })
                    }
                };
                if rest.is_none() {
                    // Every API of the chunk was sent or recorded as refused.
                    self.state.record_in_run(&run, RunEntry::ChunkDone(index), now + WORK_TTL_SECONDS).await?;
                }
                tracing::info!(
                    runtime_id,
                    created = output.created,
                    updated = output.updated,
                    deleted = output.deleted,
                    refused = output.refused,
                    "assets published"
                );
                output.next = rest.map(Chunk::Assets);
                Ok(output)
            }
            Batch::Metrics(chunk) => self.metrics(chunk, now).await,
        }
    }

    /// Whether a task started now that makes `requests` control plane requests ends before the
    /// deadline, whatever the control plane does.
    fn time_left_for(&self, requests: u32) -> bool {
        Instant::now() + self.longest_request * requests + STATE_TIME <= self.deadline
    }

    /// Sends the batch's upserts, then its deletes; an item the control plane refuses is recorded
    /// and skipped. When time runs out, what is left (API ids to upsert, ids to delete).
    async fn assets(
        &self,
        batch: &AssetBatch<'_>,
        upserts: &[ApiDocument],
        deletes: &[String],
        now: i64,
        output: &mut PublishOutput,
    ) -> Result<Option<(Vec<String>, Vec<String>)>> {
        // An upsert is a POST and, for an API the control plane holds, a PUT.
        for (sent, document) in upserts.iter().enumerate() {
            if sent > 0 && !self.time_left_for(2) {
                let left = upserts[sent..].iter().map(|d| aws_api_id(&d.id, batch.stage).to_owned()).collect();
                return Ok(Some((left, deletes.to_vec())));
            }
            match self.control_plane.upsert_api(batch.runtime_id, document).await {
                Ok(Upserted::Created) => output.created += 1,
                Ok(Upserted::Updated) => output.updated += 1,
                Err(error) if error.is_refusal() => {
                    self.refuse(batch, &document.id, Operation::Upsert, &error, now).await?;
                    output.refused += 1;
                }
                Err(error) => return Err(error),
            }
        }
        for (sent, api_id) in deletes.iter().enumerate() {
            if (sent > 0 || !upserts.is_empty()) && !self.time_left_for(1) {
                return Ok(Some((Vec::new(), deletes[sent..].to_vec())));
            }
            match self.control_plane.delete_api(batch.runtime_id, api_id).await {
                Ok(true) => output.deleted += 1,
                Ok(false) => {}
                Err(error) if error.is_refusal() => {
                    self.refuse(batch, api_id, Operation::Delete, &error, now).await?;
                    output.refused += 1;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Records an API the control plane refused in the stage's run: `ack-watermark` keeps it for
    /// the next runs to retry and names it in the execution output.
    async fn refuse(
        &self,
        batch: &AssetBatch<'_>,
        id: &str,
        operation: Operation,
        error: &AgentError,
        now: i64,
    ) -> Result<()> {
        tracing::warn!(
            stage = batch.stage,
            runtime_id = batch.runtime_id,
            api_id = id,
            ?operation,
            error_type = error.error_type(),
            %error,
            "the control plane refused an API; the others go on, and later runs retry it"
        );
        let refused = Refused {
            id: id.to_owned(),
            operation,
            error: error.error_type().to_owned(),
            message: error.to_string(),
            at: now,
        };
        self.state.record_in_run(batch.run, RunEntry::Refused(&refused), now + WORK_TTL_SECONDS).await
    }

    /// Sends each runtime's windows in order. A failure stops that runtime's later windows and
    /// not the other runtimes'; the first failure is then returned, so the workflow retries the
    /// batch (which skips every window already accepted). Runtimes whose reports transform has
    /// not stored yet, or that the time left did not reach, are the batch's `next`.
    async fn metrics(&self, chunk: MetricsChunk, now: i64) -> Result<PublishOutput> {
        let mut output = PublishOutput::default();
        let mut first_failure = None;
        let mut left = Vec::new();
        let target = chunk.target;
        for runtime in chunk.runtimes {
            output.runtime_ids.push(runtime.runtime_id.clone());
            if !runtime.reports_stored {
                left.push(runtime);
                continue;
            }
            match self.send_windows(&runtime, target.as_ref(), now, &mut output).await {
                Ok(true) => {}
                Ok(false) => left.push(runtime),
                Err(error) => {
                    tracing::warn!(runtime_id = runtime.runtime_id, %error, "metrics windows stopped");
                    first_failure.get_or_insert(error);
                }
            }
        }
        tracing::info!(
            sent = output.windows_sent,
            already_sent = output.windows_already_sent,
            left = left.len(),
            "metrics published"
        );
        if output.windows_sent > 0 {
            telemetry::emit(&telemetry::windows_sent_record(output.windows_sent, target.as_ref(), now));
        }
        if let Some(error) = first_failure {
            return Err(error);
        }
        output.next = (!left.is_empty()).then_some(Chunk::Metrics(MetricsChunk { target, runtimes: left }));
        Ok(output)
    }

    /// Sends the runtime's windows not sent yet; `false` when time ran out before the last.
    async fn send_windows(
        &self,
        runtime: &RuntimeWindows,
        target: Option<&Target>,
        now: i64,
        output: &mut PublishOutput,
    ) -> Result<bool> {
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
            self.window_in_doubt(runtime, target, end, "the task sending it was cut off", now);
        }
        for (_, end) in windows {
            if sent_until.is_some_and(|sent| sent >= end) {
                output.windows_already_sent += 1;
                continue;
            }
            if output.windows_sent > 0 && !self.time_left_for(1) {
                tracing::info!(runtime_id = runtime.runtime_id, window_end = end, "time left for no further window");
                return Ok(false);
            }
            let report = self.state.load_report(&report_key(&runtime.runtime_id, end)).await?;
            self.state.set_metrics_in_flight(stage, Some(end)).await?;
            match self.control_plane.send_metrics(&runtime.runtime_id, &report).await {
                Ok(()) => {}
                Err(AgentError::DeliveryUnknown(cause)) => {
                    self.state.advance_metrics_watermark(stage, end, now).await?;
                    self.window_in_doubt(runtime, target, end, &cause, now);
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
        Ok(true)
    }

    fn window_in_doubt(
        &self,
        runtime: &RuntimeWindows,
        target: Option<&Target>,
        window_end: i64,
        cause: &str,
        now: i64,
    ) {
        tracing::warn!(
            runtime_id = runtime.runtime_id,
            stage = runtime.stage,
            window_end,
            cause,
            "metrics window in doubt: recorded as sent, never resent"
        );
        telemetry::emit(&telemetry::windows_in_doubt_record(1, target, now));
    }
}
