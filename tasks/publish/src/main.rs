//! `publish` Lambda: sends one batch of documents, or a chunk's stored metrics windows, to the
//! control plane.

use agent_core::bootstrap::{self, Targets, now};
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::publish::Publish;
use agent_core::model::Batch;

struct Dependencies {
    control_plane: HttpControlPlane,
    targets: Targets,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("publish").await;
    Ok(Dependencies {
        control_plane: bootstrap::control_plane(&config, &aws)?,
        targets: Targets::new(&config, &aws).await?,
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("publish", dependencies, |batch: Batch, deps, deadline| async move {
        let state = deps.targets.state_of(batch.target())?;
        let longest_request = deps.control_plane.longest_request();
        Publish { control_plane: &deps.control_plane, state: &state, deadline, longest_request }.run(batch, now()).await
    })
    .await
}
