//! What a branch's run did for a stage, and the runtimes the agent registered.
//!
//! A run record (`#run#<kind>#<execution>#<stage>`, see [`crate::model::run_key`]) holds one
//! attribute per fact, each written on its own, so the publishes of a stage's chunks (several at
//! once in the Map) never overwrite each other: `done_<chunk>` for every chunk published,
//! `refused_<api>` for every API the control plane refused, `failure` for a chunk's error.
//! `ack-watermark` reads it to decide whether the stage's watermark may move.
//!
//! The registry (`#registry`) holds one attribute per runtime the agent registered, so a runtime
//! whose stage is no longer federated is found and cleaned up.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::{DynamoStateStore, EXPIRES_AT, KEY, json_body, parse_json, string};
use crate::aws::sdk_error;
use crate::error::{AgentError, Result};
use crate::model::Refused;

/// One fact of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEntry<'a> {
    /// The stage's chunk of this index was published, every API of it sent or refused.
    ChunkDone(usize),
    Refused(&'a Refused),
    /// A chunk failed after its retries, with this error type and cause.
    Failure {
        error: &'a str,
        cause: &'a str,
    },
}

/// What a run record holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRecord {
    pub chunks_done: BTreeSet<usize>,
    /// Refused APIs: carried over from earlier runs and refused in this one.
    pub refused: Vec<Refused>,
    /// The last chunk failure recorded: (error type, cause).
    pub failure: Option<(String, String)>,
}

pub trait Runs: Send + Sync {
    /// Starts the run record `key` with the refused APIs carried over from earlier runs
    /// (replacing what a retried list-changes wrote before).
    fn start_run(&self, key: &str, carried: &[Refused], expires_at: i64) -> impl Future<Output = Result<()>> + Send;
    /// Adds one fact to the run record `key`.
    fn record_in_run(&self, key: &str, entry: RunEntry<'_>, expires_at: i64)
    -> impl Future<Output = Result<()>> + Send;
    /// The run record `key` (empty when there is none).
    fn load_run(&self, key: &str) -> impl Future<Output = Result<RunRecord>> + Send;
}

/// A runtime the agent registered, and since when it has been orphaned (its stage no longer
/// federated, or registered again under another id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registered {
    pub runtime_id: String,
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_since: Option<i64>,
}

pub trait Registry: Send + Sync {
    /// Every runtime the agent registered; `None` before the registry was first written (a new
    /// installation, or one from before the registry: see [`Registry::scan_registrations`]).
    fn load_registry(&self) -> impl Future<Output = Result<Option<Vec<Registered>>>> + Send;
    /// The runtimes the stage items name (a one-off scan of the table, to start the registry).
    fn scan_registrations(&self) -> impl Future<Output = Result<Vec<Registered>>> + Send;
    /// Adds or updates one runtime of the registry.
    fn put_registered(&self, runtime: &Registered) -> impl Future<Output = Result<()>> + Send;
    /// Removes one runtime from the registry.
    fn forget_registered(&self, runtime_id: &str) -> impl Future<Output = Result<()>> + Send;
}

// Attribute names without `#`: moto takes one inside a placeholder's name for another placeholder.
const DONE_PREFIX: &str = "done_";
const REFUSED_PREFIX: &str = "refused_";
const FAILURE: &str = "failure";
const REGISTRY_KEY: &str = "#registry";
const RUNTIME_PREFIX: &str = "runtime_";

#[derive(Serialize, Deserialize)]
struct FailureBody {
    error: String,
    cause: String,
}

