//! `list-changes`: what a branch must publish this run, in chunks, and the watermarks to commit
//! once it is published.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::aws::apigateway::{ApiGateway, Stage};
use crate::aws::cloudtrail::ChangeFeed;
use crate::aws::state::StateStore;
use crate::changes::{AssetPlan, chunk_assets, plan_assets, touched_rest_apis};
use crate::config::Config;
use crate::control_plane::ControlPlane;
use crate::error::{AgentError, Result};
use crate::mapping::published_api_id;
use crate::metrics::due_windows;
use crate::model::{
    ChangeSummary, Chunk, Kind, ListChangesInput, ListChangesOutput, MetricsWindow, RuntimeRef, WatermarkUpdate,
};

pub struct ListChanges<'a, G, C, S, F> {
    pub config: &'a Config,
    pub gateway: &'a G,
    pub control_plane: &'a C,
    pub state: &'a S,
    pub feed: &'a F,
}

impl<G: ApiGateway, C: ControlPlane, S: StateStore, F: ChangeFeed> ListChanges<'_, G, C, S, F> {
    pub async fn run(&self, input: ListChangesInput, now: i64) -> Result<ListChangesOutput> {
        match input.kind {
            Kind::Assets => self.assets(input, now).await,
            Kind::Metrics => self.metrics(input, now).await,
        }
    }

    async fn assets(&self, input: ListChangesInput, now: i64) -> Result<ListChangesOutput> {
        let mut output = ListChangesOutput {
            kind: Kind::Assets,
            chunks: vec![],
            watermarks: vec![],
            summary: ChangeSummary::default(),
        };
        // Shared across runtimes: one listing of the account, one CloudTrail read per window,
        // one GetStages per touched API.
        let mut deployments: Option<BTreeMap<String, Vec<String>>> = None;
        let mut events_by_window: HashMap<(i64, i64), BTreeSet<String>> = HashMap::new();
        let mut stages_by_api: HashMap<String, Vec<Stage>> = HashMap::new();

        for runtime in &input.runtimes {
            let state = self.state.load(&runtime.stage).await?;
            let plan = plan_assets(input.mode, &state, now, self.config.change_buffer, self.config.reconcile_interval);
            let (upserts, deletes, watermark) = match plan {
                AssetPlan::UpToDate => continue,
                AssetPlan::Full { position } => {
                    if deployments.is_none() {
                        deployments = Some(super::deployments_by_stage(self.gateway).await?);
                    }
                    let deployed =
                        deployments.as_ref().and_then(|d| d.get(&runtime.stage)).cloned().unwrap_or_default();
                    let deletes = self.stale_apis(runtime, &deployed).await?;
                    output.summary.full_runtimes += 1;
                    (
                        deployed,
                        deletes,
                        WatermarkUpdate { stage: runtime.stage.clone(), position, full_sync_at: Some(now) },
                    )
                }
                AssetPlan::Incremental { start, end } => {
                    if let Entry::Vacant(entry) = events_by_window.entry((start, end)) {
                        entry.insert(touched_rest_apis(&self.feed.write_events(start, end).await?));
                    }
                    let (mut upserts, mut deletes) = (vec![], vec![]);
                    for api_id in &events_by_window[&(start, end)] {
                        if let Entry::Vacant(entry) = stages_by_api.entry(api_id.clone()) {
                            entry.insert(self.gateway.get_stages(api_id).await?);
                        }
                        let deployed =
                            stages_by_api[api_id].iter().any(|s| s.name == runtime.stage && s.deployment_id.is_some());
                        if deployed {
                            upserts.push(api_id.clone());
                        } else {
                            // Gone, or no longer deployed to this stage; deleting an absent API is a no-op.
                            deletes.push(published_api_id(api_id, &runtime.stage));
                        }
                    }
                    output.summary.incremental_runtimes += 1;
                    (
                        upserts,
                        deletes,
                        WatermarkUpdate { stage: runtime.stage.clone(), position: end, full_sync_at: None },
                    )
                }
            };
            output.summary.upserts += upserts.len();
            output.summary.deletes += deletes.len();
            output.chunks.extend(
                chunk_assets(&runtime.runtime_id, &runtime.stage, upserts, deletes, self.config.chunk_size)
                    .into_iter()
                    .map(Chunk::Assets),
            );
            output.watermarks.push(watermark);
        }
        Ok(output)
    }

    /// APIs the control plane holds for the runtime that are no longer deployed to its stage.
    /// Refuses to empty a runtime on the strength of an empty listing unless allowed.
    async fn stale_apis(&self, runtime: &RuntimeRef, deployed: &[String]) -> Result<Vec<String>> {
        let current: BTreeSet<String> = deployed.iter().map(|id| published_api_id(id, &runtime.stage)).collect();
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

    async fn metrics(&self, input: ListChangesInput, now: i64) -> Result<ListChangesOutput> {
        let mut output = ListChangesOutput {
            kind: Kind::Metrics,
            chunks: vec![],
            watermarks: vec![],
            summary: ChangeSummary::default(),
        };
        for runtime in &input.runtimes {
            let state = self.state.load(&runtime.stage).await?;
            let windows = due_windows(
                state.metrics_watermark,
                now,
                self.config.metrics_interval.as_secs() as i64,
                self.config.metrics_buffer.as_secs() as i64,
                self.config.metrics_max_windows_per_run,
            );
            let Some(&(_, last_end)) = windows.last() else { continue };
            output.summary.windows += windows.len();
            output.chunks.extend(windows.into_iter().map(|(start, end)| {
                Chunk::Metrics(MetricsWindow {
                    runtime_id: runtime.runtime_id.clone(),
                    stage: runtime.stage.clone(),
                    start,
                    end,
                })
            }));
            output.watermarks.push(WatermarkUpdate {
                stage: runtime.stage.clone(),
                position: last_end,
                full_sync_at: None,
            });
        }
        Ok(output)
    }
}
