//! The agent's settings and every rule they obey, in one place.
//!
//! The same checker runs twice: at `cdk synth`, where the CDK app runs `check-settings` on its
//! context values (as these environment variables) and deploys what it prints, and at each
//! function's cold start (agent-core's `Config::from_env`). A bad value is refused with
//! [`SettingsError`], which names the variable and says what to do.
//!
//! Some settings belong to the deployment rather than to the functions (the alarm threshold, the
//! memory, the log retention): the checker checks them, and the cross-checks that involve them,
//! wherever they are given. `check-settings` gives each its default; a function checks what its
//! environment holds (the CDK passes it `SCHEDULE_RATE_MINUTES` and `EXPRESS`).

mod workflow;

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

pub use workflow::{
    CONTROL_PLANE_ATTEMPTS, CONTROL_PLANE_FIRST_PAUSE_MS, EXPRESS_EXECUTION_LIMIT_SECONDS,
    PUBLISH_STATE_WRITES_SECONDS, control_plane_pauses_ms, definition_timeout_seconds, deployed_timeout_seconds,
    execution_timeout_seconds, longest_control_plane_request_ms, max_control_plane_timeout_seconds,
    publish_timeout_seconds,
};

/// A setting that cannot work: the variable, and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub variable: &'static str,
    pub reason: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}: {}", self.variable, self.reason)
    }
}

impl std::error::Error for SettingsError {}

pub type Result<T> = std::result::Result<T, SettingsError>;

fn invalid(variable: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError { variable, reason: reason.into() }
}

/// Where the settings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A function at cold start: `STATE_TABLE` is required; the deployment's own settings are
    /// checked when its environment holds them.
    Function,
    /// `cdk synth` (`check-settings`): the stack creates the table; the deployment's own
    /// settings take their defaults, so every cross-check runs.
    Deployment,
}

/// Which stages to federate: an explicit list, or every stage found in the account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageSelection {
    All,
    Named(Vec<String>),
}

impl Serialize for StageSelection {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::All => ["*"].serialize(serializer),
            Self::Named(names) => names.serialize(serializer),
        }
    }
}

/// Which accounts to federate (`TARGET_ACCOUNTS`): with the regions of `TARGET_REGIONS`, the
/// deployment's *targets*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAccounts {
    /// The deployment's own account only (`self`): no role is assumed.
    OwnAccount,
    /// These account ids; the deployment's own may be among them.
    Listed(Vec<String>),
    /// Every ACTIVE account of the AWS Organization (under `TARGET_ORGANIZATIONAL_UNITS` when given).
    Organization,
}

impl Serialize for TargetAccounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::OwnAccount => serializer.serialize_str("self"),
            Self::Organization => serializer.serialize_str("organization"),
            Self::Listed(ids) => serializer.serialize_str(&ids.join(",")),
        }
    }
}

/// The role assumed in every target account other than the deployment's own.
pub const DEFAULT_TARGET_ROLE_NAME: &str = "ApicpAgentReader";

/// Where the control plane credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A Secrets Manager secret (ARN) holding `{"username": ..., "password": ...}`.
    Secret { arn: String },
    /// Plain environment variables: for local runs only.
    Inline { username: String, password: String },
}

impl fmt::Debug for CredentialSource {
    // Never print a password, even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret { arn } => f.debug_struct("Secret").field("arn", arn).finish(),
            Self::Inline { username, .. } => {
                f.debug_struct("Inline").field("username", username).field("password", &"***").finish()
            }
        }
    }
}

/// Printed as the secret's ARN, or `null` for inline credentials: never a password.
fn secret_arn<S: Serializer>(source: &CredentialSource, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    match source {
        CredentialSource::Secret { arn } => serializer.serialize_some(arn),
        CredentialSource::Inline { .. } => serializer.serialize_none(),
    }
}

/// A kind of API (`API_TYPES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ApiType {
    #[serde(rename = "REST")]
    Rest,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "WEBSOCKET")]
    WebSocket,
}

impl ApiType {
    pub const ALL: [ApiType; 3] = [ApiType::Rest, ApiType::Http, ApiType::WebSocket];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "REST",
            Self::Http => "HTTP",
            Self::WebSocket => "WEBSOCKET",
        }
    }
}

