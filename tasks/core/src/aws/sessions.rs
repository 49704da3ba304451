//! AWS Security Token Service: how the agent reaches each target account.
//!
//! The deployment's own account is reached with the functions' roles; every other account by
//! assuming `TARGET_ROLE_NAME` there (with `TARGET_ROLE_EXTERNAL_ID` when set). A container keeps
//! one assumed role per account, shared by that account's regions, and assumes it again only
//! when its credentials would expire within [`REFRESH_MARGIN`]: the SDK's identity cache is not
//! used for them, as its default partitions (64) would make a container serving more targets
//! assume roles again and again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::identity::IdentityCache;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_types::region::Region;
use tokio::sync::Mutex;

use super::sdk_error;
use crate::config::TargetSettings;
use crate::error::{AgentError, Result};
use crate::target::Target;

/// Credentials are renewed when they would expire within this: longer than Lambda's longest
/// invocation, so they never expire during one.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(16 * 60);

/// The session name CloudTrail shows in the target account for the agent's calls.
pub const SESSION_NAME: &str = "apicp-agent";

/// `sts:AssumeRole`, the one STS call the agent makes for a target.
pub trait RoleAssumer: Send + Sync + 'static {
    fn assume(
        &self,
        role_arn: &str,
        external_id: Option<&str>,
        session_name: &str,
    ) -> impl Future<Output = Result<Credentials>> + Send;
}

#[derive(Debug, Clone)]
pub struct StsRoleAssumer {
    client: aws_sdk_sts::Client,
}

impl StsRoleAssumer {
    pub fn new(client: aws_sdk_sts::Client) -> Self {
        Self { client }
    }
}

impl RoleAssumer for StsRoleAssumer {
    async fn assume(&self, role_arn: &str, external_id: Option<&str>, session_name: &str) -> Result<Credentials> {
        let output = self
            .client
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session_name)
            .set_external_id(external_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| sdk_error("sts:AssumeRole", e))?;
        let issued = output
            .credentials
            .ok_or_else(|| AgentError::AwsRequestFailed("sts:AssumeRole answered no credentials".into()))?;
        let expiry = SystemTime::try_from(*issued.expiration())
            .map_err(|_| AgentError::AwsRequestFailed("sts:AssumeRole answered an unreadable expiration".into()))?;
        Ok(Credentials::new(
            issued.access_key_id(),
            issued.secret_access_key(),
            Some(issued.session_token().to_owned()),
            Some(expiry),
            "AssumeRole",
        ))
    }
}

/// The role of one target account, with its last credentials.
struct AssumedRole<A> {
    assumer: Arc<A>,
    account: String,
    role_arn: String,
    external_id: Option<String>,
    current: Mutex<Option<Credentials>>,
}

impl<A: RoleAssumer> AssumedRole<A> {
    /// Credentials valid for at least [`REFRESH_MARGIN`] after `now`. A refusal is the
    /// account's (`TargetUnreachable`): throttling and outages keep their retryable types.
    async fn fresh(&self, now: SystemTime) -> Result<Credentials> {
        let mut current = self.current.lock().await;
        if let Some(credentials) = current.as_ref()
            && credentials.expiry().is_some_and(|expiry| expiry > now + REFRESH_MARGIN)
        {
            return Ok(credentials.clone());
        }
        let assumed =
            self.assumer.assume(&self.role_arn, self.external_id.as_deref(), SESSION_NAME).await.map_err(|error| {
                match error {
                    AgentError::AwsAccessDenied(reason) | AgentError::AwsRequestFailed(reason) => {
                        AgentError::TargetUnreachable {
                            target: self.account.clone(),
                            reason: format!(
                                "the role {} cannot be assumed (is it deployed there, and does its trust policy admit \
                                 the agent's roles and external id?): {reason}",
                                self.role_arn
                            ),
                        }
                    }
                    other => other,
                }
            })?;
        *current = Some(assumed.clone());
        Ok(assumed)
    }
}

impl<A: RoleAssumer> std::fmt::Debug for AssumedRole<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssumedRole").field("role_arn", &self.role_arn).finish_non_exhaustive()
    }
}

