//! `transform`: turns a chunk's APIs (from the snapshot list-changes stored) or a window's
//! metrics (from CloudWatch) into control plane documents.

use std::collections::{BTreeMap, HashMap};

use crate::aws::apigateway::{ApiGateway, DeployedApi, deployed_stage};
use crate::aws::cloudwatch::MetricSource;
use crate::aws::state::StateStore;
use crate::control_plane::types::ApiDocument;
use crate::error::{AgentError, Result};
use crate::mapping::{published_api_id, rest_api_document};
use crate::metrics::{ApiIdentity, metrics_model};
use crate::model::{AssetChunk, Batch, MetricsWindow};

/// Serialized documents per batch stay under this; what does not fit goes to `next` and the
/// workflow loops. With the ids that travel alongside (at most 500 in `next` and `deletes`,
/// about 24 KiB), a batch stays under 200 KiB, well inside Step Functions' 256 KiB limit.
pub const BATCH_BUDGET_BYTES: usize = 176 * 1024;

pub struct Transform<'a, G, M, S> {
    pub region: &'a str,
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
            let document = rest_api_document(&deployed.api, &deployed.stage, self.region);
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

    pub async fn metrics(&self, window: MetricsWindow, now: i64) -> Result<Batch> {
        let with_traffic = self.metrics.apis_with_traffic(&window.stage, window.start, now).await?;
        // CloudWatch names REST APIs by name; map names back to the APIs deployed to the stage,
        // from the catalog the assets branch keeps (the first by id wins a shared name).
        let mut apis: BTreeMap<String, ApiIdentity> = BTreeMap::new();
        let catalog = match with_traffic.is_empty() {
            true => None,
            false => self.state.load_catalog(&window.stage).await?,
        };
        if let Some(catalog) = catalog {
            for entry in catalog.into_iter().filter(|e| with_traffic.contains(&e.name)) {
                apis.entry(entry.name.clone()).or_insert_with(|| ApiIdentity {
                    id: published_api_id(&entry.id, &window.stage),
                    name: entry.name,
                    version: entry.deployment,
                });
            }
        } else if !with_traffic.is_empty() {
            // No catalog yet (before the first full sync): list API Gateway.
            for api in self.gateway.list_rest_apis().await? {
                if !with_traffic.contains(&api.name) || apis.contains_key(&api.name) {
                    continue;
                }
                let stages = self.gateway.get_stages(&api.id).await?;
                if let Some(stage) = deployed_stage(&stages, &window.stage) {
                    apis.insert(
                        api.name.clone(),
                        ApiIdentity {
                            id: published_api_id(&api.id, &window.stage),
                            name: api.name.clone(),
                            version: stage.deployment_id.clone(),
                        },
                    );
                }
            }
        }
        let names: Vec<String> = apis.keys().cloned().collect();
        let mut series = self.metrics.rest_api_series(&window.stage, &names, window.start, window.end).await?;
        let measured: Vec<_> =
            apis.into_iter().map(|(name, api)| (api, series.remove(&name).unwrap_or_default())).collect();
        Ok(Batch::Metrics { runtime_id: window.runtime_id, metrics: metrics_model(window.end, &measured) })
    }
}
