//! `targets` Lambda: the fan-out over the deployment's account-regions (plan, failures, report),
//! and the schedule's tick (deployed as a function of its own, with the tasks' permissions).

use agent_core::aws::executions::SdkExecutions;
use agent_core::aws::organizations::SdkOrganization;
use agent_core::bootstrap::{self, SdkTargetPasses, Targets, now};
use agent_core::config::Config;
use agent_core::handlers::fan_out::{self, FanOut};
use agent_core::handlers::tick::{Tick, Workflows};
use agent_core::model::{TargetsAnswer, TargetsRequest};
use agent_core::target::Target;

struct Dependencies {
    home: Target,
    organization: SdkOrganization,
    executions: SdkExecutions,
    passes: SdkTargetPasses,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    // The tick is a function of its own, the one told where to hand over: its calls are its own.
    let name = match std::env::var_os("SYNC_STATE_MACHINE_ARN") {
        Some(_) => "tick",
        None => "targets",
    };
    let aws = bootstrap::aws_config(name).await;
    let targets = Targets::new(&config, &aws).await?;
    let executions = SdkExecutions::new(aws_sdk_sfn::Client::new(&aws));
    Ok(Dependencies {
        home: targets.home().clone(),
        organization: SdkOrganization::new(aws_sdk_organizations::Client::new(&aws)),
        executions: executions.clone(),
        passes: SdkTargetPasses {
            control_plane: bootstrap::control_plane(&config, &aws)?,
            targets,
            executions,
            config,
        },
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("targets", dependencies, |request: TargetsRequest, deps, deadline| async move {
        let settings = &deps.passes.config.targets;
        Ok(match request {
            TargetsRequest::Plan { input, execution_id } => {
                let fan_out = FanOut { settings, home: &deps.home, organization: &deps.organization };
                TargetsAnswer::Plan(fan_out.plan(input, &execution_id).await?)
            }
            TargetsRequest::Failed { target, error } => TargetsAnswer::Failed(fan_out::failed(target, error)),
            TargetsRequest::Report { results } => TargetsAnswer::Report(fan_out::report(results, now())),
            TargetsRequest::Tick { scheduled_time } => {
                let tick = Tick {
                    settings,
                    home: &deps.home,
                    organization: &deps.organization,
                    passes: &deps.passes,
                    starter: &deps.executions,
                    workflows: &Workflows::from_env()?,
                };
                TargetsAnswer::Tick(tick.run(scheduled_time.as_deref(), Some(deadline), now()).await?)
            }
        })
    })
    .await
}
