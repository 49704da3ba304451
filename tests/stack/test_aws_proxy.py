"""Tests of the AWS quota proxy (aws_proxy.py) in front of a real moto server, driven by boto3.

They pin down what the agent's AWS tests rely on: requests reach moto unchanged, API Gateway's management quota is
enforced and answered as API Gateway answers it, and injected errors reach the SDK in its service's protocol.
"""

import json
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from requests.structures import CaseInsensitiveDict
from moto.core.cbor import CBORDecoder, CBOREncoder

from accounts import Accounts
from aws_proxy import APIGATEWAY_BURST, APIGATEWAY_RATE_PER_SECOND, AwsProxy, identify
from local_server import LocalServer

REGION = "us-east-1"
# `max_attempts` counts retries (botocore adds the first attempt); `total_max_attempts` counts every attempt.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@pytest.fixture(scope="module")
def moto_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    process = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline and process.poll() is None, "moto server did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def moto(moto_url):
    requests.post(f"{moto_url}/moto-api/reset").raise_for_status()
    return moto_url


class ManualClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def proxy(moto, clock):
    with AwsProxy(moto, clock=clock) as server:
        yield server


def client(service, endpoint, region=REGION):
    return boto3.client(service, endpoint_url=endpoint, region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing", config=NO_RETRIES)


def error_of(call, *args, **kwargs):
    with pytest.raises(ClientError) as raised:
        call(*args, **kwargs)
    return raised.value.response


def test_requests_reach_moto_and_answers_come_back(proxy, moto):
    apigateway = client("apigateway", proxy.url)
    created = apigateway.create_rest_api(name="pets", description="through the proxy")
    fetched = apigateway.get_rest_api(restApiId=created["id"])
    assert (fetched["name"], fetched["description"]) == ("pets", "through the proxy")
    assert [api["id"] for api in client("apigateway", moto).get_rest_apis()["items"]] == [created["id"]]
    assert proxy.counts() == {("apigateway", "POST /restapis"): 1, ("apigateway", "GetRestApi"): 1}


class Recorder(LocalServer):
    """An upstream that records what arrives and answers with a body of unannounced length."""

    def __init__(self):
        self.received = []
        self._serve("127.0.0.1", 0)

    def _dispatch(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        self.received.append((request.command, request.path, dict(request.headers.items()), body))
        request.send_response(207)
        request.send_header("X-Upstream", "yes")
        request.send_header("Connection", "close")  # no Content-Length: the body ends with the connection
        request.end_headers()
        request.wfile.write(b"x" * 200_000)
        request.close_connection = True


def test_forwarding_changes_nothing_and_streams_the_answer():
    with Recorder() as upstream, AwsProxy(upstream.url) as proxy:
        headers = {"X-Amz-Target": "DynamoDB_20120810.GetItem", "Content-Type": "application/x-amz-json-1.0",
                   "Authorization": "AWS4-HMAC-SHA256 Credential=AK/20240101/eu-west-1/dynamodb/aws4_request, "
                                    "SignedHeaders=host, Signature=abc"}
        answer = requests.post(proxy.url + "/some/path?a=1&b=%2F", data=b'{"TableName": "t"}', headers=headers)

        assert (answer.status_code, answer.headers["X-Upstream"], answer.content) == (207, "yes", b"x" * 200_000)
        [(method, path, received, body)] = upstream.received
        assert (method, path, body) == ("POST", "/some/path?a=1&b=%2F", b'{"TableName": "t"}')
        assert {k: v for k, v in received.items() if k in headers} == headers
        assert received["Host"] == proxy.url.removeprefix("http://")  # as signed by the client
        assert proxy.counts() == {("dynamodb", "GetItem"): 1}


@pytest.mark.parametrize("method, path, operation", [
    ("GET", "/restapis", "GetRestApis"),
    ("GET", "/restapis/a1", "GetRestApi"),
    ("GET", "/restapis/a1/stages", "GetStages"),
    ("GET", "/restapis/a1/stages/prod", "GetStage"),
    ("GET", "/restapis/a1/stages/prod/exports/oas30", "GetExport"),
    ("GET", "/domainnames", "GetDomainNames"),
    ("GET", "/domainnames/api.example.com/basepathmappings", "GetBasePathMappings"),
    ("GET", "/v2/apis", "GetApis"),
    ("GET", "/v2/apis/a1/stages", "GetStages (v2)"),
    ("GET", "/v2/domainnames", "GetDomainNames (v2)"),
    ("GET", "/v2/domainnames/api.example.com/apimappings", "GetApiMappings"),
    ("GET", "/tags/arn%3Aaws%3Aapigateway%3Aus-east-1%3A%3A%2Frestapis%2Fa1", "GetTags"),
    ("POST", "/restapis/a1/deployments", "POST /restapis/{id}/deployments"),
    ("DELETE", "/v2/apis/a1/stages/prod", "DELETE /v2/apis/{id}/stages/{id}"),
])
def test_api_gateway_operations_are_named_from_method_and_path(method, path, operation):
    headers = CaseInsensitiveDict(
        {"Authorization": "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/apigateway/aws4_request, Signature=x"})
    call = identify(method, path, "", headers, b"")
    assert (call.service, call.region, call.operation, call.protocol) == ("apigateway", REGION, operation, "rest-json")


def test_query_protocol_operation_is_the_form_action():
    headers = CaseInsensitiveDict({
        "Authorization": "AWS4-HMAC-SHA256 Credential=AK/20240101/eu-west-1/monitoring/aws4_request, Signature=x",
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    call = identify("POST", "/", "", headers, b"Action=GetMetricData&Version=2010-08-01")
    assert (call.service, call.region, call.operation, call.protocol) == ("monitoring", "eu-west-1", "GetMetricData",
                                                                          "query")


def test_api_gateway_quota_answers_429_beyond_the_burst(proxy, clock):
    apigateway, apigatewayv2 = client("apigateway", proxy.url), client("apigatewayv2", proxy.url)
    assert (APIGATEWAY_RATE_PER_SECOND, APIGATEWAY_BURST) == (10, 40)
    for _ in range(APIGATEWAY_BURST):
        apigateway.get_rest_apis()

    throttled = error_of(apigateway.get_rest_apis)
    assert throttled["Error"] == {"Code": "TooManyRequestsException", "Message": "Too Many Requests"}
    assert throttled["ResponseMetadata"]["HTTPStatusCode"] == 429
    headers = throttled["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-errortype"] == "TooManyRequestsException" and "retry-after" not in headers
    assert error_of(apigatewayv2.get_apis)["Error"]["Code"] == "TooManyRequestsException"  # one quota for v1 and v2

    dynamodb = client("dynamodb", proxy.url)
    for _ in range(60):
        dynamodb.list_tables()
    client("apigateway", proxy.url, region="eu-west-1").get_rest_apis()  # another Region, its own quota
    assert proxy.throttled() == {("apigateway", "GetRestApis"): 1, ("apigateway", "GetApis"): 1}
    assert proxy.counts() == {("apigateway", "GetRestApis"): 42, ("apigateway", "GetApis"): 1,
                              ("dynamodb", "ListTables"): 60}


def test_api_gateway_quota_refills_ten_a_second(proxy, clock):
    apigateway = client("apigateway", proxy.url)

    def allowed(attempts):
        results = []
        for _ in range(attempts):
            try:
                apigateway.get_rest_apis()
                results.append(True)
            except ClientError as error:
                assert error.response["Error"]["Code"] == "TooManyRequestsException"
                results.append(False)
        return results

    assert allowed(41) == [True] * 40 + [False]
    clock.now += 1.0
    assert allowed(11) == [True] * 10 + [False]
    clock.now += 0.25  # 2.5 tokens
    assert allowed(3) == [True, True, False]
    clock.now += 60  # never more than the burst
    assert allowed(41) == [True] * 40 + [False]
    assert proxy.throttled() == {("apigateway", "GetRestApis"): 4}


def test_api_gateway_quota_runs_on_real_time(moto):
    with AwsProxy(moto) as proxy:
        apigateway = client("apigateway", proxy.url)
        started = time.monotonic()
        succeeded = 0
        for _ in range(80):
            try:
                apigateway.get_rest_apis()
                succeeded += 1
            except ClientError:
                pass
        elapsed = time.monotonic() - started
        assert 40 <= succeeded <= 40 + APIGATEWAY_RATE_PER_SECOND * elapsed + 1
        time.sleep(1.0)
        for _ in range(10):
            apigateway.get_rest_apis()


def test_counts_name_each_service_and_operation(proxy, moto):
    client("dynamodb", moto).create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                                          AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                                          KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
    dynamodb = client("dynamodb", proxy.url)
    dynamodb.put_item(TableName="t", Item={"k": {"S": "1"}})
    for _ in range(3):
        dynamodb.get_item(TableName="t", Key={"k": {"S": "1"}})
    client("sts", proxy.url).get_caller_identity()
    apigateway = client("apigateway", proxy.url)
    apigateway.get_rest_apis()
    error_of(apigateway.get_stages, restApiId="missing")
    assert proxy.counts() == {("dynamodb", "PutItem"): 1, ("dynamodb", "GetItem"): 3,
                              ("sts", "GetCallerIdentity"): 1, ("apigateway", "GetRestApis"): 1,
                              ("apigateway", "GetStages"): 1}
    proxy.reset()
    assert proxy.counts() == {}


def test_forwarded_keeps_each_request_body_and_answer_size_in_order(proxy, moto):
    client("dynamodb", moto).create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                                          AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                                          KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}])
    dynamodb = client("dynamodb", proxy.url)
    dynamodb.put_item(TableName="t", Item={"k": {"S": "1"}, "v": {"S": "x" * 3000}})
    item = dynamodb.get_item(TableName="t", Key={"k": {"S": "1"}})["Item"]
    proxy.add_fault("dynamodb", "GetItem", status=400, error_code="ThrottlingException")
    error_of(dynamodb.get_item, TableName="t", Key={"k": {"S": "1"}})

    put, get = proxy.forwarded()  # the faulted call never reached moto
    assert (put.service, put.operation, get.operation) == ("dynamodb", "PutItem", "GetItem")
    assert json.loads(put.body)["Item"]["v"]["S"] == "x" * 3000
    assert item["v"]["S"] == "x" * 3000 and 3000 < get.answer_bytes < 3200  # the item as JSON
    proxy.reset()
    assert proxy.forwarded() == []


def test_injected_secrets_manager_errors_reach_the_sdk_then_clear(proxy, moto):
    client("secretsmanager", moto).create_secret(Name="apicp", SecretString="s3cret")
    secrets = client("secretsmanager", proxy.url)
    proxy.add_fault("secretsmanager", "GetSecretValue", status=400, error_code="ThrottlingException")
    proxy.add_fault("secretsmanager", status=500, error_code="InternalServiceError")

    throttled = error_of(secrets.get_secret_value, SecretId="apicp")
    assert (throttled["Error"]["Code"], throttled["ResponseMetadata"]["HTTPStatusCode"]) == ("ThrottlingException", 400)
    failed = error_of(secrets.get_secret_value, SecretId="apicp")
    assert (failed["Error"]["Code"], failed["ResponseMetadata"]["HTTPStatusCode"]) == ("InternalServiceError", 500)
    assert secrets.get_secret_value(SecretId="apicp")["SecretString"] == "s3cret"
    assert proxy.counts() == {("secretsmanager", "GetSecretValue"): 3}


def cloudwatch_signature() -> dict[str, str]:
    """A SigV4 Authorization header naming CloudWatch (`monitoring`) in REGION: what the proxy identifies calls by."""
    today = datetime.now(timezone.utc)
    return {"Authorization": f"AWS4-HMAC-SHA256 Credential=testing/{today:%Y%m%d}/{REGION}/monitoring/aws4_request, "
                             "SignedHeaders=host, Signature=0"}


def cloudwatch_cbor(proxy_url: str, operation: str, request: dict) -> tuple[requests.Response, dict]:
    """A CloudWatch call in RPC v2 CBOR, as the agent's SDK sends it (botocore speaks JSON to CloudWatch)."""
    headers = {**cloudwatch_signature(), "smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor",
               "Accept": "application/cbor"}
    answer = requests.post(f"{proxy_url}/service/GraniteServiceVersion20100801/operation/{operation}",
                           data=CBOREncoder().encode(request), headers=headers, timeout=10)
    return answer, CBORDecoder().decode(answer.content) if answer.content else {}


def test_a_rewrite_changes_the_next_answers_of_one_operation_then_clears(proxy, moto):
    # RPC v2 CBOR, as the agent's CloudWatch client speaks it: decoded, edited and encoded again.
    now = datetime.now(timezone.utc).replace(microsecond=0)
    client("cloudwatch", proxy.url).put_metric_data(
        Namespace="AWS/ApiGateway", MetricData=[{"MetricName": "Count", "Value": 3, "Timestamp": now - timedelta(minutes=2)}])
    proxy.add_rewrite("monitoring", "GetMetricData", "StatusCode", "Complete", "PartialData")
    query = {"Id": "q", "MetricStat": {"Metric": {"Namespace": "AWS/ApiGateway", "MetricName": "Count"},
                                       "Period": 60, "Stat": "Sum"}}

    def read() -> dict:
        answer, body = cloudwatch_cbor(proxy.url, "GetMetricData", {
            "StartTime": now - timedelta(minutes=5), "EndTime": now, "MetricDataQueries": [query]})
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/cbor", answer.content
        assert int(answer.headers["Content-Length"]) == len(answer.content)
        return body["MetricDataResults"][0]

    partial, complete = read(), read()
    assert [partial["StatusCode"], complete["StatusCode"]] == ["PartialData", "Complete"]
    # Everything else survives the round trip: values and timestamps (CBOR tag 1) alike.
    assert partial["Values"] == complete["Values"] == [3.0]
    assert partial["Timestamps"] == complete["Timestamps"] == [now - timedelta(minutes=2)]
    assert proxy.counts() == {("monitoring", "PutMetricData"): 1, ("monitoring", "GetMetricData"): 2}


def test_a_rewrite_speaks_json_too(proxy, moto):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    cloudwatch = client("cloudwatch", proxy.url)  # botocore: awsJson1_0
    proxy.add_rewrite("monitoring", "GetMetricData", "StatusCode", "Complete", "PartialData")

    def status() -> str:
        return cloudwatch.get_metric_data(
            StartTime=now - timedelta(minutes=5), EndTime=now,
            MetricDataQueries=[{"Id": "q", "MetricStat": {"Metric": {"Namespace": "AWS/ApiGateway", "MetricName": "Count"},
                                                          "Period": 60, "Stat": "Sum"}}])["MetricDataResults"][0]["StatusCode"]

    assert [status(), status()] == ["PartialData", "Complete"]


def test_cloudwatch_errors_in_cbor_carry_the_awsquery_code(proxy, moto):
    proxy.add_fault("monitoring", "ListMetrics", status=400, error_code="Throttling", message="Rate exceeded")
    answer, body = cloudwatch_cbor(proxy.url, "ListMetrics", {})
    assert answer.status_code == 400 and answer.headers["smithy-protocol"] == "rpc-v2-cbor"
    assert body == {"__type": "Throttling", "message": "Rate exceeded"}
    assert answer.headers["x-amzn-query-error"] == "Throttling;Sender"
    answer, body = cloudwatch_cbor(proxy.url, "ListMetrics", {})  # then moto's own CBOR answer
    assert answer.status_code == 200 and body.get("Metrics", []) == []


def test_a_rewrite_speaks_awsquery_too(proxy, moto):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    form = {"Action": "GetMetricData", "Version": "2010-08-01",
            "StartTime": (now - timedelta(minutes=5)).isoformat(), "EndTime": now.isoformat(),
            "MetricDataQueries.member.1.Id": "q",
            "MetricDataQueries.member.1.MetricStat.Metric.Namespace": "AWS/ApiGateway",
            "MetricDataQueries.member.1.MetricStat.Metric.MetricName": "Count",
            "MetricDataQueries.member.1.MetricStat.Period": "60",
            "MetricDataQueries.member.1.MetricStat.Stat": "Sum"}
    signed = cloudwatch_signature()
    proxy.add_rewrite("monitoring", "GetMetricData", "StatusCode", "Complete", "PartialData")

    def status() -> str:
        answer = requests.post(proxy.url, data=form, headers=signed, timeout=10)
        assert answer.status_code == 200, answer.text
        assert int(answer.headers["Content-Length"]) == len(answer.content)
        return answer.text.split("<StatusCode>")[1].split("<")[0]

    assert [status(), status()] == ["PartialData", "Complete"]


def test_injected_errors_take_each_protocols_shape(proxy):
    proxy.add_fault("sts", status=403, error_code="ExpiredToken", message="The security token has expired")
    proxy.add_fault("apigateway", "GetRestApis", status=503, error_code="ServiceUnavailableException", count=2)
    proxy.add_fault("dynamodb", "ListTables", status=400, error_code="ProvisionedThroughputExceededException")

    sts = error_of(client("sts", proxy.url).get_caller_identity)  # awsQuery: XML ErrorResponse
    assert sts["Error"]["Code"] == "ExpiredToken" and sts["Error"]["Message"] == "The security token has expired"
    apigateway = client("apigateway", proxy.url)  # restJson1: x-amzn-ErrorType
    for _ in range(2):
        assert error_of(apigateway.get_rest_apis)["Error"]["Code"] == "ServiceUnavailableException"
    assert apigateway.get_rest_apis()["items"] == []
    dynamodb = error_of(client("dynamodb", proxy.url).list_tables)  # awsJson1_0: __type
    assert dynamodb["Error"]["Code"] == "ProvisionedThroughputExceededException"
    proxy.add_fault("monitoring", "ListMetrics", status=400, error_code="LimitExceeded", message="m" * 300)
    cloudwatch = error_of(client("cloudwatch", proxy.url).list_metrics)  # this botocore speaks JSON to CloudWatch
    assert (cloudwatch["Error"]["Code"], cloudwatch["Error"]["Message"]) == ("LimitExceeded", "m" * 300)
    assert proxy.counts()[("monitoring", "ListMetrics")] == 1


def test_unreachable_upstream_is_a_502():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with AwsProxy(f"http://127.0.0.1:{closed_port}") as proxy:
        answer = requests.get(proxy.url + "/restapis")
        assert answer.status_code == 502 and "unreachable" in json.loads(answer.content)["message"]


def test_v2_deployments_are_served_as_the_api_reference_describes(proxy, moto):
    v2 = client("apigatewayv2", proxy.url)
    api = v2.create_api(Name="orders", ProtocolType="HTTP")["ApiId"]
    v2.create_stage(ApiId=api, StageName="prod")
    assert "DeploymentId" not in v2.get_stages(ApiId=api)["Items"][0], "a stage without a deployment serves nothing"

    first = v2.create_deployment(ApiId=api, StageName="prod")
    assert first["DeploymentStatus"] == "DEPLOYED"
    assert v2.get_stages(ApiId=api)["Items"][0]["DeploymentId"] == first["DeploymentId"]
    second = v2.create_deployment(ApiId=api, StageName="prod")
    assert v2.get_stage(ApiId=api, StageName="prod")["DeploymentId"] == second["DeploymentId"], "redeployed"
    assert {d["DeploymentId"] for d in v2.get_deployments(ApiId=api)["Items"]} == {
        first["DeploymentId"], second["DeploymentId"]}

    code = lambda call, **kwargs: error_of(call, **kwargs)["Error"]["Code"]  # noqa: E731
    assert code(v2.delete_deployment, ApiId=api, DeploymentId=second["DeploymentId"]) == "BadRequestException"
    v2.delete_deployment(ApiId=api, DeploymentId=first["DeploymentId"])
    assert code(v2.create_deployment, ApiId=api, StageName="missing") == "NotFoundException"
    assert code(v2.create_deployment, ApiId="nosuchapi", StageName="prod") == "NotFoundException"


def test_an_auto_deploy_stage_is_deployed_at_once_and_after_each_route_change(proxy, moto):
    v2 = client("apigatewayv2", proxy.url)
    api = v2.create_api(Name="chat", ProtocolType="WEBSOCKET", RouteSelectionExpression="$request.body.action")["ApiId"]
    v2.create_stage(ApiId=api, StageName="live", AutoDeploy=True)
    initial = v2.get_stages(ApiId=api)["Items"][0]["DeploymentId"]

    v2.create_route(ApiId=api, RouteKey="$connect")

    assert v2.get_stages(ApiId=api)["Items"][0]["DeploymentId"] != initial
    v2.delete_stage(ApiId=api, StageName="live")
    v2.create_stage(ApiId=api, StageName="live")
    assert "DeploymentId" not in v2.get_stages(ApiId=api)["Items"][0], "a re-created stage starts empty"


def test_v2_listings_come_in_pages_linked_by_next_token(proxy, moto):
    v2 = client("apigatewayv2", proxy.url)
    created = [v2.create_api(Name=f"api{n}", ProtocolType="HTTP")["ApiId"] for n in range(5)]
    first = v2.get_apis(MaxResults="2")
    assert len(first["Items"]) == 2 and first["NextToken"]
    second = v2.get_apis(MaxResults="2", NextToken=first["NextToken"])
    third = v2.get_apis(MaxResults="2", NextToken=second["NextToken"])
    assert len(third["Items"]) == 1 and "NextToken" not in third
    assert [a["ApiId"] for a in first["Items"] + second["Items"] + third["Items"]] == [
        a["ApiId"] for a in v2.get_apis()["Items"]]
    assert {a["ApiId"] for a in v2.get_apis()["Items"]} == set(created)

    proxy.listing_pages.page_size = 1  # caps pages below maxResults
    try:
        stages = [v2.create_stage(ApiId=created[0], StageName=name) for name in ("a", "b")]
        page = v2.get_stages(ApiId=created[0], MaxResults="500")
        assert len(stages) == 2 and len(page["Items"]) == 1 and page["NextToken"]
        code = lambda call, **kwargs: error_of(call, **kwargs)["Error"]["Code"]  # noqa: E731
        # A token belongs to its listing; a made-up one is refused as AWS refuses it.
        assert code(v2.get_stages, ApiId=created[1], NextToken=page["NextToken"]) == "BadRequestException"
        assert code(v2.get_apis, NextToken="not-a-token") == "BadRequestException"
        assert code(v2.get_apis, MaxResults="0") == "BadRequestException"
    finally:
        proxy.listing_pages.page_size = None


def test_rest_listings_come_25_to_a_page_unless_a_limit_up_to_500_is_asked(proxy, moto, clock):
    apigateway = client("apigateway", proxy.url)
    created = []
    for n in range(30):
        created.append(apigateway.create_rest_api(name=f"api{n}")["id"])
        clock.now += 1  # within the management quota
    first = apigateway.get_rest_apis()
    assert len(first["items"]) == 25 and first["position"]
    rest = apigateway.get_rest_apis(position=first["position"])
    assert len(rest["items"]) == 5 and "position" not in rest
    assert [a["id"] for a in first["items"] + rest["items"]] == [a["id"] for a in apigateway.get_rest_apis(limit=500)[
        "items"]]
    assert {a["id"] for a in apigateway.get_rest_apis(limit=500)["items"]} == set(created)
    assert error_of(apigateway.get_rest_apis, limit=501)["Error"]["Code"] == "BadRequestException"
    assert error_of(apigateway.get_domain_names, position="made-up")["Error"]["Code"] == "BadRequestException"


def test_seeding_outside_the_quota_is_neither_throttled_nor_counted(proxy, moto):
    apigateway = client("apigateway", proxy.url)
    with proxy.unmetered():
        for _ in range(APIGATEWAY_BURST + 5):
            apigateway.get_rest_apis()
    assert proxy.counts() == {}
    apigateway.get_rest_apis()
    assert proxy.counts() == {("apigateway", "GetRestApis"): 1}


def cloudwatch_query(proxy_url, action="ListMetrics"):
    """A CloudWatch call in the awsQuery form older SDKs send (the agent speaks RPC v2 CBOR, botocore JSON)."""
    return requests.post(proxy_url, data={"Action": action, "Version": "2010-08-01"}, headers=cloudwatch_signature(),
                         timeout=10)


def test_random_throttling_answers_each_services_throttling_error_unforwarded(proxy, moto):
    proxy.set_throttling(1, rate=1.0)
    apigateway = client("apigateway", proxy.url)

    throttled = error_of(apigateway.create_rest_api, name="pets")
    assert throttled["Error"] == {"Code": "TooManyRequestsException", "Message": "Too Many Requests"}
    assert throttled["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert throttled["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
    assert error_of(client("apigatewayv2", proxy.url).get_apis)["Error"]["Code"] == "TooManyRequestsException"
    cloudwatch = error_of(client("cloudwatch", proxy.url).list_metrics)  # botocore: JSON, the agent: RPC v2 CBOR
    assert (cloudwatch["Error"]["Code"], cloudwatch["ResponseMetadata"]["HTTPStatusCode"]) == ("Throttling", 400)
    assert cloudwatch["ResponseMetadata"]["HTTPHeaders"]["x-amzn-query-error"] == "Throttling;Sender"
    query = cloudwatch_query(proxy.url)  # awsQuery: an XML ErrorResponse
    assert query.status_code == 400 and "<Code>Throttling</Code><Message>Rate exceeded</Message>" in query.text
    client("dynamodb", proxy.url).list_tables()  # not listed: forwarded

    assert client("apigateway", moto).get_rest_apis()["items"] == []  # never reached moto
    assert proxy.throttled() == {("apigateway", "POST /restapis"): 1, ("apigateway", "GetApis"): 1,
                                 ("monitoring", "ListMetrics"): 2}
    proxy.set_throttling(1, rate=0.0)
    assert apigateway.create_rest_api(name="pets")["name"] == "pets"
    assert client("cloudwatch", proxy.url).list_metrics()["Metrics"] == []
    assert cloudwatch_query(proxy.url).status_code == 200
    proxy.set_throttling(1, rate=1.0)
    proxy.reset()  # turns it off
    assert apigateway.get_rest_apis()["items"][0]["name"] == "pets" and proxy.throttled() == {}


def test_dynamodb_and_other_services_throttle_in_their_own_words(proxy, moto):
    proxy.set_throttling(1, rate=1.0, services=("dynamodb", "sts"))
    dynamodb = client("dynamodb", proxy.url)
    assert error_of(dynamodb.get_item, TableName="t", Key={"k": {"S": "1"}})["Error"]["Code"] == \
        "ProvisionedThroughputExceededException"
    assert error_of(dynamodb.describe_table, TableName="t")["Error"]["Code"] == "ThrottlingException"
    assert error_of(client("sts", proxy.url).get_caller_identity)["Error"]["Code"] == "Throttling"  # awsQuery
    with pytest.raises(ValueError):
        proxy.set_throttling(1, rate=1.5)
    with pytest.raises(ValueError):
        proxy.set_throttling(1, rate=0.5, services="apigateway")


def throttled_list_tables(proxy, calls):
    """Which of `calls` ListTables calls were throttled."""
    dynamodb, outcomes = client("dynamodb", proxy.url), []
    for _ in range(calls):
        try:
            dynamodb.list_tables()
            outcomes.append(False)
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ThrottlingException"
            outcomes.append(True)
    return outcomes


def throttling_run(proxy, seed, calls=200, rate=0.3):
    """Which of `calls` ListTables calls were throttled at random under `seed`."""
    proxy.reset()
    proxy.set_throttling(seed, rate, services=("dynamodb",))
    outcomes = throttled_list_tables(proxy, calls)
    assert proxy.throttled().get(("dynamodb", "ListTables"), 0) == sum(outcomes)
    return outcomes


def test_random_throttling_is_reproducible_from_its_seed_and_near_its_rate(proxy):
    outcomes = throttling_run(proxy, seed=7)

    assert throttling_run(proxy, seed=7) == outcomes
    assert throttling_run(proxy, seed=8) != outcomes
    assert 0.2 * len(outcomes) <= sum(outcomes) <= 0.4 * len(outcomes)


def test_seeding_meets_no_random_throttling_nor_shifts_its_sequence(proxy):
    expected = throttling_run(proxy, seed=3, calls=20, rate=0.5)
    proxy.reset()
    proxy.set_throttling(3, rate=0.5, services=("apigateway", "dynamodb"))
    with proxy.unmetered():
        for _ in range(10):
            client("apigateway", proxy.url).get_rest_apis()
            client("dynamodb", proxy.url).list_tables()
    assert proxy.throttled() == {}
    assert throttled_list_tables(proxy, 20) == expected


def assume(proxy_url: str, role_arn: str, external_id: str | None = None) -> dict:
    sts = client("sts", proxy_url)
    extra = {"ExternalId": external_id} if external_id else {}
    return sts.assume_role(RoleArn=role_arn, RoleSessionName="apicp-agent", **extra)["Credentials"]


def member_role(moto: str, account: str, trust: dict) -> str:
    """A role in `account`, created there as its own admin would."""
    iam = Accounts(moto).admin_session(account, REGION).client("iam", endpoint_url=moto)
    return iam.create_role(RoleName="ApicpAgentReader", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def test_assume_role_is_refused_unless_the_role_exists_and_trusts_the_caller_with_its_external_id(proxy, moto):
    role_arn = "arn:aws:iam::111111111111:role/ApicpAgentReader"
    with pytest.raises(ClientError) as missing:
        assume(proxy.url, role_arn)
    assert missing.value.response["Error"]["Code"] == "AccessDenied"
    assert "not authorized to perform: sts:AssumeRole on resource: " + role_arn in str(missing.value)
    member_role(moto, "111111111111", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": "hub-42"}}}]})
    for external_id in (None, "hub-41"):
        with pytest.raises(ClientError) as refused:
            assume(proxy.url, role_arn, external_id)
        assert refused.value.response["Error"]["Code"] == "AccessDenied", external_id
    issued = assume(proxy.url, role_arn, "hub-42")
    # The credentials act in the role's account: moto keeps its resources apart, the proxy knows the key's account.
    assert proxy.accounts.account_of(issued["AccessKeyId"]) == "111111111111"
    member = boto3.client("apigateway", endpoint_url=proxy.url, region_name=REGION, aws_access_key_id=issued[
        "AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"], aws_session_token=issued["SessionToken"])
    member.create_rest_api(name="in-member")
    assert [api["name"] for api in member.get_rest_apis()["items"]] == ["in-member"]
    assert client("apigateway", proxy.url).get_rest_apis()["items"] == [], "the home account holds none"
    # A role that trusts another account admits no one here.
    member_role(moto, "222222222222", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "sts:AssumeRole"}]})
    with pytest.raises(ClientError):
        assume(proxy.url, "arn:aws:iam::222222222222:role/ApicpAgentReader")


def test_api_gateway_quota_is_each_account_regions_own(proxy, moto, clock):
    member_role(moto, "111111111111", {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": "123456789012"}, "Action": "sts:AssumeRole"}]})
    issued = assume(proxy.url, "arn:aws:iam::111111111111:role/ApicpAgentReader")
    member = boto3.client("apigateway", endpoint_url=proxy.url, region_name=REGION, config=NO_RETRIES,
                          aws_access_key_id=issued["AccessKeyId"], aws_secret_access_key=issued["SecretAccessKey"],
                          aws_session_token=issued["SessionToken"])
    home = client("apigateway", proxy.url)
    for _ in range(40):
        home.get_rest_apis()
    with pytest.raises(ClientError) as throttled:
        home.get_rest_apis()
    assert throttled.value.response["Error"]["Code"] == "TooManyRequestsException"
    member.get_rest_apis()  # another account's quota is untouched
    client("apigateway", proxy.url, region="eu-west-1").get_rest_apis()  # and so is another region's
