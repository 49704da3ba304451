//! Handler tests over in-memory stand-ins of the adapters' traits: the rules that need no
//! network, at sizes the end-to-end tests cannot reach quickly (10,000 APIs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod doubles;
mod isolation;
mod push;
mod tick;

use self::doubles::*;
use super::ack_watermark::{AckAnswer, ack_watermark};
use super::ensure_runtime::EnsureRuntime;
use super::list_changes::{ListChanges, WINDOWS_PER_METRICS_CHUNK};
use super::publish::Publish;
use super::transform::{BATCH_BUDGET_BYTES, Transform};
use crate::aws::apigateway::{Api, ApiGateway, ApiKind, DomainMapping, Generation, Stage};
use crate::aws::cloudtrail::{ApiEvent, ChangeFeed};
use crate::aws::cloudwatch::{MetricSource, MetricSubject};
use crate::aws::state::{Catalogs, Claim, ClaimOn, Claims, Reports, StageProgress, report_key};
use crate::config::{ApiTypes, Config};
use crate::control_plane::types::ApiDocument;
use crate::error::{AgentError, Result};
use crate::model::{
    AckInput, AckOutput, AckRequest, Batch, Chunk, EnsureRuntimeInput, ExecutionInput, InactiveReason, Kind,
    ListChangesInput, ListChangesOutput, MetricsChunk, PublishOutput, RuntimeRef, RuntimeWindows, RuntimesReady,
    SyncMode, WatermarkUpdate,
};

/// Step Functions' payload limit, with the margin ARCHITECTURE.md asks for.
const OUTPUT_LIMIT: usize = 200 * 1024;
/// A listing's calls beyond one GetStages per API, for an account of REST APIs only: one
/// listing per management API, and the custom domain names of the one with deployed APIs.
const LISTING_OVERHEAD: usize = 3;

fn config(extra: &[(&'static str, &'static str)]) -> Config {
    let mut values = HashMap::from([
        ("APICP_URL", "https://apicp.example.com"),
        ("APICP_USERNAME", "agent"),
        ("APICP_PASSWORD", "pw"),
        ("STATE_TABLE", "state"),
    ]);
    values.extend(extra.iter().copied());
    Config::from_map(&values).unwrap()
}

fn watermark(stage: &str, position: i64, full_sync_at: Option<i64>) -> WatermarkUpdate {
    WatermarkUpdate { full_sync_at, ..WatermarkUpdate::at(stage, position) }
}

/// What the schedule starts, as ensure-runtime receives it.
fn scheduled() -> EnsureRuntimeInput {
    started_with(ExecutionInput::default())
}

/// An execution started with `input`, as ensure-runtime receives it.
fn started_with(input: ExecutionInput) -> EnsureRuntimeInput {
    EnsureRuntimeInput { input: serde_json::to_value(input).unwrap(), execution_id: EXECUTION.into() }
}

const EXECUTION: &str = "arn:aws:states:eu-west-1:111122223333:execution:agent:run-1";

/// A commit of `ack-watermark`.
async fn commit(input: AckInput, state: &Memory, now: i64) -> Result<AckOutput> {
    match ack_watermark(AckRequest::Commit(input), state, now).await? {
        AckAnswer::Committed(output) => Ok(output),
        AckAnswer::Recorded {} => unreachable!("a commit is answered with its output"),
    }
}

/// The commit of a branch after list-changes' `output`, as the workflow makes it.
fn ack_of(output: &ListChangesOutput, execution_id: &str) -> AckInput {
    AckInput {
        target: None,
        kind: output.kind,
        execution_id: execution_id.into(),
        watermarks: output.watermarks.clone(),
        claimed: output.claimed.clone(),
        held_back: output.held_back.clone(),
        branch_failed: false,
    }
}

/// Transforms and publishes every chunk of `output` as the workflow's Map does (each chunk's
/// batches in turn), stopping a chunk at its first error; the errors met.
async fn publish_all(output: &ListChangesOutput, plane: &Plane, state: &Memory) -> Vec<AgentError> {
    let transform = transform(&*NO_TRAFFIC, state);
    let publish = publish_to(plane, state);
    let mut errors = Vec::new();
    for chunk in &output.chunks {
        let mut next = Some(chunk.clone());
        while let Some(chunk) = next.take() {
            let batch = match chunk {
                Chunk::Assets(chunk) => transform.assets(chunk).await,
                Chunk::Metrics(chunk) => transform.metrics(chunk, NOW, far_deadline()).await,
            };
            match async { publish.run(batch?, NOW).await }.await {
                Ok(published) => next = published.next,
                Err(error) => errors.push(error),
            }
        }
    }
    errors
}

/// An invocation with all the time in the world.
fn far_deadline() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// Publish with a control plane whose requests take at most 31 s (three 10 s attempts).
fn publish_to<'a>(plane: &'a Plane, state: &'a Memory) -> Publish<'a, Plane, Memory> {
    Publish { control_plane: plane, state, deadline: far_deadline(), longest_request: Duration::from_secs(31) }
}

static NO_TRAFFIC: LazyLock<Traffic> = LazyLock::new(no_traffic);

fn runtime(stage: &str) -> RuntimeRef {
    RuntimeRef { runtime_id: format!("rt_{stage}"), stage: stage.into() }
}

fn ensure_runtime<'a>(
    config: &'a Config,
    gateway: &'a Gateway,
    plane: &'a Plane,
    state: &'a Memory,
) -> EnsureRuntime<'a, Gateway, Plane, Memory, StillRunning> {
    EnsureRuntime {
        config,
        account: "111122223333",
        region: "eu-west-1",
        gateway,
        control_plane: plane,
        state,
        executions: &StillRunning,
        store_listing: true,
    }
}

/// list-changes over the stand-ins, with no CloudTrail event and every claim holder running.
fn list_changes<'a, G: ApiGateway>(
    config: &'a Config,
    gateway: &'a G,
    plane: &'a Plane,
    state: &'a Memory,
) -> ListChanges<'a, G, Plane, Memory, NoEvents, StillRunning> {
    list_changes_reading(&NoEvents, config, gateway, plane, state)
}

/// list-changes reading `feed`'s CloudTrail events, every claim holder running.
fn list_changes_reading<'a, G: ApiGateway, F: ChangeFeed>(
    feed: &'a F,
    config: &'a Config,
    gateway: &'a G,
    plane: &'a Plane,
    state: &'a Memory,
) -> ListChanges<'a, G, Plane, Memory, F, StillRunning> {
    ListChanges { config, gateway, control_plane: plane, state, feed, executions: &StillRunning }
}

/// Transform in eu-west-1 for every API type.
fn transform<'a, M: MetricSource>(metrics: &'a M, state: &'a Memory) -> Transform<'a, M, Memory> {
    static EVERY_TYPE: LazyLock<ApiTypes> = LazyLock::new(ApiTypes::all);
    Transform { region: "eu-west-1", api_types: &EVERY_TYPE, metrics, state }
}

fn assets_input(mode: SyncMode, stages: &[&str]) -> ListChangesInput {
    ListChangesInput {
        target: None,
        kind: Kind::Assets,
        mode,
        runtimes: stages.iter().map(|s| runtime(s)).collect(),
        execution_id: EXECUTION.into(),
        pushed: Vec::new(),
    }
}

fn json_len(value: &impl serde::Serialize) -> usize {
    serde_json::to_vec(value).unwrap().len()
}

