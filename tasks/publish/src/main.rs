//! `publish` Lambda: sends one batch of documents, or a chunk's stored metrics windows, to the
//! control plane.

use agent_core::aws::state::DynamoStateStore;
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::publish::Publish;

struct Dependencies {
    control_plane: HttpControlPlane,
    state: DynamoStateStore,
}

async fn dependencies() -> agent_core::Result<Dependencies> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("publish").await;
    Ok(Dependencies {
        control_plane: bootstrap::control_plane(&config, &aws)?,
        state: bootstrap::state_store(&config, &aws),
    })
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("publish", dependencies, |batch, deps, deadline| async move {
        let longest_request = deps.control_plane.longest_request();
        Publish { control_plane: &deps.control_plane, state: &deps.state, deadline, longest_request }
            .run(batch, now())
            .await
    })
    .await
}
