//! Deciding what the assets branch must do (ARCHITECTURE.md section 5). Pure functions.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::aws::apigateway::{DeployedApi, Generation};
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
    /// The shortest time between two reads of CloudTrail (push mode's safety-net polling; zero:
    /// every run).
    pub poll: Duration,
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
        (SyncMode::Auto, false, _)
            if state.assets_read_at.is_some_and(|read| now - read < timing.poll.as_secs() as i64) =>
        {
            AssetPlan::UpToDate
        }
        (SyncMode::Auto, false, Some(watermark)) if watermark < end => AssetPlan::Incremental {
            start: watermark - timing.overlap.as_secs() as i64,
            end: end.min(watermark + timing.max_window.as_secs() as i64),
        },
        _ => AssetPlan::UpToDate,
    }
}

/// An API named by a CloudTrail record: which management API it lives in, and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiRef {
    pub generation: Generation,
    pub id: String,
}

/// What the write events of a window touched. Events only say where to look: the current
/// state of each touched API is re-read, and each touched custom domain name's routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub apis: BTreeSet<ApiRef>,
    /// Domain names whose routes may have changed (a mapping's removal names no API).
    pub domains: BTreeSet<String>,
    /// Records whose content could not be read: what they changed is unknown.
    pub unreadable: usize,
    /// Readable records of a write that should name an API or a custom domain name and name
    /// none (no `requestParameters`, a `responseElements` of another shape): what they changed
    /// is unknown too.
    pub nameless: usize,
}

impl Touched {
    /// Whether some record leaves unknown what it changed: only listing the stage finds it.
    pub fn needs_listing(&self) -> bool {
        self.unreadable + self.nameless > 0
    }
}

/// Events that change where a custom domain name routes, in either management API.
const DOMAIN_EVENTS: [&str; 9] = [
    "CreateDomainName",
    "UpdateDomainName",
    "DeleteDomainName",
    "CreateBasePathMapping",
    "UpdateBasePathMapping",
    "DeleteBasePathMapping",
    "CreateApiMapping",
    "UpdateApiMapping",
    "DeleteApiMapping",
];

/// Write operations of either management API that change nothing a published API shows:
/// account settings, API keys and usage plans, VPC links, client certificates, access
/// associations and portals. Any other write record that names no API and no domain name
/// cannot be located, and makes the window a full sync of the stage.
const ACCOUNT_OPERATIONS: [&str; 41] = [
    "UpdateAccount",
    "CreateApiKey",
    "UpdateApiKey",
    "DeleteApiKey",
    "ImportApiKeys",
    "CreateUsagePlan",
    "UpdateUsagePlan",
    "DeleteUsagePlan",
    "CreateUsagePlanKey",
    "DeleteUsagePlanKey",
    "UpdateUsage",
    "CreateVpcLink",
    "UpdateVpcLink",
    "DeleteVpcLink",
    "GenerateClientCertificate",
    "UpdateClientCertificate",
    "DeleteClientCertificate",
    "CreateDomainNameAccessAssociation",
    "DeleteDomainNameAccessAssociation",
    "RejectDomainNameAccessAssociation",
    "CreatePortal",
    "UpdatePortal",
    "DeletePortal",
    "PublishPortal",
    "DisablePortal",
    "PreviewPortal",
    "CreatePortalProduct",
    "UpdatePortalProduct",
    "DeletePortalProduct",
    "PutPortalProductSharingPolicy",
    "DeletePortalProductSharingPolicy",
    "CreateProductPage",
    "UpdateProductPage",
    "DeleteProductPage",
    "CreateProductRestEndpointPage",
    "UpdateProductRestEndpointPage",
    "DeleteProductRestEndpointPage",
    "ImportDocumentationParts",
    "CreateSdkType",
    "UpdateSdkType",
    "DeleteSdkType",
];

