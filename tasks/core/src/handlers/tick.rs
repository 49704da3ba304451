//! `tick`: what the schedule invokes, every minute by default.
//!
//! A run of the sync workflow that finds nothing to do still costs its state transitions (about
//! 13 for one target, $0.014 a month each at one run a minute), and most targets are quiet most
//! minutes. So the tick does a quiet target's run in-process, with the workflow's own task code,
//! claims and watermarks: the runtimes' heartbeats, the commit of a quiet CloudTrail window, the
//! periodic metrics read when it fits one chunk, the hourly discovery of a small account. A
//! target with more to do (a change, a full sync, a large discovery or catch-up, a refusal to
//! retry, an error of any kind) is handed over to the workflow, all of a tick's in one
//! execution, where the console shows the work and a failure is reported as it always was.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};

use crate::aws::apigateway::ApiGateway;
use crate::aws::cloudtrail::{ChangeFeed, Trails};
use crate::aws::cloudwatch::MetricSource;
use crate::aws::executions::{ExecutionStarter, Executions};
use crate::aws::organizations::Organization;
use crate::aws::state::StateStore;
use crate::config::{Config, TargetSettings};
use crate::control_plane::ControlPlane;
use crate::error::{AgentError, Result};
use crate::handlers::ack_watermark::{AckAnswer, ack_watermark};
use crate::handlers::ensure_runtime::{DiscoveryDue, EnsureRuntime};
use crate::handlers::fan_out::{FanOut, shorten};
use crate::handlers::list_changes::{IdleListing, ListChanges};
use crate::handlers::publish::Publish;
use crate::handlers::push::PushCheck;
use crate::handlers::transform::Transform;
use crate::model::{
    AckInput, AckRequest, CaughtError, Chunk, ChunkFailure, EnsureRuntimeInput, ExecutionInput, HANDED_OVER_IN_REPORT,
    HandedOver, Kind, ListChangesInput, ListChangesOutput, MetricsChunk, SyncMode, TickReport,
};
use crate::target::Target;
use crate::telemetry;

/// How long a tick's claims on a target's stages last: longer than the tick function's
/// timeout, so a pass cut off holding them blocks the workflow's run of its stages for minutes,
/// not for the hour of an execution's claim.
pub const TICK_CLAIM_SECONDS: u64 = 300;

/// Time kept at the end of a tick to start the execution after the passes.
const START_MARGIN: Duration = Duration::from_secs(10);
/// Time a pass keeps after its work to commit it.
const PASS_MARGIN: Duration = Duration::from_secs(10);
/// A pass's time when the tick is given no deadline (a test).
const UNBOUNDED_PASS: Duration = Duration::from_secs(3600);

/// What a pass made of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pass {
    /// Its run done in-process: heartbeats, the quiet window committed, its metrics read if due.
    Idle,
    /// Left to the workflow, for this reason.
    HandOver(String),
}

/// The largest account a pass discovers in-process (the APIs its stages deploy): about 20 s of
/// API Gateway calls at the default pace, well inside a tick.
pub const DISCOVERY_APIS_IN_PROCESS: usize = 100;

/// One target's run in-process, with the workflow's own tasks: ensure-runtime (its discovery
/// too when the account is small), the assets branch when its window is quiet, and the metrics
/// branch when its due windows fit one chunk (read, sent and committed here as the workflow's
/// Map iteration would). Anything larger is left to the workflow, untouched.
pub struct IdlePass<'a, G, C, S, F, M, E> {
    pub config: &'a Config,
    pub target: &'a Target,
    /// The target as the workflow's task inputs name it: `None` in a deployment of one target.
    pub named: Option<&'a Target>,
    pub gateway: &'a G,
    pub control_plane: &'a C,
    pub state: &'a S,
    pub feed: &'a F,
    pub metrics: &'a M,
    pub executions: &'a E,
    /// When the pass must have ended its work (the tick's deadline, less its margin).
    pub deadline: Instant,
    /// The longest one control plane request can take with its repetitions.
    pub longest_request: Duration,
}

