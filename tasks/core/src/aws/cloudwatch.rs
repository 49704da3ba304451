//! Amazon CloudWatch: API Gateway metrics of one stage, read in batches with `GetMetricData`.
//!
//! GetMetricData is billed per metric requested, so one query fetches every 1-minute datapoint
//! of a window, and up to 500 queries (100 REST or HTTP APIs) go in one call. REST APIs are
//! named by `ApiName`, HTTP and WebSocket APIs by `ApiId`, each with `Stage`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{
    Dimension, DimensionFilter, MessageData, Metric, MetricDataQuery, MetricDataResult, MetricStat, RecentlyActive,
    ScanBy, StatusCode,
};

use super::sdk_error;
use crate::aws::apigateway::ApiKind;
use crate::config::ApiTypes;
use crate::error::{AgentError, Result};
use crate::metrics::{ApiSeries, Series};

const NAMESPACE: &str = "AWS/ApiGateway";
/// The most queries one `GetMetricData` call takes.
const MAX_QUERIES_PER_CALL: usize = 500;
const PERIOD_SECONDS: i32 = 60;
/// ListMetrics can restrict itself to metrics with datapoints in the last 3 hours.
const RECENTLY_ACTIVE_SECONDS: i64 = 3 * 3600;

/// An API on a stage as CloudWatch knows it: REST APIs by name, HTTP and WebSocket APIs by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "key")]
pub enum MetricSubject {
    RestApi { name: String },
    HttpApi { id: String },
    WebSocketApi { id: String },
}

impl MetricSubject {
    /// How CloudWatch names the metrics of an API of this kind, id and name.
    pub fn of(kind: ApiKind, id: &str, name: &str) -> Self {
        match kind {
            ApiKind::Rest => Self::RestApi { name: name.to_owned() },
            ApiKind::Http => Self::HttpApi { id: id.to_owned() },
            ApiKind::WebSocket => Self::WebSocketApi { id: id.to_owned() },
        }
    }

    fn dimension(&self) -> (&'static str, &str) {
        match self {
            Self::RestApi { name } => ("ApiName", name),
            Self::HttpApi { id } | Self::WebSocketApi { id } => ("ApiId", id),
        }
    }

    fn metrics(&self) -> &'static [MetricRead] {
        match self {
            Self::RestApi { .. } => &REST_METRICS,
            Self::HttpApi { .. } => &HTTP_METRICS,
            Self::WebSocketApi { .. } => &WEBSOCKET_METRICS,
        }
    }

    /// The metrics read for the API: all of them, or only those counting its requests.
    fn reads(&self, only_counts: bool) -> impl Iterator<Item = &'static MetricRead> {
        self.metrics().iter().filter(move |(_, _, target)| !only_counts || *target == Target::Count)
    }

    /// How many queries (metrics requested, what CloudWatch bills) one read of the API takes.
    pub fn queries(&self) -> usize {
        self.metrics().len()
    }
}

/// Where a metric's datapoints go in an [`ApiSeries`]. Several metrics may feed one series
/// (summed per minute): a WebSocket API's transactions are its connections and its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Count,
    ClientErrors,
    ServerErrors,
    Latency,
    IntegrationLatency,
}

/// One metric read per API: (CloudWatch metric name, statistic, series it feeds).
type MetricRead = (&'static str, &'static str, Target);

const REST_METRICS: [MetricRead; 5] = [
    ("Count", "Sum", Target::Count),
    ("4XXError", "Sum", Target::ClientErrors),
    ("5XXError", "Sum", Target::ServerErrors),
    ("Latency", "Average", Target::Latency),
    ("IntegrationLatency", "Average", Target::IntegrationLatency),
];

const HTTP_METRICS: [MetricRead; 5] = [
    ("Count", "Sum", Target::Count),
    ("4xx", "Sum", Target::ClientErrors),
    ("5xx", "Sum", Target::ServerErrors),
    ("Latency", "Average", Target::Latency),
    ("IntegrationLatency", "Average", Target::IntegrationLatency),
];

