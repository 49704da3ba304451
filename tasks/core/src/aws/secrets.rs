//! AWS Secrets Manager: the control plane credentials, read once per container.

use serde::Deserialize;

use super::sdk_error;
use crate::control_plane::Credentials;
use crate::error::{AgentError, Result};

#[derive(Deserialize)]
struct SecretBody {
    username: String,
    password: String,
}

/// Reads `{"username": ..., "password": ...}` from the secret. Errors name the secret, never
/// its content.
pub async fn control_plane_credentials(client: &aws_sdk_secretsmanager::Client, arn: &str) -> Result<Credentials> {
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| sdk_error("secretsmanager:GetSecretValue", e))?;
    let text = secret.secret_string().ok_or_else(|| malformed(arn))?;
    parse(text).ok_or_else(|| malformed(arn))
}

fn parse(text: &str) -> Option<Credentials> {
    let body: SecretBody = serde_json::from_str(text).ok()?;
    (!body.username.is_empty() && !body.password.is_empty())
        .then_some(Credentials { username: body.username, password: body.password })
}

fn malformed(arn: &str) -> AgentError {
    AgentError::InvalidConfig {
        variable: "APICP_SECRET_ARN",
        reason: format!("secret {arn} must be a JSON string {{\"username\": ..., \"password\": ...}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_username_and_password_and_rejects_anything_else() {
        let credentials = parse(r#"{"username":"agent","password":"pw"}"#).unwrap();
        assert_eq!((credentials.username.as_str(), credentials.password.as_str()), ("agent", "pw"));
        assert!(parse(r#"{"username":"agent"}"#).is_none());
        assert!(parse(r#"{"username":"","password":"pw"}"#).is_none());
        assert!(parse("agent:pw").is_none());
    }

    #[test]
    fn malformed_secret_error_does_not_echo_the_secret() {
        let error = malformed("arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp");
        assert_eq!(error.error_type(), "InvalidConfig");
        assert!(error.to_string().contains("APICP_SECRET_ARN"));
    }
}
