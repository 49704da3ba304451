//! Targets: the account-regions one deployment federates (`TARGET_ACCOUNTS` x `TARGET_REGIONS`).
//!
//! Every task works for one target at a time, named in its input. The deployment's own
//! account-region (its *home*) keeps the state keys a single-target installation always had, so
//! an upgrade keeps its runtimes, watermarks and claims; every other target's keys are scoped by
//! its account and region (see [`Target::state_scope`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::{TargetAccounts, TargetSettings};
use crate::error::{AgentError, Result};

/// An AWS account and region whose API Gateway stages the agent federates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub account: String,
    pub region: String,
}

impl Target {
    pub fn new(account: impl Into<String>, region: impl Into<String>) -> Self {
        Self { account: account.into(), region: region.into() }
    }

    /// Refuses a target a task input names that is no account-region (`InvalidInput`).
    pub fn checked(self) -> Result<Self> {
        if !agent_settings::is_account_id(&self.account) || !agent_settings::is_region_name(&self.region) {
            return Err(AgentError::invalid_input(format!(
                "target {self} is not a 12-digit account id and a region name"
            )));
        }
        Ok(self)
    }

    /// The prefix of this target's state table keys: none for the deployment's own
    /// account-region (the keys it had before targets existed), `<account>/<region>/` for any
    /// other. No stage name, and no key of the agent's own (`#...`), contains a `/`.
    pub fn state_scope(&self, home: &Target) -> String {
        if self == home { String::new() } else { format!("{}/{}/", self.account, self.region) }
    }

    /// The AWS partition of the target's region, for role ARNs.
    pub fn partition(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

/// The targets of the settings: every account (`accounts`, which the caller resolved from the
/// organization when `TARGET_ACCOUNTS=organization`) in every region, sorted; the home
/// account-region when the settings name none.
pub fn targets(settings: &TargetSettings, home: &Target, organization_accounts: Option<&[String]>) -> Vec<Target> {
    let accounts: Vec<String> = match (&settings.accounts, organization_accounts) {
        (TargetAccounts::OwnAccount, _) => vec![home.account.clone()],
        (TargetAccounts::Listed(ids), _) => ids.clone(),
        (TargetAccounts::Organization, Some(ids)) => ids.to_vec(),
        (TargetAccounts::Organization, None) => Vec::new(),
    };
    let regions = if settings.regions.is_empty() { vec![home.region.clone()] } else { settings.regions.clone() };
    let mut targets: Vec<Target> =
        accounts.iter().flat_map(|account| regions.iter().map(move |region| Target::new(account, region))).collect();
    targets.sort();
    targets.dedup();
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(accounts: TargetAccounts, regions: &[&str]) -> TargetSettings {
        TargetSettings {
            accounts,
            organizational_units: Vec::new(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            role_name: "ApicpAgentReader".into(),
            external_id: None,
            concurrency: 10,
        }
    }

    #[test]
    fn the_home_target_keeps_its_unscoped_keys_and_others_are_scoped() {
        let home = Target::new("111122223333", "eu-west-1");
        assert_eq!(home.state_scope(&home), "");
        assert_eq!(Target::new("111122223333", "us-east-1").state_scope(&home), "111122223333/us-east-1/");
        assert_eq!(Target::new("444455556666", "eu-west-1").state_scope(&home), "444455556666/eu-west-1/");
    }

    #[test]
    fn targets_are_every_account_in_every_region() {
        let home = Target::new("111122223333", "eu-west-1");
        assert_eq!(targets(&settings(TargetAccounts::OwnAccount, &[]), &home, None), vec![home.clone()]);
        let listed = TargetAccounts::Listed(vec!["444455556666".into(), "111122223333".into()]);
        let all = targets(&settings(listed, &["us-east-1", "eu-west-1"]), &home, None);
        let names: Vec<String> = all.iter().map(Target::to_string).collect();
        assert_eq!(
            names,
            ["111122223333/eu-west-1", "111122223333/us-east-1", "444455556666/eu-west-1", "444455556666/us-east-1"]
        );
        let organization = ["777788889999".to_owned()];
        let from_org = targets(&settings(TargetAccounts::Organization, &[]), &home, Some(&organization));
        assert_eq!(from_org, [Target::new("777788889999", "eu-west-1")]);
    }

    #[test]
    fn a_target_that_is_no_account_region_is_invalid_input() {
        assert!(Target::new("111122223333", "eu-west-1").checked().is_ok());
        for (account, region) in [("1111", "eu-west-1"), ("111122223333", "Europe"), ("111122223333", "")] {
            let error = Target::new(account, region).checked().unwrap_err();
            assert_eq!(error.error_type(), "InvalidInput", "{account} {region}");
        }
    }

    #[test]
    fn partitions_follow_the_region() {
        assert_eq!(Target::new("111122223333", "cn-north-1").partition(), "aws-cn");
        assert_eq!(Target::new("111122223333", "us-gov-west-1").partition(), "aws-us-gov");
        assert_eq!(Target::new("111122223333", "eu-west-1").partition(), "aws");
    }
}
