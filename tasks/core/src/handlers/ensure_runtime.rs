//! `ensure-runtime`: one control plane runtime per federated stage, registered once, and a
//! heartbeat for each on every run; runtimes of stages no longer federated are cleaned up.

use std::collections::{HashMap, HashSet};

use crate::aws::apigateway::ApiGateway;
use crate::aws::executions::Executions;
use crate::aws::state::{Discovery, Registered, RuntimeState, StateStore};
use crate::changes::{AssetPlan, plan_assets};
use crate::config::{Config, StageSelection, is_valid_stage_name};
use crate::control_plane::ControlPlane;
use crate::control_plane::types::Heartbeat;
use crate::error::{AgentError, Result};
use crate::handlers::{AccountListing, Deployments, list_account};
use crate::mapping::{StageLocation, runtime_id, runtime_registration};
use crate::model::{
    EnsureRuntimeInput, InactiveReason, InactiveRuntime, OrphanedRuntime, RuntimeRef, RuntimesReady, SyncMode,
};
use crate::target::Target;

pub struct EnsureRuntime<'a, G, C, S, E> {
    pub config: &'a Config,
    pub account: &'a str,
    pub region: &'a str,
    pub gateway: &'a G,
    pub control_plane: &'a C,
    pub state: &'a S,
    pub executions: &'a E,
    /// Whether a listing made for the discovery is stored for the same execution's full syncs:
    /// the workflow's; a tick hands a full sync over to an execution that could not reuse it.
    pub store_listing: bool,
}

/// Whether a discovery of the account's stages is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryDue {
    No,
    /// With the APIs the last discovery's stages deploy (`None`: unknown, or no discovery yet).
    Yes {
        deployed_apis: Option<usize>,
    },
}

/// The stages of this run, and what came with them.
struct Stages {
    names: Vec<String>,
    /// The account's listing, when one was made for this run.
    listing: Option<Deployments>,
    /// The stages are the configured selection (not an execution's own list): a runtime
    /// registered for any other stage is orphaned.
    configured: bool,
}

/// What this run federates: its stages, or nothing yet while another execution makes the
/// account's first discovery (overlapping executions never list the account at once).
enum Planned {
    Stages(Stages),
    DiscoveryElsewhere(Option<String>),
}