#[tokio::test]
async fn a_full_listing_of_10000_apis_stays_far_below_the_payload_limit() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(10_000, &["prod"], "an API");
    let plane = Plane::default();
    let state = Memory::default();
    let task = list_changes(&config, &gateway, &plane, &state);
    let input = assets_input(SyncMode::Full, &["prod"]);

    let output = task.run(input, NOW).await.unwrap();

    assert!(json_len(&output) < OUTPUT_LIMIT, "{} bytes", json_len(&output));
    assert_eq!(output.chunks.len(), 100, "chunks of CHUNK_SIZE keep the Map's history bounded");
    let listed: BTreeSet<String> = output
        .chunks
        .iter()
        .flat_map(|c| match c {
            Chunk::Assets(chunk) => chunk.upserts.clone(),
            Chunk::Metrics(_) => vec![],
        })
        .collect();
    assert_eq!(listed.len(), 10_000, "every API exactly once");
    let expected = WatermarkUpdate {
        read_at: Some(NOW),
        chunks: 100,
        run: Some(crate::model::run_key(Kind::Assets, EXECUTION, "prod")),
        ..watermark("prod", NOW - 300, Some(NOW))
    };
    assert_eq!(output.watermarks, vec![expected]);
}

#[tokio::test]
async fn large_documents_are_chunked_and_batched_under_every_limit_without_rereading_api_gateway() {
    let config = config(&[("CHUNK_SIZE", "500")]);
    let gateway = Gateway::with_apis(500, &["prod"], &"d".repeat(8191));
    let state = Memory::default();
    let plane = Plane::default();
    let listing = list_changes(&config, &gateway, &plane, &state);
    let listed = listing.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    assert!(listed.chunks.len() > 1, "500 APIs of 8 KiB do not fit one DynamoDB item");
    let calls_of_the_listing = gateway.calls.load(Ordering::SeqCst);
    assert_eq!(calls_of_the_listing, 500 + LISTING_OVERHEAD, "one listing and one GetStages per API");
    let discovery = state.discovery.lock().unwrap().clone().unwrap();
    assert_eq!((discovery.stages, discovery.at), (vec!["prod".to_owned()], NOW), "ensure-runtime reuses the listing");

    let task = transform(&*NO_TRAFFIC, &state);
    let (mut published, mut batches) = (0, 0);
    for chunk in listed.chunks {
        let Chunk::Assets(chunk) = chunk else { panic!("assets chunk expected") };
        let mut chunk = Some(chunk);
        while let Some(current) = chunk.take() {
            let batch = task.assets(current).await.unwrap();
            assert!(json_len(&batch) < OUTPUT_LIMIT, "batch of {} bytes", json_len(&batch));
            let Batch::Assets { upserts, next, .. } = batch else { panic!("assets batch expected") };
            assert!(upserts.iter().map(json_len).sum::<usize>() <= BATCH_BUDGET_BYTES);
            assert!(upserts.iter().all(|d| d.description.as_deref().is_some_and(|t| t.len() == 8191)));
            published += upserts.len();
            batches += 1;
            chunk = next.map(|next| *next);
        }
    }
    assert_eq!(published, 500);
    assert!(batches > 1);
    assert_eq!(gateway.calls.load(Ordering::SeqCst), calls_of_the_listing, "transform calls API Gateway never");
}

#[tokio::test]
async fn an_empty_listing_never_empties_a_runtime_unless_allowed_and_holds_back_that_stage_only() {
    // Nothing is deployed to prod any more, while the control plane holds two of its APIs.
    let gateway = Gateway::with_apis(2, &["dev"], "x");
    let plane = Plane {
        held: BTreeMap::from([("rt_prod".into(), vec!["a_prod".into(), "b_prod".into()])]),
        ..Plane::default()
    };
    let input = assets_input(SyncMode::Full, &["dev", "prod"]);

    let guarded = config(&[]);
    let state = Memory::default();
    let output = list_changes(&guarded, &gateway, &plane, &state).run(input.clone(), NOW).await.unwrap();
    assert_eq!(output.held_back.len(), 1);
    let held = &output.held_back[0];
    assert_eq!((held.stage.as_str(), held.error.as_str()), ("prod", "UnsafeDeletion"));
    assert!(held.cause.contains("refusing to delete 2 API(s) from runtime rt_prod"), "{}", held.cause);
    assert_eq!(upserts_by_stage(&output), BTreeMap::from([("dev".into(), 2)]), "dev goes on");
    assert_eq!(output.watermarks.iter().map(|w| w.stage.as_str()).collect::<Vec<_>>(), ["dev"]);
    // The commit moves dev, keeps prod where it was, names it, and records its run as failed.
    assert!(publish_all(&output, &plane, &state).await.is_empty());
    let acked = commit(ack_of(&output, EXECUTION), &state, NOW).await.unwrap();
    assert_eq!(acked.failures.len(), 1);
    assert_eq!(
        (acked.failures[0].error.as_str(), acked.failures[0].stages.clone()),
        ("UnsafeDeletion", vec!["prod".into()])
    );
    assert!(state.load("dev").await.unwrap().assets_watermark.is_some());
    let prod = state.load("prod").await.unwrap();
    assert_eq!((prod.assets_watermark, prod.assets_outcome.last_succeeded()), (None, Some(false)));
    assert!(state.claims.lock().unwrap().is_empty(), "every claim released");

    let allowed = config(&[("ALLOW_EMPTY_LISTING_DELETES", "true")]);
    let state = Memory::default();
    let task = list_changes(&allowed, &gateway, &plane, &state);
    let output = task.run(input, NOW).await.unwrap();
    assert_eq!((output.summary.deletes, output.held_back.len()), (2, 0));
}

#[tokio::test]
async fn a_full_sync_removes_only_what_aws_no_longer_deploys() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(2, &["prod"], "x");
    let plane = Plane {
        held: BTreeMap::from([("rt_prod".into(), vec!["0000000000_prod".into(), "retired_prod".into()])]),
        ..Plane::default()
    };
    let state = Memory::default();
    let task = list_changes(&config, &gateway, &plane, &state);
    let input = assets_input(SyncMode::Auto, &["prod"]);
    let output = task.run(input, NOW).await.unwrap();
    let Chunk::Assets(chunk) = &output.chunks[0] else { panic!("assets chunk expected") };
    assert_eq!(chunk.upserts, vec!["0000000000", "0000000001"]);
    assert_eq!(chunk.deletes, vec!["retired_prod"]);
}

