//! `transform`: turns a chunk's APIs (from the snapshot list-changes stored) into control plane
//! documents, or its runtimes' metrics (from CloudWatch) into one stored report per window.
//!
//! A metrics read names CloudWatch's series from the stage's API catalog (kept by the assets
//! branch), reads every API `ListMetrics` lists as active and probes the others (a new metric
//! takes up to 15 minutes to be listed, one quiet for two weeks is not listed: neither may decide
//! that an API had no traffic), one `GetMetricData` call per 500 queries. A read that outlives
//! the invocation keeps what it read, call by call, and the next invocation goes on from there.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::aws::apigateway::DeployedApi;
use crate::aws::cloudwatch::{MetricSource, MetricSubject, call_starts};
use crate::aws::state::{StateStore, WORK_TTL_SECONDS, progress_key, report_key};
use crate::config::ApiTypes;
use crate::control_plane::types::ApiDocument;
use crate::error::{AgentError, Result};
use crate::mapping::{api_document, published_api_id};
use crate::metrics::{ApiIdentity, Totals, metrics_model};
use crate::model::{AssetChunk, Batch, MetricsChunk, RuntimeWindows};

/// Serialized documents per batch stay under this; what does not fit goes to `next` and the
/// workflow loops. With the ids that travel alongside (at most 500 in `next` and `deletes`,
/// about 24 KiB), a batch stays under 200 KiB, well inside Step Functions' 256 KiB limit.
pub const BATCH_BUDGET_BYTES: usize = 176 * 1024;

/// What a CloudWatch call may take beyond the slowest one seen so far, and the state writes
/// after it: a new call starts only with this much time left before the deadline.
const CALL_MARGIN: Duration = Duration::from_secs(15);

pub struct Transform<'a, M, S> {
    pub region: &'a str,
    pub api_types: &'a ApiTypes,
    pub metrics: &'a M,
    pub state: &'a S,
}

/// The APIs one read of a runtime's windows covers, in the order they are read, and how they
/// are cut into `GetMetricData` calls: fixed when the read starts, so a read resumed by another
/// invocation reads the same APIs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ReadPlan {
    apis: Vec<(MetricSubject, ApiIdentity)>,
    /// The index of each call's first API.
    calls: Vec<usize>,
}

/// What one call of a read found: per window end, each API's totals, in the call's order.
type CallTotals = Vec<(i64, Vec<Totals>)>;

/// How the invocation's time is spent: a call starts only if the slowest one so far, and a margin,
/// still fit before the deadline.
struct Budget {
    deadline: Instant,
    slowest: Duration,
    calls: usize,
}

impl Budget {
    /// Whether another call may start; the first one always may, so every invocation progresses.
    fn allows_a_call(&self) -> bool {
        self.calls == 0 || Instant::now() + self.slowest + CALL_MARGIN <= self.deadline
    }

    fn spent(&mut self, started: Instant) {
        self.slowest = self.slowest.max(started.elapsed());
        self.calls += 1;
    }
}

