//! `transform`: turns a chunk's APIs (from the snapshot list-changes stored) into control plane
//! documents, or its runtimes' metrics (from CloudWatch) into one stored report per window.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::aws::apigateway::{ApiGateway, ApiKind, DeployedApi, deployed_stage};
use crate::aws::cloudwatch::{MetricSource, MetricSubject};
use crate::aws::state::{StateStore, report_key};
use crate::config::ApiTypes;
use crate::control_plane::types::ApiDocument;
use crate::error::{AgentError, Result};
use crate::mapping::{api_document, published_api_id};
use crate::metrics::{ApiIdentity, ApiSeries, metrics_model};
use crate::model::{AssetChunk, Batch, MetricsChunk};

/// Reports wait for publish at most for the rest of the execution; the table's TTL removes them.
const REPORT_TTL_SECONDS: i64 = 86_400;

/// Serialized documents per batch stay under this; what does not fit goes to `next` and the
/// workflow loops. With the ids that travel alongside (at most 500 in `next` and `deletes`,
/// about 24 KiB), a batch stays under 200 KiB, well inside Step Functions' 256 KiB limit.
pub const BATCH_BUDGET_BYTES: usize = 176 * 1024;

pub struct Transform<'a, G, M, S> {
    pub region: &'a str,
    pub api_types: &'a ApiTypes,
    pub gateway: &'a G,
    pub metrics: &'a M,
    pub state: &'a S,
}

impl<G: ApiGateway, M: MetricSource, S: StateStore> Transform<'_, G, M, S> {
    /// The chunk's documents, from the snapshot list-changes stored: no API Gateway call, so a
    /// retried chunk costs none either.
    pub async fn assets(&self, chunk: AssetChunk) -> Result<Batch> {
        let mut snapshot: HashMap<String, DeployedApi> = match &chunk.snapshot {
            Some(key) => self.state.load_snapshot(key).await?.into_iter().map(|d| (d.api.id.clone(), d)).collect(),
            None => HashMap::new(),
        };
        let mut upserts: Vec<ApiDocument> = Vec::new();
        let mut used = 0;
        let mut pending = chunk.upserts.into_iter();
        let mut next = None;
        while let Some(api_id) = pending.next() {
            let deployed = snapshot.remove(&api_id).ok_or_else(|| {
                AgentError::invalid_input(format!("chunk upsert {api_id} is not in its snapshot {:?}", chunk.snapshot))
            })?;
            let document = api_document(&deployed, self.region);
            let size = serde_json::to_vec(&document).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
            if !upserts.is_empty() && used + size > BATCH_BUDGET_BYTES {
                let mut rest = vec![api_id];
                rest.extend(pending);
                next = Some(AssetChunk {
                    runtime_id: chunk.runtime_id.clone(),
                    stage: chunk.stage.clone(),
                    upserts: rest,
                    deletes: vec![],
                    snapshot: chunk.snapshot.clone(),
                });
                break;
            }
            used += size;
            upserts.push(document);
        }
        Ok(Batch::Assets { runtime_id: chunk.runtime_id, upserts, deletes: chunk.deletes, next })
    }

    /// Reads each runtime's due windows from CloudWatch with one query per metric and API (not
    /// per window), and stores each window's report for publish. A runtime whose data is not
    /// complete yet fails the chunk with `MetricsIncomplete`: its windows wait, never sent as zero.
    pub async fn metrics(&self, chunk: MetricsChunk, now: i64) -> Result<Batch> {
        for runtime in &chunk.runtimes {
            let apis = self.apis_with_traffic(&runtime.stage, runtime.start, now).await?;
            let subjects: Vec<MetricSubject> = apis.keys().cloned().collect();
            let mut series = self.metrics.api_series(&runtime.stage, &subjects, runtime.start, runtime.end).await?;
            let measured: Vec<(ApiIdentity, ApiSeries)> =
                apis.into_iter().map(|(subject, api)| (api, series.remove(&subject).unwrap_or_default())).collect();
            for (start, end) in runtime.windows() {
                let in_window: Vec<(ApiIdentity, ApiSeries)> =
                    measured.iter().map(|(api, series)| (api.clone(), series.within(start, end))).collect();
                let report = metrics_model(end, &in_window);
                self.state.put_report(&report_key(&runtime.runtime_id, end), &report, now + REPORT_TTL_SECONDS).await?;
            }
        }
        Ok(Batch::Metrics(chunk))
    }

    /// The APIs deployed to `stage` that CloudWatch has traffic of since `since`, by the name or
    /// id CloudWatch knows them by. REST API metrics carry the API's name, not its id: of two
    /// REST APIs with one name on a stage, CloudWatch sums the traffic, and it is reported under
    /// the lowest id. HTTP and WebSocket APIs are told apart by id.
    async fn apis_with_traffic(
        &self,
        stage: &str,
        since: i64,
        now: i64,
    ) -> Result<BTreeMap<MetricSubject, ApiIdentity>> {
        let with_traffic = self.metrics.apis_with_traffic(stage, self.api_types, since, now).await?;
        let mut apis: BTreeMap<MetricSubject, ApiIdentity> = BTreeMap::new();
        if with_traffic.is_empty() {
            return Ok(apis);
        }
        let mut add = |kind: ApiKind, id: &str, name: &str, version: Option<String>| {
            let subject = MetricSubject::of(kind, id, name);
            if with_traffic.contains(&subject) && self.api_types.includes(kind) {
                let identity = || ApiIdentity { id: published_api_id(id, stage), name: name.to_owned(), version };
                apis.entry(subject).or_insert_with(identity);
            }
        };
        // The catalog the assets branch keeps, sorted by id; before the first full sync, a listing.
        if let Some(catalog) = self.state.load_catalog(stage).await? {
            for entry in catalog {
                add(entry.kind, &entry.id, &entry.name, entry.deployment);
            }
            return Ok(apis);
        }
        let mut listed = Vec::new();
        for generation in self.api_types.generations() {
            listed.extend(self.gateway.list_apis(generation).await?);
        }
        listed.sort_by(|a, b| a.id.cmp(&b.id));
        let mut seen = BTreeSet::new();
        for api in listed {
            let subject = MetricSubject::of(api.kind, &api.id, &api.name);
            if !with_traffic.contains(&subject) || !seen.insert(subject) {
                continue;
            }
            let stages = self.gateway.get_stages(api.kind.generation(), &api.id).await?;
            if let Some(deployed) = deployed_stage(&stages, stage) {
                add(api.kind, &api.id, &api.name, deployed.deployment_id.clone());
            }
        }
        Ok(apis)
    }
}
