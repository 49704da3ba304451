//! Amazon DynamoDB: one item per federated stage with its runtime registration and the two
//! branch watermarks. The stage name is the key: the table belongs to one account and region.
//!
//! Watermarks only move forward: every write is conditional, so an overlapping or replayed
//! execution can never move one back. A branch also *claims* a stage before listing its work, so
//! two overlapping executions never publish the same work (the same metrics window) twice.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::sdk_error;
use crate::aws::apigateway::{ApiKind, DeployedApi};
use crate::control_plane::types::AgentMetricsModel;
use crate::error::{AgentError, Result};
use crate::model::{Kind, WatermarkUpdate};

/// What the table remembers about one runtime. Times are epoch seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// The control plane's id of the runtime registered for this stage.
    pub registered_id: Option<String>,
    /// The runtime id we asked for at registration; a changed id template re-registers.
    pub registered_as: Option<String>,
    pub assets_watermark: Option<i64>,
    pub assets_full_sync_at: Option<i64>,
    /// The key of the item listing the CloudTrail events already applied that the next window
    /// re-reads (its overlap); `None`: none known, every event read is applied.
    pub assets_applied_events: Option<String>,
    pub metrics_watermark: Option<i64>,
    /// The end of the metrics window whose POST the publish task last started. Past the watermark,
    /// the task sending it ended without recording the answer (Lambda cut it off): the window may
    /// have been stored.
    pub metrics_in_flight: Option<i64>,
    /// How many APIs the stage's catalog held when it was last written (`None` before that).
    pub deployed_apis: Option<i64>,
    /// When the last heartbeat of the runtime was sent.
    pub last_heartbeat_at: Option<i64>,
    /// When each branch last ended for the stage, with success and with failure.
    pub assets_outcome: Outcomes,
    pub metrics_outcome: Outcomes,
}

/// When a branch last succeeded and last failed for a stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub succeeded_at: Option<i64>,
    pub failed_at: Option<i64>,
}

impl Outcomes {
    /// Whether the branch's latest recorded end was a success (`None`: it never ended yet).
    pub fn last_succeeded(&self) -> Option<bool> {
        match (self.succeeded_at, self.failed_at) {
            (None, None) => None,
            (succeeded, failed) => Some(succeeded >= failed),
        }
    }
}

