//! AWS CloudTrail `LookupEvents`: where API Gateway changed since the last watermark.
//!
//! One lookup attribute (`EventSource`), pages of 50, and at most 2 requests per second: the
//! service's own limits. Read-only events are dropped here; events only say where to look.

use std::future::Future;
use std::time::Duration;

use aws_sdk_cloudtrail::Client;
use aws_sdk_cloudtrail::primitives::DateTime;
use aws_sdk_cloudtrail::types::{
    AdvancedEventSelector, EventSelector, LookupAttribute, LookupAttributeKey, ReadWriteType,
};
use serde_json::Value;

use super::sdk_error;
use crate::error::{AgentError, Result};

pub const API_GATEWAY_EVENT_SOURCE: &str = "apigateway.amazonaws.com";
const PAGE_SIZE: i32 = 50;
/// LookupEvents allows 2 requests per second per account and region.
const REQUEST_SPACING: Duration = Duration::from_millis(500);

/// A write event of API Gateway, reduced to what locates the changed resources.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiEvent {
    /// CloudTrail's id of the event: how a window that re-reads it knows it was applied.
    pub id: String,
    /// When the call was made (epoch seconds).
    pub time: i64,
    pub name: String,
    pub request_parameters: Value,
    pub response_elements: Value,
    /// The record was missing, truncated or not a JSON object: what it changed is unknown.
    pub unreadable: bool,
    /// The call failed (the record has an `errorCode`): it changed nothing.
    pub failed: bool,
}

pub trait ChangeFeed: Send + Sync {
    /// API Gateway write events with `start <= time < end` (epoch seconds).
    fn write_events(&self, start: i64, end: i64) -> impl Future<Output = Result<Vec<ApiEvent>>> + Send;
}

/// What push mode needs of the target's trails: EventBridge receives API Gateway's calls only
/// where a trail logs management write events.
pub trait Trails: Send + Sync {
    /// `Ok(trail)`: a logging trail records management write events here (its name);
    /// `Err(reason)`: none does, or it could not be found out.
    fn management_write_trail(&self) -> impl Future<Output = std::result::Result<String, String>> + Send;
}

#[derive(Debug, Clone)]
pub struct CloudTrailFeed {
    client: Client,
}

impl CloudTrailFeed {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl ChangeFeed for CloudTrailFeed {
    async fn write_events(&self, start: i64, end: i64) -> Result<Vec<ApiEvent>> {
        let source = LookupAttribute::builder()
            .attribute_key(LookupAttributeKey::EventSource)
            .attribute_value(API_GATEWAY_EVENT_SOURCE)
            .build()
            .map_err(|e| AgentError::AwsRequestFailed(format!("cloudtrail:LookupEvents: {e}")))?;
        // LookupEvents' EndTime is inclusive; our windows are half-open.
        let end_inclusive = DateTime::from_millis(end * 1000 - 1);
        let mut pages = self
            .client
            .lookup_events()
            .lookup_attributes(source)
            .start_time(DateTime::from_secs(start))
            .end_time(end_inclusive)
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        let mut events = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("cloudtrail:LookupEvents", e))?;
            for event in page.events() {
                if event.read_only() == Some("true") {
                    continue;
                }
                let id = event.event_id().unwrap_or_default();
                // Without a time, the window's start: never remembered as applied, so re-applied.
                let time = event.event_time().map_or(start, DateTime::secs);
                events.push(parse_event(id, time, event.event_name().unwrap_or_default(), event.cloud_trail_event()));
            }
            // The paginator sends the next page's request when asked for it: waiting here keeps
            // the listing under LookupEvents' 2 requests per second.
            if page.next_token().is_some_and(|token| !token.is_empty()) {
                tokio::time::sleep(REQUEST_SPACING).await;
            }
        }
        Ok(events)
    }
}

impl Trails for CloudTrailFeed {
    async fn management_write_trail(&self) -> std::result::Result<String, String> {
        // Shadow trails: multi-region and organization trails homed elsewhere log this region too.
        let trails = match self.client.describe_trails().include_shadow_trails(true).send().await {
            Ok(output) => output.trail_list.unwrap_or_default(),
            Err(e) => {
                return Err(format!("the trails could not be read ({})", sdk_error("cloudtrail:DescribeTrails", e)));
            }
        };
        let mut unreadable = Vec::new();
        for trail in &trails {
            let (Some(name), Some(arn)) = (trail.name(), trail.trail_arn()) else { continue };
            let logging = match self.client.get_trail_status().name(arn).send().await {
                Ok(status) => status.is_logging().unwrap_or(false),
                Err(e) => {
                    unreadable.push(format!("{name}: {}", sdk_error("cloudtrail:GetTrailStatus", e)));
                    continue;
                }
            };
            if !logging {
                continue;
            }
            match self.client.get_event_selectors().trail_name(arn).send().await {
                Ok(selectors)
                    if logs_management_writes(selectors.event_selectors(), selectors.advanced_event_selectors()) =>
                {
                    return Ok(name.to_owned());
                }
                Ok(_) => {}
                Err(e) => unreadable.push(format!("{name}: {}", sdk_error("cloudtrail:GetEventSelectors", e))),
            }
        }
        Err(match (trails.is_empty(), unreadable.is_empty()) {
            (true, _) => "no CloudTrail trail logs this account-region".to_owned(),
            (false, true) => "no logging CloudTrail trail records management write events here".to_owned(),
            (false, false) => {
                format!("no trail found logging management write events; unreadable: {}", unreadable.join("; "))
            }
        })
    }
}

