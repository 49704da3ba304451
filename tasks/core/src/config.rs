//! Configuration read once per container from environment variables.
//!
//! Every setting is validated at cold start; a bad value fails with `InvalidConfig` naming the
//! variable, so a misconfigured deployment shows the culprit in the Step Functions console.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::aws::apigateway::{ApiKind, Generation};
use crate::error::{AgentError, Result};

/// Which stages to federate: an explicit list, or every stage found in the account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSelection {
    All,
    Named(Vec<String>),
}

/// Where the control plane credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A Secrets Manager secret (ARN) holding `{"username": ..., "password": ...}`.
    Secret { arn: String },
    /// Plain environment variables: for local runs only.
    Inline { username: String, password: String },
}

impl std::fmt::Debug for CredentialSource {
    // Never print a password, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret { arn } => f.debug_struct("Secret").field("arn", arn).finish(),
            Self::Inline { username, .. } => {
                f.debug_struct("Inline").field("username", username).field("password", &"***").finish()
            }
        }
    }
}

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub value: u64,
    pub unit: String,
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
    /// The agent's share of API Gateway's management quota (10 requests/s per account and region).
    pub apigateway_requests_per_second: f64,
}

pub const MAX_CHUNK_SIZE: usize = 500;

impl Config {
    pub fn change_timing(&self) -> crate::changes::ChangeTiming {
        crate::changes::ChangeTiming {
            buffer: self.change_buffer,
            overlap: self.change_overlap,
            max_window: self.change_max_window,
            reconcile: self.reconcile_interval,
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
        let env = Env(&lookup);
        let url = env.required("APICP_URL")?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid("APICP_URL", "must start with https:// (or http:// for a local stand-in)"));
        }
        // Checked here, before the URL can reach a log line: credentials belong in the secret.
        match reqwest::Url::parse(&url) {
            Err(error) => return Err(invalid("APICP_URL", &format!("is not a URL: {error}"))),
            Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
                return Err(invalid("APICP_URL", "must not carry credentials; use the secret"));
            }
            Ok(_) => {}
        }
        let credentials = match env.optional("APICP_SECRET_ARN") {
            Some(arn) => CredentialSource::Secret { arn },
            None => match (env.optional("APICP_USERNAME"), env.optional("APICP_PASSWORD")) {
                (Some(username), Some(password)) => CredentialSource::Inline { username, password },
                _ => {
                    return Err(invalid(
                        "APICP_SECRET_ARN",
                        "is required (or APICP_USERNAME and APICP_PASSWORD for a local run)",
                    ));
                }
            },
        };
        let metrics_interval = env.seconds("METRICS_INTERVAL_SECONDS", 300)?;
        if metrics_interval.as_secs() < 60 || metrics_interval.as_secs() % 60 != 0 {
            return Err(invalid("METRICS_INTERVAL_SECONDS", "must be a positive multiple of 60"));
        }
        let metrics_fetch_interval = env.seconds("METRICS_FETCH_INTERVAL_SECONDS", 1800)?;
        let metrics_max_windows_per_run = env.number("METRICS_MAX_WINDOWS_PER_RUN", 60)?.max(1) as usize;
        if (metrics_max_windows_per_run as u64) * metrics_interval.as_secs() < metrics_fetch_interval.as_secs() {
            return Err(invalid(
                "METRICS_MAX_WINDOWS_PER_RUN",
                "times METRICS_INTERVAL_SECONDS must cover METRICS_FETCH_INTERVAL_SECONDS, or a run never catches up",
            ));
        }
        let chunk_size = env.number("CHUNK_SIZE", 100)?;
        if !(1..=MAX_CHUNK_SIZE as u64).contains(&chunk_size) {
            return Err(invalid("CHUNK_SIZE", &format!("must be between 1 and {MAX_CHUNK_SIZE}")));
        }
        let runtime_tags = env.list("RUNTIME_TAGS");
        if let Some(tag) = runtime_tags.iter().find(|t| t.len() > 50 || t.chars().any(char::is_whitespace)) {
            return Err(invalid(
                "RUNTIME_TAGS",
                &format!("tag {tag:?} must be at most 50 characters without whitespace"),
            ));
        }
        Ok(Self {
            control_plane: ControlPlaneConfig {
                url: url.trim_end_matches('/').to_owned(),
                credentials,
                ca_bundle: env.optional("APICP_CA_BUNDLE"),
                timeout: env.seconds("APICP_TIMEOUT_SECONDS", 10)?,
                runtime_type: env.optional("APICP_RUNTIME_TYPE").unwrap_or_else(|| "AWS_API_GATEWAY".into()),
                runtime_id_template: env
                    .optional("RUNTIME_ID_TEMPLATE")
                    .unwrap_or_else(|| "{account}_{region}_{stage}".into()),
                runtime_name_template: env
                    .optional("RUNTIME_NAME_TEMPLATE")
                    .unwrap_or_else(|| "{stage} ({region} {account})".into()),
                runtime_description_template: env
                    .optional("RUNTIME_DESCRIPTION_TEMPLATE")
                    .unwrap_or_else(|| "Amazon API Gateway stage {stage} in {region}, account {account}".into()),
                runtime_location: env.optional("RUNTIME_LOCATION"),
                runtime_tags,
                runtime_capacity: env.optional("RUNTIME_CAPACITY").map(|v| parse_capacity(&v)).transpose()?,
                heartbeat_interval: env.seconds("HEARTBEAT_INTERVAL_SECONDS", 60)?,
            },
            state_table: env.required("STATE_TABLE")?,
            stages: parse_stages(&env.optional("STAGES").unwrap_or_else(|| "*".into()))?,
            api_types: parse_api_types(env.optional("API_TYPES").as_deref())?,
            change_buffer: env.seconds("CHANGE_BUFFER_SECONDS", 300)?,
            change_overlap: env.seconds("CHANGE_OVERLAP_SECONDS", 900)?,
            change_max_window: env.seconds("CHANGE_MAX_WINDOW_SECONDS", 3600)?.max(Duration::from_secs(60)),
            reconcile_interval: env.seconds("RECONCILE_INTERVAL_SECONDS", 86_400)?,
            allow_empty_listing_deletes: env.flag("ALLOW_EMPTY_LISTING_DELETES", false)?,
            chunk_size: chunk_size as usize,
            metrics_interval,
            metrics_buffer: env.seconds("METRICS_BUFFER_SECONDS", 180)?,
            metrics_fetch_interval,
            metrics_backfill: env.seconds("METRICS_BACKFILL_SECONDS", 3600)?,
            metrics_max_windows_per_run,
            claim_ttl: env.seconds("CLAIM_TTL_SECONDS", 3600)?,
            discovery_interval: env.seconds("DISCOVERY_INTERVAL_SECONDS", 3600)?,
            apigateway_requests_per_second: env.rate("APIGATEWAY_REQUESTS_PER_SECOND", 5.0)?,
        })
    }
}

struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String> {
        self.optional(name).ok_or_else(|| invalid(name, "is required"))
    }

    fn number(&self, name: &'static str, default: u64) -> Result<u64> {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| invalid(name, &format!("{v:?} is not a whole number of 0 or more"))),
        }
    }

    /// Requests per second: above 0 and at most API Gateway's quota of 10.
    fn rate(&self, name: &'static str, default: f64) -> Result<f64> {
        let Some(v) = self.optional(name) else { return Ok(default) };
        match v.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate <= 10.0 => Ok(rate),
            _ => Err(invalid(name, &format!("{v:?} is not a rate between 0 (excluded) and 10 requests per second"))),
        }
    }

    fn seconds(&self, name: &'static str, default: u64) -> Result<Duration> {
        self.number(name, default).map(Duration::from_secs)
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(invalid(name, &format!("{v:?} is not true or false"))),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

fn invalid(variable: &'static str, reason: &str) -> AgentError {
    AgentError::InvalidConfig { variable, reason: reason.to_owned() }
}

/// `*` or a comma-separated list of API Gateway stage names.
pub fn parse_stages(value: &str) -> Result<StageSelection> {
    if value.trim() == "*" {
        return Ok(StageSelection::All);
    }
    let names: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if names.is_empty() {
        return Err(invalid("STAGES", "must be * or a comma-separated list of stage names"));
    }
    if let Some(bad) = names.iter().find(|n| !is_valid_stage_name(n)) {
        return Err(invalid("STAGES", &format!("{bad:?} is not a valid API Gateway stage name")));
    }
    Ok(StageSelection::Named(names))
}

/// A comma-separated list of `REST`, `HTTP` and `WEBSOCKET` (any case); all three when unset.
pub fn parse_api_types(value: Option<&str>) -> Result<ApiTypes> {
    let Some(value) = value else { return Ok(ApiTypes::all()) };
    let mut kinds = BTreeSet::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let kind = ApiKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| invalid("API_TYPES", &format!("{name:?} is not one of REST, HTTP, WEBSOCKET")))?;
        kinds.insert(kind);
    }
    if kinds.is_empty() {
        return Err(invalid("API_TYPES", "must name at least one of REST, HTTP, WEBSOCKET"));
    }
    Ok(ApiTypes(kinds))
}

/// API Gateway stage names: letters, digits, hyphens and underscores, at most 128 characters.
pub fn is_valid_stage_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `<value> <unit>`, e.g. `10000 per second`, with a unit the control plane accepts.
fn parse_capacity(value: &str) -> Result<Capacity> {
    const UNITS: [&str; 7] = ["per second", "per minute", "per hour", "per day", "per week", "per month", "per year"];
    let (number, unit) = value.split_once(' ').unwrap_or((value, ""));
    let unit = unit.trim();
    match (number.parse::<u64>(), UNITS.contains(&unit)) {
        (Ok(value), true) => Ok(Capacity { value, unit: unit.to_owned() }),
        _ => Err(invalid(
            "RUNTIME_CAPACITY",
            &format!("{value:?} must look like \"10000 per second\" (units: {})", UNITS.join(", ")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_capacity("10000 per second").unwrap(), Capacity { value: 10_000, unit: "per second".into() });
    }
}
