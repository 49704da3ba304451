//! The tick: an idle target's run done in-process with the workflow's own tasks, anything more
//! handed over to the workflow in one execution per tick.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::aws::executions::ExecutionStarter;
use crate::aws::organizations::Organization;
use crate::config::{TargetAccounts, TargetSettings};
use crate::handlers::fan_out::FanOut;
use crate::handlers::tick::{
    DISCOVERY_APIS_IN_PROCESS, IdlePass, Pass, TICK_CLAIM_SECONDS, TargetPasses, Tick, Workflows, execution_name,
};
use crate::target::Target;

const TICK: &str = "tick-20270115T080000Z";

fn idle_pass<'a, F: ChangeFeed>(
    config: &'a Config,
    target: &'a Target,
    gateway: &'a Gateway,
    plane: &'a Plane,
    state: &'a Memory,
    feed: &'a F,
) -> IdlePass<'a, Gateway, Plane, Memory, F, Traffic, StillRunning> {
    IdlePass {
        config,
        target,
        named: None,
        gateway,
        control_plane: plane,
        state,
        feed,
        metrics: &NO_TRAFFIC,
        executions: &StillRunning,
        deadline: far_deadline(),
        longest_request: Duration::from_secs(31),
    }
}

fn home() -> Target {
    Target::new("111122223333", "eu-west-1")
}

/// One run of the workflow at `now`: runtimes, then both branches published and committed.
async fn workflow_run(config: &Config, gateway: &Gateway, plane: &Plane, state: &Memory, now: i64) {
    let ready = ensure_runtime(config, gateway, plane, state).run(scheduled(), now).await.unwrap();
    let task = list_changes(config, gateway, plane, state);
    for kind in [Kind::Assets, Kind::Metrics] {
        let input = ListChangesInput {
            target: None,
            kind,
            mode: SyncMode::Auto,
            runtimes: ready.runtimes.clone(),
            execution_id: EXECUTION.into(),
            pushed: Vec::new(),
        };
        let output = task.run(input, now).await.unwrap();
        assert!(publish_all(&output, plane, state).await.is_empty());
        commit(ack_of(&output, EXECUTION), state, now).await.unwrap();
    }
}

/// A stage `prod` of 3 APIs, synced by the workflow at [`NOW`].
async fn synced() -> (Config, Gateway, Plane, Memory) {
    let config = config(&[("STAGES", "prod")]);
    let gateway = Gateway::with_apis(3, &["prod"], "an API");
    let (plane, state) = (Plane::default(), Memory::default());
    workflow_run(&config, &gateway, &plane, &state, NOW).await;
    (config, gateway, plane, state)
}

/// Whether another execution could claim the stage's branch now: the pass left no claim.
async fn free(state: &Memory, kind: Kind, now: i64) -> bool {
    let on = ClaimOn::Branch { stage: "prod", kind };
    let claim = state.claim(on, "other", now, now + 60).await.unwrap();
    state.release(on, "other").await.unwrap();
    claim == Claim::Taken
}

#[tokio::test]
async fn an_idle_target_is_served_in_process_heartbeat_and_watermark_included() {
    let (config, gateway, plane, state) = synced().await;
    let before = state.load("prod").await.unwrap();
    let heartbeats = plane.heartbeats.lock().unwrap().len();
    let calls = gateway.calls.load(Ordering::SeqCst);
    let target = home();
    let now = NOW + 120;

    let pass = idle_pass(&config, &target, &gateway, &plane, &state, &NoEvents).run(TICK, now).await.unwrap();

    assert_eq!(pass, Pass::Idle);
    assert_eq!(plane.heartbeats.lock().unwrap().len(), heartbeats + 1, "the runtime's heartbeat");
    let after = state.load("prod").await.unwrap();
    assert!(after.assets_watermark > before.assets_watermark, "{:?} -> {:?}", before, after);
    assert_eq!(after.metrics_watermark, before.metrics_watermark, "no metrics window due yet");
    assert_eq!(gateway.calls.load(Ordering::SeqCst), calls, "an idle pass never calls API Gateway");
    assert!(free(&state, Kind::Assets, now).await && free(&state, Kind::Metrics, now).await);
}

