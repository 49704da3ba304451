//! The one error type of the agent and its single conversion into a Lambda `Diagnostic`.
//!
//! The `errorType` strings are a contract with `statemachine/agent.asl.json`: its `Retry` and
//! `Catch` blocks match on them. Renaming a variant's type is a breaking change of the workflow.

use lambda_runtime::Diagnostic;
use thiserror::Error;

// Clone: a cold-start error that cannot heal is kept and answered to every invocation.
#[derive(Debug, Clone, Error)]
pub enum AgentError {
    /// A setting is missing or malformed; names the environment variable.
    #[error("invalid configuration {variable}: {reason}")]
    InvalidConfig { variable: &'static str, reason: String },

    /// The task input does not match its contract, or the control plane rejected a request (400).
    #[error("invalid input: {message}{}", details_suffix(.details))]
    InvalidInput { message: String, details: Vec<String> },

    /// The control plane secret still holds the placeholder the deployment created: the user has
    /// not put the control plane's credentials into it yet. The workflow ends without failing.
    #[error("control plane credentials not set: {0}")]
    CredentialsNotSet(String),

    /// The control plane refused our credentials (401/403), also after reading them again.
    #[error("control plane refused the credentials: {0}")]
    Unauthorized(String),

    /// The control plane is down, slow or overloaded (5xx, timeouts, connection errors).
    #[error("control plane unavailable: {0}")]
    ControlPlaneUnavailable(String),

    /// A request reached the control plane, or may have, but its answer was lost (a timeout
    /// after sending, a connection reset, a gateway timeout). The workflow retries it as
    /// `ControlPlaneUnavailable`; only a non-idempotent request (the metrics POST) must not be
    /// repeated on the strength of it.
    #[error("control plane unavailable: {0} (the request may have been applied)")]
    DeliveryUnknown(String),

    /// The control plane answered a status this agent does not expect (404, 409, ...).
    #[error("control plane rejected the request: {0}")]
    ControlPlaneRejected(String),

    /// AWS or the control plane asked us to slow down (429, ThrottlingException).
    #[error("throttled: {0}")]
    Throttled(String),

    /// An AWS API could not be reached or failed on its side (5xx, timeout, dispatch failure).
    #[error("AWS unavailable: {0}")]
    AwsUnavailable(String),

    /// The function's role may not call an AWS API it needs.
    #[error("AWS access denied: {0}")]
    AwsAccessDenied(String),

    /// A target account-region cannot be reached: its role refused to be assumed (no such role,
    /// a trust policy or external id that does not admit the agent) or its region is not enabled.
    /// Fails that target only; the next run tries it again.
    #[error("target {target} unreachable: {reason}")]
    TargetUnreachable { target: String, reason: String },

    /// An AWS API rejected the request for a reason retrying cannot fix.
    #[error("AWS request failed: {0}")]
    AwsRequestFailed(String),

    /// CloudWatch answered without all the data of a window (a `StatusCode` other than
    /// `Complete`, or `Messages`): the window waits rather than being sent as zero traffic.
    #[error("CloudWatch metrics incomplete: {0}")]
    MetricsIncomplete(String),

    /// Metrics windows planned for this run were not all accepted by the control plane; the
    /// next run resumes each named stage after its last accepted window.
    #[error("metrics windows not sent for stage(s) {}: the next run resumes them", .stages.join(", "))]
    WindowsNotSent { stages: Vec<String> },

    /// A full reconciliation would delete APIs on the strength of an empty AWS listing.
    #[error(
        "refusing to delete {count} API(s) from runtime {runtime_id}: API Gateway listed no deployed API \
         for its stage (set ALLOW_EMPTY_LISTING_DELETES=true to allow)"
    )]
    UnsafeDeletion { runtime_id: String, count: usize },
}

fn details_suffix(details: &[String]) -> String {
    if details.is_empty() { String::new() } else { format!(" ({})", details.join("; ")) }
}

