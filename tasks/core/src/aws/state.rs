//! Amazon DynamoDB: one item per federated stage with its runtime registration and the two
//! branch watermarks. The stage name is the key: the table belongs to one account and region.
//!
//! Watermarks only move forward: every write is conditional, so an overlapping or replayed
//! execution can never move one back.

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::sdk_error;
use crate::error::{AgentError, Result};
use crate::model::Kind;

/// What the table remembers about one runtime. Times are epoch seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// The control plane's id of the runtime registered for this stage.
    pub registered_id: Option<String>,
    /// The runtime id we asked for at registration; a changed id template re-registers.
    pub registered_as: Option<String>,
    pub assets_watermark: Option<i64>,
    pub assets_full_sync_at: Option<i64>,
    pub metrics_watermark: Option<i64>,
}

impl RuntimeState {
    pub fn watermark(&self, kind: Kind) -> Option<i64> {
        match kind {
            Kind::Assets => self.assets_watermark,
            Kind::Metrics => self.metrics_watermark,
        }
    }
}

pub trait StateStore: Send + Sync {
    /// The runtime's item; the default (nothing known) when there is none.
    fn load(&self, stage: &str) -> impl Future<Output = Result<RuntimeState>> + Send;
    fn record_registration(
        &self,
        stage: &str,
        registered_as: &str,
        registered_id: &str,
        at: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Moves the branch's watermark to `position` if that is ahead of the stored one; returns
    /// whether it moved. `full_sync_at` records a completed full reconciliation.
    fn advance_watermark(
        &self,
        stage: &str,
        kind: Kind,
        position: i64,
        full_sync_at: Option<i64>,
        acked_at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
}

#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: Client,
    table: String,
}

/// The table's partition key (string).
pub const KEY: &str = "stage";

fn watermark_attribute(kind: Kind) -> &'static str {
    match kind {
        Kind::Assets => "assetsWatermark",
        Kind::Metrics => "metricsWatermark",
    }
}

fn acked_at_attribute(kind: Kind) -> &'static str {
    match kind {
        Kind::Assets => "assetsAckedAt",
        Kind::Metrics => "metricsAckedAt",
    }
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
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

impl StateStore for DynamoStateStore {
    async fn load(&self, stage: &str) -> Result<RuntimeState> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:GetItem", e))?;
        let Some(item) = output.item else { return Ok(RuntimeState::default()) };
        Ok(RuntimeState {
            registered_id: item.get("registeredId").and_then(|v| v.as_s().ok()).cloned(),
            registered_as: item.get("registeredAs").and_then(|v| v.as_s().ok()).cloned(),
            assets_watermark: number(&item, watermark_attribute(Kind::Assets))?,
            assets_full_sync_at: number(&item, "assetsFullSyncAt")?,
            metrics_watermark: number(&item, watermark_attribute(Kind::Metrics))?,
        })
    }

    async fn record_registration(&self, stage: &str, registered_as: &str, registered_id: &str, at: i64) -> Result<()> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            .update_expression("SET registeredId = :id, registeredAs = :as, registeredAt = :at")
            .expression_attribute_values(":id", AttributeValue::S(registered_id.to_owned()))
            .expression_attribute_values(":as", AttributeValue::S(registered_as.to_owned()))
            .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    async fn advance_watermark(
        &self,
        stage: &str,
        kind: Kind,
        position: i64,
        full_sync_at: Option<i64>,
        acked_at: i64,
    ) -> Result<bool> {
        let mut update = String::from("SET #wm = :pos, #acked = :acked");
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(stage.to_owned()))
            .condition_expression("attribute_not_exists(#wm) OR #wm < :pos")
            .expression_attribute_names("#wm", watermark_attribute(kind))
            .expression_attribute_names("#acked", acked_at_attribute(kind))
            .expression_attribute_values(":pos", AttributeValue::N(position.to_string()))
            .expression_attribute_values(":acked", AttributeValue::N(acked_at.to_string()));
        if let Some(at) = full_sync_at {
            update.push_str(", assetsFullSyncAt = :full");
            request = request.expression_attribute_values(":full", AttributeValue::N(at.to_string()));
        }
        match request.update_expression(update).send().await {
            Ok(_) => Ok(true),
            // The stored watermark is already at or past this position: nothing to do.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(sdk_error("dynamodb:UpdateItem", e)),
        }
    }
}