#[tokio::test]
async fn a_change_in_cloudtrail_hands_the_target_over_untouched() {
    let (config, gateway, plane, state) = synced().await;
    let before = state.load("prod").await.unwrap();
    let changed = write_event("e1", NOW + 10, "UpdateRestApi", json!({"restApiId": "0000000001"}), json!({}));
    let feed = Events::new(vec![changed]);
    let target = home();
    let now = NOW + 10 + 300 + 60;

    let pass = idle_pass(&config, &target, &gateway, &plane, &state, &feed).run(TICK, now).await.unwrap();

    assert_eq!(pass, Pass::HandOver("stage prod: changes in CloudTrail".into()));
    let after = state.load("prod").await.unwrap();
    assert_eq!(after.assets_watermark, before.assets_watermark, "the workflow applies the window");
    assert!(free(&state, Kind::Assets, now).await, "the claim is given back at once");
    // The workflow's run then applies the change the pass left.
    workflow_run(&config, &gateway, &plane, &state, now).await;
    assert!(state.load("prod").await.unwrap().assets_watermark > before.assets_watermark);
}

#[tokio::test]
async fn the_periodic_metrics_read_is_done_in_process_and_a_catch_up_is_handed_over() {
    let (config, gateway, plane, state) = synced().await;
    let before = state.load("prod").await.unwrap();
    let sent = plane.metrics.lock().unwrap().len();
    let target = home();
    let now = NOW + 1800 + 300;

    let pass = idle_pass(&config, &target, &gateway, &plane, &state, &NoEvents).run(TICK, now).await.unwrap();

    assert_eq!(pass, Pass::Idle);
    let after = state.load("prod").await.unwrap();
    assert!(after.assets_watermark > before.assets_watermark, "the quiet assets window is done");
    assert!(after.metrics_watermark > before.metrics_watermark, "{before:?} -> {after:?}");
    let windows = plane.metrics.lock().unwrap()[sent..].to_vec();
    assert!(!windows.is_empty() && windows.iter().all(|(runtime, _)| runtime.ends_with("_prod")), "{windows:?}");
    assert!(free(&state, Kind::Metrics, now).await);
    // Sent once: the next minute has nothing due.
    let again = idle_pass(&config, &target, &gateway, &plane, &state, &NoEvents).run(TICK, now + 60).await.unwrap();
    assert_eq!((again, plane.metrics.lock().unwrap().len()), (Pass::Idle, sent + windows.len()));

    // Two stages of 1-minute windows 50 minutes behind: more windows than one Map iteration's, the
    // workflow's work.
    let two = super::config(&[("STAGES", "prod,dev"), ("METRICS_INTERVAL_SECONDS", "60")]);
    let gateway = Gateway::with_apis(3, &["prod", "dev"], "an API");
    let (plane, state) = (Plane::default(), Memory::default());
    workflow_run(&two, &gateway, &plane, &state, NOW).await;
    let behind = NOW + 3000;
    let pass = idle_pass(&two, &target, &gateway, &plane, &state, &NoEvents).run(TICK, behind).await.unwrap();
    assert!(matches!(&pass, Pass::HandOver(reason) if reason.ends_with("metrics windows due: a catch-up")), "{pass:?}");
    assert!(free(&state, Kind::Metrics, behind).await, "the claims are given back");
}

#[tokio::test]
async fn a_small_accounts_discovery_is_done_in_process_a_large_ones_handed_over() {
    let every_stage = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod"], "an API");
    let (plane, state) = (Plane::default(), Memory::default());
    let target = home();
    let first = idle_pass(&every_stage, &target, &gateway, &plane, &state, &NoEvents).run(TICK, NOW).await.unwrap();
    assert_eq!(first, Pass::HandOver("the account's stages are due for discovery".into()), "never discovered");
    workflow_run(&every_stage, &gateway, &plane, &state, NOW).await;
    let calls = gateway.calls.load(Ordering::SeqCst);
    let later = NOW + 3600 + 60;

    let pass = idle_pass(&every_stage, &target, &gateway, &plane, &state, &NoEvents).run(TICK, later).await.unwrap();

    assert_eq!(pass, Pass::Idle);
    assert_eq!(state.load_discovery().await.unwrap().unwrap().at, later, "discovered by the tick");
    assert_eq!(gateway.calls.load(Ordering::SeqCst), calls + 3 + LISTING_OVERHEAD, "one listing of the account");

    let large = Gateway::with_apis(DISCOVERY_APIS_IN_PROCESS + 1, &["prod"], "an API");
    let (plane, state) = (Plane::default(), Memory::default());
    workflow_run(&every_stage, &large, &plane, &state, NOW).await;
    let calls = large.calls.load(Ordering::SeqCst);
    let pass = idle_pass(&every_stage, &target, &large, &plane, &state, &NoEvents).run(TICK, later).await.unwrap();
    assert_eq!(pass, Pass::HandOver(format!("a discovery of {} APIs is due", DISCOVERY_APIS_IN_PROCESS + 1)));
    assert_eq!(large.calls.load(Ordering::SeqCst), calls, "left to the workflow untouched");
}

