//! Deciding what the assets branch must do (ARCHITECTURE.md section 5). Pure functions.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::aws::apigateway::DeployedApi;
use crate::aws::cloudtrail::ApiEvent;
use crate::aws::state::RuntimeState;
use crate::model::{AssetChunk, SyncMode};

/// CloudTrail keeps 90 days of events; a watermark older than this (a day of margin) cannot be
/// caught up incrementally.
pub const CLOUDTRAIL_HISTORY: Duration = Duration::from_secs(89 * 86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetPlan {
    /// List everything, reconcile, and move the watermark to `position`.
    Full { position: i64 },
    /// Read CloudTrail over `[start, end)` and move the watermark to `end`.
    Incremental { start: i64, end: i64 },
    /// The window is still inside the delivery buffer; nothing to read yet.
    UpToDate,
}

/// How the assets branch reads CloudTrail and when it reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeTiming {
    /// Windows end this long before now: CloudTrail delivers most events within 5 minutes.
    pub buffer: Duration,
    /// Each window also re-reads this much before the watermark, so an event delivered later
    /// than the buffer is still applied (re-reading is idempotent: current state is re-read).
    pub overlap: Duration,
    /// The longest window one run reads; after an outage the backlog is read in steps.
    pub max_window: Duration,
    /// A full reconciliation at least this often.
    pub reconcile: Duration,
}

/// Full when asked, on a first run, when the watermark fell out of CloudTrail's history or
/// when the reconcile interval elapsed; incremental otherwise.
pub fn plan_assets(mode: SyncMode, state: &RuntimeState, now: i64, timing: ChangeTiming) -> AssetPlan {
    let end = now - timing.buffer.as_secs() as i64;
    let full_due = match (state.assets_watermark, state.assets_full_sync_at) {
        (Some(watermark), Some(full_at)) => {
            watermark < now - CLOUDTRAIL_HISTORY.as_secs() as i64 || now - full_at >= timing.reconcile.as_secs() as i64
        }
        _ => true,
    };
    match (mode, full_due, state.assets_watermark) {
        (SyncMode::Full, _, _) | (_, true, _) => AssetPlan::Full { position: end },
        (SyncMode::Auto, false, Some(watermark)) if watermark < end => AssetPlan::Incremental {
            start: watermark - timing.overlap.as_secs() as i64,
            end: end.min(watermark + timing.max_window.as_secs() as i64),
        },
        _ => AssetPlan::UpToDate,
    }
}

/// REST API ids that the write events touched. Deleted APIs are included: re-reading them is
/// how deletions are found.
pub fn touched_rest_apis(events: &[ApiEvent]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for event in events {
        let request = &event.request_parameters;
        if let Some(id) = request.get("restApiId").and_then(Value::as_str) {
            ids.insert(id.to_owned());
        }
        // Tagging names the resource by ARN: arn:aws:apigateway:<region>::/restapis/<id>[/stages/<stage>]
        for key in ["resourceArn", "resource_arn"] {
            if let Some(id) = request.get(key).and_then(Value::as_str).and_then(rest_api_id_of_arn) {
                ids.insert(id.to_owned());
            }
        }
        // A created or imported API is only named in the response.
        if matches!(event.name.as_str(), "CreateRestApi" | "ImportRestApi")
            && let Some(id) = event.response_elements.get("id").and_then(Value::as_str)
        {
            ids.insert(id.to_owned());
        }
    }
    ids
}

