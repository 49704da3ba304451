//! Amazon API Gateway: the REST (v1), HTTP and WebSocket (v2) APIs and stages we federate, and
//! the custom domain names that route to them, read with full pagination.
//!
//! API ids are unique across v1 and v2 in a region: both kinds are served on
//! `https://<id>.execute-api.<region>.amazonaws.com`, so an id alone names an API.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pace::Pacer;
use super::sdk_error;
use crate::error::Result;

/// The three kinds of API that API Gateway serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiKind {
    /// A REST API (the v1 `apigateway` service). Stored documents written before HTTP and
    /// WebSocket APIs were federated carry no kind: they were all REST APIs.
    #[default]
    Rest,
    /// An HTTP API (`apigatewayv2`, protocol type HTTP).
    Http,
    /// A WebSocket API (`apigatewayv2`, protocol type WEBSOCKET).
    #[serde(rename = "WEBSOCKET")]
    WebSocket,
}

impl ApiKind {
    pub const ALL: [ApiKind; 3] = [ApiKind::Rest, ApiKind::Http, ApiKind::WebSocket];

    pub fn generation(self) -> Generation {
        match self {
            Self::Rest => Generation::V1,
            Self::Http | Self::WebSocket => Generation::V2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "REST",
            Self::Http => "HTTP",
            Self::WebSocket => "WEBSOCKET",
        }
    }
}

/// The two API Gateway management APIs: `apigateway` (REST APIs) and `apigatewayv2` (HTTP and
/// WebSocket APIs). Each has its own listing, stages and custom domain mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Generation {
    V1,
    V2,
}