#[tokio::test]
async fn a_refused_api_a_full_sync_or_a_discovery_due_is_the_workflows_work() {
    let config = config(&[("STAGES", "prod")]);
    let gateway = Gateway::with_apis(3, &["prod"], "an API");
    let (plane, state) = (Plane::default(), Memory::default());
    plane.refusing.lock().unwrap().insert("0000000002_prod".into());
    workflow_run(&config, &gateway, &plane, &state, NOW).await;
    let target = home();
    let now = NOW + 120;
    let pass = idle_pass(&config, &target, &gateway, &plane, &state, &NoEvents).run(TICK, now).await.unwrap();
    assert_eq!(pass, Pass::HandOver("stage prod: refused APIs to retry".into()));

    let daily = NOW + 86_400 + 60;
    let (config, gateway, plane, state) = synced().await;
    let pass = idle_pass(&config, &target, &gateway, &plane, &state, &NoEvents).run(TICK, daily).await.unwrap();
    assert_eq!(pass, Pass::HandOver("stage prod: full sync due".into()));

    let every_stage = super::config(&[]);
    let heartbeats = plane.heartbeats.lock().unwrap().len();
    let pass =
        idle_pass(&every_stage, &target, &gateway, &plane, &state, &NoEvents).run(TICK, NOW + 120).await.unwrap();
    assert_eq!(pass, Pass::HandOver("the account's stages are due for discovery".into()));
    assert_eq!(plane.heartbeats.lock().unwrap().len(), heartbeats, "handed over before any work");
}

#[tokio::test]
async fn a_stage_another_execution_holds_is_left_to_it() {
    let (config, gateway, plane, state) = synced().await;
    let before = state.load("prod").await.unwrap();
    let now = NOW + 120;
    let on = ClaimOn::Branch { stage: "prod", kind: Kind::Assets };
    assert_eq!(state.claim(on, "running", now, now + 3600).await.unwrap(), Claim::Taken);
    let target = home();

    let pass = idle_pass(&config, &target, &gateway, &plane, &state, &NoEvents).run(TICK, now).await.unwrap();

    assert_eq!(pass, Pass::Idle, "nothing of its own to do");
    assert_eq!(state.load("prod").await.unwrap().assets_watermark, before.assets_watermark);
    let held = state.claim(on, "other", now, now + 60).await.unwrap();
    assert_eq!(held, Claim::HeldBy(Some("running".into())), "the holder keeps its claim");
}

#[tokio::test]
async fn a_pass_cut_off_holding_a_claim_blocks_the_stage_for_minutes_not_an_hour() {
    let (config, gateway, plane, state) = synced().await;
    let now = NOW + 120;
    let claims = Config { claim_ttl: Duration::from_secs(TICK_CLAIM_SECONDS), ..config.clone() };
    let task = list_changes(&claims, &gateway, &plane, &state);
    let input = ListChangesInput { execution_id: TICK.into(), ..assets_input(SyncMode::Auto, &["prod"]) };
    let output = task.run(input, now).await.unwrap();
    assert_eq!(output.claimed, ["prod"], "then the tick is cut off");

    let later = list_changes(&config, &gateway, &plane, &state);
    let input = || assets_input(SyncMode::Auto, &["prod"]);
    assert_eq!(later.run(input(), now + 60).await.unwrap().skipped, ["prod"]);
    let after_expiry = later.run(input(), now + TICK_CLAIM_SECONDS as i64 + 1).await.unwrap();
    assert_eq!(after_expiry.claimed, ["prod"]);
}

