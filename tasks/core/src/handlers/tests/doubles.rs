//! In-memory stand-ins of the adapters' traits, as strict as the services where it matters:
//! conditional writes, claims, paging-free listings that count their calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::aws::apigateway::{Api, ApiGateway, ApiKind, DeployedApi, DomainMapping, Generation, Stage};
use crate::aws::cloudtrail::{ApiEvent, ChangeFeed, Trails};
use crate::aws::cloudwatch::{MetricSource, MetricSubject};
use crate::aws::executions::Executions;
use crate::aws::state::{
    AppliedEvents, CatalogEntry, Catalogs, Claim, ClaimOn, Claims, Discovery, PushStatuses, Registered, Registry,
    Reports, RunEntry, RunRecord, Runs, RuntimeState, StageProgress,
};
use crate::config::ApiTypes;
use crate::control_plane::types::{AgentMetricsModel, ApiDocument, Heartbeat, Runtime};
use crate::control_plane::{ControlPlane, Upserted};
use crate::error::{AgentError, Result};
use crate::metrics::ApiSeries;
use crate::model::{Kind, PushStatus, Refused, WatermarkUpdate};

pub(super) const NOW: i64 = 1_800_000_000;

#[derive(Default)]
pub(super) struct Gateway {
    pub apis: Vec<Api>,
    pub stages: HashMap<String, Vec<Stage>>,
    pub mappings: Vec<(Generation, DomainMapping)>,
    /// API Gateway calls made, of any operation.
    pub calls: AtomicUsize,
}

impl Gateway {
    pub fn with_apis(count: usize, stages: &[&str], description: &str) -> Self {
        let mut gateway = Self::default();
        for i in 0..count {
            let id = format!("{i:010}");
            gateway.apis.push(Api {
                id: id.clone(),
                kind: ApiKind::Rest,
                name: format!("api-{i}"),
                description: Some(description.to_owned()),
                tags: BTreeMap::from([("team".into(), "core".into())]),
                endpoint_types: vec!["REGIONAL".into()],
                execute_api_disabled: false,
                policy_statements: None,
            });
            let deployed = stages
                .iter()
                .map(|s| Stage { name: (*s).into(), deployment_id: Some(format!("d{i}")), tags: BTreeMap::new() })
                .collect();
            gateway.stages.insert(id, deployed);
        }
        gateway
    }

    fn api(&self, generation: Generation, api_id: &str) -> Option<&Api> {
        self.apis.iter().find(|a| a.id == api_id && a.kind.generation() == generation)
    }
}

/// Like API Gateway, each management API sees only its own APIs.
impl ApiGateway for Gateway {
    async fn list_apis(&self, generation: Generation) -> Result<Vec<Api>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.apis.iter().filter(|a| a.kind.generation() == generation).cloned().collect())
    }
    async fn get_api(&self, generation: Generation, api_id: &str) -> Result<Option<Api>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.api(generation, api_id).cloned())
    }
    async fn get_stages(&self, generation: Generation, api_id: &str) -> Result<Vec<Stage>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.api(generation, api_id) {
            Some(_) => Ok(self.stages.get(api_id).cloned().unwrap_or_default()),
            None => Ok(Vec::new()),
        }
    }
    async fn list_domain_mappings(&self, generation: Generation) -> Result<Vec<DomainMapping>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.mappings.iter().filter(|(g, _)| *g == generation).map(|(_, m)| m.clone()).collect())
    }
}

#[derive(Default)]
pub(super) struct Plane {
    pub registrations: Mutex<Vec<String>>,
    /// The runtimes the control plane holds: those registered here.
    pub runtimes: Mutex<BTreeSet<String>>,
    /// Runtimes deleted, in order.
    pub deleted_runtimes: Mutex<Vec<String>>,
    pub heartbeats: Mutex<Vec<Heartbeat>>,
    pub held: BTreeMap<String, Vec<String>>,
    /// The APIs the control plane holds, by runtime: what upserts and deletes leave.
    pub apis: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// API ids whose upsert or delete the control plane answers 400, with its details.
    pub refusing: Mutex<BTreeSet<String>>,
    /// Runtimes whose API requests the control plane answers 503.
    pub unavailable: Mutex<BTreeSet<String>>,
    /// Metrics windows accepted: (runtime id, window end in seconds).
    pub metrics: Mutex<Vec<(String, i64)>>,
    /// Windows (runtime id, end) the control plane fails once each, as if briefly unavailable.
    pub failing_windows: Mutex<BTreeSet<(String, i64)>>,
    /// Windows the control plane stores, but whose answer is lost once each (a reset, a timeout).
    pub lost_answers: Mutex<BTreeSet<(String, i64)>>,
}

