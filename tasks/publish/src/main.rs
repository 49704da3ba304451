//! `publish` Lambda: sends one batch of documents or metrics to the control plane.

use agent_core::bootstrap;
use agent_core::config::Config;
use agent_core::handlers::publish::publish;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    let control_plane = match Config::from_env() {
        Ok(config) => bootstrap::control_plane(&config, &bootstrap::aws_config().await).await,
        Err(error) => Err(error),
    };
    bootstrap::serve(control_plane, |batch, control_plane| async move { publish(batch, &*control_plane).await }).await
}