#[tokio::test]
async fn runtimes_are_registered_once_and_heartbeat_on_every_run() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod", "dev"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    let task = ensure_runtime(&config, &gateway, &plane, &state);

    let first = task.run(scheduled(), NOW).await.unwrap();
    let second = task.run(scheduled(), NOW + 60).await.unwrap();

    assert_eq!(first, second);
    let stages: Vec<_> = first.runtimes.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(stages, vec!["dev", "prod"]);
    assert_eq!(plane.registrations.lock().unwrap().len(), 2);
    assert_eq!(plane.heartbeats.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_heartbeat_is_active_only_for_a_deployed_stage_whose_last_run_succeeded() {
    // "prdo" is a typo in STAGES: registered, but no API is deployed to it.
    let config = config(&[("STAGES", "prod,prdo")]);
    let gateway = Gateway::with_apis(2, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    let task = ensure_runtime(&config, &gateway, &plane, &state);
    let beats = |plane: &Plane| {
        let sent: Vec<_> = plane.heartbeats.lock().unwrap().drain(..).map(|h| (h.runtime_id, h.active)).collect();
        sent
    };
    let reasons =
        |ready: &RuntimesReady| ready.inactive.iter().map(|i| (i.stage.clone(), i.reason)).collect::<Vec<_>>();

    let first = task.run(scheduled(), NOW).await.unwrap();
    assert_eq!(
        reasons(&first),
        [("prdo".into(), InactiveReason::NotSyncedYet), ("prod".into(), InactiveReason::NotSyncedYet)]
    );
    assert_eq!(beats(&plane), [("111122223333_eu-west-1_prdo".into(), 0), ("111122223333_eu-west-1_prod".into(), 0)]);

    // The run's full sync: prod has two APIs, prdo none; both branches succeed.
    let input = assets_input(SyncMode::Auto, &["prod", "prdo"]);
    let assets = list_changes(&config, &gateway, &plane, &state).run(input, NOW).await.unwrap();
    assert!(publish_all(&assets, &plane, &state).await.is_empty());
    commit(ack_of(&assets, EXECUTION), &state, NOW + 30).await.unwrap();
    let second = task.run(scheduled(), NOW + 60).await.unwrap();
    assert_eq!(reasons(&second), [("prdo".into(), InactiveReason::NoDeployedApi)], "the summary names the empty stage");
    assert_eq!(beats(&plane), [("111122223333_eu-west-1_prdo".into(), 0), ("111122223333_eu-west-1_prod".into(), 1)]);

    // prod's metrics branch fails: its next heartbeat says so, until a run succeeds again.
    state.record_outcome("prod", Kind::Metrics, false, NOW + 90).await.unwrap();
    let third = task.run(scheduled(), NOW + 120).await.unwrap();
    assert!(reasons(&third).contains(&("prod".into(), InactiveReason::LastRunFailed)));
    assert_eq!(beats(&plane)[1], ("111122223333_eu-west-1_prod".into(), 0));
    state.record_outcome("prod", Kind::Metrics, true, NOW + 150).await.unwrap();
    task.run(scheduled(), NOW + 180).await.unwrap();
    assert_eq!(beats(&plane)[1], ("111122223333_eu-west-1_prod".into(), 1));

    // Ten minutes without a run: the control plane gets the gap, then the live heartbeat.
    task.run(scheduled(), NOW + 780).await.unwrap();
    let prod: Vec<_> = plane
        .heartbeats
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.runtime_id.ends_with("prod"))
        .map(|h| (h.created, h.active))
        .collect();
    assert_eq!(prod, [((NOW + 240) * 1000, 0), ((NOW + 780) * 1000, 1)]);

    // A catalog written before its size was kept on the stage's item is read instead.
    state.items.lock().unwrap().get_mut("prod").unwrap().deployed_apis = None;
    let legacy = task.run(scheduled(), NOW + 840).await.unwrap();
    assert_eq!(reasons(&legacy), [("prdo".into(), InactiveReason::NoDeployedApi)]);
}

#[tokio::test]
async fn a_runtime_deleted_in_the_control_plane_is_registered_again_and_fully_synced() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    let task = ensure_runtime(&config, &gateway, &plane, &state);
    task.run(scheduled(), NOW).await.unwrap();
    state.advance_assets_watermark(&watermark("prod", NOW - 300, Some(NOW)), &[], NOW).await.unwrap();

    plane.runtimes.lock().unwrap().clear();
    task.run(scheduled(), NOW + 60).await.unwrap();

    assert_eq!(plane.registrations.lock().unwrap().len(), 2, "registered again");
    assert!(plane.runtimes.lock().unwrap().contains("111122223333_eu-west-1_prod"));
    let after = state.load("prod").await.unwrap();
    assert_eq!(after.assets_watermark, None, "the next listing is a full sync");
    let task = list_changes(&config, &gateway, &plane, &state);
    let listing = task.run(assets_input(SyncMode::Auto, &["prod"]), NOW + 60).await.unwrap();
    assert_eq!(listing.summary.full_runtimes, 1);
}

#[tokio::test]
async fn requested_stages_override_the_configuration_and_are_validated() {
    let config = config(&[("STAGES", "prod,dev")]);
    let gateway = Gateway::default();
    let (plane, state) = (Plane::default(), Memory::default());
    let task = ensure_runtime(&config, &gateway, &plane, &state);

    let only_dev =
        ExecutionInput { mode: SyncMode::Full, stages: Some(vec!["dev".into()]), ..ExecutionInput::default() };
    let ready = task.run(started_with(only_dev), NOW).await.unwrap();
    assert_eq!(
        ready.runtimes,
        vec![RuntimeRef { runtime_id: "111122223333_eu-west-1_dev".into(), stage: "dev".into() }]
    );
    assert_eq!(ready.mode, SyncMode::Full);

    let bad =
        ExecutionInput { mode: SyncMode::Auto, stages: Some(vec!["dev stage".into()]), ..ExecutionInput::default() };
    assert_eq!(task.run(started_with(bad), NOW).await.unwrap_err().error_type(), "InvalidInput");
}

#[tokio::test]
async fn watermarks_only_move_forward() {
    let state = Memory::default();
    let ack = |position| AckInput {
        target: None,
        kind: Kind::Assets,
        execution_id: "run-1".into(),
        watermarks: vec![watermark("prod", position, None)],
        claimed: vec!["prod".into()],
        held_back: vec![],
        branch_failed: false,
    };
    let first = commit(ack(600), &state, NOW).await.unwrap();
    assert!(first.watermarks[0].advanced);
    assert_eq!(first.lag_seconds, Some(NOW - 600));
    let replay = commit(ack(300), &state, NOW).await.unwrap();
    assert!(!replay.watermarks[0].advanced, "a replay never moves it back");
    assert_eq!(replay.lag_seconds, Some(NOW - 600), "the stored watermark is the lag");
    assert!(!commit(ack(600), &state, NOW).await.unwrap().watermarks[0].advanced);
    assert_eq!(state.load("prod").await.unwrap().assets_watermark, Some(600));
}

#[test]
fn task_inputs_reject_unknown_fields() {
    let typo = serde_json::json!({"mdoe": "full"});
    let error = crate::bootstrap::parse_input::<ExecutionInput>(typo).unwrap_err();
    assert_eq!(error.error_type(), "InvalidInput");
    assert!(error.to_string().contains("mdoe"), "{error}");
}

#[tokio::test]
async fn an_overlapping_execution_skips_the_stages_another_one_holds() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(2, &["prod", "dev"], "x");
    let state = Memory::default();
    let plane = Plane::default();
    let task = list_changes(&config, &gateway, &plane, &state);
    assert_eq!(
        state.claim(ClaimOn::Branch { stage: "prod", kind: Kind::Assets }, "other-run", NOW, NOW + 600).await.unwrap(),
        Claim::Taken
    );

    let output = task.run(assets_input(SyncMode::Auto, &["prod", "dev"]), NOW).await.unwrap();

    assert_eq!(output.claimed, vec!["dev"]);
    assert_eq!(output.skipped, vec!["prod"]);
    assert!(output.chunks.iter().all(|c| matches!(c, Chunk::Assets(chunk) if chunk.stage == "dev")));
    assert_eq!(output.watermarks.iter().map(|w| w.stage.as_str()).collect::<Vec<_>>(), vec!["dev"]);

    // Once the other claim expires, the stage is taken again.
    let later = task.run(assets_input(SyncMode::Auto, &["prod"]), NOW + 601).await.unwrap();
    assert_eq!(later.claimed, vec!["prod"]);
}

