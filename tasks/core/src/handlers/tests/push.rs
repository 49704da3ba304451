//! Push mode: the starter's reading of EventBridge events, and pushed events applied once,
//! whichever of push and poll brings them first.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::aws::executions::ExecutionStarter;
use crate::aws::state::{PushStatuses, pushed_entry};
use crate::config::{TargetAccounts, TargetSettings};
use crate::handlers::push::{EVENTS_PER_EXECUTION, PushCheck, PushStarter, SqsBatch, SqsMessage, pushed_event};
use crate::model::PushedEvent;
use crate::target::Target;

const HOME: (&str, &str) = ("111122223333", "eu-west-1");

/// An EventBridge event of an API Gateway call, as CloudTrail hands it over.
fn api_call(id: &str, name: &str, request: serde_json::Value, account: &str, region: &str) -> serde_json::Value {
    json!({
        "version": "0",
        "id": format!("envelope-{id}"),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.apigateway",
        // A forwarded event's envelope names the bus that re-emitted it, not the target.
        "account": "999999999999",
        "time": "2027-01-15T08:00:05Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventVersion": "1.09",
            "eventTime": "2027-01-15T08:00:00Z",
            "eventSource": "apigateway.amazonaws.com",
            "eventName": name,
            "awsRegion": region,
            "readOnly": false,
            "requestParameters": request,
            "responseElements": {"id": "created", "name": "billing", "createdDate": "Jan 15, 2027 8:00:00 AM"},
            "eventID": id,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": account,
        }
    })
}

fn message(id: &str, body: impl ToString) -> SqsMessage {
    SqsMessage { message_id: format!("m-{id}"), body: body.to_string() }
}

fn home_call(id: &str) -> serde_json::Value {
    api_call(id, "UpdateRestApi", json!({"restApiId": "0000000001"}), HOME.0, HOME.1)
}

#[test]
fn an_event_is_read_from_its_detail_and_reduced_to_what_locates_the_change() {
    let request = json!({"restApiId": "r1", "stageName": "prod", "patchOperations": [{"op": "replace"}], "body": {}});
    let (target, event) =
        pushed_event(&api_call("e1", "UpdateStage", request, "222233334444", "eu-central-1").to_string()).unwrap();
    assert_eq!(
        target,
        Target::new("222233334444", "eu-central-1"),
        "the detail's account and region, not the envelope's"
    );
    assert_eq!(event.id, "e1");
    assert_eq!(event.name, "UpdateStage");
    assert_eq!(event.time, 1_800_000_000);
    assert_eq!(serde_json::Value::Object(event.request_parameters), json!({"restApiId": "r1", "stageName": "prod"}));
    assert_eq!(serde_json::Value::Object(event.response_elements), json!({"id": "created"}));
}

#[test]
fn foreign_read_only_failed_and_malformed_events_are_refused_with_a_reason() {
    let mut read_only = home_call("e1");
    read_only["detail"]["readOnly"] = json!(true);
    let mut failed = home_call("e2");
    failed["detail"]["errorCode"] = json!("BadRequestException");
    let mut foreign = home_call("e3");
    foreign["source"] = json!("aws.lambda");
    let mut other_service = home_call("e4");
    other_service["detail"]["eventSource"] = json!("lambda.amazonaws.com");
    let mut no_id = home_call("e5");
    no_id["detail"].as_object_mut().unwrap().remove("eventID");
    let mut bad_account = home_call("e6");
    bad_account["detail"]["recipientAccountId"] = json!("me");
    let mut no_time = home_call("e7");
    no_time["detail"]["eventTime"] = json!("yesterday");
    for (body, reason) in [
        (read_only.to_string(), "read-only"),
        (failed.to_string(), "failed call"),
        (foreign.to_string(), "not an API Gateway call delivered by CloudTrail"),
        (other_service.to_string(), "not an API Gateway call"),
        (no_id.to_string(), "no eventID"),
        (bad_account.to_string(), "not a 12-digit account id"),
        (no_time.to_string(), "no eventTime"),
        ("{\"detail-type\":".into(), "not JSON"),
        ("[]".into(), "not an API Gateway call"),
    ] {
        let refused = pushed_event(&body).unwrap_err();
        assert!(refused.contains(reason), "{refused:?} should say {reason:?}");
    }
}

