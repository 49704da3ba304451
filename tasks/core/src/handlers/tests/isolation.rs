//! One item, one stage, one chunk: a failure of one never stops the others, never loses data,
//! and what failed is retried and named.

use super::*;
use crate::aws::state::{Registry, Runs};
use crate::model::{CaughtError, ChunkFailure, Operation, run_key};

/// One assets branch as the workflow runs it: list-changes, each chunk transformed and
/// published (a chunk that fails records its error, as the Map's `Catch` does), the commit.
async fn assets_branch(
    task: &ListChanges<'_, impl ApiGateway, Plane, Memory, impl ChangeFeed, StillRunning>,
    input: ListChangesInput,
    plane: &Plane,
    state: &Memory,
    now: i64,
) -> (ListChangesOutput, AckOutput) {
    let execution_id = input.execution_id.clone();
    let output = task.run(input, now).await.unwrap();
    let transform = transform(&*NO_TRAFFIC, state);
    let publish = publish_to(plane, state);
    for chunk in &output.chunks {
        let Chunk::Assets(first) = chunk else { unreachable!() };
        let mut next = Some(first.clone());
        while let Some(chunk) = next.take() {
            match async { publish.run(transform.assets(chunk).await?, now).await }.await {
                Ok(published) => {
                    next = published.next.map(|c| match c {
                        Chunk::Assets(chunk) => chunk,
                        Chunk::Metrics(_) => unreachable!(),
                    })
                }
                Err(error) => {
                    let failure = ChunkFailure {
                        target: None,
                        kind: Kind::Assets,
                        execution_id: execution_id.clone(),
                        stages: vec![first.stage.clone()],
                        error: CaughtError { error: error.error_type().into(), cause: error.to_string() },
                    };
                    ack_watermark(AckRequest::ChunkFailed(failure), state, now).await.unwrap();
                }
            }
        }
    }
    let acked = commit(ack_of(&output, &execution_id), state, now).await.unwrap();
    (output, acked)
}

fn run_input(n: usize, mode: SyncMode, stages: &[&str]) -> ListChangesInput {
    ListChangesInput { execution_id: format!("run-{n}"), ..assets_input(mode, stages) }
}

#[tokio::test]
async fn an_api_the_control_plane_refuses_is_left_out_named_kept_and_retried_until_it_is_published() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod", "dev"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    plane.refusing.lock().unwrap().insert("0000000001_prod".into());
    let task = list_changes(&config, &gateway, &plane, &state);

    let (_, acked) = assets_branch(&task, run_input(1, SyncMode::Auto, &["dev", "prod"]), &plane, &state, NOW).await;

    assert!(acked.failures.is_empty(), "a refused API fails nothing: {:?}", acked.failures);
    assert_eq!(plane.holds("rt_prod"), BTreeSet::from(["0000000000_prod".into(), "0000000002_prod".into()]));
    assert_eq!(plane.holds("rt_dev").len(), 3, "the other stage is whole");
    assert!(acked.watermarks.iter().all(|w| w.advanced), "both watermarks move");
    assert_eq!(acked.refused_count, 1);
    let named = &acked.refused[0];
    assert_eq!((named.stage.as_str(), named.refused.id.as_str()), ("prod", "0000000001_prod"));
    assert_eq!((named.refused.operation, named.refused.error.as_str()), (Operation::Upsert, "InvalidInput"));
    assert!(named.refused.message.contains("Maximum character allowed is 1024"), "{}", named.refused.message);
    assert_eq!(state.load("prod").await.unwrap().assets_refused, vec![named.refused.clone()]);

    // The next (incremental) run tries it again without any CloudTrail event: still refused, kept.
    gateway.calls.store(0, Ordering::SeqCst);
    let (_, acked) =
        assets_branch(&task, run_input(2, SyncMode::Auto, &["dev", "prod"]), &plane, &state, NOW + 60).await;
    assert_eq!((acked.refused_count, gateway.calls.load(Ordering::SeqCst)), (1, 3), "GetStages, GetRestApi, domains");

    // Fixed in the control plane: the next run publishes it and forgets the refusal.
    plane.refusing.lock().unwrap().clear();
    let (_, acked) =
        assets_branch(&task, run_input(3, SyncMode::Auto, &["dev", "prod"]), &plane, &state, NOW + 120).await;
    assert_eq!(acked.refused_count, 0);
    assert!(plane.holds("rt_prod").contains("0000000001_prod"));
    assert!(state.load("prod").await.unwrap().assets_refused.is_empty());
}

