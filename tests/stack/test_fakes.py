"""Tests of the test fakes themselves (fake_apicp.py, fake_cloudtrail.py), not of the agent.

They pin down the strictness the agent's tests rely on: the fakes must reject what the real
services reject, so a green agent test means something.
"""

import base64
import json
import time

import pytest
import requests

from fake_apicp import FakeControlPlane
from fake_cloudtrail import FakeCloudTrail

USERNAME = "agent-user"
PASSWORD = "s3cret-Passw0rd"
RUNTIME_TYPE = "AWS_API_GATEWAY"
RUNTIMES = "/api/assetcatalog/v2/runtimes"
BULK_HEARTBEATS = "/api/engine/v2/runtimes/heartbeats/bulk"


@pytest.fixture
def apicp():
    with FakeControlPlane(
        username=USERNAME, password=PASSWORD, runtime_types=[RUNTIME_TYPE]
    ) as fake:
        yield fake


@pytest.fixture
def client(apicp):
    session = requests.Session()
    session.auth = (USERNAME, PASSWORD)
    session.base_url = apicp.url
    return session


def runtime_body(**overrides):
    body = {
        "name": "aws-eu-west-1",
        "type": RUNTIME_TYPE,
        "deploymentType": "PUBLIC_CLOUD",
        "region": "eu-west-1",
        "tags": ["aws"],
    }
    return {**body, **overrides}


def register_runtime(client, **overrides):
    response = client.post(client.base_url + RUNTIMES, json=runtime_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def apis_url(client, runtime_id, api_id=None):
    url = f"{client.base_url}/api/assetcatalog/v1/runtimes/{runtime_id}/apis"
    return url if api_id is None else f"{url}/{api_id}"


def assert_rejected(response, status, *fragments):
    assert response.status_code == status, response.text
    details = response.json()["errorDetails"]
    for fragment in fragments:
        assert any(fragment in detail for detail in details), (fragment, details)


# --- APICP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, (USERNAME, "wrong"), ("someone", PASSWORD)])
def test_apicp_requires_basic_auth(apicp, auth):
    response = requests.get(apicp.url + RUNTIMES, auth=auth)
    assert response.status_code == 401
    assert response.content == b""


def test_runtime_registration_conflict_answers_existing_runtime(client):
    created = client.post(client.base_url + RUNTIMES, json=runtime_body())
    assert created.status_code == 201
    runtime = created.json()
    assert runtime["owner"] == {"name": USERNAME, "type": "USER"}
    assert runtime["created"] == runtime["lastModified"]

    again = client.post(client.base_url + RUNTIMES, json=runtime_body(description="changed"))
    assert again.status_code == 409
    assert again.json() == runtime
    by_id = client.post(client.base_url + RUNTIMES, json=runtime_body(id=runtime["id"], name="x"))
    assert by_id.status_code == 409
    assert by_id.json() == runtime


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"name": "n" * 51}, "name: "),
        ({"tags": ["has space"]}, "tags[0]: "),
        ({"type": "NO_SUCH_TYPE"}, "NO_SUCH_TYPE"),
        ({"deploymentType": "CLOUD"}, "deploymentType: "),
    ],
)
def test_invalid_runtime_is_rejected(client, overrides, fragment):
    response = client.post(client.base_url + RUNTIMES, json=runtime_body(**overrides))
    assert_rejected(response, 400, fragment)


def test_body_must_be_well_formed_json(client):
    url = client.base_url + RUNTIMES
    response = client.post(
        url, data=json.dumps(runtime_body()), headers={"Content-Type": "text/plain"}
    )
    assert_rejected(response, 415, "Content-Type")
    response = client.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert_rejected(response, 400, "deserialize")


@pytest.mark.parametrize(
    "document, fragment",
    [
        ({"name": "pets"}, "'type' is a required property"),
        ({"name": "pets", "type": "FOO"}, "type: 'FOO' is not one of"),
    ],
)
def test_invalid_api_document_is_rejected(client, document, fragment):
    runtime_id = register_runtime(client)
    assert_rejected(client.post(apis_url(client, runtime_id), json=document), 400, fragment)


@pytest.mark.parametrize(
    "query, fragment", [("page=0", "query parameter page"), ("size=501", "query parameter size")]
)
def test_api_paging_limits_are_enforced(client, query, fragment):
    runtime_id = register_runtime(client)
    assert_rejected(client.get(f"{apis_url(client, runtime_id)}?{query}"), 400, fragment)