/// Resource kinds, in API Gateway ARNs, that are not APIs (tagging them changes no API).
const OTHER_RESOURCES: [&str; 8] =
    ["usageplans", "apikeys", "domainnames", "vpclinks", "clientcertificates", "account", "portals", "portalproducts"];

/// The APIs and domain names the write events touched, for the selected management APIs.
/// REST (v1) and v2 records are told apart by their fields, never by event name (both APIs have
/// `CreateStage`, `CreateDeployment`, `TagResource`...): a v1 path names `restApiId`, a v2 path
/// `apiId`, and resource ARNs `/restapis/<id>` or `/apis/<id>`. Only the request's top-level
/// fields (its path) are read: nested bodies hold other ids (a usage plan's `apiStages` names
/// REST APIs by `apiId`). Deleted APIs are included: re-reading them is how deletions are found.
pub fn touched<'e>(events: impl IntoIterator<Item = &'e ApiEvent>, generations: &[Generation]) -> Touched {
    let mut touched = Touched::default();
    for event in events {
        if event.unreadable {
            touched.unreadable += 1;
            continue;
        }
        if event.failed {
            continue;
        }
        // The APIs the record names (of either management API).
        let mut named_apis: Vec<(Generation, &str)> = Vec::new();
        let request = &event.request_parameters;
        if let Some(id) = request.get("restApiId").and_then(Value::as_str) {
            named_apis.push((Generation::V1, id));
        }
        if let Some(id) = request.get("apiId").and_then(Value::as_str) {
            named_apis.push((Generation::V2, id));
        }
        // Whether it names something that is not an API (a domain name, a usage plan...).
        let mut names_other = ACCOUNT_OPERATIONS.contains(&event.name.as_str());
        // Tagging names the resource by ARN, e.g. arn:aws:apigateway:<region>::/apis/<id>/stages/<stage>.
        for value in request.as_object().into_iter().flat_map(|fields| fields.values()).filter_map(Value::as_str) {
            match resource_of_arn(value) {
                Some(Resource::Api(generation, id)) => named_apis.push((generation, id)),
                Some(Resource::Other) => names_other = true,
                None => {}
            }
        }
        // A created or imported API is only named in the response.
        let response = &event.response_elements;
        let created = match event.name.as_str() {
            "CreateRestApi" | "ImportRestApi" => {
                response.get("id").and_then(Value::as_str).map(|id| (Generation::V1, id))
            }
            "CreateApi" | "ImportApi" => response.get("apiId").and_then(Value::as_str).map(|id| (Generation::V2, id)),
            _ => None,
        };
        named_apis.extend(created);
        named_apis.retain(|(_, id)| !id.is_empty());
        if let Some(domain) = request.get("domainName").and_then(Value::as_str).filter(|d| !d.is_empty()) {
            names_other = true;
            if DOMAIN_EVENTS.contains(&event.name.as_str()) {
                touched.domains.insert(domain.to_owned());
            }
        }
        for (generation, id) in &named_apis {
            if generations.contains(generation) {
                touched.apis.insert(ApiRef { generation: *generation, id: (*id).to_owned() });
            }
        }
        let named = names_other || !named_apis.is_empty();
        if !named {
            tracing::warn!(event = event.name, id = event.id, "CloudTrail record names no API or domain name");
            touched.nameless += 1;
        }
    }
    touched
}

/// The most event ids remembered for one window, well inside a DynamoDB item; beyond it the
/// oldest are left out, and the next window applies them once more (idempotent, only slower).
pub const APPLIED_EVENTS_LIMIT: usize = 5_000;

/// The ids of a window's events that the next window re-reads (those of its last `overlap`
/// before `end`), newest first: remembered with the watermark, so that each change is applied
/// once and only events delivered late are applied there.
pub fn events_to_remember(events: &[ApiEvent], end: i64, overlap: Duration) -> Vec<String> {
    let from = end - overlap.as_secs() as i64;
    let mut remembered: Vec<&ApiEvent> =
        events.iter().filter(|e| !e.id.is_empty() && (from..end).contains(&e.time)).collect();
    remembered.sort_by_key(|e| std::cmp::Reverse(e.time));
    remembered.into_iter().take(APPLIED_EVENTS_LIMIT).map(|e| e.id.clone()).collect()
}