#[tokio::test]
async fn a_refused_delete_is_retried_by_deleting_again() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(1, &["prod"], "x");
    let plane = Plane { held: BTreeMap::from([("rt_prod".into(), vec!["retired_prod".into()])]), ..Plane::default() };
    plane.refusing.lock().unwrap().insert("retired_prod".into());
    let state = Memory::default();
    let task = list_changes(&config, &gateway, &plane, &state);

    let (_, acked) = assets_branch(&task, run_input(1, SyncMode::Auto, &["prod"]), &plane, &state, NOW).await;
    assert_eq!(acked.refused[0].refused.operation, Operation::Delete);

    plane.refusing.lock().unwrap().clear();
    let (listed, acked) = assets_branch(&task, run_input(2, SyncMode::Auto, &["prod"]), &plane, &state, NOW + 60).await;
    assert_eq!(assets_touched(&listed), ["retired_prod"], "deleted again, with no API Gateway call for it");
    assert_eq!(acked.refused_count, 0);
}

#[tokio::test]
async fn a_chunk_that_keeps_failing_holds_back_its_stage_only_and_names_the_error() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod", "dev"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    plane.unavailable.lock().unwrap().insert("rt_prod".into());
    let task = list_changes(&config, &gateway, &plane, &state);

    let (_, acked) = assets_branch(&task, run_input(1, SyncMode::Auto, &["dev", "prod"]), &plane, &state, NOW).await;

    assert_eq!(acked.failures.len(), 1);
    let failure = &acked.failures[0];
    assert_eq!((failure.error.as_str(), failure.stages.clone()), ("ControlPlaneUnavailable", vec!["prod".into()]));
    assert!(failure.cause.contains("answered 503"), "{}", failure.cause);
    assert_eq!(acked.watermarks.iter().map(|w| w.stage.as_str()).collect::<Vec<_>>(), ["dev"]);
    assert!(state.load("dev").await.unwrap().assets_watermark.is_some(), "dev is committed");
    let prod = state.load("prod").await.unwrap();
    assert_eq!((prod.assets_watermark, prod.assets_outcome.last_succeeded()), (None, Some(false)));
    assert!(state.claims.lock().unwrap().is_empty());

    // Once the control plane is back, the next run publishes prod's work.
    plane.unavailable.lock().unwrap().clear();
    let (_, acked) =
        assets_branch(&task, run_input(2, SyncMode::Auto, &["dev", "prod"]), &plane, &state, NOW + 60).await;
    assert!(acked.failures.is_empty());
    assert_eq!(plane.holds("rt_prod").len(), 3);
}

