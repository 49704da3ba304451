//! `ensure-runtime` Lambda: registers one control plane runtime per stage and sends heartbeats.

use agent_core::aws::executions::SdkExecutions;
use agent_core::aws::{apigateway::SdkApiGateway, identity, state::DynamoStateStore};
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::ensure_runtime::EnsureRuntime;

struct Dependencies {
    config: Config,
    account: String,
    region: String,
    gateway: SdkApiGateway,
    control_plane: HttpControlPlane,
    state: DynamoStateStore,
    executions: SdkExecutions,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("ensure-runtime").await;
    let state = bootstrap::state_store(&config, &aws);
    Ok(Dependencies {
        account: identity::account_id(&aws_sdk_sts::Client::new(&aws)).await?,
        region: bootstrap::region(&aws)?,
        gateway: bootstrap::api_gateway(&config, &aws, &state),
        control_plane: bootstrap::control_plane(&config, &aws)?,
        executions: SdkExecutions::new(aws_sdk_sfn::Client::new(&aws)),
        state,
        config,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("ensure-runtime", dependencies, |input, deps, _deadline| async move {
        let task = EnsureRuntime {
            config: &deps.config,
            account: &deps.account,
            region: &deps.region,
            gateway: &deps.gateway,
            control_plane: &deps.control_plane,
            state: &deps.state,
            executions: &deps.executions,
        };
        task.run(input, now()).await
    })
    .await
}
