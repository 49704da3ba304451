//! `transform` Lambda: turns a chunk into control plane documents, reading AWS's current state.

use agent_core::aws::{apigateway::SdkApiGateway, cloudwatch::CloudWatchMetrics, state::DynamoStateStore};
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::handlers::transform::Transform;
use agent_core::model::Chunk;

struct Dependencies {
    config: Config,
    region: String,
    gateway: SdkApiGateway,
    metrics: CloudWatchMetrics,
    state: DynamoStateStore,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config().await;
    Ok(Dependencies {
        region: bootstrap::region(&aws)?,
        gateway: bootstrap::api_gateway(&config, &aws),
        metrics: CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(&aws)),
        state: bootstrap::state_store(&config, &aws),
        config,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve(dependencies, |chunk: Chunk, deps, _deadline| async move {
        let task = Transform {
            region: &deps.region,
            api_types: &deps.config.api_types,
            gateway: &deps.gateway,
            metrics: &deps.metrics,
            state: &deps.state,
        };
        match chunk {
            Chunk::Assets(chunk) => task.assets(chunk).await,
            Chunk::Metrics(chunk) => task.metrics(chunk, now()).await,
        }
    })
    .await
}