impl<G: ApiGateway, C: ControlPlane, S: StateStore, E: Executions> EnsureRuntime<'_, G, C, S, E> {
    fn target(&self) -> Target {
        Target::new(self.account, self.region)
    }

    pub async fn run(&self, request: EnsureRuntimeInput, now: i64) -> Result<RuntimesReady> {
        let input = request.execution_input()?;
        let Stages { names: stages, listing, configured } = match self
            .stages(input.stages, input.mode, &request.execution_id, now)
            .await?
        {
            Planned::Stages(stages) => stages,
            Planned::DiscoveryElsewhere(holder) => {
                tracing::info!(?holder, "the account's first discovery runs in another execution; nothing to do yet");
                return Ok(RuntimesReady {
                    target: self.target(),
                    mode: input.mode,
                    runtimes: Vec::new(),
                    inactive: Vec::new(),
                    orphaned: Vec::new(),
                    discovery_in_progress: Some(holder.unwrap_or_default()),
                    pushed: Vec::new(),
                    push: None,
                });
            }
        };
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
            let full_sync_follows = self.store_listing
                && states
                    .iter()
                    .any(|state| matches!(plan_assets(input.mode, state, now, timing), AssetPlan::Full { .. }));
            super::save_discovery(self.state, &listing, &request.execution_id, now, full_sync_follows).await?;
        }
        let mut runtimes = Vec::with_capacity(stages.len());
        let mut heartbeats = Vec::with_capacity(stages.len());
        let mut inactive = Vec::new();
        let mut runtime_type_checked = false;
        // What the control plane holds now: a runtime deleted there (by hand, or by a cleanup)
        // is registered again instead of every publish to it failing.
        let mut existing: Option<HashSet<String>> = None;
        for (stage, state) in stages.into_iter().zip(states) {
            let location = StageLocation { account: self.account, region: self.region, stage: &stage };
            let wanted_id = runtime_id(&self.config.control_plane.runtime_id_template, location);
            let known = state.registered_id.clone().filter(|_| state.registered_as.as_deref() == Some(&wanted_id));
            let still_there = match &known {
                Some(id) => match &existing {
                    Some(ids) => ids.contains(id),
                    None => existing.insert(self.control_plane.list_runtime_ids().await?).contains(id),
                },
                None => false,
            };
            let (runtime_id, registered_now) = match known {
                Some(id) if still_there => (id, false),
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
                    (id, true)
                }
            };
            let unhealthy = match registered_now {
                true => Some(InactiveReason::NotSyncedYet),
                false => self.inactive_reason(&stage, &state).await?,
            };
            if let Some(reason) = unhealthy {
                tracing::warn!(stage, runtime_id, ?reason, "runtime reported inactive");
                inactive.push(InactiveRuntime { stage: stage.clone(), runtime_id: runtime_id.clone(), reason });
            }
            heartbeats.extend(heartbeats_since(
                &runtime_id,
                state.last_heartbeat_at,
                unhealthy.is_none(),
                self.heartbeat_interval(),
                now,
            ));
            runtimes.push(RuntimeRef { runtime_id, stage });
        }
        self.control_plane.send_heartbeats(&heartbeats).await?;
        for runtime in &runtimes {
            self.state.record_heartbeat(&runtime.stage, now).await?;
        }
        let orphaned = match configured {
            true => self.clean_up_orphans(&runtimes, now).await?,
            false => Vec::new(),
        };
        Ok(RuntimesReady {
            target: self.target(),
            mode: input.mode,
            runtimes,
            inactive,
            orphaned,
            discovery_in_progress: None,
            pushed: input.pushed,
            push: None,
        })
    }

    /// Keeps the registry of runtimes current and cleans up the runtimes it holds that no
    /// federated stage has any more (a stage removed from `STAGES` or without a deployed API, an
    /// id from a former `RUNTIME_ID_TEMPLATE`): each is marked orphaned, and deleted from the
    /// control plane, with its APIs, once it has been orphaned for `ORPHAN_GRACE_SECONDS` (a
    /// stage redeployed meanwhile is federated again and keeps its runtime).
    async fn clean_up_orphans(&self, runtimes: &[RuntimeRef], now: i64) -> Result<Vec<OrphanedRuntime>> {
        let registry = match self.state.load_registry().await? {
            Some(registry) => registry,
            // A new installation, or the first run of one from before the registry: the stage
            // items name the runtimes registered so far.
            None => {
                let found = self.state.scan_registrations().await?;
                for runtime in &found {
                    self.state.put_registered(runtime).await?;
                }
                found
            }
        };
        let known: HashMap<&str, &Registered> = registry.iter().map(|r| (r.runtime_id.as_str(), r)).collect();
        for runtime in runtimes {
            let current = Registered {
                runtime_id: runtime.runtime_id.clone(),
                stage: runtime.stage.clone(),
                orphaned_since: None,
            };
            if known.get(runtime.runtime_id.as_str()) != Some(&&current) {
                self.state.put_registered(&current).await?;
            }
        }
        let federated: HashSet<&str> = runtimes.iter().map(|r| r.runtime_id.as_str()).collect();
        let grace = self.config.orphan_grace.as_secs() as i64;
        let mut orphaned = Vec::new();
        for entry in registry.iter().filter(|r| !federated.contains(r.runtime_id.as_str())) {
            let since = match entry.orphaned_since {
                Some(since) => since,
                None => {
                    tracing::warn!(
                        runtime_id = entry.runtime_id,
                        stage = entry.stage,
                        "runtime orphaned: its stage is no longer federated"
                    );
                    self.state.put_registered(&Registered { orphaned_since: Some(now), ..entry.clone() }).await?;
                    now
                }
            };
            let deleted = now - since >= grace;
            if deleted {
                let found = self.control_plane.delete_runtime(&entry.runtime_id).await?;
                tracing::warn!(
                    runtime_id = entry.runtime_id,
                    stage = entry.stage,
                    found,
                    "orphaned runtime deleted with its APIs"
                );
                self.state.forget_registered(&entry.runtime_id).await?;
            }
            orphaned.push(OrphanedRuntime {
                runtime_id: entry.runtime_id.clone(),
                stage: entry.stage.clone(),
                since,
                deleted,
            });
        }
        Ok(orphaned)
    }

    /// Why the runtime's heartbeat says inactive, if it does: its stage has no deployed API by
    /// the last catalog the assets branch wrote, no run synced it yet, or a branch's last run for
    /// it failed.
    async fn inactive_reason(&self, stage: &str, state: &RuntimeState) -> Result<Option<InactiveReason>> {
        let deployed = match state.deployed_apis {
            Some(count) => Some(count > 0),
            // A catalog written before its size was kept on the stage's item.
            None => self.state.load_catalog(stage).await?.map(|catalog| !catalog.is_empty()),
        };
        match deployed {
            Some(false) => return Ok(Some(InactiveReason::NoDeployedApi)),
            None => return Ok(Some(InactiveReason::NotSyncedYet)),
            Some(true) => {}
        }
        Ok(match (state.assets_outcome.last_succeeded(), state.metrics_outcome.last_succeeded()) {
            (None, _) => Some(InactiveReason::NotSyncedYet),
            (Some(false), _) | (_, Some(false)) => Some(InactiveReason::LastRunFailed),
            _ => None,
        })
    }

    fn heartbeat_interval(&self) -> i64 {
        self.config.control_plane.heartbeat_interval.as_secs().max(1) as i64
    }

    /// The execution's stages, else the configured ones; `*` means every stage with a deployment.
    async fn stages(&self, requested: Option<Vec<String>>, mode: SyncMode, me: &str, now: i64) -> Result<Planned> {
        let mut stages = match (requested, &self.config.stages) {
            (Some(requested), _) => {
                if let Some(bad) = requested.iter().find(|s| !is_valid_stage_name(s)) {
                    return Err(AgentError::invalid_input(format!(
                        "execution input stages: {bad:?} is not a stage name"
                    )));
                }
                Stages { names: requested, listing: None, configured: false }
            }
            (None, StageSelection::Named(names)) => Stages { names: names.clone(), listing: None, configured: true },
            (None, StageSelection::All) => match self.discovered_stages(mode, me, now).await? {
                Planned::Stages(stages) => stages,
                elsewhere => return Ok(elsewhere),
            },
        };
        stages.names.sort();
        stages.names.dedup();
        Ok(Planned::Stages(stages))
    }

    /// Whether a scheduled run would list the account to discover its stages (`STAGES=*` and
    /// the last discovery older than `DISCOVERY_INTERVAL_SECONDS`), and how large that listing
    /// is likely to be: the APIs the last discovery's stages deploy, by their catalogs' sizes.
    pub async fn discovery_due(&self, now: i64) -> Result<DiscoveryDue> {
        if self.config.stages != StageSelection::All {
            return Ok(DiscoveryDue::No);
        }
        let Some(last) = self.state.load_discovery().await? else {
            return Ok(DiscoveryDue::Yes { deployed_apis: None });
        };
        if self.fresh(&last, now) {
            return Ok(DiscoveryDue::No);
        }
        let mut deployed_apis = Some(0);
        for stage in &last.stages {
            let apis = self.state.load(stage).await?.deployed_apis.and_then(|n| usize::try_from(n).ok());
            deployed_apis = deployed_apis.zip(apis).map(|(sum, apis)| sum + apis);
        }
        Ok(DiscoveryDue::Yes { deployed_apis })
    }

    fn fresh(&self, discovery: &Discovery, now: i64) -> bool {
        now - discovery.at < self.config.discovery_interval.as_secs() as i64
    }

    /// Discovery costs one GetStages per API, so it is reused for the discovery interval
    /// (a full sync always rediscovers); a stage created meanwhile joins at the next discovery.
    /// While another execution lists the account, the last discovery serves, however old.
    async fn discovered_stages(&self, mode: SyncMode, me: &str, now: i64) -> Result<Planned> {
        let last = self.state.load_discovery().await?;
        if let Some(last) = last.as_ref().filter(|last| mode == SyncMode::Auto && self.fresh(last, now)) {
            return Ok(Planned::Stages(Stages { names: last.stages.clone(), listing: None, configured: true }));
        }
        let types = &self.config.api_types;
        Ok(match list_account(self.gateway, self.state, self.executions, types, me, now).await? {
            AccountListing::Listed(listing) => Planned::Stages(Stages {
                names: listing.keys().cloned().collect(),
                listing: Some(listing),
                configured: true,
            }),
            // A stale discovery is no proof that a stage went away: nothing is orphaned by it.
            AccountListing::ListedElsewhere(holder) => match last {
                Some(last) => Planned::Stages(Stages { names: last.stages, listing: None, configured: false }),
                None => Planned::DiscoveryElsewhere(holder),
            },
        })
    }
}

