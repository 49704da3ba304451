//! The five tasks, each a plain async function over the adapters' traits so tests can call it
//! with stand-ins. `main.rs` of each Lambda only wires real clients to one of these.

pub mod ack_watermark;
pub mod ensure_runtime;
pub mod list_changes;
pub mod publish;
pub mod transform;

use std::collections::BTreeMap;

use crate::aws::apigateway::ApiGateway;
use crate::error::Result;

/// REST API ids deployed to each stage (stages without a deployment serve nothing).
pub(crate) async fn deployments_by_stage(gateway: &impl ApiGateway) -> Result<BTreeMap<String, Vec<String>>> {
    let mut by_stage: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for api in gateway.list_rest_apis().await? {
        for stage in gateway.get_stages(&api.id).await? {
            if stage.deployment_id.is_some() {
                by_stage.entry(stage.name).or_default().push(api.id.clone());
            }
        }
    }
    for ids in by_stage.values_mut() {
        ids.sort();
    }
    Ok(by_stage)
}

#[cfg(test)]
mod tests;
