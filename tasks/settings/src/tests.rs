use std::collections::HashMap;

use super::*;

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp-AbCdEf";

fn minimal() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("APICP_URL", "https://apicp.example.com/"),
        ("APICP_SECRET_ARN", ARN),
        ("STATE_TABLE", "agent-state"),
    ])
}

fn read(scope: Scope, values: &HashMap<&str, &str>) -> Result<Settings> {
    Settings::from_lookup(scope, |name| values.get(name).map(|v| (*v).to_owned()))
}

fn with<'a>(overrides: &[(&'a str, &'a str)]) -> HashMap<&'a str, &'a str> {
    let mut values = minimal();
    values.extend(overrides.iter().copied());
    values
}

/// The message a function refuses `overrides` with.
fn refusal(scope: Scope, overrides: &[(&str, &str)]) -> String {
    read(scope, &with(overrides)).expect_err("refused").to_string()
}

#[test]
fn defaults_apply_when_only_required_settings_are_given() {
    let settings = read(Scope::Function, &minimal()).unwrap();
    assert_eq!(settings.control_plane_url, "https://apicp.example.com");
    assert_eq!(settings.credentials, CredentialSource::Secret { arn: ARN.into() });
    assert_eq!(settings.control_plane_timeout_seconds, 10);
    assert_eq!(settings.state_table.as_deref(), Some("agent-state"));
    assert_eq!(settings.stages, StageSelection::All);
    assert_eq!(settings.api_types, ApiType::ALL.into_iter().collect());
    assert_eq!(settings.runtime_id_template, "{account}_{region}_{stage}");
    assert_eq!(settings.heartbeat_interval_seconds, 60);
    assert_eq!(settings.change_buffer_seconds, 300);
    assert_eq!(settings.change_overlap_seconds, 900);
    assert_eq!(settings.change_max_window_seconds, 3600);
    assert_eq!(settings.reconcile_interval_seconds, 86_400);
    assert_eq!(settings.chunk_size, 100);
    assert_eq!(settings.metrics_interval_seconds, 300);
    assert_eq!(settings.metrics_buffer_seconds, 180);
    assert_eq!(settings.metrics_fetch_interval_seconds, 1800, "the CloudWatch cost target");
    assert_eq!(settings.metrics_backfill_seconds, 3600);
    assert_eq!(settings.metrics_max_windows_per_run, 60);
    assert_eq!(settings.claim_ttl_seconds, 3600);
    assert_eq!(settings.discovery_interval_seconds, 3600);
    assert_eq!(settings.orphan_grace_seconds, 86_400);
    assert_eq!(settings.api_gateway_requests_per_second, 5.0, "half of API Gateway's quota");
    assert!(!settings.allow_empty_listing_deletes);
    // A function knows only the deployment settings its environment holds.
    assert_eq!(settings.schedule_rate_minutes, None);
    assert_eq!(settings.sync_lag_threshold_minutes, None);
    assert_eq!(settings.express, None);
}

#[test]
fn the_deployment_gives_its_own_settings_their_defaults_and_needs_no_table() {
    let mut values = minimal();
    values.remove("STATE_TABLE");
    let settings = read(Scope::Deployment, &values).unwrap();
    assert_eq!(settings.state_table, None);
    assert_eq!(settings.schedule_rate_minutes, Some(1));
    assert_eq!(settings.schedule_enabled, Some(true));
    assert_eq!(settings.express, Some(false));
    assert_eq!(settings.function_memory_mb, Some(256));
    assert_eq!(settings.log_retention_days, Some(30));
    assert_eq!(settings.sync_lag_threshold_minutes, Some(30));
    assert_eq!(refusal(Scope::Function, &[("STATE_TABLE", " ")]), "invalid configuration STATE_TABLE: is required");
}

