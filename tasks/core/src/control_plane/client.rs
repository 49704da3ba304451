//! HTTP client of the control plane: Basic auth, request timeouts, paging, and the one place
//! where HTTP statuses become `AgentError`s.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{AgentMetricsModel, ApiDocument, ErrorMessage, Heartbeat, Identified, Runtime, RuntimeType};
use crate::error::{AgentError, Result};

/// What the agent needs from the control plane; the handlers depend on this, tests swap it.
pub trait ControlPlane: Send + Sync {
    /// Makes sure the runtime type our runtimes reference exists.
    fn ensure_runtime_type(&self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Every runtime id the control plane holds, across all pages.
    fn list_runtime_ids(&self) -> impl Future<Output = Result<HashSet<String>>> + Send;
    /// Registers a runtime; a 409 (already registered) also yields the runtime's id.
    fn register_runtime(&self, runtime: &Runtime) -> impl Future<Output = Result<String>> + Send;
    /// Deletes a runtime and every API it holds; `false` when it is already gone.
    fn delete_runtime(&self, runtime_id: &str) -> impl Future<Output = Result<bool>> + Send;
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

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// Where the client gets its credentials. Read on first use and again after a 401/403, so a
/// rotated secret takes effect in a warm container without a redeploy.
pub trait CredentialsSource: Send + Sync {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Credentials>> + Send + '_>>;
}

/// Fixed credentials (a local run's environment variables, tests).
impl CredentialsSource for Credentials {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Credentials>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// Attempts of one request within a task, and the pause before the second, doubled before each
/// further one: the settings checker fits them into publish's timeout.
const ATTEMPTS: u32 = agent_settings::CONTROL_PLANE_ATTEMPTS;
const RETRY_PAUSE: Duration = Duration::from_millis(agent_settings::CONTROL_PLANE_FIRST_PAUSE_MS);

/// Which failed requests may be sent again.
#[derive(Clone, Copy)]
enum Repeat {
    /// Sending it twice leaves the control plane as sending it once would.
    Idempotent,
    /// Not idempotent (the metrics POST): repeated only when it was surely not applied.
    OnlyIfNotApplied,
}

impl Repeat {
    fn allows(self, error: &AgentError) -> bool {
        matches!(self, Self::Idempotent) || !matches!(error, AgentError::DeliveryUnknown(_))
    }
}

/// Largest page the contract allows for API listings; runtimes are listed the same way.
const LIST_PAGE_SIZE: usize = 500;
const TYPE_PAGE_SIZE: usize = 100;

pub struct HttpControlPlane {
    http: reqwest::Client,
    base: Url,
    source: Arc<dyn CredentialsSource>,
    /// The credentials last read from `source`; `None` until the first request.
    current: Mutex<Option<Credentials>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpControlPlane").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl HttpControlPlane {
    /// `ca_bundle_pem` adds trusted roots (for a private CA); verification is never turned off.
    pub fn new(
        base_url: &str,
        credentials: impl CredentialsSource + 'static,
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
            // Shorter than load balancers' idle timeouts (60 s on an ALB), and no connection
            // outlives a frozen Lambda container: a reused connection that the other side has
            // closed would leave a metrics POST with an unknown outcome.
            .pool_idle_timeout(Duration::from_secs(20))
            .user_agent(concat!("apigw-apicp-agent/", env!("CARGO_PKG_VERSION")));
        let bundle_error = |reason: String| AgentError::InvalidConfig { variable: "APICP_CA_BUNDLE", reason };
        if let Some(pem) = ca_bundle_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| bundle_error(format!("not a PEM bundle: {e}")))?;
            // A DER file, a key or an empty file holds no certificate: trusting nothing more
            // would surface only as connection failures, retried as an outage.
            if certificates.is_empty() {
                return Err(bundle_error("holds no PEM certificate".into()));
            }
            // Beside the system's roots, which keep verifying the public CAs.
            builder = builder.tls_certs_merge(certificates);
        }
        // The roots are parsed here: with a bundle, a failure is most likely one of its certificates.
        let http = builder.build().map_err(|e| match ca_bundle_pem {
            Some(_) => bundle_error(format!("not usable as trusted roots: {e}")),
            None => invalid(e.to_string()),
        })?;
        Ok(Self { http, base, source: Arc::new(credentials), current: Mutex::new(None), timeout })
    }

    /// The longest one request can take with its repetitions: every attempt timing out, and the
    /// pauses between them.
    pub fn longest_request(&self) -> Duration {
        self.timeout * ATTEMPTS + Duration::from_millis(agent_settings::control_plane_pauses_ms())
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().extend(segments);
        url
    }

    /// The credentials to use: those read before, or read from the source now.
    async fn credentials(&self, reread: bool) -> Result<Credentials> {
        if !reread && let Some(known) = self.current.lock().expect("credentials lock").clone() {
            return Ok(known);
        }
        let fresh = self.source.fetch().await?;
        *self.current.lock().expect("credentials lock") = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends a request, repeated up to [`ATTEMPTS`] times while the control plane is briefly
    /// unavailable or throttling; see [`Self::send_once`].
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + Sync)>,
        accepted: &[StatusCode],
    ) -> Result<(StatusCode, Vec<u8>)> {
        self.send_repeating(method, url, body, accepted, Repeat::Idempotent).await
    }