/// A WebSocket API has no status codes and no end-to-end latency: a transaction is a connection
/// or a message, a client error (rejected before the integration) is a 4xx, an integration or
/// execution error a 5xx, and only the backend latency is known.
const WEBSOCKET_METRICS: [MetricRead; 6] = [
    ("ConnectCount", "Sum", Target::Count),
    ("MessageCount", "Sum", Target::Count),
    ("ClientError", "Sum", Target::ClientErrors),
    ("IntegrationError", "Sum", Target::ServerErrors),
    ("ExecutionError", "Sum", Target::ServerErrors),
    ("IntegrationLatency", "Average", Target::IntegrationLatency),
];

pub trait MetricSource: Send + Sync {
    /// The APIs of the selected kinds with traffic on the stage since `since`: one listing of
    /// the metric that every request increments, per kind, not a query per API.
    fn apis_with_traffic(
        &self,
        stage: &str,
        kinds: &ApiTypes,
        since: i64,
        now: i64,
    ) -> impl Future<Output = Result<BTreeSet<MetricSubject>>> + Send;
    /// 1-minute datapoints of each API on the stage over `[start, end)` (epoch seconds).
    fn api_series(
        &self,
        stage: &str,
        apis: &[MetricSubject],
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<BTreeMap<MetricSubject, ApiSeries>>> + Send;
    /// Which of `apis` had any request on the stage over `[start, end)`: one query per API of
    /// the metric(s) counting its requests (one for REST and HTTP APIs, two for WebSocket ones),
    /// for the APIs that `ListMetrics` cannot vouch for (a new metric takes up to 15 minutes to
    /// be listed; one without data for two weeks is not listed).
    fn with_traffic(
        &self,
        stage: &str,
        apis: &[MetricSubject],
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<BTreeSet<MetricSubject>>> + Send;
}

#[derive(Debug, Clone)]
pub struct CloudWatchMetrics {
    client: Client,
}

impl CloudWatchMetrics {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The APIs that have `metric_name` on the stage, by the dimension that names them.
    async fn listed(&self, metric_name: &str, stage: &str, since: i64, now: i64) -> Result<BTreeSet<MetricSubject>> {
        let mut request = self
            .client
            .list_metrics()
            .namespace(NAMESPACE)
            .metric_name(metric_name)
            .dimensions(DimensionFilter::builder().name("Stage").value(stage).build());
        if now - since <= RECENTLY_ACTIVE_SECONDS {
            request = request.recently_active(RecentlyActive::Pt3H);
        }
        let mut subjects = BTreeSet::new();
        let mut pages = request.into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("cloudwatch:ListMetrics", e))?;
            for metric in page.metrics() {
                // Per-method and per-route (detailed) metrics carry more dimensions; count each API once.
                let dimensions = metric.dimensions();
                if dimensions.len() != 2 {
                    continue;
                }
                let value = |name: &str| dimensions.iter().find(|d| d.name() == Some(name)).and_then(|d| d.value());
                let subject = match (metric_name, value("ApiName"), value("ApiId")) {
                    ("Count", Some(name), _) => MetricSubject::RestApi { name: name.to_owned() },
                    ("Count", None, Some(id)) => MetricSubject::HttpApi { id: id.to_owned() },
                    (_, None, Some(id)) => MetricSubject::WebSocketApi { id: id.to_owned() },
                    _ => continue,
                };
                subjects.insert(subject);
            }
        }
        Ok(subjects)
    }
}