impl Plane {
    fn refuse(&self, runtime_id: &str, api_id: &str) -> Result<()> {
        if self.unavailable.lock().unwrap().contains(runtime_id) {
            return Err(AgentError::ControlPlaneUnavailable(format!(
                "POST .../runtimes/{runtime_id}/apis answered 503"
            )));
        }
        match self.refusing.lock().unwrap().contains(api_id) {
            true => Err(AgentError::InvalidInput {
                message: format!("POST .../apis ({api_id}) answered 400"),
                details: vec!["name : Maximum character allowed is 1024".into()],
            }),
            false => Ok(()),
        }
    }

    /// The APIs the control plane holds for `runtime_id`.
    pub fn holds(&self, runtime_id: &str) -> BTreeSet<String> {
        self.apis.lock().unwrap().get(runtime_id).cloned().unwrap_or_default()
    }
}

impl ControlPlane for Plane {
    async fn ensure_runtime_type(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn register_runtime(&self, runtime: &Runtime) -> Result<String> {
        self.registrations.lock().unwrap().push(runtime.name.clone());
        self.runtimes.lock().unwrap().insert(runtime.id.clone().unwrap());
        Ok(runtime.id.clone().unwrap())
    }
    async fn delete_runtime(&self, runtime_id: &str) -> Result<bool> {
        self.deleted_runtimes.lock().unwrap().push(runtime_id.to_owned());
        self.apis.lock().unwrap().remove(runtime_id);
        Ok(self.runtimes.lock().unwrap().remove(runtime_id))
    }
    async fn list_runtime_ids(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self.runtimes.lock().unwrap().iter().cloned().collect())
    }
    async fn send_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<()> {
        self.heartbeats.lock().unwrap().extend_from_slice(heartbeats);
        Ok(())
    }
    async fn list_api_ids(&self, runtime_id: &str) -> Result<Vec<String>> {
        let mut held = self.held.get(runtime_id).cloned().unwrap_or_default();
        held.extend(self.holds(runtime_id));
        Ok(held)
    }
    async fn upsert_api(&self, runtime_id: &str, document: &ApiDocument) -> Result<Upserted> {
        self.refuse(runtime_id, &document.id)?;
        let created = self.apis.lock().unwrap().entry(runtime_id.to_owned()).or_default().insert(document.id.clone());
        Ok(if created { Upserted::Created } else { Upserted::Updated })
    }
    async fn delete_api(&self, runtime_id: &str, api_id: &str) -> Result<bool> {
        self.refuse(runtime_id, api_id)?;
        Ok(self.apis.lock().unwrap().entry(runtime_id.to_owned()).or_default().remove(api_id))
    }
    async fn send_metrics(&self, runtime_id: &str, metrics: &AgentMetricsModel) -> Result<()> {
        let end = metrics.timestamp / 1000;
        if self.failing_windows.lock().unwrap().remove(&(runtime_id.to_owned(), end)) {
            return Err(AgentError::ControlPlaneUnavailable(format!("503 for the window ending {end}")));
        }
        self.metrics.lock().unwrap().push((runtime_id.to_owned(), end));
        if self.lost_answers.lock().unwrap().remove(&(runtime_id.to_owned(), end)) {
            return Err(AgentError::DeliveryUnknown(format!("POST metrics for the window ending {end} timed out")));
        }
        Ok(())
    }
}