impl Generation {
    pub const ALL: [Generation; 2] = [Generation::V1, Generation::V2];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Api {
    pub id: String,
    #[serde(default)]
    pub kind: ApiKind,
    pub name: String,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// EDGE, REGIONAL or PRIVATE for a REST API; HTTP and WebSocket APIs are regional.
    pub endpoint_types: Vec<String>,
    /// Clients can only call the API through a custom domain name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub execute_api_disabled: bool,
    /// Statements of a REST API's resource policy (HTTP and WebSocket APIs have none); `None`
    /// in a listing or catalog stored before the agent counted them: unknown, not zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_statements: Option<u32>,
}

/// The number of statements of a resource policy, as the vendor's agent counts them from the
/// export. API Gateway answers the policy as JSON whose quotes are backslash-escaped; both
/// forms are read. `Statement` is a list, or a single statement object.
pub fn policy_statements(policy: Option<&str>) -> u32 {
    let Some(policy) = policy.map(str::trim).filter(|p| !p.is_empty()) else { return 0 };
    // The escaped form is the body of a JSON string: unescaped as one (a `\\\"` inside a value too).
    let unescaped = || serde_json::from_str::<String>(&format!("\"{policy}\"")).ok();
    let document: Option<Value> =
        serde_json::from_str(policy).ok().or_else(|| unescaped().and_then(|p| serde_json::from_str(&p).ok()));
    let count = match document.as_ref().and_then(|d| d.get("Statement")) {
        Some(Value::Array(statements)) => statements.len(),
        Some(Value::Object(_)) => 1,
        _ => {
            tracing::warn!("a REST API's resource policy is not a readable policy document: policiesCount 0");
            0
        }
    };
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    /// The deployment active on the stage; a stage without one serves nothing (an auto-deploy
    /// stage of an HTTP or WebSocket API has one once API Gateway deployed it).
    pub deployment_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A custom domain name's route to an API's stage: `https://<domain>/<base path>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DomainRoute {
    pub domain_name: String,
    /// Empty for the domain's root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_path: String,
}

/// A route of a custom domain name, as listed: which API and stage it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainMapping {
    pub route: DomainRoute,
    pub api_id: String,
    pub stage: String,
}

impl DomainMapping {
    /// A route as either management API lists it; `None` when the API or stage is left out.
    fn listed(domain_name: &str, base_path: &str, api_id: Option<&str>, stage: Option<&str>) -> Option<Self> {
        Some(Self {
            route: DomainRoute { domain_name: domain_name.to_owned(), base_path: base_path.to_owned() },
            api_id: api_id?.to_owned(),
            stage: stage?.to_owned(),
        })
    }
}

/// An API and the stage it is deployed to: everything its control plane document needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedApi {
    pub api: Api,
    pub stage: Stage,
    /// The custom domain names routing to this API and stage, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<DomainRoute>,
}

/// The stage of that name if it serves a deployment; a stage without one serves nothing.
pub fn deployed_stage<'a>(stages: &'a [Stage], name: &str) -> Option<&'a Stage> {
    stages.iter().find(|s| s.name == name && s.deployment_id.is_some())
}

/// The routes of `mappings` that serve `api_id` on `stage`, sorted and without duplicates.
pub fn routes_to(mappings: &[DomainMapping], api_id: &str, stage: &str) -> Vec<DomainRoute> {
    let mut routes: Vec<DomainRoute> =
        mappings.iter().filter(|m| m.api_id == api_id && m.stage == stage).map(|m| m.route.clone()).collect();
    routes.sort();
    routes.dedup();
    routes
}

pub trait ApiGateway: Send + Sync {
    /// Every API of the generation in the account and region, across all pages.
    fn list_apis(&self, generation: Generation) -> impl Future<Output = Result<Vec<Api>>> + Send;
    /// `None` when the API no longer exists.
    fn get_api(&self, generation: Generation, api_id: &str) -> impl Future<Output = Result<Option<Api>>> + Send;
    /// The API's stages; empty when the API no longer exists.
    fn get_stages(&self, generation: Generation, api_id: &str) -> impl Future<Output = Result<Vec<Stage>>> + Send;
    /// Every route of every custom domain name of the generation: one listing of the domain
    /// names and one of each domain's mappings.
    fn list_domain_mappings(&self, generation: Generation) -> impl Future<Output = Result<Vec<DomainMapping>>> + Send;
}

/// Both management APIs behind one pacer: v1 and v2 calls count against the same quota.
#[derive(Debug, Clone)]
pub struct SdkApiGateway {
    v1: aws_sdk_apigateway::Client,
    v2: aws_sdk_apigatewayv2::Client,
    pacer: Arc<Pacer>,
}

/// The largest page of the v1 listings.
const V1_PAGE_LIMIT: i32 = 500;
/// The largest page of the v2 listings (`MaxResults` is a string there).
const V2_PAGE_LIMIT: &str = "500";

/// One page of a listing: its items and the next page's token, or `None` when the listed
/// resource no longer exists.
type Page<T> = Option<(Vec<T>, Option<String>)>;

impl SdkApiGateway {
    /// `pacer`: the agent's share of the account's management quota.
    pub fn new(v1: aws_sdk_apigateway::Client, v2: aws_sdk_apigatewayv2::Client, pacer: Pacer) -> Self {
        Self { v1, v2, pacer: Arc::new(pacer) }
    }

    /// Every item of a listing, one paced request per page, until a page names no next one. A
    /// resource deleted while it was listed holds nothing.
    ///
    /// By hand rather than the SDK's `into_paginator()`: API Gateway v2's model declares no
    /// paginators (GetApis, GetStages, GetDomainNames, GetApiMappings have none), so one loop
    /// serves both generations, with the shared pace before each page and the deleted-resource rule.
    async fn all_pages<T, Fut>(&self, mut fetch: impl FnMut(Option<String>) -> Fut) -> Result<Vec<T>>
    where
        Fut: Future<Output = Result<Page<T>>>,
    {
        let mut items = Vec::new();
        let mut token = None;
        loop {
            self.pacer.wait().await?;
            let Some((page, next)) = fetch(token.take()).await? else { return Ok(Vec::new()) };
            items.extend(page);
            match next.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(items),
            }
        }
    }

    async fn v1_domain_mappings(&self) -> Result<Vec<DomainMapping>> {
        let domains = self
            .all_pages(|position| {
                let request = self.v1.get_domain_names().limit(V1_PAGE_LIMIT).set_position(position);
                async move {
                    let page = request.send().await.map_err(|e| sdk_error("apigateway:GetDomainNames", e))?;
                    let domains = page
                        .items()
                        .iter()
                        .filter_map(|d| Some((d.domain_name()?.to_owned(), d.domain_name_id().map(str::to_owned))))
                        .collect();
                    Ok(Some((domains, page.position().map(str::to_owned))))
                }
            })
            .await?;
        let mut mappings = Vec::new();
        for (domain_name, domain_name_id) in domains {
            let routes = self
                .all_pages(|position| {
                    let request = self
                        .v1
                        .get_base_path_mappings()
                        .domain_name(&domain_name)
                        .set_domain_name_id(domain_name_id.clone())
                        .limit(V1_PAGE_LIMIT)
                        .set_position(position);
                    let domain_name = &domain_name;
                    async move {
                        let page = match request.send().await {
                            Ok(page) => page,
                            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => {
                                return Ok(None);
                            }
                            Err(e) => return Err(sdk_error("apigateway:GetBasePathMappings", e)),
                        };
                        let routes = page
                            .items()
                            .iter()
                            .filter_map(|m| {
                                // API Gateway writes the root mapping as "(none)".
                                let base_path = m.base_path().filter(|p| *p != "(none)").unwrap_or_default();
                                DomainMapping::listed(domain_name, base_path, m.rest_api_id(), m.stage())
                            })
                            .collect();
                        Ok(Some((routes, page.position().map(str::to_owned))))
                    }
                })
                .await?;
            mappings.extend(routes);
        }
        Ok(mappings)
    }

    async fn v2_domain_mappings(&self) -> Result<Vec<DomainMapping>> {
        let domains = self
            .all_pages(|next_token| {
                let request = self.v2.get_domain_names().max_results(V2_PAGE_LIMIT).set_next_token(next_token);
                async move {
                    let page = request.send().await.map_err(|e| sdk_error("apigatewayv2:GetDomainNames", e))?;
                    let domains = page.items().iter().filter_map(|d| d.domain_name().map(str::to_owned)).collect();
                    Ok(Some((domains, page.next_token().map(str::to_owned))))
                }
            })
            .await?;
        let mut mappings = Vec::new();
        for domain_name in domains {
            let routes = self
                .all_pages(|next_token| {
                    let request = self
                        .v2
                        .get_api_mappings()
                        .domain_name(&domain_name)
                        .max_results(V2_PAGE_LIMIT)
                        .set_next_token(next_token);
                    let domain_name = &domain_name;
                    async move {
                        let page = match request.send().await {
                            Ok(page) => page,
                            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => {
                                return Ok(None);
                            }
                            Err(e) => return Err(sdk_error("apigatewayv2:GetApiMappings", e)),
                        };
                        let routes = page
                            .items()
                            .iter()
                            .filter_map(|m| {
                                let base_path = m.api_mapping_key().unwrap_or_default();
                                DomainMapping::listed(domain_name, base_path, m.api_id(), m.stage())
                            })
                            .collect();
                        Ok(Some((routes, page.next_token().map(str::to_owned))))
                    }
                })
                .await?;
            mappings.extend(routes);
        }
        Ok(mappings)
    }
}

/// GetRestApis items and GetRestApi outputs are distinct SDK types with the same fields.
macro_rules! rest_api {
    ($api:expr) => {{
        let api = $api;
        api.id().map(|id| Api {
            id: id.to_owned(),
            kind: ApiKind::Rest,
            name: api.name().unwrap_or_default().to_owned(),
            description: api.description().map(str::to_owned),
            tags: tag_map(api.tags()),
            endpoint_types: api
                .endpoint_configuration()
                .map(|c| c.types().iter().map(|t| t.as_str().to_owned()).collect())
                .unwrap_or_default(),
            execute_api_disabled: api.disable_execute_api_endpoint(),
            policy_statements: Some(policy_statements(api.policy())),
        })
    }};
}

/// GetApis items and GetApi outputs, likewise. An API of another protocol type (none exists
/// today) is not ours to publish.
macro_rules! v2_api {
    ($api:expr) => {{
        use aws_sdk_apigatewayv2::types::ProtocolType;
        let api = $api;
        let kind = match api.protocol_type() {
            Some(ProtocolType::Http) => Some(ApiKind::Http),
            Some(ProtocolType::Websocket) => Some(ApiKind::WebSocket),
            _ => None,
        };
        match (api.api_id(), kind) {
            (Some(id), Some(kind)) => Some(Api {
                id: id.to_owned(),
                kind,
                name: api.name().unwrap_or_default().to_owned(),
                description: api.description().map(str::to_owned),
                tags: tag_map(api.tags()),
                endpoint_types: vec!["REGIONAL".to_owned()],
                execute_api_disabled: api.disable_execute_api_endpoint().unwrap_or(false),
                policy_statements: Some(0),
            }),
            _ => None,
        }
    }};
}

/// A stage of either management API (theirs are distinct SDK types with the same fields).
fn stage(name: Option<&str>, deployment_id: Option<&str>, tags: Option<&HashMap<String, String>>) -> Option<Stage> {
    Some(Stage { name: name?.to_owned(), deployment_id: deployment_id.map(str::to_owned), tags: tag_map(tags) })
}

fn tag_map(tags: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    tags.map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

impl ApiGateway for SdkApiGateway {
    async fn list_apis(&self, generation: Generation) -> Result<Vec<Api>> {
        match generation {
            Generation::V1 => {
                self.all_pages(|position| {
                    let request = self.v1.get_rest_apis().limit(V1_PAGE_LIMIT).set_position(position);
                    async move {
                        let page = request.send().await.map_err(|e| sdk_error("apigateway:GetRestApis", e))?;
                        let apis = page.items().iter().filter_map(|api| rest_api!(api)).collect();
                        Ok(Some((apis, page.position().map(str::to_owned))))
                    }
                })
                .await
            }
            Generation::V2 => {
                self.all_pages(|next_token| {
                    let request = self.v2.get_apis().max_results(V2_PAGE_LIMIT).set_next_token(next_token);
                    async move {
                        let page = request.send().await.map_err(|e| sdk_error("apigatewayv2:GetApis", e))?;
                        let apis = page.items().iter().filter_map(|api| v2_api!(api)).collect();
                        Ok(Some((apis, page.next_token().map(str::to_owned))))
                    }
                })
                .await
            }
        }
    }

    async fn get_api(&self, generation: Generation, api_id: &str) -> Result<Option<Api>> {
        self.pacer.wait().await?;
        match generation {
            Generation::V1 => match self.v1.get_rest_api().rest_api_id(api_id).send().await {
                Ok(api) => Ok(rest_api!(&api)),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
                Err(e) => Err(sdk_error("apigateway:GetRestApi", e)),
            },
            Generation::V2 => match self.v2.get_api().api_id(api_id).send().await {
                Ok(api) => Ok(v2_api!(&api)),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
                Err(e) => Err(sdk_error("apigatewayv2:GetApi", e)),
            },
        }
    }

    async fn get_stages(&self, generation: Generation, api_id: &str) -> Result<Vec<Stage>> {
        match generation {
            // One page holds every stage of a REST API.
            Generation::V1 => {
                self.all_pages(|_| {
                    let request = self.v1.get_stages().rest_api_id(api_id);
                    async move {
                        match request.send().await {
                            Ok(page) => {
                                let stages = page
                                    .item()
                                    .iter()
                                    .filter_map(|s| stage(s.stage_name(), s.deployment_id(), s.tags()))
                                    .collect();
                                Ok(Some((stages, None)))
                            }
                            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
                            Err(e) => Err(sdk_error("apigateway:GetStages", e)),
                        }
                    }
                })
                .await
            }
            Generation::V2 => {
                self.all_pages(|next_token| {
                    let request =
                        self.v2.get_stages().api_id(api_id).max_results(V2_PAGE_LIMIT).set_next_token(next_token);
                    async move {
                        match request.send().await {
                            Ok(page) => {
                                let stages = page
                                    .items()
                                    .iter()
                                    .filter_map(|s| stage(s.stage_name(), s.deployment_id(), s.tags()))
                                    .collect();
                                Ok(Some((stages, page.next_token().map(str::to_owned))))
                            }
                            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found_exception()) => Ok(None),
                            Err(e) => Err(sdk_error("apigatewayv2:GetStages", e)),
                        }
                    }
                })
                .await
            }
        }
    }

    async fn list_domain_mappings(&self, generation: Generation) -> Result<Vec<DomainMapping>> {
        match generation {
            Generation::V1 => self.v1_domain_mappings().await,
            Generation::V2 => self.v2_domain_mappings().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::policy_statements;

    #[test]
    fn a_resource_policy_counts_its_statements_in_either_form_api_gateway_writes() {
        let allow = r#"{"Effect":"Allow","Principal":"*","Action":"execute-api:Invoke","Resource":"execute-api:/*"}"#;
        let deny = r#"{"Effect":"Deny","Principal":"*","Action":"execute-api:Invoke","Resource":"execute-api:/*"}"#;
        let two = format!(r#"{{"Version":"2012-10-17","Statement":[{allow},{deny}]}}"#);
        // GetRestApis answers the policy with its quotes escaped, and a quote inside a value twice.
        let escaped = two.replace('"', "\\\"");
        let quoted = r#"{"Statement":[{"Sid":"say \"hi\"","Effect":"Allow"}]}"#;
        let quoted_escaped = serde_json::to_string(quoted).unwrap().trim_matches('"').to_owned();
        let single = format!(r#"{{"Version":"2012-10-17","Statement":{allow}}}"#);
        assert_eq!(policy_statements(Some(&two)), 2);
        assert_eq!(policy_statements(Some(&escaped)), 2);
        assert_eq!(policy_statements(Some(&quoted_escaped)), 1, "{quoted_escaped}");
        assert_eq!(policy_statements(Some(&single)), 1, "one statement may stand alone");
        for unreadable in [None, Some(""), Some("  "), Some("not json"), Some(r#"{"Version":"2012-10-17"}"#)] {
            assert_eq!(policy_statements(unreadable), 0, "{unreadable:?}");
        }
    }
}
