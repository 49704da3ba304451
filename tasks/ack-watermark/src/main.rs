//! `ack-watermark` Lambda: commits a branch's watermarks after its publishes succeeded.

use agent_core::bootstrap::{self, Targets, now};
use agent_core::config::Config;
use agent_core::handlers::ack_watermark::ack_watermark;
use agent_core::model::AckRequest;

async fn targets() -> agent_core::Result<Targets> {
    let config = Config::from_env()?;
    let aws = bootstrap::aws_config("ack-watermark").await;
    Targets::new(&config, &aws).await
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    bootstrap::init_tracing();
    bootstrap::serve("ack-watermark", targets, |input: AckRequest, targets, _deadline| async move {
        let state = targets.state_of(input.target())?;
        ack_watermark(input, &state, now()).await
    })
    .await
}