/// Starts executions as Step Functions does: a name used before starts nothing.
#[derive(Default)]
struct Starter {
    started: Mutex<Vec<(String, serde_json::Value)>>,
    failing: bool,
}

impl ExecutionStarter for Starter {
    async fn start(&self, _: &str, name: &str, input: &str) -> Result<Option<String>> {
        if self.failing {
            return Err(AgentError::AwsUnavailable("states:StartExecution answered 500".into()));
        }
        let mut started = self.started.lock().unwrap();
        if started.iter().any(|(n, _)| n == name) {
            return Ok(None);
        }
        started.push((name.into(), serde_json::from_str(input).unwrap()));
        Ok(Some(format!("arn:aws:states:eu-west-1:111122223333:execution:agent:{name}")))
    }
}

fn settings(accounts: TargetAccounts, regions: &[&str]) -> TargetSettings {
    TargetSettings {
        accounts,
        organizational_units: vec![],
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
        role_name: "ApiGatewayApicpAgentMember".into(),
        external_id: None,
        concurrency: 10,
    }
}

#[tokio::test]
async fn a_batch_starts_one_execution_per_target_and_drops_what_is_not_ours() {
    let home = Target::new(HOME.0, HOME.1);
    let settings = settings(TargetAccounts::Listed(vec![HOME.0.into(), "222233334444".into()]), &[HOME.1]);
    let starter = Starter::default();
    let push = PushStarter { settings: &settings, home: &home, starter: &starter, sync_workflow: "arn:sync" };
    let member = |id: &str| api_call(id, "DeleteRestApi", json!({"restApiId": "m1"}), "222233334444", HOME.1);
    let batch = SqsBatch {
        records: vec![
            message("1", home_call("e1")),
            message("2", member("e2")),
            message("3", home_call("e3")),
            // Another region, an account not federated, a malformed body: dropped, not retried.
            message("4", api_call("e4", "UpdateRestApi", json!({"restApiId": "x"}), HOME.0, "us-west-2")),
            message("5", api_call("e5", "UpdateRestApi", json!({"restApiId": "x"}), "555566667777", HOME.1)),
            message("6", "not json"),
        ],
    };

    let answer = push.run(batch.clone(), NOW).await;

    assert!(answer.failures.is_empty(), "dropped events are not failures: {answer:?}");
    let started = starter.started.lock().unwrap().clone();
    assert_eq!(started.len(), 2, "one execution per target");
    let (home_run, member_run) = (&started[0].1, &started[1].1);
    assert!(home_run.get("target").is_none(), "the deployment's own target is the sync workflow's default");
    let ids = |run: &serde_json::Value| -> Vec<String> {
        run["pushed"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(home_run), ["e1", "e3"]);
    assert_eq!(member_run["target"], json!({"account": "222233334444", "region": HOME.1}));
    assert_eq!(ids(member_run), ["e2"]);
    let input: ExecutionInput = serde_json::from_value(member_run.clone()).unwrap();
    assert_eq!(input.pushed[0].name, "DeleteRestApi", "the workflow reads the input it was given");

    // The same batch delivered again names the same executions: none is started twice.
    assert!(push.run(batch, NOW).await.failures.is_empty());
    assert_eq!(starter.started.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_burst_is_coalesced_into_few_executions_and_a_failed_start_is_delivered_again() {
    let home = Target::new(HOME.0, HOME.1);
    let settings = settings(TargetAccounts::OwnAccount, &[]);
    let starter = Starter::default();
    let push = PushStarter { settings: &settings, home: &home, starter: &starter, sync_workflow: "arn:sync" };
    let burst: Vec<SqsMessage> = (0..250).map(|i| message(&i.to_string(), home_call(&format!("e{i}")))).collect();

    assert!(push.run(SqsBatch { records: burst.clone() }, NOW).await.failures.is_empty());
    let sizes: Vec<usize> =
        starter.started.lock().unwrap().iter().map(|(_, input)| input["pushed"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [EVENTS_PER_EXECUTION, EVENTS_PER_EXECUTION, 50]);

    let failing = Starter { failing: true, ..Starter::default() };
    let push = PushStarter { starter: &failing, ..push };
    let answer = push.run(SqsBatch { records: burst[..3].to_vec() }, NOW).await;
    let failed: Vec<&str> = answer.failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["m-0", "m-1", "m-2"], "SQS delivers them again, then to the dead-letter queue");
}

fn push_config() -> Config {
    config(&[("PUSH_MODE", "true"), ("PUSH_POLL_MINUTES", "15")])
}

fn pushed(id: &str, time: i64, api: &str) -> PushedEvent {
    PushedEvent {
        id: id.into(),
        time,
        name: "UpdateRestApi".into(),
        request_parameters: json!({"restApiId": api}).as_object().unwrap().clone(),
        response_elements: serde_json::Map::new(),
    }
}

fn pushed_input(execution: &str, events: Vec<PushedEvent>) -> ListChangesInput {
    ListChangesInput { execution_id: execution.into(), pushed: events, ..assets_input(SyncMode::Auto, &["prod"]) }
}

/// A stage fully synced at NOW, under push mode.
async fn synced(config: &Config, gateway: &Gateway, plane: &Plane, state: &Memory) {
    let output =
        list_changes(config, gateway, plane, state).run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    assert!(publish_all(&output, plane, state).await.is_empty());
    commit(ack_of(&output, EXECUTION), state, NOW).await.unwrap();
}

#[tokio::test]
async fn a_pushed_change_is_applied_at_once_and_the_poll_reading_it_later_skips_it() {
    let config = push_config();
    let mut gateway = Gateway::with_apis(3, &["prod"], "before");
    let (plane, state) = (Plane::default(), Memory::default());
    synced(&config, &gateway, &plane, &state).await;
    let watermark = state.load("prod").await.unwrap().assets_watermark;

    // A minute later the description changes; EventBridge pushes the call seconds after it.
    gateway.apis[1].description = Some("after".into());
    let change = NOW + 60;
    let output = list_changes(&config, &gateway, &plane, &state)
        .run(pushed_input("push-1", vec![pushed("e1", change, "0000000001")]), change + 20)
        .await
        .unwrap();

    let Chunk::Assets(chunk) = &output.chunks[0] else { panic!("assets chunk expected") };
    assert_eq!(chunk.upserts, ["0000000001"], "only the API the event names");
    assert_eq!(output.summary.pushed_events, 1);
    let documents = documents_of(&output, &state).await;
    assert_eq!(documents["0000000001_prod"].description.as_deref(), Some("after"));
    assert!(publish_all(&output, &plane, &state).await.is_empty());
    let acked = commit(ack_of(&output, "push-1"), &state, change + 25).await.unwrap();
    assert!(!acked.watermarks[0].advanced);
    let item = state.load("prod").await.unwrap();
    assert_eq!(item.assets_watermark, watermark, "push never moves the watermark: the poll reads the window");
    assert_eq!(item.assets_pushed, [pushed_entry(change, "e1")]);

    // The poll, 15 minutes on, reads the same call from CloudTrail (same eventID): nothing to do.
    let same = write_event("e1", change, "UpdateRestApi", json!({"restApiId": "0000000001"}), serde_json::Value::Null);
    let feed = Events::new(vec![same]);
    let poll_at = NOW + 900 + 300;
    let poll = list_changes_reading(&feed, &config, &gateway, &plane, &state);
    let output = poll.run(pushed_input("poll-1", vec![]), poll_at).await.unwrap();
    assert!(output.chunks.is_empty(), "applied once: {:?}", output.chunks);
    assert_eq!(output.summary.incremental_runtimes, 1);
    commit(ack_of(&output, "poll-1"), &state, poll_at).await.unwrap();
    assert_eq!(state.load("prod").await.unwrap().assets_pushed.len(), 1, "still inside the next window's overlap");

    // Once no window reads it again, it is forgotten.
    let later = poll_at + 1800;
    let output = poll.run(pushed_input("poll-2", vec![]), later).await.unwrap();
    commit(ack_of(&output, "poll-2"), &state, later).await.unwrap();
    assert!(state.load("prod").await.unwrap().assets_pushed.is_empty());
}

#[tokio::test]
async fn a_change_the_poll_applied_first_is_not_applied_again_by_a_late_push() {
    let config = push_config();
    let gateway = Gateway::with_apis(3, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    synced(&config, &gateway, &plane, &state).await;
    let change = NOW + 30;
    let feed = Events::new(vec![write_event(
        "e1",
        change,
        "UpdateRestApi",
        json!({"restApiId": "0000000002"}),
        serde_json::Value::Null,
    )]);
    let poll_at = NOW + 900 + 300;
    let poll = list_changes_reading(&feed, &config, &gateway, &plane, &state);
    let output = poll.run(pushed_input("poll-1", vec![]), poll_at).await.unwrap();
    assert_eq!(output.summary.upserts, 1, "poll only: CloudTrail brings the change");
    assert!(publish_all(&output, &plane, &state).await.is_empty());
    commit(ack_of(&output, "poll-1"), &state, poll_at).await.unwrap();

    // EventBridge delivers it very late: the window's overlap remembers it was applied.
    let late = poll.run(pushed_input("push-1", vec![pushed("e1", change, "0000000002")]), poll_at + 60).await.unwrap();
    assert!(late.chunks.is_empty(), "{:?}", late.chunks);
    assert_eq!(late.summary.pushed_events, 0);
}

#[tokio::test]
async fn a_pushed_event_that_locates_no_change_is_left_to_the_poll() {
    let config = push_config();
    let gateway = Gateway::with_apis(2, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    synced(&config, &gateway, &plane, &state).await;
    let nameless = PushedEvent {
        name: "UpdateSomething".into(),
        request_parameters: serde_json::Map::new(),
        ..pushed("e9", NOW + 30, "")
    };

    let output = list_changes(&config, &gateway, &plane, &state)
        .run(pushed_input("push-1", vec![nameless]), NOW + 60)
        .await
        .unwrap();

    assert!(output.chunks.is_empty() && output.watermarks.is_empty(), "no full sync from a push: {output:?}");
    assert!(state.load("prod").await.unwrap().assets_pushed.is_empty());
}

#[tokio::test]
async fn pushed_events_wait_a_while_for_a_stage_another_execution_holds() {
    // A wait of 4 s instead of the deployed 60, in real time: the holder is another execution.
    let config = Config { push_claim_wait: Duration::from_secs(4), ..push_config() };
    let gateway = Gateway::with_apis(2, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    synced(&config, &gateway, &plane, &state).await;
    let on = ClaimOn::Branch { stage: "prod", kind: Kind::Assets };
    assert_eq!(state.claim(on, "poll-1", NOW, NOW + 3600).await.unwrap(), Claim::Taken);
    let task = list_changes(&config, &gateway, &plane, &state);

    let started = Instant::now();
    let released = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        state.release(on, "poll-1").await.unwrap();
    };
    let (output, ()) =
        tokio::join!(task.run(pushed_input("push-1", vec![pushed("e1", NOW + 30, "0000000001")]), NOW + 60), released);
    let output = output.unwrap();
    assert_eq!(output.claimed, ["prod"], "taken once the holder released it");
    assert!(started.elapsed() >= Duration::from_secs(2));

    // A holder that outlasts the wait: the stage is skipped and the poll applies the events.
    state.release(on, "push-1").await.unwrap();
    assert_eq!(state.claim(on, "poll-2", NOW, NOW + 3600).await.unwrap(), Claim::Taken);
    let started = Instant::now();
    let output = task.run(pushed_input("push-2", vec![pushed("e2", NOW + 40, "0000000001")]), NOW + 90).await.unwrap();
    assert_eq!(output.skipped, ["prod"]);
    assert!(started.elapsed() >= config.push_claim_wait);
    // A scheduled run does not wait.
    let started = Instant::now();
    task.run(pushed_input("poll-3", vec![]), NOW + 120).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_target_without_a_logging_trail_is_reported_and_the_check_is_reused_for_an_hour() {
    let config = push_config();
    let state = Memory::default();
    let no_trail = Events::new(vec![]);
    let check = PushCheck { config: &config, trails: &no_trail, state: &state };

    let status = check.status(NOW).await.unwrap();
    assert!(!status.available);
    assert_eq!(status.reason, "no CloudTrail trail logs this account-region");

    // A trail created meanwhile is seen at the next check, not within the hour.
    let with_trail = PushCheck { config: &config, trails: &NoEvents, state: &state };
    assert!(!with_trail.status(NOW + 600).await.unwrap().available);
    let status = with_trail.status(NOW + 3600).await.unwrap();
    assert!(status.available);
    assert_eq!(state.load_push_status().await.unwrap(), Some(status));

    // Without push mode nothing is checked.
    let poll_only = super::config(&[]);
    assert_eq!(PushCheck { config: &poll_only, trails: &no_trail, state: &state }.status(NOW).await, None);
}