impl<M: MetricSource, S: StateStore> Transform<'_, M, S> {
    /// The chunk's documents, from the snapshot list-changes stored: no API Gateway call, so a
    /// retried chunk costs none either.
    pub async fn assets(&self, chunk: AssetChunk) -> Result<Batch> {
        let mut snapshot: HashMap<String, DeployedApi> = match &chunk.snapshot {
            Some(key) => self.state.load_snapshot(key).await?.into_iter().map(|d| (d.api.id.clone(), d)).collect(),
            None => HashMap::new(),
        };
        let mut upserts: Vec<ApiDocument> = Vec::new();
        let mut used = 0;
        let mut pending = chunk.upserts.into_iter();
        let mut next = None;
        while let Some(api_id) = pending.next() {
            let deployed = snapshot.remove(&api_id).ok_or_else(|| {
                AgentError::invalid_input(format!("chunk upsert {api_id} is not in its snapshot {:?}", chunk.snapshot))
            })?;
            let document = api_document(&deployed, self.region);
            let size = serde_json::to_vec(&document).map(|bytes| bytes.len()).unwrap_or(usize::MAX);
            if !upserts.is_empty() && used + size > BATCH_BUDGET_BYTES {
                let mut rest = vec![api_id];
                rest.extend(pending);
                next = Some(Box::new(AssetChunk {
                    target: chunk.target.clone(),
                    runtime_id: chunk.runtime_id.clone(),
                    stage: chunk.stage.clone(),
                    run: chunk.run.clone(),
                    index: chunk.index,
                    upserts: rest,
                    deletes: vec![],
                    snapshot: chunk.snapshot.clone(),
                }));
                break;
            }
            used += size;
            upserts.push(document);
        }
        Ok(Batch::Assets {
            target: chunk.target,
            runtime_id: chunk.runtime_id,
            stage: chunk.stage,
            run: chunk.run,
            index: chunk.index,
            snapshot: chunk.snapshot,
            upserts,
            deletes: chunk.deletes,
            next,
        })
    }

    /// Reads each runtime's due windows from CloudWatch with one query per metric and API (not
    /// per window), and stores each window's report for publish. A runtime whose data is not
    /// complete yet fails the chunk with `MetricsIncomplete`: its windows wait, never sent as
    /// zero. Runtimes the invocation had no time for keep `reports_stored` false; the workflow
    /// brings them back.
    pub async fn metrics(&self, mut chunk: MetricsChunk, now: i64, deadline: Instant) -> Result<Batch> {
        let mut budget = Budget { deadline, slowest: Duration::ZERO, calls: 0 };
        for runtime in chunk.runtimes.iter_mut().filter(|r| !r.reports_stored) {
            if !budget.allows_a_call() {
                break;
            }
            runtime.reports_stored = self.read(runtime, now, &mut budget).await?;
        }
        let stored = chunk.runtimes.iter().filter(|r| r.reports_stored).count();
        if stored < chunk.runtimes.len() {
            tracing::info!(
                stored,
                left = chunk.runtimes.len() - stored,
                "metrics read continues in the next invocation"
            );
        }
        Ok(Batch::Metrics(chunk))
    }

    /// Reads the runtime's windows, going on from what an earlier invocation read; `true` once
    /// every window's report is stored, `false` when the budget ran out first. What a later
    /// invocation needs is stored only when it may need it: the plan when the read stops, a
    /// call's result when another call follows.
    async fn read(&self, runtime: &RuntimeWindows, now: i64, budget: &mut Budget) -> Result<bool> {
        let windows = runtime.windows();
        let key = |part: &str| progress_key(runtime, part);
        let (plan, resumed) = match self.state.load_document::<ReadPlan>(&key("plan")).await? {
            Some(plan) => (plan, true),
            None => (self.plan(runtime, now, budget).await?, false),
        };
        let mut read: Vec<CallTotals> = Vec::with_capacity(plan.calls.len());
        for (call, &first) in plan.calls.iter().enumerate() {
            let part = format!("call{call}");
            if resumed && let Some(done) = self.state.load_document::<CallTotals>(&key(&part)).await? {
                let same_windows = done.len() == windows.len() && done.iter().zip(&windows).all(|(d, w)| d.0 == w.1);
                if same_windows {
                    read.push(done);
                    continue;
                }
            }
            if !budget.allows_a_call() {
                if !resumed {
                    self.state.put_document(&key("plan"), &plan, now + WORK_TTL_SECONDS).await?;
                }
                return Ok(false);
            }
            let last = plan.calls.get(call + 1).copied().unwrap_or(plan.apis.len());
            let subjects: Vec<MetricSubject> =
                plan.apis.get(first..last).unwrap_or_default().iter().map(|(s, _)| s.clone()).collect();
            let started = Instant::now();
            let mut series = self.metrics.api_series(&runtime.stage, &subjects, runtime.start, runtime.end).await?;
            budget.spent(started);
            let totals: CallTotals = windows
                .iter()
                .map(|&(from, to)| {
                    let per_api = subjects
                        .iter()
                        .map(|s| series.get(s).map(|series| Totals::of(&series.within(from, to))).unwrap_or_default())
                        .collect();
                    (to, per_api)
                })
                .collect();
            series.clear();
            if call + 1 < plan.calls.len() {
                self.state.put_document(&key(&part), &totals, now + WORK_TTL_SECONDS).await?;
            }
            read.push(totals);
        }
        for (index, &(_, window_end)) in windows.iter().enumerate() {
            let mut totals = Vec::with_capacity(plan.apis.len());
            for call in &read {
                match call.get(index) {
                    Some((end, per_api)) if *end == window_end => totals.extend(per_api.iter().copied()),
                    // Every call read above, or loaded with the same windows.
                    _ => {
                        return Err(AgentError::invalid_input(format!(
                            "stored metrics read of {} has no window ending {window_end}",
                            runtime.runtime_id
                        )));
                    }
                }
            }
            let apis: Vec<(ApiIdentity, Totals)> = plan.apis.iter().map(|(_, api)| api.clone()).zip(totals).collect();
            let report = metrics_model(window_end, &apis);
            self.state
                .put_report(&report_key(&runtime.runtime_id, window_end), &report, now + WORK_TTL_SECONDS)
                .await?;
        }
        Ok(true)
    }

    /// The APIs a read covers: those deployed to the stage (its catalog) that `ListMetrics`
    /// lists as active, and those of the others that a probe finds traffic of.
    async fn plan(&self, runtime: &RuntimeWindows, now: i64, budget: &mut Budget) -> Result<ReadPlan> {
        let stage = &runtime.stage;
        let catalog = self.state.load_catalog(stage).await?.ok_or_else(|| {
            AgentError::MetricsIncomplete(format!("stage {stage} has no API catalog yet: its windows wait for it"))
        })?;
        // REST API metrics carry the API's name, not its id: of two REST APIs with one name on a
        // stage, CloudWatch sums the traffic, and it is reported under the lowest id (the catalog
        // is sorted by id). HTTP and WebSocket APIs are told apart by id.
        let mut deployed: BTreeMap<MetricSubject, ApiIdentity> = BTreeMap::new();
        for entry in catalog.into_iter().filter(|e| self.api_types.includes(e.kind)) {
            let subject = MetricSubject::of(entry.kind, &entry.id, &entry.name);
            let identity =
                ApiIdentity { id: published_api_id(&entry.id, stage), name: entry.name, version: entry.deployment };
            deployed.entry(subject).or_insert(identity);
        }
        let started = Instant::now();
        let listed = self.metrics.apis_with_traffic(stage, self.api_types, runtime.start, now).await?;
        let unlisted: Vec<MetricSubject> = deployed.keys().filter(|s| !listed.contains(s)).cloned().collect();
        let probed = match unlisted.is_empty() {
            true => Default::default(),
            false => self.metrics.with_traffic(stage, &unlisted, runtime.start, runtime.end).await?,
        };
        budget.spent(started);
        if !probed.is_empty() {
            tracing::info!(stage, apis = probed.len(), "traffic of APIs ListMetrics does not list yet");
        }
        let apis: Vec<(MetricSubject, ApiIdentity)> =
            deployed.into_iter().filter(|(subject, _)| listed.contains(subject) || probed.contains(subject)).collect();
        let subjects: Vec<MetricSubject> = apis.iter().map(|(subject, _)| subject.clone()).collect();
        let calls = call_starts(&subjects, false);
        Ok(ReadPlan { apis, calls })
    }
}
