//! What one task hands the next through the table rather than through a state payload: chunk
//! snapshots, the stages' API catalogs, stored listings and the discovery, metrics reports and a
//! read's progress, the CloudTrail events a run applied. Large values are stored gzipped.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::progress::DEPLOYED_APIS;
use super::{DynamoStateStore, EXPIRES_AT, KEY, gunzip_json, gzip_json, json_body, number, string};
use crate::aws::apigateway::{ApiKind, DeployedApi};
use crate::aws::sdk_error;
use crate::control_plane::types::AgentMetricsModel;
use crate::error::{AgentError, Result};
use crate::model::RuntimeWindows;

pub trait Documents: Send + Sync {
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
    /// Stores any value under `key` (gzipped JSON), removed by the table's TTL after `expires_at`.
    fn put_document<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        expires_at: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The value stored under `key`; `None` when there is none (or it expired).
    fn load_document<T: DeserializeOwned>(&self, key: &str) -> impl Future<Output = Result<Option<T>>> + Send;
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

/// A catalog is stored gzipped in one item: below DynamoDB's 400 KB items, and far above the
/// largest region (2,520 APIs of 70-character names: about 400 KB of JSON, under 40 KB gzipped).
const CATALOG_BUDGET_BYTES: usize = 350 * 1024;

/// The outcome of listing every deployed stage of the account and region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub stages: Vec<String>,
    pub at: i64,
    /// The execution that listed the account: only its own full sync reuses the listing.
    pub execution_id: String,
    /// When the listing itself was stored (see [`listing_key`]): the number of parts of each
    /// stage's APIs; empty when only the stage names were kept.
    pub listing_parts: BTreeMap<String, usize>,
}

/// The attribute holding a stage's catalog, gzipped JSON.
const CATALOG_ATTRIBUTE: &str = "apisGzip";
/// The attribute of a snapshot's (or an older catalog's) APIs, a JSON list.
const APIS_ATTRIBUTE: &str = "apis";
/// The attribute of the applied events' ids (a JSON list).
const EVENT_IDS_ATTRIBUTE: &str = "eventIds";
/// The attribute of a document stored with [`Documents::put_document`] (gzipped JSON).
const DOCUMENT_ATTRIBUTE: &str = "document";

/// The key of the discovery item.
const DISCOVERY_KEY: &str = "#discovery";

fn catalog_key(stage: &str) -> String {
    format!("#catalog#{stage}")
}

/// The key of a chunk's snapshot: unique per execution, stage and chunk, so a retried
/// list-changes overwrites its own snapshots and nobody else's.
pub fn snapshot_key(execution_id: &str, stage: &str, chunk: usize) -> String {
    format!("#snapshot#{execution_id}#{stage}#{chunk}")
}

/// The key of the CloudTrail events an execution applied in the overlap of the window after
/// `window_end`: a retried list-changes overwrites its own.
pub fn applied_events_key(execution_id: &str, window_end: i64) -> String {
    format!("#applied#{execution_id}#{window_end}")
}

/// The key of the report of the metrics window of `runtime_id` that ends at `window_end`.
pub fn report_key(runtime_id: &str, window_end: i64) -> String {
    format!("#report#{runtime_id}#{window_end}")
}

/// The key of the progress of a CloudWatch read of a runtime's windows that outlived one
/// invocation (`part`: what it stored; see `handlers::transform`): named by the runtime, the
/// windows' span and their interval, so a resumed read always finds the same windows.
pub fn progress_key(windows: &RuntimeWindows, part: &str) -> String {
    let RuntimeWindows { runtime_id, start, end, interval, .. } = windows;
    format!("#progress#{runtime_id}#{start}#{end}#{interval}#{part}")
}

/// The key of one part of a stored listing of `stage`: named by the listing's time, so a
/// reader never mixes the parts of two listings.
pub fn listing_key(listed_at: i64, stage: &str, part: usize) -> String {
    format!("#listing#{listed_at}#{stage}#{part}")
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

impl Documents for DynamoStateStore {
    async fn put_snapshot(&self, key: &str, apis: &[DeployedApi], expires_at: i64) -> Result<()> {
        self.put_json(key, APIS_ATTRIBUTE, Some(json_body(key, apis)?), Some(expires_at)).await
    }

    async fn load_snapshot(&self, key: &str) -> Result<Vec<DeployedApi>> {
        let missing = || AgentError::AwsRequestFailed(format!("snapshot {key} is missing (expired?)"));
        self.load_json(key, APIS_ATTRIBUTE).await?.ok_or_else(missing)
    }

    async fn put_catalog(&self, stage: &str, entries: &[CatalogEntry]) -> Result<()> {
        let key = catalog_key(stage);
        let body = gzip_json(&key, entries)?;
        if body.len() > CATALOG_BUDGET_BYTES {
            // Beyond any region API Gateway allows; named rather than stored in part.
            return Err(AgentError::AwsRequestFailed(format!(
                "the API catalog of stage {stage} is {} bytes gzipped, more than a state item holds",
                body.len()
            )));
        }
        self.put_gzipped(&key, CATALOG_ATTRIBUTE, body, None).await?;
        self.set_number(stage, DEPLOYED_APIS, Some(entries.len() as i64)).await
    }

    async fn load_catalog(&self, stage: &str) -> Result<Option<Vec<CatalogEntry>>> {
        let key = catalog_key(stage);
        match self.load_gzipped(&key, CATALOG_ATTRIBUTE).await? {
            Some(catalog) => Ok(Some(catalog)),
            // Written by an earlier version as JSON text.
            None => self.load_json(&key, APIS_ATTRIBUTE).await,
        }
    }

    async fn put_report(&self, key: &str, report: &AgentMetricsModel, expires_at: i64) -> Result<()> {
        self.put_gzipped(key, "report", gzip_json(key, report)?, Some(expires_at)).await
    }

    async fn load_report(&self, key: &str) -> Result<AgentMetricsModel> {
        let missing = || AgentError::AwsRequestFailed(format!("report {key} is missing (expired?)"));
        self.load_gzipped(key, "report").await?.ok_or_else(missing)
    }

    async fn put_document<T: Serialize + Sync>(&self, key: &str, value: &T, expires_at: i64) -> Result<()> {
        self.put_gzipped(key, DOCUMENT_ATTRIBUTE, gzip_json(key, value)?, Some(expires_at)).await
    }

    async fn load_document<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.load_gzipped(key, DOCUMENT_ATTRIBUTE).await
    }

    async fn put_applied_events(&self, key: &str, ids: &[String], expires_at: i64) -> Result<()> {
        self.put_json(key, EVENT_IDS_ATTRIBUTE, Some(json_body(key, ids)?), Some(expires_at)).await
    }

    async fn load_applied_events(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.load_json(key, EVENT_IDS_ATTRIBUTE).await
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
        let execution_id = string(&item, "discoveredBy").unwrap_or_default();
        Ok(number(&item, "discoveredAt")?.map(|at| Discovery { stages, at, execution_id, listing_parts }))
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
            .item(KEY, self.key(DISCOVERY_KEY))
            .item("stages", AttributeValue::L(stages))
            .item("discoveredAt", AttributeValue::N(discovery.at.to_string()))
            .item("discoveredBy", AttributeValue::S(discovery.execution_id.clone()))
            .item("listingParts", AttributeValue::M(parts))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ApiIdentity, ApiSeries, Totals, metrics_model};

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
        let totals: Vec<(ApiIdentity, Totals)> = apis.iter().map(|(api, s)| (api.clone(), Totals::of(s))).collect();
        let report = metrics_model(300, &totals);
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
