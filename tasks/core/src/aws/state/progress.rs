//! The item of each federated stage: its runtime registration, the branches' watermarks and
//! outcomes, the APIs the control plane refuses, the heartbeat.

use std::future::Future;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoStateStore, conditional_update, json_body, number, parse_json, string};
use crate::aws::sdk_error;
use crate::error::Result;
use crate::model::{Kind, Refused, WatermarkUpdate};

/// What the table remembers about one runtime. Times are epoch seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// The control plane's id of the runtime registered for this stage.
    pub registered_id: Option<String>,
    /// The runtime id we asked for at registration; a changed id template re-registers.
    pub registered_as: Option<String>,
    pub assets_watermark: Option<i64>,
    pub assets_full_sync_at: Option<i64>,
    /// When the state the control plane holds for the stage was read from API Gateway: a full
    /// sync never applies a listing older than it.
    pub assets_read_at: Option<i64>,
    /// The key of the item listing the CloudTrail events already applied that the next window
    /// re-reads (its overlap); `None`: none known, every event read is applied.
    pub assets_applied_events: Option<String>,
    /// The APIs the control plane refused in the last runs, retried by the next ones.
    pub assets_refused: Vec<Refused>,
    /// The pushed events applied to the stage that a CloudTrail window may still read
    /// (`<time>#<id>`, see [`pushed_entry`]): the poll skips them.
    pub assets_pushed: Vec<String>,
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

pub trait StageProgress: Send + Sync {
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
    /// one, with what the run leaves for the next (a completed full reconciliation, when the
    /// published state was read, the events applied in the next window's overlap, the APIs the
    /// control plane refuses); returns whether it moved.
    fn advance_assets_watermark(
        &self,
        update: &WatermarkUpdate,
        refused: &[Refused],
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
    /// Adds pushed events (entries of [`pushed_entry`]) applied to the stage.
    fn record_pushed(&self, stage: &str, entries: &[String]) -> impl Future<Output = Result<()>> + Send;
}

/// How a pushed event applied to a stage is remembered: its time first, so that the entries no
/// window reads any more are found without parsing ids.
pub fn pushed_entry(time: i64, id: &str) -> String {
    format!("{time}#{id}")
}

/// The time and id of a [`pushed_entry`]; `None` for an entry of another shape.
pub fn parse_pushed_entry(entry: &str) -> Option<(i64, &str)> {
    let (time, id) = entry.split_once('#')?;
    Some((time.parse().ok()?, id))
}

/// The item attributes of one branch.
pub(super) struct BranchAttributes {
    pub watermark: &'static str,
    pub acked_at: &'static str,
    pub claimed_by: &'static str,
    pub claim_expires_at: &'static str,
    pub succeeded_at: &'static str,
    pub failed_at: &'static str,
}

pub(super) fn attributes(kind: Kind) -> BranchAttributes {
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

const METRICS_IN_FLIGHT: &str = "metricsInFlight";
/// The stage attribute naming the item of the events applied in the next window's overlap.
const APPLIED_EVENTS: &str = "assetsAppliedEvents";
/// The pushed events applied (a string set of [`pushed_entry`]).
const PUSHED: &str = "assetsPushed";
/// The refused APIs, a JSON list (bounded by `ack-watermark`).
const REFUSED: &str = "assetsRefused";
/// The stage attribute counting the APIs of the catalog (see `Catalogs::put_catalog`).
pub(super) const DEPLOYED_APIS: &str = "deployedApis";

/// What [`DynamoStateStore::advance`]'s update expression sets.
const ADVANCE_SET: [&str; 2] = ["#wm = :pos", "#acked = :acked"];

impl DynamoStateStore {
    /// The conditional update moving the branch's watermark to `position` (`:pos`) at `acked_at`
    /// (`:acked`), whose expression sets `#wm` and `#acked`; false when the stored watermark is
    /// already at or past it, as a replayed or overlapping execution's would be.
    fn advance(&self, stage: &str, kind: Kind, position: i64, acked_at: i64) -> UpdateItemFluentBuilder {
        self.update(stage)
            .condition_expression("attribute_not_exists(#wm) OR #wm < :pos")
            .expression_attribute_names("#wm", attributes(kind).watermark)
            .expression_attribute_names("#acked", attributes(kind).acked_at)
            .expression_attribute_values(":pos", AttributeValue::N(position.to_string()))
            .expression_attribute_values(":acked", AttributeValue::N(acked_at.to_string()))
    }
}

/// The `SET` and `REMOVE` clauses of an update expression and the values they name, built up one
/// attribute at a time.
#[derive(Default)]
struct Clauses {
    set: Vec<String>,
    remove: Vec<&'static str>,
    /// `DELETE` clauses: elements taken out of a set.
    delete: Vec<String>,
    values: Vec<(&'static str, AttributeValue)>,
}

impl Clauses {
    fn set(&mut self, clause: String, name: &'static str, value: AttributeValue) {
        self.set.push(clause);
        self.values.push((name, value));
    }

    /// `request` with this update expression and its values.
    fn apply(self, request: UpdateItemFluentBuilder) -> UpdateItemFluentBuilder {
        let mut expression = format!("SET {}", self.set.join(", "));
        if !self.remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.remove.join(", ")));
        }
        if !self.delete.is_empty() {
            expression.push_str(&format!(" DELETE {}", self.delete.join(", ")));
        }
        self.values.into_iter().fold(request.update_expression(expression), |request, (name, value)| {
            request.expression_attribute_values(name, value)
        })
    }
}