def test_api_lifecycle(client, apicp):
    runtime_id = register_runtime(client)
    document = {"id": "api-1", "name": "pets", "type": "REST", "version": "v1"}

    created = client.post(apis_url(client, runtime_id), json=document)
    assert created.status_code == 201
    assert created.json()["apiId"] == "api-1"
    assert created.json()["apiDocument"] == document
    assert_rejected(client.post(apis_url(client, runtime_id), json=document), 409, "api-1")
    assert_rejected(client.post(apis_url(client, "no-runtime"), json=document), 404, "no-runtime")

    updated = client.put(
        apis_url(client, runtime_id, "api-1"), json={**document, "id": "other", "version": "v2"}
    )
    assert updated.status_code == 200
    assert updated.json()["apiDocument"] == {**document, "version": "v2"}
    assert updated.json()["created"] == created.json()["created"]
    assert client.get(apis_url(client, runtime_id, "api-1")).json() == updated.json()

    deleted = client.delete(apis_url(client, runtime_id, "api-1"))
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert_rejected(client.get(apis_url(client, runtime_id, "api-1")), 404, "api-1")
    assert_rejected(client.put(apis_url(client, runtime_id, "api-1"), json=document), 404, "api-1")
    assert_rejected(client.delete(apis_url(client, runtime_id, "api-1")), 404, "api-1")
    assert apicp.state()["apis"] == {runtime_id: {}}


def test_api_paging_returns_every_api_once(client):
    runtime_id = register_runtime(client)
    for index in range(45):
        response = client.post(
            apis_url(client, runtime_id), json={"name": f"api-{index}", "type": "REST"}
        )
        assert response.status_code == 201

    pages = [
        client.get(apis_url(client, runtime_id), params={"page": page, "size": 20}).json()
        for page in (1, 2, 3, 4)
    ]
    assert [len(page) for page in pages] == [20, 20, 5, 0]
    ids = [document["id"] for page in pages for document in page]
    assert len(ids) == len(set(ids)) == 45


def test_bulk_heartbeat_for_unknown_runtime_is_rejected(client, apicp):
    runtime_id = register_runtime(client)
    heartbeats = [
        {"runtimeId": runtime_id, "created": 1723041035000, "active": 1},
        {"runtimeId": "ghost", "created": 1723041035000, "active": 1},
    ]
    assert_rejected(client.post(client.base_url + BULK_HEARTBEATS, json=heartbeats), 400, "ghost")
    assert apicp.state()["heartbeats"] == []

    accepted = client.post(client.base_url + BULK_HEARTBEATS, json=heartbeats[:1])
    assert (accepted.status_code, accepted.json()) == (200, heartbeats[:1])
    [recorded] = apicp.state()["heartbeats"]
    assert (recorded["runtimeId"], recorded["created"], recorded["active"]) == (
        runtime_id,
        1723041035000,
        1,
    )


def test_metrics_are_accepted_and_recorded(client, apicp):
    runtime_id = register_runtime(client)
    metrics = {
        "timestamp": 1707114619000,
        "runtimeTransactionMetrics": {"apiMetrics": {"transactionCount": 3}},
    }
    url = f"{client.base_url}/api/engine/v2/runtimes/{runtime_id}/metrics"

    response = client.post(url, json=metrics)
    assert (response.status_code, response.content) == (202, b"")
    [recorded] = apicp.state()["metrics"]
    assert (recorded["runtimeId"], recorded["body"]) == (runtime_id, metrics)
    assert_rejected(client.post(url.replace(runtime_id, "ghost"), json=metrics), 404, "ghost")


def test_injected_fault_answers_twice_then_clears(client):
    fault = {"method": "POST", "path": "/v2/runtimes$", "status": 503, "count": 2, "delay_ms": 0}
    assert requests.post(client.base_url + "/_fake/faults", json=fault).status_code == 201

    statuses = [
        client.post(client.base_url + RUNTIMES, json=runtime_body()).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 201]


def test_credentials_never_recorded(client, apicp):
    register_runtime(client)
    requests.get(apicp.url + RUNTIMES, auth=(USERNAME, "wrong-" + PASSWORD))
    client.get(client.base_url + RUNTIMES, params={"page": 1})

    recorded = requests.get(apicp.url + "/_fake/requests").json()
    assert [r["status"] for r in recorded] == [201, 401, 200]
    assert recorded[2]["query"] == {"page": ["1"]}
    dump = json.dumps([recorded, apicp.state()])
    encoded = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, encoded, "Authorization", "Basic "):
        assert secret not in dump


