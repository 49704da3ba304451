//! The five tasks, each a plain async function over the adapters' traits so tests can call it
//! with stand-ins. `main.rs` of each Lambda only wires real clients to one of these.

pub mod ack_watermark;
pub mod ensure_runtime;
pub mod list_changes;
pub mod publish;
pub mod transform;

use std::collections::BTreeMap;

use crate::aws::apigateway::{ApiGateway, DeployedApi};
use crate::error::Result;

/// The REST APIs deployed to each stage, by API id (stages without a deployment serve
/// nothing): one listing of the account and one GetStages per API, the least API Gateway allows.
pub(crate) async fn deployments_by_stage(gateway: &impl ApiGateway) -> Result<BTreeMap<String, Vec<DeployedApi>>> {
    let mut by_stage: BTreeMap<String, Vec<DeployedApi>> = BTreeMap::new();
    for api in gateway.list_rest_apis().await? {
        for stage in gateway.get_stages(&api.id).await? {
            if stage.deployment_id.is_some() {
                by_stage.entry(stage.name.clone()).or_default().push(DeployedApi { api: api.clone(), stage });
            }
        }
    }
    for apis in by_stage.values_mut() {
        apis.sort_by(|a, b| a.api.id.cmp(&b.api.id));
    }
    Ok(by_stage)
}

#[cfg(test)]
mod tests;
