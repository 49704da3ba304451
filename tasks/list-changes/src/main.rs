//! `list-changes` Lambda: decides what a branch publishes this run, in chunks.

use agent_core::aws::executions::SdkExecutions;
use agent_core::aws::{apigateway::SdkApiGateway, cloudtrail::CloudTrailFeed, state::DynamoStateStore};
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::list_changes::ListChanges;

struct Dependencies {
    config: Config,
    gateway: SdkApiGateway,
    control_plane: HttpControlPlane,
    state: DynamoStateStore,
    feed: CloudTrailFeed,
    executions: SdkExecutions,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("list-changes").await;
    let state = bootstrap::state_store(&config, &aws);
    Ok(Dependencies {
        gateway: bootstrap::api_gateway(&config, &aws, &state),
        control_plane: bootstrap::control_plane(&config, &aws)?,
        state,
        feed: CloudTrailFeed::new(aws_sdk_cloudtrail::Client::new(&aws)),
        executions: SdkExecutions::new(aws_sdk_sfn::Client::new(&aws)),
        config,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("list-changes", dependencies, |input, deps, _deadline| async move {
        let task = ListChanges {
            config: &deps.config,
            gateway: &deps.gateway,
            control_plane: &deps.control_plane,
            state: &deps.state,
            feed: &deps.feed,
            executions: &deps.executions,
        };
        task.run(input, now()).await
    })
    .await
}
