//! One module per AWS service, each a small trait (what the agent needs) and an SDK adapter.

pub mod apigateway;
pub mod cloudtrail;
pub mod cloudwatch;
pub mod executions;
pub mod identity;
pub mod organizations;
pub mod pace;
pub mod secrets;
pub mod sessions;
pub mod state;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::AgentError;

/// Maps any SDK error into the agent's retry classes. Throttling and server-side failures are
/// retryable by the state machine; permission problems are not.
pub(crate) fn sdk_error<E, R>(operation: &str, error: SdkError<E, R>) -> AgentError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let message = format!("{operation}: {}", DisplayErrorContext(&error));
    match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AgentError::AwsUnavailable(message)
        }
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or_default();
            classify_code(code, context.raw().status_code(), message)
        }
        _ => AgentError::AwsRequestFailed(message),
    }
}

fn classify_code(code: &str, status: u16, message: String) -> AgentError {
    const THROTTLING: [&str; 7] = [
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottledException",
    ];
    const DENIED: [&str; 5] = [
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    ];
    // Credentials that expired (an assumed role's session, a container's credentials near their
    // end) are refreshed by the next attempt: retryable, unlike a missing permission.
    const EXPIRED: [&str; 3] = ["ExpiredToken", "ExpiredTokenException", "RequestExpired"];
    if THROTTLING.contains(&code) || status == 429 {
        AgentError::Throttled(message)
    } else if EXPIRED.contains(&code) {
        AgentError::AwsUnavailable(format!("{message} (expired credentials)"))
    } else if DENIED.contains(&code) || status == 403 {
        AgentError::AwsAccessDenied(message)
    } else if status >= 500 {
        AgentError::AwsUnavailable(message)
    } else {
        AgentError::AwsRequestFailed(message)
    }
}

/// The HTTP status of a raw SDK response, whatever the service crate.
pub(crate) trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_error_codes_map_to_retry_classes() {
        let cases = [
            ("ThrottlingException", 400, "Throttled"),
            ("TooManyRequestsException", 429, "Throttled"),
            ("ProvisionedThroughputExceededException", 400, "Throttled"),
            ("AccessDeniedException", 400, "AwsAccessDenied"),
            ("ExpiredTokenException", 400, "AwsUnavailable"),
            ("ExpiredToken", 403, "AwsUnavailable"),
            ("", 403, "AwsAccessDenied"),
            ("InternalFailure", 500, "AwsUnavailable"),
            ("ServiceUnavailable", 503, "AwsUnavailable"),
            ("ValidationException", 400, "AwsRequestFailed"),
        ];
        for (code, status, expected) in cases {
            assert_eq!(classify_code(code, status, "x".into()).error_type(), expected, "{code} {status}");
        }
    }
}
