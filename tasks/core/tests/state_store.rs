//! The state table, one concern at a time, against a real DynamoDB API (moto's): the conditional
//! writes, expressions and item shapes the in-memory stand-in of the handler tests cannot prove.
//!
//! Ignored by a plain `cargo test`: `tests/stack/test_state_store.py` (part of `make test`)
//! starts moto and runs them with `AGENT_TEST_DYNAMODB_URL` set.

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};

use agent_core::aws::apigateway::ApiKind;
use agent_core::aws::pace::SlotSource;
use agent_core::aws::state::{
    API_GATEWAY_SCHEDULE, AppliedEvents, CatalogEntry, Catalogs, Claim, ClaimOn, Claims, Discovery, DynamoStateStore,
    PushStatuses, Registered, Registry, Reports, RunEntry, Runs, Slots, StageProgress, applied_events_key,
    pushed_entry, report_key,
};
use agent_core::metrics::metrics_model;
use agent_core::model::{Kind, Operation, PushStatus, Refused, WatermarkUpdate};

const NOW: i64 = 1_800_000_000;

/// A store over a new table of its own (tests run in parallel on one moto).
async fn store(table: &str) -> DynamoStateStore {
    let url = std::env::var("AGENT_TEST_DYNAMODB_URL")
        .expect("AGENT_TEST_DYNAMODB_URL: these tests run from tests/stack/test_state_store.py, which starts moto");
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(url)
        .region("us-east-1")
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("stage")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("stage").key_type(KeyType::Hash).build().unwrap())
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("the test table");
    DynamoStateStore::new(client, table)
}

