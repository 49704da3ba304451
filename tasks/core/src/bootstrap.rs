//! Cold-start wiring shared by the Lambda binaries: logging, configuration, clients, and
//! the loop that answers invocations.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::{AppName, SdkConfig};
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::aws::apigateway::SdkApiGateway;
use crate::aws::cloudtrail::CloudTrailFeed;
use crate::aws::cloudwatch::CloudWatchMetrics;
use crate::aws::executions::SdkExecutions;
use crate::aws::pace::Pacer;
use crate::aws::secrets::SecretCredentials;
use crate::aws::sessions::{StsRoleAssumer, TargetSessions};
use crate::aws::state::{API_GATEWAY_SCHEDULE, DynamoStateStore, Slots};
use crate::config::{Config, CredentialSource};
use crate::control_plane::{Credentials, HttpControlPlane};
use crate::error::{AgentError, Result};
use crate::handlers::tick::{IdlePass, Pass, TargetPasses};
use crate::target::Target;

/// Structured logs as Lambda expects them (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`).
pub fn init_tracing() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// Attempts of one AWS call before its error reaches the state machine (which retries again).
const AWS_MAX_ATTEMPTS: u32 = 5;

/// AWS configuration from the standard sources (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials),
/// with the SDK's standard retry: exponential backoff with jitter, at most 1 + 2 + 4 + 8 s
/// across the attempts. Not the adaptive mode: the agent paces API Gateway and CloudTrail
/// itself, and adaptive's client-side limiter, fed by the few calls of a short-lived
/// invocation, slowed a task to a crawl after one throttled answer (measured: a full minute for
/// five throttled `GetRestApis`, 20 s for one throttled `LookupEvents`).
///
/// Every request's user agent names the task (`app/<binary>`): CloudTrail shows which of the
/// agent's functions made a call, and the local stack checks each function's calls against its
/// IAM grants.
pub async fn aws_config(binary: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(AWS_MAX_ATTEMPTS));
    if let Ok(app) = AppName::new(binary.to_owned()) {
        loader = loader.app_name(app);
    }
    loader.load().await
}

pub fn region(aws: &SdkConfig) -> Result<String> {
    aws.region()
        .map(|r| r.to_string())
        .ok_or(AgentError::InvalidConfig { variable: "AWS_REGION", reason: "is required".into() })
}

/// The control plane client, with credentials from Secrets Manager (or, locally, the environment).
/// The secret is read on the first request, not here, and again after a 401/403.
pub fn control_plane(config: &Config, aws: &SdkConfig) -> Result<HttpControlPlane> {
    let settings = &config.control_plane;
    let ca_bundle = match &settings.ca_bundle {
        Some(path) => Some(std::fs::read(path).map_err(|e| AgentError::InvalidConfig {
            variable: "APICP_CA_BUNDLE",
            reason: format!("cannot read {path}: {e}"),
        })?),
        None => None,
    };
    match &settings.credentials {
        CredentialSource::Secret { arn } => {
            let source = SecretCredentials::new(aws_sdk_secretsmanager::Client::new(aws), arn);
            HttpControlPlane::new(&settings.url, source, settings.timeout, ca_bundle.as_deref())
        }
        CredentialSource::Inline { username, password } => {
            let fixed = Credentials { username: username.clone(), password: password.clone() };
            HttpControlPlane::new(&settings.url, fixed, settings.timeout, ca_bundle.as_deref())
        }
    }
}

/// The state table named by `STATE_TABLE`.
pub fn state_store(config: &Config, aws: &SdkConfig) -> DynamoStateStore {
    DynamoStateStore::new(aws_sdk_dynamodb::Client::new(aws), &config.state_table)
}

/// The deployment's own account (its functions' role's) and region.
pub async fn home_target(aws: &SdkConfig) -> Result<Target> {
    let account = crate::aws::identity::account_id(&aws_sdk_sts::Client::new(aws)).await?;
    Ok(Target::new(account, region(aws)?))
}

/// How a function reaches the target an invocation names: kept for the container's life.
pub struct Targets {
    sessions: TargetSessions,
    state: DynamoStateStore,
}

/// One target as an invocation works in it.
pub struct TargetContext {
    pub target: Target,
    /// Its region, and credentials that reach its account.
    pub aws: SdkConfig,
    /// The state table's items of this target.
    pub state: DynamoStateStore,
}

impl Targets {
    pub async fn new(config: &Config, aws: &SdkConfig) -> Result<Self> {
        let home = home_target(aws).await?;
        let assumer = StsRoleAssumer::new(aws_sdk_sts::Client::new(aws));
        Ok(Self {
            sessions: TargetSessions::new(aws.clone(), home, &config.targets, assumer),
            state: state_store(config, aws),
        })
    }

