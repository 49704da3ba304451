"""Demo and test data for moto: REST, HTTP and WebSocket APIs deployed to stages, with tags, custom domain names and
their metrics. v2 APIs are created through the AWS proxy, which serves their deployments (moto has none)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from stack import REGION, boto

# name -> (API tags, {stage: stage tags})
DEMO_APIS = {
    "pets": ({"team": "core", "env": "shared"}, {"prod": {"env": "production"}, "dev": {"env": "development"}}),
    "orders": ({"team": "shop"}, {"prod": {"env": "production"}}),
    "inventory": ({"team": "warehouse"}, {"dev": {}}),
}

# (Count, 4XXError, 5XXError, Latency ms, IntegrationLatency ms) per minute, per API.
DEMO_TRAFFIC = {"pets": (40, 3, 1, 120.0, 90.0), "orders": (10, 0, 2, 300.0, 250.0), "inventory": (5, 1, 0, 50.0, 20.0)}


@dataclass
class SeededApi:
    id: str
    name: str
    tags: dict[str, str]
    stages: dict[str, str] = field(default_factory=dict)  # stage -> deployment id


def create_rest_api(endpoint: str, name: str, tags: dict[str, str], stages: dict[str, dict[str, str]],
                    description: str | None = None, endpoint_type: str = "EDGE",
                    policy: dict | None = None, account: str | None = None, region: str | None = None) -> SeededApi:
    """A REST API with one mock GET method and an optional resource policy, deployed to each stage (with the stage's
    tags); in another account or region than the home ones when told (`endpoint` is then moto's)."""
    apigw = boto("apigateway", endpoint, account, region)
    extra = {}
    if policy is not None:
        # moto answers the policy as it was given; API Gateway answers it with its quotes backslash-escaped.
        extra["policy"] = json.dumps(policy).replace('"', '\\"')
    api = apigw.create_rest_api(name=name, description=description or f"{name} API", tags=tags,
                                endpointConfiguration={"types": [endpoint_type]}, **extra)
    root = next(r["id"] for r in apigw.get_resources(restApiId=api["id"])["items"] if r["path"] == "/")
    apigw.put_method(restApiId=api["id"], resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigw.put_integration(restApiId=api["id"], resourceId=root, httpMethod="GET", type="MOCK")
    seeded = SeededApi(id=api["id"], name=name, tags=tags)
    for stage, stage_tags in stages.items():
        deployment = apigw.create_deployment(restApiId=api["id"])
        apigw.create_stage(restApiId=api["id"], stageName=stage, deploymentId=deployment["id"], tags=stage_tags)
        seeded.stages[stage] = deployment["id"]
    return seeded


def create_v2_api(proxy_url: str, name: str, protocol: str, tags: dict[str, str],
                  stages: dict[str, dict[str, str]]) -> SeededApi:
    """An HTTP or WebSocket API with one route, deployed to each stage (with the stage's tags)."""
    v2 = boto("apigatewayv2", proxy_url)
    extra = {"RouteSelectionExpression": "$request.body.action"} if protocol == "WEBSOCKET" else {}
    api = v2.create_api(Name=name, ProtocolType=protocol, Tags=tags, **extra)
    v2.create_route(ApiId=api["ApiId"], RouteKey="$connect" if protocol == "WEBSOCKET" else "GET /items")
    seeded = SeededApi(id=api["ApiId"], name=name, tags=tags)
    for stage, stage_tags in stages.items():
        seeded.stages[stage] = deploy_v2_stage(proxy_url, api["ApiId"], stage, stage_tags)
    return seeded


def deploy_v2_stage(proxy_url: str, api_id: str, stage: str, tags: dict[str, str] | None = None) -> str:
    v2 = boto("apigatewayv2", proxy_url)
    v2.create_stage(ApiId=api_id, StageName=stage, Tags=tags or {})
    return v2.create_deployment(ApiId=api_id, StageName=stage)["DeploymentId"]


def redeploy_rest_apis(stack, api_ids: list[str], stage: str = "prod", at: float | None = None) -> None:
    """New deployments of the REST APIs `api_ids` to `stage` in the stack's account, each with the CloudTrail record
    an incremental window reads, made at `at`: by default 420 s ago, inside the next window (which ends 300 s before
    now and overlaps 900 s back)."""
    apigw = boto("apigateway", stack.moto_url)
    at = time.time() - 420 if at is None else at
    for api_id in api_ids:
        apigw.create_deployment(restApiId=api_id, stageName=stage)
        stack.cloudtrail.add_event("CreateDeployment", eventTime=at,
                                   requestParameters={"restApiId": api_id, "stageName": stage})


def map_v2_domain(endpoint: str, domain: str, api_id: str, stage: str, key: str = "") -> str:
    """A regional custom domain name (created if new) routing `key` to the API's stage; returns the mapping id."""
    v2 = boto("apigatewayv2", endpoint)
    if domain not in {d["DomainName"] for d in v2.get_domain_names()["Items"]}:
        v2.create_domain_name(DomainName=domain, DomainNameConfigurations=[{
            "CertificateArn": f"arn:aws:acm:{REGION}:123456789012:certificate/{domain}", "EndpointType": "REGIONAL"}])
    return v2.create_api_mapping(DomainName=domain, ApiId=api_id, Stage=stage, ApiMappingKey=key)["ApiMappingId"]


def map_rest_domain(endpoint: str, domain: str, api_id: str, stage: str, base_path: str = "") -> None:
    apigw = boto("apigateway", endpoint)
    apigw.create_domain_name(domainName=domain, regionalCertificateArn=f"arn:aws:acm:{REGION}:123456789012:certificate/x",
                             endpointConfiguration={"types": ["REGIONAL"]})
    apigw.create_base_path_mapping(domainName=domain, restApiId=api_id, stage=stage, basePath=base_path)


def datapoints(name_dimension: str, api: str, stage: str, minutes: list[int], values: dict[str, float],
               unit: str | None = None) -> list[dict]:
    """One datapoint per metric and minute (epoch seconds), the API named by `name_dimension` (`ApiName` for REST
    APIs, `ApiId` for HTTP and WebSocket APIs), as API Gateway publishes them."""
    dimensions = [{"Name": name_dimension, "Value": api}, {"Name": "Stage", "Value": stage}]
    return [{"MetricName": metric, "Dimensions": dimensions, "Value": value,
             "Timestamp": datetime.fromtimestamp(minute, tz=timezone.utc), **({"Unit": unit} if unit else {})}
            for minute in minutes for metric, value in values.items()]


def put_datapoints(endpoint: str, data: list[dict], account: str | None = None, region: str | None = None) -> None:
    cloudwatch = boto("cloudwatch", endpoint, account, region)
    for start in range(0, len(data), 500):
        cloudwatch.put_metric_data(Namespace="AWS/ApiGateway", MetricData=data[start:start + 500])


def put_v2_traffic(endpoint: str, api_id: str, stage: str, minutes: list[int], values: dict[str, float]) -> None:
    put_datapoints(endpoint, datapoints("ApiId", api_id, stage, minutes, values))


def put_traffic(endpoint: str, api_name: str, stage: str, minutes: list[int],
                traffic: tuple[float, float, float, float, float], account: str | None = None,
                region: str | None = None) -> None:
    """A REST API's traffic: (Count, 4XXError, 5XXError, Latency ms, IntegrationLatency ms) per minute."""
    count, client_errors, server_errors, latency, integration_latency = traffic
    values = {"Count": count, "4XXError": client_errors, "5XXError": server_errors, "Latency": latency,
              "IntegrationLatency": integration_latency}
    put_datapoints(endpoint, datapoints("ApiName", api_name, stage, minutes, values, unit="Count"), account, region)


# Per API and minute, by type: REST and HTTP 10 requests (one 4xx), 50 ms, backend 20 ms; WebSocket 3 connections
# and 12 messages (one client error), backend 20 ms.
STEADY_TRAFFIC = {
    "REST": {"Count": 10, "4XXError": 1, "5XXError": 0, "Latency": 50.0, "IntegrationLatency": 20.0},
    "HTTP": {"Count": 10, "4xx": 1, "5xx": 0, "Latency": 50.0, "IntegrationLatency": 20.0},
    "WEBSOCKET": {"ConnectCount": 3, "MessageCount": 12, "ClientError": 1, "IntegrationLatency": 20.0},
}


def put_steady_traffic(endpoint: str, rest_names: list[str], http_ids: list[str], websocket_ids: list[str],
                       stages: list[str], minutes: list[int]) -> None:
    """STEADY_TRAFFIC on every listed API (REST APIs by name, HTTP and WebSocket APIs by id) and stage, each
    minute, with one CloudWatch client for all."""
    apis = [("ApiName", name, "REST") for name in rest_names] + [("ApiId", id_, "HTTP") for id_ in http_ids] + [
        ("ApiId", id_, "WEBSOCKET") for id_ in websocket_ids]
    put_datapoints(endpoint, [d for stage in stages for dimension, api, kind in apis
                              for d in datapoints(dimension, api, stage, minutes, STEADY_TRAFFIC[kind])])


def recent_minutes(count: int, now: float | None = None) -> list[int]:
    """The last `count` whole minutes before now."""
    current = int((now or time.time()) // 60 * 60)
    return [current - 60 * i for i in range(1, count + 1)]


def demo(endpoint: str, account: str | None = None, region: str | None = None) -> dict[str, SeededApi]:
    apis = {name: create_rest_api(endpoint, name, tags, stages, account=account, region=region)
            for name, (tags, stages) in DEMO_APIS.items()}
    minutes = recent_minutes(30)
    for name, (_, stages) in DEMO_APIS.items():
        for stage in stages:
            put_traffic(endpoint, name, stage, minutes, DEMO_TRAFFIC[name], account=account, region=region)
    return apis


__all__ = ["REGION", "STEADY_TRAFFIC", "SeededApi", "create_rest_api", "create_v2_api", "datapoints", "demo",
           "deploy_v2_stage", "map_rest_domain", "map_v2_domain", "put_datapoints", "put_steady_traffic", "put_traffic",
           "put_v2_traffic", "recent_minutes", "redeploy_rest_apis"]
