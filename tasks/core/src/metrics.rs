//! Metric windows and aggregation (ARCHITECTURE.md section 6). Pure functions.
//!
//! Per API and window: transactions = sum of `Count`; 4xx/5xx = sums of `4XXError`/`5XXError`;
//! 2xx = transactions - 4xx - 5xx; average latency (`Latency`, which API Gateway measures from
//! request to response, so it is also the response time) and average backend response time
//! (`IntegrationLatency`) are means of the 1-minute averages weighted by that minute's `Count`.

use std::collections::BTreeMap;

use crate::control_plane::types::{
    AgentMetricsModel, ApiMetrics, ApiTransactionMetrics, MetricsByStatusCode, RuntimeTransactionMetrics,
};

/// Datapoints by epoch second.
pub type Series = BTreeMap<i64, f64>;

/// The 1-minute datapoints of one API on one stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiSeries {
    pub count: Series,
    pub client_errors: Series,
    pub server_errors: Series,
    pub latency: Series,
    pub integration_latency: Series,
}

/// Sums from which counts and weighted averages derive; adding two gives their union.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub count: f64,
    pub client_errors: f64,
    pub server_errors: f64,
    latency: WeightedMean,
    integration_latency: WeightedMean,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct WeightedMean {
    weighted_sum: f64,
    weight: f64,
}

impl WeightedMean {
    /// Weights each minute's average by that minute's request count; a minute without a count
    /// (should not happen) weighs 1 so its datapoint is not lost.
    fn of(averages: &Series, counts: &Series) -> Self {
        averages.iter().fold(Self::default(), |acc, (minute, average)| {
            let weight = counts.get(minute).copied().filter(|c| *c > 0.0).unwrap_or(1.0);
            Self { weighted_sum: acc.weighted_sum + average * weight, weight: acc.weight + weight }
        })
    }

    fn value(self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.weighted_sum / self.weight)
    }
}

impl std::ops::Add for WeightedMean {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self { weighted_sum: self.weighted_sum + other.weighted_sum, weight: self.weight + other.weight }
    }
}

impl std::ops::Add for Totals {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            count: self.count + other.count,
            client_errors: self.client_errors + other.client_errors,
            server_errors: self.server_errors + other.server_errors,
            latency: self.latency + other.latency,
            integration_latency: self.integration_latency + other.integration_latency,
        }
    }
}

impl Totals {
    pub fn of(series: &ApiSeries) -> Self {
        Self {
            count: series.count.values().sum(),
            client_errors: series.client_errors.values().sum(),
            server_errors: series.server_errors.values().sum(),
            latency: WeightedMean::of(&series.latency, &series.count),
            integration_latency: WeightedMean::of(&series.integration_latency, &series.count),
        }
    }

    pub fn api_metrics(&self) -> ApiMetrics {
        let latency = self.latency.value();
        ApiMetrics {
            transaction_count: self.count,
            average_latency: latency,
            average_backend_response_time: self.integration_latency.value(),
            average_response_time: latency,
        }
    }

    pub fn by_status_code(&self) -> MetricsByStatusCode {
        let successes = (self.count - self.client_errors - self.server_errors).max(0.0);
        let only_count = |count: f64| ApiMetrics { transaction_count: count, ..ApiMetrics::default() };
        BTreeMap::from([
            ("2xx".to_owned(), only_count(successes)),
            ("4xx".to_owned(), only_count(self.client_errors)),
            ("5xx".to_owned(), only_count(self.server_errors)),
        ])
    }
}

/// An API of the runtime as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiIdentity {
    pub id: String,
    pub name: String,
    pub version: Option<String>,
}

/// The `AgentMetricsModel` of one runtime and window. APIs without requests are left out; the
/// runtime totals are always sent, zero included, so a quiet window is not a gap.
pub fn metrics_model(window_end: i64, apis: &[(ApiIdentity, ApiSeries)]) -> AgentMetricsModel {
    let mut runtime = Totals::default();
    let mut per_api = Vec::new();
    for (api, series) in apis {
        let totals = Totals::of(series);
        runtime = runtime + totals;
        if totals.count > 0.0 {
            per_api.push(ApiTransactionMetrics {
                api_id: api.id.clone(),
                api_name: api.name.clone(),
                api_version: api.version.clone(),
                api_metrics: totals.api_metrics(),
                metrics_by_status_code: totals.by_status_code(),
            });
        }
    }
    AgentMetricsModel {
        timestamp: window_end * 1000,
        runtime_transaction_metrics: RuntimeTransactionMetrics {
            api_metrics: runtime.api_metrics(),
            metrics_by_status_code: runtime.by_status_code(),
        },
        api_transaction_metrics_list: per_api,
    }
}

