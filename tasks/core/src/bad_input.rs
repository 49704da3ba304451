//! Malformed input of every kind the agent reads, each with the exact typed error (the Lambda
//! `errorType` the state machine matches on) and message a user sees. None may panic.

use std::collections::HashMap;

use serde_json::json;

use crate::aws::secrets;
use crate::bootstrap::parse_input;
use crate::config::Config;
use crate::error::AgentError;
use crate::model::{AckRequest, EnsureRuntimeInput, ListChangesInput, TargetsRequest};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp";

/// The execution input as ensure-runtime reads it.
fn execution_input_error(input: serde_json::Value) -> AgentError {
    let task_input = json!({"input": input, "executionId": "arn:aws:states:eu-west-1:111122223333:execution:agent:x"});
    parse_input::<EnsureRuntimeInput>(task_input).and_then(|i| i.execution_input()).expect_err("refused")
}

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
        ("URL not parseable", config_error(&[("APICP_URL", "https://")], &[])),
        ("URL over http to another host", config_error(&[("APICP_URL", "http://apicp.example.com")], &[])),
        ("request timeout zero", config_error(&[("APICP_TIMEOUT_SECONDS", "0")], &[])),
        ("request timeout beyond publish", config_error(&[("APICP_TIMEOUT_SECONDS", "88")], &[])),
        ("runtime id without the stage", config_error(&[("RUNTIME_ID_TEMPLATE", "{account}_{region}")], &[])),
        ("heartbeat zero", config_error(&[("HEARTBEAT_INTERVAL_SECONDS", "0")], &[])),
        ("heartbeat shorter than the schedule", config_error(&[("SCHEDULE_RATE_MINUTES", "5")], &[])),
        ("schedule rate zero", config_error(&[("SCHEDULE_RATE_MINUTES", "0")], &[])),
        ("change buffer zero", config_error(&[("CHANGE_BUFFER_SECONDS", "0")], &[])),
        ("metrics buffer zero", config_error(&[("METRICS_BUFFER_SECONDS", "0")], &[])),
        ("change window under a minute", config_error(&[("CHANGE_MAX_WINDOW_SECONDS", "30")], &[])),
        ("reconciliation under a minute", config_error(&[("RECONCILE_INTERVAL_SECONDS", "30")], &[])),
        ("no metrics window per run", config_error(&[("METRICS_MAX_WINDOWS_PER_RUN", "0")], &[])),
        ("windows per run short of the fetch interval", config_error(&[("METRICS_MAX_WINDOWS_PER_RUN", "5")], &[])),
        ("chunk size beyond the Map's", config_error(&[("CHUNK_SIZE", "501")], &[])),
        ("claim under a minute", config_error(&[("CLAIM_TTL_SECONDS", "30")], &[])),
        ("claim shorter than an execution", config_error(&[("CLAIM_TTL_SECONDS", "600")], &[])),
        (
            "claim shorter than an Express execution",
            config_error(&[("CLAIM_TTL_SECONDS", "240"), ("EXPRESS", "true")], &[]),
        ),
        ("workflow type neither true nor false", config_error(&[("EXPRESS", "standard")], &[])),
        ("orphan grace in words", config_error(&[("ORPHAN_GRACE_SECONDS", "a day")], &[])),
        ("sync-lag threshold zero", config_error(&[("SYNC_LAG_THRESHOLD_MINUTES", "0")], &[])),
        (
            "sync-lag threshold within a healthy run",
            config_error(&[("SYNC_LAG_THRESHOLD_MINUTES", "6"), ("SCHEDULE_RATE_MINUTES", "1")], &[]),
        ),
        ("function memory below Lambda's", config_error(&[("FUNCTION_MEMORY_MB", "64")], &[])),
        ("log retention CloudWatch lacks", config_error(&[("LOG_RETENTION_DAYS", "2")], &[])),
        ("schedule switch neither true nor false", config_error(&[("SCHEDULE_ENABLED", "on")], &[])),
        ("workflow log level unknown", config_error(&[("WORKFLOW_LOG_LEVEL", "DEBUG")], &[])),
        ("secret key named by alias", config_error(&[("APICP_SECRET_KMS_KEY_ARN", "alias/apicp")], &[])),
        ("target account neither self, organization nor ids", config_error(&[("TARGET_ACCOUNTS", "all")], &[])),
        ("target region misspelt", config_error(&[("TARGET_REGIONS", "eu-west1")], &[])),
        (
            "target units without the organization",
            config_error(&[("TARGET_ORGANIZATIONAL_UNITS", "ou-ab12-cdef3456")], &[]),
        ),
        ("target concurrency beyond the Map's", config_error(&[("TARGET_CONCURRENCY", "100")], &[])),
        ("secret not JSON", secrets::parse(ARN, "agent:hunter2").unwrap_err()),
        ("secret password not a string", secrets::parse(ARN, r#"{"username":"agent","password":7}"#).unwrap_err()),
        ("secret still the placeholder", secrets::parse(ARN, r#"{"username":"","password":""}"#).unwrap_err()),
        ("execution input mode unknown", execution_input_error(json!({"mode": "everything"}))),
        ("execution input stages not a list", execution_input_error(json!({"stages": "prod"}))),
        ("execution input field unknown", execution_input_error(json!({"mode": "full", "force": true}))),
        ("execution input not an object", execution_input_error(json!(["full"]))),
        (
            "execution input target not an account-region",
            execution_input_error(json!({"target": {"account": "prod", "region": "eu-west-1"}})),
        ),
        (
            "execution input pushed event without time",
            execution_input_error(json!({"pushed": [{"id": "e1", "name": "UpdateStage"}]})),
        ),
        (
            "task input missing a field",
            parse_input::<ListChangesInput>(json!({"kind": "assets", "mode": "auto"})).unwrap_err(),
        ),
        (
            "ack input of an unknown kind",
            parse_input::<AckRequest>(
                json!({"action": "commit", "kind": "logs", "executionId": "x", "watermarks": []}),
            )
            .unwrap_err(),
        ),
        (
            "ack input of an unknown action",
            parse_input::<AckRequest>(json!({"action": "rollback", "kind": "assets"})).unwrap_err(),
        ),
        (
            "sync run given a fan-out's targets",
            execution_input_error(json!({"targets": [{"account": "111122223333", "region": "eu-west-1"}]})),
        ),
        (
            "tick with a scheduled time not a string",
            parse_input::<TargetsRequest>(json!({"action": "tick", "scheduledTime": 1_800_000_000})).unwrap_err(),
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
        ("InvalidConfig", "invalid configuration APICP_URL: is not a URL: empty host"),
        (
            "InvalidConfig",
            "invalid configuration APICP_URL: must start with https://: http:// is only for a control plane on this host (127.0.0.1, ::1 or localhost), as the credentials would otherwise cross the network in clear text",
        ),
        ("InvalidConfig", "invalid configuration APICP_TIMEOUT_SECONDS: must be at least 1 second"),
        (
            "InvalidConfig",
            "invalid configuration APICP_TIMEOUT_SECONDS: 88 is too long: a control plane request's 3 attempts and their pauses (265.5 s) plus 15 s of state writes exceed the publish function's timeout of 280 s, so no metrics window would ever be sent; make it at most 87",
        ),
        (
            "InvalidConfig",
            "invalid configuration RUNTIME_ID_TEMPLATE: must contain {stage}: without it every stage shares one runtime, and each stage's sync deletes the other stages' APIs",
        ),
        ("InvalidConfig", "invalid configuration HEARTBEAT_INTERVAL_SECONDS: must be at least 1 second"),
        (
            "InvalidConfig",
            "invalid configuration HEARTBEAT_INTERVAL_SECONDS: 60 is shorter than the schedule's interval of 300 seconds (SCHEDULE_RATE_MINUTES=5): the runtime would turn inactive between runs; make it at least 300",
        ),
        ("InvalidConfig", "invalid configuration SCHEDULE_RATE_MINUTES: must be at least 1 minute"),
        (
            "InvalidConfig",
            "invalid configuration CHANGE_BUFFER_SECONDS: must be at least 60 seconds: CloudTrail delivers events minutes late, and a shorter buffer reads windows before their events are delivered",
        ),
        (
            "InvalidConfig",
            "invalid configuration METRICS_BUFFER_SECONDS: must be at least 60 seconds: API Gateway's datapoints reach CloudWatch late, and a shorter buffer reads windows before their datapoints are delivered",
        ),
        ("InvalidConfig", "invalid configuration CHANGE_MAX_WINDOW_SECONDS: must be at least 60 seconds"),
        ("InvalidConfig", "invalid configuration RECONCILE_INTERVAL_SECONDS: must be at least 60 seconds"),
        ("InvalidConfig", "invalid configuration METRICS_MAX_WINDOWS_PER_RUN: must be at least 1"),
        (
            "InvalidConfig",
            "invalid configuration METRICS_MAX_WINDOWS_PER_RUN: times METRICS_INTERVAL_SECONDS must cover METRICS_FETCH_INTERVAL_SECONDS, or a run never catches up",
        ),
        ("InvalidConfig", "invalid configuration CHUNK_SIZE: must be between 1 and 500"),
        ("InvalidConfig", "invalid configuration CLAIM_TTL_SECONDS: must be at least 60 seconds"),
        (
            "InvalidConfig",
            "invalid configuration CLAIM_TTL_SECONDS: 600 is shorter than the Standard workflow's execution timeout of 3600 seconds: a second execution could take a stage over while the first still publishes, and send a window twice; make it at least 3600",
        ),
        (
            "InvalidConfig",
            "invalid configuration CLAIM_TTL_SECONDS: 240 is shorter than the Express workflow's execution timeout of 300 seconds: a second execution could take a stage over while the first still publishes, and send a window twice; make it at least 300",
        ),
        ("InvalidConfig", "invalid configuration EXPRESS: \"standard\" is not true or false"),
        ("InvalidConfig", "invalid configuration ORPHAN_GRACE_SECONDS: \"a day\" is not a whole number of 0 or more"),
        ("InvalidConfig", "invalid configuration SYNC_LAG_THRESHOLD_MINUTES: must be at least 1 minute"),
        (
            "InvalidConfig",
            "invalid configuration SYNC_LAG_THRESHOLD_MINUTES: 6 minutes does not exceed CHANGE_BUFFER_SECONDS (300) plus the schedule's interval (60 seconds): the sync-lag alarm would fire on every healthy run; make it at least 7",
        ),
        ("InvalidConfig", "invalid configuration FUNCTION_MEMORY_MB: must be between 128 and 10240 (MB)"),
        (
            "InvalidConfig",
            "invalid configuration LOG_RETENTION_DAYS: 2 is not a CloudWatch Logs retention: use one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653 (days), or 9999 to keep them forever",
        ),
        ("InvalidConfig", "invalid configuration SCHEDULE_ENABLED: \"on\" is not true or false"),
        ("InvalidConfig", "invalid configuration WORKFLOW_LOG_LEVEL: \"DEBUG\" is not one of ALL, ERROR, FATAL, OFF"),
        (
            "InvalidConfig",
            "invalid configuration APICP_SECRET_KMS_KEY_ARN: \"alias/apicp\" is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)",
        ),
        (
            "InvalidConfig",
            "invalid configuration TARGET_ACCOUNTS: \"all\" is not an account id: use self, organization, or comma-separated 12-digit account ids",
        ),
        (
            "InvalidConfig",
            "invalid configuration TARGET_REGIONS: \"eu-west1\" is not an AWS region name such as eu-west-1",
        ),
        (
            "InvalidConfig",
            "invalid configuration TARGET_ORGANIZATIONAL_UNITS: limits TARGET_ACCOUNTS=organization only; set TARGET_ACCOUNTS=organization, or remove it",
        ),
        (
            "InvalidConfig",
            "invalid configuration TARGET_CONCURRENCY: must be at most 40 (an inline Map state runs at most 40 iterations at once)",
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
        ("InvalidInput", "invalid input: execution input: unknown variant `everything`, expected `auto` or `full`"),
        ("InvalidInput", "invalid input: execution input: invalid type: string \"prod\", expected a sequence"),
        (
            "InvalidInput",
            "invalid input: execution input: unknown field `force`, expected one of `mode`, `stages`, `target`, `AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID`, `targets`, `pushed`",
        ),
        ("InvalidInput", "invalid input: execution input: must be a JSON object, not [\"full\"]"),
        ("InvalidInput", "invalid input: target prod/eu-west-1 is not a 12-digit account id and a region name"),
        ("InvalidInput", "invalid input: execution input: missing field `time`"),
        ("InvalidInput", "invalid input: task input: missing field `runtimes`"),
        ("InvalidInput", "invalid input: task input: unknown variant `logs`, expected `assets` or `metrics`"),
        ("InvalidInput", "invalid input: task input: unknown variant `rollback`, expected `commit` or `chunkFailed`"),
        (
            "InvalidInput",
            "invalid input: execution input: \"targets\" selects the runs of a fan-out execution; a sync run names one \"target\"",
        ),
        ("InvalidInput", "invalid input: task input: invalid type: integer `1800000000`, expected a string"),
    ];
    assert!(cases.len() >= 20);
    assert_eq!(cases.len(), expected.len());
    for ((case, error), (error_type, message)) in cases.iter().zip(expected) {
        assert_eq!((error.error_type(), error.to_string().as_str()), (error_type, message), "{case}");
        assert!(!error.to_string().contains("hunter2"), "{case}: a secret in the message");
    }
}
