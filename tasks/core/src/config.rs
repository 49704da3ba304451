//! Configuration read once per container from environment variables.
//!
//! Every setting is validated at cold start by the agent-settings crate (tasks/settings), the
//! same checker `cdk synth` runs: a bad value fails with `InvalidConfig` naming the variable, so a
//! misconfigured deployment shows the culprit in the Step Functions console. This module turns
//! the checked settings into the types the functions work with.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use agent_settings::{ApiType, Scope, Settings, SettingsError};
pub use agent_settings::{Capacity, CredentialSource, StageSelection, TargetAccounts, is_valid_stage_name};

use crate::aws::apigateway::{ApiKind, Generation};
use crate::error::{AgentError, Result};

/// The kinds of API federated (`API_TYPES`), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTypes(BTreeSet<ApiKind>);

impl ApiTypes {
    pub fn all() -> Self {
        Self(ApiKind::ALL.into_iter().collect())
    }

    pub fn includes(&self, kind: ApiKind) -> bool {
        self.0.contains(&kind)
    }

    /// The management APIs to read: v1 only for REST APIs, v2 only for HTTP or WebSocket APIs.
    pub fn generations(&self) -> Vec<Generation> {
        Generation::ALL.into_iter().filter(|g| self.0.iter().any(|k| k.generation() == *g)).collect()
    }

    pub fn kinds(&self) -> impl Iterator<Item = ApiKind> + '_ {
        self.0.iter().copied()
    }

    fn of(types: &BTreeSet<ApiType>) -> Self {
        Self(
            types
                .iter()
                .map(|api_type| match api_type {
                    ApiType::Rest => ApiKind::Rest,
                    ApiType::Http => ApiKind::Http,
                    ApiType::WebSocket => ApiKind::WebSocket,
                })
                .collect(),
        )
    }
}

/// Settings of the control plane connection and of the runtimes we register there.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    pub url: String,
    pub credentials: CredentialSource,
    pub ca_bundle: Option<String>,
    pub timeout: Duration,
    pub runtime_type: String,
    pub runtime_id_template: String,
    pub runtime_name_template: String,
    pub runtime_description_template: String,
    pub runtime_location: Option<String>,
    pub runtime_tags: Vec<String>,
    pub runtime_capacity: Option<Capacity>,
    pub heartbeat_interval: Duration,
}

/// Which account-regions the deployment federates and how it reaches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSettings {
    pub accounts: TargetAccounts,
    pub organizational_units: Vec<String>,
    /// Empty for the deployment's own region.
    pub regions: Vec<String>,
    pub role_name: String,
    pub external_id: Option<String>,
    pub concurrency: u64,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub control_plane: ControlPlaneConfig,
    pub state_table: String,
    pub stages: StageSelection,
    pub api_types: ApiTypes,
    /// How far behind "now" CloudTrail windows end: CloudTrail delivers within about 5 minutes.
    pub change_buffer: Duration,
    /// How much of the previous CloudTrail window each window reads again (late deliveries).
    pub change_overlap: Duration,
    /// The longest CloudTrail window one run reads.
    pub change_max_window: Duration,
    pub reconcile_interval: Duration,
    pub allow_empty_listing_deletes: bool,
    pub chunk_size: usize,
    pub metrics_interval: Duration,
    /// How far behind "now" metric windows end: API Gateway datapoints can arrive late.
    pub metrics_buffer: Duration,
    /// How much must be due before the metrics branch reads CloudWatch: one query serves every
    /// window of it, and CloudWatch bills per query, not per datapoint.
    pub metrics_fetch_interval: Duration,
    /// How far back a new installation (a stage without a metrics watermark) starts.
    pub metrics_backfill: Duration,
    pub metrics_max_windows_per_run: usize,
    /// How long a branch's claim on a stage lasts if the execution dies without releasing it.
    pub claim_ttl: Duration,
    /// With `STAGES=*`, how long a discovery of the account's stages is reused.
    pub discovery_interval: Duration,
    /// How long a runtime whose stage is no longer federated stays in the control plane before
    /// it is deleted with its APIs.
    pub orphan_grace: Duration,
    /// The agent's share of API Gateway's management quota (10 requests/s per account and region).
    pub apigateway_requests_per_second: f64,
    pub targets: TargetSettings,
    /// Whether API Gateway's changes also arrive pushed, as EventBridge events (`PUSH_MODE`).
    pub push_mode: bool,
    /// The shortest time between two CloudTrail reads of a stage: zero (every run) in poll mode,
    /// `PUSH_POLL_MINUTES` with push mode, where polling is the safety net.
    pub assets_poll: Duration,
    /// How long an execution with pushed events waits for a stage another execution holds (which
    /// usually ends within seconds) before it leaves the events to the poll. Not a setting.
    pub push_claim_wait: Duration,
}

