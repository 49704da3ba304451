//! `list-changes`: what a branch must publish this run, in chunks, and the watermarks to commit
//! once it is published.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::aws::apigateway::{
    Api, ApiGateway, DeployedApi, DomainMapping, Generation, Stage, deployed_stage, routes_to,
};
use crate::aws::cloudtrail::{ApiEvent, ChangeFeed};
use crate::aws::executions::Executions;
use crate::aws::state::{
    CatalogEntry, Claim, Discovery, LISTING_REUSE_SECONDS, RuntimeState, StateStore, applied_events_key, snapshot_key,
};
use crate::changes::{ApiRef, AssetPlan, Touched, chunk_assets, events_to_remember, plan_assets, touched};
use crate::config::{Config, StageSelection};
use crate::control_plane::ControlPlane;
use crate::error::{AgentError, Result};
use crate::handlers::Deployments;
use crate::mapping::published_api_id;
use crate::metrics::due_range;
use crate::model::{
    ChangeSummary, Chunk, Kind, ListChangesInput, ListChangesOutput, MetricsChunk, RuntimeRef, RuntimeWindows,
    SyncMode, WatermarkUpdate,
};

/// Snapshots outlive the longest execution (an hour) by far, and then expire by the table's TTL;
/// so do the applied events, read by the next run (an older watermark re-applies its overlap).
const SNAPSHOT_TTL_SECONDS: i64 = 86_400;

/// The most metrics windows one Map iteration reads and sends: a whole catch-up of one runtime
/// at the default settings, and at one window per second well inside publish's time budget.
pub const WINDOWS_PER_METRICS_CHUNK: usize = 60;

