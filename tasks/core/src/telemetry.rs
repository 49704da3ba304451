//! Metrics the agent publishes about itself, as CloudWatch embedded metric format (EMF) log
//! lines: Lambda ships stdout to CloudWatch Logs, which turns such lines into metrics with no
//! API call and no extra permission. The sync-lag alarm of the CDK stack reads these.

use serde_json::{Value, json};

use crate::model::Kind;

/// Namespace of the agent's own metrics (the CDK stack's alarms use the same).
pub const NAMESPACE: &str = "ApiGatewayApicpAgent";

/// How far behind now the oldest watermark of a branch's stages is (its worst stage).
pub fn sync_lag_record(kind: Kind, lag_seconds: i64, now: i64) -> Value {
    json!({
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
    })
}

/// Metrics windows whose answer was lost: recorded as sent (never resent), so possibly missing
/// in the control plane; worth an alarm.
pub fn windows_in_doubt_record(count: usize, now: i64) -> Value {
    count_record("MetricsWindowsInDoubt", count, now)
}

/// How many APIs the control plane refuses in the stages an assets run committed (retried by
/// the next runs): worth an alarm while it stays above zero.
pub fn refused_apis_record(count: usize, now: i64) -> Value {
    count_record("RefusedApis", count, now)
}

/// A count without dimensions.
fn count_record(name: &str, count: usize, now: i64) -> Value {
    json!({
        "_aws": {
            "Timestamp": now * 1000,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": "Count"}],
            }],
        },
        name: count,
    })
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
        let record = sync_lag_record(Kind::Assets, 312, 1_800_000_000);
        assert_eq!(record["_aws"]["Timestamp"], 1_800_000_000_000_i64);
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "SyncLagSeconds");
        assert_eq!(record["Kind"], "assets");
        assert_eq!(record["SyncLagSeconds"], 312);
    }

    #[test]
    fn counts_are_emf_records_without_dimensions() {
        let record = refused_apis_record(3, 1_800_000_000);
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(record["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "RefusedApis");
        assert_eq!(record["RefusedApis"], 3);
        assert_eq!(windows_in_doubt_record(1, 1_800_000_000)["MetricsWindowsInDoubt"], 1);
    }
}
