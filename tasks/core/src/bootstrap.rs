//! Cold-start wiring shared by the five Lambda binaries: logging, configuration, clients, and
//! the loop that answers invocations.

use std::future::Future;
use std::sync::Arc;

use aws_config::SdkConfig;
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::aws::secrets;
use crate::config::{Config, CredentialSource};
use crate::control_plane::{Credentials, HttpControlPlane};
use crate::error::{AgentError, Result};

/// Structured logs as Lambda expects them (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`).
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// AWS configuration from the standard sources (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials).
pub async fn aws_config() -> SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn region(aws: &SdkConfig) -> Result<String> {
    aws.region()
        .map(|r| r.to_string())
        .ok_or(AgentError::InvalidConfig { variable: "AWS_REGION", reason: "is required".into() })
}

/// The control plane client, with credentials from Secrets Manager (or, locally, the environment).
pub async fn control_plane(config: &Config, aws: &SdkConfig) -> Result<HttpControlPlane> {
    let settings = &config.control_plane;
    let credentials = match &settings.credentials {
        CredentialSource::Secret { arn } => {
            secrets::control_plane_credentials(&aws_sdk_secretsmanager::Client::new(aws), arn).await?
        }
        CredentialSource::Inline { username, password } => {
            Credentials { username: username.clone(), password: password.clone() }
        }
    };
    let ca_bundle = match &settings.ca_bundle {
        Some(path) => Some(std::fs::read(path).map_err(|e| AgentError::InvalidConfig {
            variable: "APICP_CA_BUNDLE",
            reason: format!("cannot read {path}: {e}"),
        })?),
        None => None,
    };
    HttpControlPlane::new(&settings.url, credentials, settings.timeout, ca_bundle.as_deref())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Parses a task input, turning a contract violation into `InvalidInput` that names the field.
pub fn parse_input<T: DeserializeOwned>(payload: Value) -> Result<T> {
    serde_json::from_value(payload).map_err(|e| AgentError::invalid_input(format!("task input: {e}")))
}

/// Runs the Lambda loop. A failed cold start (bad configuration, unreadable secret) is answered
/// to every invocation as its typed error, so the state machine shows `InvalidConfig` rather
/// than an opaque runtime exit.
pub async fn serve<D, I, O, F, Fut>(dependencies: Result<D>, handler: F) -> Result<(), lambda_runtime::Error>
where
    D: Send + Sync + 'static,
    I: DeserializeOwned,
    O: Serialize,
    F: Fn(I, Arc<D>) -> Fut,
    Fut: Future<Output = Result<O>>,
{
    if let Err(error) = &dependencies {
        tracing::error!(error_type = error.error_type(), %error, "cold start failed");
    }
    let dependencies = dependencies.map(Arc::new);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let call = dependencies.clone().and_then(|deps| Ok(handler(parse_input(event.payload)?, deps)));
        // The runtime logs a failed invocation itself; no second log line here.
        async move { call?.await }
    }))
    .await
}