#[tokio::test]
async fn a_claim_whose_execution_has_ended_is_taken_over_at_once() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(2, &["prod", "dev"], "x");
    let state = Memory::default();
    // Both claims were left by executions that died holding them, one an hour from expiring.
    state.claim(ClaimOn::Branch { stage: "prod", kind: Kind::Assets }, "stopped-run", NOW, NOW + 3600).await.unwrap();
    state.claim(ClaimOn::Branch { stage: "dev", kind: Kind::Assets }, "live-run", NOW, NOW + 3600).await.unwrap();
    let task = ListChanges {
        config: &config,
        gateway: &gateway,
        control_plane: &Plane::default(),
        state: &state,
        feed: &NoEvents,
        executions: &RunningOnly(&["live-run"]),
    };

    let output = task.run(assets_input(SyncMode::Auto, &["prod", "dev"]), NOW + 60).await.unwrap();

    assert_eq!(output.claimed, vec!["prod"], "the ended holder's claim is void");
    assert_eq!(output.skipped, vec!["dev"], "a running holder keeps its claim");
}

#[tokio::test]
async fn acking_releases_the_claims_so_the_next_execution_proceeds() {
    let state = Memory::default();
    assert_eq!(
        state.claim(ClaimOn::Branch { stage: "prod", kind: Kind::Metrics }, "run-1", NOW, NOW + 3600).await.unwrap(),
        Claim::Taken
    );
    let held = state
        .claim(ClaimOn::Branch { stage: "prod", kind: Kind::Metrics }, "run-2", NOW + 60, NOW + 3660)
        .await
        .unwrap();
    assert_eq!(held, Claim::HeldBy(Some("run-1".into())));

    let failed_branch = AckInput {
        target: None,
        kind: Kind::Metrics,
        execution_id: "run-1".into(),
        watermarks: vec![],
        claimed: vec!["prod".into()],
        held_back: vec![],
        branch_failed: true,
    };
    let output = commit(failed_branch, &state, NOW + 61).await.unwrap();

    assert!(output.watermarks.is_empty());
    assert_eq!(output.lag_seconds, None, "no ack, no lag reading");
    assert_eq!(state.load("prod").await.unwrap().metrics_watermark, None, "nothing acked");
    assert_eq!(
        state
            .claim(ClaimOn::Branch { stage: "prod", kind: Kind::Metrics }, "run-2", NOW + 62, NOW + 3662)
            .await
            .unwrap(),
        Claim::Taken
    );
}

#[tokio::test]
async fn a_failing_listing_gives_its_claims_back() {
    struct Broken;
    impl ApiGateway for Broken {
        async fn list_apis(&self, _: Generation) -> Result<Vec<Api>> {
            Err(AgentError::AwsUnavailable("apigateway:GetRestApis: 503".into()))
        }
        async fn get_api(&self, _: Generation, _: &str) -> Result<Option<Api>> {
            unreachable!()
        }
        async fn get_stages(&self, _: Generation, _: &str) -> Result<Vec<Stage>> {
            unreachable!()
        }
        async fn list_domain_mappings(&self, _: Generation) -> Result<Vec<DomainMapping>> {
            unreachable!()
        }
    }
    let config = config(&[]);
    let state = Memory::default();
    let plane = Plane::default();
    let task = list_changes(&config, &Broken, &plane, &state);

    let error = task.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap_err();

    assert_eq!(error.error_type(), "AwsUnavailable");
    assert!(state.claims.lock().unwrap().is_empty(), "claims released on failure");
}

#[tokio::test]
async fn a_claim_that_fails_midway_gives_back_the_ones_taken() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(1, &["a", "b"], "x");
    let state = Memory { unclaimable: Some("b"), ..Memory::default() };
    let plane = Plane::default();
    let task = list_changes(&config, &gateway, &plane, &state);

    let error = task.run(assets_input(SyncMode::Auto, &["a", "b"]), NOW).await.unwrap_err();

    assert_eq!(error.error_type(), "Throttled");
    assert!(state.claims.lock().unwrap().is_empty(), "the claim on a was released");
}

#[tokio::test]
async fn discovered_stages_are_reused_until_the_interval_or_a_full_sync() {
    let config = config(&[("DISCOVERY_INTERVAL_SECONDS", "3600")]);
    let (plane, state) = (Plane::default(), Memory::default());
    let stages_of =
        |ready: crate::model::RuntimesReady| ready.runtimes.into_iter().map(|r| r.stage).collect::<Vec<_>>();

    let before = Gateway::with_apis(2, &["prod"], "x");
    let task = ensure_runtime(&config, &before, &plane, &state);
    assert_eq!(stages_of(task.run(scheduled(), NOW).await.unwrap()), vec!["prod"]);

    // A stage appears; a scheduled run within the interval does not list the account again.
    let after = Gateway::with_apis(2, &["prod", "qa"], "x");
    let task = ensure_runtime(&config, &after, &plane, &state);
    assert_eq!(stages_of(task.run(scheduled(), NOW + 60).await.unwrap()), vec!["prod"]);
    let full = ExecutionInput { mode: SyncMode::Full, ..ExecutionInput::default() };
    assert_eq!(stages_of(task.run(started_with(full), NOW + 120).await.unwrap()), vec!["prod", "qa"]);
    assert_eq!(stages_of(task.run(scheduled(), NOW + 3720).await.unwrap()), vec!["prod", "qa"]);
}

#[tokio::test]
async fn metrics_name_their_apis_from_the_catalog_the_assets_branch_keeps_not_from_api_gateway() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(5, &["prod"], "x");
    let state = Memory::default();
    let plane = Plane::default();
    let listing = list_changes(&config, &gateway, &plane, &state);
    listing.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    let calls_of_the_full_sync = gateway.calls.load(Ordering::SeqCst);
    let busy = Traffic::rest(&gateway.apis);
    let task = transform(&busy, &state);

    task.metrics(chunk_of(&[("prod", NOW - 300, NOW)]), NOW, far_deadline()).await.unwrap();

    assert_eq!(gateway.calls.load(Ordering::SeqCst), calls_of_the_full_sync, "no API Gateway call per window");
    let metrics = state.load_report(&report_key("rt_prod", NOW)).await.unwrap();
    let reported: Vec<(String, Option<String>)> =
        metrics.api_transaction_metrics_list.iter().map(|m| (m.api_id.clone(), m.api_version.clone())).collect();
    let expected: Vec<(String, Option<String>)> =
        (0..5).map(|i| (format!("{i:010}_prod"), Some(format!("d{i}")))).collect();
    assert_eq!(reported, expected);
}

/// A metrics chunk of 5-minute windows: (stage, start, end) per runtime `rt_<stage>`.
fn chunk_of(runtimes: &[(&str, i64, i64)]) -> MetricsChunk {
    let runtimes = runtimes
        .iter()
        .map(|(stage, start, end)| RuntimeWindows {
            runtime_id: format!("rt_{stage}"),
            stage: (*stage).into(),
            start: *start,
            end: *end,
            interval: 300,
            reports_stored: false,
        })
        .collect();
    MetricsChunk { target: None, runtimes }
}

/// Transform and publish of one metrics chunk, then the windows the control plane holds.
async fn send_chunk(plane: &Plane, state: &Memory, chunk: &MetricsChunk) -> Result<PublishOutput> {
    seed_catalog(state, &chunk.runtimes);
    let transform = transform(&*NO_TRAFFIC, state);
    let batch = transform.metrics(chunk.clone(), NOW, far_deadline()).await?;
    publish_to(plane, state).run(batch, NOW).await
}

