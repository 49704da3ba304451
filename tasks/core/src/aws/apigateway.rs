//! Amazon API Gateway (REST, v1): the APIs and stages we federate, read with full pagination.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_apigateway::Client;

use super::sdk_error;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestApi {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub endpoint_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    /// The deployment active on the stage; a stage without one serves nothing.
    pub deployment_id: Option<String>,
    pub tags: BTreeMap<String, String>,
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

#[derive(Debug, Clone)]
pub struct SdkApiGateway {
    client: Client,
}

/// GetRestApis' largest page.
const PAGE_LIMIT: i32 = 500;

impl SdkApiGateway {
    pub fn new(client: Client) -> Self {
        Self { client }
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
        match self.client.get_rest_api().rest_api_id(api_id).send().await {
            Ok(api) => Ok(rest_api!(&api)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
            Err(e) => Err(sdk_error("apigateway:GetRestApi", e)),
        }
    }

    async fn get_stages(&self, api_id: &str) -> Result<Vec<Stage>> {
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