/// Emulates the conditional writes of the DynamoDB store.
#[derive(Default)]
pub(super) struct Memory {
    pub items: Mutex<HashMap<String, RuntimeState>>,
    /// (claimed item, claim attribute) -> (holder, expires at)
    pub claims: Mutex<HashMap<String, (String, i64)>>,
    /// A stage whose claim fails as if DynamoDB were throttling.
    pub unclaimable: Option<&'static str>,
    pub discovery: Mutex<Option<Discovery>>,
    pub snapshots: Mutex<HashMap<String, Vec<DeployedApi>>>,
    pub catalogs: Mutex<HashMap<String, Vec<CatalogEntry>>>,
    pub reports: Mutex<HashMap<String, AgentMetricsModel>>,
    pub documents: Mutex<HashMap<String, serde_json::Value>>,
    pub applied_events: Mutex<HashMap<String, Vec<String>>>,
    pub runs: Mutex<HashMap<String, RunRecord>>,
    pub registry: Mutex<Option<BTreeMap<String, Registered>>>,
    pub push_status: Mutex<Option<PushStatus>>,
}

/// Moves `watermark` to `position` unless it is already there or past; whether it moved.
fn advance(watermark: &mut Option<i64>, position: i64) -> bool {
    let moved = watermark.is_none_or(|current| current < position);
    if moved {
        *watermark = Some(position);
    }
    moved
}

fn claim_key(on: ClaimOn<'_>) -> String {
    match on {
        ClaimOn::Branch { stage, kind } => format!("{stage}/{kind:?}"),
        ClaimOn::Listing => "#listing".into(),
    }
}

impl StageProgress for Memory {
    async fn load(&self, stage: &str) -> Result<RuntimeState> {
        Ok(self.items.lock().unwrap().get(stage).cloned().unwrap_or_default())
    }
    async fn record_registration(&self, stage: &str, registered_as: &str, registered_id: &str, _: i64) -> Result<()> {
        let mut items = self.items.lock().unwrap();
        let item = items.entry(stage.to_owned()).or_default();
        item.registered_as = Some(registered_as.to_owned());
        item.registered_id = Some(registered_id.to_owned());
        (item.assets_watermark, item.assets_full_sync_at, item.assets_applied_events, item.assets_read_at) =
            (None, None, None, None);
        item.assets_refused.clear();
        Ok(())
    }
    async fn advance_assets_watermark(&self, update: &WatermarkUpdate, refused: &[Refused], _: i64) -> Result<bool> {
        let mut items = self.items.lock().unwrap();
        let item = items.entry(update.stage.clone()).or_default();
        if !advance(&mut item.assets_watermark, update.position) {
            return Ok(false);
        }
        if update.full_sync_at.is_some() {
            item.assets_full_sync_at = update.full_sync_at;
        }
        if update.read_at.is_some() {
            item.assets_read_at = update.read_at;
        }
        item.assets_applied_events = update.applied_events.clone();
        item.assets_refused = refused.to_vec();
        item.assets_pushed.retain(|entry| !update.forget_pushed.contains(entry));
        Ok(true)
    }
    async fn advance_metrics_watermark(&self, stage: &str, position: i64, _: i64) -> Result<bool> {
        let mut items = self.items.lock().unwrap();
        Ok(advance(&mut items.entry(stage.to_owned()).or_default().metrics_watermark, position))
    }
    async fn set_metrics_in_flight(&self, stage: &str, window_end: Option<i64>) -> Result<()> {
        self.items.lock().unwrap().entry(stage.to_owned()).or_default().metrics_in_flight = window_end;
        Ok(())
    }
    async fn record_outcome(&self, stage: &str, kind: Kind, succeeded: bool, at: i64) -> Result<()> {
        let mut items = self.items.lock().unwrap();
        let item = items.entry(stage.to_owned()).or_default();
        let outcome = match kind {
            Kind::Assets => &mut item.assets_outcome,
            Kind::Metrics => &mut item.metrics_outcome,
        };
        *(if succeeded { &mut outcome.succeeded_at } else { &mut outcome.failed_at }) = Some(at);
        Ok(())
    }
    async fn record_heartbeat(&self, stage: &str, at: i64) -> Result<()> {
        self.items.lock().unwrap().entry(stage.to_owned()).or_default().last_heartbeat_at = Some(at);
        Ok(())
    }
    async fn record_pushed(&self, stage: &str, entries: &[String]) -> Result<()> {
        let mut items = self.items.lock().unwrap();
        let pushed = &mut items.entry(stage.to_owned()).or_default().assets_pushed;
        // A string set: no duplicates.
        pushed.extend(entries.iter().cloned());
        pushed.sort();
        pushed.dedup();
        Ok(())
    }
}

