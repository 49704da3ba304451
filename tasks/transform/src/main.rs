//! `transform` Lambda: turns a chunk into control plane documents (from the snapshot
//! list-changes stored) or its runtimes' CloudWatch metrics into stored window reports.

use agent_core::aws::{cloudwatch::CloudWatchMetrics, state::DynamoStateStore};
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::handlers::transform::Transform;
use agent_core::model::Chunk;

struct Dependencies {
    config: Config,
    region: String,
    metrics: CloudWatchMetrics,
    state: DynamoStateStore,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("transform").await;
    Ok(Dependencies {
        region: bootstrap::region(&aws)?,
        metrics: CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(&aws)),
        state: bootstrap::state_store(&config, &aws),
        config,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("transform", dependencies, |chunk: Chunk, deps, deadline| async move {
        let task = Transform {
            region: &deps.region,
            api_types: &deps.config.api_types,
            metrics: &deps.metrics,
            state: &deps.state,
        };
        match chunk {
            Chunk::Assets(chunk) => task.assets(chunk).await,
            Chunk::Metrics(chunk) => task.metrics(chunk, now(), deadline).await,
        }
    })
    .await
}
