//! How Amazon API Gateway maps onto the control plane (ARCHITECTURE.md section 2). Pure functions.
//!
//! | API Gateway                          | control plane                         |
//! |--------------------------------------|---------------------------------------|
//! | stage (account, region, stage name)  | runtime, id `<account>_<region>_<stage>` |
//! | API deployed to the stage            | API `<apiId>_<stage>`; REST and HTTP APIs type REST, WebSocket APIs type WEBSOCKET |
//! | deployment active on the stage       | `version`; the API id is `versionSetId` |
//! | API tags merged with stage tags      | `tags` as `key:value`, the stage wins  |
//! | the API's name (its export's `info.title`) | `name`, else the API id             |
//! | default endpoint, endpoint type, custom domains | `attributes` `invokeUrl`, `endpointType`, `customDomainUrls` |

use std::collections::BTreeMap;

use crate::aws::apigateway::{ApiKind, DeployedApi, DomainRoute};
use crate::config::ControlPlaneConfig;
use crate::control_plane::types::{ApiDocument, ApiStatus, ApiType, Runtime, RuntimeCapacity};

/// Limits of the control plane contract (strict OpenAPI `maxLength`s).
pub const RUNTIME_ID_MAX: usize = 50;
pub const RUNTIME_NAME_MAX: usize = 50;
pub const RUNTIME_DESCRIPTION_MAX: usize = 300;
pub const RUNTIME_REGION_MAX: usize = 50;
pub const API_NAME_MAX: usize = 1024;
pub const API_DESCRIPTION_MAX: usize = 8191;
/// Each tag of an `APIDocument` (AWS's own limits keep `key:value` far below it).
pub const TAG_MAX: usize = 8191;

/// Where a runtime lives in AWS.
#[derive(Debug, Clone, Copy)]
pub struct StageLocation<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub stage: &'a str,
}

impl StageLocation<'_> {
    fn render(&self, template: &str) -> String {
        template.replace("{account}", self.account).replace("{region}", self.region).replace("{stage}", self.stage)
    }
}

/// The runtime's id: the rendered template, limited to the contract's 50 characters. A longer
/// id keeps its head and ends in a hash of the whole, so distinct stages never collide.
pub fn runtime_id(template: &str, location: StageLocation<'_>) -> String {
    let id: String = location
        .render(template)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    if id.len() <= RUNTIME_ID_MAX {
        return id;
    }
    let suffix = format!("-{:016x}", fnv1a(id.as_bytes()));
    format!("{}{suffix}", &id[..RUNTIME_ID_MAX - suffix.len()])
}

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

/// The registration body of the runtime for a stage.
pub fn runtime_registration(config: &ControlPlaneConfig, location: StageLocation<'_>) -> Runtime {
    Runtime {
        id: Some(runtime_id(&config.runtime_id_template, location)),
        name: truncate(&location.render(&config.runtime_name_template), RUNTIME_NAME_MAX),
        description: Some(truncate(&location.render(&config.runtime_description_template), RUNTIME_DESCRIPTION_MAX)),
        tags: config.runtime_tags.clone(),
        runtime_type: config.runtime_type.clone(),
        deployment_type: "PUBLIC_CLOUD".into(),
        region: Some(truncate(location.region, RUNTIME_REGION_MAX)),
        location: config.runtime_location.clone(),
        heartbeat_interval: Some(config.heartbeat_interval.as_secs()),
        capacity: config.runtime_capacity.as_ref().map(|c| RuntimeCapacity { value: c.value, unit: c.unit.clone() }),
    }
}

/// The control plane id of an API published into a stage's runtime. API ids are unique across
/// REST, HTTP and WebSocket APIs of a region, so the three kinds never collide.
pub fn published_api_id(api_id: &str, stage: &str) -> String {
    format!("{api_id}_{stage}")
}

/// The API Gateway id of the API published as `published_id` for `stage` (the inverse of
/// [`published_api_id`]).
pub fn aws_api_id<'a>(published_id: &'a str, stage: &str) -> &'a str {
    published_id.strip_suffix(stage).and_then(|id| id.strip_suffix('_')).unwrap_or(published_id)
}