#[test]
fn the_normalized_settings_print_under_the_cdk_context_keys_without_a_password() {
    let values = with(&[
        ("STAGES", " prod , dev "),
        ("API_TYPES", "websocket,rest"),
        ("RUNTIME_TAGS", "aws, eu"),
        ("RUNTIME_CAPACITY", "10 per second"),
        ("EXPRESS", "TRUE"),
    ]);
    let json = serde_json::to_value(read(Scope::Deployment, &values).unwrap()).unwrap();
    assert_eq!(json["controlPlaneUrl"], "https://apicp.example.com");
    assert_eq!(json["controlPlaneSecretArn"], ARN);
    assert_eq!(json["controlPlaneTimeoutSeconds"], 10);
    assert_eq!(json["stages"], serde_json::json!(["prod", "dev"]));
    assert_eq!(json["apiTypes"], serde_json::json!(["REST", "WEBSOCKET"]));
    assert_eq!(json["runtimeTags"], serde_json::json!(["aws", "eu"]));
    assert_eq!(json["runtimeCapacity"], "10 per second");
    assert_eq!(json["express"], true);
    assert_eq!(json["apiGatewayRequestsPerSecond"], 5.0);
    assert_eq!(json["orphanGraceSeconds"], 86_400);
    assert_eq!(json["scheduleRateMinutes"], 1);
    assert_eq!(json["logRetentionDays"], 30);
    let all = serde_json::to_value(read(Scope::Deployment, &minimal()).unwrap()).unwrap();
    assert_eq!(all["stages"], serde_json::json!(["*"]));
    assert_eq!(all["apiTypes"], serde_json::json!(["REST", "HTTP", "WEBSOCKET"]));

    let mut inline = minimal();
    inline.remove("APICP_SECRET_ARN");
    inline.extend([("APICP_USERNAME", "agent"), ("APICP_PASSWORD", "s3cr3t-value")]);
    let settings = read(Scope::Deployment, &inline).unwrap();
    assert!(!format!("{settings:?}").contains("s3cr3t-value"));
    let json = serde_json::to_string(&settings).unwrap();
    assert!(!json.contains("s3cr3t-value") && json.contains(r#""controlPlaneSecretArn":null"#), "{json}");
}

#[test]
fn a_control_plane_over_http_must_be_on_this_host() {
    for url in ["http://127.0.0.1:8080", "http://localhost:1234/apicp/", "http://[::1]:80", "https://apicp.example.com"]
    {
        assert!(read(Scope::Function, &with(&[("APICP_URL", url)])).is_ok(), "{url}");
    }
    for url in ["http://apicp.example.com", "http://10.0.0.1:8080", "http://localhost.example.com"] {
        assert!(refusal(Scope::Function, &[("APICP_URL", url)]).contains("127.0.0.1, ::1 or localhost"), "{url}");
    }
    assert_eq!(
        refusal(Scope::Function, &[("APICP_URL", "https://")]),
        "invalid configuration APICP_URL: is not a URL: empty host"
    );
}

#[test]
fn every_rule_refuses_with_the_variable_and_what_to_do() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("APICP_URL", "ftp://apicp")], "APICP_URL: must start with https:// (or http:// for a local stand-in)"),
        (&[("APICP_TIMEOUT_SECONDS", "0")], "APICP_TIMEOUT_SECONDS: must be at least 1 second"),
        (&[("HEARTBEAT_INTERVAL_SECONDS", "0")], "HEARTBEAT_INTERVAL_SECONDS: must be at least 1 second"),
        (&[("CHANGE_MAX_WINDOW_SECONDS", "59")], "CHANGE_MAX_WINDOW_SECONDS: must be at least 60 seconds"),
        (&[("RECONCILE_INTERVAL_SECONDS", "30")], "RECONCILE_INTERVAL_SECONDS: must be at least 60 seconds"),
        (&[("CLAIM_TTL_SECONDS", "59")], "CLAIM_TTL_SECONDS: must be at least 60 seconds"),
        (&[("METRICS_MAX_WINDOWS_PER_RUN", "0")], "METRICS_MAX_WINDOWS_PER_RUN: must be at least 1"),
        (&[("CHANGE_BUFFER_SECONDS", "0")], "CHANGE_BUFFER_SECONDS: must be at least 60 seconds: CloudTrail"),
        (&[("METRICS_BUFFER_SECONDS", "59")], "METRICS_BUFFER_SECONDS: must be at least 60 seconds: API Gateway"),
        (&[("RUNTIME_ID_TEMPLATE", "{account}_{region}")], "RUNTIME_ID_TEMPLATE: must contain {stage}"),
        (&[("CHUNK_SIZE", "501")], "CHUNK_SIZE: must be between 1 and 500"),
        (&[("SCHEDULE_RATE_MINUTES", "0")], "SCHEDULE_RATE_MINUTES: must be at least 1 minute"),
        (&[("SYNC_LAG_THRESHOLD_MINUTES", "0")], "SYNC_LAG_THRESHOLD_MINUTES: must be at least 1 minute"),
        (&[("FUNCTION_MEMORY_MB", "64")], "FUNCTION_MEMORY_MB: must be between 128 and 10240 (MB)"),
        (&[("FUNCTION_MEMORY_MB", "10241")], "FUNCTION_MEMORY_MB: must be between 128 and 10240 (MB)"),
        (&[("LOG_RETENTION_DAYS", "2")], "LOG_RETENTION_DAYS: 2 is not a CloudWatch Logs retention: use one of 1, 3"),
        (&[("EXPRESS", "yes")], "EXPRESS: \"yes\" is not true or false"),
        (&[("SCHEDULE_ENABLED", "on")], "SCHEDULE_ENABLED: \"on\" is not true or false"),
        (&[("ORPHAN_GRACE_SECONDS", "1d")], "ORPHAN_GRACE_SECONDS: \"1d\" is not a whole number of 0 or more"),
        (&[("API_TYPES", "REST,GRPC")], "API_TYPES: \"GRPC\" is not one of REST, HTTP, WEBSOCKET"),
        (&[("APIGATEWAY_REQUESTS_PER_SECOND", "0")], "APIGATEWAY_REQUESTS_PER_SECOND: \"0\" is not a rate"),
        (&[("APIGATEWAY_REQUESTS_PER_SECOND", "fast")], "APIGATEWAY_REQUESTS_PER_SECOND: \"fast\" is not a rate"),
        // 5 windows of 5 minutes cannot cover the 30-minute fetch interval.
        (&[("METRICS_MAX_WINDOWS_PER_RUN", "5")], "METRICS_MAX_WINDOWS_PER_RUN: times METRICS_INTERVAL_SECONDS"),
        (&[("HEARTBEAT_INTERVAL_SECONDS", "60"), ("SCHEDULE_RATE_MINUTES", "5")], "HEARTBEAT_INTERVAL_SECONDS: 60 is"),
        (&[("APICP_TIMEOUT_SECONDS", "88")], "APICP_TIMEOUT_SECONDS: 88 is too long"),
        (&[("CLAIM_TTL_SECONDS", "3599")], "CLAIM_TTL_SECONDS: 3599 is shorter than the Standard workflow's"),
        (&[("SYNC_LAG_THRESHOLD_MINUTES", "6"), ("SCHEDULE_RATE_MINUTES", "1")], "SYNC_LAG_THRESHOLD_MINUTES: 6"),
    ];
    for (overrides, expected) in cases {
        for scope in [Scope::Function, Scope::Deployment] {
            let message = refusal(scope, overrides);
            assert!(message.starts_with(&format!("invalid configuration {expected}")), "{overrides:?}: {message}");
        }
    }
}