/// A runtime's capacity (`RUNTIME_CAPACITY`), e.g. `10000 per second`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub value: u64,
    pub unit: String,
}

impl Serialize for Capacity {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{} {}", self.value, self.unit))
    }
}

pub const MAX_CHUNK_SIZE: usize = 500;

/// The retentions CloudWatch Logs offers, in days; 9999 keeps the logs forever (the CDK's
/// `RetentionDays.INFINITE`).
pub const LOG_RETENTION_DAYS: [u64; 23] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653, 9999];

/// Lambda's memory range, in MB.
pub const FUNCTION_MEMORY_MB: (u64, u64) = (128, 10_240);

/// Every setting, validated and normalized (defaults applied). Printed by `check-settings` as
/// one JSON object whose keys are the CDK context keys.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// `APICP_URL`, without a trailing slash.
    pub control_plane_url: String,
    /// `APICP_SECRET_ARN`, or `APICP_USERNAME` and `APICP_PASSWORD`.
    #[serde(rename = "controlPlaneSecretArn", serialize_with = "secret_arn")]
    pub credentials: CredentialSource,
    pub control_plane_ca_bundle: Option<String>,
    pub control_plane_timeout_seconds: u64,
    pub runtime_type: String,
    /// Required in [`Scope::Function`]; the stack creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_table: Option<String>,
    pub stages: StageSelection,
    /// Never empty.
    pub api_types: BTreeSet<ApiType>,
    pub runtime_id_template: String,
    pub runtime_name_template: String,
    pub runtime_description_template: String,
    pub runtime_location: Option<String>,
    pub runtime_tags: Vec<String>,
    pub runtime_capacity: Option<Capacity>,
    pub heartbeat_interval_seconds: u64,
    pub change_buffer_seconds: u64,
    pub change_overlap_seconds: u64,
    pub change_max_window_seconds: u64,
    pub reconcile_interval_seconds: u64,
    pub allow_empty_listing_deletes: bool,
    pub chunk_size: usize,
    pub metrics_interval_seconds: u64,
    pub metrics_buffer_seconds: u64,
    pub metrics_fetch_interval_seconds: u64,
    pub metrics_backfill_seconds: u64,
    pub metrics_max_windows_per_run: usize,
    pub claim_ttl_seconds: u64,
    pub discovery_interval_seconds: u64,
    pub orphan_grace_seconds: u64,
    pub api_gateway_requests_per_second: f64,
    /// `TARGET_ACCOUNTS`.
    pub target_accounts: TargetAccounts,
    /// `TARGET_ORGANIZATIONAL_UNITS`: OU ids (or the root's) limiting `organization`.
    pub target_organizational_units: Vec<String>,
    /// `TARGET_REGIONS`; empty for the deployment's own region.
    pub target_regions: Vec<String>,
    /// `TARGET_ROLE_NAME`.
    pub target_role_name: String,
    /// `TARGET_ROLE_EXTERNAL_ID`: what the member role's trust policy requires of the agent.
    pub target_role_external_id: Option<String>,
    /// `TARGET_CONCURRENCY`: targets synced at once.
    pub target_concurrency: u64,
    /// `PUSH_MODE`: API Gateway's changes also arrive as EventBridge events, applied within
    /// seconds; CloudTrail is then polled every `PUSH_POLL_MINUTES` as the safety net.
    pub push_mode: bool,
    /// `PUSH_POLL_MINUTES`: with push mode, how often the assets branch reads CloudTrail.
    pub push_poll_minutes: u64,
    // The deployment's own settings: always given to `check-settings` (or defaulted), and to a
    // function only as far as the stack passes them.
    /// `SCHEDULE_RATE_MINUTES`: minutes between scheduled executions.
    pub schedule_rate_minutes: Option<u64>,
    /// `SCHEDULE_ENABLED`.
    pub schedule_enabled: Option<bool>,
    /// `PUSH_BATCH_WINDOW_SECONDS`: how long the queue's event source gathers events into one
    /// invocation of the push starter (Lambda's `MaximumBatchingWindowInSeconds`, 0 to 300).
    pub push_batch_window_seconds: Option<u64>,
    /// `EXPRESS`: an Express workflow instead of a Standard one.
    pub express: Option<bool>,
    /// `FUNCTION_MEMORY_MB`.
    pub function_memory_mb: Option<u64>,
    /// `LOG_RETENTION_DAYS`.
    pub log_retention_days: Option<u64>,
    /// `SYNC_LAG_THRESHOLD_MINUTES`: the sync-lag alarm's threshold.
    pub sync_lag_threshold_minutes: Option<u64>,
    /// `WORKFLOW_LOG_LEVEL`: what the state machine logs (`ALL`, `ERROR`, `FATAL` or `OFF`).
    pub workflow_log_level: Option<WorkflowLogLevel>,
    /// `WORKFLOW_LOG_EXECUTION_DATA`: whether its log lines carry the states' input and output
    /// (API names, descriptions and URLs among them).
    pub workflow_log_execution_data: Option<bool>,
    /// `APICP_SECRET_KMS_KEY_ARN`: the customer managed KMS key encrypting the control plane
    /// secret (an imported one), which the functions may then decrypt with.
    pub control_plane_secret_kms_key_arn: Option<String>,
}