/// Passes answering as told, by account; what they were asked.
#[derive(Default)]
struct ScriptedPasses {
    answers: Vec<(&'static str, std::result::Result<Pass, AgentError>)>,
    asked: Mutex<Vec<(String, bool, String)>>,
}

impl TargetPasses for ScriptedPasses {
    async fn pass(&self, target: &Target, named: bool, tick_id: &str, _: Instant, _: i64) -> Result<Pass> {
        self.asked.lock().unwrap().push((target.to_string(), named, tick_id.to_owned()));
        let (_, answer) = self.answers.iter().find(|(account, _)| *account == target.account).expect("scripted");
        answer.clone()
    }
}

#[derive(Default)]
struct Starter {
    started: Mutex<Vec<(String, String, serde_json::Value)>>,
    exists: bool,
}

impl ExecutionStarter for Starter {
    async fn start(&self, state_machine: &str, name: &str, input: &str) -> Result<Option<String>> {
        self.started.lock().unwrap().push((state_machine.into(), name.into(), serde_json::from_str(input).unwrap()));
        Ok((!self.exists).then(|| format!("arn:aws:states:eu-west-1:111122223333:execution:x:{name}")))
    }
}

struct NoOrganization;

impl Organization for NoOrganization {
    async fn active_accounts(&self) -> Result<Vec<String>> {
        unreachable!("listed accounts")
    }
    async fn active_accounts_under(&self, _: &str) -> Result<Vec<String>> {
        unreachable!("listed accounts")
    }
}

fn target_settings(accounts: &[&str]) -> TargetSettings {
    TargetSettings {
        accounts: TargetAccounts::Listed(accounts.iter().map(|a| (*a).to_owned()).collect()),
        organizational_units: vec![],
        regions: vec!["eu-west-1".into()],
        role_name: "ApicpAgentReader".into(),
        external_id: None,
        concurrency: 2,
    }
}

const SYNC: &str = "arn:aws:states:eu-west-1:111122223333:stateMachine:ApiGatewayApicpAgent-workflow";
const FAN_OUT: &str = "arn:aws:states:eu-west-1:111122223333:stateMachine:ApiGatewayApicpAgent-targets";

#[tokio::test]
async fn a_tick_hands_every_busy_or_failing_target_to_one_fan_out_execution() {
    let settings = target_settings(&["111122223333", "444455556666", "777788889999"]);
    let passes = ScriptedPasses {
        answers: vec![
            ("111122223333", Ok(Pass::Idle)),
            ("444455556666", Ok(Pass::HandOver("stage prod: changes in CloudTrail".into()))),
            (
                "777788889999",
                Err(AgentError::TargetUnreachable { target: "777788889999".into(), reason: "denied".into() }),
            ),
        ],
        ..ScriptedPasses::default()
    };
    let starter = Starter::default();
    let workflows = Workflows::from_values(Some(SYNC), Some(FAN_OUT)).unwrap();
    let tick = Tick {
        settings: &settings,
        home: &home(),
        organization: &NoOrganization,
        passes: &passes,
        starter: &starter,
        workflows: &workflows,
    };

    let report = tick.run(Some("2027-01-15T08:00:00Z"), None, NOW).await.unwrap();

    assert_eq!((report.targets, report.idle, report.handed_over_count), (3, 1, 2));
    assert_eq!(report.handed_over[1].reason, "TargetUnreachable: target 777788889999 unreachable: denied");
    let asked = passes.asked.lock().unwrap();
    assert!(asked.iter().all(|(_, named, tick)| *named && tick == TICK), "{asked:?}");
    let started = starter.started.lock().unwrap();
    assert_eq!(started.len(), 1, "one execution for the tick");
    let (machine, name, input) = &started[0];
    assert_eq!((machine.as_str(), name.as_str()), (FAN_OUT, TICK));
    assert_eq!(
        *input,
        json!({"mode": "auto", "targets": [
            {"account": "444455556666", "region": "eu-west-1"},
            {"account": "777788889999", "region": "eu-west-1"},
        ]})
    );
    assert_eq!(
        report.execution.as_deref(),
        Some(format!("arn:aws:states:eu-west-1:111122223333:execution:x:{TICK}").as_str())
    );
}

#[tokio::test]
async fn a_single_target_deployment_starts_its_sync_workflow_only_when_there_is_work() {
    let settings = target_settings(&[]);
    let workflows = Workflows::from_values(Some(SYNC), None).unwrap();
    let idle = ScriptedPasses { answers: vec![("111122223333", Ok(Pass::Idle))], ..ScriptedPasses::default() };
    let starter = Starter::default();
    let home = home();
    let tick = |passes| Tick {
        settings: &settings,
        home: &home,
        organization: &NoOrganization,
        passes,
        starter: &starter,
        workflows: &workflows,
    };

    let report = tick(&idle).run(None, None, NOW).await.unwrap();
    assert_eq!((report.targets, report.idle, report.execution), (1, 1, None));
    assert!(starter.started.lock().unwrap().is_empty(), "an idle minute starts nothing");
    assert!(!idle.asked.lock().unwrap()[0].1, "the tasks of a one-target deployment name no target");

    let busy = ScriptedPasses {
        answers: vec![("111122223333", Ok(Pass::HandOver("stage prod: changes in CloudTrail".into())))],
        ..ScriptedPasses::default()
    };
    let report = tick(&busy).run(None, None, NOW).await.unwrap();
    assert_eq!(report.handed_over_count, 1);
    let started = starter.started.lock().unwrap();
    assert_eq!(started[0], (SYNC.to_owned(), format!("tick-{NOW}"), json!({"mode": "auto"})));
}

#[tokio::test]
async fn a_tick_invoked_again_starts_no_second_execution() {
    let settings = target_settings(&[]);
    let workflows = Workflows::from_values(Some(SYNC), None).unwrap();
    let busy = ScriptedPasses {
        answers: vec![("111122223333", Ok(Pass::HandOver("full sync due".into())))],
        ..ScriptedPasses::default()
    };
    let starter = Starter { exists: true, ..Starter::default() };
    let tick = Tick {
        settings: &settings,
        home: &home(),
        organization: &NoOrganization,
        passes: &busy,
        starter: &starter,
        workflows: &workflows,
    };
    let report = tick.run(Some("2027-01-15T08:00:00Z"), None, NOW).await.unwrap();
    assert_eq!((report.handed_over_count, report.execution), (1, None));
}

#[test]
fn a_ticks_execution_is_named_after_its_scheduled_time() {
    assert_eq!(execution_name(Some("2027-01-15T08:00:00Z"), NOW), TICK);
    assert_eq!(execution_name(None, NOW), format!("tick-{NOW}"));
    assert_eq!(execution_name(Some("::"), NOW), format!("tick-{NOW}"));
}

#[test]
fn the_workflows_are_state_machine_arns() {
    assert_eq!(Workflows::from_values(None, None).unwrap_err().error_type(), "InvalidConfig");
    let error = Workflows::from_values(Some(SYNC), Some("ApiGatewayApicpAgent-targets")).unwrap_err();
    assert!(error.to_string().contains("FAN_OUT_STATE_MACHINE_ARN"), "{error}");
    assert_eq!(Workflows::from_values(Some(SYNC), None).unwrap().fan_out, None);
}

#[tokio::test]
async fn a_fan_out_runs_the_targets_its_input_names_and_a_sync_run_refuses_them() {
    let settings = target_settings(&["111122223333", "444455556666"]);
    let fan_out = FanOut { settings: &settings, home: &home(), organization: &NoOrganization };
    let named = json!({"targets": [{"account": "444455556666", "region": "us-east-1"}]});
    let plan = fan_out.plan(named, EXECUTION).await.unwrap();
    let targets: Vec<String> = plan.runs.iter().map(|run| run.target.clone().unwrap().to_string()).collect();
    assert_eq!(targets, ["444455556666/us-east-1"]);
    assert_eq!(plan.runs[0].targets, None, "a run names its one target");
    let error = fan_out.plan(json!({"targets": []}), EXECUTION).await.unwrap_err();
    assert_eq!(error.error_type(), "InvalidInput");
    let bad = fan_out.plan(json!({"targets": [{"account": "12", "region": "eu-west-1"}]}), EXECUTION).await;
    assert_eq!(bad.unwrap_err().error_type(), "InvalidInput");

    let sync_run = started_with(ExecutionInput { targets: Some(vec![home()]), ..ExecutionInput::default() });
    assert_eq!(sync_run.execution_input().unwrap_err().error_type(), "InvalidInput");
}
