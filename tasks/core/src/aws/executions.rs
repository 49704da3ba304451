//! AWS Step Functions: whether the execution holding a claim is still running, and starting
//! the executions the tick hands targets over to.
//!
//! A claim outlives an execution that ended without releasing it: one stopped by hand, timed
//! out, or failed with an error no `Catch` sees (`States.DataLimitExceeded`, `States.Runtime`).
//! Asking Step Functions frees the stage at once instead of after the claim's TTL. A tick's
//! claims are not an execution's: they are short (see `handlers::tick`) and simply expire.

use std::future::Future;

use aws_sdk_sfn::types::ExecutionStatus;

use super::sdk_error;
use crate::error::Result;

pub trait Executions: Send + Sync {
    /// `false` when the execution has ended or does not exist; `true` while it runs.
    fn is_running(&self, execution_arn: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// Starts executions of a state machine.
pub trait ExecutionStarter: Send + Sync {
    /// The new execution's ARN; `None` when an execution of that name exists already (the
    /// same tick invoked again).
    fn start(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;
}

#[derive(Debug, Clone)]
pub struct SdkExecutions {
    client: aws_sdk_sfn::Client,
}

impl SdkExecutions {
    pub fn new(client: aws_sdk_sfn::Client) -> Self {
        Self { client }
    }
}

impl Executions for SdkExecutions {
    async fn is_running(&self, execution_arn: &str) -> Result<bool> {
        if !execution_arn.starts_with("arn:") {
            // A tick's pass, whose claims expire within minutes: wait for that.
            return Ok(true);
        }
        match self.client.describe_execution().execution_arn(execution_arn).send().await {
            // A redrivable failed execution may still be redriven, which would resume its work.
            Ok(execution) => {
                Ok(matches!(execution.status(), ExecutionStatus::Running | ExecutionStatus::PendingRedrive))
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_execution_does_not_exist()) => Ok(false),
            Err(e) => Err(sdk_error("states:DescribeExecution", e)),
        }
    }
}

impl ExecutionStarter for SdkExecutions {
    async fn start(&self, state_machine_arn: &str, name: &str, input: &str) -> Result<Option<String>> {
        let started =
            self.client.start_execution().state_machine_arn(state_machine_arn).name(name).input(input).send().await;
        match started {
            Ok(execution) => Ok(Some(execution.execution_arn().to_owned())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_execution_already_exists()) => Ok(None),
            Err(e) => Err(sdk_error("states:StartExecution", e)),
        }
    }
}