#[test]
fn the_heartbeat_must_outlast_the_schedule_where_the_schedule_is_known() {
    let slow = [("SCHEDULE_RATE_MINUTES", "5")];
    assert_eq!(
        refusal(Scope::Function, &slow),
        "invalid configuration HEARTBEAT_INTERVAL_SECONDS: 60 is shorter than the schedule's interval of 300 \
         seconds (SCHEDULE_RATE_MINUTES=5): the runtime would turn inactive between runs; make it at least 300"
    );
    let fitting = with(&[("SCHEDULE_RATE_MINUTES", "5"), ("HEARTBEAT_INTERVAL_SECONDS", "300")]);
    assert_eq!(read(Scope::Function, &fitting).unwrap().schedule_interval_seconds(), Some(300));
    // Without the schedule, a function cannot check it; the deployment's default (1 minute) can.
    assert!(read(Scope::Function, &with(&[("HEARTBEAT_INTERVAL_SECONDS", "30")])).is_ok());
    assert!(refusal(Scope::Deployment, &[("HEARTBEAT_INTERVAL_SECONDS", "30")]).contains("interval of 60 seconds"));
}

#[test]
fn one_control_plane_request_must_fit_the_publish_function() {
    let max = max_control_plane_timeout_seconds();
    assert_eq!((max, publish_timeout_seconds()), (87, 280), "3 × 87 s + 1.5 s + 15 s ≤ 280 s");
    assert!(read(Scope::Function, &with(&[("APICP_TIMEOUT_SECONDS", "87")])).is_ok());
    assert_eq!(
        refusal(Scope::Function, &[("APICP_TIMEOUT_SECONDS", "88")]),
        "invalid configuration APICP_TIMEOUT_SECONDS: 88 is too long: a control plane request's 3 attempts and \
         their pauses (265.5 s) plus 15 s of state writes exceed the publish function's timeout of 280 s, so no \
         metrics window would ever be sent; make it at most 87"
    );
}

