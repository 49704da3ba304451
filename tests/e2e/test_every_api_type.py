"""End to end: HTTP and WebSocket APIs are federated next to REST APIs, with where each is served, kept in sync
from CloudTrail records, reconciled, and their metrics reach the control plane with the exact numbers.

moto has no v2 deployments: the AWS proxy serves them (tests/stack/v2_deployments.py, a strict stand-in that follows
the API Gateway v2 API reference), so every v2 stage here is deployed through it."""

from __future__ import annotations

import json

import pytest

from seed import create_rest_api, create_v2_api, map_rest_domain, map_v2_domain, put_v2_traffic, recent_minutes
from stack import boto
from test_metrics import windows_behind
from conftest import wait_until_in_window
from test_workflow import ACCOUNT, INTERVAL, PROD, REGION, published

DEFAULT_STAGE = f"{ACCOUNT}_{REGION}__default"  # `$default`, with the `$` a runtime id may not hold
V2_ARN = f"arn:aws:apigateway:{REGION}::/apis"


def test_http_and_websocket_apis_are_published_with_their_urls_and_follow_every_change(clean, state_table):
    stack = clean
    proxy = stack.aws_proxy.url
    statement = {"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*"}
    policy = {"Version": "2012-10-17", "Statement": [statement, {**statement, "Effect": "Deny", "Principal": {
        "AWS": "arn:aws:iam::111122223333:root"}}]}
    pets = create_rest_api(stack.moto_url, "pets", {"team": "core"}, {"prod": {}}, policy=policy)
    orders = create_v2_api(proxy, "orders", "HTTP", {"team": "shop"}, {"prod": {"env": "production"}, "$default": {}})
    legacy = create_v2_api(proxy, "legacy", "HTTP", {}, {"prod": {}})
    chat = create_v2_api(proxy, "chat", "WEBSOCKET", {"team": "live"}, {"prod": {}})
    gone = create_v2_api(proxy, "gone", "WEBSOCKET", {}, {"prod": {}})
    search = create_v2_api(proxy, "search", "HTTP", {}, {"prod": {}})
    map_v2_domain(proxy, "api.example.com", orders.id, "prod", "orders")
    search_mapping = map_v2_domain(proxy, "api.example.com", search.id, "prod", "search")
    map_rest_domain(stack.moto_url, "rest.example.com", pets.id, "prod", "pets")
    stack.aws_proxy.reset()
    stack.aws_proxy.listing_pages.page_size = 1  # every listing answers one item per page, as AWS may

    first = stack.run()

    assert first.succeeded, first.printed
    # The full sync's calls at the wire are the lower bound: per management API its listing pages, the stages of
    # each API, the domain names and each domain's routes. With one item per v2 page: 5 APIs, 6 stages (orders has
    # two), 1 domain name, 2 mappings; each followed by NextToken to the end.
    calls = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "apigateway"}
    assert calls == {"GetRestApis": 1, "GetStages": 1, "GetDomainNames": 1, "GetBasePathMappings": 1,
                     "GetApis": 5, "GetStages (v2)": 6, "GetDomainNames (v2)": 1, "GetApiMappings": 2}
    prod = published(stack)[PROD]
    assert set(prod) == {f"{api.id}_prod" for api in (pets, orders, legacy, chat, gone, search)}
    http = prod[f"{orders.id}_prod"]
    assert (http["type"], http["name"], http["version"]) == ("REST", "orders", orders.stages["prod"])
    assert http["tags"] == ["env:production", "team:shop"]
    assert http["attributes"]["invokeUrl"] == f"https://{orders.id}.execute-api.{REGION}.amazonaws.com/prod"
    assert json.loads(http["attributes"]["customDomainUrls"]) == ["https://api.example.com/orders"]
    assert http["attributes"]["awsApiType"] == "HTTP"
    websocket = prod[f"{chat.id}_prod"]
    assert (websocket["type"], websocket["version"]) == ("WEBSOCKET", chat.stages["prod"])
    assert websocket["attributes"]["invokeUrl"] == f"wss://{chat.id}.execute-api.{REGION}.amazonaws.com/prod"
    assert "customDomainUrls" not in websocket["attributes"]
    assert json.loads(prod[f"{pets.id}_prod"]["attributes"]["customDomainUrls"]) == ["https://rest.example.com/pets"]
    # The statements of the REST API's resource policy, as the vendor's agent counts them; v2 APIs have none.
    assert prod[f"{pets.id}_prod"]["policiesCount"] == 2
    assert http["policiesCount"] == websocket["policiesCount"] == 0
    default = published(stack)[DEFAULT_STAGE][f"{orders.id}_$default"]
    assert default["attributes"]["invokeUrl"] == f"https://{orders.id}.execute-api.{REGION}.amazonaws.com"

    # Between runs, through both management APIs, each change with its CloudTrail record.
    v2 = boto("apigatewayv2", proxy)
    at = state_table.item("prod")["assetsWatermark"] + 1
    billing = create_v2_api(proxy, "billing", "HTTP", {}, {"prod": {}})
    stack.cloudtrail.add_event("CreateApi", eventTime=at, requestParameters={"name": "billing", "protocolType": "HTTP"},
                               responseElements={"apiId": billing.id, "name": "billing"})
    redeployed = v2.create_deployment(ApiId=chat.id, StageName="prod")["DeploymentId"]
    stack.cloudtrail.add_event("CreateDeployment", eventTime=at, requestParameters={
        "apiId": chat.id, "stageName": "prod"}, responseElements={"deploymentId": redeployed})
    v2.update_api(ApiId=orders.id, Name="orders-v2")
    stack.cloudtrail.add_event("UpdateApi", eventTime=at, requestParameters={
        "apiId": orders.id, "name": "orders-v2"}, responseElements={"apiId": orders.id})
    v2.tag_resource(ResourceArn=f"{V2_ARN}/{orders.id}", Tags={"tier": "gold"})
    stack.cloudtrail.add_event("TagResource", eventTime=at, requestParameters={
        "resource-arn": f"{V2_ARN}/{orders.id}", "tags": {"tier": "gold"}})
    map_v2_domain(proxy, "ws.example.com", chat.id, "prod")
    stack.cloudtrail.add_event("CreateApiMapping", eventTime=at, requestParameters={
        "domainName": "ws.example.com", "apiId": chat.id, "stage": "prod"})
    # A removed mapping names only its domain: the agent finds the API through what it published.
    v2.delete_api_mapping(DomainName="api.example.com", ApiMappingId=search_mapping)
    stack.cloudtrail.add_event("DeleteApiMapping", eventTime=at, requestParameters={
        "domainName": "api.example.com", "apiMappingId": search_mapping})
    v2.delete_stage(ApiId=legacy.id, StageName="prod")
    stack.cloudtrail.add_event("DeleteStage", eventTime=at, requestParameters={"apiId": legacy.id, "stageName": "prod"})
    v2.delete_api(ApiId=gone.id)
    stack.cloudtrail.add_event("DeleteApi", eventTime=at, requestParameters={"apiId": gone.id})

    wait_until_in_window(at)  # the first run may have ended less than a second ago
    incremental = stack.run()

    assert incremental.succeeded, incremental.printed
    assert incremental.output["assets"]["summary"]["fullRuntimes"] == 0
    prod = published(stack)[PROD]
    assert set(prod) == {f"{api.id}_prod" for api in (pets, orders, chat, billing, search)}
    assert "tier:gold" in prod[f"{orders.id}_prod"]["tags"]
    assert "customDomainUrls" not in prod[f"{search.id}_prod"]["attributes"]
    assert json.loads(prod[f"{orders.id}_prod"]["attributes"]["customDomainUrls"]) == ["https://api.example.com/orders"]
    assert prod[f"{orders.id}_prod"]["name"] == "orders-v2"
    assert prod[f"{chat.id}_prod"]["version"] == redeployed
    assert json.loads(prod[f"{chat.id}_prod"]["attributes"]["customDomainUrls"]) == ["wss://ws.example.com"]

    # The next run's window re-reads those events in its overlap and skips them, as applied: it reads CloudTrail
    # and nothing of API Gateway, and sends the control plane no API.
    stack.aws_proxy.reset()
    apicp_requests = len(stack.apicp.requests())
    idle = stack.run()
    assert idle.succeeded, idle.printed
    assert not {op for (service, op) in stack.aws_proxy.counts() if service == "apigateway"}
    assert not [r for r in stack.apicp.requests()[apicp_requests:] if "/apis" in r["path"]]

    # Full reconciliation removes what only the control plane holds.
    stack.apicp.add_api(PROD, {"id": "stray_prod", "name": "stray", "type": "REST"})
    full = stack.run({"mode": "full"})
    assert full.succeeded, full.printed
    assert set(published(stack)[PROD]) == {f"{api.id}_prod" for api in (pets, orders, chat, billing, search)}


