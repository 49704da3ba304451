//! Push mode: API Gateway's write calls, as EventBridge receives them from CloudTrail ("AWS API
//! Call via CloudTrail"), queued in SQS and handed to the *push starter* in batches.
//!
//! The starter checks each event (an API Gateway write call of a target the deployment covers;
//! anything else is logged and dropped, never retried), reduces it to what locates the change,
//! and starts one execution of the sync workflow per target and batch with the events in its
//! input (`{"target":…, "pushed":[…]}`): a burst of changes makes one execution, not one per
//! change. The assets branch applies them at once; the poll that reads the same events from
//! CloudTrail later skips them by their `eventID`. The account and region come from the event's
//! `detail` (`recipientAccountId`, `awsRegion`): a forwarded event's envelope names the bus that
//! re-emitted it.
//!
//! [`PushCheck`] tells whether push can work for a target at all: EventBridge receives these
//! events only where a CloudTrail trail logs management write events.

use std::collections::BTreeMap;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::aws::cloudtrail::{API_GATEWAY_EVENT_SOURCE, Trails};
use crate::aws::executions::ExecutionStarter;
use crate::aws::state::StateStore;
use crate::config::{Config, TargetAccounts, TargetSettings};
use crate::error::Result;
use crate::model::{ExecutionInput, PushStatus, PushedEvent};
use crate::target::Target;
use crate::telemetry;

/// How long a target's trail check is reused: trails rarely change, and each check is a few
/// CloudTrail calls.
pub const PUSH_CHECK_SECONDS: i64 = 3600;

/// The most events one execution applies; a larger batch starts several. Their input stays far
/// below Step Functions' 256 KiB (a reduced event is a few hundred bytes).
pub const EVENTS_PER_EXECUTION: usize = 100;

/// An execution's pushed events, serialized, at most (reduced events of unusual size).
const PUSHED_BYTES_PER_EXECUTION: usize = 96 * 1024;

/// EventBridge's `detail-type` of CloudTrail's API call events.
const DETAIL_TYPE: &str = "AWS API Call via CloudTrail";
const SOURCE: &str = "aws.apigateway";

/// Whether a target's changes can be pushed, checked at most once per [`PUSH_CHECK_SECONDS`].
pub struct PushCheck<'a, T, S> {
    pub config: &'a Config,
    pub trails: &'a T,
    pub state: &'a S,
}

impl<T: Trails, S: StateStore> PushCheck<'_, T, S> {
    /// `None` without push mode. Never fails the run: a check that cannot be made says why.
    pub async fn status(&self, now: i64) -> Option<PushStatus> {
        if !self.config.push_mode {
            return None;
        }
        let stored = match self.state.load_push_status().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "push status not read; checking the trails again");
                None
            }
        };
        if let Some(status) = stored.filter(|s| now - s.checked_at < PUSH_CHECK_SECONDS) {
            return Some(status);
        }
        let status = match self.trails.management_write_trail().await {
            Ok(trail) => PushStatus { available: true, reason: format!("trail {trail}"), checked_at: now },
            Err(reason) => {
                tracing::warn!(reason, "push unavailable: changes arrive by polling CloudTrail only");
                PushStatus { available: false, reason, checked_at: now }
            }
        };
        if let Err(error) = self.state.put_push_status(&status).await {
            tracing::warn!(%error, "push status not stored; checked again next run");
        }
        telemetry::emit(&telemetry::push_unavailable_record(!status.available, now));
        Some(status)
    }
}

/// The event Lambda's SQS event source invokes the starter with (the fields it reads).
#[derive(Debug, Clone, Deserialize)]
pub struct SqsBatch {
    #[serde(rename = "Records")]
    pub records: Vec<SqsMessage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SqsMessage {
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(default)]
    pub body: String,
}

/// The answer Lambda's event source reads with `ReportBatchItemFailures`: the messages to
/// deliver again (the others are deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Starts the executions that apply a batch of pushed events.
pub struct PushStarter<'a, X> {
    pub settings: &'a TargetSettings,
    /// The deployment's own account-region.
    pub home: &'a Target,
    pub starter: &'a X,
    /// The sync workflow's state machine ARN.
    pub sync_workflow: &'a str,
}