# --- CloudTrail ------------------------------------------------------------------------------

LOOKUP_EVENTS = "CloudTrail_20131101.LookupEvents"
SIGV4 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/cloudtrail/aws4_request"


@pytest.fixture
def cloudtrail():
    with FakeCloudTrail(rate_per_second=1000) as fake:
        yield fake


def lookup(fake, body, target=LOOKUP_EVENTS, authorization=SIGV4):
    headers = {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}
    if authorization:
        headers["Authorization"] = authorization
    return requests.post(fake.url + "/", data=json.dumps(body), headers=headers)


def assert_aws_error(response, status, error_type):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert response.json()["__type"] == error_type


def test_cloudtrail_requires_sigv4_and_known_target(cloudtrail):
    assert_aws_error(
        lookup(cloudtrail, {}, authorization=None), 403, "MissingAuthenticationTokenException"
    )
    assert_aws_error(
        lookup(cloudtrail, {}, target="CloudTrail_20131101.GetTrail"),
        400,
        "UnknownOperationException",
    )
    prefixed = lookup(cloudtrail, {}, target="com.amazonaws.cloudtrail.v20131101." + LOOKUP_EVENTS)
    assert (prefixed.status_code, prefixed.json()) == (200, {"Events": []})


@pytest.mark.parametrize(
    "body, error_type",
    [
        (
            {
                "LookupAttributes": [
                    {"AttributeKey": "EventName", "AttributeValue": "CreateRestApi"},
                    {"AttributeKey": "ReadOnly", "AttributeValue": "false"},
                ]
            },
            "InvalidLookupAttributesException",
        ),
        (
            {"LookupAttributes": [{"AttributeKey": "Bogus", "AttributeValue": "x"}]},
            "InvalidLookupAttributesException",
        ),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"MaxResults": 0}, "InvalidMaxResultsException"),
        ({"StartTime": 200, "EndTime": 100}, "InvalidTimeRangeException"),
        ({"NextToken": "made-up"}, "InvalidNextTokenException"),
    ],
)
def test_cloudtrail_rejects_invalid_lookups(cloudtrail, body, error_type):
    assert_aws_error(lookup(cloudtrail, body), 400, error_type)


def test_cloudtrail_pages_every_event_once_newest_first(cloudtrail):
    base = 1_700_000_000
    for offset in range(23):
        cloudtrail.add_event(
            "UpdateStage", eventTime=base + offset, requestParameters={"n": offset}
        )
    cloudtrail.add_event("GetRestApis", eventTime=base + 5, readOnly=True)

    attributes = [{"AttributeKey": "ReadOnly", "AttributeValue": "false"}]
    events, token = [], None
    while True:
        body = {
            "LookupAttributes": attributes,
            "MaxResults": 10,
            **({"NextToken": token} if token else {}),
        }
        response = lookup(cloudtrail, body).json()
        events += response["Events"]
        token = response.get("NextToken")
        if token is None:
            break

    times = [event["EventTime"] for event in events]
    assert times == sorted(times, reverse=True) and len(times) == 23
    assert len({event["EventId"] for event in events}) == 23
    record = json.loads(events[0]["CloudTrailEvent"])
    assert record["requestParameters"] == {"n": 22}
    assert record["readOnly"] is False and record["eventSource"] == "apigateway.amazonaws.com"
    # A token only continues the query that issued it.
    first = lookup(cloudtrail, {"LookupAttributes": attributes, "MaxResults": 10}).json()
    assert_aws_error(
        lookup(cloudtrail, {"NextToken": first["NextToken"]}), 400, "InvalidNextTokenException"
    )


def test_cloudtrail_filters_by_time_range(cloudtrail):
    for event_time in (100, 200, 300, 400):
        cloudtrail.add_event("CreateDeployment", eventTime=event_time)
    response = lookup(cloudtrail, {"StartTime": 200, "EndTime": 300.5}).json()
    assert [event["EventTime"] for event in response["Events"]] == [300, 200]


def test_cloudtrail_throttles_third_request_in_a_second():
    with FakeCloudTrail() as fake:
        statuses = [lookup(fake, {}).status_code for _ in range(2)]
        assert statuses == [200, 200]
        assert_aws_error(lookup(fake, {}), 400, "ThrottlingException")
        time.sleep(1.05)
        assert lookup(fake, {}).status_code == 200
        assert len(fake.requests()) == 4
