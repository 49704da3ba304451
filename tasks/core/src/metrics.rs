//! Metric windows and aggregation (ARCHITECTURE.md section 6). Pure functions.
//!
//! Per API and window: transactions = sum of `Count`; 4xx/5xx = sums of `4XXError`/`5XXError`;
//! 2xx = transactions - 4xx - 5xx. The three averages are means of the 1-minute averages weighted
//! by that minute's `Count`, as APICP means them: `averageResponseTime` is API Gateway's
//! `Latency` (what the client waits), `averageBackendResponseTime` its `IntegrationLatency`, and
//! `averageLatency` the gateway's own share, `Latency - IntegrationLatency` (floored at 0).

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
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub count: f64,
    pub client_errors: f64,
    pub server_errors: f64,
    latency: WeightedMean,
    integration_latency: WeightedMean,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct WeightedMean {
    weighted_sum: f64,
    weight: f64,
}

impl WeightedMean {
    /// Weights each minute's average by that minute's request count. A minute with an average
    /// but no count cannot be weighted and is left out: the averages are per request.
    fn of(averages: &Series, counts: &Series) -> Self {
        averages.iter().fold(Self::default(), |acc, (minute, average)| {
            let weight = counts.get(minute).copied().filter(|c| *c > 0.0).unwrap_or(0.0);
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
        let total = self.latency.value();
        let backend = self.integration_latency.value();
        // Without an integration latency (a mock integration), all of the time is the gateway's.
        let gateway = total.map(|total| (total - backend.unwrap_or(0.0)).max(0.0));
        ApiMetrics {
            transaction_count: self.count,
            average_latency: gateway,
            average_backend_response_time: backend,
            average_response_time: total,
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

impl ApiSeries {
    /// The datapoints of the minutes in `[start, end)`.
    pub fn within(&self, start: i64, end: i64) -> Self {
        let slice = |series: &Series| series.range(start..end).map(|(t, v)| (*t, *v)).collect();
        Self {
            count: slice(&self.count),
            client_errors: slice(&self.client_errors),
            server_errors: slice(&self.server_errors),
            latency: slice(&self.latency),
            integration_latency: slice(&self.integration_latency),
        }
    }
}

/// An API of the runtime as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApiIdentity {
    pub id: String,
    pub name: String,
    pub version: Option<String>,
}

/// The `AgentMetricsModel` of one runtime and window, from each API's totals in it. APIs without
/// requests are left out; the runtime totals are always sent, zero included, so a quiet window
/// is not a gap.
pub fn metrics_model(window_end: i64, apis: &[(ApiIdentity, Totals)]) -> AgentMetricsModel {
    let mut runtime = Totals::default();
    let mut per_api = Vec::new();
    for (api, totals) in apis {
        let totals = *totals;
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

/// When the metrics branch reads a stage's windows (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowTiming {
    /// Window length; windows are aligned to it.
    pub interval: i64,
    /// Windows end this long before now: API Gateway's datapoints arrive late.
    pub buffer: i64,
    /// Read only once this much is due, so one query serves several windows.
    pub fetch_interval: i64,
    /// How far back a stage without a watermark starts.
    pub backfill: i64,
    /// At most this many windows per stage and run, so a catch-up proceeds in bounded steps.
    pub max_windows: usize,
}

/// The windows `[start, end)` from `start` up to `end`: the first closes up to the grid (a
/// watermark off the grid after the interval changed), the others are `interval` long.
pub fn split_windows(start: i64, end: i64, interval: i64) -> Vec<(i64, i64)> {
    let mut windows = Vec::new();
    let mut from = start;
    loop {
        let to = (from.div_euclid(interval) + 1) * interval;
        if to > end {
            return windows;
        }
        windows.push((from, to));
        from = to;
    }
}

/// The range `[start, end)` of whole windows to read now for a stage whose windows are sent up
/// to `watermark`, or `None` while fewer than the fetch interval's are due. Windows end before
/// `covered_until`, up to which the stage's API catalog names every API deployed (the assets
/// watermark: an API created later is not in it yet). A first run starts `backfill` back; a
/// catch-up takes at most `max_windows` per run.
pub fn due_range(watermark: Option<i64>, now: i64, covered_until: i64, timing: WindowTiming) -> Option<(i64, i64)> {
    let interval = timing.interval;
    let align = |time: i64| time.div_euclid(interval) * interval;
    let latest_end = align((now - timing.buffer).min(covered_until));
    let start = match watermark {
        Some(watermark) if latest_end - watermark < timing.fetch_interval => return None,
        Some(watermark) => watermark,
        None => align(latest_end - timing.backfill.max(interval)),
    };
    let windows = split_windows(start, latest_end, interval);
    let last = windows.get(timing.max_windows.max(1) - 1).or(windows.last())?;
    Some((start, last.1))
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
        assert_eq!(metrics.average_response_time, Some(175.0)); // (100*10 + 200*30) / 40
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
        let apis = [(api("a"), busy), (api("b"), also_busy), (api("quiet"), ApiSeries::default())];
        let model = metrics_model(600, &apis.map(|(api, series)| (api, Totals::of(&series))));
        assert_eq!(model.timestamp, 600_000);
        assert_eq!(model.api_transaction_metrics_list.len(), 2);
        let runtime = &model.runtime_transaction_metrics.api_metrics;
        assert_eq!(runtime.transaction_count, 20.0);
        assert_eq!(runtime.average_response_time, Some(20.0)); // (50*5 + 10*15) / 20
    }

    #[test]
    fn an_empty_window_still_reports_zero_traffic() {
        let model = metrics_model(300, &[]);
        assert_eq!(model.runtime_transaction_metrics.api_metrics.transaction_count, 0.0);
        assert_eq!(model.runtime_transaction_metrics.api_metrics.average_latency, None);
        assert!(model.api_transaction_metrics_list.is_empty());
    }

    const TIMING: WindowTiming =
        WindowTiming { interval: 300, buffer: 180, fetch_interval: 300, backfill: 3600, max_windows: 12 };

    #[test]
    fn due_windows_are_aligned_buffered_and_bounded() {
        // now 10:17:30 with a 3-minute buffer: the latest window ends at 10:10 (interval 5 min).
        let now = 10 * 3600 + 17 * 60 + 30;
        let ten = 10 * 3600 + 10 * 60;
        assert_eq!(due_range(Some(ten - 900), now, i64::MAX, TIMING), Some((ten - 900, ten)));
        assert_eq!(
            split_windows(ten - 900, ten, 300),
            vec![(ten - 900, ten - 600), (ten - 600, ten - 300), (ten - 300, ten)]
        );
        let two = WindowTiming { max_windows: 2, ..TIMING };
        assert_eq!(due_range(Some(ten - 900), now, i64::MAX, two), Some((ten - 900, ten - 300)), "catch-up is bounded");
        assert_eq!(due_range(Some(ten), now, i64::MAX, TIMING), None, "nothing due yet");
        // Windows the stage's catalog does not cover yet wait for it.
        assert_eq!(due_range(Some(ten - 900), now, ten - 1, TIMING), Some((ten - 900, ten - 300)));
        assert_eq!(due_range(Some(ten - 900), now, ten - 601, TIMING), None, "less than the fetch interval covered");
        // A watermark off the grid (the interval changed) first closes up to it.
        assert_eq!(split_windows(ten - 420, ten, 300), vec![(ten - 420, ten - 300), (ten - 300, ten)]);
    }

    #[test]
    fn a_first_run_backfills_and_later_runs_wait_for_the_fetch_interval() {
        let now = 10 * 3600 + 17 * 60 + 30;
        let ten = 10 * 3600 + 10 * 60;
        assert_eq!(due_range(None, now, i64::MAX, TIMING), Some((ten - 3600, ten)), "the last hour: 12 windows");
        let half_hourly = WindowTiming { interval: 60, fetch_interval: 1800, max_windows: 60, ..TIMING };
        let minute_end = (now - 180) / 60 * 60;
        assert_eq!(due_range(Some(minute_end - 1740), now, i64::MAX, half_hourly), None, "29 minutes due: wait");
        assert_eq!(
            due_range(Some(minute_end - 1800), now, i64::MAX, half_hourly),
            Some((minute_end - 1800, minute_end))
        );
    }

    #[test]
    fn the_three_averages_mean_what_apicp_means() {
        let data = ApiSeries {
            count: series(&[(0, 10.0), (60, 30.0)]),
            latency: series(&[(0, 100.0), (60, 200.0)]),
            integration_latency: series(&[(0, 80.0), (60, 160.0)]),
            ..ApiSeries::default()
        };
        let metrics = Totals::of(&data).api_metrics();
        assert_eq!(metrics.average_response_time, Some(175.0)); // (100*10 + 200*30) / 40
        assert_eq!(metrics.average_backend_response_time, Some(140.0)); // (80*10 + 160*30) / 40
        assert_eq!(metrics.average_latency, Some(35.0)); // the gateway's own: 175 - 140
        let mock = ApiSeries { count: series(&[(0, 4.0)]), latency: series(&[(0, 12.0)]), ..ApiSeries::default() };
        let metrics = Totals::of(&mock).api_metrics();
        assert_eq!((metrics.average_latency, metrics.average_backend_response_time), (Some(12.0), None));
    }

    #[test]
    fn a_minute_with_latency_but_no_count_weighs_nothing() {
        let data = ApiSeries {
            count: series(&[(0, 10.0)]),
            latency: series(&[(0, 100.0), (60, 900.0)]),
            ..ApiSeries::default()
        };
        let metrics = Totals::of(&data).api_metrics();
        assert_eq!((metrics.transaction_count, metrics.average_response_time), (10.0, Some(100.0)));
        let only_latency = ApiSeries { latency: series(&[(60, 900.0)]), ..ApiSeries::default() };
        assert_eq!(Totals::of(&only_latency).api_metrics().average_response_time, None);
    }

    #[test]
    fn a_series_is_cut_into_its_windows_without_losing_a_minute() {
        let data = ApiSeries { count: series(&[(0, 1.0), (60, 2.0), (300, 4.0), (540, 8.0)]), ..ApiSeries::default() };
        let totals: Vec<f64> =
            split_windows(0, 600, 300).into_iter().map(|(s, e)| Totals::of(&data.within(s, e)).count).collect();
        assert_eq!(totals, vec![3.0, 12.0]);
    }
}
