//! AWS Secrets Manager: the control plane credentials. Read on first use and again whenever the
//! control plane refuses them, so a rotated secret takes effect without a redeploy.

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use super::sdk_error;
use crate::control_plane::{Credentials, CredentialsSource};
use crate::error::{AgentError, Result};

/// The control plane credentials in the secret `arn`: `{"username": ..., "password": ...}`.
#[derive(Debug, Clone)]
pub struct SecretCredentials {
    client: aws_sdk_secretsmanager::Client,
    arn: String,
}

impl SecretCredentials {
    pub fn new(client: aws_sdk_secretsmanager::Client, arn: impl Into<String>) -> Self {
        Self { client, arn: arn.into() }
    }

    async fn read(&self) -> Result<Credentials> {
        let secret = self
            .client
            .get_secret_value()
            .secret_id(&self.arn)
            .send()
            .await
            .map_err(|e| sdk_error("secretsmanager:GetSecretValue", e))?;
        parse(&self.arn, secret.secret_string().unwrap_or_default())
    }
}

impl CredentialsSource for SecretCredentials {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Credentials>> + Send + '_>> {
        Box::pin(self.read())
    }
}

/// The credentials, `CredentialsNotSet` for the deployment's placeholder (empty fields), and
/// `InvalidConfig` for anything that is not the documented JSON object. Errors name the secret,
/// never its content.
pub(crate) fn parse(arn: &str, text: &str) -> Result<Credentials> {
    let invalid = || AgentError::InvalidConfig {
        variable: "APICP_SECRET_ARN",
        reason: format!("secret {arn} must be a JSON string {{\"username\": ..., \"password\": ...}}"),
    };
    let body: Map<String, Value> = serde_json::from_str(text).map_err(|_| invalid())?;
    let field = |name: &str| match body.get(name) {
        None => Ok(""),
        Some(value) => value.as_str().ok_or_else(invalid),
    };
    let (username, password) = (field("username")?, field("password")?);
    // Absent or empty fields: the deployment's placeholder, not filled in yet.
    if username.is_empty() || password.is_empty() {
        return Err(AgentError::CredentialsNotSet(format!(
            "secret {arn} has no username and password yet; put the control plane's credentials into it"
        )));
    }
    Ok(Credentials { username: username.to_owned(), password: password.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp";

    #[test]
    fn parses_username_and_password() {
        let credentials = parse(ARN, r#"{"username":"agent","password":"pw"}"#).unwrap();
        assert_eq!((credentials.username.as_str(), credentials.password.as_str()), ("agent", "pw"));
    }

    #[test]
    fn the_deployments_placeholder_is_credentials_not_set() {
        for placeholder in [r#"{"username":"","password":""}"#, r#"{"username":"agent"}"#, "{}"] {
            let error = parse(ARN, placeholder).unwrap_err();
            assert_eq!(error.error_type(), "CredentialsNotSet", "{placeholder}");
            assert!(error.to_string().contains(ARN));
        }
    }

    #[test]
    fn a_secret_that_is_not_the_json_object_is_invalid_config_without_echoing_it() {
        for text in ["agent:hunter2", "", r#"["agent","hunter2"]"#, r#"{"username":"agent","password":7}"#] {
            let error = parse(ARN, text).unwrap_err();
            assert_eq!(error.error_type(), "InvalidConfig", "{text}");
            assert!(error.to_string().contains("APICP_SECRET_ARN"));
            assert!(!error.to_string().contains("hunter2"));
        }
    }
}
