//! `list-changes`: what a branch must publish this run, in chunks, and the watermarks to commit
//! once it is published.
//!
//! Each stage is planned on its own: a stage whose planning fails for a reason of its own (a full
//! sync that would empty its runtime, a runtime the control plane does not know) is held back,
//! named in the output, and the other stages go on.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::aws::apigateway::{
    Api, ApiGateway, DeployedApi, DomainMapping, Generation, Stage, deployed_stage, routes_to,
};
use crate::aws::cloudtrail::{ApiEvent, ChangeFeed};
use crate::aws::executions::Executions;
use crate::aws::state::{
    CatalogEntry, Claim, ClaimOn, Discovery, RuntimeState, StateStore, WORK_TTL_SECONDS, applied_events_key,
    parse_pushed_entry, pushed_entry, snapshot_key,
};
use crate::changes::{ApiRef, AssetPlan, Touched, chunk_assets, events_to_remember, plan_assets, touched};
use crate::config::{Config, StageSelection};
use crate::control_plane::ControlPlane;
use crate::error::{AgentError, Result};
use crate::handlers::{AccountListing, Deployments, acquire, list_account};
use crate::mapping::published_api_id;
use crate::metrics::due_range;
use crate::model::{
    ChangeSummary, Chunk, Kind, ListChangesInput, ListChangesOutput, MetricsChunk, PushedEvent, Refused, RuntimeRef,
    RuntimeWindows, StageFailure, SyncMode, WatermarkUpdate, run_key,
};

/// The most metrics windows one Map iteration reads and sends: a whole catch-up of one runtime
/// at the default settings, and at one window per second well inside publish's time budget.
pub const WINDOWS_PER_METRICS_CHUNK: usize = 60;

/// The most refused APIs of a stage an incremental run tries again; the others wait for the
/// next runs (and every full sync tries them all).
pub const REFUSED_RETRIED_PER_RUN: usize = 100;

/// How long an execution with pushed events waits for a stage another execution holds (which
/// usually ends within seconds) before it leaves the events to the poll: [`Config::push_claim_wait`].
pub const PUSH_CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
const PUSH_CLAIM_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

/// The most pushed events a stage remembers as applied; beyond it the poll applies the oldest
/// again (idempotent, only slower). Far inside a DynamoDB item.
pub const PUSHED_REMEMBERED: usize = 2_000;

/// Where the full syncs of one run find what is deployed.
#[derive(Default)]
struct Listing {
    /// Whether a stored listing was looked for yet.
    looked_up: bool,
    /// The listing ensure-runtime (or a concurrent execution) stored moments ago.
    stored: Option<Discovery>,
    /// This run's own listing of the account, and when it was made.
    live: Option<(Deployments, i64)>,
    /// Another execution is listing the account: full syncs wait for the next run.
    listed_elsewhere: bool,
}

/// What incremental runs of several runtimes share: one CloudTrail read per window, one re-read
/// per touched API, one listing of the custom domain routes per management API.
#[derive(Default)]
struct Lookups {
    events_by_window: HashMap<(i64, i64), Vec<ApiEvent>>,
    /// The ids of the events earlier runs applied, by the key they are stored under.
    applied_before: HashMap<String, HashSet<String>>,
    /// The key under which this run stored the events it applied, per window end (`None`: none
    /// in the next window's overlap).
    applied_now: HashMap<i64, Option<String>>,
    current: HashMap<ApiRef, Option<(Api, Vec<Stage>)>>,
    mappings: HashMap<Generation, Vec<DomainMapping>>,
}

/// What the stages of one assets run share.
#[derive(Default)]
struct Shared {
    listing: Listing,
    lookups: Lookups,
}

/// One branch's work, before it is wrapped with the claims.
#[derive(Default)]
struct Listed {
    chunks: Vec<Chunk>,
    watermarks: Vec<WatermarkUpdate>,
    /// Stages left for the next run (another execution lists the account).
    deferred: Vec<String>,
    held_back: Vec<StageFailure>,
    summary: ChangeSummary,
    /// Set when only an idle pass was asked for and a stage has work: why.
    busy: Option<String>,
}

/// What one stage's assets branch does this run.
enum StagePlan {
    UpToDate,
    /// Its full sync waits for another execution's listing of the account.
    Deferred,
    Work(Box<StageWork>),
    /// An idle pass found work (why): it is left to the workflow.
    Busy(String),
}