pub trait StateStore: Send + Sync {
    /// The runtime's item; the default (nothing known) when there is none.
    fn load(&self, stage: &str) -> impl Future<Output = Result<RuntimeState>> + Send;
    /// Records the registered runtime and forgets the assets watermark, so that the runtime is
    /// filled by a full sync.
    fn record_registration(
        &self,
        stage: &str,
        registered_as: &str,
        registered_id: &str,
        at: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Moves the stage's assets watermark to `update.position` if that is ahead of the stored
    /// one, with what the run leaves for the next (a completed full reconciliation, the events
    /// applied in the next window's overlap, forgotten when `None`); returns whether it moved.
    fn advance_assets_watermark(
        &self,
        update: &WatermarkUpdate,
        acked_at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Moves the stage's metrics watermark to `position` if that is ahead of the stored one;
    /// returns whether it moved.
    fn advance_metrics_watermark(
        &self,
        stage: &str,
        position: i64,
        acked_at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records (`Some(end)`) that the POST of the stage's metrics window ending `end` starts, or
    /// forgets it (`None`) after the control plane refused it.
    fn set_metrics_in_flight(&self, stage: &str, window_end: Option<i64>) -> impl Future<Output = Result<()>> + Send;
    /// Claims the stage's branch for `holder` until `expires_at`, unless another holder's claim
    /// is still live at `now`, whom the answer then names.
    fn claim(
        &self,
        stage: &str,
        kind: Kind,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<Claim>> + Send;
    /// Takes the claim over from `previous` (an execution that has ended); `false` when someone
    /// else changed the claim meanwhile.
    fn take_over(
        &self,
        stage: &str,
        kind: Kind,
        previous: &str,
        holder: &str,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records how the branch ended for the stage at `at` (what the next heartbeat reports).
    fn record_outcome(
        &self,
        stage: &str,
        kind: Kind,
        succeeded: bool,
        at: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records that the runtime's heartbeat was sent at `at`.
    fn record_heartbeat(&self, stage: &str, at: i64) -> impl Future<Output = Result<()>> + Send;
    /// Gives up `holder`'s claim; a claim someone else holds is left alone.
    fn release(&self, stage: &str, kind: Kind, holder: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stores the APIs of one chunk (what list-changes read from API Gateway) under `key`,
    /// removed by the table's TTL after `expires_at`.
    fn put_snapshot(&self, key: &str, apis: &[DeployedApi], expires_at: i64)
    -> impl Future<Output = Result<()>> + Send;
    /// The APIs stored under `key`.
    fn load_snapshot(&self, key: &str) -> impl Future<Output = Result<Vec<DeployedApi>>> + Send;
    /// Replaces the catalog of the APIs deployed to `stage` (what the metrics branch needs to
    /// name CloudWatch's series without listing API Gateway), and records its size on the
    /// stage's item (what the heartbeat reports without reading the catalog).
    fn put_catalog(&self, stage: &str, entries: &[CatalogEntry]) -> impl Future<Output = Result<()>> + Send;
    /// The stage's catalog; `None` before the first full sync stored one.
    fn load_catalog(&self, stage: &str) -> impl Future<Output = Result<Option<Vec<CatalogEntry>>>> + Send;
    /// Stores the report of one metrics window until the publish task sends it.
    fn put_report(
        &self,
        key: &str,
        report: &AgentMetricsModel,
        expires_at: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    fn load_report(&self, key: &str) -> impl Future<Output = Result<AgentMetricsModel>> + Send;
    /// Stores the ids of CloudTrail events applied by this run under `key`, removed by the
    /// table's TTL after `expires_at`.
    fn put_applied_events(&self, key: &str, ids: &[String], expires_at: i64)
    -> impl Future<Output = Result<()>> + Send;
    /// The event ids stored under `key`; `None` when they are gone (expired).
    fn load_applied_events(&self, key: &str) -> impl Future<Output = Result<Option<Vec<String>>>> + Send;
    /// The stages found by the last discovery (`STAGES=*`) and when it ran.
    fn load_discovery(&self) -> impl Future<Output = Result<Option<Discovery>>> + Send;
    fn save_discovery(&self, discovery: &Discovery) -> impl Future<Output = Result<()>> + Send;
}

/// An API deployed to a stage, as the metrics branch and incremental runs need it: CloudWatch
/// names REST APIs by name and the others by id, the control plane by id and deployment, and a
/// custom domain's removed route is found by the domains the API had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub id: String,
    #[serde(default)]
    pub kind: ApiKind,
    pub name: String,
    pub deployment: Option<String>,
    /// The custom domain names routing to the API on the stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

/// A catalog is stored gzipped, and not at all above this (the metrics branch then lists API
/// Gateway): below DynamoDB's 400 KB items, and far above the largest region (2,520 APIs of
/// 70-character names: about 400 KB of JSON, under 40 KB gzipped).
const CATALOG_BUDGET_BYTES: usize = 350 * 1024;

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// Another execution's live claim (unknown when it was released meanwhile).
    HeldBy(Option<String>),
}

/// The outcome of listing every deployed stage of the account and region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub stages: Vec<String>,
    pub at: i64,
    /// When the listing itself was stored (see [`listing_key`]): the number of parts of each
    /// stage's APIs; empty when only the stage names were kept.
    pub listing_parts: BTreeMap<String, usize>,
}

/// A stored listing serves a full sync that starts within this long of it: the same
/// execution's ensure-runtime (its Task timeout) or a concurrent one.
pub const LISTING_REUSE_SECONDS: i64 = 900;

/// The attribute holding a stage's catalog, gzipped JSON.
const CATALOG_ATTRIBUTE: &str = "apisGzip";

/// The key of the discovery item: `#` cannot start an API Gateway stage name.
const DISCOVERY_KEY: &str = "#discovery";

/// The attribute the table's TTL reads: snapshots expire by themselves.
pub const EXPIRES_AT: &str = "expiresAt";

/// The key of a chunk's snapshot: unique per execution, stage and chunk, so a retried
/// list-changes overwrites its own snapshots and nobody else's.
fn catalog_key(stage: &str) -> String {
    format!("#catalog#{stage}")
}

pub fn snapshot_key(execution_id: &str, stage: &str, chunk: usize) -> String {
    format!("#snapshot#{execution_id}#{stage}#{chunk}")
}

/// The key of the CloudTrail events an execution applied in the overlap of the window after
/// `window_end`: a retried list-changes overwrites its own.
pub fn applied_events_key(execution_id: &str, window_end: i64) -> String {
    format!("#applied#{execution_id}#{window_end}")
}

/// The attribute of a snapshot's (or an oversized catalog's) APIs, a JSON list.
const APIS_ATTRIBUTE: &str = "apis";

/// The attribute of the applied events' ids (a JSON list).
const EVENT_IDS_ATTRIBUTE: &str = "eventIds";

/// The stage attribute naming the item of the events applied in the next window's overlap.
const APPLIED_EVENTS: &str = "assetsAppliedEvents";

/// The key of the report of the metrics window of `runtime_id` that ends at `window_end`.
pub fn report_key(runtime_id: &str, window_end: i64) -> String {
    format!("#report#{runtime_id}#{window_end}")
}

/// The key of one part of a stored listing of `stage`: named by the listing's time, so a
/// reader never mixes the parts of two listings.
pub fn listing_key(listed_at: i64, stage: &str, part: usize) -> String {
    format!("#listing#{listed_at}#{stage}#{part}")
}

#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

/// The table's partition key (string).
pub const KEY: &str = "stage";

/// The item attributes of one branch.
struct BranchAttributes {
    watermark: &'static str,
    acked_at: &'static str,
    claimed_by: &'static str,
    claim_expires_at: &'static str,
    succeeded_at: &'static str,
    failed_at: &'static str,
}

const METRICS_IN_FLIGHT: &str = "metricsInFlight";

/// What every watermark advance sets (see `DynamoStateStore::advance`).
const ADVANCE: &str = "SET #wm = :pos, #acked = :acked";

fn attributes(kind: Kind) -> BranchAttributes {
    match kind {
        Kind::Assets => BranchAttributes {
            watermark: "assetsWatermark",
            acked_at: "assetsAckedAt",
            claimed_by: "assetsClaimedBy",
            claim_expires_at: "assetsClaimExpiresAt",
            succeeded_at: "assetsSucceededAt",
            failed_at: "assetsFailedAt",
        },
        Kind::Metrics => BranchAttributes {
            watermark: "metricsWatermark",
            acked_at: "metricsAckedAt",
            claimed_by: "metricsClaimedBy",
            claim_expires_at: "metricsClaimExpiresAt",
            succeeded_at: "metricsSucceededAt",
            failed_at: "metricsFailedAt",
        },
    }
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// The item under `key`, read consistently: watermarks and claims must not be stale.
    async fn item(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:GetItem", e))?;
        Ok(output.item)
    }

    /// Puts the item `key` holding the JSON text `json` (if any) in `attribute`, expiring at
    /// `expires_at` (if any).
    async fn put_json(&self, key: &str, attribute: &str, json: Option<String>, expires_at: Option<i64>) -> Result<()> {
        let mut request = self.client.put_item().table_name(&self.table).item(KEY, AttributeValue::S(key.to_owned()));
        if let Some(json) = json {
            request = request.item(attribute, AttributeValue::S(json));
        }
        if let Some(at) = expires_at {
            request = request.item(EXPIRES_AT, AttributeValue::N(at.to_string()));
        }
        request.send().await.map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    /// The JSON text in `attribute` of the item `key`; `None` when the item or the attribute is
    /// absent.
    async fn load_json<T: DeserializeOwned>(&self, key: &str, attribute: &str) -> Result<Option<T>> {
        let Some(body) = self.item(key).await?.and_then(|item| item.get(attribute)?.as_s().ok().cloned()) else {
            return Ok(None);
        };
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| AgentError::AwsRequestFailed(format!("state item {key} is malformed: {e}")))
    }

    /// Sets a number attribute of the stage's item (`Some`) or removes it (`None`).
    async fn set_number(&self, stage: &str, attribute: &str, value: Option<i64>) -> Result<()> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            .expression_attribute_names("#attribute", attribute);
        let request = match value {
            Some(value) => request
                .update_expression("SET #attribute = :value")
                .expression_attribute_values(":value", AttributeValue::N(value.to_string())),
            None => request.update_expression("REMOVE #attribute"),
        };
        request.send().await.map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    fn claim_update(&self, stage: &str, kind: Kind, holder: &str) -> UpdateItemFluentBuilder {
        let names = attributes(kind);
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            .expression_attribute_names("#by", names.claimed_by)
            .expression_attribute_names("#until", names.claim_expires_at)
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
    }

    /// The conditional update moving the branch's watermark to `position` (`:pos`) at `acked_at`
    /// (`:acked`), whose expression starts with [`ADVANCE`]; false when the stored watermark is
    /// already at or past it, as a replayed or overlapping execution's would be.
    fn advance(&self, stage: &str, kind: Kind, position: i64, acked_at: i64) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            .condition_expression("attribute_not_exists(#wm) OR #wm < :pos")
            .expression_attribute_names("#wm", attributes(kind).watermark)
            .expression_attribute_names("#acked", attributes(kind).acked_at)
            .expression_attribute_values(":pos", AttributeValue::N(position.to_string()))
            .expression_attribute_values(":acked", AttributeValue::N(acked_at.to_string()))
    }

    /// The update that makes `holder` hold the branch's claim until `expires_at`.
    fn claim_set(&self, stage: &str, kind: Kind, holder: &str, expires_at: i64) -> UpdateItemFluentBuilder {
        self.claim_update(stage, kind, holder)
            .update_expression("SET #by = :holder, #until = :until")
            .expression_attribute_values(":until", AttributeValue::N(expires_at.to_string()))
    }
}

/// A large value as stored: gzipped JSON. A report of 2,500 APIs is about 1 MB of JSON and a
/// small fraction of that compressed, inside DynamoDB's 400 KB items.
fn gzip_json(key: &str, value: &(impl Serialize + ?Sized)) -> Result<Vec<u8>> {
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    serde_json::to_writer(&mut gzip, value)
        .map_err(|e| AgentError::AwsRequestFailed(format!("state item {key} cannot be serialized: {e}")))?;
    gzip.finish().map_err(|e| AgentError::AwsRequestFailed(format!("state item {key} cannot be compressed: {e}")))
}

fn gunzip_json<T: DeserializeOwned>(key: &str, body: &[u8]) -> Result<T> {
    serde_json::from_reader(GzDecoder::new(body))
        .map_err(|e| AgentError::AwsRequestFailed(format!("state item {key} is malformed: {e}")))
}

fn json_body(key: &str, value: &(impl Serialize + ?Sized)) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| AgentError::AwsRequestFailed(format!("state item {key} cannot be serialized: {e}")))
}

/// Sends a conditional update; `false` when its condition did not hold.
async fn conditional_update(request: UpdateItemFluentBuilder) -> Result<bool> {
    match request.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
        Err(e) => Err(sdk_error("dynamodb:UpdateItem", e)),
    }
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<Option<i64>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(n)) => n
            .parse()
            .map(Some)
            .map_err(|_| AgentError::AwsRequestFailed(format!("state item attribute {name} is not an integer: {n}"))),
        Some(other) => Err(AgentError::AwsRequestFailed(format!("state item attribute {name} has type {other:?}"))),
    }
}