impl Config {
    pub fn change_timing(&self) -> crate::changes::ChangeTiming {
        crate::changes::ChangeTiming {
            buffer: self.change_buffer,
            overlap: self.change_overlap,
            max_window: self.change_max_window,
            reconcile: self.reconcile_interval,
            poll: self.assets_poll,
        }
    }

    pub fn window_timing(&self) -> crate::metrics::WindowTiming {
        crate::metrics::WindowTiming {
            interval: self.metrics_interval.as_secs() as i64,
            buffer: self.metrics_buffer.as_secs() as i64,
            fetch_interval: self.metrics_fetch_interval.as_secs() as i64,
            backfill: self.metrics_backfill.as_secs() as i64,
            max_windows: self.metrics_max_windows_per_run,
        }
    }

    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_map(values: &HashMap<&str, &str>) -> Result<Self> {
        Self::from_lookup(|name| values.get(name).map(|v| (*v).to_owned()))
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let settings = Settings::from_lookup(Scope::Function, lookup).map_err(invalid_config)?;
        let seconds = Duration::from_secs;
        let assets_poll = seconds(settings.assets_poll_seconds());
        Ok(Self {
            control_plane: ControlPlaneConfig {
                url: settings.control_plane_url,
                credentials: settings.credentials,
                ca_bundle: settings.control_plane_ca_bundle,
                timeout: seconds(settings.control_plane_timeout_seconds),
                runtime_type: settings.runtime_type,
                runtime_id_template: settings.runtime_id_template,
                runtime_name_template: settings.runtime_name_template,
                runtime_description_template: settings.runtime_description_template,
                runtime_location: settings.runtime_location,
                runtime_tags: settings.runtime_tags,
                runtime_capacity: settings.runtime_capacity,
                heartbeat_interval: seconds(settings.heartbeat_interval_seconds),
            },
            // Scope::Function requires it.
            state_table: settings.state_table.unwrap_or_default(),
            stages: settings.stages,
            api_types: ApiTypes::of(&settings.api_types),
            change_buffer: seconds(settings.change_buffer_seconds),
            change_overlap: seconds(settings.change_overlap_seconds),
            change_max_window: seconds(settings.change_max_window_seconds),
            reconcile_interval: seconds(settings.reconcile_interval_seconds),
            allow_empty_listing_deletes: settings.allow_empty_listing_deletes,
            chunk_size: settings.chunk_size,
            metrics_interval: seconds(settings.metrics_interval_seconds),
            metrics_buffer: seconds(settings.metrics_buffer_seconds),
            metrics_fetch_interval: seconds(settings.metrics_fetch_interval_seconds),
            metrics_backfill: seconds(settings.metrics_backfill_seconds),
            metrics_max_windows_per_run: settings.metrics_max_windows_per_run,
            claim_ttl: seconds(settings.claim_ttl_seconds),
            discovery_interval: seconds(settings.discovery_interval_seconds),
            orphan_grace: seconds(settings.orphan_grace_seconds),
            apigateway_requests_per_second: settings.api_gateway_requests_per_second,
            targets: TargetSettings {
                accounts: settings.target_accounts,
                organizational_units: settings.target_organizational_units,
                regions: settings.target_regions,
                role_name: settings.target_role_name,
                external_id: settings.target_role_external_id,
                concurrency: settings.target_concurrency,
            },
            push_mode: settings.push_mode,
            assets_poll,
            push_claim_wait: crate::handlers::list_changes::PUSH_CLAIM_WAIT,
        })
    }
}

