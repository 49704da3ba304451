//! `ack-watermark` Lambda: commits a branch's watermarks after its publishes succeeded.

use agent_core::aws::state::DynamoStateStore;
use agent_core::bootstrap::{self, now};
use agent_core::config::Config;
use agent_core::handlers::ack_watermark::ack_watermark;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    let state = match Config::from_env() {
        Ok(config) => {
            let aws = bootstrap::aws_config().await;
            Ok(DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.state_table))
        }
        Err(error) => Err(error),
    };
    bootstrap::serve(state, |input, state| async move { ack_watermark(input, &*state, now()).await }).await
}
