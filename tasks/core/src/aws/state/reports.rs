//! The metrics branch's stored work: each window's report, from transform to publish, and the
//! progress of a CloudWatch read that outlives one invocation.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DynamoStateStore, gzip_json};
use crate::control_plane::types::AgentMetricsModel;
use crate::error::{AgentError, Result};
use crate::model::RuntimeWindows;

pub trait Reports: Send + Sync {
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
}

/// The attribute of a report (gzipped JSON).
const REPORT_ATTRIBUTE: &str = "report";
/// The attribute of a document stored with [`Reports::put_document`] (gzipped JSON).
const DOCUMENT_ATTRIBUTE: &str = "document";

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

impl Reports for DynamoStateStore {
    async fn put_report(&self, key: &str, report: &AgentMetricsModel, expires_at: i64) -> Result<()> {
        self.put_gzipped(key, REPORT_ATTRIBUTE, gzip_json(key, report)?, Some(expires_at)).await
    }

    async fn load_report(&self, key: &str) -> Result<AgentMetricsModel> {
        let missing = || AgentError::AwsRequestFailed(format!("report {key} is missing (expired?)"));
        self.load_gzipped(key, REPORT_ATTRIBUTE).await?.ok_or_else(missing)
    }

    async fn put_document<T: Serialize + Sync>(&self, key: &str, value: &T, expires_at: i64) -> Result<()> {
        self.put_gzipped(key, DOCUMENT_ATTRIBUTE, gzip_json(key, value)?, Some(expires_at)).await
    }

    async fn load_document<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.load_gzipped(key, DOCUMENT_ATTRIBUTE).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::state::gunzip_json;
    use crate::metrics::{ApiIdentity, ApiSeries, Totals, metrics_model};

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

    #[test]
    fn a_resumed_read_finds_the_progress_of_the_same_windows_only() {
        let windows = |start, interval| RuntimeWindows {
            runtime_id: "rt".into(),
            stage: "prod".into(),
            start,
            end: 1_800_000_600,
            interval,
            reports_stored: false,
        };
        let key = progress_key(&windows(1_800_000_000, 300), "plan");
        assert_eq!(key, "#progress#rt#1800000000#1800000600#300#plan");
        assert_ne!(key, progress_key(&windows(1_800_000_300, 300), "plan"), "another span");
        assert_ne!(key, progress_key(&windows(1_800_000_000, 60), "plan"), "another interval");
        assert_eq!(report_key("rt", 1_800_000_300), "#report#rt#1800000300");
    }
}
