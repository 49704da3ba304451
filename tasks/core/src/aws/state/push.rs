//! Whether the target's changes can be pushed: the last check of its trails, reused for an hour.

use std::future::Future;

use super::DynamoStateStore;
use crate::error::Result;
use crate::model::PushStatus;

pub trait PushStatuses: Send + Sync {
    fn load_push_status(&self) -> impl Future<Output = Result<Option<PushStatus>>> + Send;
    fn put_push_status(&self, status: &PushStatus) -> impl Future<Output = Result<()>> + Send;
}

/// The item of the target's push status.
const KEY: &str = "#push";
const STATUS: &str = "status";

impl PushStatuses for DynamoStateStore {
    async fn load_push_status(&self) -> Result<Option<PushStatus>> {
        self.load_json(KEY, STATUS).await
    }

    async fn put_push_status(&self, status: &PushStatus) -> Result<()> {
        self.put_json(KEY, STATUS, Some(super::json_body(KEY, status)?), None).await
    }
}
