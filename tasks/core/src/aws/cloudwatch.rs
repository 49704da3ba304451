//! Amazon CloudWatch: API Gateway metrics of one stage, read in batches with `GetMetricData`.
//!
//! GetMetricData is billed per metric requested, so one query fetches every 1-minute datapoint
//! of a window, and up to 500 queries (100 APIs) go in one call.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, MessageData, Metric, MetricDataQuery, MetricDataResult, MetricStat, RecentlyActive,
    ScanBy, StatusCode,
};

use super::sdk_error;
use crate::error::{AgentError, Result};
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
        for QueryBatch { queries, owners } in query_batches(stage, api_names) {
            let mut completeness = Completeness::expecting(owners.keys());
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
                completeness.observe_page(page.messages());
                for result in page.metric_data_results() {
                    completeness.observe(result);
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
            completeness.verdict(stage)?;
        }
        Ok(series)
    }
}

/// One `GetMetricData` call's queries, and which API and metric each query id stands for.
struct QueryBatch {
    queries: Vec<MetricDataQuery>,
    owners: BTreeMap<String, (String, usize)>,
}

/// The calls that read every metric of `api_names` on `stage`: one query per API and metric,
/// whatever the number of windows, 500 queries (100 APIs) per call. What CloudWatch bills.
fn query_batches(stage: &str, api_names: &[String]) -> Vec<QueryBatch> {
    let apis_per_call = MAX_QUERIES_PER_CALL / REST_METRICS.len();
    let mut batches = Vec::new();
    for (batch_index, batch) in api_names.chunks(apis_per_call).enumerate() {
        let mut queries = Vec::with_capacity(batch.len() * REST_METRICS.len());
        let mut owners = BTreeMap::new();
        for (api_index, api_name) in batch.iter().enumerate() {
            for (metric_index, (metric_name, stat)) in REST_METRICS.iter().enumerate() {
                // Query ids must start with a lowercase letter: q<api index>_<metric index>.
                let id = format!("q{}_{metric_index}", batch_index * apis_per_call + api_index);
                owners.insert(id.clone(), (api_name.clone(), metric_index));
                queries.push(rest_query(&id, api_name, stage, metric_name, stat));
            }
        }
        batches.push(QueryBatch { queries, owners });
    }
    batches
}

/// Whether a `GetMetricData` answer, over all its pages, holds every datapoint: each query's
/// last status `Complete` and no message. Anything else is never taken as zero traffic.
struct Completeness {
    /// Query id -> the status of its latest result (`None` until one arrives).
    status: BTreeMap<String, Option<StatusCode>>,
    messages: Vec<String>,
}

impl Completeness {
    fn expecting<'a>(ids: impl Iterator<Item = &'a String>) -> Self {
        Self { status: ids.map(|id| (id.clone(), None)).collect(), messages: Vec::new() }
    }

    fn observe_page(&mut self, messages: &[MessageData]) {
        self.messages.extend(messages.iter().map(describe));
    }

    fn observe(&mut self, result: &MetricDataResult) {
        if let Some(id) = result.id() {
            self.status.insert(id.to_owned(), result.status_code().cloned());
        }
        self.messages.extend(result.messages().iter().map(describe));
    }

    fn verdict(&self, stage: &str) -> Result<()> {
        let unfinished: Vec<String> = self
            .status
            .iter()
            .filter(|(_, status)| **status != Some(StatusCode::Complete))
            .map(|(id, status)| format!("{id}: {}", status.as_ref().map_or("no result", |s| s.as_str())))
            .collect();
        if unfinished.is_empty() && self.messages.is_empty() {
            return Ok(());
        }
        let sample: Vec<&String> = unfinished.iter().chain(&self.messages).take(5).collect();
        Err(AgentError::MetricsIncomplete(format!(
            "stage {stage}: {} of {} queries incomplete, {} message(s): {sample:?}",
            unfinished.len(),
            self.status.len(),
            self.messages.len()
        )))
    }
}

fn describe(message: &MessageData) -> String {
    format!("{}: {}", message.code().unwrap_or("?"), message.value().unwrap_or(""))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str, status: StatusCode) -> MetricDataResult {
        MetricDataResult::builder().id(id).status_code(status).build()
    }

    #[test]
    fn a_read_costs_five_metrics_per_active_api_in_one_call_per_hundred_apis() {
        for (active, calls) in [(10, 1), (1_000, 10), (2_500, 25)] {
            let names: Vec<String> = (0..active).map(|i| format!("api-{i}")).collect();
            let batches = query_batches("prod", &names);
            let requested: usize = batches.iter().map(|b| b.queries.len()).sum();
            assert_eq!((batches.len(), requested), (calls, 5 * active), "{active} active API-stages");
            assert!(batches.iter().all(|b| b.queries.len() <= MAX_QUERIES_PER_CALL));
            let ids: BTreeSet<&String> = batches.iter().flat_map(|b| b.owners.keys()).collect();
            assert_eq!(ids.len(), requested, "query ids are unique across calls");
        }
        assert!(query_batches("prod", &[]).is_empty(), "a quiet stage costs no GetMetricData call");
    }

    #[test]
    fn only_complete_answers_to_every_query_count_as_data() {
        let ids = ["q0_0".to_owned(), "q0_1".to_owned()];
        let mut paged = Completeness::expecting(ids.iter());
        // A first page cut short, then the rest of the data with the next token.
        paged.observe(&result("q0_0", StatusCode::PartialData));
        paged.observe(&result("q0_0", StatusCode::Complete));
        paged.observe(&result("q0_1", StatusCode::Complete));
        assert!(paged.verdict("prod").is_ok());

        let mut partial = Completeness::expecting(ids.iter());
        partial.observe(&result("q0_0", StatusCode::Complete));
        partial.observe(&result("q0_1", StatusCode::PartialData));
        let error = partial.verdict("prod").unwrap_err();
        assert_eq!(error.error_type(), "MetricsIncomplete");
        assert!(error.to_string().contains("q0_1: PartialData"), "{error}");

        let mut missing = Completeness::expecting(ids.iter());
        missing.observe(&result("q0_0", StatusCode::Complete));
        assert!(missing.verdict("prod").unwrap_err().to_string().contains("q0_1: no result"));

        let mut with_message = Completeness::expecting(ids.iter());
        with_message.observe(&result("q0_0", StatusCode::Complete));
        with_message.observe(&result("q0_1", StatusCode::Complete));
        with_message.observe_page(&[MessageData::builder().code("InternalError").value("try later").build()]);
        assert!(with_message.verdict("prod").unwrap_err().to_string().contains("InternalError: try later"));
    }
}