impl<X: ExecutionStarter> PushStarter<'_, X> {
    /// One execution per target (or a few, for a large batch). A message whose execution could
    /// not be started is answered as failed, so SQS delivers it again (and, after its receive
    /// limit, moves it to the dead-letter queue); an event that is not for us is dropped.
    pub async fn run(&self, batch: SqsBatch, now: i64) -> BatchResponse {
        let mut by_target: BTreeMap<Target, Vec<(String, PushedEvent)>> = BTreeMap::new();
        let mut ignored = 0;
        for message in batch.records {
            match pushed_event(&message.body).and_then(|(target, event)| self.covered(target).map(|t| (t, event))) {
                Ok((target, event)) => by_target.entry(target).or_default().push((message.message_id, event)),
                Err(reason) => {
                    // Never the body: a foreign event may carry anything.
                    tracing::warn!(message_id = message.message_id, reason, "event ignored");
                    ignored += 1;
                }
            }
        }
        let received: usize = by_target.values().map(Vec::len).sum();
        let mut response = BatchResponse::default();
        let mut started = 0;
        for (target, events) in by_target {
            for group in groups(events) {
                let (ids, events): (Vec<String>, Vec<PushedEvent>) = group.into_iter().unzip();
                match self.start(&target, events).await {
                    Ok(true) => started += 1,
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%target, %error, messages = ids.len(), "execution not started; SQS delivers them again");
                        response.failures.extend(ids.into_iter().map(|id| ItemFailure { item_identifier: id }));
                    }
                }
            }
        }
        tracing::info!(received, ignored, started, failed = response.failures.len(), "push batch");
        telemetry::emit(&telemetry::push_batch_record(received, ignored, started, now));
        response
    }

    /// Starts the execution applying `events` to `target`; `false` when it exists already (the
    /// same batch delivered again).
    async fn start(&self, target: &Target, mut events: Vec<PushedEvent>) -> Result<bool> {
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        let name = execution_name(target, &events);
        let input = ExecutionInput {
            target: (target != self.home).then(|| target.clone()),
            pushed: events,
            ..ExecutionInput::default()
        };
        let input = serde_json::to_string(&input)
            .map_err(|e| crate::AgentError::invalid_input(format!("pushed events not serializable: {e}")))?;
        let started = self.starter.start(self.sync_workflow, &name, &input).await?;
        if started.is_none() {
            tracing::info!(name, "execution exists already: this batch was delivered before");
        }
        Ok(started.is_some())
    }

    /// The event's target if the deployment federates it.
    fn covered(&self, target: Target) -> std::result::Result<Target, String> {
        let account = match &self.settings.accounts {
            TargetAccounts::OwnAccount => target.account == self.home.account,
            TargetAccounts::Listed(accounts) => accounts.contains(&target.account),
            // Only the organization's accounts can put events on the agent's bus (its policy).
            TargetAccounts::Organization => true,
        };
        let region = match self.settings.regions.is_empty() {
            true => target.region == self.home.region,
            false => self.settings.regions.contains(&target.region),
        };
        match account && region {
            true => Ok(target),
            false => Err(format!("target {target} is not federated by this deployment")),
        }
    }
}

/// Events in groups of at most [`EVENTS_PER_EXECUTION`] and [`PUSHED_BYTES_PER_EXECUTION`].
fn groups<T>(events: Vec<(T, PushedEvent)>) -> Vec<Vec<(T, PushedEvent)>> {
    let mut groups: Vec<Vec<(T, PushedEvent)>> = vec![];
    let mut bytes = 0;
    for (key, event) in events {
        let size = serde_json::to_string(&event).map_or(0, |json| json.len());
        match groups.last_mut() {
            Some(group) if group.len() < EVENTS_PER_EXECUTION && bytes + size <= PUSHED_BYTES_PER_EXECUTION => {
                bytes += size;
                group.push((key, event));
            }
            _ => {
                bytes = size;
                groups.push(vec![(key, event)]);
            }
        }
    }
    groups
}

/// `push-<hash>` of the target and the events' ids: the same batch delivered again names the
/// same execution, which Step Functions refuses to start twice.
pub fn execution_name(target: &Target, events: &[PushedEvent]) -> String {
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(target.to_string().as_bytes());
    for event in events {
        feed(b"\n");
        feed(event.id.as_bytes());
    }
    format!("push-{}-{}-{hash:016x}", target.account, target.region)
}

/// The target and the reduced event of an SQS message's body; why not, for anything that is
/// not a successful write call of API Gateway.
pub fn pushed_event(body: &str) -> std::result::Result<(Target, PushedEvent), String> {
    let event: Value = serde_json::from_str(body).map_err(|_| "the body is not JSON".to_owned())?;
    let text = |value: &Value, field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    if text(&event, "detail-type").as_deref() != Some(DETAIL_TYPE) || text(&event, "source").as_deref() != Some(SOURCE)
    {
        return Err("not an API Gateway call delivered by CloudTrail".into());
    }
    let detail = event.get("detail").filter(|d| d.is_object()).ok_or("no detail")?;
    if text(detail, "eventSource").as_deref() != Some(API_GATEWAY_EVENT_SOURCE) {
        return Err("not an API Gateway call".into());
    }
    if detail.get("readOnly").and_then(Value::as_bool) == Some(true) {
        return Err("a read-only call".into());
    }
    if detail.get("errorCode").is_some_and(|code| !code.is_null()) {
        return Err("a failed call changes nothing".into());
    }
    let id = text(detail, "eventID").filter(|id| !id.is_empty()).ok_or("no eventID")?;
    let name = text(detail, "eventName").filter(|name| !name.is_empty()).ok_or("no eventName")?;
    let time = text(detail, "eventTime")
        .and_then(|time| DateTime::from_str(&time, Format::DateTime).ok())
        .ok_or("no eventTime")?
        .secs();
    let account = text(detail, "recipientAccountId").ok_or("no recipientAccountId")?;
    let region = text(detail, "awsRegion").ok_or("no awsRegion")?;
    let target = Target::new(account, region).checked().map_err(|e| e.to_string())?;
    // The request's path and names: its top-level text fields (bodies hold other ids).
    let request_parameters: Map<String, Value> = detail
        .get("requestParameters")
        .and_then(Value::as_object)
        .map(|fields| fields.iter().filter(|(_, v)| v.is_string()).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    // A created or imported API is named only here.
    let response_elements: Map<String, Value> = detail
        .get("responseElements")
        .and_then(Value::as_object)
        .map(|fields| {
            fields
                .iter()
                .filter(|(k, v)| matches!(k.as_str(), "id" | "apiId") && v.is_string())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok((target, PushedEvent { id, time, name, request_parameters, response_elements }))
}