/// This run's heartbeat of a runtime, preceded by an inactive one where the last heartbeat is
/// more than two intervals old: the control plane then shows the outage as a gap, as it does for
/// the vendor's agent, instead of drawing a line across it.
fn heartbeats_since(runtime_id: &str, last_at: Option<i64>, active: bool, interval: i64, now: i64) -> Vec<Heartbeat> {
    let heartbeat = |at: i64, active: bool| Heartbeat {
        runtime_id: runtime_id.to_owned(),
        created: at * 1000,
        active: u8::from(active),
    };
    match last_at {
        Some(last) if now - last > 2 * interval => vec![heartbeat(last + interval, false), heartbeat(now, active)],
        _ => vec![heartbeat(now, active)],
    }
}

#[cfg(test)]
mod tests {
    use super::heartbeats_since;

    #[test]
    fn an_outage_longer_than_two_intervals_shows_as_an_inactive_heartbeat_after_the_last_one() {
        let beats = |last| {
            heartbeats_since("r", last, true, 60, 10_000).iter().map(|h| (h.created, h.active)).collect::<Vec<_>>()
        };
        assert_eq!(beats(None), [(10_000_000, 1)]);
        assert_eq!(beats(Some(9_880)), [(10_000_000, 1)], "two intervals late is on time");
        assert_eq!(beats(Some(9_879)), [(9_939_000, 0), (10_000_000, 1)]);
    }
}