#[test]
fn a_claim_must_outlive_an_execution() {
    assert_eq!(definition_timeout_seconds(), 3600);
    assert!(read(Scope::Function, &with(&[("CLAIM_TTL_SECONDS", "3600")])).is_ok());
    assert_eq!(
        refusal(Scope::Function, &[("CLAIM_TTL_SECONDS", "600")]),
        "invalid configuration CLAIM_TTL_SECONDS: 600 is shorter than the Standard workflow's execution timeout of \
         3600 seconds: a second execution could take a stage over while the first still publishes, and send a \
         window twice; make it at least 3600"
    );
    // An Express execution ends after 5 minutes.
    assert!(read(Scope::Function, &with(&[("CLAIM_TTL_SECONDS", "300"), ("EXPRESS", "true")])).is_ok());
    assert!(
        refusal(Scope::Deployment, &[("CLAIM_TTL_SECONDS", "240"), ("EXPRESS", "true")])
            .contains("240 is shorter than the Express workflow's execution timeout of 300 seconds")
    );
}

#[test]
fn the_sync_lag_alarm_must_allow_a_healthy_run() {
    // A healthy lag reaches the change buffer plus the schedule's interval: 300 + 300 s.
    let lag = |minutes: &'static str| {
        with(&[
            ("SYNC_LAG_THRESHOLD_MINUTES", minutes),
            ("SCHEDULE_RATE_MINUTES", "5"),
            ("HEARTBEAT_INTERVAL_SECONDS", "300"),
        ])
    };
    assert!(read(Scope::Function, &lag("11")).is_ok());
    assert_eq!(
        read(Scope::Function, &lag("10")).unwrap_err().to_string(),
        "invalid configuration SYNC_LAG_THRESHOLD_MINUTES: 10 minutes does not exceed CHANGE_BUFFER_SECONDS (300) \
         plus the schedule's interval (300 seconds): the sync-lag alarm would fire on every healthy run; make it at \
         least 11"
    );
    // A function is not given the schedule: the alarm's threshold alone is checked.
    assert!(read(Scope::Function, &with(&[("SYNC_LAG_THRESHOLD_MINUTES", "1")])).is_ok());
    assert!(refusal(Scope::Deployment, &[("SYNC_LAG_THRESHOLD_MINUTES", "6")]).contains("make it at least 7"));
}

#[test]
fn the_deployment_settings_accept_what_aws_offers() {
    for days in LOG_RETENTION_DAYS {
        let days = days.to_string();
        let values = with(&[("LOG_RETENTION_DAYS", days.as_str())]);
        assert!(read(Scope::Deployment, &values).is_ok(), "{days}");
    }
    for mb in ["128", "256", "10240"] {
        assert_eq!(
            read(Scope::Deployment, &with(&[("FUNCTION_MEMORY_MB", mb)])).unwrap().function_memory_mb,
            mb.parse().ok()
        );
    }
    let values = with(&[("ORPHAN_GRACE_SECONDS", "0"), ("SCHEDULE_ENABLED", "false")]);
    let settings = read(Scope::Deployment, &values).unwrap();
    assert_eq!((settings.orphan_grace_seconds, settings.schedule_enabled), (0, Some(false)));
}