/// The AWS configuration of each target, for the container's life.
pub struct TargetSessions<A = StsRoleAssumer> {
    base: SdkConfig,
    home: Target,
    role_name: String,
    external_id: Option<String>,
    assumer: Arc<A>,
    /// By role ARN: one per account (and partition).
    roles: Mutex<HashMap<String, Arc<AssumedRole<A>>>>,
}

impl<A: RoleAssumer> TargetSessions<A> {
    /// Sessions from the functions' own configuration `base` (home account and region).
    pub fn new(base: SdkConfig, home: Target, settings: &TargetSettings, assumer: A) -> Self {
        Self {
            base,
            home,
            role_name: settings.role_name.clone(),
            external_id: settings.external_id.clone(),
            assumer: Arc::new(assumer),
            roles: Mutex::new(HashMap::new()),
        }
    }

    pub fn home(&self) -> &Target {
        &self.home
    }

    /// The functions' own configuration: the home account and region.
    pub fn home_config(&self) -> &SdkConfig {
        &self.base
    }

    /// The configuration that reaches `target`: its region, and in another account the
    /// assumed role's credentials, fresh for this whole invocation (a refused role fails here,
    /// as `TargetUnreachable`, before any call of the task).
    pub async fn config(&self, target: &Target) -> Result<SdkConfig> {
        let builder = self.base.to_builder().region(Region::new(target.region.clone()));
        if target.account == self.home.account {
            return Ok(builder.build());
        }
        let role = self.role(target).await;
        role.fresh(SystemTime::now()).await?;
        Ok(builder
            .credentials_provider(SharedCredentialsProvider::new(RoleProvider(role)))
            .identity_cache(IdentityCache::no_cache())
            .build())
    }

    async fn role(&self, target: &Target) -> Arc<AssumedRole<A>> {
        let role_arn = format!("arn:{}:iam::{}:role/{}", target.partition(), target.account, self.role_name);
        let mut roles = self.roles.lock().await;
        roles
            .entry(role_arn.clone())
            .or_insert_with(|| {
                Arc::new(AssumedRole {
                    assumer: self.assumer.clone(),
                    account: target.account.clone(),
                    role_arn,
                    external_id: self.external_id.clone(),
                    current: Mutex::new(None),
                })
            })
            .clone()
    }
}

/// An account's role as the SDK's credentials provider (a wrapper: the provider is shared, the
/// role stays the container's).
struct RoleProvider<A: RoleAssumer>(Arc<AssumedRole<A>>);