    async fn send_repeating(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + Sync)>,
        accepted: &[StatusCode],
        repeat: Repeat,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let mut attempt = 1;
        loop {
            match self.send_once(method.clone(), url.clone(), body, accepted).await {
                Err(error) if attempt < ATTEMPTS && error.is_retryable() && repeat.allows(&error) => {
                    tracing::info!(%error, attempt, "control plane request failed; repeating it");
                    tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// Sends one request and returns the status and body; maps transport failures and error
    /// statuses, except those listed in `accepted`, to `AgentError`. A 401/403 reads the
    /// credentials again and, if they changed (a rotated secret), repeats the request once.
    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + Sync)>,
        accepted: &[StatusCode],
    ) -> Result<(StatusCode, Vec<u8>)> {
        let what = format!("{method} {}", url.path());
        let mut used = self.credentials(false).await?;
        let (mut status, mut answer) = self.exchange(&what, method.clone(), url.clone(), body, &used).await?;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let fresh = self.credentials(true).await?;
            if fresh != used {
                tracing::info!(request = what, "control plane refused the credentials; retrying with re-read ones");
                (status, answer) = self.exchange(&what, method.clone(), url.clone(), body, &fresh).await?;
                used = fresh;
            }
        }
        if status.is_success() || accepted.contains(&status) {
            Ok((status, answer))
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // Whom to fix it for: the full URL (no query) and the user, never the password.
            let mut shown = url;
            shown.set_query(None);
            Err(AgentError::Unauthorized(format!(
                "{method} {shown} answered {} for user {:?}",
                status.as_u16(),
                used.username
            )))
        } else {
            Err(status_error(&what, status, &answer))
        }
    }

    async fn exchange(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + Sync)>,
        credentials: &Credentials,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(&credentials.username, Some(&credentials.password))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| transport_error(what, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| transport_error(what, &e))?;
        Ok((status, body.to_vec()))
    }

    /// The ids of a paged collection (`page`, `size`), in the order served.
    async fn list_ids(&self, collection: &[&str]) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        // The service may cap a page below the size asked for, so only an empty page ends the
        // listing; stopping at a short page would leave stale APIs undeleted.
        for page in 1.. {
            let mut url = self.url(collection);
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("size", &LIST_PAGE_SIZE.to_string());
            let path = url.path().to_owned();
            let items: Vec<Identified> = self.get_json(url).await?;
            if items.is_empty() {
                break;
            }
            for item in items {
                // A service that ignored `page` would repeat itself forever; fail instead.
                if !seen.insert(item.id.clone()) {
                    return Err(AgentError::ControlPlaneRejected(format!(
                        "GET {path} page {page} repeated {}; paging did not advance",
                        item.id
                    )));
                }
                ids.push(item.id);
            }
        }
        Ok(ids)
    }

    /// Whether the control plane knows the runtime type, across all pages.
    async fn has_runtime_type(&self, name: &str) -> Result<bool> {
        let mut page = 1;
        loop {
            let mut url = self.url(&["api", "assetcatalog", "v1", "runtimes", "types"]);
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("size", &TYPE_PAGE_SIZE.to_string());
            let types: Vec<RuntimeType> = self.get_json(url).await?;
            if types.iter().any(|t| t.name == name) {
                return Ok(true);
            }
            // As for APIs: a page may be capped below the size asked for; only an empty one ends.
            if types.is_empty() {
                return Ok(false);
            }
            page += 1;
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
        // A gateway that timed out waiting for the service cannot say whether it applied the request.
        StatusCode::GATEWAY_TIMEOUT => AgentError::DeliveryUnknown(message),
        s if s.is_server_error() => AgentError::ControlPlaneUnavailable(message),
        _ if details.is_empty() => AgentError::ControlPlaneRejected(message),
        _ => AgentError::ControlPlaneRejected(format!("{message}: {}", details.join("; "))),
    }
}

