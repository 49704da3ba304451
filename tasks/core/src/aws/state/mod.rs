//! Amazon DynamoDB: the agent's state table, one table of string-keyed items.
//!
//! - [`StageProgress`]: one item per federated stage (the stage name is its key: the table belongs
//!   to one account and region) with its runtime registration, the two branch watermarks and how
//!   each branch last ended. Watermarks only move forward: every write is conditional, so an
//!   overlapping or replayed execution can never move one back.
//! - [`Claims`]: a branch *claims* a stage before listing its work, and an execution claims the
//!   account's listing, so two overlapping executions never do the same work twice.
//! - What one task hands the next without passing it through a state payload, by concern:
//!   [`Catalogs`] (the stages' API catalogs, the discovery, stored listings, chunk snapshots),
//!   [`Reports`] (metrics window reports, a CloudWatch read's progress) and [`AppliedEvents`]
//!   (the CloudTrail events a window applied). Large values are stored gzipped.
//! - [`Runs`]: what a branch's run did per stage (chunks published, APIs refused, a failure), read
//!   by `ack-watermark`; and [`Registry`]: every runtime the agent registered, to find orphans.
//! - [`Slots`]: the account's API Gateway pace, shared by every container (see [`crate::aws::pace`]).
//!
//! Items other than a stage's start with `#`, which no API Gateway stage name can.

mod applied;
mod catalogs;
mod claims;
mod progress;
mod push;
mod reports;
mod runs;
mod slots;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::applied::{AppliedEvents, applied_events_key};
pub use self::catalogs::{CatalogEntry, Catalogs, Discovery, listing_key, snapshot_key};
pub use self::claims::{Claim, ClaimOn, Claims};
pub use self::progress::{Outcomes, RuntimeState, StageProgress, parse_pushed_entry, pushed_entry};
pub use self::push::PushStatuses;
pub use self::reports::{Reports, progress_key, report_key};
pub use self::runs::{Registered, Registry, RunEntry, RunRecord, Runs};
pub use self::slots::{API_GATEWAY_SCHEDULE, Slots};
use super::sdk_error;
use crate::error::{AgentError, Result};

/// Everything the tasks keep in the state table.
pub trait StateStore:
    StageProgress + Claims + Catalogs + Reports + AppliedEvents + Runs + Registry + PushStatuses
{
}

impl<T: StageProgress + Claims + Catalogs + Reports + AppliedEvents + Runs + Registry + PushStatuses> StateStore for T {}

#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
    /// The prefix of every key this store reads and writes: its target's (see
    /// [`crate::target::Target::state_scope`]); empty for the deployment's own account-region.
    scope: String,
}

/// The table's partition key (string).
pub const KEY: &str = "stage";

/// The attribute the table's TTL reads: documents and run records expire by themselves.
pub const EXPIRES_AT: &str = "expiresAt";
/// How long the items carrying one execution's work live (chunk snapshots, metrics reports and
/// read progress, run records, applied events): far beyond the longest execution (an hour), and
/// a day's runs later the table's TTL removes them. (An older watermark re-applies its overlap.)
pub const WORK_TTL_SECONDS: i64 = 86_400;

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), scope: String::new() }
    }

    /// The same table, reading and writing only the items of the target whose scope is `scope`.
    pub fn scoped(&self, scope: impl Into<String>) -> Self {
        Self { client: self.client.clone(), table: self.table.clone(), scope: scope.into() }
    }

    /// The table key of the item this store calls `key`.
    fn key(&self, key: &str) -> AttributeValue {
        AttributeValue::S(format!("{}{key}", self.scope))
    }

    /// The name this store gives the item under the table key `stored`; `None` when the item
    /// belongs to another target.
    fn unscoped<'k>(&self, stored: &'k str) -> Option<&'k str> {
        let key = stored.strip_prefix(&self.scope)?;
        (!key.contains('/')).then_some(key)
    }

    /// The item under `key`, read consistently: watermarks and claims must not be stale.
    async fn item(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, self.key(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:GetItem", e))?;
        Ok(output.item)
    }

    /// An update of the item under `key`, to be given its expression.
    fn update(&self, key: &str) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key(KEY, self.key(key))
    }

    /// Puts the item `key` holding the JSON text `json` (if any) in `attribute`, expiring at
    /// `expires_at` (if any).
    async fn put_json(&self, key: &str, attribute: &str, json: Option<String>, expires_at: Option<i64>) -> Result<()> {
        let mut request = self.client.put_item().table_name(&self.table).item(KEY, self.key(key));
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
        parse_json(key, &body).map(Some)
    }

    /// Sets a number attribute of the item `key` (`Some`) or removes it (`None`).
    async fn set_number(&self, key: &str, attribute: &str, value: Option<i64>) -> Result<()> {
        let request = self.update(key).expression_attribute_names("#attribute", attribute);
        let request = match value {
            Some(value) => request
                .update_expression("SET #attribute = :value")
                .expression_attribute_values(":value", AttributeValue::N(value.to_string())),
            None => request.update_expression("REMOVE #attribute"),
        };
        request.send().await.map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }
}

impl DynamoStateStore {
    /// Puts the item `key` holding `body` (gzipped JSON) in `attribute`, expiring at `expires_at`.
    async fn put_gzipped(&self, key: &str, attribute: &str, body: Vec<u8>, expires_at: Option<i64>) -> Result<()> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, self.key(key))
            .item(attribute, AttributeValue::B(Blob::new(body)));
        if let Some(at) = expires_at {
            request = request.item(EXPIRES_AT, AttributeValue::N(at.to_string()));
        }
        request.send().await.map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    /// The gzipped JSON in `attribute` of the item `key`; `None` when the item or the attribute
    /// is absent.
    async fn load_gzipped<T: DeserializeOwned>(&self, key: &str, attribute: &str) -> Result<Option<T>> {
        match self.item(key).await?.as_ref().and_then(|item| item.get(attribute)) {
            Some(AttributeValue::B(body)) => gunzip_json(key, body.as_ref()).map(Some),
            _ => Ok(None),
        }
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

fn parse_json<T: DeserializeOwned>(key: &str, body: &str) -> Result<T> {
    serde_json::from_str(body).map_err(|e| AgentError::AwsRequestFailed(format!("state item {key} is malformed: {e}")))
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

fn string(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}
