//! `ensure-runtime`: one control plane runtime per federated stage, registered once, and a
//! heartbeat for each on every run.

use std::collections::HashSet;

use crate::aws::apigateway::ApiGateway;
use crate::aws::state::StateStore;
use crate::changes::{AssetPlan, plan_assets};
use crate::config::{Config, StageSelection, is_valid_stage_name};
use crate::control_plane::ControlPlane;
use crate::control_plane::types::Heartbeat;
use crate::error::{AgentError, Result};
use crate::handlers::Deployments;
use crate::mapping::{StageLocation, runtime_id, runtime_registration};
use crate::model::{ExecutionInput, RuntimeRef, RuntimesReady, SyncMode};

pub struct EnsureRuntime<'a, G, C, S> {
    pub config: &'a Config,
    pub account: &'a str,
    pub region: &'a str,
    pub gateway: &'a G,
    pub control_plane: &'a C,
    pub state: &'a S,
}

impl<G: ApiGateway, C: ControlPlane, S: StateStore> EnsureRuntime<'_, G, C, S> {
    pub async fn run(&self, input: ExecutionInput, now: i64) -> Result<RuntimesReady> {
        let (stages, listing) = self.stages(input.stages, input.mode, now).await?;
        if stages.is_empty() {
            tracing::warn!("no stage to federate: no deployed stage found or configured");
        }
        let mut states = Vec::with_capacity(stages.len());
        for stage in &stages {
            states.push(self.state.load(stage).await?);
        }
        if let Some(listing) = listing {
            // The assets branch's full sync reads this listing instead of making the same
            // 1 + one-per-API calls again a few seconds later.
            let timing = self.config.change_timing();
            let full_sync_follows = states
                .iter()
                .any(|state| matches!(plan_assets(input.mode, state, now, timing), AssetPlan::Full { .. }));
            super::save_discovery(self.state, &listing, now, full_sync_follows).await?;
        }
        let mut runtimes = Vec::with_capacity(stages.len());
        let mut runtime_type_checked = false;
        // What the control plane holds now: a runtime deleted there (by hand, or by a cleanup)
        // is registered again instead of every publish to it failing.
        let mut existing: Option<HashSet<String>> = None;
        for (stage, state) in stages.into_iter().zip(states) {
            let location = StageLocation { account: self.account, region: self.region, stage: &stage };
            let wanted_id = runtime_id(&self.config.control_plane.runtime_id_template, location);
            let known = state.registered_id.filter(|_| state.registered_as.as_deref() == Some(&wanted_id));
            let still_there = match &known {
                Some(id) => match &existing {
                    Some(ids) => ids.contains(id),
                    None => existing.insert(self.control_plane.list_runtime_ids().await?).contains(id),
                },
                None => false,
            };
            let runtime_id = match known {
                Some(id) if still_there => id,
                _ => {
                    if !runtime_type_checked {
                        self.control_plane.ensure_runtime_type(&self.config.control_plane.runtime_type).await?;
                        runtime_type_checked = true;
                    }
                    let registration = runtime_registration(&self.config.control_plane, location);
                    let id = self.control_plane.register_runtime(&registration).await?;
                    // Also forgets the assets watermark: a new runtime is filled by a full sync.
                    self.state.record_registration(&stage, &wanted_id, &id, now).await?;
                    tracing::info!(stage, runtime_id = id, "runtime registered");
                    id
                }
            };
            runtimes.push(RuntimeRef { runtime_id, stage });
        }
        let heartbeats: Vec<Heartbeat> = runtimes
            .iter()
            .map(|r| Heartbeat { runtime_id: r.runtime_id.clone(), created: now * 1000, active: 1 })
            .collect();
        self.control_plane.send_heartbeats(&heartbeats).await?;
        Ok(RuntimesReady { mode: input.mode, runtimes })
    }

    /// The execution's stages, else the configured ones; `*` means every stage with a deployment.
    /// Comes with the account's listing when one was made for it.
    async fn stages(
        &self,
        requested: Option<Vec<String>>,
        mode: SyncMode,
        now: i64,
    ) -> Result<(Vec<String>, Option<Deployments>)> {
        let (mut stages, listing) = match (requested, &self.config.stages) {
            (Some(requested), _) => {
                if let Some(bad) = requested.iter().find(|s| !is_valid_stage_name(s)) {
                    return Err(AgentError::invalid_input(format!(
                        "execution input stages: {bad:?} is not a stage name"
                    )));
                }
                (requested, None)
            }
            (None, StageSelection::Named(names)) => (names.clone(), None),
            (None, StageSelection::All) => self.discovered_stages(mode, now).await?,
        };
        stages.sort();
        stages.dedup();
        Ok((stages, listing))
    }

    /// Discovery costs one GetStages per API, so it is reused for the discovery interval
    /// (a full sync always rediscovers); a stage created meanwhile joins at the next discovery.
    async fn discovered_stages(&self, mode: SyncMode, now: i64) -> Result<(Vec<String>, Option<Deployments>)> {
        let fresh_for = self.config.discovery_interval.as_secs() as i64;
        if mode == SyncMode::Auto
            && let Some(last) = self.state.load_discovery().await?
            && now - last.at < fresh_for
        {
            return Ok((last.stages, None));
        }
        let listing = super::deployments_by_stage(self.gateway, &self.config.api_types).await?;
        Ok((listing.keys().cloned().collect(), Some(listing)))
    }
}