/// An empty API catalog for each runtime's stage, as a first full sync leaves for a stage without
/// APIs: the metrics branch reads only stages with one.
fn seed_catalog(state: &Memory, runtimes: &[RuntimeWindows]) {
    let mut catalogs = state.catalogs.lock().unwrap();
    for runtime in runtimes {
        catalogs.entry(runtime.stage.clone()).or_default();
    }
}

#[tokio::test]
async fn a_window_the_control_plane_accepted_is_never_sent_again() {
    let (plane, state) = (Plane::default(), Memory::default());
    let chunk = chunk_of(&[("dev", NOW - 900, NOW), ("prod", NOW - 900, NOW)]);
    // The second of prod's three windows fails once: prod stops there, dev goes on.
    plane.failing_windows.lock().unwrap().insert(("rt_prod".into(), NOW - 300));

    let failed = send_chunk(&plane, &state, &chunk).await.unwrap_err();

    assert_eq!(failed.error_type(), "ControlPlaneUnavailable", "retried by the workflow");
    let sent = |runtime: &str| -> Vec<i64> {
        plane.metrics.lock().unwrap().iter().filter(|(r, _)| r == runtime).map(|(_, end)| *end).collect()
    };
    assert_eq!(sent("rt_dev"), vec![NOW - 600, NOW - 300, NOW]);
    assert_eq!(sent("rt_prod"), vec![NOW - 600], "no window after the failed one");
    let prod = state.load("prod").await.unwrap();
    assert_eq!(
        (prod.metrics_watermark, prod.metrics_in_flight),
        (Some(NOW - 600), None),
        "the refused one not in doubt"
    );

    // The workflow's retry of the same batch: only what was not accepted yet, in order.
    let retried = send_chunk(&plane, &state, &chunk).await.unwrap();

    assert_eq!((retried.windows_sent, retried.windows_already_sent), (2, 4));
    assert_eq!(sent("rt_dev"), vec![NOW - 600, NOW - 300, NOW], "exactly once");
    assert_eq!(sent("rt_prod"), vec![NOW - 600, NOW - 300, NOW], "exactly once, in order");
}

#[tokio::test]
async fn a_window_whose_answer_was_lost_is_recorded_as_sent_and_never_resent() {
    let (plane, state) = (Plane::default(), Memory::default());
    let chunk = chunk_of(&[("prod", NOW - 900, NOW)]);
    // The control plane stores prod's first window, but the agent never sees its 202.
    plane.lost_answers.lock().unwrap().insert(("rt_prod".into(), NOW - 600));

    let failed = send_chunk(&plane, &state, &chunk).await.unwrap_err();

    assert_eq!(failed.error_type(), "ControlPlaneUnavailable", "the later windows wait for the retry");
    assert!(failed.to_string().contains("recorded as sent and not resent"), "{failed}");
    assert_eq!(state.load("prod").await.unwrap().metrics_watermark, Some(NOW - 600));
    let retried = send_chunk(&plane, &state, &chunk).await.unwrap();
    assert_eq!((retried.windows_sent, retried.windows_already_sent), (2, 1));
    let sent: Vec<i64> = plane.metrics.lock().unwrap().iter().map(|(_, end)| *end).collect();
    assert_eq!(sent, vec![NOW - 600, NOW - 300, NOW], "each window stored once");
}

#[tokio::test]
async fn a_window_whose_task_was_cut_off_while_sending_it_is_in_doubt_and_never_resent() {
    let (plane, state) = (Plane::default(), Memory::default());
    let chunk = chunk_of(&[("prod", NOW - 900, NOW)]);
    // An earlier invocation marked prod's first window in flight, the control plane stored it, and
    // Lambda's timeout stopped the function before it recorded the answer.
    state.set_metrics_in_flight("prod", Some(NOW - 600)).await.unwrap();
    plane.metrics.lock().unwrap().push(("rt_prod".into(), NOW - 600));

    let retried = send_chunk(&plane, &state, &chunk).await.unwrap();

    assert_eq!((retried.windows_sent, retried.windows_already_sent), (2, 1));
    let sent: Vec<i64> = plane.metrics.lock().unwrap().iter().map(|(_, end)| *end).collect();
    assert_eq!(sent, vec![NOW - 600, NOW - 300, NOW], "each window stored once");
    assert_eq!(state.load("prod").await.unwrap().metrics_watermark, Some(NOW));
}

#[tokio::test]
async fn an_in_flight_mark_behind_the_next_window_is_stale_and_ignored() {
    let (plane, state) = (Plane::default(), Memory::default());
    let chunk = chunk_of(&[("prod", NOW - 900, NOW)]);
    // Marked by a window sent long ago: the next window to send is not the one it names.
    state.set_metrics_in_flight("prod", Some(NOW - 1200)).await.unwrap();

    let sent = send_chunk(&plane, &state, &chunk).await.unwrap();

    assert_eq!((sent.windows_sent, sent.windows_already_sent), (3, 0), "nothing taken for in doubt");
}

#[tokio::test]
async fn publish_leaves_the_windows_it_has_no_time_for_to_the_next_invocation() {
    let (plane, state) = (Plane::default(), Memory::default());
    let chunk = chunk_of(&[("dev", NOW - 600, NOW), ("prod", NOW - 600, NOW)]);
    seed_catalog(&state, &chunk.runtimes);
    let batch = transform(&*NO_TRAFFIC, &state).metrics(chunk, NOW, far_deadline()).await.unwrap();
    // 20 s left, and a window may take 31 s: one window goes (an invocation always progresses).
    let short = Publish {
        control_plane: &plane,
        state: &state,
        deadline: Instant::now() + Duration::from_secs(20),
        longest_request: Duration::from_secs(31),
    };

    let first = short.run(batch, NOW).await.unwrap();

    assert_eq!(first.windows_sent, 1, "not an error: what is left comes back as the batch's next");
    let Some(Chunk::Metrics(rest)) = first.next else { panic!("the rest of the chunk") };
    assert_eq!(rest.runtimes.iter().map(|r| r.stage.as_str()).collect::<Vec<_>>(), ["dev", "prod"]);
    assert!(rest.runtimes.iter().all(|r| r.reports_stored), "no CloudWatch read again for them");
    let second = publish_to(&plane, &state).run(Batch::Metrics(rest), NOW).await.unwrap();
    assert_eq!((second.windows_sent, second.windows_already_sent, second.next), (3, 1, None));
    let mut sent = plane.metrics.lock().unwrap().clone();
    sent.sort();
    let expected = [("rt_dev", NOW - 300), ("rt_dev", NOW), ("rt_prod", NOW - 300), ("rt_prod", NOW)];
    assert_eq!(sent, expected.map(|(r, end)| (r.to_owned(), end)), "each window once");
}

