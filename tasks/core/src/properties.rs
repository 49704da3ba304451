//! Property tests of the parsing, mapping and aggregation rules over arbitrary input.
//!
//! `make test` runs proptest's default 256 cases a property; `make test-properties` runs
//! `PROPTEST_CASES` (20,000 by default) of each.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

use crate::aws::apigateway::{Api, ApiKind, DeployedApi, DomainRoute, Generation, Stage};
use crate::aws::cloudtrail::parse_event;
use crate::changes::touched;
use crate::mapping::{API_DESCRIPTION_MAX, API_NAME_MAX, TAG_MAX, api_document, published_api_id};
use crate::metrics::{ApiIdentity, ApiSeries, Series, Totals, metrics_model};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        // Values shaped like the ids and ARNs the parser looks for.
        "[a-z0-9]{0,10}".prop_map(Value::from),
        "arn:aws:apigateway:[a-z0-9-]{0,12}::/(restapis|apis|domainnames)/[a-z0-9]{0,10}(/stages/[a-z]{0,5})?"
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("restApiId".to_owned()),
            Just("apiId".to_owned()),
            Just("domainName".to_owned()),
            Just("resourceArn".to_owned()),
            Just("id".to_owned()),
            "[a-zA-Z]{1,12}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(keys, inner, 0..5).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn any_event_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("CreateRestApi".to_owned()),
        Just("CreateApi".to_owned()),
        Just("ImportRestApi".to_owned()),
        Just("DeleteBasePathMapping".to_owned()),
        Just("CreateApiMapping".to_owned()),
        Just("TagResource".to_owned()),
        "[A-Za-z]{0,20}",
    ]
}

/// Every string anywhere in a JSON value.
fn strings_in(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(s) => found.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, found)),
        Value::Object(fields) => fields.values().for_each(|v| strings_in(v, found)),
        _ => {}
    }
}

