//! Amazon CloudWatch: API Gateway metrics of one stage, read in batches with `GetMetricData`.
//!
//! GetMetricData is billed per metric requested, so one query fetches every 1-minute datapoint
//! of a window, and up to 500 queries (100 APIs) go in one call.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, Metric, MetricDataQuery, MetricStat, RecentlyActive, ScanBy,
};

use super::sdk_error;
use crate::error::Result;
use crate::metrics::{ApiSeries, Series};

const NAMESPACE: &str = "AWS/ApiGateway";
const MAX_QUERIES_PER_CALL: usize = 500;
const PERIOD_SECONDS: i32 = 60;
/// ListMetrics can restrict itself to metrics with datapoints in the last 3 hours.
const RECENTLY_ACTIVE_SECONDS: i64 = 3 * 3600;

/// The REST API metrics we read: (CloudWatch metric name, statistic).
const REST_METRICS: [(&str, &str); 5] = [
    ("Count", "Sum"),
    ("4XXError", "Sum"),
    ("5XXError", "Sum"),
    ("Latency", "Average"),
    ("IntegrationLatency", "Average"),
];

pub trait MetricSource: Send + Sync {
    /// Names of the REST APIs that have a `Count` metric on the stage (i.e. had traffic).
    fn apis_with_traffic(
        &self,
        stage: &str,
        since: i64,
        now: i64,
    ) -> impl Future<Output = Result<BTreeSet<String>>> + Send;
    /// 1-minute datapoints of each API on the stage over `[start, end)` (epoch seconds).
    fn rest_api_series(
        &self,
        stage: &str,
        api_names: &[String],
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<BTreeMap<String, ApiSeries>>> + Send;
}

#[derive(Debug, Clone)]
pub struct CloudWatchMetrics {
    client: Client,
}

impl CloudWatchMetrics {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl MetricSource for CloudWatchMetrics {
    async fn apis_with_traffic(&self, stage: &str, since: i64, now: i64) -> Result<BTreeSet<String>> {
        let mut names = BTreeSet::new();
        let mut next_token: Option<String> = None;
        loop {
            let mut request = self
                .client
                .list_metrics()
                .namespace(NAMESPACE)
                .metric_name("Count")
                .dimensions(DimensionFilter::builder().name("Stage").value(stage).build())
                .set_next_token(next_token.take());
            if now - since <= RECENTLY_ACTIVE_SECONDS {
                request = request.recently_active(RecentlyActive::Pt3H);
            }
            let page = request.send().await.map_err(|e| sdk_error("cloudwatch:ListMetrics", e))?;
            for metric in page.metrics() {
                // Per-method metrics (detailed metrics) carry more dimensions; count each API once.
                let dimensions = metric.dimensions();
                if dimensions.len() == 2
                    && let Some(name) = dimensions.iter().find(|d| d.name() == Some("ApiName")).and_then(|d| d.value())
                {
                    names.insert(name.to_owned());
                }
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    async fn rest_api_series(
        &self,
        stage: &str,
        api_names: &[String],
        start: i64,
        end: i64,
    ) -> Result<BTreeMap<String, ApiSeries>> {
        let mut series: BTreeMap<String, ApiSeries> = BTreeMap::new();
        let apis_per_call = MAX_QUERIES_PER_CALL / REST_METRICS.len();
        for (batch_index, batch) in api_names.chunks(apis_per_call).enumerate() {
            let mut queries = Vec::with_capacity(batch.len() * REST_METRICS.len());
            // Query ids must start with a lowercase letter: q<api index>_<metric index>.
            let mut owners = BTreeMap::new();
            for (api_index, api_name) in batch.iter().enumerate() {
                for (metric_index, (metric_name, stat)) in REST_METRICS.iter().enumerate() {
                    let id = format!("q{}_{metric_index}", batch_index * apis_per_call + api_index);
                    owners.insert(id.clone(), (api_name.clone(), metric_index));
                    queries.push(rest_query(&id, api_name, stage, metric_name, stat));
                }
            }
            let mut next_token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .get_metric_data()
                    .set_metric_data_queries(Some(queries.clone()))
                    .start_time(DateTime::from_secs(start))
                    .end_time(DateTime::from_secs(end))
                    .scan_by(ScanBy::TimestampAscending)
                    .set_next_token(next_token.take())
                    .send()
                    .await
                    .map_err(|e| sdk_error("cloudwatch:GetMetricData", e))?;
                for result in page.metric_data_results() {
                    let Some((api_name, metric_index)) = result.id().and_then(|id| owners.get(id)) else { continue };
                    let entry = series.entry(api_name.clone()).or_default();
                    let target: &mut Series = match metric_index {
                        0 => &mut entry.count,
                        1 => &mut entry.client_errors,
                        2 => &mut entry.server_errors,
                        3 => &mut entry.latency,
                        _ => &mut entry.integration_latency,
                    };
                    for (timestamp, value) in result.timestamps().iter().zip(result.values()) {
                        target.insert(timestamp.secs(), *value);
                    }
                }
                match page.next_token() {
                    Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(series)
    }
}

fn rest_query(id: &str, api_name: &str, stage: &str, metric_name: &str, stat: &str) -> MetricDataQuery {
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(metric_name)
        .dimensions(dimension("ApiName", api_name))
        .dimensions(dimension("Stage", stage))
        .build();
    let stat = MetricStat::builder().metric(metric).period(PERIOD_SECONDS).stat(stat).build();
    MetricDataQuery::builder().id(id).metric_stat(stat).return_data(true).build()
}
