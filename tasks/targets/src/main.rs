//! `targets` Lambda: the fan-out over the deployment's account-regions (plan, failures, report).

use agent_core::aws::organizations::SdkOrganization;
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::handlers::fan_out::{self, FanOut};
use agent_core::model::{TargetsAnswer, TargetsRequest};
use agent_core::target::Target;

struct Dependencies {
    config: Config,
    home: Target,
    organization: SdkOrganization,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("targets").await;
    Ok(Dependencies {
        home: bootstrap::home_target(&aws).await?,
        organization: SdkOrganization::new(aws_sdk_organizations::Client::new(&aws)),
        config,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("targets", dependencies, |request: TargetsRequest, deps, _deadline| async move {
        Ok(match request {
            TargetsRequest::Plan { input, execution_id } => {
                let fan_out =
                    FanOut { settings: &deps.config.targets, home: &deps.home, organization: &deps.organization };
                TargetsAnswer::Plan(fan_out.plan(input, &execution_id).await?)
            }
            TargetsRequest::Failed { target, error } => TargetsAnswer::Failed(fan_out::failed(target, error)),
            TargetsRequest::Report { results } => TargetsAnswer::Report(fan_out::report(results, now())),
        })
    })
    .await
}