/// The state machine's log level (Step Functions' `LogLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WorkflowLogLevel {
    All,
    Error,
    Fatal,
    Off,
}

impl Settings {
    pub fn from_env(scope: Scope) -> Result<Self> {
        Self::from_lookup(scope, |name| std::env::var(name).ok())
    }

    /// The settings from `lookup` (an environment variable's value by name); unset or blank
    /// values take their defaults.
    pub fn from_lookup(scope: Scope, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = Env(&lookup);
        let control_plane_url = parse_url(&env.required("APICP_URL")?)?;
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
        let metrics_interval_seconds = env.number("METRICS_INTERVAL_SECONDS", 300)?;
        if metrics_interval_seconds < 60 || metrics_interval_seconds % 60 != 0 {
            return Err(invalid("METRICS_INTERVAL_SECONDS", "must be a positive multiple of 60"));
        }
        let metrics_fetch_interval_seconds = env.number("METRICS_FETCH_INTERVAL_SECONDS", 1800)?;
        let metrics_max_windows_per_run = env.at_least("METRICS_MAX_WINDOWS_PER_RUN", 60, 1, "must be at least 1")?;
        if metrics_max_windows_per_run.saturating_mul(metrics_interval_seconds) < metrics_fetch_interval_seconds {
            return Err(invalid(
                "METRICS_MAX_WINDOWS_PER_RUN",
                "times METRICS_INTERVAL_SECONDS must cover METRICS_FETCH_INTERVAL_SECONDS, or a run never catches up",
            ));
        }
        let chunk_size = env.number("CHUNK_SIZE", 100)?;
        if !(1..=MAX_CHUNK_SIZE as u64).contains(&chunk_size) {
            return Err(invalid("CHUNK_SIZE", format!("must be between 1 and {MAX_CHUNK_SIZE}")));
        }
        let runtime_tags = env.list("RUNTIME_TAGS");
        if let Some(tag) = runtime_tags.iter().find(|t| t.len() > 50 || t.chars().any(char::is_whitespace)) {
            return Err(invalid(
                "RUNTIME_TAGS",
                format!("tag {tag:?} must be at most 50 characters without whitespace"),
            ));
        }
        let runtime_id_template = env.text("RUNTIME_ID_TEMPLATE", "{account}_{region}_{stage}");
        if !runtime_id_template.contains("{stage}") {
            return Err(invalid(
                "RUNTIME_ID_TEMPLATE",
                "must contain {stage}: without it every stage shares one runtime, and each stage's sync deletes \
                 the other stages' APIs",
            ));
        }
        let state_table = match scope {
            Scope::Function => Some(env.required("STATE_TABLE")?),
            Scope::Deployment => env.optional("STATE_TABLE"),
        };
        // The deployment's own settings: defaults for the deployment, as given for a function.
        let deployment = |value: Option<u64>, default: u64| match scope {
            Scope::Deployment => Some(value.unwrap_or(default)),
            Scope::Function => value,
        };
        let deployment_flag = |value: Option<bool>, default: bool| match scope {
            Scope::Deployment => Some(value.unwrap_or(default)),
            Scope::Function => value,
        };
        let settings = Self {
            control_plane_url,
            credentials,
            control_plane_ca_bundle: env.optional("APICP_CA_BUNDLE"),
            control_plane_timeout_seconds: env.at_least("APICP_TIMEOUT_SECONDS", 10, 1, "must be at least 1 second")?,
            runtime_type: env.text("APICP_RUNTIME_TYPE", "AWS_API_GATEWAY"),
            state_table,
            stages: parse_stages(&env.text("STAGES", "*"))?,
            api_types: parse_api_types(env.optional("API_TYPES").as_deref())?,
            runtime_id_template,
            runtime_name_template: env.text("RUNTIME_NAME_TEMPLATE", "{stage} ({region} {account})"),
            runtime_description_template: env.text(
                "RUNTIME_DESCRIPTION_TEMPLATE",
                "Amazon API Gateway stage {stage} in {region}, account {account}",
            ),
            runtime_location: env.optional("RUNTIME_LOCATION"),
            runtime_tags,
            runtime_capacity: env.optional("RUNTIME_CAPACITY").map(|v| parse_capacity(&v)).transpose()?,
            heartbeat_interval_seconds: env.at_least(
                "HEARTBEAT_INTERVAL_SECONDS",
                60,
                1,
                "must be at least 1 second",
            )?,
            change_buffer_seconds: env.at_least(
                "CHANGE_BUFFER_SECONDS",
                300,
                60,
                "must be at least 60 seconds: CloudTrail delivers events minutes late, and a shorter buffer reads \
                 windows before their events are delivered",
            )?,
            change_overlap_seconds: env.number("CHANGE_OVERLAP_SECONDS", 900)?,
            change_max_window_seconds: env.at_least(
                "CHANGE_MAX_WINDOW_SECONDS",
                3600,
                60,
                "must be at least 60 seconds",
            )?,
            reconcile_interval_seconds: env.at_least(
                "RECONCILE_INTERVAL_SECONDS",
                86_400,
                60,
                "must be at least 60 seconds",
            )?,
            allow_empty_listing_deletes: env.flag("ALLOW_EMPTY_LISTING_DELETES")?.unwrap_or(false),
            chunk_size: chunk_size as usize,
            metrics_interval_seconds,
            metrics_buffer_seconds: env.at_least(
                "METRICS_BUFFER_SECONDS",
                180,
                60,
                "must be at least 60 seconds: API Gateway's datapoints reach CloudWatch late, and a shorter buffer \
                 reads windows before their datapoints are delivered",
            )?,
            metrics_fetch_interval_seconds,
            metrics_backfill_seconds: env.number("METRICS_BACKFILL_SECONDS", 3600)?,
            metrics_max_windows_per_run: metrics_max_windows_per_run as usize,
            claim_ttl_seconds: env.at_least("CLAIM_TTL_SECONDS", 3600, 60, "must be at least 60 seconds")?,
            discovery_interval_seconds: env.number("DISCOVERY_INTERVAL_SECONDS", 3600)?,
            orphan_grace_seconds: env.number("ORPHAN_GRACE_SECONDS", 86_400)?,
            api_gateway_requests_per_second: env.rate("APIGATEWAY_REQUESTS_PER_SECOND", 5.0)?,
            target_accounts: parse_target_accounts(&env.text("TARGET_ACCOUNTS", "self"))?,
            target_organizational_units: parse_organizational_units(&env.list("TARGET_ORGANIZATIONAL_UNITS"))?,
            target_regions: parse_regions(&env.list("TARGET_REGIONS"))?,
            target_role_name: parse_role_name(&env.text("TARGET_ROLE_NAME", DEFAULT_TARGET_ROLE_NAME))?,
            target_role_external_id: env.external_id("TARGET_ROLE_EXTERNAL_ID")?,
            target_concurrency: env.at_least("TARGET_CONCURRENCY", 10, 1, "must be at least 1")?,
            push_mode: env.flag("PUSH_MODE")?.unwrap_or(false),
            push_poll_minutes: env.at_least("PUSH_POLL_MINUTES", 15, 1, "must be at least 1 minute")?,
            schedule_rate_minutes: deployment(
                env.given_at_least("SCHEDULE_RATE_MINUTES", 1, "must be at least 1 minute")?,
                1,
            ),
            schedule_enabled: deployment_flag(env.flag("SCHEDULE_ENABLED")?, true),
            push_batch_window_seconds: match env.given_number("PUSH_BATCH_WINDOW_SECONDS")? {
                Some(seconds) if seconds > MAX_PUSH_BATCH_WINDOW_SECONDS => {
                    return Err(invalid(
                        "PUSH_BATCH_WINDOW_SECONDS",
                        format!("must be at most {MAX_PUSH_BATCH_WINDOW_SECONDS} (Lambda's longest batching window)"),
                    ));
                }
                given => deployment(given, 5),
            },
            express: deployment_flag(env.flag("EXPRESS")?, false),
            function_memory_mb: deployment(env.function_memory("FUNCTION_MEMORY_MB")?, 256),
            log_retention_days: deployment(env.log_retention("LOG_RETENTION_DAYS")?, 30),
            sync_lag_threshold_minutes: deployment(
                env.given_at_least("SYNC_LAG_THRESHOLD_MINUTES", 1, "must be at least 1 minute")?,
                30,
            ),
            workflow_log_level: match (env.workflow_log_level("WORKFLOW_LOG_LEVEL")?, scope) {
                (None, Scope::Deployment) => Some(WorkflowLogLevel::Error),
                (level, _) => level,
            },
            workflow_log_execution_data: deployment_flag(env.flag("WORKFLOW_LOG_EXECUTION_DATA")?, false),
            control_plane_secret_kms_key_arn: env.kms_key_arn("APICP_SECRET_KMS_KEY_ARN")?,
        };
        settings.check_together()?;
        Ok(settings)
    }

