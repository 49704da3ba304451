//! The account the agent runs in, part of every runtime id.

use super::sdk_error;
use crate::error::{AgentError, Result};

pub async fn account_id(client: &aws_sdk_sts::Client) -> Result<String> {
    let identity = client.get_caller_identity().send().await.map_err(|e| sdk_error("sts:GetCallerIdentity", e))?;
    identity
        .account()
        .map(str::to_owned)
        .ok_or_else(|| AgentError::AwsRequestFailed("sts:GetCallerIdentity answered no account".into()))
}