impl Runs for DynamoStateStore {
    async fn start_run(&self, key: &str, carried: &[Refused], expires_at: i64) -> Result<()> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(KEY, self.key(key))
            .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()));
        for refused in carried {
            request =
                request.item(format!("{REFUSED_PREFIX}{}", refused.id), AttributeValue::S(json_body(key, refused)?));
        }
        request.send().await.map_err(|e| sdk_error("dynamodb:PutItem", e))?;
        Ok(())
    }

    async fn record_in_run(&self, key: &str, entry: RunEntry<'_>, expires_at: i64) -> Result<()> {
        let (attribute, value) = match entry {
            RunEntry::ChunkDone(index) => (format!("{DONE_PREFIX}{index}"), AttributeValue::N("1".into())),
            RunEntry::Refused(refused) => {
                (format!("{REFUSED_PREFIX}{}", refused.id), AttributeValue::S(json_body(key, refused)?))
            }
            RunEntry::Failure { error, cause } => {
                let body = FailureBody { error: error.to_owned(), cause: cause.to_owned() };
                (FAILURE.to_owned(), AttributeValue::S(json_body(key, &body)?))
            }
        };
        self.update(key)
            .update_expression("SET #fact = :value, #expires = :expires")
            .expression_attribute_names("#fact", attribute)
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":value", value)
            .expression_attribute_values(":expires", AttributeValue::N(expires_at.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    async fn load_run(&self, key: &str) -> Result<RunRecord> {
        let Some(item) = self.item(key).await? else { return Ok(RunRecord::default()) };
        let mut record = RunRecord::default();
        for (name, value) in &item {
            if let Some(index) = name.strip_prefix(DONE_PREFIX) {
                let index = index.parse().map_err(|_| malformed(key, name))?;
                record.chunks_done.insert(index);
            } else if name.starts_with(REFUSED_PREFIX) {
                record.refused.push(parse_json(key, value.as_s().map_err(|_| malformed(key, name))?)?);
            }
        }
        record.refused.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(failure) = string(&item, FAILURE) {
            let body: FailureBody = parse_json(key, &failure)?;
            record.failure = Some((body.error, body.cause));
        }
        Ok(record)
    }
}

fn malformed(key: &str, attribute: &str) -> AgentError {
    AgentError::AwsRequestFailed(format!("state item {key} has a malformed attribute {attribute}"))
}

impl Registry for DynamoStateStore {
    async fn load_registry(&self) -> Result<Option<Vec<Registered>>> {
        let Some(item) = self.item(REGISTRY_KEY).await? else { return Ok(None) };
        let mut runtimes = item
            .iter()
            .filter(|(name, _)| name.starts_with(RUNTIME_PREFIX))
            .map(|(name, value)| parse_json(REGISTRY_KEY, value.as_s().map_err(|_| malformed(REGISTRY_KEY, name))?))
            .collect::<Result<Vec<Registered>>>()?;
        runtimes.sort_by(|a, b| a.runtime_id.cmp(&b.runtime_id));
        Ok(Some(runtimes))
    }

    async fn scan_registrations(&self) -> Result<Vec<Registered>> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .projection_expression("#key, registeredId")
                .filter_expression("attribute_exists(registeredId)")
                .expression_attribute_names("#key", KEY)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("dynamodb:Scan", e))?;
            for item in page.items() {
                let stage = string(item, KEY);
                if let (Some(stage), Some(runtime_id)) =
                    (stage.as_deref().and_then(|key| self.unscoped(key)), string(item, "registeredId"))
                {
                    found.push(Registered { runtime_id, stage: stage.to_owned(), orphaned_since: None });
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(found),
            }
        }
    }

    async fn put_registered(&self, runtime: &Registered) -> Result<()> {
        self.update(REGISTRY_KEY)
            .update_expression("SET #runtime = :runtime")
            .expression_attribute_names("#runtime", format!("{RUNTIME_PREFIX}{}", runtime.runtime_id))
            .expression_attribute_values(":runtime", AttributeValue::S(json_body(REGISTRY_KEY, runtime)?))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    async fn forget_registered(&self, runtime_id: &str) -> Result<()> {
        self.update(REGISTRY_KEY)
            .update_expression("REMOVE #runtime")
            .expression_attribute_names("#runtime", format!("{RUNTIME_PREFIX}{runtime_id}"))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }
}