fn transport_error(what: &str, error: &reqwest::Error) -> AgentError {
    // reqwest's Display never includes the Authorization header; the URL is left out too so no
    // query string ends up in the console. Only a failed connect proves the request was not sent
    // (hyper itself retries a pooled connection that closed before the request was written).
    let sent = !error.is_connect();
    let message = match error.is_timeout() {
        true => format!("{what} timed out"),
        false => format!("{what} failed: {}", describe(error)),
    };
    match sent {
        true => AgentError::DeliveryUnknown(message),
        false => AgentError::ControlPlaneUnavailable(message),
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
        if self.has_runtime_type(name).await? {
            return Ok(());
        }
        let url = self.url(&["api", "assetcatalog", "v1", "runtimes", "types"]);
        let body = RuntimeType { id: None, name: name.to_owned() };
        match self.send(Method::POST, url, Some(&body), &[]).await {
            Ok(_) => Ok(()),
            // The contract answers a duplicate name with a plain 400: an execution registering
            // at the same moment created it first.
            Err(error @ AgentError::InvalidInput { .. }) => match self.has_runtime_type(name).await? {
                true => Ok(()),
                false => Err(error),
            },
            Err(error) => Err(error),
        }
    }

    async fn list_runtime_ids(&self) -> Result<HashSet<String>> {
        Ok(self.list_ids(&["api", "assetcatalog", "v2", "runtimes"]).await?.into_iter().collect())
    }

    async fn register_runtime(&self, runtime: &Runtime) -> Result<String> {
        let url = self.url(&["api", "assetcatalog", "v2", "runtimes"]);
        let what = format!("POST {}", url.path());
        // 409 answers with the runtime that is already registered.
        let (_, body) = self.send(Method::POST, url, Some(runtime), &[StatusCode::CONFLICT]).await?;
        registered_runtime_id(&parse_body(&what, &body)?)
            .ok_or_else(|| AgentError::ControlPlaneRejected(format!("{what} answered a runtime without an id")))
    }

    async fn delete_runtime(&self, runtime_id: &str) -> Result<bool> {
        // The contract documents 200; an unknown runtime is plausibly a 404.
        let url = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id]);
        let (status, _) = self.send(Method::DELETE, url, None::<&()>, &[StatusCode::NOT_FOUND]).await?;
        Ok(status != StatusCode::NOT_FOUND)
    }

    async fn send_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<()> {
        if heartbeats.is_empty() {
            return Ok(());
        }
        let url = self.url(&["api", "engine", "v2", "runtimes", "heartbeats", "bulk"]);
        self.send(Method::POST, url, Some(&heartbeats), &[]).await.map(drop)
    }

    async fn list_api_ids(&self, runtime_id: &str) -> Result<Vec<String>> {
        self.list_ids(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis"]).await
    }

    async fn upsert_api(&self, runtime_id: &str, api: &ApiDocument) -> Result<Upserted> {
        // POST first: its 201 and 409 (exists) are documented, while the contract is silent on
        // a PUT of an unknown API (404, 400 or an implicit create are all plausible).
        let collection = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis"]);
        let (status, _) = self.send(Method::POST, collection, Some(api), &[StatusCode::CONFLICT]).await?;
        if status != StatusCode::CONFLICT {
            return Ok(Upserted::Created);
        }
        let item = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis", &api.id]);
        self.send(Method::PUT, item, Some(api), &[]).await?;
        Ok(Upserted::Updated)
    }

    async fn delete_api(&self, runtime_id: &str, api_id: &str) -> Result<bool> {
        let url = self.url(&["api", "assetcatalog", "v1", "runtimes", runtime_id, "apis", api_id]);
        let (status, _) = self.send(Method::DELETE, url, None::<&()>, &[StatusCode::NOT_FOUND]).await?;
        Ok(status != StatusCode::NOT_FOUND)
    }

    async fn send_metrics(&self, runtime_id: &str, metrics: &AgentMetricsModel) -> Result<()> {
        let url = self.url(&["api", "engine", "v2", "runtimes", runtime_id, "metrics"]);
        self.send_repeating(Method::POST, url, Some(metrics), &[], Repeat::OnlyIfNotApplied).await.map(drop)
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

    #[test]
    fn the_longest_request_is_every_attempt_timing_out_plus_the_pauses() {
        let credentials = Credentials { username: "u".into(), password: "p".into() };
        let client =
            HttpControlPlane::new("https://apicp.example.com", credentials, Duration::from_secs(10), None).unwrap();
        assert_eq!(client.longest_request(), Duration::from_millis(3 * 10_000 + 500 + 1_000));
    }
}
