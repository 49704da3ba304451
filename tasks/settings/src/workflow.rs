//! What the settings must fit in the deployed workflow, read from its files when the crate is
//! built: the CDK deploys the same files, so the checker and the stack cannot disagree.

use std::sync::OnceLock;

use serde_json::Value;

/// The state machine the CDK deploys as it is.
const DEFINITION: &str = include_str!("../../../statemachine/agent.asl.json");
/// The functions' deployed timeouts.
const FUNCTIONS: &str = include_str!("../../../statemachine/functions.json");

/// An Express workflow's executions end after 5 minutes, whatever the definition says.
pub const EXPRESS_EXECUTION_LIMIT_SECONDS: u64 = 300;
/// Attempts of one control plane request within a task (agent-core's control plane client; the
/// state machine then retries the task itself).
pub const CONTROL_PLANE_ATTEMPTS: u32 = 3;
/// The pause before a request's second attempt, doubled before each further one.
pub const CONTROL_PLANE_FIRST_PAUSE_MS: u64 = 500;
/// What publish allows for its state writes around one control plane request.
pub const PUBLISH_STATE_WRITES_SECONDS: u64 = 15;

/// The top-level `TimeoutSeconds` of statemachine/agent.asl.json: how long an execution of a
/// Standard workflow may run.
pub fn definition_timeout_seconds() -> u64 {
    static TIMEOUT: OnceLock<u64> = OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        serde_json::from_str::<Value>(DEFINITION)
            .ok()
            .and_then(|definition| definition["TimeoutSeconds"].as_u64())
            .expect("statemachine/agent.asl.json has a top-level TimeoutSeconds (a test checks it)")
    })
}

/// How long one execution may run: the definition's timeout, within Express's limit for an
/// Express workflow.
pub fn execution_timeout_seconds(express: bool) -> u64 {
    let definition = definition_timeout_seconds();
    if express { definition.min(EXPRESS_EXECUTION_LIMIT_SECONDS) } else { definition }
}

/// The timeout the function built as `binary` is deployed with (statemachine/functions.json).
pub fn deployed_timeout_seconds(binary: &str) -> Option<u64> {
    let functions: serde_json::Map<String, Value> = serde_json::from_str(FUNCTIONS).unwrap_or_default();
    functions.values().find(|spec| spec["binary"] == binary).and_then(|spec| spec["timeoutSeconds"].as_u64())
}

/// The timeout the publish function is deployed with.
pub fn publish_timeout_seconds() -> u64 {
    static TIMEOUT: OnceLock<u64> = OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        deployed_timeout_seconds("publish")
            .expect("statemachine/functions.json gives publish a timeoutSeconds (a test checks it)")
    })
}

/// The pauses between one control plane request's attempts, in milliseconds.
pub fn control_plane_pauses_ms() -> u64 {
    (0..CONTROL_PLANE_ATTEMPTS - 1).map(|n| CONTROL_PLANE_FIRST_PAUSE_MS << n).sum()
}

/// The longest one control plane request can take, in milliseconds: every attempt timing out
/// after `timeout_seconds`, and the pauses between them.
pub fn longest_control_plane_request_ms(timeout_seconds: u64) -> u64 {
    timeout_seconds.saturating_mul(1_000 * u64::from(CONTROL_PLANE_ATTEMPTS)).saturating_add(control_plane_pauses_ms())
}

/// The longest control plane timeout with which publish still sends one request and writes its
/// state within its own timeout.
pub fn max_control_plane_timeout_seconds() -> u64 {
    let budget_ms = (publish_timeout_seconds().saturating_sub(PUBLISH_STATE_WRITES_SECONDS) * 1_000)
        .saturating_sub(control_plane_pauses_ms());
    budget_ms / (1_000 * u64::from(CONTROL_PLANE_ATTEMPTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_files_give_the_limits_the_settings_must_fit() {
        assert!(definition_timeout_seconds() >= EXPRESS_EXECUTION_LIMIT_SECONDS, "a Standard execution's timeout");
        assert_eq!(execution_timeout_seconds(true), EXPRESS_EXECUTION_LIMIT_SECONDS);
        assert_eq!(execution_timeout_seconds(false), definition_timeout_seconds());
        assert!(publish_timeout_seconds() > PUBLISH_STATE_WRITES_SECONDS + 5, "room for a request");
    }

    #[test]
    fn the_longest_timeout_is_the_last_that_fits_the_publish_function() {
        let max = max_control_plane_timeout_seconds();
        let fits = |t: u64| {
            longest_control_plane_request_ms(t) + PUBLISH_STATE_WRITES_SECONDS * 1_000
                <= publish_timeout_seconds() * 1_000
        };
        assert!(max >= 1 && fits(max) && !fits(max + 1), "{max}");
        assert_eq!(longest_control_plane_request_ms(10), 31_500);
    }
}
