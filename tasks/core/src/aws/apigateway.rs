//! Amazon API Gateway (REST, v1): the APIs and stages we federate, read with full pagination.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_apigateway::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::sdk_error;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestApi {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub endpoint_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// The deployment active on the stage; a stage without one serves nothing.
    pub deployment_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A REST API and the stage it is deployed to: everything its control plane document needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedApi {
    pub api: RestApi,
    pub stage: Stage,
}

/// The stage of that name if it serves a deployment; a stage without one serves nothing.
pub fn deployed_stage<'a>(stages: &'a [Stage], name: &str) -> Option<&'a Stage> {
    stages.iter().find(|s| s.name == name && s.deployment_id.is_some())
}

pub trait ApiGateway: Send + Sync {
    /// Every REST API of the account and region, across all pages.
    fn list_rest_apis(&self) -> impl Future<Output = Result<Vec<RestApi>>> + Send;
    /// `None` when the API no longer exists.
    fn get_rest_api(&self, api_id: &str) -> impl Future<Output = Result<Option<RestApi>>> + Send;
    /// The API's stages; empty when the API no longer exists.
    fn get_stages(&self, api_id: &str) -> impl Future<Output = Result<Vec<Stage>>> + Send;
}

/// Spaces the starts of requests at least `1 / rate` apart: a steady share of API Gateway's
/// management quota (10 requests/s per account and region, burst 40, shared with the customer's
/// own deployments and not raisable), never a burst that would take the customer's room.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn per_second(rate: f64) -> Self {
        Self { interval: Duration::from_secs_f64(1.0 / rate), next: Mutex::new(Instant::now()) }
    }

    /// Waits for this request's slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[derive(Debug, Clone)]
pub struct SdkApiGateway {
    client: Client,
    pacer: Arc<Pacer>,
}

/// GetRestApis' largest page.
const PAGE_LIMIT: i32 = 500;

impl SdkApiGateway {
    /// `requests_per_second`: this client's share of the account's management quota.
    pub fn new(client: Client, requests_per_second: f64) -> Self {
        Self { client, pacer: Arc::new(Pacer::per_second(requests_per_second)) }
    }
}

/// GetRestApis items and GetRestApi outputs are distinct SDK types with the same fields.
macro_rules! rest_api {
    ($api:expr) => {{
        let api = $api;
        api.id().map(|id| RestApi {
            id: id.to_owned(),
            name: api.name().unwrap_or_default().to_owned(),
            description: api.description().map(str::to_owned),
            tags: tag_map(api.tags()),
            endpoint_types: api
                .endpoint_configuration()
                .map(|c| c.types().iter().map(|t| t.as_str().to_owned()).collect())
                .unwrap_or_default(),
        })
    }};
}

fn tag_map(tags: Option<&std::collections::HashMap<String, String>>) -> BTreeMap<String, String> {
    tags.map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

impl ApiGateway for SdkApiGateway {
    async fn list_rest_apis(&self) -> Result<Vec<RestApi>> {
        let mut apis = Vec::new();
        let mut position: Option<String> = None;
        loop {
            self.pacer.wait().await;
            let page = self
                .client
                .get_rest_apis()
                .limit(PAGE_LIMIT)
                .set_position(position.take())
                .send()
                .await
                .map_err(|e| sdk_error("apigateway:GetRestApis", e))?;
            apis.extend(page.items().iter().filter_map(|api| rest_api!(api)));
            match page.position() {
                Some(next) if !next.is_empty() => position = Some(next.to_owned()),
                _ => return Ok(apis),
            }
        }
    }

    async fn get_rest_api(&self, api_id: &str) -> Result<Option<RestApi>> {
        self.pacer.wait().await;
        match self.client.get_rest_api().rest_api_id(api_id).send().await {
            Ok(api) => Ok(rest_api!(&api)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
            Err(e) => Err(sdk_error("apigateway:GetRestApi", e)),
        }
    }

    async fn get_stages(&self, api_id: &str) -> Result<Vec<Stage>> {
        self.pacer.wait().await;
        match self.client.get_stages().rest_api_id(api_id).send().await {
            Ok(stages) => Ok(stages
                .item()
                .iter()
                .filter_map(|s| {
                    Some(Stage {
                        name: s.stage_name()?.to_owned(),
                        deployment_id: s.deployment_id().map(str::to_owned),
                        tags: tag_map(s.tags()),
                    })
                })
                .collect()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(Vec::new()),
            Err(e) => Err(sdk_error("apigateway:GetStages", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_requests_at_the_configured_rate_without_a_burst() {
        let pacer = Pacer::per_second(4.0);
        let start = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            pacer.wait().await;
            starts.push(start.elapsed().as_millis());
        }
        assert_eq!(starts, vec![0, 250, 500, 750, 1000]);

        // After a pause the next request goes at once, but no faster afterwards.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let resumed = Instant::now();
        pacer.wait().await;
        pacer.wait().await;
        assert_eq!(resumed.elapsed().as_millis(), 250);
    }
}