impl AgentError {
    /// The stable `errorType` that Step Functions matches on.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidConfig { .. } => "InvalidConfig",
            Self::InvalidInput { .. } => "InvalidInput",
            Self::CredentialsNotSet(_) => "CredentialsNotSet",
            Self::Unauthorized(_) => "Unauthorized",
            Self::ControlPlaneUnavailable(_) | Self::DeliveryUnknown(_) => "ControlPlaneUnavailable",
            Self::ControlPlaneRejected(_) => "ControlPlaneRejected",
            Self::Throttled(_) => "Throttled",
            Self::AwsUnavailable(_) => "AwsUnavailable",
            Self::AwsAccessDenied(_) => "AwsAccessDenied",
            Self::AwsRequestFailed(_) => "AwsRequestFailed",
            Self::TargetUnreachable { .. } => "TargetUnreachable",
            Self::UnsafeDeletion { .. } => "UnsafeDeletion",
            Self::MetricsIncomplete(_) => "MetricsIncomplete",
            Self::WindowsNotSent { .. } => "WindowsNotSent",
        }
    }

    /// Whether the state machine retries this error (kept in step with the ASL `Retry` lists).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::ControlPlaneUnavailable(_)
                | Self::DeliveryUnknown(_)
                | Self::Throttled(_)
                | Self::AwsUnavailable(_)
                | Self::MetricsIncomplete(_)
        )
    }

    /// Whether the control plane refused one request for what it carries (a `400` with its
    /// details, or an answer such as `404`, `409` or `413` this agent does not expect): another
    /// API's request may well succeed, and repeating this one cannot change the answer. Publish
    /// records such an API as refused and goes on with the others.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::InvalidInput { .. } | Self::ControlPlaneRejected(_))
    }

    /// Whether the error concerns one stage only (its runtime unknown to the control plane, a
    /// listing it refused, a full sync that would empty it): that stage is held back and the
    /// other stages go on. Anything else (credentials, permissions, an unavailable service) would
    /// fail every stage alike.
    pub fn is_stage_scoped(&self) -> bool {
        matches!(self, Self::UnsafeDeletion { .. }) || self.is_refusal()
    }

    /// Whether a failed cold start with this error can never heal in this container: only a
    /// redeploy changes the configuration. Anything else (a throttled or unreachable AWS API, a
    /// secret not filled in yet) is tried again on the next invocation.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidConfig { .. })
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput { message: message.into(), details: Vec::new() }
    }
}

