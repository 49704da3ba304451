//! Request and response bodies of the control plane, as in the contract copied to `tests/stack/apicp-openapi/`.
//! Field names follow the contract (camelCase); optional fields are omitted, never sent as null.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `Runtime` of runtime-management.yaml. Limits: name 1..=50, description ..=300, tags ..=50 and
/// without whitespace, region ..=50.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Runtime {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "type")]
    pub runtime_type: String,
    pub deployment_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<RuntimeCapacity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeCapacity {
    pub value: u64,
    pub unit: String,
}

/// `Type` of runtime-type.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeType {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
}

/// `RuntimeHeartbeatDataV2` of runtime-metrics.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub runtime_id: String,
    /// Epoch milliseconds.
    pub created: i64,
    /// 1 active, 0 inactive.
    pub active: u8,
}

/// `APIDocument` of api-management.yaml. Limits: name 1..=1024, description ..=8191.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiDocument {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(rename = "type")]
    pub api_type: ApiType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ApiStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_set_id: Option<String>,
    #[serde(rename = "runtimeAPIId", skip_serializing_if = "Option::is_none")]
    pub runtime_api_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies_count: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiType {
    Rest,
    Soap,
    Odata,
    Websocket,
    Graphql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiStatus {
    Active,
    Inactive,
}

/// An item of a listing (an API, a runtime): only its identity matters, so other fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Identified {
    pub id: String,
}

/// `AgentApiMetrics` of runtime-metrics.yaml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMetrics {
    pub transaction_count: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_latency: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_backend_response_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average_response_time: Option<f64>,
}

/// `metricsByStatusCode`: keys `2xx`, `4xx`, `5xx`.
pub type MetricsByStatusCode = BTreeMap<String, ApiMetrics>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeTransactionMetrics {
    pub api_metrics: ApiMetrics,
    pub metrics_by_status_code: MetricsByStatusCode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTransactionMetrics {
    pub api_id: String,
    pub api_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub api_metrics: ApiMetrics,
    pub metrics_by_status_code: MetricsByStatusCode,
}

/// `AgentMetricsModel` of runtime-metrics.yaml: one runtime, one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMetricsModel {
    /// Epoch milliseconds of the window's end.
    pub timestamp: i64,
    pub runtime_transaction_metrics: RuntimeTransactionMetrics,
    pub api_transaction_metrics_list: Vec<ApiTransactionMetrics>,
}

/// `ErrorMessage`: the body of the service's 4xx/5xx answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    #[serde(default)]
    pub error_details: Vec<String>,
}