#[tokio::test]
async fn a_chunk_recorded_as_failed_nowhere_still_keeps_its_stage_watermark() {
    // A chunk whose failure record was lost (the Map failed before it landed) is not published:
    // only chunks recorded as published move a watermark.
    let config = config(&[]);
    let gateway = Gateway::with_apis(2, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    let output = list_changes(&config, &gateway, &plane, &state)
        .run(run_input(1, SyncMode::Auto, &["prod"]), NOW)
        .await
        .unwrap();

    let acked = commit(ack_of(&output, "run-1"), &state, NOW).await.unwrap();

    assert_eq!(acked.failures[0].error, "ChunkNotPublished");
    assert_eq!(state.load("prod").await.unwrap().assets_watermark, None);
}

#[tokio::test]
async fn a_change_deletes_an_api_only_where_it_was_published() {
    let config = config(&[]);
    let stages: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let stage_names: Vec<&str> = stages.iter().map(String::as_str).collect();
    // One API on every stage, and the API that goes away, on s00 only.
    let mut gateway = Gateway::with_apis(1, &stage_names, "x");
    gateway.apis.push(Api { id: "gone".into(), name: "gone".into(), ..gateway.apis[0].clone() });
    gateway.stages.insert(
        "gone".into(),
        vec![Stage { name: "s00".into(), deployment_id: Some("d".into()), tags: BTreeMap::new() }],
    );
    let (plane, state) = (Plane::default(), Memory::default());
    let full = list_changes(&config, &gateway, &plane, &state);
    let (_, acked) = assets_branch(&full, run_input(1, SyncMode::Auto, &stage_names), &plane, &state, NOW - 600).await;
    assert!(acked.failures.is_empty());

    gateway.apis.retain(|api| api.id != "gone");
    let feed = Events::new(vec![write_event(
        "e1",
        NOW - 400,
        "DeleteRestApi",
        serde_json::json!({"restApiId": "gone"}),
        serde_json::Value::Null,
    )]);
    let task = list_changes_reading(&feed, &config, &gateway, &plane, &state);
    let (listed, acked) = assets_branch(&task, run_input(2, SyncMode::Auto, &stage_names), &plane, &state, NOW).await;

    assert!(acked.failures.is_empty());
    assert_eq!(assets_touched(&listed), ["gone_s00"], "one DELETE, not one per stage of the account");
    assert!(!plane.holds("rt_s00").contains("gone_s00"));
}

#[tokio::test]
async fn a_record_that_names_no_api_makes_the_window_a_full_sync_of_the_stage() {
    let config = config(&[]);
    let gateway = Gateway::with_apis(3, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    state.advance_assets_watermark(&watermark("prod", NOW - 300, Some(NOW - 600)), &[], NOW - 300).await.unwrap();
    // CloudTrail wrote the creation without the response that names the new API.
    let feed = Events::new(vec![
        write_event("e1", NOW - 100, "CreateRestApi", serde_json::json!({"name": "new"}), serde_json::Value::Null),
        write_event(
            "e2",
            NOW - 90,
            "CreateUsagePlan",
            serde_json::json!({"name": "gold"}),
            serde_json::json!({"id": "u1"}),
        ),
    ]);
    let task = list_changes_reading(&feed, &config, &gateway, &plane, &state);

    let output = task.run(assets_input(SyncMode::Auto, &["prod"]), NOW + 300).await.unwrap();

    assert_eq!((output.summary.full_runtimes, output.summary.incremental_runtimes), (1, 0));
    assert_eq!(upserts_by_stage(&output)["prod"], 3, "every deployed API, whatever the record created");
}

#[tokio::test]
async fn a_full_sync_never_applies_a_listing_older_than_the_changes_applied_since() {
    let config = config(&[("STAGES", "*")]);
    let mut gateway = Gateway::with_apis(2, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    // ensure-runtime lists the account for a full sync, and stores the listing.
    let full = ExecutionInput { mode: SyncMode::Full, ..ExecutionInput::default() };
    ensure_runtime(&config, &gateway, &plane, &state).run(started_with(full), NOW).await.unwrap();
    // Meanwhile an overlapping execution applied a change read at NOW + 100: an API created.
    gateway.apis.push(Api { id: "created".into(), name: "created".into(), ..gateway.apis[0].clone() });
    gateway.stages.insert(
        "created".into(),
        vec![Stage { name: "prod".into(), deployment_id: Some("d".into()), tags: BTreeMap::new() }],
    );
    let applied = WatermarkUpdate { read_at: Some(NOW + 100), ..watermark("prod", NOW - 200, Some(NOW - 3600)) };
    state.advance_assets_watermark(&applied, &[], NOW + 100).await.unwrap();
    gateway.calls.store(0, Ordering::SeqCst);

    let task = list_changes(&config, &gateway, &plane, &state);
    let output = task.run(assets_input(SyncMode::Full, &["prod"]), NOW + 200).await.unwrap();

    assert_eq!(upserts_by_stage(&output)["prod"], 3, "the API created since is kept, not deleted");
    assert!(gateway.calls.load(Ordering::SeqCst) > 0, "the stored listing predates the change: listed again");
    assert!(output.watermarks[0].position > NOW - 200, "the commit moves the watermark forward");
}

#[tokio::test]
async fn while_another_execution_lists_the_account_a_first_run_leaves_it_be_and_a_full_sync_waits() {
    let config = config(&[("STAGES", "*")]);
    let gateway = Gateway::with_apis(5, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    state.claim(ClaimOn::Listing, "other-run", NOW, NOW + 900).await.unwrap();

    let ready = ensure_runtime(&config, &gateway, &plane, &state).run(scheduled(), NOW).await.unwrap();

    assert_eq!(ready.discovery_in_progress.as_deref(), Some("other-run"));
    assert!(ready.runtimes.is_empty());
    assert_eq!(gateway.calls.load(Ordering::SeqCst), 0, "the account is listed by one execution at a time");

    // A full sync that has no usable stored listing waits for the next run rather than list too.
    let named = config_with_stages("prod");
    let task = list_changes(&named, &gateway, &plane, &state);
    let output = task.run(assets_input(SyncMode::Full, &["prod"]), NOW).await.unwrap();
    assert_eq!((output.skipped.clone(), output.watermarks.len()), (vec!["prod".to_owned()], 0));
    assert_eq!(gateway.calls.load(Ordering::SeqCst), 0);

    // Once it is released, the listing is this execution's.
    state.release(ClaimOn::Listing, "other-run").await.unwrap();
    let output = task.run(assets_input(SyncMode::Full, &["prod"]), NOW + 60).await.unwrap();
    assert_eq!(upserts_by_stage(&output)["prod"], 5);
    assert!(state.claims.lock().unwrap().keys().all(|k| k != "#listing"), "released after the listing");
}

fn config_with_stages(stages: &'static str) -> Config {
    config(&[("STAGES", stages)])
}

#[tokio::test]
async fn runtimes_of_stages_no_longer_federated_are_deleted_after_their_grace_period() {
    let gateway = Gateway::default();
    let (plane, state) = (Plane::default(), Memory::default());
    let both = config(&[("STAGES", "prod,dev"), ("ORPHAN_GRACE_SECONDS", "3600")]);
    ensure_runtime(&both, &gateway, &plane, &state).run(scheduled(), NOW).await.unwrap();
    const DEV: &str = "111122223333_eu-west-1_dev";

    // dev is removed from STAGES: orphaned, not deleted yet.
    let prod_only = config(&[("STAGES", "prod"), ("ORPHAN_GRACE_SECONDS", "3600")]);
    let task = ensure_runtime(&prod_only, &gateway, &plane, &state);
    let ready = task.run(scheduled(), NOW + 60).await.unwrap();
    assert_eq!(ready.orphaned.len(), 1);
    assert_eq!(
        (ready.orphaned[0].runtime_id.as_str(), ready.orphaned[0].since, ready.orphaned[0].deleted),
        (DEV, NOW + 60, false)
    );
    assert!(plane.deleted_runtimes.lock().unwrap().is_empty());
    // An execution run for some stages only says nothing of the others.
    let one_stage =
        ExecutionInput { mode: SyncMode::Auto, stages: Some(vec!["prod".into()]), ..ExecutionInput::default() };
    assert!(task.run(started_with(one_stage), NOW + 120).await.unwrap().orphaned.is_empty());

    let ready = task.run(scheduled(), NOW + 60 + 3600).await.unwrap();
    assert!(ready.orphaned[0].deleted);
    assert_eq!(*plane.deleted_runtimes.lock().unwrap(), [DEV], "with its APIs");
    assert!(task.run(scheduled(), NOW + 7300).await.unwrap().orphaned.is_empty(), "forgotten once deleted");

    // A new RUNTIME_ID_TEMPLATE registers prod again: the runtime of the old id is orphaned.
    let renamed =
        config(&[("STAGES", "prod"), ("RUNTIME_ID_TEMPLATE", "{stage}-{account}"), ("ORPHAN_GRACE_SECONDS", "0")]);
    let ready = ensure_runtime(&renamed, &gateway, &plane, &state).run(scheduled(), NOW + 7400).await.unwrap();
    assert_eq!(ready.runtimes[0].runtime_id, "prod-111122223333");
    assert_eq!(
        ready.orphaned.iter().map(|o| (o.runtime_id.as_str(), o.deleted)).collect::<Vec<_>>(),
        [("111122223333_eu-west-1_prod", true)]
    );
}

#[tokio::test]
async fn an_installation_from_before_the_registry_finds_its_runtimes_in_the_stage_items() {
    let gateway = Gateway::default();
    let (plane, state) = (Plane::default(), Memory::default());
    // Registered by an earlier version: stage items, no registry.
    for stage in ["prod", "old"] {
        state.record_registration(stage, &format!("id-{stage}"), &format!("id-{stage}"), NOW - 86_400).await.unwrap();
    }
    assert!(state.load_registry().await.unwrap().is_none());

    let config = config(&[("STAGES", "prod"), ("RUNTIME_ID_TEMPLATE", "id-{stage}")]);
    plane.runtimes.lock().unwrap().extend(["id-prod".to_owned(), "id-old".to_owned()]);
    let ready = ensure_runtime(&config, &gateway, &plane, &state).run(scheduled(), NOW).await.unwrap();

    assert_eq!(ready.orphaned.iter().map(|o| o.runtime_id.as_str()).collect::<Vec<_>>(), ["id-old"]);
    assert_eq!(plane.registrations.lock().unwrap().len(), 0, "prod keeps its runtime");
    assert_eq!(state.load_registry().await.unwrap().unwrap().len(), 2);
}

#[tokio::test]
async fn the_lag_is_that_of_the_worst_stage() {
    let state = Memory::default();
    state.advance_assets_watermark(&watermark("stuck", NOW - 3600, Some(NOW - 3600)), &[], NOW).await.unwrap();
    let input = AckInput {
        target: None,
        kind: Kind::Assets,
        execution_id: "run-1".into(),
        watermarks: vec![watermark("fine", NOW - 300, None)],
        claimed: vec!["fine".into(), "stuck".into()],
        held_back: vec![crate::model::StageFailure {
            stage: "stuck".into(),
            error: "UnsafeDeletion".into(),
            cause: "x".into(),
        }],
        branch_failed: false,
    };

    let acked = commit(input, &state, NOW).await.unwrap();

    assert_eq!(acked.lag_seconds, Some(3600), "one stuck stage is what the alarm sees");
}

/// CloudWatch knows these APIs of the stage `prod`: `listed` by ListMetrics, `busy` with traffic.
fn catalog_of(state: &Memory, ids: &[&str]) {
    let entries = ids
        .iter()
        .map(|id| crate::aws::state::CatalogEntry {
            id: (*id).into(),
            kind: ApiKind::Http,
            name: format!("{id}-name"),
            deployment: Some("d1".into()),
            domains: vec![],
        })
        .collect();
    state.catalogs.lock().unwrap().insert("prod".into(), entries);
}

fn http(id: &str) -> MetricSubject {
    MetricSubject::HttpApi { id: id.into() }
}

#[tokio::test]
async fn a_new_api_that_list_metrics_does_not_list_yet_is_reported_in_its_window() {
    let state = Memory::default();
    catalog_of(&state, &["listed", "new", "quiet"]);
    // `new` had its first requests minutes ago: ListMetrics does not list it yet.
    let cloudwatch =
        Traffic { busy: vec![http("listed"), http("new")], listed: Some(vec![http("listed")]), ..Traffic::default() };

    transform(&cloudwatch, &state).metrics(chunk_of(&[("prod", NOW - 300, NOW)]), NOW, far_deadline()).await.unwrap();

    let report = state.load_report(&report_key("rt_prod", NOW)).await.unwrap();
    let reported: Vec<(&str, f64)> = report
        .api_transaction_metrics_list
        .iter()
        .map(|m| (m.api_id.as_str(), m.api_metrics.transaction_count))
        .collect();
    assert_eq!(reported, [("listed_prod", 5.0), ("new_prod", 5.0)]);
    assert_eq!(report.runtime_transaction_metrics.api_metrics.transaction_count, 10.0);
    // The cost: one query per API ListMetrics cannot vouch for, five per API read.
    assert_eq!((cloudwatch.probed.load(Ordering::SeqCst), cloudwatch.read.load(Ordering::SeqCst)), (2, 10));
}

#[tokio::test]
async fn metrics_wait_for_the_stage_catalog_and_never_outrun_it() {
    let config = config(&[("METRICS_FETCH_INTERVAL_SECONDS", "300")]);
    let (gateway, plane, state) = (Gateway::default(), Plane::default(), Memory::default());
    let input = ListChangesInput {
        target: None,
        kind: Kind::Metrics,
        mode: SyncMode::Auto,
        runtimes: vec![runtime("new"), runtime("synced")],
        execution_id: "run-1".into(),
        pushed: Vec::new(),
    };
    // The catalog names every API deployed up to the assets watermark, an hour and a half ago.
    let behind = (NOW - 5400) / 300 * 300;
    state.advance_assets_watermark(&watermark("synced", behind + 1, Some(NOW - 5400)), &[], NOW).await.unwrap();
    state.advance_metrics_watermark("synced", NOW - 7200, NOW).await.unwrap();

    let output = list_changes(&config, &gateway, &plane, &state).run(input, NOW).await.unwrap();

    let due: Vec<(String, i64)> = output.watermarks.iter().map(|w| (w.stage.clone(), w.position)).collect();
    assert_eq!(due, [("synced".to_owned(), behind)], "the new stage waits for its first sync; synced stops at it");
}

#[tokio::test]
async fn a_read_that_outlives_its_invocation_goes_on_where_it_stopped() {
    let state = Memory::default();
    let ids: Vec<String> = (0..250).map(|i| format!("h{i:03}")).collect();
    catalog_of(&state, &ids.iter().map(String::as_str).collect::<Vec<_>>());
    let cloudwatch = Traffic::busy(ids.iter().map(|id| http(id)).collect());
    let task = transform(&cloudwatch, &state);
    let mut chunk = chunk_of(&[("prod", NOW - 1200, NOW)]);

    // Each invocation has no time left after its first call; the chunk comes back until done.
    let mut invocations = 0;
    while !chunk.runtimes[0].reports_stored {
        let Batch::Metrics(next) = task.metrics(chunk, NOW, Instant::now()).await.unwrap() else { unreachable!() };
        chunk = next;
        invocations += 1;
        assert!(invocations < 10, "every invocation progresses");
    }

    assert_eq!(invocations, 4, "the plan, then three calls of 100, 100 and 50 APIs");
    let reads = cloudwatch.reads.lock().unwrap().iter().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(reads, [100, 100, 50], "no call made twice");
    for end in [NOW - 900, NOW - 600, NOW - 300, NOW] {
        let report = state.load_report(&report_key("rt_prod", end)).await.unwrap();
        assert_eq!(report.api_transaction_metrics_list.len(), 250, "window ending {end}");
        assert_eq!(report.runtime_transaction_metrics.api_metrics.transaction_count, 1250.0);
    }
}

#[tokio::test]
async fn publish_records_every_chunk_it_finished_in_the_stage_run() {
    let config = config(&[("CHUNK_SIZE", "2")]);
    let gateway = Gateway::with_apis(5, &["prod"], "x");
    let (plane, state) = (Plane::default(), Memory::default());
    let output = list_changes(&config, &gateway, &plane, &state)
        .run(run_input(1, SyncMode::Auto, &["prod"]), NOW)
        .await
        .unwrap();
    assert_eq!(output.watermarks[0].chunks, 3);

    assert!(publish_all(&output, &plane, &state).await.is_empty());

    let record = state.load_run(&run_key(Kind::Assets, "run-1", "prod")).await.unwrap();
    assert_eq!(record.chunks_done, BTreeSet::from([0, 1, 2]));
}