impl PushStatuses for Memory {
    async fn load_push_status(&self) -> Result<Option<PushStatus>> {
        Ok(self.push_status.lock().unwrap().clone())
    }
    async fn put_push_status(&self, status: &PushStatus) -> Result<()> {
        *self.push_status.lock().unwrap() = Some(status.clone());
        Ok(())
    }
}

impl Claims for Memory {
    async fn claim(&self, on: ClaimOn<'_>, holder: &str, now: i64, expires_at: i64) -> Result<Claim> {
        if let ClaimOn::Branch { stage, .. } = on
            && self.unclaimable == Some(stage)
        {
            return Err(AgentError::Throttled("dynamodb:UpdateItem: ProvisionedThroughputExceededException".into()));
        }
        let mut claims = self.claims.lock().unwrap();
        match claims.get(&claim_key(on)) {
            Some((other, until)) if other != holder && *until >= now => Ok(Claim::HeldBy(Some(other.clone()))),
            _ => {
                claims.insert(claim_key(on), (holder.to_owned(), expires_at));
                Ok(Claim::Taken)
            }
        }
    }
    async fn take_over(&self, on: ClaimOn<'_>, previous: &str, holder: &str, expires_at: i64) -> Result<bool> {
        let mut claims = self.claims.lock().unwrap();
        if claims.get(&claim_key(on)).is_none_or(|(other, _)| other != previous) {
            return Ok(false);
        }
        claims.insert(claim_key(on), (holder.to_owned(), expires_at));
        Ok(true)
    }
    async fn release(&self, on: ClaimOn<'_>, holder: &str) -> Result<()> {
        let mut claims = self.claims.lock().unwrap();
        if claims.get(&claim_key(on)).is_some_and(|(other, _)| other == holder) {
            claims.remove(&claim_key(on));
        }
        Ok(())
    }
}

impl Catalogs for Memory {
    async fn put_snapshot(&self, key: &str, apis: &[DeployedApi], _: i64) -> Result<()> {
        self.snapshots.lock().unwrap().insert(key.to_owned(), apis.to_vec());
        Ok(())
    }
    async fn load_snapshot(&self, key: &str) -> Result<Vec<DeployedApi>> {
        let snapshots = self.snapshots.lock().unwrap();
        snapshots.get(key).cloned().ok_or_else(|| AgentError::AwsRequestFailed(format!("snapshot {key} is missing")))
    }
    async fn put_catalog(&self, stage: &str, entries: &[CatalogEntry]) -> Result<()> {
        self.items.lock().unwrap().entry(stage.to_owned()).or_default().deployed_apis = Some(entries.len() as i64);
        self.catalogs.lock().unwrap().insert(stage.to_owned(), entries.to_vec());
        Ok(())
    }
    async fn load_catalog(&self, stage: &str) -> Result<Option<Vec<CatalogEntry>>> {
        Ok(self.catalogs.lock().unwrap().get(stage).cloned())
    }
    async fn load_discovery(&self) -> Result<Option<Discovery>> {
        Ok(self.discovery.lock().unwrap().clone())
    }
    async fn save_discovery(&self, discovery: &Discovery) -> Result<()> {
        *self.discovery.lock().unwrap() = Some(discovery.clone());
        Ok(())
    }
}