#[tokio::test]
async fn the_metrics_commit_names_a_stage_left_short_and_why_after_releasing_its_claims() {
    let state = Memory::default();
    for stage in ["dev", "prod"] {
        state.claim(ClaimOn::Branch { stage, kind: Kind::Metrics }, "run-1", NOW, NOW + 3600).await.unwrap();
        state.advance_metrics_watermark(stage, NOW - 600, NOW).await.unwrap();
    }
    let planned = |position| AckInput {
        target: None,
        kind: Kind::Metrics,
        execution_id: "run-1".into(),
        watermarks: vec![watermark("dev", NOW - 600, None), watermark("prod", position, None)],
        claimed: vec!["dev".into(), "prod".into()],
        held_back: vec![],
        branch_failed: false,
    };

    let short = commit(planned(NOW), &state, NOW).await.unwrap();

    assert_eq!(short.failures.len(), 1);
    assert_eq!(
        (short.failures[0].error.as_str(), short.failures[0].stages.clone()),
        ("WindowsNotSent", vec!["prod".into()])
    );
    assert!(short.failures[0].cause.contains("prod"), "{}", short.failures[0].cause);
    assert_eq!(short.watermarks.iter().map(|w| w.stage.as_str()).collect::<Vec<_>>(), ["dev"], "dev is committed");
    assert_eq!(state.load("prod").await.unwrap().metrics_watermark, Some(NOW - 600), "the commit never moves it");
    assert!(state.claims.lock().unwrap().is_empty(), "released all the same");

    // The chunk's own error, when it was recorded, is what the commit names.
    let unauthorized = crate::model::ChunkFailure {
        target: None,
        kind: Kind::Metrics,
        execution_id: "run-1".into(),
        stages: vec!["prod".into()],
        error: crate::model::CaughtError {
            error: "Unauthorized".into(),
            cause: "POST https://apicp.example.com/api/engine/v2/runtimes/rt/metrics answered 401".into(),
        },
    };
    ack_watermark(AckRequest::ChunkFailed(unauthorized), &state, NOW).await.unwrap();
    let named = commit(planned(NOW), &state, NOW).await.unwrap();
    assert_eq!(named.failures[0].error, "Unauthorized");
    assert!(named.failures[0].cause.contains("answered 401"), "{}", named.failures[0].cause);

    let reached = commit(planned(NOW - 600), &state, NOW).await.unwrap();
    assert!(reached.failures.is_empty());
    assert_eq!(reached.lag_seconds, Some(600));
}

#[tokio::test]
async fn a_catch_up_over_150_runtimes_takes_a_few_map_iterations_and_starts_with_a_backfill() {
    let config = config(&[("METRICS_FETCH_INTERVAL_SECONDS", "300")]);
    let (gateway, plane, state) = (Gateway::default(), Plane::default(), Memory::default());
    let stages: Vec<String> = (0..150).map(|i| format!("s{i:03}")).collect();
    // A day-long outage for all but the first, which has never sent a window; all are synced.
    for stage in &stages[1..] {
        state.advance_metrics_watermark(stage, NOW - 86_400, NOW).await.unwrap();
    }
    for stage in &stages {
        state.advance_assets_watermark(&watermark(stage, NOW - 300, Some(NOW - 300)), &[], NOW).await.unwrap();
    }
    let input = ListChangesInput {
        target: None,
        kind: Kind::Metrics,
        mode: SyncMode::Auto,
        runtimes: stages.iter().map(|s| runtime(s)).collect(),
        execution_id: "run-1".into(),
        pushed: Vec::new(),
    };

    let output = list_changes(&config, &gateway, &plane, &state).run(input, NOW).await.unwrap();

    let chunks: Vec<&MetricsChunk> = output
        .chunks
        .iter()
        .map(|c| match c {
            Chunk::Metrics(chunk) => chunk,
            Chunk::Assets(_) => panic!("metrics chunks only"),
        })
        .collect();
    let first = &chunks[0].runtimes[0];
    let latest_end = (NOW - 180) / 300 * 300;
    assert_eq!((first.start, first.end), (latest_end - 3600, latest_end), "a new stage backfills an hour");
    let behind = &chunks.last().unwrap().runtimes.last().unwrap();
    assert_eq!(behind.windows().len(), 60, "a catch-up is bounded per run");
    assert_eq!(output.summary.windows, 12 + 149 * 60);
    assert!(
        chunks.iter().all(|c| c.runtimes.iter().map(|r| r.windows().len()).sum::<usize>() <= WINDOWS_PER_METRICS_CHUNK)
    );
    assert!(chunks.len() <= 150, "at most one iteration per runtime, not one per window: {}", chunks.len());
    assert!(json_len(&output) < 64 * 1024, "{} bytes", json_len(&output));
}

/// Published upserts of a list-changes output, per stage.
fn upserts_by_stage(output: &ListChangesOutput) -> BTreeMap<String, usize> {
    let mut by_stage = BTreeMap::new();
    for chunk in &output.chunks {
        if let Chunk::Assets(chunk) = chunk {
            *by_stage.entry(chunk.stage.clone()).or_default() += chunk.upserts.len();
        }
    }
    by_stage
}

#[tokio::test]
async fn a_full_sync_reads_the_listing_ensure_runtime_just_made_instead_of_listing_again() {
    let config = config(&[("STAGES", "*")]);
    // 1 KiB descriptions: each stage's listing takes several DynamoDB items.
    let gateway = Gateway::with_apis(600, &["dev", "prod"], &"d".repeat(1024));
    let (plane, state) = (Plane::default(), Memory::default());
    let full = ExecutionInput { mode: SyncMode::Full, ..ExecutionInput::default() };
    ensure_runtime(&config, &gateway, &plane, &state).run(started_with(full), NOW).await.unwrap();
    let discovery = state.discovery.lock().unwrap().clone().unwrap();
    assert!(discovery.listing_parts.values().all(|&parts| parts > 1), "{:?}", discovery.listing_parts);
    assert_eq!(gateway.calls.load(Ordering::SeqCst), 600 + LISTING_OVERHEAD);

    // list-changes starts ten minutes later (a slow registration): still this execution's listing.
    let later = NOW + 600;
    let output = list_changes(&config, &gateway, &plane, &state)
        .run(assets_input(SyncMode::Full, &["dev", "prod"]), later)
        .await
        .unwrap();

    assert_eq!(gateway.calls.load(Ordering::SeqCst), 600 + LISTING_OVERHEAD, "no second listing");
    assert_eq!(upserts_by_stage(&output), BTreeMap::from([("dev".into(), 600), ("prod".into(), 600)]));
    // The watermark stops at the listing: the next window re-reads what changed since.
    assert!(output.watermarks.iter().all(|w| w.position == NOW && w.full_sync_at == Some(later)));
}

#[tokio::test]
async fn a_stored_listing_of_another_execution_or_with_a_missing_part_is_not_trusted() {
    let config = config(&[("STAGES", "*")]);
    let gateway = Gateway::with_apis(300, &["prod"], &"d".repeat(2048));
    let (plane, state) = (Plane::default(), Memory::default());
    let full = || ExecutionInput { mode: SyncMode::Full, ..ExecutionInput::default() };
    let listed = || gateway.calls.load(Ordering::SeqCst);
    let task = list_changes(&config, &gateway, &plane, &state);

    ensure_runtime(&config, &gateway, &plane, &state).run(started_with(full()), NOW).await.unwrap();
    let other = ListChangesInput { execution_id: "another-run".into(), ..assets_input(SyncMode::Full, &["prod"]) };
    let output = task.run(other, NOW + 60).await.unwrap();
    assert_eq!(listed(), 2 * (300 + LISTING_OVERHEAD), "another execution's listing is listed again");
    assert_eq!(upserts_by_stage(&output)["prod"], 300);
    let given_up = AckInput { branch_failed: true, watermarks: vec![], ..ack_of(&output, "another-run") };
    commit(given_up, &state, NOW + 61).await.unwrap();

    ensure_runtime(&config, &gateway, &plane, &state).run(started_with(full()), NOW + 2000).await.unwrap();
    state.snapshots.lock().unwrap().retain(|key, _| !key.ends_with("#prod#1"));
    let output = task.run(assets_input(SyncMode::Full, &["prod"]), NOW + 2010).await.unwrap();
    assert_eq!(listed(), 4 * (300 + LISTING_OVERHEAD), "a listing with a missing part is listed again");
    assert_eq!(upserts_by_stage(&output)["prod"], 300, "never a partial listing");
}

