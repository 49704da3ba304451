//! `transform`: reads the current state of a chunk's APIs (or a window's metrics) from AWS and
//! turns it into control plane documents.

use std::collections::BTreeMap;

use crate::aws::apigateway::{ApiGateway, deployed_stage};
use crate::aws::cloudwatch::MetricSource;
use crate::control_plane::types::ApiDocument;
use crate::error::Result;
use crate::mapping::{published_api_id, rest_api_document};
use crate::metrics::{ApiIdentity, metrics_model};
use crate::model::{AssetChunk, Batch, MetricsWindow};

/// Serialized documents per batch stay under this; what does not fit goes to `next` and the
/// workflow loops. With the ids that travel alongside (at most 500 in `next` and `deletes`,
/// about 24 KiB), a batch stays under 200 KiB, well inside Step Functions' 256 KiB limit.
pub const BATCH_BUDGET_BYTES: usize = 176 * 1024;

pub struct Transform<'a, G, M> {
    pub region: &'a str,
    pub gateway: &'a G,
    pub metrics: &'a M,
}

impl<G: ApiGateway, M: MetricSource> Transform<'_, G, M> {
    pub async fn assets(&self, chunk: AssetChunk) -> Result<Batch> {
        let mut upserts: Vec<ApiDocument> = Vec::new();
        let mut deletes = chunk.deletes;
        let mut used = 0;
        let mut pending = chunk.upserts.into_iter();
        let mut next = None;
        while let Some(api_id) = pending.next() {
            let Some(document) = self.document(&api_id, &chunk.stage).await? else {
                // Removed since the listing, or no longer deployed to this stage.
                deletes.push(published_api_id(&api_id, &chunk.stage));
                continue;
            };
            let size = serde_json::to_vec(&document).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
            if !upserts.is_empty() && used + size > BATCH_BUDGET_BYTES {
                let mut rest = vec![api_id];
                rest.extend(pending);
                next = Some(AssetChunk {
                    runtime_id: chunk.runtime_id.clone(),
                    stage: chunk.stage.clone(),
                    upserts: rest,
                    deletes: vec![],
                });
                break;
            }
            used += size;
            upserts.push(document);
        }
        Ok(Batch::Assets { runtime_id: chunk.runtime_id, upserts, deletes, next })
    }

    async fn document(&self, api_id: &str, stage_name: &str) -> Result<Option<ApiDocument>> {
        let Some(api) = self.gateway.get_rest_api(api_id).await? else { return Ok(None) };
        let stages = self.gateway.get_stages(api_id).await?;
        let Some(stage) = deployed_stage(&stages, stage_name) else {
            return Ok(None);
        };
        Ok(Some(rest_api_document(&api, stage, self.region)))
    }

    pub async fn metrics(&self, window: MetricsWindow, now: i64) -> Result<Batch> {
        let with_traffic = self.metrics.apis_with_traffic(&window.stage, window.start, now).await?;
        // CloudWatch names REST APIs by name; map names back to the APIs deployed to the stage.
        let mut apis: BTreeMap<String, ApiIdentity> = BTreeMap::new();
        if !with_traffic.is_empty() {
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
