//! The stages' API catalogs, the account's discovery and stored listings, and chunk snapshots:
//! what API Gateway deploys, as one task read it for the next (list-changes for transform,
//! ensure-runtime for list-changes, the assets branch for the metrics branch).

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::progress::DEPLOYED_APIS;
use super::{DynamoStateStore, KEY, gzip_json, json_body, number, string};
use crate::aws::apigateway::{ApiKind, DeployedApi};
use crate::aws::sdk_error;
use crate::error::{AgentError, Result};

pub trait Catalogs: Send + Sync {
    /// Stores the APIs of one chunk (what list-changes read from API Gateway), or one part of a
    /// stored listing, under `key`, removed by the table's TTL after `expires_at`.
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

/// The key of one part of a stored listing of `stage`: named by the listing's time, so a
/// reader never mixes the parts of two listings.
pub fn listing_key(listed_at: i64, stage: &str, part: usize) -> String {
    format!("#listing#{listed_at}#{stage}#{part}")
}

impl Catalogs for DynamoStateStore {
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
    use crate::aws::state::gunzip_json;

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
    fn every_key_starts_with_the_kind_the_grants_name() {
        // The functions' dynamodb:LeadingKeys grants are written by these prefixes (cdk/lib/agent-stack.ts).
        assert_eq!(catalog_key("prod"), "#catalog#prod");
        assert!(snapshot_key("arn:aws:states:eu-west-1:1:execution:w:r", "prod", 3).starts_with("#snapshot#"));
        assert_eq!(listing_key(1_800_000_000, "prod", 2), "#listing#1800000000#prod#2");
        assert_ne!(listing_key(1, "a", 12), listing_key(1, "a1", 2), "parts of two stages never share a key");
    }
}