#[tokio::test]
async fn a_discovery_stores_the_listing_only_when_a_full_sync_follows() {
    let config = config(&[("STAGES", "*"), ("DISCOVERY_INTERVAL_SECONDS", "60")]);
    let gateway = Gateway::with_apis(3, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    let parts = || state.discovery.lock().unwrap().clone().unwrap().listing_parts;
    let task = ensure_runtime(&config, &gateway, &plane, &state);

    // First run: nothing synced yet, so the assets branch will fully sync.
    task.run(scheduled(), NOW).await.unwrap();
    assert_eq!(parts(), BTreeMap::from([("prod".into(), 1)]));
    state.advance_assets_watermark(&watermark("prod", NOW - 300, Some(NOW)), &[], NOW).await.unwrap();

    // Rediscovery on schedule while the stage is in sync: only the stage names are kept.
    task.run(scheduled(), NOW + 120).await.unwrap();
    assert!(parts().is_empty());
}

/// An account with every kind of API: a REST API, an HTTP API deployed to `$default` and
/// `prod`, a WebSocket API, an HTTP API whose `prod` stage was never deployed, and two custom
/// domain names.
fn mixed_account() -> Gateway {
    let api = |id: &str, kind: ApiKind| Api {
        id: id.into(),
        kind,
        name: format!("{id}-name"),
        description: None,
        tags: BTreeMap::from([("kind".into(), kind.as_str().into())]),
        endpoint_types: vec!["REGIONAL".into()],
        execute_api_disabled: false,
        policy_statements: None,
    };
    let stage = |name: &str, deployment: Option<&str>| Stage {
        name: name.into(),
        deployment_id: deployment.map(str::to_owned),
        tags: BTreeMap::new(),
    };
    let route = |domain: &str, path: &str, api: &str| DomainMapping {
        route: crate::aws::apigateway::DomainRoute { domain_name: domain.into(), base_path: path.into() },
        api_id: api.into(),
        stage: "prod".into(),
    };
    Gateway {
        apis: vec![
            api("r1", ApiKind::Rest),
            api("h1", ApiKind::Http),
            api("w1", ApiKind::WebSocket),
            api("h2", ApiKind::Http),
        ],
        stages: HashMap::from([
            ("r1".into(), vec![stage("prod", Some("d-r1"))]),
            ("h1".into(), vec![stage("$default", Some("d-h1a")), stage("prod", Some("d-h1b"))]),
            ("w1".into(), vec![stage("prod", Some("d-w1"))]),
            ("h2".into(), vec![stage("prod", None)]),
        ]),
        mappings: vec![
            (Generation::V1, route("api.example.com", "pets", "r1")),
            (Generation::V2, route("ws.example.com", "", "w1")),
        ],
        calls: AtomicUsize::new(0),
    }
}

/// Transforms every assets chunk of `output` and returns the documents, by id.
async fn documents_of(output: &ListChangesOutput, state: &Memory) -> BTreeMap<String, ApiDocument> {
    let transform = transform(&*NO_TRAFFIC, state);
    let mut documents = BTreeMap::new();
    for chunk in &output.chunks {
        let Chunk::Assets(chunk) = chunk else { continue };
        let Batch::Assets { upserts, .. } = transform.assets(chunk.clone()).await.unwrap() else { unreachable!() };
        documents.extend(upserts.into_iter().map(|d| (d.id.clone(), d)));
    }
    documents
}

#[tokio::test]
async fn every_kind_of_api_deployed_to_a_stage_is_published_with_where_it_is_served() {
    let config = config(&[]);
    let gateway = mixed_account();
    let (plane, state) = (Plane::default(), Memory::default());

    let task = list_changes(&config, &gateway, &plane, &state);
    let output = task.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    let documents = documents_of(&output, &state).await;

    // h2's prod stage has no deployment: it serves nothing.
    assert_eq!(documents.keys().collect::<Vec<_>>(), vec!["h1_prod", "r1_prod", "w1_prod"]);
    let attribute = |id: &str, name: &str| documents[id].attributes.get(name).cloned();
    assert_eq!(documents["h1_prod"].api_type, crate::control_plane::types::ApiType::Rest);
    assert_eq!(documents["w1_prod"].api_type, crate::control_plane::types::ApiType::Websocket);
    assert_eq!(documents["w1_prod"].version.as_deref(), Some("d-w1"));
    assert_eq!(attribute("w1_prod", "invokeUrl").unwrap(), "wss://w1.execute-api.eu-west-1.amazonaws.com/prod");
    assert_eq!(attribute("w1_prod", "customDomainUrls").unwrap(), r#"["wss://ws.example.com"]"#);
    assert_eq!(attribute("r1_prod", "customDomainUrls").unwrap(), r#"["https://api.example.com/pets"]"#);
    assert_eq!(attribute("h1_prod", "customDomainUrls"), None);
    // Two listings, one GetStages per API, and the domain routes of both management APIs.
    assert_eq!(gateway.calls.load(Ordering::SeqCst), 2 + 4 + 2);

    // `$default` is a stage like any other, served at the root.
    let default = task.run(assets_input(SyncMode::Full, &["$default"]), NOW).await.unwrap();
    let documents = documents_of(&default, &state).await;
    assert_eq!(documents["h1_$default"].attributes["invokeUrl"], "https://h1.execute-api.eu-west-1.amazonaws.com");
}

#[tokio::test]
async fn only_the_configured_api_types_are_read_and_published() {
    let config = config(&[("API_TYPES", "WEBSOCKET")]);
    let gateway = mixed_account();
    let plane = Plane {
        // An HTTP API published before the types were narrowed: a full sync removes it.
        held: BTreeMap::from([("rt_prod".into(), vec!["h1_prod".into(), "w1_prod".into()])]),
        ..Plane::default()
    };
    let state = Memory::default();

    let task = list_changes(&config, &gateway, &plane, &state);
    let output = task.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();

    let Chunk::Assets(chunk) = &output.chunks[0] else { panic!("assets chunk expected") };
    assert_eq!((chunk.upserts.clone(), chunk.deletes.clone()), (vec!["w1".into()], vec!["h1_prod".into()]));
    // No v1 call at all: one v2 listing, GetStages of the WebSocket API only, its domain routes.
    assert_eq!(gateway.calls.load(Ordering::SeqCst), 1 + 1 + 1);
}

#[tokio::test]
async fn incremental_runs_follow_http_websocket_and_custom_domain_changes() {
    let config = config(&[]);
    let mut gateway = mixed_account();
    let (plane, state) = (Plane::default(), Memory::default());
    let full = list_changes(&config, &gateway, &plane, &state);
    let synced = full.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    assert!(publish_all(&synced, &plane, &state).await.is_empty());
    commit(ack_of(&synced, EXECUTION), &state, NOW).await.unwrap();

    // Between runs: w1's stage is deleted, r1's domain route removed, h3 created and deployed.
    gateway.stages.insert("w1".into(), vec![]);
    gateway.mappings.retain(|(generation, _)| *generation != Generation::V1);
    gateway.apis.push(Api { id: "h3".into(), kind: ApiKind::Http, ..gateway.apis[1].clone() });
    gateway.stages.insert(
        "h3".into(),
        vec![Stage { name: "prod".into(), deployment_id: Some("d-h3".into()), tags: BTreeMap::new() }],
    );
    let event = |name: &str, request, response| write_event(&format!("{name}-1"), NOW, name, request, response);
    let feed = Events::new(vec![
        event("DeleteStage", serde_json::json!({"apiId": "w1", "stageName": "prod"}), serde_json::Value::Null),
        event(
            "DeleteBasePathMapping",
            serde_json::json!({"domainName": "api.example.com", "basePath": "pets"}),
            serde_json::Value::Null,
        ),
        event("CreateApi", serde_json::json!({"createApiInput": {"name": "h3"}}), serde_json::json!({"apiId": "h3"})),
    ]);
    let task = list_changes_reading(&feed, &config, &gateway, &plane, &state);

    let mut input = assets_input(SyncMode::Auto, &["prod"]);
    input.execution_id = "run-2".into();
    let output = task.run(input, NOW + 600).await.unwrap();

    assert_eq!(output.summary.incremental_runtimes, 1);
    let Chunk::Assets(chunk) = &output.chunks[0] else { panic!("assets chunk expected") };
    // r1 is found through the catalog: the removed mapping's record names no API.
    assert_eq!(
        (chunk.upserts.clone(), chunk.deletes.clone()),
        (vec!["r1".into(), "h3".into()], vec!["w1_prod".into()])
    );
    let documents = documents_of(&output, &state).await;
    assert_eq!(documents["r1_prod"].attributes.get("customDomainUrls"), None, "the route is gone");
    assert_eq!(documents["h3_prod"].version.as_deref(), Some("d-h3"));
    let catalog = state.load_catalog("prod").await.unwrap().unwrap();
    let ids: Vec<&str> = catalog.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, vec!["h1", "h3", "r1"], "the catalog follows the changes");
}

#[tokio::test]
async fn metrics_of_http_and_websocket_apis_are_named_by_api_id() {
    let config = config(&[]);
    let gateway = mixed_account();
    let (plane, state) = (Plane::default(), Memory::default());
    list_changes(&config, &gateway, &plane, &state).run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    let busy = Traffic::busy(vec![
        MetricSubject::RestApi { name: "r1-name".into() },
        MetricSubject::HttpApi { id: "h1".into() },
        MetricSubject::WebSocketApi { id: "w1".into() },
        // Traffic of an API the stage does not deploy (a deleted one) is not reported.
        MetricSubject::HttpApi { id: "gone".into() },
    ]);
    let task = Transform { region: "eu-west-1", api_types: &config.api_types, metrics: &busy, state: &state };

    task.metrics(chunk_of(&[("prod", NOW - 300, NOW)]), NOW, far_deadline()).await.unwrap();

    let report = state.load_report(&report_key("rt_prod", NOW)).await.unwrap();
    let reported: BTreeSet<(&str, &str, Option<&str>)> = report
        .api_transaction_metrics_list
        .iter()
        .map(|m| (m.api_id.as_str(), m.api_name.as_str(), m.api_version.as_deref()))
        .collect();
    assert_eq!(
        reported,
        BTreeSet::from([
            ("h1_prod", "h1-name", Some("d-h1b")),
            ("r1_prod", "r1-name", Some("d-r1")),
            ("w1_prod", "w1-name", Some("d-w1")),
        ])
    );
}

#[tokio::test]
async fn a_window_with_an_unreadable_cloudtrail_record_is_a_full_sync_of_the_stage() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    state.advance_assets_watermark(&watermark("prod", NOW - 300, Some(NOW - 600)), &[], NOW - 300).await.unwrap();
    let truncated = ApiEvent {
        unreadable: true,
        ..write_event("e1", NOW - 100, "UpdateStage", serde_json::Value::Null, serde_json::Value::Null)
    };
    let feed = Events::new(vec![truncated]);
    let task = list_changes_reading(&feed, &config, &gateway, &plane, &state);

    let output = task.run(assets_input(SyncMode::Auto, &["prod"]), NOW + 300).await.unwrap();

    assert_eq!((output.summary.full_runtimes, output.summary.incremental_runtimes), (1, 0));
    let Chunk::Assets(chunk) = &output.chunks[0] else { panic!("assets chunk expected") };
    assert_eq!(chunk.upserts.len(), 3, "every deployed API, whatever the record changed");
    assert!(output.watermarks[0].position <= NOW, "not past the window the record was in");
}

/// The APIs (upserts and deletes) an assets listing will publish, in order.
fn assets_touched(output: &ListChangesOutput) -> Vec<String> {
    let chunks = output.chunks.iter().filter_map(|chunk| match chunk {
        Chunk::Assets(chunk) => Some(chunk.upserts.iter().chain(&chunk.deletes).cloned()),
        Chunk::Metrics(_) => None,
    });
    chunks.flatten().collect()
}

#[tokio::test]
async fn a_change_is_applied_once_and_the_overlap_applies_only_events_delivered_late() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    state.advance_assets_watermark(&watermark("prod", NOW - 300, Some(NOW - 600)), &[], NOW - 300).await.unwrap();
    let redeployed = |id: &str, time, api: &str| {
        write_event(id, time, "CreateDeployment", serde_json::json!({"restApiId": api}), serde_json::Value::Null)
    };
    let feed = Events::new(vec![redeployed("e1", NOW - 200, "0000000001")]);
    let task = list_changes_reading(&feed, &config, &gateway, &plane, &state);
    // One execution: its listing, the API Gateway calls it made, and its ack.
    let execution = |n: usize, now: i64, published: bool| {
        let mut input = assets_input(SyncMode::Auto, &["prod"]);
        input.execution_id = format!("run-{n}");
        let (task, state, gateway, plane) = (&task, &state, &gateway, &plane);
        async move {
            let output = task.run(input.clone(), now).await.unwrap();
            let calls = gateway.calls.swap(0, Ordering::SeqCst);
            let mut ack = ack_of(&output, &input.execution_id);
            if published {
                assert!(publish_all(&output, plane, state).await.is_empty());
            } else {
                (ack.watermarks, ack.branch_failed) = (vec![], true);
            }
            commit(ack, state, now).await.unwrap();
            (assets_touched(&output), calls, output)
        }
    };

    let (touched, calls, _) = execution(1, NOW + 300, false).await;
    // GetStages, GetRestApi and the custom domain routes.
    assert_eq!((touched, calls), (vec!["0000000001".to_owned()], 3));
    assert_eq!(state.load("prod").await.unwrap().assets_applied_events, None, "nothing committed");
    // Its publish failed: the next execution applies the change again, and commits it.
    let (touched, _, _) = execution(2, NOW + 300, true).await;
    assert_eq!(touched, ["0000000001"]);
    assert!(state.load("prod").await.unwrap().assets_applied_events.is_some());

    // The next window re-reads e1 (inside its overlap) and skips it; e2, made before the last
    // window ended but delivered since, is applied.
    feed.events.lock().unwrap().push(redeployed("e2", NOW - 100, "0000000002"));
    let (touched, calls, _) = execution(3, NOW + 360, true).await;
    assert_eq!((touched, calls), (vec!["0000000002".to_owned()], 3));

    let (touched, calls, _) = execution(4, NOW + 420, true).await;
    assert_eq!((touched, calls), (vec![], 0), "both were applied");
    assert_eq!(feed.lookups.load(Ordering::SeqCst), 4, "every run still reads its window");

    // Once the window has moved past them, nothing is left to remember.
    let (touched, _, output) = execution(5, NOW + 1_500, true).await;
    assert!(touched.is_empty());
    assert_eq!(output.watermarks[0].applied_events, None);
    assert_eq!(state.load("prod").await.unwrap().assets_applied_events, None, "forgotten with the new watermark");
}