impl<A: RoleAssumer> std::fmt::Debug for RoleProvider<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<A: RoleAssumer> ProvideCredentials for RoleProvider<A> {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0.fresh(SystemTime::now()).await.map_err(CredentialsError::provider_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;
    use crate::config::TargetAccounts;

    /// Issues credentials valid for `lifetime` from the call, or refuses the listed roles.
    struct FakeSts {
        lifetime: Duration,
        refused: Vec<String>,
        calls: StdMutex<Vec<(String, Option<String>)>>,
    }

    impl FakeSts {
        fn new(lifetime: Duration) -> Self {
            Self { lifetime, refused: Vec::new(), calls: StdMutex::new(Vec::new()) }
        }

        fn calls(&self) -> Vec<(String, Option<String>)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl RoleAssumer for Arc<FakeSts> {
        async fn assume(&self, role_arn: &str, external_id: Option<&str>, _session: &str) -> Result<Credentials> {
            self.calls.lock().unwrap().push((role_arn.to_owned(), external_id.map(str::to_owned)));
            if self.refused.iter().any(|r| r == role_arn) {
                return Err(AgentError::AwsAccessDenied(format!(
                    "not authorized to perform sts:AssumeRole on {role_arn}"
                )));
            }
            let n = self.calls.lock().unwrap().len();
            Ok(Credentials::new(
                format!("ASIA{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.lifetime),
                "test",
            ))
        }
    }

    fn settings(external_id: Option<&str>) -> TargetSettings {
        TargetSettings {
            accounts: TargetAccounts::Organization,
            organizational_units: Vec::new(),
            regions: Vec::new(),
            role_name: "ApicpAgentReader".into(),
            external_id: external_id.map(str::to_owned),
            concurrency: 10,
        }
    }

    fn base() -> SdkConfig {
        SdkConfig::builder().region(Region::new("eu-west-1")).build()
    }

    fn home() -> Target {
        Target::new("111122223333", "eu-west-1")
    }

    #[tokio::test]
    async fn the_home_account_uses_the_functions_role_in_any_region() {
        let sts = Arc::new(FakeSts::new(Duration::from_secs(3600)));
        let sessions = TargetSessions::new(base(), home(), &settings(None), sts.clone());
        let config = sessions.config(&Target::new("111122223333", "us-east-1")).await.unwrap();
        assert_eq!(config.region().map(Region::as_ref), Some("us-east-1"));
        assert!(sts.calls().is_empty(), "no role assumed at home");
    }

    #[tokio::test]
    async fn another_account_is_reached_through_its_role_assumed_once_for_all_its_regions() {
        let sts = Arc::new(FakeSts::new(Duration::from_secs(3600)));
        let sessions = TargetSessions::new(base(), home(), &settings(Some("hub-42")), sts.clone());
        for region in ["eu-west-1", "us-east-1", "eu-west-1"] {
            let config = sessions.config(&Target::new("444455556666", region)).await.unwrap();
            assert_eq!(config.region().map(Region::as_ref), Some(region));
            let provider = config.credentials_provider().expect("the role's credentials");
            let credentials = provider.provide_credentials().await.unwrap();
            assert_eq!(credentials.access_key_id(), "ASIA1");
        }
        assert_eq!(
            sts.calls(),
            [("arn:aws:iam::444455556666:role/ApicpAgentReader".to_owned(), Some("hub-42".to_owned()))]
        );
        let china = sessions.config(&Target::new("444455556666", "cn-north-1")).await.unwrap();
        assert!(china.credentials_provider().is_some());
        assert_eq!(sts.calls()[1].0, "arn:aws-cn:iam::444455556666:role/ApicpAgentReader", "a partition's own ARN");
    }

    #[tokio::test]
    async fn credentials_are_renewed_before_an_invocation_could_outlive_them() {
        // Valid for 20 minutes: fresh now, not once 5 minutes have passed (15 < the margin of 16).
        let sts = Arc::new(FakeSts::new(Duration::from_secs(20 * 60)));
        let sessions = TargetSessions::new(base(), home(), &settings(None), sts.clone());
        let target = Target::new("444455556666", "eu-west-1");
        sessions.config(&target).await.unwrap();
        let role = sessions.role(&target).await;
        let now = SystemTime::now();
        assert_eq!(role.fresh(now).await.unwrap().access_key_id(), "ASIA1", "still fresh");
        let later = now + Duration::from_secs(5 * 60);
        assert_eq!(role.fresh(later).await.unwrap().access_key_id(), "ASIA2", "renewed");
        assert_eq!(sts.calls().len(), 2);
    }

    #[tokio::test]
    async fn a_refused_role_makes_its_target_unreachable_and_is_asked_again_next_time() {
        let mut fake = FakeSts::new(Duration::from_secs(3600));
        fake.refused.push("arn:aws:iam::444455556666:role/ApicpAgentReader".into());
        let sts = Arc::new(fake);
        let sessions = TargetSessions::new(base(), home(), &settings(None), sts.clone());
        let target = Target::new("444455556666", "eu-west-1");
        for _ in 0..2 {
            let error = sessions.config(&target).await.unwrap_err();
            assert_eq!(error.error_type(), "TargetUnreachable");
            let message = error.to_string();
            assert!(message.contains("444455556666") && message.contains("role/ApicpAgentReader"), "{message}");
        }
        assert_eq!(sts.calls().len(), 2, "a refusal is not cached: the role may be deployed meanwhile");
        assert!(sessions.config(&Target::new("777788889999", "eu-west-1")).await.is_ok(), "other accounts go on");
    }
}