impl Reports for Memory {
    async fn put_report(&self, key: &str, report: &AgentMetricsModel, _: i64) -> Result<()> {
        self.reports.lock().unwrap().insert(key.to_owned(), report.clone());
        Ok(())
    }
    async fn load_report(&self, key: &str) -> Result<AgentMetricsModel> {
        let reports = self.reports.lock().unwrap();
        reports.get(key).cloned().ok_or_else(|| AgentError::AwsRequestFailed(format!("report {key} is missing")))
    }
    async fn put_document<T: Serialize + Sync>(&self, key: &str, value: &T, _: i64) -> Result<()> {
        self.documents.lock().unwrap().insert(key.to_owned(), serde_json::to_value(value).unwrap());
        Ok(())
    }
    async fn load_document<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let documents = self.documents.lock().unwrap();
        Ok(documents.get(key).map(|value| serde_json::from_value(value.clone()).unwrap()))
    }
}

impl AppliedEvents for Memory {
    async fn put_applied_events(&self, key: &str, ids: &[String], _: i64) -> Result<()> {
        self.applied_events.lock().unwrap().insert(key.to_owned(), ids.to_vec());
        Ok(())
    }
    async fn load_applied_events(&self, key: &str) -> Result<Option<Vec<String>>> {
        Ok(self.applied_events.lock().unwrap().get(key).cloned())
    }
}

impl Runs for Memory {
    async fn start_run(&self, key: &str, carried: &[Refused], _: i64) -> Result<()> {
        let record = RunRecord { refused: carried.to_vec(), ..RunRecord::default() };
        self.runs.lock().unwrap().insert(key.to_owned(), record);
        Ok(())
    }
    async fn record_in_run(&self, key: &str, entry: RunEntry<'_>, _: i64) -> Result<()> {
        let mut runs = self.runs.lock().unwrap();
        let record = runs.entry(key.to_owned()).or_default();
        match entry {
            RunEntry::ChunkDone(index) => {
                record.chunks_done.insert(index);
            }
            RunEntry::Refused(refused) => {
                record.refused.retain(|r| r.id != refused.id);
                record.refused.push(refused.clone());
            }
            RunEntry::Failure { error, cause } => record.failure = Some((error.to_owned(), cause.to_owned())),
        }
        Ok(())
    }
    async fn load_run(&self, key: &str) -> Result<RunRecord> {
        Ok(self.runs.lock().unwrap().get(key).cloned().unwrap_or_default())
    }
}

impl Registry for Memory {
    async fn load_registry(&self) -> Result<Option<Vec<Registered>>> {
        Ok(self.registry.lock().unwrap().as_ref().map(|r| r.values().cloned().collect()))
    }
    async fn scan_registrations(&self) -> Result<Vec<Registered>> {
        let items = self.items.lock().unwrap();
        let mut found: Vec<Registered> = items
            .iter()
            .filter_map(|(stage, item)| {
                let runtime_id = item.registered_id.clone()?;
                Some(Registered { runtime_id, stage: stage.clone(), orphaned_since: None })
            })
            .collect();
        found.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        Ok(found)
    }
    async fn put_registered(&self, runtime: &Registered) -> Result<()> {
        let mut registry = self.registry.lock().unwrap();
        registry.get_or_insert_default().insert(runtime.runtime_id.clone(), runtime.clone());
        Ok(())
    }
    async fn forget_registered(&self, runtime_id: &str) -> Result<()> {
        if let Some(registry) = self.registry.lock().unwrap().as_mut() {
            registry.remove(runtime_id);
        }
        Ok(())
    }
}

/// Every execution holding a claim is still running.
pub(super) struct StillRunning;

impl Executions for StillRunning {
    async fn is_running(&self, _: &str) -> Result<bool> {
        Ok(true)
    }
}

/// Only the named executions are still running.
pub(super) struct RunningOnly(pub &'static [&'static str]);

impl Executions for RunningOnly {
    async fn is_running(&self, execution: &str) -> Result<bool> {
        Ok(self.0.contains(&execution))
    }
}

pub(super) struct NoEvents;

impl ChangeFeed for NoEvents {
    async fn write_events(&self, _: i64, _: i64) -> Result<Vec<ApiEvent>> {
        Ok(Vec::new())
    }
}

impl Trails for NoEvents {
    async fn management_write_trail(&self) -> std::result::Result<String, String> {
        Ok("management-events".into())
    }
}

