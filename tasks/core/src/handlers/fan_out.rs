//! `targets`: the fan-out over the deployment's account-regions. It plans one run of the sync
//! workflow per target, shortens the reason of each run that failed, and reports every target's
//! outcome (the fan-out execution's output, and each target's metric for the dashboard and the
//! alarm). A target's failure is its own: the others' runs go on, and the next execution tries
//! it again.

use crate::aws::organizations::Organization;
use crate::config::{TargetAccounts, TargetSettings};
use crate::error::{AgentError, Result};
use crate::model::{
    CaughtError, ExecutionInput, FailedTarget, TargetFailure, TargetOutcome, TargetPlan, TargetsReport, parse_object,
};
use crate::target::{Target, targets};
use crate::telemetry;

/// The longest cause a failed target keeps: the output lists up to hundreds of them.
pub const MAX_CAUSE_CHARS: usize = 300;

pub struct FanOut<'a, O> {
    pub settings: &'a TargetSettings,
    /// The deployment's own account-region.
    pub home: &'a Target,
    pub organization: &'a O,
}

impl<O: Organization> FanOut<'_, O> {
    /// One run per target, each with the fan-out's mode and stages. An organization that lists
    /// no account fails the plan.
    /// `targets` in the input (what the tick hands over, or a user's selection) replaces the
    /// configured targets.
    pub async fn plan(&self, input: serde_json::Value, execution_id: &str) -> Result<TargetPlan> {
        let mut given: ExecutionInput = parse_object("execution input", input)?;
        if given.target.is_some() {
            return Err(AgentError::invalid_input(
                "execution input: a fan-out execution runs every target; start the sync workflow with \"target\" \
                 to run one",
            ));
        }
        let selected = match given.targets.take() {
            Some(selected) => {
                let mut checked = selected.into_iter().map(Target::checked).collect::<Result<Vec<_>>>()?;
                checked.sort();
                checked.dedup();
                if checked.is_empty() {
                    return Err(AgentError::invalid_input("execution input: \"targets\" names no target"));
                }
                checked
            }
            None => self.targets().await?,
        };
        let runs: Vec<ExecutionInput> = selected
            .into_iter()
            .map(|target| ExecutionInput {
                target: Some(target),
                started_by: Some(execution_id.to_owned()),
                ..given.clone()
            })
            .collect();
        tracing::info!(targets = runs.len(), "targets planned");
        Ok(TargetPlan { runs, concurrency: self.settings.concurrency })
    }

    /// The configured targets: accounts (listed from the organization when it is named) times
    /// regions.
    pub async fn targets(&self) -> Result<Vec<Target>> {
        let organization_accounts = match &self.settings.accounts {
            TargetAccounts::Organization => Some(self.organization_accounts().await?),
            _ => None,
        };
        let configured = targets(self.settings, self.home, organization_accounts.as_deref());
        // An empty plan would look like a healthy idle deployment.
        if configured.is_empty() {
            return Err(AgentError::InvalidConfig {
                variable: "TARGET_ORGANIZATIONAL_UNITS",
                reason: "the organization has no ACTIVE account there".into(),
            });
        }
        Ok(configured)
    }

    async fn organization_accounts(&self) -> Result<Vec<String>> {
        if self.settings.organizational_units.is_empty() {
            return self.organization.active_accounts().await;
        }
        let mut accounts = Vec::new();
        for unit in &self.settings.organizational_units {
            accounts.extend(self.organization.active_accounts_under(unit).await?);
        }
        accounts.sort();
        accounts.dedup();
        Ok(accounts)
    }
}