/// `key:value` tags of the API merged with those of the stage; the stage's value wins.
pub fn merged_tags(api: &BTreeMap<String, String>, stage: &BTreeMap<String, String>) -> Vec<String> {
    let mut merged = api.clone();
    merged.extend(stage.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged.into_iter().map(|(k, v)| format!("{k}:{v}")).collect()
}

/// How clients reach an API: `https` for REST and HTTP APIs, `wss` for WebSocket APIs.
fn scheme(kind: ApiKind) -> &'static str {
    match kind {
        ApiKind::Rest | ApiKind::Http => "https",
        ApiKind::WebSocket => "wss",
    }
}

/// The default `execute-api` URL of the API on the stage. The `$default` stage of an HTTP API
/// is served at the root; every other stage under its name.
pub fn invoke_url(kind: ApiKind, api_id: &str, stage: &str, region: &str) -> String {
    let domain = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    let base = format!("{}://{api_id}.execute-api.{region}.{domain}", scheme(kind));
    match (kind, stage) {
        (ApiKind::Http, "$default") => base,
        _ => format!("{base}/{stage}"),
    }
}

/// The URL clients call through a custom domain name's route.
pub fn custom_domain_url(kind: ApiKind, route: &DomainRoute) -> String {
    let base = format!("{}://{}", scheme(kind), route.domain_name);
    match route.base_path.trim_matches('/') {
        "" => base,
        path => format!("{base}/{path}"),
    }
}

/// The control plane document of an API deployed to a stage. The name is the API's: API
/// Gateway writes it as `info.title` of a stage's export (and takes it from there on import), so
/// no export is read for it. `attributes` say where the API is served: the default endpoint
/// (absent when disabled), its type, and every custom domain route to this stage.
pub fn api_document(deployed: &DeployedApi, region: &str) -> ApiDocument {
    let DeployedApi { api, stage, domains } = deployed;
    // Control characters have no place in a display name (AWS allows them); a description
    // keeps its line breaks and tabs.
    let name = without_controls(&api.name, &[]);
    let name = if name.trim().is_empty() { api.id.clone() } else { name };
    let mut attributes = BTreeMap::from([
        ("awsApiId".to_owned(), api.id.clone()),
        ("awsApiType".to_owned(), api.kind.as_str().to_owned()),
        ("stage".to_owned(), stage.name.clone()),
    ]);
    if !api.execute_api_disabled {
        attributes.insert("invokeUrl".to_owned(), invoke_url(api.kind, &api.id, &stage.name, region));
    }
    if !api.endpoint_types.is_empty() {
        attributes.insert("endpointType".to_owned(), api.endpoint_types.join(","));
    }
    if !domains.is_empty() {
        let urls: Vec<String> = domains.iter().map(|route| custom_domain_url(api.kind, route)).collect();
        // Attribute values are strings; a list is written as a JSON array, as the contract's
        // own example does.
        attributes.insert("customDomainUrls".to_owned(), serde_json::Value::from(urls).to_string());
    }
    ApiDocument {
        id: published_api_id(&api.id, &stage.name),
        name: truncate(&name, API_NAME_MAX),
        description: api
            .description
            .as_deref()
            .map(|d| without_controls(d, &['\n', '\t']))
            .filter(|d| !d.is_empty())
            .map(|d| truncate(&d, API_DESCRIPTION_MAX)),
        tags: merged_tags(&api.tags, &stage.tags).iter().map(|tag| truncate(tag, TAG_MAX)).collect(),
        api_type: match api.kind {
            ApiKind::Rest | ApiKind::Http => ApiType::Rest,
            ApiKind::WebSocket => ApiType::Websocket,
        },
        status: Some(ApiStatus::Active),
        version: stage.deployment_id.clone(),
        version_set_id: Some(api.id.clone()),
        runtime_api_id: Some(api.id.clone()),
        attributes,
        policies_count: api.policy_statements,
    }
}