    /// How often the assets branch reads CloudTrail at most: every run, or with push mode every
    /// `PUSH_POLL_MINUTES`.
    pub fn assets_poll_seconds(&self) -> u64 {
        match self.push_mode {
            true => self.push_poll_minutes.saturating_mul(60),
            false => 0,
        }
    }

    /// The schedule's interval in seconds, when known.
    pub fn schedule_interval_seconds(&self) -> Option<u64> {
        self.schedule_rate_minutes.map(|minutes| minutes.saturating_mul(60))
    }

    /// The rules between settings, each checked where all its values are known.
    fn check_together(&self) -> Result<()> {
        if !self.target_organizational_units.is_empty() && self.target_accounts != TargetAccounts::Organization {
            return Err(invalid(
                "TARGET_ORGANIZATIONAL_UNITS",
                "limits TARGET_ACCOUNTS=organization only; set TARGET_ACCOUNTS=organization, or remove it",
            ));
        }
        if self.target_concurrency > MAX_TARGET_CONCURRENCY {
            return Err(invalid(
                "TARGET_CONCURRENCY",
                format!(
                    "must be at most {MAX_TARGET_CONCURRENCY} (an inline Map state runs at most 40 iterations at once)"
                ),
            ));
        }
        if let (true, Some(minutes), Some(schedule)) =
            (self.push_mode, self.schedule_rate_minutes, self.schedule_interval_seconds())
            && self.push_poll_minutes.saturating_mul(60) < schedule
        {
            return Err(invalid(
                "PUSH_POLL_MINUTES",
                format!(
                    "{} is shorter than the schedule's interval (SCHEDULE_RATE_MINUTES={minutes}): CloudTrail is read \
                     at most once a run; make it at least {minutes}",
                    self.push_poll_minutes
                ),
            ));
        }
        if let (Some(minutes), Some(schedule)) = (self.schedule_rate_minutes, self.schedule_interval_seconds())
            && self.heartbeat_interval_seconds < schedule
        {
            return Err(invalid(
                "HEARTBEAT_INTERVAL_SECONDS",
                format!(
                    "{} is shorter than the schedule's interval of {schedule} seconds (SCHEDULE_RATE_MINUTES={minutes}): \
                     the runtime would turn inactive between runs; make it at least {schedule}",
                    self.heartbeat_interval_seconds
                ),
            ));
        }
        let timeout = self.control_plane_timeout_seconds;
        let max_timeout = max_control_plane_timeout_seconds();
        if timeout > max_timeout {
            let longest_ms = longest_control_plane_request_ms(timeout);
            return Err(invalid(
                "APICP_TIMEOUT_SECONDS",
                format!(
                    "{timeout} is too long: a control plane request's {CONTROL_PLANE_ATTEMPTS} attempts and their pauses \
                     ({}.{} s) plus {PUBLISH_STATE_WRITES_SECONDS} s of state writes exceed the publish function's \
                     timeout of {} s, so no metrics window would ever be sent; make it at most {max_timeout}",
                    longest_ms / 1000,
                    longest_ms % 1000 / 100,
                    publish_timeout_seconds()
                ),
            ));
        }
        let express = self.express.unwrap_or(false);
        let execution_timeout = execution_timeout_seconds(express);
        if self.claim_ttl_seconds < execution_timeout {
            return Err(invalid(
                "CLAIM_TTL_SECONDS",
                format!(
                    "{} is shorter than the {} workflow's execution timeout of {execution_timeout} seconds: a second \
                     execution could take a stage over while the first still publishes, and send a window twice; make \
                     it at least {execution_timeout}",
                    self.claim_ttl_seconds,
                    if express { "Express" } else { "Standard" },
                ),
            ));
        }
        if let (Some(threshold), Some(schedule)) = (self.sync_lag_threshold_minutes, self.schedule_interval_seconds()) {
            // With push mode, CloudTrail (and so the watermark) moves once per poll interval.
            let between_reads = schedule.max(self.assets_poll_seconds());
            let healthy_lag = self.change_buffer_seconds.saturating_add(between_reads);
            if threshold.saturating_mul(60) <= healthy_lag {
                let reads = match self.push_mode {
                    true => format!("PUSH_POLL_MINUTES ({} minutes)", self.push_poll_minutes),
                    false => format!("the schedule's interval ({schedule} seconds)"),
                };
                return Err(invalid(
                    "SYNC_LAG_THRESHOLD_MINUTES",
                    format!(
                        "{threshold} minutes does not exceed CHANGE_BUFFER_SECONDS ({}) plus {reads}: the sync-lag \
                         alarm would fire on every healthy run; make it at least {}",
                        self.change_buffer_seconds,
                        healthy_lag / 60 + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `APICP_URL`: https, or http for a control plane on this host; never with credentials.
fn parse_url(url: &str) -> Result<String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid("APICP_URL", "must start with https:// (or http:// for a local stand-in)"));
    }
    // Checked before the URL can reach a log line: credentials belong in the secret.
    let parsed = match url::Url::parse(url) {
        Err(error) => return Err(invalid("APICP_URL", format!("is not a URL: {error}"))),
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            return Err(invalid("APICP_URL", "must not carry credentials; use the secret"));
        }
        Ok(parsed) => parsed,
    };
    if parsed.scheme() == "http" && !is_loopback(&parsed) {
        return Err(invalid(
            "APICP_URL",
            "must start with https://: http:// is only for a control plane on this host (127.0.0.1, ::1 or \
             localhost), as the credentials would otherwise cross the network in clear text",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The most targets synced at once.
pub const MAX_TARGET_CONCURRENCY: u64 = 40;

/// Lambda's longest batching window of an SQS event source.
pub const MAX_PUSH_BATCH_WINDOW_SECONDS: u64 = 300;

/// `self`, `organization`, or a comma-separated list of 12-digit account ids.
pub fn parse_target_accounts(value: &str) -> Result<TargetAccounts> {
    match value.trim() {
        "self" => return Ok(TargetAccounts::OwnAccount),
        "organization" => return Ok(TargetAccounts::Organization),
        _ => {}
    }
    let mut ids: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    if let Some(bad) = ids.iter().find(|id| !is_account_id(id)) {
        return Err(invalid(
            "TARGET_ACCOUNTS",
            format!("{bad:?} is not an account id: use self, organization, or comma-separated 12-digit account ids"),
        ));
    }
    if ids.is_empty() {
        return Err(invalid("TARGET_ACCOUNTS", "must be self, organization, or comma-separated 12-digit account ids"));
    }
    ids.sort();
    ids.dedup();
    Ok(TargetAccounts::Listed(ids))
}

/// An AWS region name such as `eu-west-1`, `us-gov-west-1` or `ap-southeast-5`.
pub fn is_region_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        && parts.last().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

pub fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// AWS Organizations ids: an OU (`ou-` root part, `-`, 8-32 characters) or the root (`r-...`).
fn parse_organizational_units(ids: &[String]) -> Result<Vec<String>> {
    let lower_alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = |id: &str| match (id.strip_prefix("ou-"), id.strip_prefix("r-")) {
        (Some(rest), _) => rest.split_once('-').is_some_and(|(root, ou)| {
            (4..=32).contains(&root.len()) && lower_alnum(root) && (8..=32).contains(&ou.len()) && lower_alnum(ou)
        }),
        (_, Some(root)) => (4..=32).contains(&root.len()) && lower_alnum(root),
        _ => false,
    };
    match ids.iter().find(|id| !valid(id)) {
        Some(bad) => Err(invalid(
            "TARGET_ORGANIZATIONAL_UNITS",
            format!("{bad:?} is not an organizational unit id (ou-xxxx-xxxxxxxx) or a root id (r-xxxx)"),
        )),
        None => Ok(ids.to_vec()),
    }
}

/// AWS region names such as `eu-west-1`, `us-gov-west-1` or `ap-southeast-5`.
fn parse_regions(regions: &[String]) -> Result<Vec<String>> {
    if let Some(bad) = regions.iter().find(|r| !is_region_name(r)) {
        return Err(invalid("TARGET_REGIONS", format!("{bad:?} is not an AWS region name such as eu-west-1")));
    }
    let mut unique: Vec<String> = Vec::new();
    for region in regions {
        if !unique.contains(region) {
            unique.push(region.clone());
        }
    }
    Ok(unique)
}

/// IAM role names: 1-64 characters of letters, digits and `+=,.@_-`.
fn parse_role_name(name: &str) -> Result<String> {
    let valid =
        (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    match valid {
        true => Ok(name.to_owned()),
        false => Err(invalid(
            "TARGET_ROLE_NAME",
            format!("{name:?} is not an IAM role name (1-64 of letters, digits, +=,.@_-)"),
        )),
    }
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
        return Err(invalid("STAGES", format!("{bad:?} is not a valid API Gateway stage name")));
    }
    Ok(StageSelection::Named(names))
}

/// A comma-separated list of `REST`, `HTTP` and `WEBSOCKET` (any case); all three when unset.
pub fn parse_api_types(value: Option<&str>) -> Result<BTreeSet<ApiType>> {
    let Some(value) = value else { return Ok(ApiType::ALL.into_iter().collect()) };
    let mut types = BTreeSet::new();
    for name in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let api_type = ApiType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| invalid("API_TYPES", format!("{name:?} is not one of REST, HTTP, WEBSOCKET")))?;
        types.insert(api_type);
    }
    if types.is_empty() {
        return Err(invalid("API_TYPES", "must name at least one of REST, HTTP, WEBSOCKET"));
    }
    Ok(types)
}

/// API Gateway stage names: letters, digits, hyphens and underscores, at most 128 characters.
pub fn is_valid_stage_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `<value> <unit>`, e.g. `10000 per second`, with a unit the control plane accepts.
pub fn parse_capacity(value: &str) -> Result<Capacity> {
    const UNITS: [&str; 7] = ["per second", "per minute", "per hour", "per day", "per week", "per month", "per year"];
    let (number, unit) = value.split_once(' ').unwrap_or((value, ""));
    let unit = unit.trim();
    match (number.parse::<u64>(), UNITS.contains(&unit)) {
        (Ok(value), true) => Ok(Capacity { value, unit: unit.to_owned() }),
        _ => Err(invalid(
            "RUNTIME_CAPACITY",
            format!("{value:?} must look like \"10000 per second\" (units: {})", UNITS.join(", ")),
        )),
    }
}

/// Reads variables by name; blank counts as unset.
struct Env<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    fn optional(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String> {
        self.optional(name).ok_or_else(|| invalid(name, "is required"))
    }

    fn text(&self, name: &'static str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    /// A whole number, when given.
    fn given_number(&self, name: &'static str) -> Result<Option<u64>> {
        self.optional(name)
            .map(|v| v.parse().map_err(|_| invalid(name, format!("{v:?} is not a whole number of 0 or more"))))
            .transpose()
    }

    fn number(&self, name: &'static str, default: u64) -> Result<u64> {
        Ok(self.given_number(name)?.unwrap_or(default))
    }

    /// A whole number of at least `min`, when given.
    fn given_at_least(&self, name: &'static str, min: u64, reason: &str) -> Result<Option<u64>> {
        match self.given_number(name)? {
            Some(value) if value < min => Err(invalid(name, reason)),
            value => Ok(value),
        }
    }

    fn at_least(&self, name: &'static str, default: u64, min: u64, reason: &str) -> Result<u64> {
        Ok(self.given_at_least(name, min, reason)?.unwrap_or(default))
    }

    /// Requests per second: above 0 and at most API Gateway's quota of 10.
    fn rate(&self, name: &'static str, default: f64) -> Result<f64> {
        let Some(v) = self.optional(name) else { return Ok(default) };
        match v.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate <= 10.0 => Ok(rate),
            _ => Err(invalid(name, format!("{v:?} is not a rate between 0 (excluded) and 10 requests per second"))),
        }
    }

    /// `true`/`1` or `false`/`0` (any case), when given.
    fn flag(&self, name: &'static str) -> Result<Option<bool>> {
        match self.optional(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" || v == "1" => Ok(Some(true)),
            Some(v) if v == "false" || v == "0" => Ok(Some(false)),
            Some(v) => Err(invalid(name, format!("{v:?} is not true or false"))),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.optional(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// `ALL`, `ERROR`, `FATAL` or `OFF` (any case), when given.
    fn workflow_log_level(&self, name: &'static str) -> Result<Option<WorkflowLogLevel>> {
        let Some(value) = self.optional(name) else { return Ok(None) };
        let level = match value.to_ascii_uppercase().as_str() {
            "ALL" => WorkflowLogLevel::All,
            "ERROR" => WorkflowLogLevel::Error,
            "FATAL" => WorkflowLogLevel::Fatal,
            "OFF" => WorkflowLogLevel::Off,
            _ => return Err(invalid(name, format!("{value:?} is not one of ALL, ERROR, FATAL, OFF"))),
        };
        Ok(Some(level))
    }

    /// A KMS key's ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`), when given: an alias
    /// cannot be granted `kms:Decrypt`.
    fn kms_key_arn(&self, name: &'static str) -> Result<Option<String>> {
        let Some(value) = self.optional(name) else { return Ok(None) };
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let valid = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "kms"
            && !parts[3].is_empty()
            && parts[4].len() == 12
            && parts[4].chars().all(|c| c.is_ascii_digit())
            && parts[5].strip_prefix("key/").is_some_and(|id| !id.is_empty());
        match valid {
            true => Ok(Some(value)),
            false => {
                Err(invalid(name, format!("{value:?} is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")))
            }
        }
    }

    /// An STS external id (2-1224 characters of letters, digits and `+=,.@:/_-`), when given.
    fn external_id(&self, name: &'static str) -> Result<Option<String>> {
        let Some(id) = self.optional(name) else { return Ok(None) };
        let valid =
            (2..=1224).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c));
        match valid {
            true => Ok(Some(id)),
            // The value is not echoed: whoever reads the error need not learn it.
            false => Err(invalid(name, "must be 2-1224 characters of letters, digits and +=,.@:/_-")),
        }
    }

    /// Lambda's memory range, when given.
    fn function_memory(&self, name: &'static str) -> Result<Option<u64>> {
        let (min, max) = FUNCTION_MEMORY_MB;
        match self.given_number(name)? {
            Some(mb) if !(min..=max).contains(&mb) => {
                Err(invalid(name, format!("must be between {min} and {max} (MB)")))
            }
            value => Ok(value),
        }
    }

    /// A retention CloudWatch Logs offers, when given.
    fn log_retention(&self, name: &'static str) -> Result<Option<u64>> {
        match self.given_number(name)? {
            Some(days) if !LOG_RETENTION_DAYS.contains(&days) => {
                let (forever, days_list) = LOG_RETENTION_DAYS.split_last().expect("not empty");
                let listed: Vec<String> = days_list.iter().map(u64::to_string).collect();
                Err(invalid(
                    name,
                    format!(
                        "{days} is not a CloudWatch Logs retention: use one of {} (days), or {forever} to keep them forever",
                        listed.join(", ")
                    ),
                ))
            }
            value => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests;
