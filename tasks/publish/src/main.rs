//! `publish` Lambda: sends one batch of documents or metrics to the control plane.

use agent_core::bootstrap;
use agent_core::config::Config;
use agent_core::control_plane::HttpControlPlane;
use agent_core::handlers::publish::publish;

async fn control_plane() -> agent_core::Result<HttpControlPlane> {
    let config = Config::from_env()?;
    bootstrap::control_plane(&config, &bootstrap::aws_config().await)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve(control_plane, |batch, control_plane| async move { publish(batch, &*control_plane).await }).await
}