/// Where the full syncs of one run find what is deployed.
#[derive(Default)]
struct Listing {
    /// Whether a stored listing was looked for yet.
    looked_up: bool,
    /// The listing ensure-runtime stored moments ago.
    stored: Option<Discovery>,
    /// This run's own listing of the account, and when it was made.
    live: Option<(Deployments, i64)>,
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

/// One branch's work, before it is wrapped with the claims.
#[derive(Default)]
struct Listed {
    chunks: Vec<Chunk>,
    watermarks: Vec<WatermarkUpdate>,
    summary: ChangeSummary,
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
        let runtimes: Vec<&RuntimeRef> = input.runtimes.iter().filter(|r| claimed.contains(&r.stage)).collect();
        let listed = match input.kind {
            Kind::Assets => self.assets(input.mode, &runtimes, &input.execution_id, now).await,
            Kind::Metrics => self.metrics(&runtimes, now).await,
        };
        match listed {
            Ok(Listed { chunks, watermarks, summary }) => {
                Ok(ListChangesOutput { kind: input.kind, chunks, watermarks, claimed, skipped, summary })
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

    /// On failure the workflow does not know the claims yet, so this task releases them itself.
    async fn give_back(&self, input: &ListChangesInput, claimed: &[String]) {
        for stage in claimed {
            if let Err(error) = self.state.release(stage, input.kind, &input.execution_id).await {
                tracing::warn!(stage, %error, "claim not released; it expires by itself");
            }
        }
    }

    /// Claims each runtime's stage for this branch; stages an overlapping execution holds are
    /// skipped this run, unless that execution has ended (its claim is then taken over).
    async fn claim(&self, input: &ListChangesInput, now: i64) -> Result<(Vec<String>, Vec<String>)> {
        let (mut claimed, mut skipped) = (Vec::new(), Vec::new());
        for runtime in &input.runtimes {
            match self.claim_stage(input, &runtime.stage, now).await {
                Ok(true) => claimed.push(runtime.stage.clone()),
                Ok(false) => {
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

    async fn claim_stage(&self, input: &ListChangesInput, stage: &str, now: i64) -> Result<bool> {
        let expires_at = now + self.config.claim_ttl.as_secs() as i64;
        let (kind, me) = (input.kind, input.execution_id.as_str());
        let holder = match self.state.claim(stage, kind, me, now, expires_at).await? {
            Claim::Taken => return Ok(true),
            Claim::HeldBy(Some(holder)) => holder,
            // Released between the claim and the read: the next run takes it.
            Claim::HeldBy(None) => return Ok(false),
        };
        // Unknown status (e.g. an Express execution, which DescribeExecution does not serve):
        // the claim stands until it expires.
        let running = self.executions.is_running(&holder).await.unwrap_or_else(|error| {
            tracing::warn!(stage, holder, %error, "cannot tell whether the claim's holder still runs");
            true
        });
        if running {
            return Ok(false);
        }
        tracing::info!(stage, holder, "the execution holding the claim has ended; taking it over");
        self.state.take_over(stage, kind, &holder, me, expires_at).await
    }

    async fn assets(&self, mode: SyncMode, runtimes: &[&RuntimeRef], execution_id: &str, now: i64) -> Result<Listed> {
        let mut output = Listed::default();
        // Shared across runtimes: one listing of the account, one CloudTrail read per window,
        // one GetStages and one GetApi per touched API.
        let mut listing = Listing::default();
        let mut lookups = Lookups::default();

        for runtime in runtimes {
            let state = self.state.load(&runtime.stage).await?;
            let mut plan = plan_assets(mode, &state, now, self.config.change_timing());
            let mut window = Touched::default();
            if let AssetPlan::Incremental { start, end } = plan {
                window = self.unapplied_changes(&mut lookups, &runtime.stage, &state, start, end).await?;
                if window.unreadable > 0 {
                    // What an unreadable record changed is unknown: listing the stage finds it.
                    tracing::warn!(
                        stage = runtime.stage,
                        start,
                        end,
                        "unreadable CloudTrail record; full sync instead"
                    );
                    plan = AssetPlan::Full { position: end };
                }
            }
            let (upserts, deletes, watermark) = match plan {
                AssetPlan::UpToDate => continue,
                AssetPlan::Full { position } => {
                    let (deployed, listed_at) = self.deployed_on(&mut listing, &runtime.stage, now).await?;
                    // Changes made after the listing are read by the next incremental window.
                    let position = position.min(listed_at);
                    let deletes = self.stale_apis(runtime, &deployed).await?;
                    output.summary.full_runtimes += 1;
                    (
                        deployed,
                        deletes,
                        WatermarkUpdate {
                            stage: runtime.stage.clone(),
                            position,
                            full_sync_at: Some(now),
                            applied_events: None,
                        },
                    )
                }
                AssetPlan::Incremental { start, end } => {
                    let (upserts, deletes) = self.changed_on(&mut lookups, &runtime.stage, window).await?;
                    let applied_events = self.remember_applied(&mut lookups, execution_id, start, end, now).await?;
                    output.summary.incremental_runtimes += 1;
                    (
                        upserts,
                        deletes,
                        WatermarkUpdate {
                            stage: runtime.stage.clone(),
                            position: end,
                            full_sync_at: None,
                            applied_events,
                        },
                    )
                }
            };
            self.update_catalog(&runtime.stage, &upserts, &deletes, watermark.full_sync_at.is_some()).await?;
            output.summary.upserts += upserts.len();
            output.summary.deletes += deletes.len();
            let chunks = chunk_assets(&runtime.runtime_id, &runtime.stage, upserts, deletes, self.config.chunk_size);
            for (index, (mut chunk, apis)) in chunks.into_iter().enumerate() {
                if !apis.is_empty() {
                    let key = snapshot_key(execution_id, &runtime.stage, index);
                    self.state.put_snapshot(&key, &apis, now + SNAPSHOT_TTL_SECONDS).await?;
                    chunk.snapshot = Some(key);
                }
                output.chunks.push(Chunk::Assets(chunk));
            }
            output.watermarks.push(watermark);
        }
        Ok(output)
    }

    /// What changed on `stage` in a CloudTrail window: the current state of every API its
    /// events touched, as an upsert when it is deployed to the stage and as a delete when it is
    /// gone from it (deleting an absent API is a no-op).
    async fn changed_on(
        &self,
        lookups: &mut Lookups,
        stage: &str,
        window: Touched,
    ) -> Result<(Vec<DeployedApi>, Vec<String>)> {
        let mut refs = window.apis;
        if !window.domains.is_empty() {
            refs.extend(self.routed_by(lookups, &window.domains, stage).await?);
        }
        let (mut upserts, mut deletes) = (vec![], vec![]);
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
                    upserts.push(DeployedApi { api, stage: deployed, domains });
                }
                Some((_, None)) | None => deletes.push(published_api_id(&api_ref.id, stage)),
            }
        }
        Ok((upserts, deletes))
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
        if let Some(key) = &state.assets_applied_events
            && let Entry::Vacant(entry) = lookups.applied_before.entry(key.clone())
        {
            let ids = self.state.load_applied_events(key).await?.unwrap_or_else(|| {
                tracing::info!(stage, key, "the applied events expired; the overlap is applied again");
                Vec::new()
            });
            entry.insert(ids.into_iter().collect());
        }
        let applied = state.assets_applied_events.as_ref().and_then(|key| lookups.applied_before.get(key));
        let (fresh, applied): (Vec<&ApiEvent>, Vec<&ApiEvent>) = lookups.events_by_window[&(start, end)]
            .iter()
            .partition(|event| !applied.is_some_and(|ids| ids.contains(&event.id)));
        if !applied.is_empty() {
            tracing::info!(stage, events = applied.len(), "events already applied by an earlier run; skipped");
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
                self.state.put_applied_events(&key, &ids, now + SNAPSHOT_TTL_SECONDS).await?;
                Some(key)
            }
        };
        lookups.applied_now.insert(end, key.clone());
        Ok(key)
    }

    /// The APIs a change of the `domains` may concern on `stage`: those the catalog says they
    /// routed to, and those they route to now.
    async fn routed_by(&self, lookups: &mut Lookups, domains: &BTreeSet<String>, stage: &str) -> Result<Vec<ApiRef>> {
        let mut refs = Vec::new();
        for entry in self.state.load_catalog(stage).await?.unwrap_or_default() {
            if entry.domains.iter().any(|d| domains.contains(d)) {
                refs.push(ApiRef { generation: entry.kind.generation(), id: entry.id });
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

    /// The APIs deployed to `stage` and when they were listed: from the listing ensure-runtime
    /// stored for this full sync when there is one, else from one listing of the account shared
    /// by every runtime of the run.
    async fn deployed_on(&self, listing: &mut Listing, stage: &str, now: i64) -> Result<(Vec<DeployedApi>, i64)> {
        if !listing.looked_up {
            listing.looked_up = true;
            if self.config.stages == StageSelection::All {
                listing.stored = self
                    .state
                    .load_discovery()
                    .await?
                    .filter(|d| !d.listing_parts.is_empty() && now - d.at <= LISTING_REUSE_SECONDS);
            }
        }
        if let Some(discovery) = &listing.stored {
            if let Some(deployed) = super::stored_deployments(self.state, discovery, stage).await {
                return Ok((deployed, discovery.at));
            }
            listing.stored = None;
        }
        let (listed, at) = match listing.live.take() {
            Some(live) => live,
            None => {
                let listed = super::deployments_by_stage(self.gateway, &self.config.api_types).await?;
                if self.config.stages == StageSelection::All {
                    // A by-product: ensure-runtime reuses it instead of listing the account again.
                    super::save_discovery(self.state, &listed, now, false).await?;
                }
                (listed, now)
            }
        };
        let deployed = listed.get(stage).cloned().unwrap_or_default();
        listing.live = Some((listed, at));
        Ok((deployed, at))
    }

    /// Keeps the stage's API catalog (read by the metrics branch) current: replaced by a full
    /// sync, patched for the APIs an incremental run touched. Before the first full sync there is
    /// none, and the metrics branch lists API Gateway itself.
    async fn update_catalog(&self, stage: &str, upserts: &[DeployedApi], deletes: &[String], full: bool) -> Result<()> {
        let mut catalog = match full {
            true => Vec::new(),
            false if upserts.is_empty() && deletes.is_empty() => return Ok(()),
            false => match self.state.load_catalog(stage).await? {
                Some(catalog) => catalog,
                None => return Ok(()),
            },
        };
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
    async fn metrics(&self, runtimes: &[&RuntimeRef], now: i64) -> Result<Listed> {
        let mut output = Listed::default();
        let timing = self.config.window_timing();
        let mut open = MetricsChunk { runtimes: vec![] };
        let mut open_windows = 0;
        for runtime in runtimes {
            let state = self.state.load(&runtime.stage).await?;
            let Some((start, end)) = due_range(state.metrics_watermark, now, timing) else { continue };
            let due = RuntimeWindows {
                runtime_id: runtime.runtime_id.clone(),
                stage: runtime.stage.clone(),
                start,
                end,
                interval: timing.interval,
            };
            let windows = due.windows().len();
            if !open.runtimes.is_empty() && open_windows + windows > WINDOWS_PER_METRICS_CHUNK {
                output.chunks.push(Chunk::Metrics(std::mem::replace(&mut open, MetricsChunk { runtimes: vec![] })));
                open_windows = 0;
            }
            open.runtimes.push(due);
            open_windows += windows;
            output.summary.windows += windows;
            output.watermarks.push(WatermarkUpdate {
                stage: runtime.stage.clone(),
                position: end,
                full_sync_at: None,
                applied_events: None,
            });
        }
        if !open.runtimes.is_empty() {
            output.chunks.push(Chunk::Metrics(open));
        }
        Ok(output)
    }
}
