//! HTTP client of the control plane: Basic auth, request timeouts, paging, and the one place
//! where HTTP statuses become `AgentError`s.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{AgentMetricsModel, ApiDocument, ErrorMessage, Heartbeat, ListedApi, Runtime, RuntimeType};
use crate::error::{AgentError, Result};

/// What the agent needs from the control plane; the handlers depend on this, tests swap it.
pub trait ControlPlane: Send + Sync {
    /// Makes sure the runtime type our runtimes reference exists.
    fn ensure_runtime_type(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Registers a runtime; a 409 (already registered) also yields the runtime's id.
    fn register_runtime(&self, runtime: &Runtime) -> impl Future<Output = Result<String>> + Send;
    fn send_heartbeats(&self, heartbeats: &[Heartbeat]) -> impl Future<Output = Result<()>> + Send;
    /// Ids of every API the runtime holds, across all pages.
    fn list_api_ids(&self, runtime_id: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Updates the API, creating it when the control plane does not know it yet.
    fn upsert_api(&self, runtime_id: &str, api: &ApiDocument) -> impl Future<Output = Result<Upserted>> + Send;
    /// Deletes the API; deleting an API that is already gone is a success (`false`).
    fn delete_api(&self, runtime_id: &str, api_id: &str) -> impl Future<Output = Result<bool>> + Send;
    fn send_metrics(&self, runtime_id: &str, metrics: &AgentMetricsModel) -> impl Future<Output = Result<()>> + Send;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// Largest page the contract allows for API listings.
const API_PAGE_SIZE: usize = 500;
const TYPE_PAGE_SIZE: usize = 100;

#[derive(Debug, Clone)]
pub struct HttpControlPlane {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
}

impl HttpControlPlane {
    /// `ca_bundle_pem` adds trusted roots (for a private CA); verification is never turned off.
    pub fn new(
        base_url: &str,
        credentials: Credentials,
        timeout: Duration,
        ca_bundle_pem: Option<&[u8]>,
    ) -> Result<Self> {
        let invalid = |reason: String| AgentError::InvalidConfig { variable: "APICP_URL", reason };
        let base = Url::parse(&format!("{}/", base_url.trim_end_matches('/'))).map_err(|e| invalid(e.to_string()))?;
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("must not carry credentials; use the secret".into()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("apigw-apicp-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_bundle_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| AgentError::InvalidConfig {
                variable: "APICP_CA_BUNDLE",
                reason: format!("not a PEM bundle: {e}"),
            })? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|e| invalid(e.to_string()))?;
        Ok(Self { http, base, credentials })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().extend(segments);
        url
    }

    /// Sends one request and returns the status and body; maps transport failures and error
    /// statuses, except those listed in `accepted`, to `AgentError`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + Sync)>,
        accepted: &[StatusCode],
    ) -> Result<(StatusCode, Vec<u8>)> {
        let what = format!("{method} {}", url.path());
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(&self.credentials.username, Some(&self.credentials.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| transport_error(&what, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| transport_error(&what, &e))?;
        if status.is_success() || accepted.contains(&status) {
            Ok((status, body.to_vec()))
        } else {
            Err(status_error(&what, status, &body))
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T> {
        let what = format!("GET {}", url.path());
        let (_, body) = self.send(Method::GET, url, None::<&()>, &[]).await?;
        parse_body(&what, &body)
    }
}

/// Turns a non-success status into the error class the state machine acts on.
pub fn status_error(what: &str, status: StatusCode, body: &[u8]) -> AgentError {
    let details = serde_json::from_slice::<ErrorMessage>(body).map(|m| m.error_details).unwrap_or_default();
    let message = format!("{what} answered {}", status.as_u16());
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => AgentError::Unauthorized(message),
        StatusCode::BAD_REQUEST => AgentError::InvalidInput { message, details },
        StatusCode::TOO_MANY_REQUESTS => AgentError::Throttled(message),
        s if s.is_server_error() => AgentError::ControlPlaneUnavailable(message),
        _ if details.is_empty() => AgentError::ControlPlaneRejected(message),
        _ => AgentError::ControlPlaneRejected(format!("{message}: {}", details.join("; "))),
    }
}

fn transport_error(what: &str, error: &reqwest::Error) -> AgentError {
    // reqwest's Display never includes the Authorization header; the URL is left out too so no
    // query string ends up in the console.
    if error.is_timeout() {
        AgentError::ControlPlaneUnavailable(format!("{what} timed out"))
    } else {
        AgentError::ControlPlaneUnavailable(format!("{what} failed: {}", describe(error)))
    }
}

/// The error and its causes (reqwest's own Display hides the cause, e.g. "connection refused").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_body<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| AgentError::ControlPlaneRejected(format!("{what} answered an unexpected body: {e}")))
}

/// The registered runtime's id from a 201 (`Runtime`) or a 409, which the contract describes
/// both as a `Runtime` and as a `RuntimeReregistrationResponse` (`{"runtime": Runtime, ...}`).
fn registered_runtime_id(body: &serde_json::Value) -> Option<String> {
    body.get("id").or_else(|| body.pointer("/runtime/id")).and_then(|id| id.as_str()).map(str::to_owned)
}

impl ControlPlane for HttpControlPlane {
    async fn ensure_runtime_type(&self, name: &str) -> Result<()> {
        let mut page = 1;
        loop {
            let mut url = self.url(&["api", "assetcatalog", "v1", "runtimes", "types"]);
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("size", &TYPE_PAGE_SIZE.to_string());
            let types: Vec<RuntimeType> = self.get_json(url).await?;
            if types.iter().any(|t| t.name == name) {
                return Ok(());
            }
            if types.len() < TYPE_PAGE_SIZE {
                break;
            }
            page += 1;
        }
        let url = self.url(&["api", "assetcatalog", "v1", "runtimes", "types"]);
        let body = RuntimeType { id: None, name: name.to_owned() };
        self.send(Method::POST, url, Some(&body), &[]).await.map(drop)
    }

    async fn register_runtime(&self, runtime: &Runtime) -> Result<String> {
        let url = self.url(&["api", "assetcatalog", "v2", "runtimes"]);
        let what = format!("POST {}", url.path());
        // 409 answers with the runtime that is already registered.
        let (_, body) = self.send(Method::POST, url, Some(runtime), &[StatusCode::CONFLICT]).await?;
        registered_runtime_id(&parse_body(&what, &body)?)
            .ok_or_else(|| AgentError::ControlPlaneRejected(format!("{what} answered a runtime without an id")))
    }

    async fn send_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<()> {
        if heartbeats.is_empty() {
            return Ok(());
        }
        let url = self.url(&["api", "engine", "v2", "runtimes", "heartbeats", "bulk"]);
        self.send(Method::POST, url, Some(&heartbeats), &[]).await.map(drop)
    }

    async fn list_api_ids(&self, runtime_id: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        for page in 1.. {
            let mut url = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis"]);
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("size", &API_PAGE_SIZE.to_string());
            let path = url.path().to_owned();
            let apis: Vec<ListedApi> = self.get_json(url).await?;
            let full_page = apis.len() == API_PAGE_SIZE;
            for api in apis {
                // A service that ignored `page` would repeat itself forever; fail instead.
                if !seen.insert(api.id.clone()) {
                    return Err(AgentError::ControlPlaneRejected(format!(
                        "GET {path} page {page} repeated API {}; paging did not advance",
                        api.id
                    )));
                }
                ids.push(api.id);
            }
            if !full_page {
                break;
            }
        }
        Ok(ids)
    }

    async fn upsert_api(&self, runtime_id: &str, api: &ApiDocument) -> Result<Upserted> {
        let item = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis", &api.id]);
        let (status, _) = self.send(Method::PUT, item, Some(api), &[StatusCode::NOT_FOUND]).await?;
        if status != StatusCode::NOT_FOUND {
            return Ok(Upserted::Updated);
        }
        let collection = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis"]);
        let (status, _) = self.send(Method::POST, collection, Some(api), &[StatusCode::CONFLICT]).await?;
        if status == StatusCode::CONFLICT {
            // Created concurrently since our PUT: update it now that it exists.
            let item = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis", &api.id]);
            self.send(Method::PUT, item, Some(api), &[]).await?;
            return Ok(Upserted::Updated);
        }
        Ok(Upserted::Created)
    }

    async fn delete_api(&self, runtime_id: &str, api_id: &str) -> Result<bool> {
        let url = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis", api_id]);
        let (status, _) = self.send(Method::DELETE, url, None::<&()>, &[StatusCode::NOT_FOUND]).await?;
        Ok(status != StatusCode::NOT_FOUND)
    }

    async fn send_metrics(&self, runtime_id: &str, metrics: &AgentMetricsModel) -> Result<()> {
        let url = self.url(&["api", "engine", "v2", "runtimes", runtime_id, "metrics"]);
        self.send(Method::POST, url, Some(metrics), &[]).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_error_classes_the_workflow_matches_on() {
        let body = br#"{"errorDetails":["name : Maximum character allowed is 50"]}"#;
        let cases = [
            (401, "Unauthorized"),
            (403, "Unauthorized"),
            (400, "InvalidInput"),
            (429, "Throttled"),
            (500, "ControlPlaneUnavailable"),
            (503, "ControlPlaneUnavailable"),
            (404, "ControlPlaneRejected"),
            (409, "ControlPlaneRejected"),
        ];
        for (status, expected) in cases {
            let error = status_error("POST /x", StatusCode::from_u16(status).unwrap(), body);
            assert_eq!(error.error_type(), expected, "status {status}");
        }
        let error = status_error("POST /x", StatusCode::BAD_REQUEST, body);
        assert!(error.to_string().contains("Maximum character allowed is 50"), "{error}");
    }

    #[test]
    fn both_documented_conflict_bodies_yield_the_runtime_id() {
        let plain = serde_json::json!({"id": "rt-1", "name": "prod"});
        let report = serde_json::json!({"runtime": {"id": "rt-2", "name": "prod"}, "lastHeartbeatTime": 1});
        assert_eq!(registered_runtime_id(&plain).as_deref(), Some("rt-1"));
        assert_eq!(registered_runtime_id(&report).as_deref(), Some("rt-2"));
        assert_eq!(registered_runtime_id(&serde_json::json!({"name": "prod"})), None);
    }

    #[test]
    fn urls_with_credentials_are_refused() {
        let credentials = Credentials { username: "u".into(), password: "p".into() };
        let error = HttpControlPlane::new("https://u:p@apicp.example.com", credentials, Duration::from_secs(1), None)
            .unwrap_err();
        assert_eq!(error.error_type(), "InvalidConfig");
        assert!(!error.to_string().contains(":p@"));
    }

    #[test]
    fn path_segments_are_escaped() {
        let credentials = Credentials { username: "u".into(), password: "p".into() };
        let client =
            HttpControlPlane::new("https://apicp.example.com/base/", credentials, Duration::from_secs(1), None)
                .unwrap();
        let url = client.url(&["api", "runtimes", "a/b c", "apis"]);
        assert_eq!(url.as_str(), "https://apicp.example.com/base/api/runtimes/a%2Fb%20c/apis");
    }
}