impl From<AgentError> for Diagnostic {
    fn from(error: AgentError) -> Self {
        Diagnostic { error_type: error.error_type().to_owned(), error_message: error.to_string() }
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_stable_error_type_and_retry_class() {
        let cases = [
            (AgentError::InvalidConfig { variable: "APICP_URL", reason: "missing".into() }, "InvalidConfig", false),
            (AgentError::invalid_input("bad"), "InvalidInput", false),
            (AgentError::CredentialsNotSet("placeholder".into()), "CredentialsNotSet", false),
            (AgentError::Unauthorized("401".into()), "Unauthorized", false),
            (AgentError::ControlPlaneUnavailable("503".into()), "ControlPlaneUnavailable", true),
            (AgentError::DeliveryUnknown("timed out".into()), "ControlPlaneUnavailable", true),
            (AgentError::ControlPlaneRejected("404".into()), "ControlPlaneRejected", false),
            (AgentError::Throttled("429".into()), "Throttled", true),
            (AgentError::AwsUnavailable("timeout".into()), "AwsUnavailable", true),
            (AgentError::AwsAccessDenied("denied".into()), "AwsAccessDenied", false),
            (AgentError::AwsRequestFailed("bad".into()), "AwsRequestFailed", false),
            (AgentError::UnsafeDeletion { runtime_id: "r".into(), count: 3 }, "UnsafeDeletion", false),
            (AgentError::MetricsIncomplete("PartialData".into()), "MetricsIncomplete", true),
            (AgentError::WindowsNotSent { stages: vec!["prod".into()] }, "WindowsNotSent", false),
        ];
        for (error, expected_type, retryable) in cases {
            assert_eq!(error.is_retryable(), retryable, "{expected_type}");
            let diagnostic = Diagnostic::from(error);
            assert_eq!(diagnostic.error_type, expected_type);
            assert!(!diagnostic.error_message.is_empty());
        }
    }

    #[test]
    fn only_an_answer_about_the_request_itself_refuses_one_api() {
        let refusals = [AgentError::invalid_input("400"), AgentError::ControlPlaneRejected("409".into())];
        assert!(refusals.iter().all(AgentError::is_refusal));
        let whole_control_plane = [
            AgentError::Unauthorized("401".into()),
            AgentError::Throttled("429".into()),
            AgentError::ControlPlaneUnavailable("503".into()),
            AgentError::DeliveryUnknown("timed out".into()),
        ];
        assert!(!whole_control_plane.iter().any(AgentError::is_refusal));
    }

    /// Every Task of the deployed workflow, with the errors its `Retry` lists.
    fn tasks_and_their_retries() -> Vec<(String, Vec<String>)> {
        fn walk(states: &serde_json::Map<String, serde_json::Value>, found: &mut Vec<(String, Vec<String>)>) {
            for (name, state) in states {
                if state["Type"] == "Task" {
                    let retried = state["Retry"].as_array().into_iter().flatten();
                    let errors = retried.flat_map(|r| r["ErrorEquals"].as_array().cloned().unwrap_or_default());
                    found.push((name.clone(), errors.filter_map(|e| e.as_str().map(str::to_owned)).collect()));
                }
                let nested = state["ItemProcessor"]["States"].as_object().into_iter();
                let branches =
                    state["Branches"].as_array().into_iter().flatten().filter_map(|b| b["States"].as_object());
                for states in nested.chain(branches) {
                    walk(states, found);
                }
            }
        }
        let workflow: serde_json::Value =
            serde_json::from_str(include_str!("../../../statemachine/agent.asl.json")).unwrap();
        let mut found = Vec::new();
        walk(workflow["States"].as_object().unwrap(), &mut found);
        found
    }

    #[test]
    fn every_task_of_the_workflow_retries_exactly_the_retryable_errors_and_a_timed_out_function() {
        let retryable = [
            AgentError::ControlPlaneUnavailable(String::new()),
            AgentError::Throttled(String::new()),
            AgentError::AwsUnavailable(String::new()),
        ];
        let never = [
            AgentError::Unauthorized(String::new()),
            AgentError::InvalidConfig { variable: "X", reason: String::new() },
            AgentError::invalid_input(""),
            AgentError::AwsAccessDenied(String::new()),
            AgentError::UnsafeDeletion { runtime_id: String::new(), count: 0 },
            AgentError::CredentialsNotSet(String::new()),
        ];
        let tasks = tasks_and_their_retries();
        assert!(tasks.len() >= 11, "{tasks:?}");
        for (task, retried) in tasks {
            for error in &retryable {
                assert!(error.is_retryable() && retried.iter().any(|r| r == error.error_type()), "{task}: {error:?}");
            }
            for error in &never {
                assert!(!error.is_retryable() && !retried.iter().any(|r| r == error.error_type()), "{task}: {error:?}");
            }
            // Lambda's own: its service's errors, and a function its timeout stopped (whose
            // work is kept, call by call or item by item, so the retry goes on from there).
            for lambda in ["Lambda.ServiceException", "Lambda.TooManyRequestsException", "Sandbox.Timedout"] {
                assert!(retried.iter().any(|r| r == lambda), "{task} does not retry {lambda}");
            }
        }
    }

    #[test]
    fn invalid_input_message_carries_the_services_error_details() {
        let error = AgentError::InvalidInput {
            message: "POST /v2/runtimes answered 400".into(),
            details: vec!["name: maximum 50 characters".into(), "tags[0]: no whitespace".into()],
        };
        assert_eq!(
            Diagnostic::from(error).error_message,
            "invalid input: POST /v2/runtimes answered 400 (name: maximum 50 characters; tags[0]: no whitespace)"
        );
    }

    #[test]
    fn config_error_names_the_variable() {
        let error = AgentError::InvalidConfig { variable: "STATE_TABLE", reason: "is required".into() };
        assert!(error.to_string().contains("STATE_TABLE"));
    }
}