impl<G, C, S, F, M, E> IdlePass<'_, G, C, S, F, M, E>
where
    G: ApiGateway,
    C: ControlPlane,
    S: StateStore,
    F: ChangeFeed + Trails,
    M: MetricSource,
    E: Executions,
{
    /// `tick_id` holds the pass's claims, as an execution's id does.
    pub async fn run(&self, tick_id: &str, now: i64) -> Result<Pass> {
        let ensure = EnsureRuntime {
            config: self.config,
            account: &self.target.account,
            region: &self.target.region,
            gateway: self.gateway,
            control_plane: self.control_plane,
            state: self.state,
            executions: self.executions,
            store_listing: false,
        };
        // A discovery lists the whole account at API Gateway's pace: a small one is done here.
        if let DiscoveryDue::Yes { deployed_apis } = ensure.discovery_due(now).await?
            && deployed_apis.is_none_or(|apis| apis > DISCOVERY_APIS_IN_PROCESS)
        {
            return Ok(Pass::HandOver(match deployed_apis {
                Some(apis) => format!("a discovery of {apis} APIs is due"),
                None => "the account's stages are due for discovery".into(),
            }));
        }
        let input = ExecutionInput { target: self.named.cloned(), ..ExecutionInput::default() };
        let request = EnsureRuntimeInput {
            input: serde_json::to_value(input).map_err(|e| AgentError::invalid_input(e.to_string()))?,
            execution_id: tick_id.to_owned(),
        };
        let ready = ensure.run(request, now).await?;
        // With push mode, whether the target's trail lets EventBridge push (checked hourly).
        PushCheck { config: self.config, trails: self.feed, state: self.state }.status(now).await;
        if ready.runtimes.is_empty() {
            return Ok(Pass::Idle);
        }
        let config = Config { claim_ttl: Duration::from_secs(TICK_CLAIM_SECONDS), ..self.config.clone() };
        let lister = ListChanges {
            config: &config,
            gateway: self.gateway,
            control_plane: self.control_plane,
            state: self.state,
            feed: self.feed,
            executions: self.executions,
        };
        let input = |kind| ListChangesInput {
            target: self.named.cloned(),
            kind,
            mode: SyncMode::Auto,
            runtimes: ready.runtimes.clone(),
            execution_id: tick_id.to_owned(),
            pushed: Vec::new(),
        };
        let assets = match lister.run_if_idle(input(Kind::Assets), now).await? {
            IdleListing::Idle(listed) => listed,
            IdleListing::Busy(reason) => return Ok(Pass::HandOver(reason)),
        };
        if let Some(reason) = self.commit(assets, tick_id, now).await? {
            return Ok(Pass::HandOver(reason));
        }
        let metrics = lister.run(input(Kind::Metrics), now).await?;
        if metrics.chunks.len() > 1 {
            lister.give_back(&input(Kind::Metrics), &metrics.claimed).await;
            return Ok(Pass::HandOver(format!("{} metrics windows due: a catch-up", metrics.summary.windows)));
        }
        if let Some(Chunk::Metrics(chunk)) = metrics.chunks.first()
            && let Some(reason) = self.send(chunk.clone(), tick_id, now).await?
        {
            lister.give_back(&input(Kind::Metrics), &metrics.claimed).await;
            return Ok(Pass::HandOver(reason));
        }
        Ok(match self.commit(metrics, tick_id, now).await? {
            Some(reason) => Pass::HandOver(reason),
            None => Pass::Idle,
        })
    }

    /// Reads and sends one metrics chunk as the workflow's Map iteration does (transform, then
    /// publish, until publish has nothing left); a reason to hand over when the chunk failed or
    /// did not finish in time. Every window the control plane accepted is recorded as it is,
    /// so the workflow's run goes on from there and never sends one twice.
    async fn send(&self, chunk: MetricsChunk, tick_id: &str, now: i64) -> Result<Option<String>> {
        let transform = Transform {
            region: &self.target.region,
            api_types: &self.config.api_types,
            metrics: self.metrics,
            state: self.state,
        };
        let publish = Publish {
            control_plane: self.control_plane,
            state: self.state,
            deadline: self.deadline,
            longest_request: self.longest_request,
        };
        let stages: Vec<String> = chunk.runtimes.iter().map(|r| r.stage.clone()).collect();
        let mut next = Some(Chunk::Metrics(chunk));
        while let Some(Chunk::Metrics(chunk)) = next.take() {
            if Instant::now() >= self.deadline {
                return Ok(Some("metrics read unfinished in this tick".into()));
            }
            let sent = async { publish.run(transform.metrics(chunk, now, self.deadline).await?, now).await }.await;
            match sent {
                Ok(published) => next = published.next,
                Err(error) => {
                    // As the Map iteration's Catch records it: the commit names it.
                    let failure = ChunkFailure {
                        target: self.named.cloned(),
                        kind: Kind::Metrics,
                        execution_id: tick_id.to_owned(),
                        stages,
                        error: CaughtError { error: error.error_type().into(), cause: error.to_string() },
                    };
                    ack_watermark(AckRequest::ChunkFailed(failure), self.state, now).await?;
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// Commits a branch as ack-watermark does; the first failure it names, if any.
    async fn commit(&self, listed: ListChangesOutput, tick_id: &str, now: i64) -> Result<Option<String>> {
        let commit = AckInput {
            target: listed.target,
            kind: listed.kind,
            execution_id: tick_id.to_owned(),
            watermarks: listed.watermarks,
            claimed: listed.claimed,
            held_back: listed.held_back,
            branch_failed: false,
        };
        Ok(match ack_watermark(AckRequest::Commit(commit), self.state, now).await? {
            AckAnswer::Committed(acked) => {
                acked.failures.first().map(|failure| format!("{:?}: {}: {}", listed.kind, failure.error, failure.cause))
            }
            AckAnswer::Recorded {} => None,
        })
    }
}

/// One target's pass, with that target's clients (see `bootstrap::SdkTargetPasses`); `named`
/// when the workflow's tasks name their target (a deployment of several targets); its work ends
/// by `deadline`.
pub trait TargetPasses: Send + Sync {
    fn pass(
        &self,
        target: &Target,
        named: bool,
        tick_id: &str,
        deadline: Instant,
        now: i64,
    ) -> impl Future<Output = Result<Pass>> + Send;
}

/// The state machines a tick hands targets over to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflows {
    /// The sync workflow (statemachine/agent.asl.json).
    pub sync: String,
    /// The fan-out (statemachine/targets.asl.json), in a deployment of several targets.
    pub fan_out: Option<String>,
}

impl Workflows {
    /// `SYNC_STATE_MACHINE_ARN` and, when the deployment fans out, `FAN_OUT_STATE_MACHINE_ARN`.
    pub fn from_env() -> Result<Self> {
        Self::from_values(
            std::env::var("SYNC_STATE_MACHINE_ARN").ok().as_deref(),
            std::env::var("FAN_OUT_STATE_MACHINE_ARN").ok().filter(|v| !v.trim().is_empty()).as_deref(),
        )
    }

    pub fn from_values(sync: Option<&str>, fan_out: Option<&str>) -> Result<Self> {
        let checked = |variable: &'static str, value: &str| {
            let value = value.trim();
            match value.starts_with("arn:") && value.contains(":states:") && value.contains(":stateMachine:") {
                true => Ok(value.to_owned()),
                false => {
                    Err(AgentError::InvalidConfig { variable, reason: format!("{value:?} is not a state machine ARN") })
                }
            }
        };
        let sync = match sync {
            Some(value) if !value.trim().is_empty() => checked("SYNC_STATE_MACHINE_ARN", value)?,
            _ => {
                return Err(AgentError::InvalidConfig {
                    variable: "SYNC_STATE_MACHINE_ARN",
                    reason: "is required".into(),
                });
            }
        };
        let fan_out = fan_out.map(|value| checked("FAN_OUT_STATE_MACHINE_ARN", value)).transpose()?;
        Ok(Self { sync, fan_out })
    }
}

pub struct Tick<'a, O, P, X> {
    pub settings: &'a TargetSettings,
    pub home: &'a Target,
    pub organization: &'a O,
    pub passes: &'a P,
    pub starter: &'a X,
    pub workflows: &'a Workflows,
}

impl<O: Organization, P: TargetPasses, X: ExecutionStarter> Tick<'_, O, P, X> {
    /// Passes over every target (`TARGET_CONCURRENCY` at once) and starts one execution for
    /// the targets handed over. A pass that fails hands its target over: the workflow's run
    /// meets the error again and reports it. Passes still running at `deadline` (minus the
    /// time to start the execution) are given up and their targets handed over.
    pub async fn run(&self, scheduled_time: Option<&str>, deadline: Option<Instant>, now: i64) -> Result<TickReport> {
        let fan_out = FanOut { settings: self.settings, home: self.home, organization: self.organization };
        let targets = match self.workflows.fan_out {
            Some(_) => fan_out.targets().await?,
            None => vec![self.home.clone()],
        };
        let name = execution_name(scheduled_time, now);
        // Passes end their work by `work_until`; one still running at `cutoff` is dropped.
        let cutoff = deadline.map(|deadline| tokio::time::Instant::from_std(deadline) - START_MARGIN);
        let work_until = match cutoff {
            Some(cutoff) => cutoff.into_std() - PASS_MARGIN,
            None => Instant::now() + UNBOUNDED_PASS,
        };
        let concurrency = usize::try_from(self.settings.concurrency).unwrap_or(1).max(1);
        let named = self.workflows.fan_out.is_some();
        let passes: Vec<(Target, Pass)> = stream::iter(targets.iter().cloned())
            .map(|target| {
                let name = &name;
                async move {
                    let pass = self.passes.pass(&target, named, name, work_until, now);
                    let outcome = match cutoff {
                        Some(cutoff) => tokio::time::timeout_at(cutoff, pass)
                            .await
                            .unwrap_or_else(|_| Ok(Pass::HandOver("no time left in this tick".into()))),
                        None => pass.await,
                    };
                    let pass = outcome.unwrap_or_else(|error| {
                        tracing::warn!(%target, error_type = error.error_type(), %error, "pass failed; handed over");
                        Pass::HandOver(shorten(&format!("{}: {error}", error.error_type())))
                    });
                    (target, pass)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut handed_over = Vec::new();
        for (target, pass) in passes {
            match pass {
                Pass::Idle => {
                    if self.workflows.fan_out.is_some() {
                        telemetry::emit(&telemetry::target_failed_record(&target, false, now));
                    }
                }
                Pass::HandOver(reason) => {
                    tracing::info!(%target, reason, "handed over to the workflow");
                    handed_over.push(HandedOver { target, reason });
                }
            }
        }
        handed_over.sort_by(|a, b| a.target.cmp(&b.target));
        let execution = match handed_over.is_empty() {
            true => None,
            false => self.hand_over(&name, &handed_over).await?,
        };
        let handed_over_count = handed_over.len();
        handed_over.truncate(HANDED_OVER_IN_REPORT);
        let report = TickReport {
            targets: targets.len(),
            idle: targets.len() - handed_over_count,
            handed_over,
            handed_over_count,
            execution,
        };
        tracing::info!(targets = report.targets, idle = report.idle, handed_over = handed_over_count, "tick done");
        Ok(report)
    }

    /// One execution for every target handed over: the fan-out over them, or the sync workflow
    /// in a deployment of one target.
    async fn hand_over(&self, name: &str, handed_over: &[HandedOver]) -> Result<Option<String>> {
        let (state_machine, input) = match &self.workflows.fan_out {
            Some(fan_out) => {
                let targets = handed_over.iter().map(|h| h.target.clone()).collect();
                (fan_out, ExecutionInput { targets: Some(targets), ..ExecutionInput::default() })
            }
            None => (&self.workflows.sync, ExecutionInput::default()),
        };
        let input = serde_json::to_string(&input).map_err(|e| AgentError::invalid_input(e.to_string()))?;
        let started = self.starter.start(state_machine, name, &input).await?;
        match &started {
            Some(arn) => tracing::info!(execution = arn, "execution started"),
            None => tracing::info!(name, "this tick's execution was started before"),
        }
        Ok(started)
    }
}

/// The execution a tick starts is named after the tick (`tick-20261206T025100Z`), so that an
/// invocation repeated for the same scheduled time starts none (Step Functions keeps names
/// for 90 days); a tick invoked by hand is named after the second it ran.
pub fn execution_name(scheduled_time: Option<&str>, now: i64) -> String {
    let stamp: String =
        scheduled_time.unwrap_or_default().chars().filter(char::is_ascii_alphanumeric).take(40).collect();
    match stamp.is_empty() {
        true => format!("tick-{now}"),
        false => format!("tick-{stamp}"),
    }
}
