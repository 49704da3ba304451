//! Malformed input of every kind the agent reads, each with the exact typed error (the Lambda
//! `errorType` the state machine matches on) and message a user sees. None may panic.

use std::collections::HashMap;

use serde_json::json;

use crate::aws::secrets;
use crate::bootstrap::parse_input;
use crate::config::Config;
use crate::error::AgentError;
use crate::model::{AckInput, ExecutionInput, ListChangesInput};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp";

fn config_error(overrides: &[(&'static str, &'static str)], removed: &[&str]) -> AgentError {
    let mut values = HashMap::from([
        ("APICP_URL", "https://apicp.example.com"),
        ("APICP_SECRET_ARN", ARN),
        ("STATE_TABLE", "agent-state"),
    ]);
    values.extend(overrides.iter().copied());
    values.retain(|name, _| !removed.contains(name));
    Config::from_map(&values).expect_err("a bad configuration must be refused")
}

#[test]
fn every_malformed_input_ends_in_its_typed_error_with_a_message_that_says_what_to_fix() {
    let cases: Vec<(&str, AgentError)> = vec![
        ("missing URL", config_error(&[], &["APICP_URL"])),
        ("URL not http(s)", config_error(&[("APICP_URL", "apicp.example.com")], &[])),
        ("URL carrying credentials", config_error(&[("APICP_URL", "https://agent:hunter2@apicp.example.com")], &[])),
        ("no credentials at all", config_error(&[], &["APICP_SECRET_ARN"])),
        ("missing state table", config_error(&[], &["STATE_TABLE"])),
        ("stage with a space", config_error(&[("STAGES", "prod, bad stage")], &[])),
        ("empty stage list", config_error(&[("STAGES", " , ")], &[])),
        ("unknown API type", config_error(&[("API_TYPES", "REST,GRAPHQL")], &[])),
        ("no API type", config_error(&[("API_TYPES", ",")], &[])),
        ("interval not a multiple of a minute", config_error(&[("METRICS_INTERVAL_SECONDS", "90")], &[])),
        ("interval not a number", config_error(&[("METRICS_INTERVAL_SECONDS", "5m")], &[])),
        ("negative buffer", config_error(&[("METRICS_BUFFER_SECONDS", "-60")], &[])),
        ("fetch interval in words", config_error(&[("METRICS_FETCH_INTERVAL_SECONDS", "a while")], &[])),
        ("chunk size zero", config_error(&[("CHUNK_SIZE", "0")], &[])),
        ("flag neither true nor false", config_error(&[("ALLOW_EMPTY_LISTING_DELETES", "maybe")], &[])),
        ("pace beyond the quota", config_error(&[("APIGATEWAY_REQUESTS_PER_SECOND", "12")], &[])),
        ("tag with whitespace", config_error(&[("RUNTIME_TAGS", "team a")], &[])),
        ("capacity unit unknown", config_error(&[("RUNTIME_CAPACITY", "10 per fortnight")], &[])),
        ("secret not JSON", secrets::parse(ARN, "agent:hunter2").unwrap_err()),
        ("secret password not a string", secrets::parse(ARN, r#"{"username":"agent","password":7}"#).unwrap_err()),
        ("secret still the placeholder", secrets::parse(ARN, r#"{"username":"","password":""}"#).unwrap_err()),
        ("execution input mode unknown", parse_input::<ExecutionInput>(json!({"mode": "everything"})).unwrap_err()),
        ("execution input stages not a list", parse_input::<ExecutionInput>(json!({"stages": "prod"})).unwrap_err()),
        (
            "execution input field unknown",
            parse_input::<ExecutionInput>(json!({"mode": "full", "force": true})).unwrap_err(),
        ),
        ("execution input not an object", parse_input::<ExecutionInput>(json!(["full"])).unwrap_err()),
        (
            "task input missing a field",
            parse_input::<ListChangesInput>(json!({"kind": "assets", "mode": "auto"})).unwrap_err(),
        ),
        (
            "ack input of an unknown kind",
            parse_input::<AckInput>(json!({"kind": "logs", "executionId": "x", "watermarks": []})).unwrap_err(),
        ),
    ];
    let expected = [
        ("InvalidConfig", "invalid configuration APICP_URL: is required"),
        (
            "InvalidConfig",
            "invalid configuration APICP_URL: must start with https:// (or http:// for a local stand-in)",
        ),
        ("InvalidConfig", "invalid configuration APICP_URL: must not carry credentials; use the secret"),
        (
            "InvalidConfig",
            "invalid configuration APICP_SECRET_ARN: is required (or APICP_USERNAME and APICP_PASSWORD for a local run)",
        ),
        ("InvalidConfig", "invalid configuration STATE_TABLE: is required"),
        ("InvalidConfig", "invalid configuration STAGES: \"bad stage\" is not a valid API Gateway stage name"),
        ("InvalidConfig", "invalid configuration STAGES: must be * or a comma-separated list of stage names"),
        ("InvalidConfig", "invalid configuration API_TYPES: \"GRAPHQL\" is not one of REST, HTTP, WEBSOCKET"),
        ("InvalidConfig", "invalid configuration API_TYPES: must name at least one of REST, HTTP, WEBSOCKET"),
        ("InvalidConfig", "invalid configuration METRICS_INTERVAL_SECONDS: must be a positive multiple of 60"),
        ("InvalidConfig", "invalid configuration METRICS_INTERVAL_SECONDS: \"5m\" is not a whole number of 0 or more"),
        ("InvalidConfig", "invalid configuration METRICS_BUFFER_SECONDS: \"-60\" is not a whole number of 0 or more"),
        (
            "InvalidConfig",
            "invalid configuration METRICS_FETCH_INTERVAL_SECONDS: \"a while\" is not a whole number of 0 or more",
        ),
        ("InvalidConfig", "invalid configuration CHUNK_SIZE: must be between 1 and 500"),
        ("InvalidConfig", "invalid configuration ALLOW_EMPTY_LISTING_DELETES: \"maybe\" is not true or false"),
        (
            "InvalidConfig",
            "invalid configuration APIGATEWAY_REQUESTS_PER_SECOND: \"12\" is not a rate between 0 (excluded) and 10 requests per second",
        ),
        (
            "InvalidConfig",
            "invalid configuration RUNTIME_TAGS: tag \"team a\" must be at most 50 characters without whitespace",
        ),
        (
            "InvalidConfig",
            "invalid configuration RUNTIME_CAPACITY: \"10 per fortnight\" must look like \"10000 per second\" (units: per second, per minute, per hour, per day, per week, per month, per year)",
        ),
        (
            "InvalidConfig",
            "invalid configuration APICP_SECRET_ARN: secret arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp must be a JSON string {\"username\": ..., \"password\": ...}",
        ),
        (
            "InvalidConfig",
            "invalid configuration APICP_SECRET_ARN: secret arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp must be a JSON string {\"username\": ..., \"password\": ...}",
        ),
        (
            "CredentialsNotSet",
            "control plane credentials not set: secret arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp has no username and password yet; put the control plane's credentials into it",
        ),
        ("InvalidInput", "invalid input: task input: unknown variant `everything`, expected `auto` or `full`"),
        ("InvalidInput", "invalid input: task input: invalid type: string \"prod\", expected a sequence"),
        ("InvalidInput", "invalid input: task input: unknown field `force`, expected `mode` or `stages`"),
        ("InvalidInput", "invalid input: task input: must be a JSON object, not [\"full\"]"),
        ("InvalidInput", "invalid input: task input: missing field `runtimes`"),
        ("InvalidInput", "invalid input: task input: unknown variant `logs`, expected `assets` or `metrics`"),
    ];
    assert!(cases.len() >= 20);
    assert_eq!(cases.len(), expected.len());
    for ((case, error), (error_type, message)) in cases.iter().zip(expected) {
        assert_eq!((error.error_type(), error.to_string().as_str()), (error_type, message), "{case}");
        assert!(!error.to_string().contains("hunter2"), "{case}: a secret in the message");
    }
}