    pub fn home(&self) -> &Target {
        self.sessions.home()
    }

    /// The functions' own AWS configuration (home account and region).
    pub fn home_config(&self) -> &SdkConfig {
        self.sessions.home_config()
    }

    /// The target `named` by an input (the deployment's own when none), checked, with its AWS
    /// configuration and its part of the state table. A role that cannot be assumed fails
    /// here, as `TargetUnreachable`.
    pub async fn open(&self, named: Option<&Target>) -> Result<TargetContext> {
        let target = match named {
            Some(target) => target.clone().checked()?,
            None => self.home().clone(),
        };
        let aws = self.sessions.config(&target).await?;
        let state = self.state.scoped(target.state_scope(self.home()));
        Ok(TargetContext { target, aws, state })
    }

    /// The state table's items of the target `named` (the deployment's own when none), for
    /// the tasks that call no AWS API of the target.
    pub fn state_of(&self, named: Option<&Target>) -> Result<DynamoStateStore> {
        Ok(match named {
            Some(target) => self.state.scoped(target.clone().checked()?.state_scope(self.home())),
            None => self.state.clone(),
        })
    }
}

/// The tick's passes, each over the clients of its target.
pub struct SdkTargetPasses {
    pub config: Config,
    pub targets: Targets,
    pub control_plane: HttpControlPlane,
    pub executions: SdkExecutions,
}

impl TargetPasses for SdkTargetPasses {
    async fn pass(&self, target: &Target, named: bool, tick_id: &str, deadline: Instant, now: i64) -> Result<Pass> {
        let named = named.then_some(target);
        let context = self.targets.open(named).await?;
        IdlePass {
            config: &self.config,
            target: &context.target,
            named,
            gateway: &api_gateway(&self.config, &context.aws, &context.state),
            control_plane: &self.control_plane,
            state: &context.state,
            feed: &CloudTrailFeed::new(aws_sdk_cloudtrail::Client::new(&context.aws)),
            metrics: &CloudWatchMetrics::new(aws_sdk_cloudwatch::Client::new(&context.aws)),
            executions: &self.executions,
            deadline,
            longest_request: self.control_plane.longest_request(),
        }
        .run(tick_id, now)
        .await
    }
}

/// API Gateway (both management APIs), paced at the configured share of its management quota
/// together with every other execution and container of the account (see `aws::pace`).
pub fn api_gateway(config: &Config, aws: &SdkConfig, state: &DynamoStateStore) -> SdkApiGateway {
    let schedule = Slots::new(state.clone(), API_GATEWAY_SCHEDULE);
    SdkApiGateway::new(
        aws_sdk_apigateway::Client::new(aws),
        aws_sdk_apigatewayv2::Client::new(aws),
        Pacer::shared(config.apigateway_requests_per_second, schedule),
    )
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// Parses a task input, turning a contract violation into `InvalidInput` that names the field.
pub fn parse_input<T: DeserializeOwned>(payload: Value) -> Result<T> {
    crate::model::parse_object("task input", payload)
}

/// Lambda's longest timeout.
const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);

/// When Lambda stops the invocation, from the deadline it announces (epoch milliseconds);
/// `None` when that is not within Lambda's longest timeout from `now`, as with the constant a
/// local emulator sends (`cargo lambda watch` announces 600,000, ten minutes after 1970).
pub fn deadline(announced_ms: u64, now: SystemTime) -> Option<Instant> {
    let announced = SystemTime::UNIX_EPOCH + Duration::from_millis(announced_ms);
    let remaining = announced.duration_since(now).ok()?;
    (remaining <= MAX_FUNCTION_TIMEOUT).then(|| Instant::now() + remaining)
}

/// The timeout `binary` is deployed with (`statemachine/functions.json`, which the CDK and the
/// local stack read too), or Lambda's longest.
pub fn deployed_timeout(binary: &str) -> Duration {
    agent_settings::deployed_timeout_seconds(binary).map_or(MAX_FUNCTION_TIMEOUT, Duration::from_secs)
}

/// The timeout a function assumes when its runtime announces no usable deadline: the deployed
/// one, or `AGENT_TIMEOUT_SECONDS_<BINARY>` (e.g. `AGENT_TIMEOUT_SECONDS_TRANSFORM`), for a local
/// emulator told to stop that function sooner.
fn assumed_timeout(binary: &str) -> Duration {
    let variable = format!("AGENT_TIMEOUT_SECONDS_{}", binary.to_uppercase().replace('-', "_"));
    std::env::var(variable)
        .ok()
        .and_then(|seconds| seconds.trim().parse().ok())
        .map_or_else(|| deployed_timeout(binary), Duration::from_secs)
}

