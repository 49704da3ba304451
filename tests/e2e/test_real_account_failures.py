"""End-to-end: failures a real account shows in its first days, on the strict local stack.

Each test fails on the agent before the fix it names: a cold start that kept a transient
error, credentials read once per container, the deployment's placeholder secret, a control
plane that caps pages or answers undocumented cases its own way, a runtime deleted in the
control plane, a CloudTrail event delivered late, and API Gateway's management quota.
"""

from __future__ import annotations

import time

import pytest
from fake_apicp import UNKNOWN_API_BEHAVIOURS
from seed import create_rest_api
from stack import APICP_PASSWORD, APICP_USER, boto, put_control_plane_secret

from conftest import wait_for_a_new_window
from test_workflow import DEV, PROD, published, seed


def test_a_throttled_call_at_cold_start_heals_on_the_next_invocation(fresh_stack):
    stack = fresh_stack()
    seed(stack)
    # More throttling than the SDK's own attempts: the cold start of ensure-runtime fails once.
    stack.aws_proxy.add_fault("sts", "GetCallerIdentity", status=400, error_code="Throttling", count=5)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.count("EnsureRuntime", "RETRIED") == 1, "the state machine's retry met a container that healed"
    assert set(stack.apicp.state()["runtimes"]) == {PROD, DEV}


def test_a_rotated_secret_takes_effect_in_warm_containers_without_a_redeploy(clean):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded, "containers are warm and hold the old credentials"

    stack.apicp.set_credentials(APICP_USER, "rotated")
    put_control_plane_secret(stack.moto_url, APICP_USER, "rotated")
    try:
        payments = create_rest_api(stack.moto_url, "payments", {"team": "pay"}, {"prod": {}})
        run = stack.run({"mode": "full"})
    finally:
        stack.apicp.set_credentials(APICP_USER, APICP_PASSWORD)

    assert run.succeeded, run.printed
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod", f"{apis['orders'].id}_prod",
                                           f"{payments.id}_prod"}
    assert run.count("EnsureRuntime", "RETRIED") == 0, "one re-read of the secret, no failed attempt"


def test_the_deployments_placeholder_secret_ends_runs_as_waiting_for_credentials(fresh_stack):
    # What `cdk deploy` creates: a secret with empty fields, before the user fills it in.
    stack = fresh_stack()
    seed(stack)
    put_control_plane_secret(stack.moto_url, "", "")

    waiting = stack.run()

    assert waiting.succeeded, "no failed execution (and no alarm) before the user sets the secret"
    assert waiting.output["status"] == "CredentialsNotSet"
    assert stack.apicp.requests() == [], "nothing is sent with a placeholder"

    put_control_plane_secret(stack.moto_url, APICP_USER, APICP_PASSWORD)
    synced = stack.run()

    assert synced.succeeded, synced.printed
    assert set(stack.apicp.state()["runtimes"]) == {PROD, DEV}, "the next run syncs, without a redeploy"


def test_a_full_sync_deletes_stale_apis_on_every_page_of_a_capped_listing(clean):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded
    # The service may cap pages below the size asked: one API a page.
    stack.apicp.set_page_size_cap(1)
    boto("apigateway", stack.moto_url).delete_rest_api(restApiId=apis["orders"].id)

    run = stack.run({"mode": "full"})

    assert run.succeeded, run.printed
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod"}