/// One stage's assets work.
struct StageWork {
    upserts: Vec<DeployedApi>,
    deletes: Vec<String>,
    watermark: WatermarkUpdate,
    /// Refused APIs this run does not try again: kept for the next runs.
    carried: Vec<Refused>,
}

/// What [`ListChanges::run_if_idle`] found.
#[derive(Debug)]
pub enum IdleListing {
    /// Nothing to publish: the branch's output, whose watermarks the commit moves.
    Idle(ListChangesOutput),
    /// Work for the workflow, and why.
    Busy(String),
}

pub struct ListChanges<'a, G, C, S, F, E> {
    pub config: &'a Config,
    pub gateway: &'a G,
    pub control_plane: &'a C,
    pub state: &'a S,
    pub feed: &'a F,
    pub executions: &'a E,
}

impl<G: ApiGateway, C: ControlPlane, S: StateStore, F: ChangeFeed, E: Executions> ListChanges<'_, G, C, S, F, E> {
    pub async fn run(&self, input: ListChangesInput, now: i64) -> Result<ListChangesOutput> {
        let (claimed, skipped) = self.claim(&input, now).await?;
        let listed = self.list(&input, &claimed, false, now).await;
        self.finish(input, claimed, skipped, listed, now).await
    }

    /// The branch's work when it is idle: no chunk, only watermarks to commit (a quiet CloudTrail
    /// window, no metrics window due). `Busy`, with the claims given back and nothing written,
    /// as soon as a stage has more than that to do: a full sync, a change, a refusal to retry,
    /// windows due. What the tick does in-process instead of starting an execution.
    pub async fn run_if_idle(&self, input: ListChangesInput, now: i64) -> Result<IdleListing> {
        let (claimed, skipped) = self.claim(&input, now).await?;
        let mut listed = self.list(&input, &claimed, true, now).await;
        if let Ok(Listed { busy: reason @ Some(_), .. }) = &mut listed {
            let reason = reason.take().unwrap_or_default();
            tracing::info!(kind = ?input.kind, reason, "not idle: left to the workflow");
            self.give_back(&input, &claimed).await;
            return Ok(IdleListing::Busy(reason));
        }
        self.finish(input, claimed, skipped, listed, now).await.map(IdleListing::Idle)
    }

    async fn list(&self, input: &ListChangesInput, claimed: &[String], idle_only: bool, now: i64) -> Result<Listed> {
        let runtimes: Vec<&RuntimeRef> = input.runtimes.iter().filter(|r| claimed.contains(&r.stage)).collect();
        match input.kind {
            Kind::Assets => {
                self.assets(input.mode, &runtimes, &input.pushed, &input.execution_id, idle_only, now).await
            }
            Kind::Metrics => self.metrics(&runtimes, idle_only, now).await,
        }
    }

    /// The branch's output; on failure the claimed stages' runs are recorded as failed and
    /// their claims given back.
    async fn finish(
        &self,
        input: ListChangesInput,
        claimed: Vec<String>,
        mut skipped: Vec<String>,
        listed: Result<Listed>,
        now: i64,
    ) -> Result<ListChangesOutput> {
        match listed {
            Ok(Listed { mut chunks, watermarks, deferred, held_back, summary, busy: _ }) => {
                skipped.extend(deferred);
                for chunk in &mut chunks {
                    chunk.set_target(input.target.clone());
                }
                Ok(ListChangesOutput {
                    target: input.target.clone(),
                    kind: input.kind,
                    chunks,
                    watermarks,
                    claimed,
                    skipped,
                    held_back,
                    summary,
                })
            }
            Err(error) => {
                for stage in &claimed {
                    if let Err(error) = self.state.record_outcome(stage, input.kind, false, now).await {
                        tracing::warn!(stage, %error, "failed run not recorded; the heartbeat may say active");
                    }
                }
                self.give_back(&input, &claimed).await;
                Err(error)
            }
        }
    }

    /// On failure the workflow does not know the claims yet, so this task releases them itself;
    /// the tick, too, for a branch it leaves to the workflow.
    pub(crate) async fn give_back(&self, input: &ListChangesInput, claimed: &[String]) {
        for stage in claimed {
            let on = ClaimOn::Branch { stage, kind: input.kind };
            if let Err(error) = self.state.release(on, &input.execution_id).await {
                tracing::warn!(stage, %error, "claim not released; it expires by itself");
            }
        }
    }

    /// Claims each runtime's stage for this branch; stages an overlapping execution holds are
    /// skipped this run, unless that execution has ended (its claim is then taken over).
    async fn claim(&self, input: &ListChangesInput, now: i64) -> Result<(Vec<String>, Vec<String>)> {
        let (mut claimed, mut skipped) = (Vec::new(), Vec::new());
        let ttl = self.config.claim_ttl.as_secs() as i64;
        // Pushed events are worth a short wait: the holder usually ends within seconds, and the
        // poll would apply them only minutes later.
        let mut wait_left = match input.pushed.is_empty() {
            true => std::time::Duration::ZERO,
            false => self.config.push_claim_wait,
        };
        let mut waited = 0;
        for runtime in &input.runtimes {
            let on = ClaimOn::Branch { stage: &runtime.stage, kind: input.kind };
            let mut acquired = acquire(self.state, self.executions, on, &input.execution_id, now + waited, ttl).await;
            while matches!(acquired, Ok(Claim::HeldBy(_))) && !wait_left.is_zero() {
                tracing::info!(
                    stage = runtime.stage,
                    "another execution holds the stage; waiting for it with pushed events"
                );
                let pause = PUSH_CLAIM_RETRY.min(wait_left);
                // Real time: the holder is another execution.
                tokio::time::sleep(pause).await;
                wait_left -= pause;
                waited += pause.as_secs() as i64;
                acquired = acquire(self.state, self.executions, on, &input.execution_id, now + waited, ttl).await;
            }
            match acquired {
                Ok(Claim::Taken) => claimed.push(runtime.stage.clone()),
                Ok(Claim::HeldBy(_)) => {
                    tracing::info!(stage = runtime.stage, kind = ?input.kind, "another execution holds the stage; skipped");
                    skipped.push(runtime.stage.clone());
                }
                Err(error) => {
                    self.give_back(input, &claimed).await;
                    return Err(error);
                }
            }
        }
        Ok((claimed, skipped))
    }

    async fn assets(
        &self,
        mode: SyncMode,
        runtimes: &[&RuntimeRef],
        pushed: &[PushedEvent],
        execution_id: &str,
        idle_only: bool,
        now: i64,
    ) -> Result<Listed> {
        let mut output = Listed::default();
        // Shared across runtimes: one listing of the account, one CloudTrail read per window,
        // one GetStages and one GetApi per touched API.
        let mut shared = Shared::default();
        for runtime in runtimes {
            let stage = &runtime.stage;
            let planned = self.stage_work(runtime, mode, pushed, execution_id, idle_only, &mut shared, now).await;
            let work = match planned {
                Ok(StagePlan::Work(work)) => work,
                Ok(StagePlan::UpToDate) => continue,
                Ok(StagePlan::Busy(reason)) => {
                    output.busy = Some(format!("stage {stage}: {reason}"));
                    return Ok(output);
                }
                Ok(StagePlan::Deferred) => {
                    output.deferred.push(stage.clone());
                    continue;
                }
                Err(error) if error.is_stage_scoped() => {
                    tracing::warn!(stage, error_type = error.error_type(), %error, "stage held back; the others go on");
                    let cause = error.to_string();
                    output.held_back.push(StageFailure {
                        stage: stage.clone(),
                        error: error.error_type().into(),
                        cause,
                    });
                    continue;
                }
                Err(error) => return Err(error),
            };
            let StageWork { upserts, deletes, mut watermark, carried } = *work;
            match (watermark.full_sync_at, watermark.pushed_only) {
                (Some(_), _) => output.summary.full_runtimes += 1,
                (None, false) => output.summary.incremental_runtimes += 1,
                (None, true) => {}
            }
            output.summary.pushed_events += watermark.pushed.len();
            output.summary.upserts += upserts.len();
            output.summary.deletes += deletes.len();
            let run = run_key(Kind::Assets, execution_id, stage);
            let chunks = chunk_assets(&runtime.runtime_id, stage, &run, upserts, deletes, self.config.chunk_size);
            watermark.chunks = chunks.len();
            if !chunks.is_empty() || !carried.is_empty() {
                self.state.start_run(&run, &carried, now + WORK_TTL_SECONDS).await?;
                watermark.run = Some(run);
            }
            for (index, (mut chunk, apis)) in chunks.into_iter().enumerate() {
                if !apis.is_empty() {
                    let key = snapshot_key(execution_id, stage, index);
                    self.state.put_snapshot(&key, &apis, now + WORK_TTL_SECONDS).await?;
                    chunk.snapshot = Some(key);
                }
                output.chunks.push(Chunk::Assets(chunk));
            }
            output.watermarks.push(watermark);
        }
        Ok(output)
    }

    /// What one stage publishes this run.
    #[allow(clippy::too_many_arguments)]
    async fn stage_work(
        &self,
        runtime: &RuntimeRef,
        mode: SyncMode,
        pushed: &[PushedEvent],
        execution_id: &str,
        idle_only: bool,
        shared: &mut Shared,
        now: i64,
    ) -> Result<StagePlan> {
        let Shared { listing, lookups } = shared;
        let stage = &runtime.stage;
        let state = self.state.load(stage).await?;
        let mut plan = plan_assets(mode, &state, now, self.config.change_timing());
        let mut window = Touched::default();
        if let AssetPlan::Incremental { start, end } = plan {
            window = self.unapplied_changes(lookups, stage, &state, start, end).await?;
            if window.needs_listing() {
                // What such a record changed is unknown: listing the stage finds it.
                tracing::warn!(stage, start, end, "CloudTrail record that locates no change; full sync instead");
                plan = AssetPlan::Full { position: end };
            }
        }
        // A full sync reads everything anyway; otherwise the pushed events not applied yet join
        // the window, or make the stage's work on their own.
        let (pushed_touched, pushed_applied) = match (plan, pushed.is_empty()) {
            (AssetPlan::Full { .. }, _) | (_, true) => (Touched::default(), Vec::new()),
            _ => self.unapplied_pushed(lookups, stage, &state, pushed).await?,
        };
        window.apis.extend(pushed_touched.apis);
        window.domains.extend(pushed_touched.domains);
        if plan == AssetPlan::UpToDate && !pushed_applied.is_empty() {
            let work = self.pushed_work(lookups, stage, &state, window, pushed_applied).await?;
            return Ok(StagePlan::Work(Box::new(work)));
        }
        if idle_only && let Some(reason) = busy_reason(&plan, &window, &state) {
            return Ok(StagePlan::Busy(reason));
        }
        let work = match plan {
            AssetPlan::UpToDate => return Ok(StagePlan::UpToDate),
            AssetPlan::Full { position } => {
                let Some((deployed, listed_at)) = self.deployed_on(listing, stage, &state, execution_id, now).await?
                else {
                    return Ok(StagePlan::Deferred);
                };
                let deletes = self.stale_apis(runtime, &deployed).await?;
                self.update_catalog(stage, Vec::new(), &deployed, &deletes).await?;
                StageWork {
                    upserts: deployed,
                    deletes,
                    // Changes made after the listing are read by the next incremental window.
                    watermark: WatermarkUpdate {
                        stage: stage.clone(),
                        position: position.min(listed_at),
                        full_sync_at: Some(now),
                        read_at: Some(listed_at),
                        ..WatermarkUpdate::at(stage, position)
                    },
                    // A full sync tries every API again.
                    carried: Vec::new(),
                }
            }
            AssetPlan::Incremental { start, end } => {
                let retried = state.assets_refused.len().min(REFUSED_RETRIED_PER_RUN);
                let (retry, carried) = state.assets_refused.split_at(retried);
                let (upserts, deletes) = match window.apis.is_empty() && window.domains.is_empty() && retry.is_empty() {
                    // An idle window: nothing to read, not even the catalog.
                    true => (Vec::new(), Vec::new()),
                    false => {
                        let catalog = self.state.load_catalog(stage).await?;
                        let changed = self.changed_on(lookups, stage, window, catalog.as_deref(), retry).await?;
                        // Before the first full sync there is no catalog to patch.
                        if let Some(catalog) = catalog.filter(|_| !changed.0.is_empty() || !changed.1.is_empty()) {
                            self.update_catalog(stage, catalog, &changed.0, &changed.1).await?;
                        }
                        changed
                    }
                };
                let applied_events = self.remember_applied(lookups, execution_id, start, end, now).await?;
                // What no window reads again is forgotten: the next one starts `overlap` before `end`.
                let kept_from = end - self.config.change_overlap.as_secs() as i64;
                let forget_pushed = state
                    .assets_pushed
                    .iter()
                    .filter(|entry| parse_pushed_entry(entry).is_none_or(|(time, _)| time < kept_from))
                    .cloned()
                    .collect();
                StageWork {
                    upserts,
                    deletes,
                    watermark: WatermarkUpdate {
                        read_at: Some(now),
                        applied_events,
                        pushed: remembered(&pushed_applied, kept_from, &state),
                        forget_pushed,
                        ..WatermarkUpdate::at(stage, end)
                    },
                    carried: carried.to_vec(),
                }
            }
        };
        Ok(StagePlan::Work(Box::new(work)))
    }

    /// What changed on `stage` in a CloudTrail window, and what the control plane refused before
    /// (`retry`): the current state of every API they name, as an upsert when it is deployed to
    /// the stage and as a delete when it is gone from it. A delete goes only where the API was
    /// published (the stage's catalog, or a refusal to retry), not to every stage of the account.
    async fn changed_on(
        &self,
        lookups: &mut Lookups,
        stage: &str,
        window: Touched,
        catalog: Option<&[CatalogEntry]>,
        retry: &[Refused],
    ) -> Result<(Vec<DeployedApi>, Vec<String>)> {
        // The catalog's entries by the id they are published under.
        let in_catalog: Option<HashMap<String, &CatalogEntry>> =
            catalog.map(|entries| entries.iter().map(|e| (published_api_id(&e.id, stage), e)).collect());
        let published = |id: &str| {
            in_catalog.as_ref().is_none_or(|entries| entries.contains_key(id)) || retry.iter().any(|r| r.id == id)
        };
        let mut refs = window.apis;
        if !window.domains.is_empty() {
            refs.extend(self.routed_by(lookups, &window.domains, stage, catalog).await?);
        }
        let mut deletes = BTreeSet::new();
        for refused in retry {
            match in_catalog.as_ref().and_then(|entries| entries.get(&refused.id)) {
                // Read again: published now if it is still deployed, else removed.
                Some(entry) => {
                    refs.insert(ApiRef { generation: entry.kind.generation(), id: entry.id.clone() });
                }
                // Not deployed to the stage, as far as the catalog knows: removing it is the retry.
                None => {
                    deletes.insert(refused.id.clone());
                }
            }
        }
        let mut upserts = vec![];
        for api_ref in refs {
            if let Entry::Vacant(entry) = lookups.current.entry(api_ref.clone()) {
                entry.insert(self.current_state(&api_ref).await?);
            }
            let on_stage = lookups.current[&api_ref].as_ref().map(|(api, stages)| (api, deployed_stage(stages, stage)));
            match on_stage {
                // A kind not federated is neither published nor removed here; a full sync removes it.
                Some((api, _)) if !self.config.api_types.includes(api.kind) => {}
                Some((api, Some(deployed))) => {
                    let (api, deployed) = (api.clone(), deployed.clone());
                    let mappings = self.mappings(lookups, api_ref.generation).await?;
                    let domains = routes_to(mappings, &api.id, stage);
                    deletes.remove(&published_api_id(&api.id, stage));
                    upserts.push(DeployedApi { api, stage: deployed, domains });
                }
                Some((_, None)) | None => {
                    let id = published_api_id(&api_ref.id, stage);
                    if published(&id) {
                        deletes.insert(id);
                    }
                }
            }
        }
        Ok((upserts, deletes.into_iter().collect()))
    }

    /// The pushed events not applied to `stage` yet (by an earlier push, or by a CloudTrail window
    /// within its overlap), what they touch, and their entries to remember once published. An event
    /// that does not locate its change is left to the poll, which lists the stage for it.
    async fn unapplied_pushed(
        &self,
        lookups: &mut Lookups,
        stage: &str,
        state: &RuntimeState,
        pushed: &[PushedEvent],
    ) -> Result<(Touched, Vec<(i64, String)>)> {
        let applied_by_window = self.applied_before(lookups, stage, state).await?;
        let applied_by_push = pushed_ids(state);
        let generations = self.config.api_types.generations();
        let mut touched_all = Touched::default();
        let mut applied = Vec::new();
        for event in pushed {
            if applied_by_push.contains(event.id.as_str()) || applied_by_window.contains(&event.id) {
                tracing::info!(stage, event = event.id, "pushed event applied before; skipped");
                continue;
            }
            let touched = touched([&event.to_api_event()], &generations);
            if touched.needs_listing() {
                tracing::info!(
                    stage,
                    event = event.id,
                    name = event.name,
                    "pushed event locates no change: left to the poll"
                );
                continue;
            }
            touched_all.apis.extend(touched.apis);
            touched_all.domains.extend(touched.domains);
            applied.push((event.time, event.id.clone()));
        }
        Ok((touched_all, applied))
    }

    /// A stage's work when only pushed events are due (CloudTrail is not read this run): their
    /// APIs re-read and published; the watermark stays, and the events are remembered with the
    /// commit so that the poll reading them later skips them.
    async fn pushed_work(
        &self,
        lookups: &mut Lookups,
        stage: &str,
        state: &RuntimeState,
        window: Touched,
        applied: Vec<(i64, String)>,
    ) -> Result<StageWork> {
        let catalog = self.state.load_catalog(stage).await?;
        let (upserts, deletes) = self.changed_on(lookups, stage, window, catalog.as_deref(), &[]).await?;
        if let Some(catalog) = catalog.filter(|_| !upserts.is_empty() || !deletes.is_empty()) {
            self.update_catalog(stage, catalog, &upserts, &deletes).await?;
        }
        let position = state.assets_watermark.unwrap_or_default();
        let kept_from = position - self.config.change_overlap.as_secs() as i64;
        Ok(StageWork {
            upserts,
            deletes,
            watermark: WatermarkUpdate {
                pushed: remembered(&applied, kept_from, state),
                pushed_only: true,
                ..WatermarkUpdate::at(stage, position)
            },
            // The refused APIs stay as they are: the poll retries them.
            carried: Vec::new(),
        })
    }

    /// The ids of the events an earlier run applied in the overlap the stage's next window
    /// re-reads, loaded once per run.
    async fn applied_before(
        &self,
        lookups: &mut Lookups,
        stage: &str,
        state: &RuntimeState,
    ) -> Result<HashSet<String>> {
        let Some(key) = &state.assets_applied_events else { return Ok(HashSet::new()) };
        if let Entry::Vacant(entry) = lookups.applied_before.entry(key.clone()) {
            let ids = self.state.load_applied_events(key).await?.unwrap_or_else(|| {
                tracing::info!(stage, key, "the applied events expired; the overlap is applied again");
                Vec::new()
            });
            entry.insert(ids.into_iter().collect());
        }
        Ok(lookups.applied_before[key].clone())
    }

    /// What the write events of `[start, end)` (read from CloudTrail once per run) touched,
    /// leaving out those an earlier run applied to the stage: the window re-reads the previous
    /// one's last minutes (its overlap) only for the events CloudTrail delivered late.
    async fn unapplied_changes(
        &self,
        lookups: &mut Lookups,
        stage: &str,
        state: &RuntimeState,
        start: i64,
        end: i64,
    ) -> Result<Touched> {
        if let Entry::Vacant(entry) = lookups.events_by_window.entry((start, end)) {
            entry.insert(self.feed.write_events(start, end).await?);
        }
        let applied_by_window = self.applied_before(lookups, stage, state).await?;
        let applied_by_push = pushed_ids(state);
        let (fresh, applied): (Vec<&ApiEvent>, Vec<&ApiEvent>) = lookups.events_by_window[&(start, end)]
            .iter()
            .partition(|event| !applied_by_window.contains(&event.id) && !applied_by_push.contains(event.id.as_str()));
        if !applied.is_empty() {
            tracing::info!(
                stage,
                events = applied.len(),
                "events already applied by an earlier run or by push; skipped"
            );
        }
        Ok(touched(fresh, &self.config.api_types.generations()))
    }

    /// Stores, once per window end, the ids of the window's events that the next window
    /// re-reads; their key is committed with the watermark.
    async fn remember_applied(
        &self,
        lookups: &mut Lookups,
        execution_id: &str,
        start: i64,
        end: i64,
        now: i64,
    ) -> Result<Option<String>> {
        if let Some(key) = lookups.applied_now.get(&end) {
            return Ok(key.clone());
        }
        let overlap = self.config.change_timing().overlap;
        let ids = events_to_remember(&lookups.events_by_window[&(start, end)], end, overlap);
        let key = match ids.is_empty() {
            true => None,
            false => {
                let key = applied_events_key(execution_id, end);
                self.state.put_applied_events(&key, &ids, now + WORK_TTL_SECONDS).await?;
                Some(key)
            }
        };
        lookups.applied_now.insert(end, key.clone());
        Ok(key)
    }

    /// The APIs a change of the `domains` may concern on `stage`: those the catalog says they
    /// routed to, and those they route to now.
    async fn routed_by(
        &self,
        lookups: &mut Lookups,
        domains: &BTreeSet<String>,
        stage: &str,
        catalog: Option<&[CatalogEntry]>,
    ) -> Result<Vec<ApiRef>> {
        let mut refs = Vec::new();
        for entry in catalog.unwrap_or_default() {
            if entry.domains.iter().any(|d| domains.contains(d)) {
                refs.push(ApiRef { generation: entry.kind.generation(), id: entry.id.clone() });
            }
        }
        for generation in self.config.api_types.generations() {
            for mapping in self.mappings(lookups, generation).await? {
                if mapping.stage == stage && domains.contains(&mapping.route.domain_name) {
                    refs.push(ApiRef { generation, id: mapping.api_id.clone() });
                }
            }
        }
        Ok(refs)
    }

    /// The custom domain routes of one management API, listed once per run.
    async fn mappings<'l>(&self, lookups: &'l mut Lookups, generation: Generation) -> Result<&'l [DomainMapping]> {
        if let Entry::Vacant(entry) = lookups.mappings.entry(generation) {
            entry.insert(self.gateway.list_domain_mappings(generation).await?);
        }
        Ok(&lookups.mappings[&generation])
    }

    /// The APIs deployed to `stage` and when they were listed: from the listing this execution's
    /// ensure-runtime stored for its full syncs when it is newer than what the control plane holds
    /// for the stage (a listing older than the changes applied since would undo them), else from
    /// one listing of the account shared by every runtime of the run. `None` while another
    /// execution lists the account: the full sync waits for the next run rather than list it too.
    async fn deployed_on(
        &self,
        listing: &mut Listing,
        stage: &str,
        state: &RuntimeState,
        execution_id: &str,
        now: i64,
    ) -> Result<Option<(Vec<DeployedApi>, i64)>> {
        if !listing.looked_up {
            listing.looked_up = true;
            if self.config.stages == StageSelection::All {
                listing.stored = self
                    .state
                    .load_discovery()
                    .await?
                    .filter(|d| !d.listing_parts.is_empty() && d.execution_id == execution_id);
            }
        }
        if let Some(discovery) =
            listing.stored.as_ref().filter(|d| state.assets_read_at.is_none_or(|read| d.at >= read))
            && let Some(deployed) = super::stored_deployments(self.state, discovery, stage).await
        {
            return Ok(Some((deployed, discovery.at)));
        }
        if listing.live.is_none() && !listing.listed_elsewhere {
            let types = &self.config.api_types;
            match list_account(self.gateway, self.state, self.executions, types, execution_id, now).await? {
                AccountListing::Listed(listed) => {
                    if self.config.stages == StageSelection::All {
                        // A by-product: ensure-runtime reuses it instead of listing the account again.
                        super::save_discovery(self.state, &listed, execution_id, now, false).await?;
                    }
                    listing.live = Some((listed, now));
                }
                AccountListing::ListedElsewhere(_) => listing.listed_elsewhere = true,
            }
        }
        Ok(listing.live.as_ref().map(|(listed, at)| (listed.get(stage).cloned().unwrap_or_default(), *at)))
    }

    /// Keeps the stage's API catalog (read by the metrics branch) current: `base` (empty for a
    /// full sync, the stored catalog otherwise) with the APIs this run touched.
    async fn update_catalog(
        &self,
        stage: &str,
        mut catalog: Vec<CatalogEntry>,
        upserts: &[DeployedApi],
        deletes: &[String],
    ) -> Result<()> {
        let touched: BTreeSet<String> =
            upserts.iter().map(|d| published_api_id(&d.api.id, stage)).chain(deletes.iter().cloned()).collect();
        catalog.retain(|entry| !touched.contains(&published_api_id(&entry.id, stage)));
        catalog.extend(upserts.iter().map(|d| CatalogEntry {
            id: d.api.id.clone(),
            kind: d.api.kind,
            name: d.api.name.clone(),
            deployment: d.stage.deployment_id.clone(),
            domains: d.domains.iter().map(|route| route.domain_name.clone()).collect(),
        }));
        catalog.sort_by(|a, b| a.id.cmp(&b.id));
        self.state.put_catalog(stage, &catalog).await
    }

    /// A touched API's current state: `None` when it no longer exists (or has no deployed stage).
    async fn current_state(&self, api: &ApiRef) -> Result<Option<(Api, Vec<Stage>)>> {
        let stages = self.gateway.get_stages(api.generation, &api.id).await?;
        if !stages.iter().any(|s| s.deployment_id.is_some()) {
            return Ok(None);
        }
        Ok(self.gateway.get_api(api.generation, &api.id).await?.map(|found| (found, stages)))
    }

    /// APIs the control plane holds for the runtime that are no longer deployed to its stage.
    /// Refuses to empty a runtime on the strength of an empty listing unless allowed.
    async fn stale_apis(&self, runtime: &RuntimeRef, deployed: &[DeployedApi]) -> Result<Vec<String>> {
        let current: BTreeSet<String> = deployed.iter().map(|d| published_api_id(&d.api.id, &runtime.stage)).collect();
        let stale: Vec<String> = self
            .control_plane
            .list_api_ids(&runtime.runtime_id)
            .await?
            .into_iter()
            .filter(|id| !current.contains(id))
            .collect();
        if deployed.is_empty() && !stale.is_empty() && !self.config.allow_empty_listing_deletes {
            return Err(AgentError::UnsafeDeletion { runtime_id: runtime.runtime_id.clone(), count: stale.len() });
        }
        Ok(stale)
    }

    /// Each runtime's due windows, runtimes grouped into chunks of at most
    /// [`WINDOWS_PER_METRICS_CHUNK`] windows: a catch-up over hundreds of runtimes takes a few
    /// Map iterations, not one per runtime and window. The watermarks are the positions publish
    /// is expected to reach; it records each window itself as the control plane accepts it.
    ///
    /// Windows are read only up to the stage's assets watermark, before which its API catalog
    /// names every API deployed: a stage not synced yet waits for its first full sync, so an
    /// API's traffic is never left out because the catalog does not know the API yet.
    async fn metrics(&self, runtimes: &[&RuntimeRef], idle_only: bool, now: i64) -> Result<Listed> {
        let mut output = Listed::default();
        let timing = self.config.window_timing();
        let mut open = MetricsChunk { target: None, runtimes: vec![] };
        let mut open_windows = 0;
        for runtime in runtimes {
            let state = self.state.load(&runtime.stage).await?;
            let Some(covered_until) = state.assets_watermark else {
                tracing::info!(stage = runtime.stage, "no API catalog yet: the metrics wait for the first assets sync");
                continue;
            };
            let Some((start, end)) = due_range(state.metrics_watermark, now, covered_until, timing) else { continue };
            if idle_only {
                output.busy = Some(format!("stage {}: metrics windows due", runtime.stage));
                return Ok(output);
            }
            let due = RuntimeWindows {
                runtime_id: runtime.runtime_id.clone(),
                stage: runtime.stage.clone(),
                start,
                end,
                interval: timing.interval,
                reports_stored: false,
            };
            let windows = due.windows().len();
            if !open.runtimes.is_empty() && open_windows + windows > WINDOWS_PER_METRICS_CHUNK {
                output.chunks.push(Chunk::Metrics(std::mem::replace(
                    &mut open,
                    MetricsChunk { target: None, runtimes: vec![] },
                )));
                open_windows = 0;
            }
            open.runtimes.push(due);
            open_windows += windows;
            output.summary.windows += windows;
            output.watermarks.push(WatermarkUpdate::at(&runtime.stage, end));
        }
        if !open.runtimes.is_empty() {
            output.chunks.push(Chunk::Metrics(open));
        }
        Ok(output)
    }
}

