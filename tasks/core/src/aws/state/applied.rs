//! The CloudTrail events a run applied in the last minutes of its window: the next window
//! re-reads them (its overlap, for late deliveries) and skips those.

use std::future::Future;

use super::{DynamoStateStore, json_body};
use crate::error::Result;

pub trait AppliedEvents: Send + Sync {
    /// Stores the ids of CloudTrail events applied by this run under `key`, removed by the
    /// table's TTL after `expires_at`.
    fn put_applied_events(&self, key: &str, ids: &[String], expires_at: i64)
    -> impl Future<Output = Result<()>> + Send;
    /// The event ids stored under `key`; `None` when they are gone (expired).
    fn load_applied_events(&self, key: &str) -> impl Future<Output = Result<Option<Vec<String>>>> + Send;
}

/// The attribute of the applied events' ids (a JSON list).
const EVENT_IDS_ATTRIBUTE: &str = "eventIds";

/// The key of the CloudTrail events an execution applied in the overlap of the window after
/// `window_end`: a retried list-changes overwrites its own.
pub fn applied_events_key(execution_id: &str, window_end: i64) -> String {
    format!("#applied#{execution_id}#{window_end}")
}

impl AppliedEvents for DynamoStateStore {
    async fn put_applied_events(&self, key: &str, ids: &[String], expires_at: i64) -> Result<()> {
        self.put_json(key, EVENT_IDS_ATTRIBUTE, Some(json_body(key, ids)?), Some(expires_at)).await
    }

    async fn load_applied_events(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.load_json(key, EVENT_IDS_ATTRIBUTE).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_execution_and_window_has_its_own_key() {
        let key = applied_events_key("tick-20270115T080000Z", 1_800_000_000);
        assert_eq!(key, "#applied#tick-20270115T080000Z#1800000000");
        assert_ne!(key, applied_events_key("tick-20270115T080100Z", 1_800_000_000));
        assert_ne!(key, applied_events_key("tick-20270115T080000Z", 1_800_000_060));
    }
}