fn invalid_config(error: SettingsError) -> AgentError {
    AgentError::InvalidConfig { variable: error.variable, reason: error.reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_stages(value: &str) -> Result<StageSelection> {
        agent_settings::parse_stages(value).map_err(invalid_config)
    }

    fn parse_api_types(value: Option<&str>) -> Result<ApiTypes> {
        agent_settings::parse_api_types(value).map(|types| ApiTypes::of(&types)).map_err(invalid_config)
    }

    fn minimal() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("APICP_URL", "https://apicp.example.com/"),
            ("APICP_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp-AbCdEf"),
            ("STATE_TABLE", "agent-state"),
        ])
    }

    #[test]
    fn defaults_apply_when_only_required_settings_are_given() {
        let config = Config::from_map(&minimal()).unwrap();
        assert_eq!(config.control_plane.url, "https://apicp.example.com");
        assert_eq!(config.stages, StageSelection::All);
        assert_eq!(config.change_buffer, Duration::from_secs(300));
        assert_eq!(config.metrics_interval, Duration::from_secs(300));
        assert_eq!(config.chunk_size, 100);
        assert!(!config.allow_empty_listing_deletes);
        assert_eq!(config.apigateway_requests_per_second, 5.0, "half of API Gateway's quota");
        assert_eq!(config.change_overlap, Duration::from_secs(900));
        assert_eq!(config.metrics_fetch_interval, Duration::from_secs(1800), "the CloudWatch cost target");
        assert_eq!(config.metrics_backfill, Duration::from_secs(3600));
        assert_eq!(config.api_types, ApiTypes::all());
    }

    #[test]
    fn api_types_select_the_management_apis_to_read() {
        let cases = [
            ("REST", vec![Generation::V1]),
            ("http, WebSocket", vec![Generation::V2]),
            ("websocket,REST", vec![Generation::V1, Generation::V2]),
        ];
        for (value, generations) in cases {
            assert_eq!(parse_api_types(Some(value)).unwrap().generations(), generations, "{value}");
        }
        let http_only = parse_api_types(Some("HTTP")).unwrap();
        assert!(http_only.includes(ApiKind::Http) && !http_only.includes(ApiKind::WebSocket));
    }

    #[test]
    fn each_missing_required_setting_is_named() {
        for variable in ["APICP_URL", "STATE_TABLE", "APICP_SECRET_ARN"] {
            let mut values = minimal();
            values.remove(variable);
            let error = Config::from_map(&values).unwrap_err();
            assert!(error.to_string().contains(variable), "{error}");
            assert_eq!(error.error_type(), "InvalidConfig");
        }
    }

    #[test]
    fn malformed_values_are_rejected_with_the_variable_name() {
        let cases = [
            ("METRICS_INTERVAL_SECONDS", "90"),
            ("CHUNK_SIZE", "0"),
            ("CHUNK_SIZE", "ten"),
            ("ALLOW_EMPTY_LISTING_DELETES", "maybe"),
            ("STAGES", "prod, bad stage"),
            ("RUNTIME_TAGS", "has space"),
            ("RUNTIME_CAPACITY", "10 per fortnight"),
            ("APICP_URL", "ftp://apicp"),
            ("APIGATEWAY_REQUESTS_PER_SECOND", "0"),
            ("APIGATEWAY_REQUESTS_PER_SECOND", "12"),
            ("APIGATEWAY_REQUESTS_PER_SECOND", "fast"),
            // 5 windows of 5 minutes cannot cover the 30-minute fetch interval.
            ("METRICS_MAX_WINDOWS_PER_RUN", "5"),
            ("METRICS_FETCH_INTERVAL_SECONDS", "a while"),
            ("API_TYPES", "REST,GRPC"),
            ("API_TYPES", " , "),
        ];
        for (variable, value) in cases {
            let mut values = minimal();
            values.insert(variable, value);
            let error = Config::from_map(&values).unwrap_err();
            assert!(error.to_string().contains(variable), "{variable}={value}: {error}");
        }
    }

    #[test]
    fn inline_credentials_are_accepted_and_never_printed() {
        let mut values = minimal();
        values.remove("APICP_SECRET_ARN");
        values.insert("APICP_USERNAME", "agent");
        values.insert("APICP_PASSWORD", "s3cr3t-value");
        let config = Config::from_map(&values).unwrap();
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
    }

    #[test]
    fn stage_lists_and_capacity_parse() {
        assert_eq!(parse_stages(" prod , dev ").unwrap(), StageSelection::Named(vec!["prod".into(), "dev".into()]));
        let mut values = minimal();
        values.insert("RUNTIME_CAPACITY", "10000 per second");
        let capacity = Config::from_map(&values).unwrap().control_plane.runtime_capacity;
        assert_eq!(capacity, Some(Capacity { value: 10_000, unit: "per second".into() }));
    }

    #[test]
    fn durations_keep_their_defaults_and_refusals_are_invalid_config() {
        let config = Config::from_map(&minimal()).unwrap();
        assert_eq!(config.orphan_grace, Duration::from_secs(86_400));
        assert_eq!(config.claim_ttl, Duration::from_secs(3600));
        assert_eq!(config.change_max_window, Duration::from_secs(3600));
        assert_eq!(config.control_plane.heartbeat_interval, Duration::from_secs(60));
        let mut values = minimal();
        values.insert("CHANGE_MAX_WINDOW_SECONDS", "30");
        let error = Config::from_map(&values).unwrap_err();
        assert_eq!(error.error_type(), "InvalidConfig");
        assert_eq!(error.to_string(), "invalid configuration CHANGE_MAX_WINDOW_SECONDS: must be at least 60 seconds");
    }

    /// The settings crate checks APICP_TIMEOUT_SECONDS against the publish function's timeout
    /// with its own copy of the client's attempts and pauses and of the deployed timeout.
    #[test]
    fn the_timeout_check_counts_as_the_client_and_the_deployment_do() {
        use crate::control_plane::{Credentials, HttpControlPlane};
        let credentials = Credentials { username: "u".into(), password: "p".into() };
        for seconds in [1, 10, 87] {
            let client =
                HttpControlPlane::new("https://apicp", credentials.clone(), Duration::from_secs(seconds), None);
            let longest = client.unwrap().longest_request();
            assert_eq!(longest, Duration::from_millis(agent_settings::longest_control_plane_request_ms(seconds)));
        }
        let publish = crate::bootstrap::deployed_timeout("publish");
        assert_eq!(publish, Duration::from_secs(agent_settings::publish_timeout_seconds()));
    }
}