/// The ids of the pushed events the stage remembers as applied.
fn pushed_ids(state: &RuntimeState) -> HashSet<&str> {
    state.assets_pushed.iter().filter_map(|entry| parse_pushed_entry(entry)).map(|(_, id)| id).collect()
}

/// The entries of the pushed events applied that a CloudTrail window may still read (at or
/// after `kept_from`), within what the stage remembers at most.
fn remembered(applied: &[(i64, String)], kept_from: i64, state: &RuntimeState) -> Vec<String> {
    let room = PUSHED_REMEMBERED.saturating_sub(state.assets_pushed.len());
    let mut entries: Vec<&(i64, String)> = applied.iter().filter(|(time, _)| *time >= kept_from).collect();
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    if entries.len() > room {
        tracing::warn!(left = entries.len() - room, "too many pushed events to remember; the poll applies them again");
    }
    entries.into_iter().take(room).map(|(time, id)| pushed_entry(*time, id)).collect()
}

/// Why a stage's assets are more than an idle window's commit, if they are: a full sync, a
/// CloudTrail write event to apply, or a refused API to try again.
fn busy_reason(plan: &AssetPlan, window: &Touched, state: &RuntimeState) -> Option<String> {
    match plan {
        AssetPlan::Full { .. } => Some("full sync due".into()),
        AssetPlan::UpToDate => None,
        AssetPlan::Incremental { .. } if !window.apis.is_empty() || !window.domains.is_empty() => {
            Some("changes in CloudTrail".into())
        }
        AssetPlan::Incremental { .. } if !state.assets_refused.is_empty() => Some("refused APIs to retry".into()),
        AssetPlan::Incremental { .. } => None,
    }
}