#[test]
fn stage_lists_api_types_and_capacity_parse() {
    assert_eq!(parse_stages(" prod , dev ").unwrap(), StageSelection::Named(vec!["prod".into(), "dev".into()]));
    assert_eq!(parse_stages("*").unwrap(), StageSelection::All);
    assert_eq!(parse_api_types(Some("http, WebSocket")).unwrap(), BTreeSet::from([ApiType::Http, ApiType::WebSocket]));
    assert_eq!(parse_capacity("10000 per second").unwrap(), Capacity { value: 10_000, unit: "per second".into() });
    assert!(is_valid_stage_name("prod_v2-eu") && !is_valid_stage_name("bad stage") && !is_valid_stage_name(""));
}

#[test]
fn the_workflow_logs_errors_without_execution_data_unless_told_and_a_kms_key_is_an_arn() {
    let deployment = read(Scope::Deployment, &minimal()).unwrap();
    assert_eq!(deployment.workflow_log_level, Some(WorkflowLogLevel::Error));
    assert_eq!(deployment.workflow_log_execution_data, Some(false));
    assert_eq!(deployment.control_plane_secret_kms_key_arn, None);
    let all = read(Scope::Deployment, &with(&[("WORKFLOW_LOG_LEVEL", "all"), ("WORKFLOW_LOG_EXECUTION_DATA", "true")]))
        .unwrap();
    assert_eq!((all.workflow_log_level, all.workflow_log_execution_data), (Some(WorkflowLogLevel::All), Some(true)));
    let key = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    assert_eq!(
        read(Scope::Function, &with(&[("APICP_SECRET_KMS_KEY_ARN", key)]))
            .unwrap()
            .control_plane_secret_kms_key_arn
            .as_deref(),
        Some(key)
    );
    assert_eq!(
        refusal(Scope::Deployment, &[("WORKFLOW_LOG_LEVEL", "DEBUG")]),
        "invalid configuration WORKFLOW_LOG_LEVEL: \"DEBUG\" is not one of ALL, ERROR, FATAL, OFF"
    );
    assert_eq!(
        refusal(Scope::Deployment, &[("APICP_SECRET_KMS_KEY_ARN", "alias/apicp")]),
        "invalid configuration APICP_SECRET_KMS_KEY_ARN: \"alias/apicp\" is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)"
    );
}

#[test]
fn targets_default_to_the_deployments_own_account_and_region() {
    let settings = read(Scope::Function, &minimal()).unwrap();
    assert_eq!(settings.target_accounts, TargetAccounts::OwnAccount);
    assert!(settings.target_regions.is_empty(), "the deployment's region");
    assert!(settings.target_organizational_units.is_empty());
    assert_eq!(settings.target_role_name, "ApicpAgentReader");
    assert_eq!(settings.target_role_external_id, None);
    assert_eq!(settings.target_concurrency, 10);
}

#[test]
fn targets_are_read_and_normalized() {
    let settings = read(
        Scope::Deployment,
        &with(&[
            ("TARGET_ACCOUNTS", " 222233334444, 111122223333,222233334444 "),
            ("TARGET_REGIONS", "eu-west-1, us-gov-west-1,eu-west-1"),
            ("TARGET_ROLE_NAME", "Apicp.Reader@team"),
            ("TARGET_ROLE_EXTERNAL_ID", "hub:team-a/42"),
            ("TARGET_CONCURRENCY", "40"),
        ]),
    )
    .unwrap();
    assert_eq!(settings.target_accounts, TargetAccounts::Listed(vec!["111122223333".into(), "222233334444".into()]));
    assert_eq!(settings.target_regions, ["eu-west-1", "us-gov-west-1"]);
    assert_eq!(settings.target_role_name, "Apicp.Reader@team");
    assert_eq!(settings.target_role_external_id.as_deref(), Some("hub:team-a/42"));
    let printed = serde_json::to_value(&settings).unwrap();
    assert_eq!(printed["targetAccounts"], "111122223333,222233334444");
    assert_eq!(printed["targetRegions"], serde_json::json!(["eu-west-1", "us-gov-west-1"]));
    let organization = read(
        Scope::Function,
        &with(&[("TARGET_ACCOUNTS", "organization"), ("TARGET_ORGANIZATIONAL_UNITS", "ou-ab12-cdef3456,r-ab12")]),
    )
    .unwrap();
    assert_eq!(organization.target_accounts, TargetAccounts::Organization);
    assert_eq!(organization.target_organizational_units, ["ou-ab12-cdef3456", "r-ab12"]);
}