/// A target whose run failed, with its reason: a failed run of the sync workflow reaches the
/// Map's Catch as `States.TaskFailed` whose cause is the run's description (its own error and
/// cause); anything else (the run could not start, timed out) as it came.
pub fn failed(target: Target, caught: CaughtError) -> TargetOutcome {
    let run = serde_json::from_str::<serde_json::Value>(&caught.cause).ok();
    let field = |names: [&str; 2]| {
        let run = run.as_ref()?;
        names.iter().find_map(|name| run.get(*name)?.as_str().map(str::to_owned))
    };
    let (error, cause) = match (field(["Error", "error"]), field(["Cause", "cause"])) {
        (Some(error), cause) => (error, cause.unwrap_or_default()),
        (None, _) => (caught.error, caught.cause),
    };
    // A function's error reaches a Fail state as its payload: the message is what says why.
    let cause = serde_json::from_str::<serde_json::Value>(&cause)
        .ok()
        .and_then(|payload| payload.get("errorMessage")?.as_str().map(str::to_owned))
        .unwrap_or(cause);
    tracing::warn!(%target, error, cause, "target failed");
    TargetOutcome { target, failure: Some(TargetFailure { error, cause: shorten(&cause) }) }
}

/// `text` cut to [`MAX_CAUSE_CHARS`] characters.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_CAUSE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The fan-out's output; emits each target's `TargetFailed` (1 or 0) and the failed count.
pub fn report(results: Vec<TargetOutcome>, now: i64) -> TargetsReport {
    let mut failed = Vec::new();
    for outcome in &results {
        telemetry::emit(&telemetry::target_failed_record(&outcome.target, outcome.failure.is_some(), now));
        if let Some(failure) = &outcome.failure {
            failed.push(FailedTarget {
                target: outcome.target.clone(),
                error: failure.error.clone(),
                cause: failure.cause.clone(),
            });
        }
    }
    telemetry::emit(&telemetry::targets_failed_record(failed.len(), now));
    TargetsReport { targets: results.len(), succeeded: results.len() - failed.len(), failed }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct FakeOrganization {
        accounts: Vec<String>,
        /// (parent, accounts under it, its child OUs' accounts included)
        units: Vec<(String, Vec<String>)>,
        asked: Mutex<Vec<String>>,
    }

    impl Organization for FakeOrganization {
        async fn active_accounts(&self) -> Result<Vec<String>> {
            self.asked.lock().unwrap().push("root".into());
            Ok(self.accounts.clone())
        }

        async fn active_accounts_under(&self, parent: &str) -> Result<Vec<String>> {
            self.asked.lock().unwrap().push(parent.into());
            Ok(self.units.iter().find(|(id, _)| id == parent).map(|(_, a)| a.clone()).unwrap_or_default())
        }
    }

    fn settings(accounts: TargetAccounts, units: &[&str], regions: &[&str]) -> TargetSettings {
        TargetSettings {
            accounts,
            organizational_units: units.iter().map(|u| (*u).to_owned()).collect(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            role_name: "ApicpAgentReader".into(),
            external_id: None,
            concurrency: 10,
        }
    }

    fn home() -> Target {
        Target::new("111122223333", "eu-west-1")
    }

    const PARENT: &str = "arn:aws:states:eu-west-1:111122223333:execution:ApiGatewayApicpAgent-targets:tick";

    #[tokio::test]
    async fn each_target_gets_a_run_with_the_executions_mode_and_stages() {
        let settings = settings(
            TargetAccounts::Listed(vec!["111122223333".into(), "444455556666".into()]),
            &[],
            &["eu-west-1", "us-east-1"],
        );
        let organization = FakeOrganization::default();
        let fan_out = FanOut { settings: &settings, home: &home(), organization: &organization };
        let plan = fan_out.plan(json!({"mode": "full", "stages": ["prod"]}), PARENT).await.unwrap();
        assert_eq!((plan.runs.len(), plan.concurrency), (4, 10));
        let first = serde_json::to_value(&plan.runs[0]).unwrap();
        assert_eq!(
            first,
            json!({
                "mode": "full",
                "stages": ["prod"],
                "target": {"account": "111122223333", "region": "eu-west-1"},
                "AWS_STEP_FUNCTIONS_STARTED_BY_EXECUTION_ID": PARENT,
            })
        );
        assert!(organization.asked.lock().unwrap().is_empty(), "listed accounts need no organization");
        let error = fan_out
            .plan(json!({"target": {"account": "111122223333", "region": "eu-west-1"}}), PARENT)
            .await
            .unwrap_err();
        assert_eq!(error.error_type(), "InvalidInput");
    }

    #[tokio::test]
    async fn an_organization_gives_its_active_accounts_or_those_under_the_named_units() {
        let organization = FakeOrganization {
            accounts: vec!["222233334444".into(), "555566667777".into()],
            units: vec![("ou-ab12-aaaaaaaa".into(), vec!["555566667777".into()])],
            ..FakeOrganization::default()
        };
        let whole = settings(TargetAccounts::Organization, &[], &[]);
        let plan = FanOut { settings: &whole, home: &home(), organization: &organization }
            .plan(json!({}), PARENT)
            .await
            .unwrap();
        let targets: Vec<String> = plan.runs.iter().map(|run| run.target.clone().unwrap().to_string()).collect();
        assert_eq!(targets, ["222233334444/eu-west-1", "555566667777/eu-west-1"]);
        let unit = settings(TargetAccounts::Organization, &["ou-ab12-aaaaaaaa"], &[]);
        let plan = FanOut { settings: &unit, home: &home(), organization: &organization }
            .plan(json!({}), PARENT)
            .await
            .unwrap();
        assert_eq!(plan.runs.len(), 1);
        let empty = settings(TargetAccounts::Organization, &["ou-ab12-bbbbbbbb"], &[]);
        let error = FanOut { settings: &empty, home: &home(), organization: &organization }
            .plan(json!({}), PARENT)
            .await
            .unwrap_err();
        assert_eq!(error.error_type(), "InvalidConfig", "an empty plan is no healthy idle run");
    }

    #[test]
    fn a_failed_run_is_named_by_its_own_error_and_a_short_cause() {
        let target = Target::new("444455556666", "us-east-1");
        let description = json!({
            "ExecutionArn": "arn:aws:states:eu-west-1:111122223333:execution:sync:x",
            "Status": "FAILED",
            "Error": "TargetUnreachable",
            "Cause": format!("target 444455556666 unreachable: {}", "x".repeat(1000)),
        });
        let caught = CaughtError { error: "States.TaskFailed".into(), cause: description.to_string() };
        let outcome = failed(target.clone(), caught);
        let failure = outcome.failure.unwrap();
        assert_eq!(failure.error, "TargetUnreachable");
        assert!(failure.cause.starts_with("target 444455556666 unreachable"));
        assert_eq!(failure.cause.chars().count(), MAX_CAUSE_CHARS + 1);
        let lambda_error = json!({"Error": "AwsAccessDenied", "Cause": json!({
            "errorType": "AwsAccessDenied",
            "errorMessage": "AWS access denied: apigateway:GET",
        }).to_string()});
        let caught = CaughtError { error: "States.TaskFailed".into(), cause: lambda_error.to_string() };
        let denied = failed(target.clone(), caught).failure.unwrap();
        assert_eq!(
            (denied.error.as_str(), denied.cause.as_str()),
            ("AwsAccessDenied", "AWS access denied: apigateway:GET")
        );
        let timeout = failed(target, CaughtError { error: "States.Timeout".into(), cause: "timed out".into() });
        assert_eq!(
            timeout.failure.unwrap(),
            TargetFailure { error: "States.Timeout".into(), cause: "timed out".into() }
        );
    }

    #[test]
    fn the_report_lists_each_failed_target() {
        let ok = TargetOutcome { target: Target::new("111122223333", "eu-west-1"), failure: None };
        let bad = TargetOutcome {
            target: Target::new("444455556666", "eu-west-1"),
            failure: Some(TargetFailure { error: "TargetUnreachable".into(), cause: "refused".into() }),
        };
        let report = report(vec![ok, bad], 1_800_000_000);
        assert_eq!((report.targets, report.succeeded), (2, 1));
        assert_eq!(report.failed[0].target.account, "444455556666");
        assert_eq!(report.failed[0].error, "TargetUnreachable");
    }
}