/// Whether a trail's selectors record management write events. Without selectors a trail logs
/// every management event; advanced selectors log management events when one of them selects
/// `eventCategory = Management` without limiting it to read-only calls.
fn logs_management_writes(basic: &[EventSelector], advanced: &[AdvancedEventSelector]) -> bool {
    if !advanced.is_empty() {
        return advanced.iter().any(|selector| {
            let fields = selector.field_selectors();
            let equals = |field: &str, value: &str| {
                fields.iter().any(|f| f.field() == field && f.equals().iter().any(|v| v == value))
            };
            equals("eventCategory", "Management") && !equals("readOnly", "true")
        });
    }
    if basic.is_empty() {
        return true;
    }
    basic.iter().any(|selector| {
        selector.include_management_events() != Some(false)
            && !matches!(selector.read_write_type(), Some(ReadWriteType::ReadOnly))
    })
}

pub(crate) fn parse_event(id: &str, time: i64, name: &str, record: Option<&str>) -> ApiEvent {
    let record = record.and_then(|r| serde_json::from_str::<Value>(r).ok()).filter(Value::is_object);
    let field = |name: &str| record.as_ref().and_then(|r| r.get(name)).cloned().unwrap_or(Value::Null);
    ApiEvent {
        id: id.to_owned(),
        time,
        name: name.to_owned(),
        request_parameters: field("requestParameters"),
        response_elements: field("responseElements"),
        unreadable: record.is_none(),
        failed: !field("errorCode").is_null(),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudtrail::types::AdvancedFieldSelector;

    use super::*;

    #[test]
    fn a_trail_logs_management_writes_unless_its_selectors_leave_them_out() {
        let basic = |read_write: ReadWriteType, management: bool| {
            EventSelector::builder().read_write_type(read_write).include_management_events(management).build()
        };
        let field =
            |name: &str, value: &str| AdvancedFieldSelector::builder().field(name).equals(value).build().unwrap();
        let advanced = |fields: Vec<AdvancedFieldSelector>| {
            AdvancedEventSelector::builder().set_field_selectors(Some(fields)).build().unwrap()
        };
        assert!(logs_management_writes(&[], &[]));
        assert!(logs_management_writes(&[basic(ReadWriteType::All, true)], &[]));
        assert!(logs_management_writes(&[basic(ReadWriteType::WriteOnly, true)], &[]));
        assert!(!logs_management_writes(&[basic(ReadWriteType::ReadOnly, true)], &[]));
        assert!(!logs_management_writes(&[basic(ReadWriteType::All, false)], &[]));
        assert!(logs_management_writes(&[], &[advanced(vec![field("eventCategory", "Management")])]));
        assert!(!logs_management_writes(
            &[],
            &[advanced(vec![field("eventCategory", "Management"), field("readOnly", "true")])]
        ));
        assert!(!logs_management_writes(&[], &[advanced(vec![field("eventCategory", "Data")])]));
    }

    #[test]
    fn a_missing_truncated_or_foreign_record_is_unreadable_not_empty() {
        let whole = r#"{"eventName":"UpdateStage","requestParameters":{"restApiId":"r1","stageName":"prod"}}"#;
        let parse = |record| parse_event("e1", 1_800_000_000, "UpdateStage", record);
        assert!(!parse(Some(whole)).unreadable);
        assert_eq!(parse(Some(whole)).request_parameters["restApiId"], "r1");
        for record in [None, Some(&whole[..40]), Some("[1,2]"), Some("null"), Some("")] {
            assert!(parse(record).unreadable, "{record:?}");
        }
        let refused =
            r#"{"eventName":"DeleteRestApi","errorCode":"NotFoundException","requestParameters":{"restApiId":"r1"}}"#;
        assert!(parse(Some(refused)).failed && !parse(Some(whole)).failed);
    }
}
