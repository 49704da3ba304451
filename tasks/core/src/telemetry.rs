//! Metrics the agent publishes about itself, as CloudWatch embedded metric format (EMF) log
//! lines: Lambda ships stdout to CloudWatch Logs, which turns such lines into metrics with no
//! API call and no extra permission. The sync-lag alarm of the CDK stack reads these.

use serde_json::{Value, json};

use crate::model::Kind;
use crate::target::Target;

/// Namespace of the agent's own metrics (the CDK stack's alarms use the same).
pub const NAMESPACE: &str = "ApiGatewayApicpAgent";

/// How far behind now the oldest watermark of a branch's stages is (its worst stage); by kind, and
/// by kind and target (`<account>/<region>`) for the dashboard when the run names one.
pub fn sync_lag_record(kind: Kind, lag_seconds: i64, target: Option<&Target>, now: i64) -> Value {
    let mut record = json!({
        "_aws": {
            "Timestamp": now * 1000,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Kind"]],
                "Metrics": [{"Name": "SyncLagSeconds", "Unit": "Seconds"}],
            }],
        },
        "Kind": kind,
        "SyncLagSeconds": lag_seconds,
    });
    by_target(&mut record, &["Kind"], target);
    record
}

/// Adds the target's own series (`dimensions` and `Target`) to `record`.
fn by_target(record: &mut Value, dimensions: &[&str], target: Option<&Target>) {
    let Some(target) = target else { return };
    let mut with_target: Vec<&str> = dimensions.to_vec();
    with_target.push("Target");
    if let Some(sets) = record["_aws"]["CloudWatchMetrics"][0]["Dimensions"].as_array_mut() {
        sets.push(json!(with_target));
    }
    record["Target"] = json!(target.to_string());
}

/// Metrics windows whose answer was lost: recorded as sent (never resent), so possibly missing
/// in the control plane; worth an alarm.
pub fn windows_in_doubt_record(count: usize, target: Option<&Target>, now: i64) -> Value {
    count_by_target("MetricsWindowsInDoubt", count, target, now)
}

/// The APIs a target's stages federate (their catalogs), at an assets commit: the dashboard's.
pub fn apis_federated_record(count: usize, target: Option<&Target>, now: i64) -> Value {
    count_by_target("ApisFederated", count, target, now)
}

/// Metrics windows the control plane accepted, by target for the dashboard.
pub fn windows_sent_record(count: usize, target: Option<&Target>, now: i64) -> Value {
    count_by_target("MetricsWindowsSent", count, target, now)
}

/// How many APIs the control plane refuses in the stages an assets run committed (retried by
/// the next runs): worth an alarm while it stays above zero.
pub fn refused_apis_record(count: usize, target: Option<&Target>, now: i64) -> Value {
    count_by_target("RefusedApis", count, target, now)
}

/// Whether a target's run failed (1) or not (0), by target (`<account>/<region>`): the
/// dashboard's per-target line.
pub fn target_failed_record(target: &Target, failed: bool, now: i64) -> Value {
    json!({
        "_aws": {
            "Timestamp": now * 1000,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Target"]],
                "Metrics": [{"Name": "TargetFailed", "Unit": "Count"}],
            }],
        },
        "Target": target.to_string(),
        "TargetFailed": u8::from(failed),
    })
}

/// How many targets' runs failed in a fan-out execution: the failed-target alarm's metric.
pub fn targets_failed_record(count: usize, now: i64) -> Value {
    count_record("TargetsFailed", count, now)
}

/// Whether a target's changes cannot be pushed (1: no trail logs management write events), at
/// each check. No target dimension: a series per target would cost more than the target's runs;
/// the execution output names the target.
pub fn push_unavailable_record(unavailable: bool, now: i64) -> Value {
    count_record("PushUnavailable", usize::from(unavailable), now)
}

/// What the push starter did with one batch: events received for federated targets, events
/// ignored (malformed or foreign), executions started.
pub fn push_batch_record(received: usize, ignored: usize, started: usize, now: i64) -> Value {
    counts_record(
        &[("PushEventsReceived", received), ("PushEventsIgnored", ignored), ("PushExecutionsStarted", started)],
        now,
    )
}

/// A count without dimensions, and the target's own series when one is named.
fn count_by_target(name: &str, count: usize, target: Option<&Target>, now: i64) -> Value {
    let mut record = count_record(name, count, now);
    by_target(&mut record, &[], target);
    record
}

/// A count without dimensions.
fn count_record(name: &str, count: usize, now: i64) -> Value {
    counts_record(&[(name, count)], now)
}

/// Counts without dimensions, in one record.
fn counts_record(counts: &[(&str, usize)], now: i64) -> Value {
    let metrics: Vec<Value> = counts.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect();
    let mut record = json!({
        "_aws": {
            "Timestamp": now * 1000,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [[]], "Metrics": metrics}],
        },
    });
    for (name, count) in counts {
        record[*name] = json!(count);
    }
    record
}

/// Writes one EMF record as its own stdout line, apart from the tracing output.
pub fn emit(record: &Value) {
    println!("{record}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_lag_is_an_emf_record_with_the_kind_as_dimension() {
        let record = sync_lag_record(Kind::Assets, 312, None, 1_800_000_000);
        assert_eq!(record["_aws"]["Timestamp"], 1_800_000_000_000_i64);
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "SyncLagSeconds");
        assert_eq!(record["Kind"], "assets");
        assert_eq!(record["SyncLagSeconds"], 312);
    }

    #[test]
    fn counts_are_emf_records_without_dimensions() {
        let record = refused_apis_record(3, None, 1_800_000_000);
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "RefusedApis");
        assert_eq!(record["RefusedApis"], 3);
        assert_eq!(windows_in_doubt_record(1, None, 1_800_000_000)["MetricsWindowsInDoubt"], 1);
    }

    #[test]
    fn a_named_target_gets_its_own_series_beside_the_deployments() {
        let target = Target::new("444455556666", "us-east-1");
        let lag = sync_lag_record(Kind::Metrics, 60, Some(&target), 1_800_000_000);
        assert_eq!(lag["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([["Kind"], ["Kind", "Target"]]));
        assert_eq!(lag["Target"], "444455556666/us-east-1");
        let federated = apis_federated_record(41, Some(&target), 1_800_000_000);
        assert_eq!(federated["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "ApisFederated");
        assert_eq!(
            (federated["ApisFederated"].as_u64(), federated["Target"].as_str()),
            (Some(41), Some("444455556666/us-east-1"))
        );
        let sent = windows_sent_record(6, Some(&target), 1_800_000_000);
        assert_eq!(sent["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[], ["Target"]]));
        assert_eq!(sent["MetricsWindowsSent"], 6);
        let failed = target_failed_record(&target, true, 1_800_000_000);
        assert_eq!(
            (failed["TargetFailed"].as_u64(), failed["Target"].as_str()),
            (Some(1), Some("444455556666/us-east-1"))
        );
    }
}
