//! `ack-watermark` Lambda: commits a branch's watermarks after its publishes succeeded.

use agent_core::aws::state::DynamoStateStore;
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::handlers::ack_watermark::ack_watermark;

async fn state_store() -> agent_core::Result<DynamoStateStore> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("ack-watermark").await;
    Ok(bootstrap::state_store(&config, &aws))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("ack-watermark", state_store, |input, state, _deadline| async move {
        ack_watermark(input, &*state, now()).await
    })
    .await
}