impl StageProgress for DynamoStateStore {
    async fn load(&self, stage: &str) -> Result<RuntimeState> {
        let Some(item) = self.item(stage).await? else { return Ok(RuntimeState::default()) };
        let outcomes = |kind: Kind| -> Result<Outcomes> {
            let names = attributes(kind);
            Ok(Outcomes {
                succeeded_at: number(&item, names.succeeded_at)?,
                failed_at: number(&item, names.failed_at)?,
            })
        };
        Ok(RuntimeState {
            registered_id: string(&item, "registeredId"),
            registered_as: string(&item, "registeredAs"),
            assets_watermark: number(&item, attributes(Kind::Assets).watermark)?,
            assets_full_sync_at: number(&item, "assetsFullSyncAt")?,
            assets_read_at: number(&item, "assetsReadAt")?,
            assets_applied_events: string(&item, APPLIED_EVENTS),
            assets_refused: match string(&item, REFUSED) {
                Some(json) => parse_json(stage, &json)?,
                None => Vec::new(),
            },
            assets_pushed: item.get(PUSHED).and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default(),
            metrics_watermark: number(&item, attributes(Kind::Metrics).watermark)?,
            metrics_in_flight: number(&item, METRICS_IN_FLIGHT)?,
            deployed_apis: number(&item, DEPLOYED_APIS)?,
            last_heartbeat_at: number(&item, "lastHeartbeatAt")?,
            assets_outcome: outcomes(Kind::Assets)?,
            metrics_outcome: outcomes(Kind::Metrics)?,
        })
    }

    async fn record_registration(&self, stage: &str, registered_as: &str, registered_id: &str, at: i64) -> Result<()> {
        self.update(stage)
            // A new runtime holds nothing yet: without an assets watermark the next listing is a
            // full sync, not an incremental one that would leave the runtime nearly empty.
            .update_expression(
                "SET registeredId = :id, registeredAs = :as, registeredAt = :at \
                 REMOVE assetsWatermark, assetsFullSyncAt, assetsAppliedEvents, assetsReadAt, assetsRefused",
            )
            .expression_attribute_values(":id", AttributeValue::S(registered_id.to_owned()))
            .expression_attribute_values(":as", AttributeValue::S(registered_as.to_owned()))
            .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    async fn advance_assets_watermark(
        &self,
        update: &WatermarkUpdate,
        refused: &[Refused],
        acked_at: i64,
    ) -> Result<bool> {
        // `:pos` and `:acked` come with the conditional update.
        let mut clauses = Clauses { set: ADVANCE_SET.map(String::from).to_vec(), ..Clauses::default() };
        if let Some(at) = update.full_sync_at {
            clauses.set("assetsFullSyncAt = :full".into(), ":full", AttributeValue::N(at.to_string()));
        }
        if let Some(at) = update.read_at {
            clauses.set("assetsReadAt = :read".into(), ":read", AttributeValue::N(at.to_string()));
        }
        // The applied events always describe the new position's overlap, and the refused APIs
        // what this run left refused: kept with it, or forgotten when there are none.
        match &update.applied_events {
            Some(key) => {
                clauses.set(format!("{APPLIED_EVENTS} = :applied"), ":applied", AttributeValue::S(key.clone()))
            }
            None => clauses.remove.push(APPLIED_EVENTS),
        }
        match refused.is_empty() {
            false => {
                let json = json_body(&update.stage, refused)?;
                clauses.set(format!("{REFUSED} = :refused"), ":refused", AttributeValue::S(json));
            }
            true => clauses.remove.push(REFUSED),
        }
        if !update.forget_pushed.is_empty() {
            clauses.delete.push(format!("{PUSHED} :forget"));
            clauses.values.push((":forget", AttributeValue::Ss(update.forget_pushed.clone())));
        }
        let request = self.advance(&update.stage, Kind::Assets, update.position, acked_at);
        conditional_update(clauses.apply(request)).await
    }

    async fn advance_metrics_watermark(&self, stage: &str, position: i64, acked_at: i64) -> Result<bool> {
        let request = self.advance(stage, Kind::Metrics, position, acked_at);
        conditional_update(request.update_expression(format!("SET {}", ADVANCE_SET.join(", ")))).await
    }

    async fn set_metrics_in_flight(&self, stage: &str, window_end: Option<i64>) -> Result<()> {
        self.set_number(stage, METRICS_IN_FLIGHT, window_end).await
    }

    async fn record_outcome(&self, stage: &str, kind: Kind, succeeded: bool, at: i64) -> Result<()> {
        let names = attributes(kind);
        self.set_number(stage, if succeeded { names.succeeded_at } else { names.failed_at }, Some(at)).await
    }

    async fn record_heartbeat(&self, stage: &str, at: i64) -> Result<()> {
        self.set_number(stage, "lastHeartbeatAt", Some(at)).await
    }

    async fn record_pushed(&self, stage: &str, entries: &[String]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.update(stage)
            .update_expression(format!("ADD {PUSHED} :entries"))
            .expression_attribute_values(":entries", AttributeValue::Ss(entries.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }
}