/// What an API Gateway resource ARN names.
enum Resource<'a> {
    Api(Generation, &'a str),
    /// A resource that is not an API (a usage plan, a domain name...).
    Other,
}

/// The resource an API Gateway ARN (`arn:<partition>:apigateway:<region>::/<kind>/<id>...`)
/// names; `None` for anything else.
fn resource_of_arn(arn: &str) -> Option<Resource<'_>> {
    let path = arn.strip_prefix("arn:")?.split_once("::/")?.1;
    let (kind, rest) = path.split_once('/').unwrap_or((path, ""));
    let id = rest.split('/').next().unwrap_or_default();
    match kind {
        "restapis" if !id.is_empty() => Some(Resource::Api(Generation::V1, id)),
        "apis" if !id.is_empty() => Some(Resource::Api(Generation::V2, id)),
        other if OTHER_RESOURCES.contains(&other) => Some(Resource::Other),
        _ => None,
    }
}

/// Largest snapshot of one chunk (serialized APIs), well inside DynamoDB's 400 KB item limit.
pub const SNAPSHOT_BUDGET_BYTES: usize = 300 * 1024;

/// Splits one runtime's work into chunks of at most `size` items, upserts first; a chunk also
/// closes when its upserts' snapshot would outgrow [`SNAPSHOT_BUDGET_BYTES`]. Each chunk comes
/// with the APIs of its upserts, to be stored as its snapshot, and records itself in `run`.
pub fn chunk_assets(
    runtime_id: &str,
    stage: &str,
    run: &str,
    upserts: Vec<DeployedApi>,
    deletes: Vec<String>,
    size: usize,
) -> Vec<(AssetChunk, Vec<DeployedApi>)> {
    let mut index = 0;
    let mut empty = || {
        let chunk = AssetChunk {
            target: None,
            runtime_id: runtime_id.to_owned(),
            stage: stage.to_owned(),
            run: run.to_owned(),
            index,
            upserts: vec![],
            deletes: vec![],
            snapshot: None,
        };
        index += 1;
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
        poll: Duration::ZERO,
    };

    #[test]
    fn with_push_mode_cloudtrail_is_read_once_per_poll_interval_and_full_syncs_stay_due() {
        let now = 200 * DAY;
        let push = ChangeTiming { poll: Duration::from_secs(900), ..TIMING };
        let read = |ago: i64, full_ago: i64| RuntimeState {
            assets_read_at: Some(now - ago),
            ..state(Some(now - ago - 300), Some(now - full_ago))
        };
        assert_eq!(plan_assets(SyncMode::Auto, &read(600, 3600), now, push), AssetPlan::UpToDate);
        assert!(matches!(plan_assets(SyncMode::Auto, &read(900, 3600), now, push), AssetPlan::Incremental { .. }));
        // Polling every run without push mode.
        assert!(matches!(plan_assets(SyncMode::Auto, &read(600, 3600), now, TIMING), AssetPlan::Incremental { .. }));
        // A reconciliation or a full sync asked for is never postponed.
        assert!(matches!(plan_assets(SyncMode::Auto, &read(600, DAY), now, push), AssetPlan::Full { .. }));
        assert!(matches!(plan_assets(SyncMode::Full, &read(60, 3600), now, push), AssetPlan::Full { .. }));
    }

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
    fn a_window_remembers_the_events_the_next_one_re_reads_newest_first_and_at_most_the_limit() {
        let end = 200 * DAY;
        let at = |id: &str, time: i64| ApiEvent { id: id.into(), time, ..event("UpdateStage", json!({}), json!({})) };
        let events = [
            at("before-the-overlap", end - 901),
            at("first-of-the-overlap", end - 900),
            at("last", end - 1),
            at("", end - 10), // no id: cannot be recognized when read again
            at("middle", end - 300),
        ];

        let remembered = events_to_remember(&events, end, TIMING.overlap);

        assert_eq!(remembered, ["last", "middle", "first-of-the-overlap"]);
        let burst: Vec<ApiEvent> =
            (0..APPLIED_EVENTS_LIMIT as i64 + 10).map(|i| at(&format!("e{i}"), end - 800 + i / 10)).collect();
        let remembered = events_to_remember(&burst, end, TIMING.overlap);
        assert_eq!(remembered.len(), APPLIED_EVENTS_LIMIT);
        assert!(!remembered.contains(&"e0".to_owned()), "the oldest are left out");
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
        ApiEvent {
            id: format!("{name}-id"),
            time: 0,
            name: name.into(),
            request_parameters: request,
            response_elements: response,
            unreadable: false,
            failed: false,
        }
    }

    fn v1(id: &str) -> ApiRef {
        ApiRef { generation: Generation::V1, id: id.into() }
    }

    fn v2(id: &str) -> ApiRef {
        ApiRef { generation: Generation::V2, id: id.into() }
    }

    /// Records as CloudTrail writes them: path parameters at the top of `requestParameters`, the
    /// created resource in `responseElements`. A v2 record carries its request body flattened
    /// beside the path parameters, as in real apigatewayv2 `CreateStage`, `UpdateRoute` and
    /// `CreateIntegration` records (`{"stageName": .., "autoDeploy": true, "apiId": ..}`). v1
    /// bodies are shown under `<operation>Input`; flattened instead, their arrays (a usage plan's
    /// `apiStages`) are still not top-level strings, so the result is the same.
    #[test]
    fn every_write_event_names_the_api_or_domain_it_touched() {
        let arn = "arn:aws:apigateway:eu-west-1::";
        let cases: Vec<(&str, Value, Value, Touched)> = vec![
            // REST (v1)
            ("CreateRestApi", json!({"name": "new"}), json!({"id": "r1", "name": "new"}), apis(&[v1("r1")])),
            ("ImportRestApi", json!({"mode": "import"}), json!({"id": "r2"}), apis(&[v1("r2")])),
            ("PutRestApi", json!({"restApiId": "r3", "mode": "overwrite"}), Value::Null, apis(&[v1("r3")])),
            (
                "CreateDeployment",
                json!({"restApiId": "r4", "stageName": "prod"}),
                json!({"id": "d1"}),
                apis(&[v1("r4")]),
            ),
            ("DeleteRestApi", json!({"restApiId": "r5"}), Value::Null, apis(&[v1("r5")])),
            (
                "TagResource",
                json!({"resourceArn": format!("{arn}/restapis/r6/stages/prod"), "tags": {"a": "b"}}),
                Value::Null,
                apis(&[v1("r6")]),
            ),
            (
                "UntagResource",
                json!({"resource_arn": format!("{arn}/restapis/r7"), "tagKeys": ["a"]}),
                Value::Null,
                apis(&[v1("r7")]),
            ),
            // HTTP and WebSocket (v2)
            (
                "CreateApi",
                json!({"name": "h", "protocolType": "HTTP"}),
                json!({"apiId": "h1", "protocolType": "HTTP"}),
                apis(&[v2("h1")]),
            ),
            ("ImportApi", json!({"body": "...", "failOnWarnings": false}), json!({"apiId": "h2"}), apis(&[v2("h2")])),
            ("ReimportApi", json!({"apiId": "h3", "body": "..."}), json!({"apiId": "h3"}), apis(&[v2("h3")])),
            ("UpdateApi", json!({"apiId": "h4", "name": "x"}), Value::Null, apis(&[v2("h4")])),
            ("DeleteApi", json!({"apiId": "h5"}), Value::Null, apis(&[v2("h5")])),
            (
                "CreateStage",
                json!({"stageName": "live", "autoDeploy": true, "apiId": "w1"}),
                json!({"stageName": "live"}),
                apis(&[v2("w1")]),
            ),
            (
                "UpdateStage",
                json!({"apiId": "w2", "stageName": "live", "description": "x"}),
                Value::Null,
                apis(&[v2("w2")]),
            ),
            ("DeleteStage", json!({"apiId": "w3", "stageName": "live"}), Value::Null, apis(&[v2("w3")])),
            (
                "CreateDeployment",
                json!({"apiId": "w4", "stageName": "live"}),
                json!({"deploymentId": "d2"}),
                apis(&[v2("w4")]),
            ),
            ("DeleteDeployment", json!({"apiId": "w5", "deploymentId": "d2"}), Value::Null, apis(&[v2("w5")])),
            (
                "CreateRoute",
                json!({"routeKey": "GET /pets", "target": "integrations/i1", "apiId": "h6"}),
                Value::Null,
                apis(&[v2("h6")]),
            ),
            ("UpdateIntegration", json!({"apiId": "h7", "integrationId": "i1"}), Value::Null, apis(&[v2("h7")])),
            (
                "TagResource",
                json!({"resource-arn": format!("{arn}/apis/h8/stages/$default")}),
                Value::Null,
                apis(&[v2("h8")]),
            ),
            (
                "UntagResource",
                json!({"resource-arn": format!("{arn}/apis/h9"), "tagKeys": ["a"]}),
                Value::Null,
                apis(&[v2("h9")]),
            ),
            // Custom domain names, in either API: the domain, and the API when the record names it.
            (
                "CreateBasePathMapping",
                json!({"domainName": "api.example.com", "restApiId": "r8", "stage": "prod"}),
                Value::Null,
                both(&[v1("r8")], "api.example.com"),
            ),
            (
                "DeleteBasePathMapping",
                json!({"domainName": "api.example.com", "basePath": "pets"}),
                Value::Null,
                domain("api.example.com"),
            ),
            (
                "CreateApiMapping",
                json!({"domainName": "ws.example.com", "apiId": "w6", "stage": "live"}),
                json!({"apiId": "w6", "apiMappingId": "m1"}),
                both(&[v2("w6")], "ws.example.com"),
            ),
            (
                "DeleteApiMapping",
                json!({"domainName": "ws.example.com", "apiMappingId": "m1"}),
                Value::Null,
                domain("ws.example.com"),
            ),
            ("DeleteDomainName", json!({"domainName": "old.example.com"}), Value::Null, domain("old.example.com")),
            // Nothing we publish: a usage plan names REST APIs by `apiId`, but only in its body.
            (
                "CreateUsagePlan",
                json!({"createUsagePlanInput": {"apiStages": [{"apiId": "r9", "stage": "prod"}]}}),
                json!({"id": "u1"}),
                Touched::default(),
            ),
            (
                "TagResource",
                json!({"resource-arn": format!("{arn}/domainnames/api.example.com")}),
                Value::Null,
                Touched::default(),
            ),
            (
                "CreateVpcLink",
                json!({"name": "l", "subnetIds": ["s1"]}),
                json!({"vpcLinkId": "v1"}),
                Touched::default(),
            ),
            // A write that should name an API and names none: only a listing finds what it did.
            ("CreateRestApi", json!({"name": "new"}), Value::Null, nameless()),
            ("CreateApi", json!({"name": "h"}), json!({"id": "not-how-v2-answers"}), nameless()),
            ("UpdateStage", Value::Null, Value::Null, nameless()),
            ("CreateDeployment", json!({"stageName": "prod"}), json!({"id": "d1"}), nameless()),
            ("DeleteDomainName", json!({}), Value::Null, nameless()),
            ("TagResource", json!({"resourceArn": "arn:aws:apigateway:eu-west-1::/"}), Value::Null, nameless()),
        ];
        for (name, request, response, expected) in cases {
            let found = touched(&[event(name, request.clone(), response)], &Generation::ALL);
            assert_eq!(found, expected, "{name} {request}");
        }
    }

    fn nameless() -> Touched {
        Touched { nameless: 1, ..Touched::default() }
    }

    #[test]
    fn a_call_that_failed_changed_nothing_and_is_not_followed() {
        let failed = ApiEvent { failed: true, ..event("DeleteRestApi", json!({"restApiId": "r1"}), Value::Null) };
        let no_name = ApiEvent { failed: true, ..event("CreateRestApi", json!({"name": "x"}), Value::Null) };
        assert_eq!(touched(&[failed, no_name], &Generation::ALL), Touched::default());
    }

    #[test]
    fn only_the_selected_management_apis_are_followed() {
        let events = [
            event("CreateDeployment", json!({"restApiId": "r1"}), Value::Null),
            event("CreateDeployment", json!({"apiId": "h1"}), Value::Null),
        ];
        assert_eq!(touched(&events, &[Generation::V1]), apis(&[v1("r1")]));
        assert_eq!(touched(&events, &[Generation::V2]), apis(&[v2("h1")]));
    }

    fn apis(refs: &[ApiRef]) -> Touched {
        Touched { apis: refs.iter().cloned().collect(), ..Touched::default() }
    }

    fn domain(name: &str) -> Touched {
        Touched { domains: BTreeSet::from([name.to_owned()]), ..Touched::default() }
    }

    fn both(refs: &[ApiRef], name: &str) -> Touched {
        Touched { domains: BTreeSet::from([name.to_owned()]), ..apis(refs) }
    }

    fn deployed(id: &str, description_bytes: usize) -> DeployedApi {
        DeployedApi {
            api: crate::aws::apigateway::Api {
                id: id.into(),
                kind: Default::default(),
                name: id.into(),
                description: Some("d".repeat(description_bytes)),
                tags: Default::default(),
                endpoint_types: vec![],
                execute_api_disabled: false,
                policy_statements: None,
            },
            stage: crate::aws::apigateway::Stage {
                name: "prod".into(),
                deployment_id: Some("dep".into()),
                tags: Default::default(),
            },
            domains: vec![],
        }
    }

    #[test]
    fn chunks_hold_at_most_size_items_and_lose_none() {
        let upserts: Vec<DeployedApi> = (0..7).map(|i| deployed(&format!("u{i}"), 10)).collect();
        let deletes: Vec<String> = (0..4).map(|i| format!("d{i}")).collect();
        let chunks = chunk_assets("rt", "prod", "run", upserts.clone(), deletes.clone(), 5);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|(c, _)| c.upserts.len() + c.deletes.len() <= 5));
        let all_upserts: Vec<_> = chunks.iter().flat_map(|(c, _)| c.upserts.clone()).collect();
        let all_deletes: Vec<_> = chunks.iter().flat_map(|(c, _)| c.deletes.clone()).collect();
        let ids: Vec<String> = upserts.iter().map(|a| a.api.id.clone()).collect();
        assert_eq!((all_upserts, all_deletes), (ids, deletes));
        assert!(chunks.iter().all(|(c, apis)| c.upserts == apis.iter().map(|a| a.api.id.clone()).collect::<Vec<_>>()));
        let indexes: Vec<usize> = chunks.iter().map(|(c, _)| c.index).collect();
        assert_eq!(indexes, [0, 1, 2], "each chunk knows its place in the stage's run");
        assert!(chunk_assets("rt", "prod", "run", vec![], vec![], 5).is_empty());
    }

    #[test]
    fn a_chunk_closes_before_its_snapshot_outgrows_a_dynamodb_item() {
        // 10 APIs with 100 KiB descriptions: at most two fit one 300 KiB snapshot.
        let upserts: Vec<DeployedApi> = (0..10).map(|i| deployed(&format!("u{i}"), 100 * 1024)).collect();
        let chunks = chunk_assets("rt", "prod", "run", upserts, vec![], 100);
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