impl Trails for Events {
    async fn management_write_trail(&self) -> std::result::Result<String, String> {
        Err("no CloudTrail trail logs this account-region".into())
    }
}

/// CloudTrail holding these events, each delivered at once; every LookupEvents is counted.
#[derive(Default)]
pub(super) struct Events {
    pub events: Mutex<Vec<ApiEvent>>,
    pub lookups: AtomicUsize,
}

impl Events {
    pub fn new(events: Vec<ApiEvent>) -> Self {
        Self { events: Mutex::new(events), lookups: AtomicUsize::new(0) }
    }
}

impl ChangeFeed for Events {
    async fn write_events(&self, start: i64, end: i64) -> Result<Vec<ApiEvent>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let events = self.events.lock().unwrap();
        Ok(events.iter().filter(|e| (start..end).contains(&e.time)).cloned().collect())
    }
}

/// A readable write event of API Gateway made at `time`.
pub(super) fn write_event(
    id: &str,
    time: i64,
    name: &str,
    request: serde_json::Value,
    response: serde_json::Value,
) -> ApiEvent {
    ApiEvent {
        id: id.into(),
        time,
        name: name.into(),
        request_parameters: request,
        response_elements: response,
        unreadable: false,
        failed: false,
    }
}

/// CloudWatch where these APIs had traffic on every stage: one request a minute. `ListMetrics`
/// lists those of `listed` only (a metric it does not list yet, or not any more); every one of
/// them answers `GetMetricData`. Calls are counted: listings, probes, reads.
#[derive(Default)]
pub(super) struct Traffic {
    pub busy: Vec<MetricSubject>,
    /// What `ListMetrics` lists; `None`: every busy API.
    pub listed: Option<Vec<MetricSubject>>,
    /// Queries (metrics requested) of every probe and every read.
    pub probed: AtomicUsize,
    pub read: AtomicUsize,
    /// The APIs of each `GetMetricData` read, in order.
    pub reads: Mutex<Vec<Vec<MetricSubject>>>,
    /// How long each read takes (a slow CloudWatch).
    pub read_delay: std::time::Duration,
}

impl Traffic {
    pub fn busy(busy: Vec<MetricSubject>) -> Self {
        Self { busy, ..Self::default() }
    }

    pub fn rest(apis: &[Api]) -> Self {
        Self::busy(apis.iter().map(|a| MetricSubject::RestApi { name: a.name.clone() }).collect())
    }
}

impl MetricSource for Traffic {
    async fn apis_with_traffic(&self, _: &str, _: &ApiTypes, _: i64, _: i64) -> Result<BTreeSet<MetricSubject>> {
        Ok(self.listed.as_ref().unwrap_or(&self.busy).iter().cloned().collect())
    }
    async fn api_series(
        &self,
        _: &str,
        apis: &[MetricSubject],
        start: i64,
        end: i64,
    ) -> Result<BTreeMap<MetricSubject, ApiSeries>> {
        self.read.fetch_add(apis.iter().map(MetricSubject::queries).sum(), Ordering::SeqCst);
        self.reads.lock().unwrap().push(apis.to_vec());
        if !self.read_delay.is_zero() {
            tokio::time::sleep(self.read_delay).await;
        }
        let minutes: BTreeMap<i64, f64> = (start..end).step_by(60).map(|minute| (minute, 1.0)).collect();
        let one = ApiSeries { count: minutes, ..ApiSeries::default() };
        Ok(apis.iter().filter(|s| self.busy.contains(s)).map(|subject| (subject.clone(), one.clone())).collect())
    }
    async fn with_traffic(&self, _: &str, apis: &[MetricSubject], _: i64, _: i64) -> Result<BTreeSet<MetricSubject>> {
        self.probed.fetch_add(apis.len(), Ordering::SeqCst);
        Ok(apis.iter().filter(|s| self.busy.contains(s)).cloned().collect())
    }
}

/// An account where nothing had traffic.
pub(super) fn no_traffic() -> Traffic {
    Traffic::default()
}