fn outcomes(item: &HashMap<String, AttributeValue>, kind: Kind) -> Result<Outcomes> {
    let names = attributes(kind);
    Ok(Outcomes { succeeded_at: number(item, names.succeeded_at)?, failed_at: number(item, names.failed_at)? })
}

impl StateStore for DynamoStateStore {
    async fn load(&self, stage: &str) -> Result<RuntimeState> {
        let Some(item) = self.item(stage).await? else { return Ok(RuntimeState::default()) };
        Ok(RuntimeState {
            registered_id: item.get("registeredId").and_then(|v| v.as_s().ok()).cloned(),
            registered_as: item.get("registeredAs").and_then(|v| v.as_s().ok()).cloned(),
            assets_watermark: number(&item, attributes(Kind::Assets).watermark)?,
            assets_full_sync_at: number(&item, "assetsFullSyncAt")?,
            assets_applied_events: item.get(APPLIED_EVENTS).and_then(|v| v.as_s().ok()).cloned(),
            metrics_watermark: number(&item, attributes(Kind::Metrics).watermark)?,
            metrics_in_flight: number(&item, METRICS_IN_FLIGHT)?,
            deployed_apis: number(&item, "deployedApis")?,
            last_heartbeat_at: number(&item, "lastHeartbeatAt")?,
            assets_outcome: outcomes(&item, Kind::Assets)?,
            metrics_outcome: outcomes(&item, Kind::Metrics)?,
        })
    }