fn any_text(max: usize) -> impl Strategy<Value = String> {
    // Any characters, control characters and astral planes included, up to past the limits.
    prop::collection::vec(any::<char>(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

fn any_series() -> impl Strategy<Value = (Series, Series, Series, Series, Series)> {
    let minutes = 0..10i64;
    prop::collection::btree_map(
        minutes,
        (0u32..10_000, 0u32..10_000, 0u32..10_000, 0.0..30_000.0f64, 0.0..1.0f64),
        0..10,
    )
    .prop_map(|points| {
        let (mut count, mut client, mut server, mut latency, mut integration) = Default::default();
        for (minute, (n, c, s, l, share)) in points {
            let t = minute * 60;
            let (n, c) = (f64::from(n), f64::from(c.min(n)));
            let s = f64::from(s).min(n - c);
            Series::insert(&mut count, t, n);
            Series::insert(&mut client, t, c);
            Series::insert(&mut server, t, s);
            Series::insert(&mut latency, t, l);
            Series::insert(&mut integration, t, l * share);
        }
        (count, client, server, latency, integration)
    })
}

proptest! {
    #[test]
    fn any_cloudtrail_record_parses_without_panic_and_names_only_ids_it_holds(
        name in any_event_name(),
        request in any_json(),
        response in any_json(),
        cut in 0usize..400,
    ) {
        let record = serde_json::json!({"eventName": name, "requestParameters": request, "responseElements": response});
        let text = record.to_string();
        let event = parse_event("e1", 0, &name, Some(&text));
        prop_assert!(!event.unreadable);
        let found = touched(std::slice::from_ref(&event), &Generation::ALL);
        let mut strings = Vec::new();
        strings_in(&record, &mut strings);
        for api in &found.apis {
            prop_assert!(!api.id.is_empty());
            prop_assert!(strings.iter().any(|s| s.contains(&api.id)), "{} is not in the record", api.id);
        }
        for domain in &found.domains {
            prop_assert!(strings.contains(domain));
        }
        // The same record cut short anywhere: unreadable, never a panic, never a guess.
        let cut = text.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(text.len());
        if cut < text.len() {
            let truncated = parse_event("e1", 0, &name, Some(&text[..cut]));
            prop_assert!(truncated.unreadable);
            let found = touched(&[truncated], &Generation::ALL);
            prop_assert!(found.apis.is_empty() && found.domains.is_empty());
            prop_assert_eq!(found.unreadable, 1);
        }
    }

    #[test]
    fn any_api_maps_to_a_document_within_the_contracts_limits(
        id in "[a-z0-9]{10}",
        kind in prop_oneof![Just(ApiKind::Rest), Just(ApiKind::Http), Just(ApiKind::WebSocket)],
        name in any_text(1_200),
        description in prop::option::of(any_text(9_000)),
        tags in prop::collection::btree_map(any_text(130), any_text(260), 0..5),
        stage in "[A-Za-z0-9_$-]{1,20}",
        domains in prop::collection::vec(("[a-z.]{1,30}", "[a-z/]{0,10}"), 0..3),
    ) {
        let deployed = DeployedApi {
            api: Api { id: id.clone(), kind, name, description, tags, endpoint_types: vec![], execute_api_disabled: false, policy_statements: None },
            stage: Stage { name: stage.clone(), deployment_id: Some("d1".into()), tags: BTreeMap::new() },
            domains: domains.into_iter().map(|(domain_name, base_path)| DomainRoute { domain_name, base_path }).collect(),
        };
        let document = api_document(&deployed, "eu-west-1");
        let chars = document.name.chars().count();
        prop_assert!((1..=API_NAME_MAX).contains(&chars), "name of {chars} characters");
        prop_assert!(!document.name.chars().any(char::is_control));
        if let Some(description) = &document.description {
            prop_assert!(description.chars().count() <= API_DESCRIPTION_MAX);
            prop_assert!(!description.is_empty());
            prop_assert!(!description.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
        }
        prop_assert!(document.tags.iter().all(|tag| tag.chars().count() <= TAG_MAX));
        prop_assert_eq!(&document.id, &published_api_id(&id, &stage));
        let json = serde_json::to_value(&document).unwrap();
        prop_assert!(json["attributes"].as_object().unwrap().values().all(Value::is_string));
    }

    #[test]
    fn aggregated_windows_add_up_and_averages_stay_within_their_inputs(
        apis in prop::collection::vec(any_series(), 0..6),
    ) {
        let apis: Vec<(ApiIdentity, ApiSeries)> = apis
            .into_iter()
            .enumerate()
            .map(|(i, (count, client_errors, server_errors, latency, integration_latency))| {
                let identity = ApiIdentity { id: format!("a{i}"), name: format!("api {i}"), version: None };
                (identity, ApiSeries { count, client_errors, server_errors, latency, integration_latency })
            })
            .collect();
        let totals: Vec<(ApiIdentity, Totals)> = apis.iter().map(|(api, s)| (api.clone(), Totals::of(s))).collect();
        let model = metrics_model(600, &totals);
        let runtime = &model.runtime_transaction_metrics;
        let total: f64 = apis.iter().map(|(_, s)| s.count.values().sum::<f64>()).sum();
        prop_assert_eq!(runtime.api_metrics.transaction_count, total);
        let per_api: f64 = model.api_transaction_metrics_list.iter().map(|a| a.api_metrics.transaction_count).sum();
        prop_assert_eq!(per_api, total, "runtime total is the sum of its APIs");
        let by_class: f64 = runtime.metrics_by_status_code.values().map(|m| m.transaction_count).sum();
        prop_assert_eq!(by_class, total, "2xx + 4xx + 5xx is the total");
        // Each average lies within the per-minute values it averages (count-weighted).
        let weighted = |(_, s): &(ApiIdentity, ApiSeries)| s.latency.iter().filter(|(t, _)| s.count.get(t).is_some_and(|n| *n > 0.0)).map(|(_, v)| *v).collect::<Vec<_>>();
        let latencies: Vec<f64> = apis.iter().flat_map(weighted).collect();
        if let Some(average) = runtime.api_metrics.average_response_time {
            let (low, high) = latencies.iter().fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
            prop_assert!(average >= low - 1e-6 && average <= high + 1e-6, "{average} outside [{low}, {high}]");
            let gateway = runtime.api_metrics.average_latency.unwrap();
            prop_assert!(gateway >= 0.0 && gateway <= average + 1e-6);
        } else {
            prop_assert!(total == 0.0 || latencies.is_empty());
        }
    }
}
