//! The shared schedule of an account's API Gateway calls: an item holding the next free slot,
//! which every container reserves its slots from (see `aws::pace`).

use std::future::Future;
use std::pin::Pin;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{DynamoStateStore, conditional_update, number};
use crate::aws::pace::SlotSource;
use crate::aws::sdk_error;
use crate::error::{AgentError, Result};

/// The item of the account's API Gateway schedule.
pub const API_GATEWAY_SCHEDULE: &str = "#pace#apigateway";
/// Attempts of a reservation that other containers keep overtaking.
const RESERVE_ATTEMPTS: usize = 8;

/// A schedule of request slots kept in the state table, shared by every execution and container.
#[derive(Debug, Clone)]
pub struct Slots {
    store: DynamoStateStore,
    key: &'static str,
}

impl Slots {
    pub fn new(store: DynamoStateStore, key: &'static str) -> Self {
        Self { store, key }
    }

    /// Reserves `count` slots `interval_ms` apart, none before `now_ms`; the first one's time.
    async fn reserve_slots(&self, count: u32, interval_ms: i64, now_ms: i64) -> Result<i64> {
        let span = i64::from(count) * interval_ms;
        for _ in 0..RESERVE_ATTEMPTS {
            // An idle schedule starts now.
            let idle = self
                .store
                .update(self.key)
                .update_expression("SET nextSlot = :next")
                .condition_expression("attribute_not_exists(nextSlot) OR nextSlot <= :now")
                .expression_attribute_values(":next", AttributeValue::N((now_ms + span).to_string()))
                .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()));
            if conditional_update(idle).await? {
                return Ok(now_ms);
            }
            // A busy one continues after the slots others hold.
            let queued = self
                .store
                .update(self.key)
                .update_expression("SET nextSlot = nextSlot + :span")
                .condition_expression("nextSlot > :now")
                .expression_attribute_values(":span", AttributeValue::N(span.to_string()))
                .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
                .return_values(ReturnValue::UpdatedOld)
                .send()
                .await;
            match queued {
                Ok(output) => {
                    let old = output.attributes.unwrap_or_default();
                    return number(&old, "nextSlot")?.ok_or_else(|| {
                        AgentError::AwsRequestFailed(format!("state item {} lost its next slot", self.key))
                    });
                }
                // The schedule fell idle between the two writes: start again.
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(sdk_error("dynamodb:UpdateItem", e)),
            }
        }
        Err(AgentError::Throttled(format!(
            "no API Gateway slot reserved in {} after {RESERVE_ATTEMPTS} attempts",
            self.key
        )))
    }
}

impl SlotSource for Slots {
    fn reserve(
        &self,
        count: u32,
        interval_ms: i64,
        now_ms: i64,
    ) -> Pin<Box<dyn Future<Output = Result<i64>> + Send + '_>> {
        Box::pin(self.reserve_slots(count, interval_ms, now_ms))
    }
}