impl MetricSource for CloudWatchMetrics {
    async fn apis_with_traffic(
        &self,
        stage: &str,
        kinds: &ApiTypes,
        since: i64,
        now: i64,
    ) -> Result<BTreeSet<MetricSubject>> {
        let mut subjects = BTreeSet::new();
        // REST and HTTP APIs both count requests in `Count` (named by ApiName and ApiId).
        if kinds.includes(ApiKind::Rest) || kinds.includes(ApiKind::Http) {
            subjects.extend(self.listed("Count", stage, since, now).await?.into_iter().filter(|s| match s {
                MetricSubject::RestApi { .. } => kinds.includes(ApiKind::Rest),
                _ => kinds.includes(ApiKind::Http),
            }));
        }
        // A WebSocket connection may outlive the listing's 3 hours: its messages still count.
        if kinds.includes(ApiKind::WebSocket) {
            subjects.extend(self.listed("ConnectCount", stage, since, now).await?);
            subjects.extend(self.listed("MessageCount", stage, since, now).await?);
        }
        Ok(subjects)
    }

    async fn api_series(
        &self,
        stage: &str,
        apis: &[MetricSubject],
        start: i64,
        end: i64,
    ) -> Result<BTreeMap<MetricSubject, ApiSeries>> {
        self.read(stage, apis, start, end, false).await
    }

    async fn with_traffic(
        &self,
        stage: &str,
        apis: &[MetricSubject],
        start: i64,
        end: i64,
    ) -> Result<BTreeSet<MetricSubject>> {
        let counted = self.read(stage, apis, start, end, true).await?;
        Ok(counted.into_iter().filter(|(_, series)| series.count.values().any(|n| *n > 0.0)).map(|(s, _)| s).collect())
    }
}

impl CloudWatchMetrics {
    /// The 1-minute datapoints of every metric of `apis` (or only of those counting requests).
    async fn read(
        &self,
        stage: &str,
        apis: &[MetricSubject],
        start: i64,
        end: i64,
        only_counts: bool,
    ) -> Result<BTreeMap<MetricSubject, ApiSeries>> {
        let mut series: BTreeMap<MetricSubject, ApiSeries> = BTreeMap::new();
        for QueryBatch { queries, owners } in query_batches(stage, apis, only_counts) {
            let mut completeness = Completeness::expecting(owners.keys());
            let mut pages = self
                .client
                .get_metric_data()
                .set_metric_data_queries(Some(queries))
                .start_time(DateTime::from_secs(start))
                .end_time(DateTime::from_secs(end))
                .scan_by(ScanBy::TimestampAscending)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| sdk_error("cloudwatch:GetMetricData", e))?;
                completeness.observe_page(page.messages());
                for result in page.metric_data_results() {
                    completeness.observe(result);
                    let Some((subject, target)) = result.id().and_then(|id| owners.get(id)) else { continue };
                    let entry = series.entry(subject.clone()).or_default();
                    let destination: &mut Series = match target {
                        Target::Count => &mut entry.count,
                        Target::ClientErrors => &mut entry.client_errors,
                        Target::ServerErrors => &mut entry.server_errors,
                        Target::Latency => &mut entry.latency,
                        Target::IntegrationLatency => &mut entry.integration_latency,
                    };
                    for (timestamp, value) in result.timestamps().iter().zip(result.values()) {
                        *destination.entry(timestamp.secs()).or_default() += *value;
                    }
                }
            }
            completeness.verdict(stage)?;
        }
        Ok(series)
    }
}

/// One `GetMetricData` call's queries, and which API and series each query id feeds.
struct QueryBatch {
    queries: Vec<MetricDataQuery>,
    owners: BTreeMap<String, (MetricSubject, Target)>,
}

/// Where each `GetMetricData` call of a read of `apis` starts (an index into `apis`): one query
/// per API and metric, whatever the number of windows, up to 500 queries a call (100 REST or
/// HTTP APIs, 83 WebSocket APIs); an API's queries never straddle two calls. What CloudWatch bills.
pub fn call_starts(apis: &[MetricSubject], only_counts: bool) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut queries = MAX_QUERIES_PER_CALL;
    for (index, subject) in apis.iter().enumerate() {
        let reads = subject.reads(only_counts).count();
        if queries + reads > MAX_QUERIES_PER_CALL {
            starts.push(index);
            queries = 0;
        }
        queries += reads;
    }
    starts
}

