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
        let api_types = &deps.config.api_types;
        match chunk {
            // Documents come from the stored snapshot: no call of the target's AWS, so no role assumed.
            Chunk::Assets(chunk) => {
                let state = deps.targets.state_of(chunk.target.as_ref())?;
                let region = chunk.target.as_ref().unwrap_or(deps.targets.home()).region.clone();
                let metrics = CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(deps.targets.home_config()));
                Transform { region: &region, api_types, metrics: &metrics, state: &state }.assets(chunk).await
            }
            Chunk::Metrics(chunk) => {
                let target = deps.targets.open(chunk.target.as_ref()).await?;
                let metrics = CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(&target.aws));
                let task =
                    Transform { region: &target.target.region, api_types, metrics: &metrics, state: &target.state };
                task.metrics(chunk, now(), deadline).await
            }
        }
    })
    .await
}