def test_http_and_websocket_metrics_reach_the_control_plane_with_the_exact_numbers(clean, state_table):
    stack = clean
    proxy = stack.aws_proxy.url
    orders = create_v2_api(proxy, "orders", "HTTP", {}, {"prod": {}})
    chat = create_v2_api(proxy, "chat", "WEBSOCKET", {}, {"prod": {}})
    minutes = recent_minutes(45)
    put_v2_traffic(stack.moto_url, orders.id, "prod", minutes,
                   {"Count": 20, "4xx": 2, "5xx": 1, "Latency": 100.0, "IntegrationLatency": 60.0})
    put_v2_traffic(stack.moto_url, chat.id, "prod", minutes, {
        "ConnectCount": 3, "MessageCount": 12, "ClientError": 1, "IntegrationError": 2, "ExecutionError": 1,
        "IntegrationLatency": 40.0})
    start = windows_behind(stack, state_table, 1, stages=("prod",))

    run = stack.run()

    assert run.succeeded, run.printed
    reports = [m["body"] for m in stack.apicp.state()["metrics"] if m["runtimeId"] == PROD]
    assert [r["timestamp"] // 1000 for r in reports] == [start + INTERVAL]
    per_api = {m["apiId"]: m for m in reports[0]["apiTransactionMetricsList"]}
    http = per_api[f"{orders.id}_prod"]
    assert (http["apiName"], http["apiVersion"]) == ("orders", orders.stages["prod"])
    assert http["apiMetrics"] == {"transactionCount": 100, "averageLatency": pytest.approx(40.0),
                                  "averageBackendResponseTime": pytest.approx(60.0),
                                  "averageResponseTime": pytest.approx(100.0)}
    assert {code: m["transactionCount"] for code, m in http["metricsByStatusCode"].items()} == {
        "2xx": 85, "4xx": 10, "5xx": 5}
    # A WebSocket transaction is a connection or a message; only its backend latency is known.
    websocket = per_api[f"{chat.id}_prod"]
    assert websocket["apiMetrics"] == {"transactionCount": 75, "averageBackendResponseTime": pytest.approx(40.0)}
    assert {code: m["transactionCount"] for code, m in websocket["metricsByStatusCode"].items()} == {
        "2xx": 55, "4xx": 5, "5xx": 15}