@pytest.mark.parametrize("behaviour", UNKNOWN_API_BEHAVIOURS)
def test_the_agent_converges_whatever_the_control_plane_answers_for_unknown_apis(clean, behaviour):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded
    stack.apicp.set_unknown_api_behaviour(behaviour)
    watermark = int(time.time()) - 300
    # Someone removed pets from the runtime in the control plane; then it changes in AWS.
    stack.apicp.remove_api(PROD, f"{apis['pets'].id}_prod")
    boto("apigateway", stack.moto_url).update_rest_api(
        restApiId=apis["pets"].id, patchOperations=[{"op": "replace", "path": "/description", "value": "gold"}])
    stack.cloudtrail.add_event("UpdateRestApi", eventTime=watermark - 30, requestParameters={"restApiId": apis["pets"].id})
    # An API created and deleted between two runs: the agent deletes what APICP never held.
    gone = create_rest_api(stack.moto_url, "gone", {}, {"prod": {}})
    boto("apigateway", stack.moto_url).delete_rest_api(restApiId=gone.id)
    stack.cloudtrail.add_event("DeleteRestApi", eventTime=watermark - 30, requestParameters={"restApiId": gone.id})
    wait_for_a_new_window()

    run = stack.run()

    assert run.succeeded, run.printed
    ids = {f"{apis['pets'].id}_prod": "pets", f"{apis['orders'].id}_prod": "orders"}
    assert {ids.get(i, i) for i in published(stack)[PROD]} == {"pets", "orders"}, run.output["assets"]
    assert published(stack)[PROD][f"{apis['pets'].id}_prod"]["description"] == "gold"


def test_a_runtime_deleted_in_the_control_plane_is_registered_again_and_fully_synced(clean):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded
    stack.apicp.delete_runtime(PROD)

    run = stack.run()

    assert run.succeeded, run.printed
    assert PROD in stack.apicp.state()["runtimes"]
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod", f"{apis['orders'].id}_prod"}
    assert run.output["assets"]["summary"]["fullRuntimes"] == 1, "only the re-registered runtime"


def test_an_event_cloudtrail_delivers_late_is_still_applied_and_one_applied_is_not_applied_again(clean, state_table):
    stack = clean
    seed(stack)
    assert stack.run().succeeded
    on_time = create_rest_api(stack.moto_url, "on-time", {}, {"prod": {}})
    stack.cloudtrail.add_event("CreateDeployment", eventTime=state_table.item("prod")["assetsWatermark"] + 1,
                               requestParameters={"restApiId": on_time.id, "stageName": "prod"})
    wait_for_a_new_window()
    assert stack.run().succeeded
    assert f"{on_time.id}_prod" in published(stack)[PROD]
    watermark = state_table.item("prod")["assetsWatermark"]
    # Created before the last window ended, but delivered only now (CloudTrail's delay is not bounded).
    late = create_rest_api(stack.moto_url, "late", {}, {"prod": {}})
    stack.cloudtrail.add_event("CreateDeployment", eventTime=watermark - 600,
                               requestParameters={"restApiId": late.id, "stageName": "prod"})
    wait_for_a_new_window()
    stack.aws_proxy.reset()

    run = stack.run()

    assert run.succeeded, run.printed
    assert f"{late.id}_prod" in published(stack)[PROD]
    assert state_table.item("prod")["assetsWatermark"] > watermark
    # Both events are in this window's overlap; the one applied by the last run is skipped.
    read = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "apigateway"}
    assert read == {"GetStages": 1, "GetRestApi": 1, "GetDomainNames": 1}, "the late API only, and the domain routes"


def test_a_full_sync_beyond_the_api_gateway_burst_lists_the_account_once_under_the_quota(clean):
    stack = clean
    for i in range(45):
        create_rest_api(stack.moto_url, f"api-{i:02}", {"n": str(i)}, {"prod": {}, "dev": {}})

    run = stack.run({"mode": "full"})

    assert run.succeeded, run.printed
    assert len(published(stack)[PROD]) == len(published(stack)[DEV]) == 45
    calls = {op: n for (service, op), n in stack.aws_proxy.counts().items() if service == "apigateway"}
    throttled = sum(n for (service, _), n in stack.aws_proxy.throttled().items() if service == "apigateway")
    print(f"API Gateway calls for a full sync of 45 APIs on 2 stages: {calls}, throttled: {throttled}")
    # ensure-runtime's discovery is the listing; the full sync reads it back from the state
    # table; transform builds documents from snapshots; the export's title is the API name. The
    # account has no HTTP or WebSocket API (one empty GetApis) and no custom domain name.
    assert calls == {"GetRestApis": 1, "GetStages": 45, "GetApis": 1, "GetDomainNames": 1}
    assert sum(calls.values()) > 40, "more calls than the quota's burst, so the quota was in play"
    assert throttled == 0, "paced below the quota, the customer's deployments keep their room"