#[test]
fn bad_targets_are_refused_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("TARGET_ACCOUNTS", "12345")], "TARGET_ACCOUNTS: \"12345\" is not an account id"),
        (&[("TARGET_ACCOUNTS", "self,111122223333")], "TARGET_ACCOUNTS: \"self\" is not an account id"),
        (&[("TARGET_ACCOUNTS", ",")], "TARGET_ACCOUNTS: must be self, organization"),
        (&[("TARGET_REGIONS", "Europe")], "TARGET_REGIONS: \"Europe\" is not an AWS region"),
        (&[("TARGET_ROLE_NAME", "a role")], "TARGET_ROLE_NAME: \"a role\" is not an IAM role name"),
        (&[("TARGET_ROLE_EXTERNAL_ID", "x")], "TARGET_ROLE_EXTERNAL_ID: must be 2-1224 characters"),
        (&[("TARGET_CONCURRENCY", "0")], "TARGET_CONCURRENCY: must be at least 1"),
        (&[("TARGET_CONCURRENCY", "41")], "TARGET_CONCURRENCY: must be at most 40"),
        (
            &[("TARGET_ORGANIZATIONAL_UNITS", "ou-ab12-cdef3456")],
            "TARGET_ORGANIZATIONAL_UNITS: limits TARGET_ACCOUNTS=organization only",
        ),
    ];
    for (overrides, expected) in cases {
        let message = refusal(Scope::Function, overrides);
        assert!(message.contains(expected), "{overrides:?}: {message}");
    }
    let message =
        refusal(Scope::Function, &[("TARGET_ACCOUNTS", "organization"), ("TARGET_ORGANIZATIONAL_UNITS", "ou-x")]);
    assert!(message.contains("\"ou-x\" is not an organizational unit id"), "{message}");
    let secret = "bad external id!";
    assert!(!refusal(Scope::Function, &[("TARGET_ROLE_EXTERNAL_ID", secret)]).contains(secret), "never echoed");
}

#[test]
fn push_mode_polls_cloudtrail_at_its_own_pace_and_batches_within_lambdas_limit() {
    let poll_only = read(Scope::Deployment, &minimal()).unwrap();
    assert!(!poll_only.push_mode);
    assert_eq!(poll_only.assets_poll_seconds(), 0, "without push, every run reads CloudTrail");
    assert_eq!(poll_only.push_batch_window_seconds, Some(5));
    let push = read(Scope::Deployment, &with(&[("PUSH_MODE", "true")])).unwrap();
    assert_eq!(push.assets_poll_seconds(), 900);
    let json = serde_json::to_value(&push).unwrap();
    assert_eq!((json["pushMode"].clone(), json["pushPollMinutes"].clone()), (true.into(), 15.into()));
    assert_eq!(json["pushBatchWindowSeconds"], 5);
    assert_eq!(
        refusal(
            Scope::Deployment,
            &[
                ("PUSH_MODE", "true"),
                ("PUSH_POLL_MINUTES", "4"),
                ("SCHEDULE_RATE_MINUTES", "5"),
                ("HEARTBEAT_INTERVAL_SECONDS", "300")
            ]
        ),
        "invalid configuration PUSH_POLL_MINUTES: 4 is shorter than the schedule's interval (SCHEDULE_RATE_MINUTES=5): \
         CloudTrail is read at most once a run; make it at least 5"
    );
    assert!(refusal(Scope::Deployment, &[("PUSH_BATCH_WINDOW_SECONDS", "301")]).contains("must be at most 300"));
    assert!(refusal(Scope::Function, &[("PUSH_MODE", "yes")]).contains("PUSH_MODE: \"yes\" is not true or false"));
    assert!(refusal(Scope::Function, &[("PUSH_POLL_MINUTES", "0")]).contains("must be at least 1 minute"));
    // The sync-lag alarm must tolerate the slower poll: a threshold below it is refused.
    let lag = refusal(Scope::Deployment, &[("PUSH_MODE", "true"), ("SYNC_LAG_THRESHOLD_MINUTES", "19")]);
    assert!(lag.starts_with("invalid configuration SYNC_LAG_THRESHOLD_MINUTES: 19 minutes"), "{lag}");
}