    async fn put_snapshot(&self, key: &str, apis: &[DeployedApi], expires_at: i64) -> Result<()> {
        self.put_json(key, APIS_ATTRIBUTE, Some(json_body(key, apis)?), Some(expires_at)).await
    }

    async fn load_snapshot(&self, key: &str) -> Result<Vec<DeployedApi>> {
        let missing = || AgentError::AwsRequestFailed(format!("snapshot {key} is missing (expired?)"));
        self.load_json(key, APIS_ATTRIBUTE).await?.ok_or_else(missing)
    }

    async fn put_catalog(&self, stage: &str, entries: &[CatalogEntry]) -> Result<()> {
        self.set_number(stage, "deployedApis", Some(entries.len() as i64)).await?;
        let key = catalog_key(stage);
        let body = gzip_json(&key, entries)?;
        if body.len() > CATALOG_BUDGET_BYTES {
            // Stored without its APIs: the metrics branch then lists API Gateway instead.
            tracing::warn!(stage, bytes = body.len(), "API catalog too large to store");
            return self.put_json(&key, APIS_ATTRIBUTE, None, None).await;
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key))
            .item(CATALOG_ATTRIBUTE, AttributeValue::B(Blob::new(body)))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    async fn load_catalog(&self, stage: &str) -> Result<Option<Vec<CatalogEntry>>> {
        let key = catalog_key(stage);
        match self.item(&key).await?.as_ref().and_then(|item| item.get(CATALOG_ATTRIBUTE)) {
            Some(AttributeValue::B(body)) => gunzip_json(&key, body.as_ref()).map(Some),
            // Written by an earlier version as JSON text, or too large to store.
            _ => self.load_json(&key, APIS_ATTRIBUTE).await,
        }
    }