/// A container's dependencies (configuration, clients, the account id), built on the first
/// invocation and kept for the container's life, as Lambda keeps cold-start state.
///
/// A failed build is kept only when it cannot heal (`InvalidConfig`: only a redeploy changes the
/// environment); any other failure (a throttled or unreachable AWS API) fails this invocation
/// and is tried again on the next, so one bad moment at cold start does not poison a container
/// that Lambda may keep warm for hours.
pub struct Dependencies<D, Init> {
    init: Init,
    ready: OnceCell<Arc<D>>,
    permanent: OnceLock<AgentError>,
}

impl<D, Init, InitFut> Dependencies<D, Init>
where
    Init: Fn() -> InitFut,
    InitFut: Future<Output = Result<D>>,
{
    pub fn new(init: Init) -> Self {
        Self { init, ready: OnceCell::new(), permanent: OnceLock::new() }
    }

    pub async fn get(&self) -> Result<Arc<D>> {
        if let Some(error) = self.permanent.get() {
            return Err(error.clone());
        }
        let built = self.ready.get_or_try_init(|| async { (self.init)().await.map(Arc::new) }).await;
        built.cloned().map_err(|error| {
            tracing::error!(error_type = error.error_type(), %error, permanent = error.is_permanent(), "cold start failed");
            if error.is_permanent() {
                let _ = self.permanent.set(error.clone());
            }
            error
        })
    }
}

/// Runs the Lambda loop of the function `binary`: builds the dependencies with `init` (see
/// [`Dependencies`]) and answers each invocation with `handler` (given the input, the
/// dependencies and when Lambda stops the invocation: its announced [`deadline`], else the
/// timeout assumed from now), a failure as its typed error so the state machine can match it.
pub async fn serve<D, I, O, F, Fut, Init, InitFut>(
    binary: &'static str,
    init: Init,
    handler: F,
) -> Result<(), lambda_runtime::Error>
where
    D: Send + Sync + 'static,
    I: DeserializeOwned,
    O: Serialize,
    F: Fn(I, Arc<D>, Instant) -> Fut,
    Fut: Future<Output = Result<O>>,
    Init: Fn() -> InitFut,
    InitFut: Future<Output = Result<D>>,
{
    let dependencies = Dependencies::new(init);
    let dependencies = &dependencies;
    let handler = &handler;
    // The runtime logs a failed invocation itself; no second log line here. Boxed: inline, the
    // SDK clients' set-up and the task's future nest beyond the compiler's layout depth limit.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        Box::pin(async move {
            let started = Instant::now();
            let deadline = deadline(event.context.deadline, SystemTime::now())
                .unwrap_or_else(|| started + assumed_timeout(binary));
            let deps = dependencies.get().await?;
            handler(parse_input(event.payload)?, deps, deadline).await
        })
    }))
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn the_deadline_is_the_announced_one_unless_it_is_not_a_lambda_timeout_away() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let in_280_s = deadline(1_800_000_280_000, now).expect("a deadline 280 s away");
        let remaining = in_280_s.duration_since(Instant::now());
        assert!(remaining > Duration::from_secs(279) && remaining <= Duration::from_secs(280), "{remaining:?}");
        assert_eq!(deadline(600_000, now), None, "cargo lambda watch's constant: long past");
        assert_eq!(deadline(1_800_000_901_000, now), None, "beyond any Lambda timeout");
    }

    #[test]
    fn each_function_assumes_its_deployed_timeout() {
        assert_eq!(deployed_timeout("publish"), Duration::from_secs(280));
        assert_eq!(deployed_timeout("ensure-runtime"), Duration::from_secs(880));
        assert_eq!(deployed_timeout("unknown"), MAX_FUNCTION_TIMEOUT);
    }

    #[tokio::test]
    async fn a_transient_cold_start_failure_is_retried_on_the_next_invocation() {
        let attempts = AtomicUsize::new(0);
        let dependencies = Dependencies::new(|| async {
            match attempts.fetch_add(1, Ordering::SeqCst) {
                0 => Err(AgentError::Throttled("secretsmanager:GetSecretValue".into())),
                n => Ok(n),
            }
        });
        assert_eq!(dependencies.get().await.unwrap_err().error_type(), "Throttled");
        assert_eq!(*dependencies.get().await.unwrap(), 1);
        assert_eq!(*dependencies.get().await.unwrap(), 1, "built once, then kept");
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_invalid_configuration_is_answered_without_building_again() {
        let attempts = AtomicUsize::new(0);
        let dependencies = Dependencies::new(|| async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(AgentError::InvalidConfig { variable: "APICP_URL", reason: "is required".into() })
        });
        for _ in 0..3 {
            assert_eq!(dependencies.get().await.unwrap_err().error_type(), "InvalidConfig");
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }
}
