//! `transform` Lambda: turns a chunk into control plane documents (from the snapshot
//! list-changes stored) or its runtimes' CloudWatch metrics into stored window reports.

use agent_core::aws::cloudwatch::CloudWatchMetrics;
use agent_core::bootstrap::{self, Targets, now};
use agent_core::config::Config;
use agent_core::handlers::transform::Transform;
use agent_core::model::Chunk;

struct Dependencies {
    config: Config,
    targets: Targets,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("transform").await;
    Ok(Dependencies { targets: Targets::new(&config, &aws).await?, config })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("transform", dependencies, |chunk: Chunk, deps, deadline| async move {
        let target = deps.targets.open(chunk.target()).await?;
        let metrics = CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(&target.aws));
        let task = Transform {
            region: &target.target.region,
            api_types: &deps.config.api_types,
            metrics: &metrics,
            state: &target.state,
        };
        match chunk {
            Chunk::Assets(chunk) => task.assets(chunk).await,
            Chunk::Metrics(chunk) => task.metrics(chunk, now(), deadline).await,
        }
    })
    .await
}
