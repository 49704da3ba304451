//! `list-changes` Lambda: decides what a branch publishes this run, in chunks.

use agent_core::aws::cloudtrail::CloudTrailFeed;
use agent_core::aws::executions::SdkExecutions;
use agent_core::bootstrap::{self, Targets, now};
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::list_changes::ListChanges;
use agent_core::model::ListChangesInput;

struct Dependencies {
    config: Config,
    targets: Targets,
    control_plane: HttpControlPlane,
    executions: SdkExecutions,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("list-changes").await;
    Ok(Dependencies {
        targets: Targets::new(&config, &aws).await?,
        control_plane: bootstrap::control_plane(&config, &aws)?,
        executions: SdkExecutions::new(aws_sdk_sfn::Client::new(&aws)),
        config,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("list-changes", dependencies, |input: ListChangesInput, deps, _deadline| async move {
        let target = deps.targets.open(input.target.as_ref()).await?;
        let task = ListChanges {
            config: &deps.config,
            gateway: &bootstrap::api_gateway(&deps.config, &target.aws, &target.state),
            control_plane: &deps.control_plane,
            state: &target.state,
            feed: &CloudTrailFeed::new(aws_sdk_cloudtrail::Client::new(&target.aws)),
            executions: &deps.executions,
        };
        task.run(input, now()).await
    })
    .await
}
