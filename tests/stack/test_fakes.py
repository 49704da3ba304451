"""Tests of the test fakes themselves (fake_apicp.py, fake_cloudtrail.py, lambda_adapter.py,
run-execution.mjs), not of the agent.

They pin down the strictness the agent's tests rely on: the fakes must reject what the real
services reject, so a green agent test means something.
"""

import base64
import collections
import contextlib
import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

import fake_apicp
from fake_apicp import SPEC_NAMES, UNKNOWN_API_BEHAVIOURS, FakeControlPlane
from fake_cloudtrail import FakeCloudTrail
from lambda_adapter import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, LambdaAdapter
from local_server import LocalServer, send_json

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


def test_injected_fault_can_let_the_first_requests_pass(client):
    fault = {"method": "POST", "path": "/v2/runtimes$", "status": 503, "skip": 1}
    assert requests.post(client.base_url + "/_fake/faults", json=fault).status_code == 201

    statuses = [
        client.post(client.base_url + RUNTIMES, json=runtime_body()).status_code for _ in range(3)
    ]
    assert statuses == [201, 503, 409]


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


def test_contract_documents_come_from_inside_the_repository(monkeypatch, tmp_path):
    monkeypatch.delenv("APICP_OPENAPI_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may be found relative to the working directory
    repo = Path(fake_apicp.__file__).resolve().parents[2]
    directory = fake_apicp.spec_dir()
    assert directory == repo / "tests" / "stack" / "apicp-openapi"
    assert sorted(p.name for p in directory.glob("*.yaml")) == sorted(f"{n}.yaml" for n in SPEC_NAMES)
    assert "14be00ef" in (directory / "README.md").read_text()
    with FakeControlPlane() as fake:  # loads and routes every document
        assert requests.get(fake.url + RUNTIMES).status_code == 401


def create_apis(client, runtime_id, count):
    for index in range(count):
        response = client.post(
            apis_url(client, runtime_id), json={"id": f"api-{index:03}", "name": "n", "type": "REST"}
        )
        assert response.status_code == 201, response.text


def page_lengths(client, runtime_id, size):
    """Lengths of the pages served for `size` until the first empty one, and every id served."""
    lengths, ids = [], []
    for page in range(1, 20):
        documents = client.get(apis_url(client, runtime_id), params={"page": page, "size": size}).json()
        lengths.append(len(documents))
        ids += [document["id"] for document in documents]
        if not documents:
            return lengths, ids
    raise AssertionError("paging never ended")


def test_api_pages_are_capped_below_the_size_asked(client):
    runtime_id = register_runtime(client)
    create_apis(client, runtime_id, 230)

    lengths, ids = page_lengths(client, runtime_id, 500)
    assert lengths == [100, 100, 30, 0]
    assert ids == [f"api-{index:03}" for index in range(230)]
    assert page_lengths(client, runtime_id, 20)[0][:2] == [20, 20]  # below the cap, as asked


def test_page_size_cap_is_configurable(apicp, client):
    runtime_id = register_runtime(client)
    create_apis(client, runtime_id, 12)

    apicp.set_page_size_cap(5)
    assert page_lengths(client, runtime_id, 500)[0] == [5, 5, 2, 0]
    assert requests.post(apicp.url + "/_fake/settings", json={"page_size_cap": None}).status_code == 200
    assert page_lengths(client, runtime_id, 500)[0] == [12, 0]
    with pytest.raises(ValueError):
        apicp.set_page_size_cap(0)
    with FakeControlPlane(
        username=USERNAME, password=PASSWORD, runtime_types=[RUNTIME_TYPE], page_size_cap=7
    ) as fake:
        fake_client = requests.Session()
        fake_client.auth, fake_client.base_url = (USERNAME, PASSWORD), fake.url
        other_runtime = register_runtime(fake_client)
        create_apis(fake_client, other_runtime, 8)
        assert page_lengths(fake_client, other_runtime, 500)[0] == [7, 1, 0]


# What each mode must answer for PUT and DELETE of an API the runtime does not hold: (status, error body?).
UNKNOWN_API_EXPECTED = {
    "put-404,delete-404": ((404, True), (404, True)),
    "put-400,delete-204": ((400, True), (204, False)),
    "put-creates-200,delete-200": ((200, False), (200, False)),
    "put-creates-201,delete-204": ((201, False), (204, False)),
}


def test_unknown_api_modes_cover_every_plausible_answer():
    assert set(UNKNOWN_API_BEHAVIOURS) == set(UNKNOWN_API_EXPECTED)
    assert {put[0] for put, _ in UNKNOWN_API_EXPECTED.values()} == {404, 400, 200, 201}
    assert {delete[0] for _, delete in UNKNOWN_API_EXPECTED.values()} == {404, 204, 200}
    assert UNKNOWN_API_BEHAVIOURS[0] == fake_apicp.DEFAULT_UNKNOWN_API_BEHAVIOUR == "put-404,delete-404"


@pytest.mark.parametrize("mode", UNKNOWN_API_BEHAVIOURS)
def test_unknown_api_is_answered_as_the_mode_says(apicp, client, mode):
    (put_status, put_error), (delete_status, delete_error) = UNKNOWN_API_EXPECTED[mode]
    runtime_id = register_runtime(client)
    document = {"name": "pets", "type": "REST", "version": "v1"}
    apicp.set_unknown_api_behaviour(mode)

    put = client.put(apis_url(client, runtime_id, "ghost"), json=document)
    assert put.status_code == put_status, put.text
    if put_error:
        assert_rejected(put, put_status, "ghost")
        assert apicp.state()["apis"][runtime_id] == {}
    else:
        assert put.json()["apiDocument"] == {**document, "id": "ghost"}
        assert client.get(apis_url(client, runtime_id, "ghost")).json() == put.json()
        assert client.delete(apis_url(client, runtime_id, "ghost")).status_code == 200  # now known

    deleted = client.delete(apis_url(client, runtime_id, "ghost"))
    if delete_error:
        assert_rejected(deleted, delete_status, "ghost")
    else:
        assert (deleted.status_code, deleted.content) == (delete_status, b"")
    # A runtime that does not exist is never created into, whatever the mode.
    assert_rejected(client.put(apis_url(client, "no-runtime", "ghost"), json=document), 404, "no-runtime")
    assert_rejected(client.delete(apis_url(client, "no-runtime", "ghost")), 404, "no-runtime")


def test_unknown_api_behaviour_is_validated_and_settable_over_http(apicp, client):
    with pytest.raises(ValueError):
        apicp.set_unknown_api_behaviour("put-418")
    url = apicp.url + "/_fake/settings"
    assert requests.post(url, json={"unknown_api_behaviour": "put-418"}).status_code == 400
    assert requests.post(url, json={"unknown_api_behaviour": "put-400,delete-204"}).status_code == 200
    runtime_id = register_runtime(client)
    assert client.delete(apis_url(client, runtime_id, "ghost")).status_code == 204


def test_deleted_runtime_is_unknown_everywhere(client, apicp):
    runtime_id = register_runtime(client)
    document = {"id": "api-1", "name": "pets", "type": "REST"}
    assert client.post(apis_url(client, runtime_id), json=document).status_code == 201
    heartbeat = [{"runtimeId": runtime_id, "created": 1723041035000, "active": 1}]
    assert client.post(client.base_url + BULK_HEARTBEATS, json=heartbeat).status_code == 200
    metrics_url = f"{client.base_url}/api/engine/v2/runtimes/{runtime_id}/metrics"
    metrics = {"timestamp": 1707114619000}
    assert client.post(metrics_url, json=metrics).status_code == 202

    apicp.delete_runtime(runtime_id)
    apicp.set_unknown_api_behaviour("put-creates-201,delete-204")  # must not create into a deleted runtime

    assert runtime_id not in apicp.state()["runtimes"] and runtime_id not in apicp.state()["apis"]
    assert_rejected(client.get(f"{client.base_url}{RUNTIMES}/{runtime_id}"), 404, runtime_id)
    assert_rejected(client.get(apis_url(client, runtime_id)), 404, runtime_id)
    assert_rejected(client.post(apis_url(client, runtime_id), json=document), 404, runtime_id)
    for call in (client.get, client.delete):
        assert_rejected(call(apis_url(client, runtime_id, "api-1")), 404, runtime_id)
    assert_rejected(client.put(apis_url(client, runtime_id, "api-1"), json=document), 404, runtime_id)
    assert_rejected(client.post(client.base_url + BULK_HEARTBEATS, json=heartbeat), 400, runtime_id)
    assert_rejected(client.post(metrics_url, json=metrics), 404, runtime_id)
    assert len(apicp.state()["heartbeats"]) == 1 and len(apicp.state()["metrics"]) == 1

    # Registering again makes a new runtime, empty.
    new_id = register_runtime(client)
    assert new_id != runtime_id and client.get(apis_url(client, new_id)).json() == []
    with pytest.raises(KeyError):
        apicp.delete_runtime(runtime_id)
    assert requests.delete(f"{apicp.url}/_fake/runtimes/{new_id}").status_code == 200
    assert requests.delete(f"{apicp.url}/_fake/runtimes/{new_id}").status_code == 404
    assert apicp.state()["runtimes"] == {}


# --- APICP chaos ---------------------------------------------------------------------------


def metrics_url(client, runtime_id):
    return f"{client.base_url}/api/engine/v2/runtimes/{runtime_id}/metrics"


def raw_post(fake, path, body, timeout=5.0):
    """A POST on a fresh connection, so a reset or a timeout is seen as it happens (no pool retrying)."""
    connection = http.client.HTTPConnection(fake.url.removeprefix("http://"), timeout=timeout)
    token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    try:
        connection.request("POST", path, json.dumps(body),
                           {"Authorization": f"Basic {token}", "Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def chaos_run(apicp, client, seed, count=400, **settings):
    """`count` listings under chaos (slow answers not held); the faults the fake says they met."""
    apicp.reset()
    apicp.set_chaos(seed, slow_ms=0, **settings)
    for _ in range(count):
        with contextlib.suppress(requests.ConnectionError):
            client.get(client.base_url + RUNTIMES)
    recorded = apicp.requests()
    assert len(recorded) == count  # every request reached the fake, none was lost on a reused connection
    return [r["fault"] for r in recorded]


def test_chaos_is_reproducible_from_its_seed_and_near_its_rate(apicp, client):
    faults = chaos_run(apicp, client, seed=7)

    assert chaos_run(apicp, client, seed=7) == faults
    assert chaos_run(apicp, client, seed=8) != faults
    met = [fault for fault in faults if fault]
    assert 0.2 * len(faults) <= len(met) <= 0.4 * len(faults)
    assert set(met) == set(fake_apicp.CHAOS_KINDS)  # each default kind, "reset-before" only when asked
    assert "reset-before" not in fake_apicp.CHAOS_KINDS


def test_chaos_status_faults_store_nothing(apicp, client):
    apicp.set_chaos(1, rate=1.0, kinds=("500", "502", "503", "429"))
    answers = [client.post(client.base_url + RUNTIMES, json=runtime_body()) for _ in range(12)]

    assert {a.status_code for a in answers} == {500, 502, 503, 429}
    for answer in answers:
        assert_rejected(answer, answer.status_code, "injected fault")
        assert answer.headers.get("Retry-After") == ("1" if answer.status_code == 429 else None)
    assert apicp.state()["runtimes"] == {}
    assert [(r["status"], r["fault"], r["processed"]) for r in apicp.requests()] == [
        (a.status_code, str(a.status_code), False) for a in answers
    ]


def test_chaos_reset_loses_the_answer_of_a_stored_report(apicp, client):
    runtime_id = register_runtime(client)
    path = metrics_url(client, runtime_id).removeprefix(apicp.url)
    report = {"timestamp": 1707114619000}
    apicp.set_chaos(1, rate=1.0, kinds=("reset",), path="/metrics$")

    with pytest.raises(ConnectionError):  # ECONNRESET, or closed before the status line
        raw_post(apicp, path, report)
    [recorded] = apicp.requests()[1:]
    assert (recorded["path"], recorded["status"], recorded["fault"], recorded["processed"]) == (
        path, 202, "reset", True)  # the status the handler produced, never sent
    apicp.set_chaos(None)
    assert raw_post(apicp, path, report) == 202  # the client's retry: the report is now stored twice

    stored = collections.Counter((m["runtimeId"], m["body"]["timestamp"]) for m in apicp.state()["metrics"])
    assert stored == {(runtime_id, 1707114619000): 2}
    assert apicp.requests()[-1]["fault"] is None


def test_chaos_slow_answer_outlives_the_client_yet_the_request_is_processed(apicp, client):
    apicp.set_chaos(1, rate=1.0, kinds=("slow",), slow_ms=2000, path=r"/v2/runtimes$")

    with pytest.raises(TimeoutError):
        raw_post(apicp, RUNTIMES, runtime_body(), timeout=0.5)
    [runtime] = apicp.state()["runtimes"].values()
    assert runtime["name"] == runtime_body()["name"]
    assert [(r["status"], r["fault"], r["processed"]) for r in apicp.requests()] == [(201, "slow", True)]
    # The held answer blocks neither the fake's state nor other connections.
    started = time.monotonic()
    assert client.get(f"{client.base_url}{RUNTIMES}/{runtime['id']}").status_code == 200  # path does not match
    assert time.monotonic() - started < 0.5


def test_chaos_reset_before_processing_stores_nothing(apicp, client):
    apicp.set_chaos(1, rate=1.0, kinds=("reset-before",))

    with pytest.raises(ConnectionError):
        raw_post(apicp, RUNTIMES, runtime_body())
    assert apicp.state()["runtimes"] == {}
    assert [(r["status"], r["fault"], r["processed"]) for r in apicp.requests()] == [(0, "reset-before", False)]


def test_targeted_faults_win_over_chaos_and_reset_turns_chaos_off(apicp, client):
    apicp.set_chaos(1, rate=1.0, kinds=("503",))
    apicp.add_fault("/v2/runtimes$", method="POST", status=0)  # a delay of 0: carries on normally
    apicp.add_fault("/v2/runtimes$", method="POST", status=409)

    assert client.post(client.base_url + RUNTIMES, json=runtime_body()).status_code == 201
    assert client.post(client.base_url + RUNTIMES, json=runtime_body()).status_code == 409
    assert client.get(client.base_url + RUNTIMES).status_code == 503
    assert [(r["fault"], r["processed"]) for r in apicp.requests()] == [
        ("delay", True), ("409", False), ("503", False)]
    apicp.reset()
    assert client.get(client.base_url + RUNTIMES).status_code == 200
    assert apicp.requests() == [
        {"method": "GET", "path": RUNTIMES, "query": {}, "status": 200, "fault": None, "processed": True}]


@pytest.mark.parametrize("chaos", [
    {"seed": 1, "rate": 1.5},
    {"seed": 1, "rate": -0.1},
    {"seed": 1, "kinds": ["500", "418"]},
    {"seed": 1, "kinds": []},
    {"seed": 1, "kinds": "500"},
    {"seed": 1, "slow_ms": -1},
    {"seed": 1, "path": "("},
    {"seed": "one"},
    {"seed": 1, "rate": "high"},
    {"seed": 1, "colour": "red"},
    {"rate": 0.5},
    7,
])
def test_chaos_settings_are_validated_over_http(apicp, client, chaos):
    response = requests.post(apicp.url + "/_fake/settings", json={"chaos": chaos})
    assert_rejected(response, 400, "bad settings")
    assert client.get(client.base_url + RUNTIMES).status_code == 200


def test_chaos_is_settable_over_http(apicp, client):
    url = apicp.url + "/_fake/settings"
    chaos = {"seed": 3, "rate": 1.0, "kinds": ["502"], "slow_ms": 0, "path": "/runtimes$"}
    assert requests.post(url, json={"chaos": chaos}).status_code == 200
    assert client.get(client.base_url + RUNTIMES).status_code == 502
    assert requests.get(apicp.url + "/_fake/state").status_code == 200  # hooks meet no chaos
    assert requests.post(url, json={"chaos": None}).status_code == 200
    assert client.get(client.base_url + RUNTIMES).status_code == 200


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


def test_cloudtrail_random_throttling_is_seeded_and_settable_over_http(cloudtrail):
    def statuses(seed, count=200):
        cloudtrail.reset()
        cloudtrail.set_throttling(seed, rate=0.3)
        answers = [lookup(cloudtrail, {}) for _ in range(count)]
        for answer in answers:
            if answer.status_code != 200:
                assert_aws_error(answer, 400, "ThrottlingException")
        assert len(cloudtrail.requests()) == count  # throttled ones included
        return [answer.status_code for answer in answers]

    first = statuses(7)
    assert statuses(7) == first and statuses(8) != first
    assert 0.2 * len(first) <= first.count(400) <= 0.4 * len(first)

    url = cloudtrail.url + "/_fake/settings"
    assert requests.post(url, json={"throttling": {"seed": 1, "rate": 1.0}}).status_code == 200
    assert_aws_error(lookup(cloudtrail, {}), 400, "ThrottlingException")
    assert requests.post(url, json={"throttling": None}).status_code == 200
    assert lookup(cloudtrail, {}).status_code == 200
    for bad in ({"seed": 1, "rate": 2}, {"rate": 0.5}, {"seed": 1, "rate": "often"}):
        assert requests.post(url, json={"throttling": bad}).status_code == 400
    cloudtrail.set_throttling(1, rate=1.0)
    cloudtrail.reset()  # turns it off
    assert lookup(cloudtrail, {}).status_code == 200


# --- Lambda adapter --------------------------------------------------------------------------

STACK = Path(__file__).resolve().parent
FUNCTIONS_FILE = STACK.parents[1] / "statemachine" / "functions.json"


class FakeFunctions(LocalServer):
    """Stands in for `cargo lambda watch`: each function answers `results[name]` (by default its
    name) after `delays[name]` seconds."""

    def __init__(self, delays=None, results=None):
        self.delays, self.results, self.calls = delays or {}, results or {}, []
        self._serve("127.0.0.1", 0)

    def _dispatch(self, request):
        request.rfile.read(int(request.headers.get("Content-Length") or 0))
        function = request.path.split("/")[3]
        self.calls.append(function)
        time.sleep(self.delays.get(function, 0))
        with contextlib.suppress(OSError):  # the adapter may have stopped waiting
            send_json(request, 200, self.results.get(function, {"function": function}))


def function_arn(name):
    return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"


def invoke(adapter, function, payload=b"{}"):
    return requests.post(f"{adapter.url}/2015-03-31/functions/{function_arn(function)}/invocations", data=payload)


def test_adapter_answers_sandbox_timedout_when_a_function_outlives_its_timeout():
    with FakeFunctions(delays={"slow": 3}) as functions, LambdaAdapter(
        functions.url, timeouts={"slow": 1}
    ) as adapter:
        quick = invoke(adapter, "quick")
        started = time.monotonic()
        slow = invoke(adapter, "slow")
        waited = time.monotonic() - started

    assert (quick.status_code, quick.json()) == (200, {"function": "quick"})
    assert "X-Amz-Function-Error" not in quick.headers
    assert (slow.status_code, slow.headers["X-Amz-Function-Error"]) == (200, "Unhandled")
    assert slow.json()["errorType"] == "Sandbox.Timedout"
    assert re.fullmatch(
        r"RequestId: [0-9a-f-]{36} Error: Task timed out after 1\.00 seconds", slow.json()["errorMessage"]
    )
    assert 1 <= waited < 2


def test_adapter_cuts_a_timed_out_function_off_and_sends_later_invocations_where_the_hook_says():
    with FakeFunctions(delays={"slow": 3}) as stopped, FakeFunctions() as restarted:
        cut_off = []

        def restart(old_url):
            cut_off.append(old_url)
            return restarted.url

        with LambdaAdapter(stopped.url, timeouts={"slow": 1}, on_timeout=restart) as adapter:
            slow = invoke(adapter, "slow")
            after = invoke(adapter, "quick")

    assert slow.json()["errorType"] == "Sandbox.Timedout"
    assert cut_off == [stopped.url.rstrip("/")], "the emulator that ran the function is the one restarted"
    assert after.json() == {"function": "quick"} and restarted.calls == ["quick"] and stopped.calls == ["slow"]


def test_adapter_reads_the_function_timeouts_from_functions_json():
    functions = json.loads(FUNCTIONS_FILE.read_text())
    expected = {spec["binary"]: spec["timeoutSeconds"] for name, spec in functions.items() if name != "_comment"}
    with LambdaAdapter("http://127.0.0.1:9") as adapter:
        assert adapter.timeouts == expected and len(expected) == 6


def test_adapter_enforces_the_invocation_payload_quotas():
    with FakeFunctions(results={"huge": "y" * MAX_RESPONSE_BYTES}) as functions, LambdaAdapter(
        functions.url, timeouts={}
    ) as adapter:
        request_too_large = invoke(adapter, "quick", b"x" * MAX_REQUEST_BYTES)
        response_too_large = invoke(adapter, "huge")

    assert request_too_large.status_code == 413
    assert request_too_large.headers["x-amzn-ErrorType"] == "RequestEntityTooLargeException"
    assert functions.calls == ["huge"]
    assert response_too_large.headers["X-Amz-Function-Error"] == "Unhandled"
    assert response_too_large.json() == {
        "errorType": "Function.ResponseSizeTooLarge",
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
    }


# --- Execution runner (run-execution.mjs) ----------------------------------------------------

BLOB = "x" * 100_000  # a command-line argument holds at most 128 KiB; three copies exceed 256 KiB
TRIPLE = {"a.$": "$.blob", "b.$": "$.blob", "c.$": "$.blob"}
TRIPLE_BYTES = len(json.dumps(dict.fromkeys("abc", BLOB), separators=(",", ":")))
CATCH_ALL = [{"ErrorEquals": ["States.ALL"], "Next": "Recovered"}]
RECOVERED = {"Type": "Pass", "End": True}


def machine(start, states):
    return {"StartAt": start, "States": states}


def run_execution(tmp_path, definition, execution_input, env=None):
    path, report = tmp_path / "definition.json", tmp_path / "report.json"
    path.write_text(json.dumps(definition))
    command = [STACK / "node_modules" / ".bin" / "node", STACK / "run-execution.mjs", "--definition", path,
               "--input", json.dumps(execution_input), "--report", report]
    subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, timeout=60)
    return json.loads(report.read_text())


@pytest.mark.parametrize("kind", ["Parallel", "Map"])
def test_oversized_state_output_fails_the_execution_whatever_its_catch(tmp_path, kind):
    grow = machine("Grow", {"Grow": {"Type": "Pass", "Parameters": TRIPLE, "End": True}})
    if kind == "Parallel":
        wrapper, execution_input = {"Type": "Parallel", "Branches": [grow]}, {"blob": BLOB}
    else:
        wrapper = {"Type": "Map", "ItemsPath": "$.items", "ItemProcessor": grow}
        execution_input = {"items": [{"blob": BLOB}]}
    definition = machine("Wrapper", {"Wrapper": {**wrapper, "Catch": CATCH_ALL, "End": True}, "Recovered": RECOVERED})

    report = run_execution(tmp_path, definition, execution_input)

    assert (report["status"], report["error"]) == ("FAILED", "States.DataLimitExceeded")
    assert "'Grow" in report["cause"] and f"{TRIPLE_BYTES} bytes" in report["cause"]
    assert "Recovered" not in [state["name"] for state in report["states"]]
    assert report["limits"]["largestOutput"]["bytes"] == TRIPLE_BYTES


def test_oversized_lambda_result_fails_the_execution_whatever_its_catch(tmp_path):
    definition = machine("Echo", {
        "Echo": {"Type": "Task", "Resource": function_arn("quick"), "Next": "Big"},
        "Big": {"Type": "Task", "Resource": function_arn("big"), "Catch": CATCH_ALL, "End": True},
        "Recovered": RECOVERED,
    })
    with FakeFunctions(results={"big": dict.fromkeys("abc", BLOB)}) as functions, LambdaAdapter(
        functions.url, timeouts={}
    ) as adapter:
        report = run_execution(tmp_path, definition, {}, {"AWS_ENDPOINT_URL_LAMBDA": adapter.url})

    assert (report["status"], report["error"]) == ("FAILED", "States.DataLimitExceeded")
    assert "'Big' returned a result" in report["cause"]
    assert [(state["name"], state["status"]) for state in report["states"]] == [
        ("Echo", "SUCCEEDED"),
        ("Big", "FAILED"),
    ]
    assert functions.calls == ["quick", "big"]


def test_history_over_25000_events_fails_the_execution(tmp_path):
    item = machine("Item", {"Item": {"Type": "Pass", "End": True}})
    definition = machine("Start", {
        "Start": {"Type": "Pass", "Next": "Each"},
        "Each": {"Type": "Map", "ItemsPath": "$.items", "ItemProcessor": item, "ResultPath": None,
                 "Catch": CATCH_ALL, "End": True},
        "Recovered": RECOVERED,
    })

    # ExecutionStarted, Start (2), Each (4) and ExecutionSucceeded, plus 4 events per item:
    # MapIterationStarted, PassStateEntered, PassStateExited, MapIterationSucceeded.
    at_quota = run_execution(tmp_path, definition, {"items": list(range(6_248))})
    over_quota = run_execution(tmp_path, definition, {"items": list(range(6_249))})

    assert (at_quota["status"], at_quota["limits"]["historyEvents"]) == ("SUCCEEDED", 25_000)
    assert (over_quota["status"], over_quota["error"], over_quota["cause"]) == (
        "FAILED",
        "States.Runtime",
        "The execution reached the maximum number of history events (25000).",
    )
    assert over_quota["limits"]["historyEvents"] == 25_000


def test_execution_report_holds_the_largest_payloads_and_the_history_length(tmp_path):
    def branch(name):
        return machine(name, {name: {"Type": "Pass", "End": True}})

    definition = machine("Start", {
        "Start": {"Type": "Pass", "Next": "Each"},
        "Each": {"Type": "Map", "ItemsPath": "$.items", "ItemProcessor": branch("Item"), "ResultPath": "$.mapped",
                 "Next": "Both"},
        "Both": {"Type": "Parallel", "Branches": [branch("Left"), branch("Right")], "ResultPath": "$.both",
                 "Next": "Done"},
        "Done": {"Type": "Succeed"},
    })

    report = run_execution(tmp_path, definition, {"items": [1, 2]})

    assert report["status"] == "SUCCEEDED"
    final = len(json.dumps(report["output"], separators=(",", ":")))
    assert report["limits"] == {
        "maxPayloadBytes": 262_144,
        "largestInput": {"state": "Done", "bytes": final},
        "largestOutput": {"state": "Both", "bytes": final},
        "maxHistoryEvents": 25_000,
        # ExecutionStarted, Start (2), Each (4 + 2 items x 4), Both (3 + 2 branches x 2), Done (2),
        # ExecutionSucceeded.
        "historyEvents": 25,
        # What Standard bills: Start, Each, Item twice, Both, Left, Right, Done.
        "stateTransitions": 8,
        # No Task: no Lambda invocation.
        "lambdaInvocations": 0,
        "lambdaMs": 0,
    }
    done = next(state for state in report["states"] if state["name"] == "Done")
    assert (done["inputBytes"], done["outputBytes"]) == (final, final)


def _choice_rules(states: dict):
    """Every choice rule of the definition's states, nested ones (And, Or, Not) included."""
    def rules(rule: dict):
        yield rule
        for nested in rule.get("And", []) + rule.get("Or", []) + ([rule["Not"]] if "Not" in rule else []):
            yield from rules(nested)
    for state in states.values():
        for choice in state.get("Choices", []):
            yield from rules(choice)
        for nested in [state.get("ItemProcessor") or state.get("Iterator") or {}] + state.get("Branches", []):
            yield from _choice_rules(nested.get("States", {}))


def test_the_definition_uses_no_choice_rule_the_interpreter_evaluates_unlike_aws():
    # aws-local-stepfunctions 3 never matches `IsNull: false` or `IsPresent: false` (it reads them as "is null and
    # false"), where AWS matches a non-null or absent value: a loop on such a rule would run on AWS and never here.
    definition = json.loads((Path(__file__).parents[2] / "statemachine" / "agent.asl.json").read_text())
    rules = list(_choice_rules(definition["States"]))
    assert rules, "the definition has choice rules"
    negated = [rule for rule in rules if rule.get("IsNull") is False or rule.get("IsPresent") is False]
    assert negated == [], "write `Not: {IsNull: true}` instead"


def test_cloudtrail_answers_each_account_region_with_its_own_events():
    keys = {"ASIAMEMBER": "111111111111"}
    with FakeCloudTrail(rate_per_second=1, account_of=lambda key: keys.get(key, "123456789012")) as fake:
        fake.add_event("CreateRestApi", eventTime=100)
        fake.add_event("DeleteRestApi", eventTime=100, account="111111111111", region="eu-west-1")
        member_eu = "AWS4-HMAC-SHA256 Credential=ASIAMEMBER/20240101/eu-west-1/cloudtrail/aws4_request"
        member_us = "AWS4-HMAC-SHA256 Credential=ASIAMEMBER/20240101/us-east-1/cloudtrail/aws4_request"
        [home] = lookup(fake, {}).json()["Events"]
        assert home["EventName"] == "CreateRestApi"
        [member] = lookup(fake, {}, authorization=member_eu).json()["Events"]
        record = json.loads(member["CloudTrailEvent"])
        assert (record["recipientAccountId"], record["awsRegion"]) == ("111111111111", "eu-west-1")
        assert lookup(fake, {}, authorization=member_us).json() == {"Events": []}
        # One request a second for each account-region: the three above each had their own window.
        assert_aws_error(lookup(fake, {}, authorization=member_eu), 400, "ThrottlingException")


def test_child_executions_run_as_executions_of_their_own_and_answer_as_sync_2(tmp_path):
    # The child fails for "bad" and outgrows the payload limit for "big": each its own execution, its own limits.
    child = machine("Which", {
        "Which": {"Type": "Choice", "Choices": [
            {"Variable": "$.name", "StringEquals": "bad", "Next": "Refused"},
            {"Variable": "$.name", "StringEquals": "big", "Next": "Grow"}], "Default": "Fine"},
        "Fine": {"Type": "Pass", "Parameters": {"synced.$": "$.name"}, "End": True},
        "Refused": {"Type": "Fail", "Error": "TargetUnreachable", "Cause": "no role"},
        "Grow": {"Type": "Pass", "Parameters": {"blob": "x" * 300_000}, "End": True},
    })
    child_path = tmp_path / "child.json"
    child_path.write_text(json.dumps(child))
    run = {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2",
           "Parameters": {"StateMachineArn": "${ChildArn}", "Input.$": "$"},
           "ResultSelector": {"output.$": "$.Output", "status.$": "$.Status"},
           "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}], "End": True}
    definition = machine("Each", {"Each": {
        "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "End": True,
        "ItemProcessor": machine("Run", {"Run": run, "Caught": {"Type": "Pass", "End": True}})}})
    path, report_path = tmp_path / "definition.json", tmp_path / "report.json"
    path.write_text(json.dumps(definition))
    items = [{"name": name} for name in ("good", "bad", "big")]
    subprocess.run([STACK / "node_modules" / ".bin" / "node", STACK / "run-execution.mjs", "--definition", path,
                    "--input", json.dumps({"items": items}), "--report", report_path,
                    "--child", f"ChildArn={child_path}", "--child-machine-name", "child"],
                   capture_output=True, timeout=120)
    report = json.loads(report_path.read_text())

    assert report["status"] == "SUCCEEDED"
    good, bad, big = report["output"]
    assert good == {"output": {"synced": "good"}, "status": "SUCCEEDED"}, "Output as JSON, as .sync:2 answers"
    assert bad["error"]["Error"] == "States.TaskFailed"
    described = json.loads(bad["error"]["Cause"])
    assert (described["Status"], described["Error"], described["Cause"]) == ("FAILED", "TargetUnreachable", "no role")
    assert described["StateMachineArn"].endswith(":stateMachine:child")
    assert json.loads(big["error"]["Cause"])["Error"] == "States.DataLimitExceeded", "the child's own limit"
    children = report["limits"]["children"]
    assert (children["executions"], children["failed"]) == (3, 2)
    assert children["largestPayloadBytes"] > 262_144 > report["limits"]["largestOutput"]["bytes"], "not the parent's"