fn rest_api_id_of_arn(arn: &str) -> Option<&str> {
    let rest = arn.split_once("/restapis/")?.1;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// Largest snapshot of one chunk (serialized APIs), well inside DynamoDB's 400 KB item limit.
pub const SNAPSHOT_BUDGET_BYTES: usize = 300 * 1024;

/// Splits one runtime's work into chunks of at most `size` items, upserts first; a chunk also
/// closes when its upserts' snapshot would outgrow [`SNAPSHOT_BUDGET_BYTES`]. Each chunk comes
/// with the APIs of its upserts, to be stored as its snapshot.
pub fn chunk_assets(
    runtime_id: &str,
    stage: &str,
    upserts: Vec<DeployedApi>,
    deletes: Vec<String>,
    size: usize,
) -> Vec<(AssetChunk, Vec<DeployedApi>)> {
    let empty = || {
        let chunk = AssetChunk {
            runtime_id: runtime_id.to_owned(),
            stage: stage.to_owned(),
            upserts: vec![],
            deletes: vec![],
            snapshot: None,
        };
        (chunk, Vec::new(), 0)
    };
    // (chunk, the APIs of its upserts, their serialized size)
    let mut chunks = Vec::new();
    let mut open = empty();
    for api in upserts {
        let api_bytes = serialized_len(&api);
        if open.0.upserts.len() == size || (!open.1.is_empty() && open.2 + api_bytes > SNAPSHOT_BUDGET_BYTES) {
            let (chunk, apis, _) = std::mem::replace(&mut open, empty());
            chunks.push((chunk, apis));
        }
        open.0.upserts.push(api.api.id.clone());
        open.1.push(api);
        open.2 += api_bytes;
    }
    for id in deletes {
        if open.0.upserts.len() + open.0.deletes.len() == size {
            let (chunk, apis, _) = std::mem::replace(&mut open, empty());
            chunks.push((chunk, apis));
        }
        open.0.deletes.push(id);
    }
    if !open.0.upserts.is_empty() || !open.0.deletes.is_empty() {
        chunks.push((open.0, open.1));
    }
    chunks
}

/// Splits `apis` into consecutive parts whose serialized size stays within
/// [`SNAPSHOT_BUDGET_BYTES`] (a single larger API is a part of its own).
pub fn split_by_bytes(apis: &[DeployedApi]) -> Vec<&[DeployedApi]> {
    let mut parts = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, api) in apis.iter().enumerate() {
        let api_bytes = serialized_len(api);
        if index > start && bytes + api_bytes > SNAPSHOT_BUDGET_BYTES {
            parts.push(&apis[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += api_bytes;
    }
    if start < apis.len() {
        parts.push(&apis[start..]);
    }
    parts
}

/// An API's share of a snapshot: its JSON plus the separating comma.
fn serialized_len(api: &DeployedApi) -> usize {
    serde_json::to_vec(api).map(|b| b.len() + 1).unwrap_or(SNAPSHOT_BUDGET_BYTES)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY: i64 = 86_400;

    fn state(watermark: Option<i64>, full_at: Option<i64>) -> RuntimeState {
        RuntimeState { assets_watermark: watermark, assets_full_sync_at: full_at, ..RuntimeState::default() }
    }

    const TIMING: ChangeTiming = ChangeTiming {
        buffer: Duration::from_secs(300),
        overlap: Duration::from_secs(900),
        max_window: Duration::from_secs(3600),
        reconcile: Duration::from_secs(86_400),
    };

    #[test]
    fn the_plan_follows_mode_watermark_age_and_reconcile_interval() {
        let now = 200 * DAY;
        let end = now - 300;
        let cases = [
            (SyncMode::Auto, state(None, None), AssetPlan::Full { position: end }),
            (SyncMode::Full, state(Some(now - 600), Some(now - 600)), AssetPlan::Full { position: end }),
            (
                SyncMode::Auto,
                state(Some(now - 600), Some(now - 3600)),
                AssetPlan::Incremental { start: now - 600 - 900, end },
            ),
            (SyncMode::Auto, state(Some(now - 600), Some(now - DAY)), AssetPlan::Full { position: end }),
            (SyncMode::Auto, state(Some(now - 95 * DAY), Some(now - 3600)), AssetPlan::Full { position: end }),
            (SyncMode::Auto, state(Some(end), Some(now - 3600)), AssetPlan::UpToDate),
        ];
        for (mode, state, expected) in cases {
            assert_eq!(plan_assets(mode, &state, now, TIMING), expected, "{mode:?} {state:?}");
        }
    }

    #[test]
    fn windows_overlap_the_previous_one_so_late_events_are_still_read() {
        let now = 200 * DAY;
        // The last run read up to `watermark`; an event of watermark - 10 min, delivered 15
        // minutes late, was not visible then.
        let watermark = now - 360;
        let late_event = watermark - 600;
        let AssetPlan::Incremental { start, end } =
            plan_assets(SyncMode::Auto, &state(Some(watermark), Some(now)), now, TIMING)
        else {
            panic!("incremental expected");
        };
        assert!(start <= late_event && late_event < end);
    }

    #[test]
    fn a_long_backlog_is_read_in_bounded_steps_and_the_watermark_only_covers_what_was_read() {
        let now = 200 * DAY;
        let mut watermark = now - 3 * 3600 - 300;
        let mut runs = 0;
        while let AssetPlan::Incremental { start, end } =
            plan_assets(SyncMode::Auto, &state(Some(watermark), Some(now - 3600)), now, TIMING)
        {
            assert!(end - watermark <= 3600, "one step at most");
            assert!(start < watermark && end > watermark, "progress every run");
            watermark = end;
            runs += 1;
        }
        assert_eq!((runs, watermark), (3, now - 300));
    }

    fn event(name: &str, request: Value, response: Value) -> ApiEvent {
        ApiEvent { name: name.into(), request_parameters: request, response_elements: response }
    }

    #[test]
    fn events_name_the_rest_apis_they_touched() {
        let events = [
            event("CreateDeployment", json!({"restApiId": "aaa", "stageName": "prod"}), Value::Null),
            event("CreateRestApi", json!({"name": "new"}), json!({"id": "bbb"})),
            event(
                "TagResource",
                json!({"resourceArn": "arn:aws:apigateway:eu-west-1::/restapis/ccc/stages/prod"}),
                Value::Null,
            ),
            event("DeleteRestApi", json!({"restApiId": "ddd"}), Value::Null),
            event("CreateApi", json!({"name": "http-api"}), json!({"apiId": "v2only"})),
        ];
        let ids: Vec<_> = touched_rest_apis(&events).into_iter().collect();
        assert_eq!(ids, vec!["aaa", "bbb", "ccc", "ddd"]);
    }

    fn deployed(id: &str, description_bytes: usize) -> DeployedApi {
        DeployedApi {
            api: crate::aws::apigateway::RestApi {
                id: id.into(),
                name: id.into(),
                description: Some("d".repeat(description_bytes)),
                tags: Default::default(),
                endpoint_types: vec![],
            },
            stage: crate::aws::apigateway::Stage {
                name: "prod".into(),
                deployment_id: Some("dep".into()),
                tags: Default::default(),
            },
        }
    }

    #[test]
    fn chunks_hold_at_most_size_items_and_lose_none() {
        let upserts: Vec<DeployedApi> = (0..7).map(|i| deployed(&format!("u{i}"), 10)).collect();
        let deletes: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
        let chunks = chunk_assets("rt", "prod", upserts.clone(), deletes.clone(), 5);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|(c, _)| c.upserts.len() + c.deletes.len() <= 5));
        let all_upserts: Vec<_> = chunks.iter().flat_map(|(c, _)| c.upserts.clone()).collect();
        let all_deletes: Vec<_> = chunks.iter().flat_map(|(c, _)| c.deletes.clone()).collect();
        let ids: Vec<String> = upserts.iter().map(|a| a.api.id.clone()).collect();
        assert_eq!((all_upserts, all_deletes), (ids, deletes));
        assert!(chunks.iter().all(|(c, apis)| c.upserts == apis.iter().map(|a| a.api.id.clone()).collect::<Vec<_>>()));
        assert!(chunk_assets("rt", "prod", vec![], vec![], 5).is_empty());
    }

    #[test]
    fn a_chunk_closes_before_its_snapshot_outgrows_a_dynamodb_item() {
        // 10 APIs with 100 KiB descriptions: at most two fit one 300 KiB snapshot.
        let upserts: Vec<DeployedApi> = (0..10).map(|i| deployed(&format!("u{i}"), 100 * 1024)).collect();
        let chunks = chunk_assets("rt", "prod", upserts, vec![], 100);
        assert_eq!(chunks.len(), 5);
        for (_, apis) in &chunks {
            assert!(serde_json::to_vec(apis).unwrap().len() <= SNAPSHOT_BUDGET_BYTES + 16);
        }
    }

    #[test]
    fn a_listing_splits_into_parts_that_each_fit_a_dynamodb_item() {
        let apis: Vec<DeployedApi> = (0..10).map(|i| deployed(&format!("u{i}"), 100 * 1024)).collect();
        let parts = split_by_bytes(&apis);
        assert_eq!(parts.len(), 5);
        assert!(parts.iter().all(|part| serde_json::to_vec(part).unwrap().len() <= SNAPSHOT_BUDGET_BYTES));
        assert_eq!(parts.concat(), apis);
        let small: Vec<DeployedApi> = (0..3).map(|i| deployed(&format!("s{i}"), 10)).collect();
        assert_eq!(split_by_bytes(&small), vec![&small[..]]);
        assert!(split_by_bytes(&[]).is_empty());
    }
}