fn refused(id: &str) -> Refused {
    Refused {
        id: id.into(),
        operation: Operation::Upsert,
        error: "InvalidInput".into(),
        message: "name : Maximum character allowed is 1024".into(),
        at: NOW,
    }
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn stage_progress_only_moves_forward_and_a_registration_asks_for_a_full_sync() {
    let state = store("progress").await;
    assert_eq!(state.load("prod").await.unwrap(), Default::default(), "nothing known");

    let full = WatermarkUpdate { full_sync_at: Some(NOW), read_at: Some(NOW - 5), ..WatermarkUpdate::at("prod", NOW) };
    assert!(state.advance_assets_watermark(&full, &[refused("a_prod")], NOW).await.unwrap());
    assert!(!state.advance_assets_watermark(&WatermarkUpdate::at("prod", NOW - 60), &[], NOW).await.unwrap());
    assert!(state.advance_metrics_watermark("prod", NOW - 300, NOW).await.unwrap());
    assert!(!state.advance_metrics_watermark("prod", NOW - 600, NOW).await.unwrap(), "never backwards");
    state.record_outcome("prod", Kind::Assets, false, NOW + 1).await.unwrap();
    state.record_heartbeat("prod", NOW + 2).await.unwrap();
    let item = state.load("prod").await.unwrap();
    assert_eq!(
        (item.assets_watermark, item.assets_full_sync_at, item.assets_read_at),
        (Some(NOW), Some(NOW), Some(NOW - 5))
    );
    assert_eq!(item.assets_refused, [refused("a_prod")]);
    assert_eq!((item.metrics_watermark, item.last_heartbeat_at), (Some(NOW - 300), Some(NOW + 2)));
    assert_eq!(item.assets_outcome.last_succeeded(), Some(false));

    state.record_registration("prod", "acct_region_prod", "rt-1", NOW + 3).await.unwrap();
    let registered = state.load("prod").await.unwrap();
    assert_eq!((registered.registered_id.as_deref(), registered.assets_watermark), (Some("rt-1"), None));
    assert_eq!(registered.metrics_watermark, Some(NOW - 300), "the metrics keep their place");
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn a_claim_has_one_holder_until_released_expired_or_taken_over_from_that_holder() {
    let state = store("claims").await;
    let on = ClaimOn::Branch { stage: "prod", kind: Kind::Assets };
    assert_eq!(state.claim(on, "run-1", NOW, NOW + 60).await.unwrap(), Claim::Taken);
    assert_eq!(state.claim(on, "run-2", NOW + 1, NOW + 61).await.unwrap(), Claim::HeldBy(Some("run-1".into())));
    let other_kind = ClaimOn::Branch { stage: "prod", kind: Kind::Metrics };
    assert_eq!(state.claim(other_kind, "run-2", NOW, NOW + 60).await.unwrap(), Claim::Taken, "per branch");
    assert!(!state.take_over(on, "run-9", "run-2", NOW + 120).await.unwrap(), "only from its holder");
    assert!(state.take_over(on, "run-1", "run-2", NOW + 120).await.unwrap());
    state.release(on, "run-1").await.unwrap();
    assert_eq!(state.claim(on, "run-3", NOW + 2, NOW + 62).await.unwrap(), Claim::HeldBy(Some("run-2".into())));
    state.release(on, "run-2").await.unwrap();
    assert_eq!(state.claim(on, "run-3", NOW + 3, NOW + 63).await.unwrap(), Claim::Taken);
    assert_eq!(state.claim(on, "run-4", NOW + 64, NOW + 120).await.unwrap(), Claim::Taken, "expired");
    assert_eq!(state.claim(ClaimOn::Listing, "run-4", NOW, NOW + 900).await.unwrap(), Claim::Taken);
    assert_eq!(
        state.claim(ClaimOn::Listing, "run-5", NOW, NOW + 900).await.unwrap(),
        Claim::HeldBy(Some("run-4".into()))
    );
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn catalogs_discoveries_and_snapshots_read_back_as_written() {
    let state = store("catalogs").await;
    let entry = |i: usize| CatalogEntry {
        id: format!("api{i}"),
        kind: ApiKind::Http,
        name: format!("api {i}"),
        deployment: Some("d1".into()),
        domains: vec!["api.example.com".into()],
    };
    let catalog: Vec<CatalogEntry> = (0..300).map(entry).collect();
    assert_eq!(state.load_catalog("prod").await.unwrap(), None);
    state.put_catalog("prod", &catalog).await.unwrap();
    assert_eq!(state.load_catalog("prod").await.unwrap().as_deref(), Some(catalog.as_slice()));
    assert_eq!(state.load("prod").await.unwrap().deployed_apis, Some(300), "its size on the stage's item");

    let discovery = Discovery {
        stages: vec!["dev".into(), "prod".into()],
        at: NOW,
        execution_id: "tick-20270115T080000Z".into(),
        listing_parts: [("prod".to_owned(), 2)].into(),
    };
    state.save_discovery(&discovery).await.unwrap();
    assert_eq!(state.load_discovery().await.unwrap(), Some(discovery));
    state.put_snapshot("#snapshot#run#prod#0", &[], NOW + 3600).await.unwrap();
    assert_eq!(state.load_snapshot("#snapshot#run#prod#0").await.unwrap(), []);
    let missing = state.load_snapshot("#snapshot#run#prod#1").await.unwrap_err();
    assert_eq!(missing.error_type(), "AwsRequestFailed", "a missing snapshot is named, not read as empty");
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn reports_progress_and_applied_events_read_back_and_their_absence_is_told() {
    let state = store("reports").await;
    let key = report_key("rt", NOW);
    let report = metrics_model(NOW, &[]);
    state.put_report(&key, &report, NOW + 3600).await.unwrap();
    assert_eq!(state.load_report(&key).await.unwrap(), report);
    assert_eq!(state.load_report(&report_key("rt", NOW + 300)).await.unwrap_err().error_type(), "AwsRequestFailed");
    state.put_document("#progress#rt#1#2#300#plan", &vec![1, 2, 3], NOW + 3600).await.unwrap();
    assert_eq!(state.load_document::<Vec<i32>>("#progress#rt#1#2#300#plan").await.unwrap(), Some(vec![1, 2, 3]));
    assert_eq!(state.load_document::<Vec<i32>>("#progress#rt#1#2#300#data").await.unwrap(), None);

    let applied = applied_events_key("run-1", NOW);
    assert_eq!(state.load_applied_events(&applied).await.unwrap(), None, "expired or never written");
    state.put_applied_events(&applied, &["e1".into(), "e2".into()], NOW + 86_400).await.unwrap();
    assert_eq!(state.load_applied_events(&applied).await.unwrap(), Some(vec!["e1".into(), "e2".into()]));
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn a_run_record_gathers_its_chunks_refusals_and_failure_and_the_registry_its_runtimes() {
    let state = store("runs").await;
    let run = "#run#assets#run-1#prod";
    state.start_run(run, &[refused("carried_prod")], NOW + 3600).await.unwrap();
    state.record_in_run(run, RunEntry::ChunkDone(0), NOW + 3600).await.unwrap();
    state.record_in_run(run, RunEntry::ChunkDone(2), NOW + 3600).await.unwrap();
    state.record_in_run(run, RunEntry::Refused(&refused("new_prod")), NOW + 3600).await.unwrap();
    state.record_in_run(run, RunEntry::Failure { error: "Throttled", cause: "429" }, NOW + 3600).await.unwrap();
    let record = state.load_run(run).await.unwrap();
    assert_eq!(record.chunks_done, [0, 2].into());
    assert_eq!(record.refused, [refused("carried_prod"), refused("new_prod")]);
    assert_eq!(record.failure, Some(("Throttled".into(), "429".into())));
    assert_eq!(state.load_run("#run#assets#run-2#prod").await.unwrap(), Default::default());

    assert_eq!(state.load_registry().await.unwrap(), None, "before the registry was written");
    let registered = Registered { runtime_id: "rt-1".into(), stage: "prod".into(), orphaned_since: None };
    state.put_registered(&registered).await.unwrap();
    state
        .put_registered(&Registered { runtime_id: "rt-2".into(), stage: "dev".into(), orphaned_since: Some(NOW) })
        .await
        .unwrap();
    state.forget_registered("rt-2").await.unwrap();
    assert_eq!(state.load_registry().await.unwrap(), Some(vec![registered]));
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn each_target_sees_only_its_own_items_and_the_home_keeps_its_unscoped_keys() {
    let home = store("scopes").await;
    let member = home.scoped("444455556666/eu-west-1/");
    assert!(home.advance_metrics_watermark("prod", NOW, NOW).await.unwrap());
    assert!(member.advance_metrics_watermark("prod", NOW - 600, NOW).await.unwrap(), "its own item, behind");
    assert_eq!(home.load("prod").await.unwrap().metrics_watermark, Some(NOW));
    assert_eq!(member.load("prod").await.unwrap().metrics_watermark, Some(NOW - 600));
    let on = ClaimOn::Branch { stage: "prod", kind: Kind::Assets };
    assert_eq!(home.claim(on, "run-1", NOW, NOW + 60).await.unwrap(), Claim::Taken);
    assert_eq!(member.claim(on, "run-2", NOW, NOW + 60).await.unwrap(), Claim::Taken);
    // The pace is the account-region's: each target reserves from its own schedule.
    let home_slots = Slots::new(home.clone(), API_GATEWAY_SCHEDULE);
    let member_slots = Slots::new(member.clone(), API_GATEWAY_SCHEDULE);
    let first = home_slots.reserve(5, 200, NOW * 1000).await.unwrap();
    assert_eq!(member_slots.reserve(5, 200, NOW * 1000).await.unwrap(), first, "not queued behind another target");
    assert!(home_slots.reserve(5, 200, NOW * 1000).await.unwrap() >= first + 5 * 200, "queued behind its own");
}

#[tokio::test]
#[ignore = "needs DynamoDB: run by tests/stack/test_state_store.py"]
async fn pushed_events_are_a_set_added_to_by_push_and_trimmed_by_the_polls_move() {
    let state = store("pushed").await;
    state.advance_assets_watermark(&WatermarkUpdate::at("prod", NOW), &[], NOW).await.unwrap();
    let (old, new) = (pushed_entry(NOW - 2000, "e-old"), pushed_entry(NOW + 30, "e-new"));
    state.record_pushed("prod", &[old.clone(), new.clone()]).await.unwrap();
    state.record_pushed("prod", std::slice::from_ref(&new)).await.unwrap();
    state.record_pushed("prod", &[]).await.unwrap();
    let mut remembered = state.load("prod").await.unwrap().assets_pushed;
    remembered.sort();
    assert_eq!(remembered, [old.clone(), new.clone()], "a set: the same event once");

    // The poll's move forgets what no window reads again, in the same conditional write.
    let moved = WatermarkUpdate { forget_pushed: vec![old.clone()], ..WatermarkUpdate::at("prod", NOW + 600) };
    assert!(state.advance_assets_watermark(&moved, &[], NOW + 600).await.unwrap());
    assert_eq!(state.load("prod").await.unwrap().assets_pushed, std::slice::from_ref(&new));
    // A replayed move changes nothing, not even the set.
    let replayed = WatermarkUpdate { forget_pushed: vec![new.clone()], ..WatermarkUpdate::at("prod", NOW) };
    assert!(!state.advance_assets_watermark(&replayed, &[], NOW + 700).await.unwrap());
    assert_eq!(state.load("prod").await.unwrap().assets_pushed, [new]);

    assert_eq!(state.load_push_status().await.unwrap(), None);
    let status = PushStatus { available: false, reason: "no trail".into(), checked_at: NOW };
    state.put_push_status(&status).await.unwrap();
    assert_eq!(state.load_push_status().await.unwrap(), Some(status));
}
