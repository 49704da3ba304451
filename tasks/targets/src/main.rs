//! `targets` Lambda: the fan-out over the deployment's account-regions (plan, failures, report),
//! the schedule's tick (deployed as a function of its own, with the tasks' permissions), and the
//! push starter (its own function too, invoked with SQS batches of EventBridge events).

use agent_core::aws::executions::SdkExecutions;
use agent_core::aws::organizations::SdkOrganization;
use agent_core::bootstrap::{self, SdkTargetPasses, Targets, now};
use agent_core::config::Config;
use agent_core::handlers::fan_out::{self, FanOut};
use agent_core::handlers::push::PushStarter;
use agent_core::handlers::tick::{Tick, Workflows};
use agent_core::model::{TargetsAnswer, TargetsInvocation, TargetsRequest};
use agent_core::target::Target;

struct Dependencies {
    home: Target,
    organization: SdkOrganization,
    executions: SdkExecutions,
    passes: SdkTargetPasses,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    // The tick and the push starter are functions of their own: their calls are their own.
    let name = match (std::env::var_os("PUSH_STARTER"), std::env::var_os("SYNC_STATE_MACHINE_ARN")) {
        (Some(_), _) => "push-starter",
        (None, Some(_)) => "tick",
        (None, None) => "targets",
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
    bootstrap::serve("targets", dependencies, |invocation: TargetsInvocation, deps, deadline| async move {
        let settings = &deps.passes.config.targets;
        let request = match invocation {
            TargetsInvocation::Action(request) => request,
            TargetsInvocation::Push(batch) => {
                let workflows = Workflows::from_env()?;
                let starter = PushStarter {
                    settings,
                    home: &deps.home,
                    starter: &deps.executions,
                    sync_workflow: &workflows.sync,
                };
                return Ok(TargetsAnswer::Push(starter.run(batch, now()).await));
            }
        };
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