/// The windows `[start, end)` to send now: aligned to `interval`, ending no later than
/// `now - buffer`, starting at the watermark (or with the latest window on a first run), at most
/// `max_windows` of them so a long outage catches up in bounded steps.
pub fn due_windows(
    watermark: Option<i64>,
    now: i64,
    interval: i64,
    buffer: i64,
    max_windows: usize,
) -> Vec<(i64, i64)> {
    let latest_end = (now - buffer).div_euclid(interval) * interval;
    let mut start = watermark.unwrap_or(latest_end - interval);
    let mut windows = Vec::new();
    while windows.len() < max_windows {
        // A watermark off the grid (the interval was changed) first closes up to the grid.
        let end = (start.div_euclid(interval) + 1) * interval;
        if end > latest_end {
            break;
        }
        windows.push((start, end));
        start = end;
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(i64, f64)]) -> Series {
        points.iter().copied().collect()
    }

    fn api(id: &str) -> ApiIdentity {
        ApiIdentity { id: id.into(), name: id.into(), version: None }
    }

    #[test]
    fn averages_are_weighted_by_request_count() {
        let data = ApiSeries {
            count: series(&[(0, 10.0), (60, 30.0)]),
            client_errors: series(&[(0, 2.0), (60, 1.0)]),
            server_errors: series(&[(60, 3.0)]),
            latency: series(&[(0, 100.0), (60, 200.0)]),
            integration_latency: series(&[(0, 80.0), (60, 160.0)]),
        };
        let totals = Totals::of(&data);
        let metrics = totals.api_metrics();
        assert_eq!(metrics.transaction_count, 40.0);
        assert_eq!(metrics.average_latency, Some(175.0)); // (100*10 + 200*30) / 40
        assert_eq!(metrics.average_backend_response_time, Some(140.0));
        let by_status = totals.by_status_code();
        assert_eq!(by_status["2xx"].transaction_count, 34.0);
        assert_eq!(by_status["4xx"].transaction_count, 3.0);
        assert_eq!(by_status["5xx"].transaction_count, 3.0);
    }

    #[test]
    fn runtime_totals_sum_apis_and_quiet_apis_are_left_out() {
        let busy = ApiSeries { count: series(&[(0, 5.0)]), latency: series(&[(0, 50.0)]), ..ApiSeries::default() };
        let also_busy =
            ApiSeries { count: series(&[(0, 15.0)]), latency: series(&[(0, 10.0)]), ..ApiSeries::default() };
        let model =
            metrics_model(600, &[(api("a"), busy), (api("b"), also_busy), (api("quiet"), ApiSeries::default())]);
        assert_eq!(model.timestamp, 600_000);
        assert_eq!(model.api_transaction_metrics_list.len(), 2);
        let runtime = &model.runtime_transaction_metrics.api_metrics;
        assert_eq!(runtime.transaction_count, 20.0);
        assert_eq!(runtime.average_latency, Some(20.0)); // (50*5 + 10*15) / 20
    }

    #[test]
    fn an_empty_window_still_reports_zero_traffic() {
        let model = metrics_model(300, &[]);
        assert_eq!(model.runtime_transaction_metrics.api_metrics.transaction_count, 0.0);
        assert_eq!(model.runtime_transaction_metrics.api_metrics.average_latency, None);
        assert!(model.api_transaction_metrics_list.is_empty());
    }

    #[test]
    fn windows_are_aligned_buffered_and_bounded() {
        // now 10:17:30 with a 3-minute buffer: the latest window ends at 10:10 (interval 5 min).
        let now = 10 * 3600 + 17 * 60 + 30;
        let ten = 10 * 3600 + 10 * 60;
        assert_eq!(due_windows(None, now, 300, 180, 12), vec![(ten - 300, ten)]);
        assert_eq!(
            due_windows(Some(ten - 900), now, 300, 180, 12),
            vec![(ten - 900, ten - 600), (ten - 600, ten - 300), (ten - 300, ten)]
        );
        assert_eq!(due_windows(Some(ten - 900), now, 300, 180, 2).len(), 2, "catch-up is bounded");
        assert!(due_windows(Some(ten), now, 300, 180, 12).is_empty(), "nothing due yet");
        assert_eq!(due_windows(Some(ten - 420), now, 300, 180, 12), vec![(ten - 420, ten - 300), (ten - 300, ten)]);
    }
}