/// `text` without control characters other than those `kept`.
fn without_controls(text: &str, kept: &[char]) -> String {
    text.chars().filter(|c| !c.is_control() || kept.contains(c)).collect()
}

/// At most `max` characters, cut on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::aws::apigateway::{Api, Stage};
    use crate::config::CredentialSource;

    fn location(stage: &str) -> StageLocation<'_> {
        StageLocation { account: "111122223333", region: "eu-west-1", stage }
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn pets_api() -> Api {
        Api {
            id: "a1b2c3d4e5".into(),
            kind: ApiKind::Rest,
            name: "pets".into(),
            description: Some("Pet store".into()),
            tags: tags(&[("team", "core"), ("env", "shared")]),
            endpoint_types: vec!["REGIONAL".into()],
            execute_api_disabled: false,
            policy_statements: Some(2),
        }
    }

    fn on_prod(api: Api) -> DeployedApi {
        DeployedApi { api, stage: prod_stage(), domains: vec![] }
    }

    fn prod_stage() -> Stage {
        Stage { name: "prod".into(), deployment_id: Some("dep123".into()), tags: tags(&[("env", "production")]) }
    }

    #[test]
    fn runtime_ids_follow_the_template_and_respect_the_limit() {
        let cases = [
            ("{account}_{region}_{stage}", "prod", "111122223333_eu-west-1_prod"),
            ("{stage}", "dev", "dev"),
            ("aws {stage}/{region}", "qa", "aws_qa_eu-west-1"),
        ];
        for (template, stage, expected) in cases {
            assert_eq!(runtime_id(template, location(stage)), expected);
        }
        let long_a = runtime_id("{account}_{region}_{stage}", location(&"a".repeat(100)));
        let long_b = runtime_id("{account}_{region}_{stage}", location(&format!("{}b", "a".repeat(99))));
        assert_eq!(long_a.len(), RUNTIME_ID_MAX);
        assert_eq!(long_b.len(), RUNTIME_ID_MAX);
        assert_ne!(long_a, long_b, "long stage names must not collide");
        assert_eq!(long_a, runtime_id("{account}_{region}_{stage}", location(&"a".repeat(100))), "stable");
    }

    #[test]
    fn stage_tags_win_over_api_tags() {
        assert_eq!(merged_tags(&pets_api().tags, &prod_stage().tags), vec!["env:production", "team:core"]);
    }

    #[test]
    fn rest_api_maps_to_a_versioned_document_of_the_stage_runtime() {
        let document = api_document(&on_prod(pets_api()), "eu-west-1");
        assert_eq!(document.id, "a1b2c3d4e5_prod");
        assert_eq!(document.name, "pets");
        assert_eq!(document.version.as_deref(), Some("dep123"));
        assert_eq!(document.version_set_id.as_deref(), Some("a1b2c3d4e5"));
        assert_eq!(document.api_type, ApiType::Rest);
        assert_eq!(document.tags, vec!["env:production", "team:core"]);
        assert_eq!(document.attributes["invokeUrl"], "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod");
        assert_eq!(document.policies_count, Some(2));
        let json = serde_json::to_value(&document).unwrap();
        assert_eq!(json["policiesCount"], 2, "the contract's field name");
        let without_policy = Api { policy_statements: Some(0), ..pets_api() };
        assert_eq!(api_document(&on_prod(without_policy), "eu-west-1").policies_count, Some(0));
        // A catalog stored before the count existed: left out rather than sent as zero.
        let stored_before: Api = serde_json::from_value(serde_json::json!({
            "id": "a1b2c3d4e5", "kind": "REST", "name": "pets", "description": null, "tags": {}, "endpoint_types": []
        }))
        .unwrap();
        let document = api_document(&on_prod(stored_before), "eu-west-1");
        assert_eq!(document.policies_count, None);
        assert!(serde_json::to_value(&document).unwrap().get("policiesCount").is_none());
    }

    #[test]
    fn each_kind_maps_to_its_type_and_is_served_where_clients_call_it() {
        let route = |domain: &str, path: &str| DomainRoute { domain_name: domain.into(), base_path: path.into() };
        // (kind, stage, execute-api disabled, routes, region) -> (type, invokeUrl, customDomainUrls)
        let cases = [
            (
                ApiKind::Rest,
                "prod",
                false,
                vec![],
                "eu-west-1",
                ApiType::Rest,
                Some("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"),
                None,
            ),
            (
                ApiKind::Http,
                "prod",
                false,
                vec![route("api.example.com", "v1/pets")],
                "eu-west-1",
                ApiType::Rest,
                Some("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/prod"),
                Some(r#"["https://api.example.com/v1/pets"]"#),
            ),
            (
                ApiKind::Http,
                "$default",
                true,
                vec![route("a.example.com", ""), route("b.example.com", "pets")],
                "eu-west-1",
                ApiType::Rest,
                None,
                Some(r#"["https://a.example.com","https://b.example.com/pets"]"#),
            ),
            (
                ApiKind::WebSocket,
                "live",
                false,
                vec![route("ws.example.com", "chat")],
                "cn-north-1",
                ApiType::Websocket,
                Some("wss://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/live"),
                Some(r#"["wss://ws.example.com/chat"]"#),
            ),
        ];
        for (kind, stage, disabled, domains, region, api_type, invoke, custom) in cases {
            let api = Api { kind, execute_api_disabled: disabled, ..pets_api() };
            let stage = Stage { name: stage.into(), ..prod_stage() };
            let document = api_document(&DeployedApi { api, stage, domains }, region);
            assert_eq!(document.api_type, api_type, "{kind:?}");
            assert_eq!(document.attributes.get("invokeUrl").map(String::as_str), invoke, "{kind:?}");
            assert_eq!(document.attributes.get("customDomainUrls").map(String::as_str), custom, "{kind:?}");
            assert_eq!(document.attributes["awsApiType"], kind.as_str());
            assert_eq!(document.version.as_deref(), Some("dep123"));
        }
    }

    #[test]
    fn name_is_the_api_name_else_the_id() {
        let cases = [("pets", "pets"), ("  ", "a1b2c3d4e5"), ("", "a1b2c3d4e5")];
        for (api_name, expected) in cases {
            let api = Api { name: api_name.into(), ..pets_api() };
            assert_eq!(api_document(&on_prod(api), "eu-west-1").name, expected);
        }
    }

    #[test]
    fn oversized_texts_are_cut_to_the_contract_limits() {
        let api = Api { name: "n".repeat(2000), description: Some("é".repeat(9000)), ..pets_api() };
        let document = api_document(&on_prod(api), "eu-west-1");
        assert_eq!(document.name.chars().count(), API_NAME_MAX);
        assert_eq!(document.description.unwrap().chars().count(), API_DESCRIPTION_MAX);
    }

    #[test]
    fn registration_renders_name_and_description_within_limits() {
        let config = ControlPlaneConfig {
            url: "https://apicp".into(),
            credentials: CredentialSource::Inline { username: "u".into(), password: "p".into() },
            ca_bundle: None,
            timeout: Duration::from_secs(1),
            runtime_type: "AWS_API_GATEWAY".into(),
            runtime_id_template: "{account}_{region}_{stage}".into(),
            runtime_name_template: "{stage} ({region} {account})".into(),
            runtime_description_template: "Stage {stage}".into(),
            runtime_location: Some("Dublin".into()),
            runtime_tags: vec!["aws".into()],
            runtime_capacity: None,
            heartbeat_interval: Duration::from_secs(60),
        };
        let runtime = runtime_registration(&config, location("prod"));
        assert_eq!(runtime.id.as_deref(), Some("111122223333_eu-west-1_prod"));
        assert_eq!(runtime.name, "prod (eu-west-1 111122223333)");
        assert_eq!(runtime.deployment_type, "PUBLIC_CLOUD");
        let long = runtime_registration(&config, location(&"s".repeat(80)));
        assert_eq!(long.name.chars().count(), RUNTIME_NAME_MAX);
    }
}
