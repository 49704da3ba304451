//! `ensure-runtime` Lambda: registers one control plane runtime per stage and sends heartbeats.

use agent_core::aws::cloudtrail::CloudTrailFeed;
use agent_core::aws::executions::SdkExecutions;
use agent_core::bootstrap::{self, Targets, now};
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::ensure_runtime::EnsureRuntime;
use agent_core::handlers::push::PushCheck;
use agent_core::model::EnsureRuntimeInput;

struct Dependencies {
    config: Config,
    targets: Targets,
    control_plane: HttpControlPlane,
    executions: SdkExecutions,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("ensure-runtime").await;
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
    bootstrap::serve("ensure-runtime", dependencies, |input: EnsureRuntimeInput, deps, _deadline| async move {
        let execution_input = input.execution_input()?;
        let target = deps.targets.open(execution_input.target.as_ref()).await?;
        let task = EnsureRuntime {
            config: &deps.config,
            account: &target.target.account,
            region: &target.target.region,
            gateway: &bootstrap::api_gateway(&deps.config, &target.aws, &target.state),
            control_plane: &deps.control_plane,
            state: &target.state,
            executions: &deps.executions,
            store_listing: true,
        };
        let mut ready = task.run(input, now()).await?;
        let trails = CloudTrailFeed::new(aws_sdk_cloudtrail::Client::new(&target.aws));
        ready.push = PushCheck { config: &deps.config, trails: &trails, state: &target.state }.status(now()).await;
        Ok(ready)
    })
    .await
}