/// The calls that read every metric of `apis` on `stage` (see [`call_starts`]).
fn query_batches(stage: &str, apis: &[MetricSubject], only_counts: bool) -> Vec<QueryBatch> {
    let starts = call_starts(apis, only_counts);
    let ends = starts.iter().skip(1).copied().chain([apis.len()]);
    starts
        .iter()
        .zip(ends)
        .map(|(&first, last)| {
            let mut batch = QueryBatch { queries: Vec::new(), owners: BTreeMap::new() };
            for (api_index, subject) in apis.iter().enumerate().take(last).skip(first) {
                for (metric_index, (metric_name, stat, target)) in subject.reads(only_counts).enumerate() {
                    // Query ids must start with a lowercase letter: q<api index>_<metric index>.
                    let id = format!("q{api_index}_{metric_index}");
                    batch.owners.insert(id.clone(), (subject.clone(), *target));
                    batch.queries.push(metric_query(&id, subject, stage, metric_name, stat));
                }
            }
            batch
        })
        .collect()
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

fn metric_query(id: &str, subject: &MetricSubject, stage: &str, metric_name: &str, stat: &str) -> MetricDataQuery {
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let (api_dimension, api_value) = subject.dimension();
    let metric = Metric::builder()
        .namespace(NAMESPACE)
        .metric_name(metric_name)
        .dimensions(dimension(api_dimension, api_value))
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
    fn a_read_costs_one_query_per_metric_and_active_api_in_calls_of_up_to_500_queries() {
        let rest = |i: usize| MetricSubject::RestApi { name: format!("api-{i}") };
        let http = |i: usize| MetricSubject::HttpApi { id: format!("h{i}") };
        let websocket = |i: usize| MetricSubject::WebSocketApi { id: format!("w{i}") };
        // (active APIs, expected calls, expected metrics requested)
        let cases: [(Vec<MetricSubject>, usize, usize); 6] = [
            ((0..10).map(rest).collect(), 1, 50),
            ((0..1_000).map(rest).collect(), 10, 5_000),
            ((0..2_500).map(rest).collect(), 25, 12_500),
            ((0..600).map(http).collect(), 6, 3_000),
            // 83 WebSocket APIs (498 queries) per call.
            ((0..600).map(websocket).collect(), 8, 3_600),
            // The largest region: 1,320 REST, 600 HTTP and 600 WebSocket APIs on one stage.
            ((0..1_320).map(rest).chain((0..600).map(http)).chain((0..600).map(websocket)).collect(), 27, 13_200),
        ];
        for (apis, calls, metrics) in cases {
            let batches = query_batches("prod", &apis, false);
            let requested: usize = batches.iter().map(|b| b.queries.len()).sum();
            assert_eq!((batches.len(), requested), (calls, metrics), "{} active API-stages", apis.len());
            assert!(batches.iter().all(|b| b.queries.len() <= MAX_QUERIES_PER_CALL));
            let ids: BTreeSet<&String> = batches.iter().flat_map(|b| b.owners.keys()).collect();
            assert_eq!(ids.len(), requested, "query ids are unique across calls");
        }
        assert!(query_batches("prod", &[], false).is_empty(), "a quiet stage costs no GetMetricData call");
        // A probe of whether unlisted APIs had traffic reads only what counts their requests.
        let probe = query_batches("prod", &[rest(0), http(0), websocket(0)], true);
        let probed: Vec<String> = probe[0]
            .queries
            .iter()
            .filter_map(|q| q.metric_stat()?.metric()?.metric_name().map(str::to_owned))
            .collect();
        assert_eq!(probed, ["Count", "Count", "ConnectCount", "MessageCount"]);
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