    async fn put_report(&self, key: &str, report: &AgentMetricsModel, expires_at: i64) -> Result<()> {
        let body = gzip_json(key, report)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key.to_owned()))
            .item("report", AttributeValue::B(Blob::new(body)))
            .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    async fn load_report(&self, key: &str) -> Result<AgentMetricsModel> {
        let item = self.item(key).await?;
        let Some(AttributeValue::B(body)) = item.as_ref().and_then(|item| item.get("report")) else {
            return Err(AgentError::AwsRequestFailed(format!("report {key} is missing (expired?)")));
        };
        gunzip_json(key, body.as_ref())
    }

    async fn load_discovery(&self) -> Result<Option<Discovery>> {
        let Some(item) = self.item(DISCOVERY_KEY).await? else { return Ok(None) };
        let stages = match item.get("stages") {
            Some(AttributeValue::L(values)) => values.iter().filter_map(|v| v.as_s().ok().cloned()).collect(),
            _ => Vec::new(),
        };
        let listing_parts = match item.get("listingParts") {
            Some(AttributeValue::M(parts)) => parts
                .keys()
                .map(|stage| Ok((stage.clone(), number(parts, stage)?.unwrap_or_default() as usize)))
                .collect::<Result<_>>()?,
            _ => BTreeMap::new(),
        };
        Ok(number(&item, "discoveredAt")?.map(|at| Discovery { stages, at, listing_parts }))
    }

    async fn save_discovery(&self, discovery: &Discovery) -> Result<()> {
        // A list, not a string set: an account without stages is a valid (empty) discovery.
        let stages = discovery.stages.iter().map(|s| AttributeValue::S(s.clone())).collect();
        let parts = discovery
            .listing_parts
            .iter()
            .map(|(stage, n)| (stage.clone(), AttributeValue::N(n.to_string())))
            .collect();
        self.client
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(DISCOVERY_KEY.to_owned()))
            .item("stages", AttributeValue::L(stages))
            .item("discoveredAt", AttributeValue::N(discovery.at.to_string()))
            .item("listingParts", AttributeValue::M(parts))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    async fn record_registration(&self, stage: &str, registered_as: &str, registered_id: &str, at: i64) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            // A new runtime holds nothing yet: without an assets watermark the next listing is a
            // full sync, not an incremental one that would leave the runtime nearly empty.
            .update_expression(
                "SET registeredId = :id, registeredAs = :as, registeredAt = :at \
                 REMOVE assetsWatermark, assetsFullSyncAt, assetsAppliedEvents",
            )
            .expression_attribute_values(":id", AttributeValue::S(registered_id.to_owned()))
            .expression_attribute_values(":as", AttributeValue::S(registered_as.to_owned()))
            .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    async fn advance_assets_watermark(&self, update: &WatermarkUpdate, acked_at: i64) -> Result<bool> {
        let mut set = String::from(ADVANCE);
        let mut request = self.advance(&update.stage, Kind::Assets, update.position, acked_at);
        if let Some(at) = update.full_sync_at {
            set.push_str(", assetsFullSyncAt = :full");
            request = request.expression_attribute_values(":full", AttributeValue::N(at.to_string()));
        }
        // The applied events always describe the new position's overlap: kept with it, or
        // forgotten when this run applied none there.
        let expression = match &update.applied_events {
            Some(key) => {
                request = request.expression_attribute_values(":applied", AttributeValue::S(key.clone()));
                format!("{set}, {APPLIED_EVENTS} = :applied")
            }
            None => format!("{set} REMOVE {APPLIED_EVENTS}"),
        };
        conditional_update(request.update_expression(expression)).await
    }

    async fn advance_metrics_watermark(&self, stage: &str, position: i64, acked_at: i64) -> Result<bool> {
        let request = self.advance(stage, Kind::Metrics, position, acked_at);
        conditional_update(request.update_expression(ADVANCE)).await
    }

    async fn put_applied_events(&self, key: &str, ids: &[String], expires_at: i64) -> Result<()> {
        self.put_json(key, EVENT_IDS_ATTRIBUTE, Some(json_body(key, ids)?), Some(expires_at)).await
    }

    async fn load_applied_events(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.load_json(key, EVENT_IDS_ATTRIBUTE).await
    }

    async fn claim(&self, stage: &str, kind: Kind, holder: &str, now: i64, expires_at: i64) -> Result<Claim> {
        let request = self
            .claim_set(stage, kind, holder, expires_at)
            .condition_expression("attribute_not_exists(#by) OR #by = :holder OR #until < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        if conditional_update(request).await? {
            return Ok(Claim::Taken);
        }
        let item = self.item(stage).await?.unwrap_or_default();
        Ok(Claim::HeldBy(item.get(attributes(kind).claimed_by).and_then(|v| v.as_s().ok()).cloned()))
    }

    async fn take_over(&self, stage: &str, kind: Kind, previous: &str, holder: &str, expires_at: i64) -> Result<bool> {
        let request = self
            .claim_set(stage, kind, holder, expires_at)
            .condition_expression("#by = :previous")
            .expression_attribute_values(":previous", AttributeValue::S(previous.to_owned()));
        conditional_update(request).await
    }

    async fn record_outcome(&self, stage: &str, kind: Kind, succeeded: bool, at: i64) -> Result<()> {
        let names = attributes(kind);
        self.set_number(stage, if succeeded { names.succeeded_at } else { names.failed_at }, Some(at)).await
    }

    async fn record_heartbeat(&self, stage: &str, at: i64) -> Result<()> {
        self.set_number(stage, "lastHeartbeatAt", Some(at)).await
    }

    async fn set_metrics_in_flight(&self, stage: &str, window_end: Option<i64>) -> Result<()> {
        self.set_number(stage, METRICS_IN_FLIGHT, window_end).await
    }

    async fn release(&self, stage: &str, kind: Kind, holder: &str) -> Result<()> {
        let request = self
            .claim_update(stage, kind, holder)
            .update_expression("REMOVE #by, #until")
            .condition_expression("#by = :holder");
        // False: someone else holds the claim now, which is theirs to release.
        conditional_update(request).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ApiIdentity, ApiSeries, metrics_model};

    #[test]
    fn the_catalog_of_the_largest_region_is_stored_well_inside_one_dynamodb_item() {
        let kinds = [ApiKind::Rest, ApiKind::Http, ApiKind::WebSocket];
        let catalog: Vec<CatalogEntry> = (0..2_520)
            .map(|i| CatalogEntry {
                id: format!("{:010x}", i * 7919),
                kind: kinds[i % 3],
                name: format!("customer-facing-service-{i:05}-with-a-name-as-long-as-teams-write-them"),
                deployment: Some(format!("{:06x}", i * 104_729)),
                domains: vec![format!("api-{}.example.com", i % 40)],
            })
            .collect();

        let stored = gzip_json("#catalog#prod", &catalog).unwrap();

        assert!(serde_json::to_vec(&catalog).unwrap().len() > CATALOG_BUDGET_BYTES);
        assert!(stored.len() < CATALOG_BUDGET_BYTES / 4, "{} bytes stored", stored.len());
        let read: Vec<CatalogEntry> = gunzip_json("#catalog#prod", &stored).unwrap();
        assert_eq!(read, catalog);
        let malformed = gunzip_json::<Vec<CatalogEntry>>("#catalog#prod", b"not gzip").unwrap_err();
        assert!(malformed.to_string().contains("#catalog#prod is malformed"), "{malformed}");
    }

    #[test]
    fn a_window_of_2500_apis_is_stored_well_inside_one_dynamodb_item() {
        // The most one stage can serve, each with a long name and a minute of traffic each.
        let apis: Vec<(ApiIdentity, ApiSeries)> = (0..2_500)
            .map(|i| {
                let identity = ApiIdentity {
                    id: format!("{:010x}_production", i * 7919),
                    name: format!("customer-facing-service-{i:05}-with-a-name-as-long-as-teams-write-them"),
                    version: Some(format!("{:06x}", i * 104_729)),
                };
                let minute = |value: f64| (0..5).map(|m| (m * 60, value + m as f64)).collect();
                let series = ApiSeries {
                    count: minute(100.0 + i as f64),
                    client_errors: minute(3.0),
                    server_errors: minute(1.0),
                    latency: minute(87.5 + (i % 13) as f64),
                    integration_latency: minute(61.25 + (i % 7) as f64),
                };
                (identity, series)
            })
            .collect();
        let report = metrics_model(300, &apis);
        let json = serde_json::to_vec(&report).unwrap().len();

        let stored = gzip_json("#report#rt#300", &report).unwrap();

        assert!(json > 1_000_000, "{json} bytes of JSON");
        assert!(stored.len() < 350 * 1024, "{} bytes stored", stored.len());
        let read: AgentMetricsModel = gunzip_json("#report#rt#300", &stored).unwrap();
        assert_eq!(read.api_transaction_metrics_list.len(), 2_500);
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            (a, b) => a == b,
        };
        for (read, sent) in read.api_transaction_metrics_list.iter().zip(&report.api_transaction_metrics_list) {
            assert!(
                read.api_id == sent.api_id && read.api_metrics.transaction_count == sent.api_metrics.transaction_count
            );
            assert!(close(read.api_metrics.average_latency, sent.api_metrics.average_latency), "{}", sent.api_id);
        }
    }
}
