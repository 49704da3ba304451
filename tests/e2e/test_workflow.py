"""End-to-end: the real state machine file, run by aws-local-stepfunctions, invoking the five
Rust Lambdas under cargo lambda watch, against moto and the strict control-plane fake."""

from __future__ import annotations

import time

import pytest

from seed import create_rest_api, put_traffic, recent_minutes
from conftest import metrics_window_end, running_execution, wait_for_a_new_window
from stack import METRICS_INTERVAL as INTERVAL, boto, latest_window_end

ACCOUNT, REGION = "123456789012", "us-east-1"
PROD, DEV = f"{ACCOUNT}_{REGION}_prod", f"{ACCOUNT}_{REGION}_dev"

# name -> (API tags, {stage: stage tags}); "draft" has no stage, so nothing deploys it.
APIS = {
    "pets": ({"team": "core", "env": "shared"}, {"prod": {"env": "production"}, "dev": {"env": "development"}}),
    "orders": ({"team": "shop"}, {"prod": {"env": "production"}}),
    "inventory": ({"team": "warehouse"}, {"dev": {}}),
    "draft": ({"team": "core"}, {}),
}
# (Count, 4XXError, 5XXError, Latency, IntegrationLatency) per minute.
TRAFFIC = {"pets": (40, 3, 1, 120.0, 90.0), "orders": (10, 0, 2, 300.0, 250.0), "inventory": (5, 1, 0, 50.0, 20.0)}


def seed(stack):
    apis = {name: create_rest_api(stack.moto_url, name, tags, stages) for name, (tags, stages) in APIS.items()}
    minutes = recent_minutes(45)
    for name, (_, stages) in APIS.items():
        for stage in stages:
            put_traffic(stack.moto_url, name, stage, minutes, TRAFFIC[name])
    return apis


def published(stack) -> dict[str, dict[str, dict]]:
    return stack.apicp.state()["apis"]


def requests_to(stack, method: str, path_end: str) -> int:
    return sum(1 for r in stack.apicp.requests() if r["method"] == method and r["path"].endswith(path_end))


def test_runs_federate_every_deployed_rest_api_once_and_advance_the_watermarks(clean, state_table):
    stack = clean
    apis = seed(stack)

    first = stack.run()
    assert first.succeeded, first.printed

    state = stack.apicp.state()
    assert set(state["runtimes"]) == {PROD, DEV}
    assert {r["name"] for r in state["runtimes"].values()} == {"prod (us-east-1 123456789012)", "dev (us-east-1 123456789012)"}
    pets, orders, inventory = apis["pets"], apis["orders"], apis["inventory"]
    assert set(published(stack)[PROD]) == {f"{pets.id}_prod", f"{orders.id}_prod"}
    assert set(published(stack)[DEV]) == {f"{pets.id}_dev", f"{inventory.id}_dev"}
    pets_prod = published(stack)[PROD][f"{pets.id}_prod"]
    assert pets_prod["name"] == "pets"
    assert pets_prod["type"] == "REST"
    assert pets_prod["version"] == pets.stages["prod"]
    assert pets_prod["versionSetId"] == pets.id
    assert pets_prod["tags"] == ["env:production", "team:core"]
    assert published(stack)[DEV][f"{pets.id}_dev"]["tags"] == ["env:development", "team:core"]
    assert published(stack)[DEV][f"{inventory.id}_dev"]["version"] == inventory.stages["dev"]
    assert len(state["heartbeats"]) == 2
    # The metrics branch reads a stage once its first full sync has named its APIs: this run's own.
    assert first.output["metrics"]["summary"]["windows"] == 0 and state["metrics"] == []
    # The summary says how far behind the control plane is: the CloudTrail delivery buffer.
    assert 300 <= first.output["assets"]["lagSeconds"] < 400

    prod_after_first = state_table.item("prod")
    assert prod_after_first["registeredId"] == PROD
    assert abs(prod_after_first["assetsWatermark"] - (time.time() - 300)) < 120
    assert prod_after_first["assetsFullSyncAt"] >= prod_after_first["assetsWatermark"]

    # A metrics backlog of four windows: each run sends two.
    backlog_start = metrics_window_end(state_table) - 4 * INTERVAL
    for stage in ("prod", "dev"):
        state_table.put_metrics_watermark(stage, backlog_start)
    wait_for_a_new_window()
    second = stack.run()
    assert second.succeeded, second.printed

    state = stack.apicp.state()
    assert requests_to(stack, "POST", "/v2/runtimes") == 2, "runtimes are registered once"
    assert set(state["runtimes"]) == {PROD, DEV}
    assert set(published(stack)[PROD]) == {f"{pets.id}_prod", f"{orders.id}_prod"}, "no duplicate APIs"
    assert set(published(stack)[DEV]) == {f"{pets.id}_dev", f"{inventory.id}_dev"}
    assert len(state["heartbeats"]) == 4, "heartbeats are sent on every run"
    assert second.output["assets"]["summary"]["incrementalRuntimes"] == 2
    assert stack.cloudtrail.requests(), "the incremental run reads CloudTrail"

    # Metrics: two 5-minute windows per runtime, five 1-minute datapoints each.
    prod_reports = sorted((m["body"] for m in state["metrics"] if m["runtimeId"] == PROD), key=lambda b: b["timestamp"])
    assert [r["timestamp"] for r in prod_reports] == [(backlog_start + INTERVAL) * 1000, (backlog_start + 2 * INTERVAL) * 1000]
    runtime_totals = prod_reports[0]["runtimeTransactionMetrics"]
    assert runtime_totals["apiMetrics"]["transactionCount"] == 5 * (40 + 10)
    assert runtime_totals["apiMetrics"]["averageResponseTime"] == pytest.approx((120 * 40 + 300 * 10) / 50)
    assert runtime_totals["apiMetrics"]["averageLatency"] == pytest.approx(((120 - 90) * 40 + (300 - 250) * 10) / 50)
    assert runtime_totals["apiMetrics"]["averageBackendResponseTime"] == pytest.approx((90 * 40 + 250 * 10) / 50)
    assert runtime_totals["metricsByStatusCode"]["4xx"]["transactionCount"] == 5 * 3
    assert runtime_totals["metricsByStatusCode"]["5xx"]["transactionCount"] == 5 * 3
    assert runtime_totals["metricsByStatusCode"]["2xx"]["transactionCount"] == 5 * 50 - 30
    per_api = {m["apiId"]: m for m in prod_reports[0]["apiTransactionMetricsList"]}
    assert set(per_api) == {f"{pets.id}_prod", f"{orders.id}_prod"}
    assert per_api[f"{orders.id}_prod"]["apiMetrics"]["transactionCount"] == 50
    assert per_api[f"{orders.id}_prod"]["apiVersion"] == orders.stages["prod"]

    prod_after_second = state_table.item("prod")
    assert not {"assetsClaimedBy", "metricsClaimedBy"} & set(prod_after_second), "claims are released"
    assert prod_after_second["assetsWatermark"] > prod_after_first["assetsWatermark"]
    assert prod_after_second["metricsWatermark"] == backlog_start + 2 * INTERVAL
    assert prod_after_second["assetsFullSyncAt"] == prod_after_first["assetsFullSyncAt"]

    wait_for_a_new_window()
    third = stack.run()
    assert third.succeeded, third.printed
    assert state_table.item("prod")["metricsWatermark"] == backlog_start + 4 * INTERVAL


def test_incremental_run_publishes_created_and_removes_deleted_apis(clean, state_table):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded

    watermark = state_table.item("prod")["assetsWatermark"]
    payments = create_rest_api(stack.moto_url, "payments", {"team": "pay"}, {"prod": {}})
    boto("apigateway", stack.moto_url).delete_rest_api(restApiId=apis["orders"].id)
    stack.cloudtrail.add_event("CreateRestApi", eventTime=watermark + 1, responseElements={"id": payments.id})
    stack.cloudtrail.add_event("CreateDeployment", eventTime=watermark + 1,
                               requestParameters={"restApiId": payments.id, "stageName": "prod"})
    stack.cloudtrail.add_event("DeleteRestApi", eventTime=watermark + 1, requestParameters={"restApiId": apis["orders"].id})
    stack.cloudtrail.add_event("GetRestApis", eventTime=watermark + 1, readOnly=True)
    time.sleep(2)

    run = stack.run()
    assert run.succeeded, run.printed
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod", f"{payments.id}_prod"}
    # orders was published to prod only: one delete, none for dev, where neither API was published.
    assert run.output["assets"]["summary"] == {
        "fullRuntimes": 0, "incrementalRuntimes": 2, "upserts": 1, "deletes": 1, "windows": 0,
    }


def test_transient_control_plane_errors_are_retried_by_the_state_machine(clean, state_table):
    stack = clean
    apis = seed(stack)
    # New APIs are created with a POST to the runtime's collection; the client makes three
    # attempts of a request, so six failures fail two attempts of the task.
    stack.apicp.add_fault(r"/apis$", method="POST", status=503, count=6)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.count("AssetsPublish", "RETRIED") == 2
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod", f"{apis['orders'].id}_prod"}
    assert "assetsWatermark" in state_table.item("prod")


def test_a_failed_publish_leaves_the_assets_watermark_and_keeps_metrics_progress(clean, state_table):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded
    before = state_table.item("prod")

    payments = create_rest_api(stack.moto_url, "payments", {"team": "pay"}, {"prod": {}})
    stack.cloudtrail.add_event("CreateDeployment", eventTime=before["assetsWatermark"] + 1,
                               requestParameters={"restApiId": payments.id, "stageName": "prod"})
    stack.apicp.add_fault(r"/apis", method="POST", status=503, count=1000)
    # Let a metrics window come due so the metrics branch has progress to keep.
    due = metrics_window_end(state_table, ("prod",))
    state_table.put_metrics_watermark("prod", due - INTERVAL)
    time.sleep(2)

    run = stack.run()

    assert not run.succeeded
    assert run.error == "ControlPlaneUnavailable", run.printed
    assert run.count("AssetsPublish", "RETRIED") == 4, "retried up to MaxAttempts before giving up"
    after = state_table.item("prod")
    assert "assetsClaimedBy" not in after, "the failed branch gave its claim back"
    assert after["assetsWatermark"] == before["assetsWatermark"], "no watermark past unpublished data"
    assert after["metricsWatermark"] == due, "the metrics branch still acked its windows"
    assert f"{payments.id}_prod" not in published(stack)[PROD]
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod", f"{apis['orders'].id}_prod"}


def test_an_overlapping_execution_never_sends_a_window_twice(clean, state_table):
    stack = clean
    seed(stack)
    assert stack.run().succeeded  # the first sync, which the metrics branch waits for
    backlog_start = metrics_window_end(state_table) - 2 * INTERVAL
    for stage in ("prod", "dev"):
        state_table.put_metrics_watermark(stage, backlog_start)
    # Another execution is still working on prod's metrics.
    other = running_execution(stack, "still-running")
    state_table.claim("prod", "metrics", other, int(time.time()) + 600)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.output["metrics"]["skipped"] == ["prod"]
    reported = {m["runtimeId"] for m in stack.apicp.state()["metrics"]}
    assert reported == {DEV}, "prod's windows are left to the execution that holds them"
    prod = state_table.item("prod")
    assert prod["metricsWatermark"] == backlog_start
    assert prod["metricsClaimedBy"] == other, "someone else's claim is never released"
    assert set(published(stack)[PROD]), "the assets branch was not held and still ran"


def test_a_claim_left_by_an_execution_that_ended_does_not_block_the_stage(clean, state_table):
    stack = clean
    seed(stack)
    assert stack.run().succeeded  # the first sync, which the metrics branch waits for
    backlog_start = metrics_window_end(state_table) - 2 * INTERVAL
    for stage in ("prod", "dev"):
        state_table.put_metrics_watermark(stage, backlog_start)
    # An execution stopped by hand (or failed with States.DataLimitExceeded) never released its
    # claim, which would otherwise block prod for the claim's hour.
    stopped = running_execution(stack, "stopped-by-hand")
    boto("stepfunctions", stack.moto_url).stop_execution(executionArn=stopped)
    state_table.claim("prod", "metrics", stopped, int(time.time()) + 3600)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.output["metrics"]["skipped"] == []
    assert {m["runtimeId"] for m in stack.apicp.state()["metrics"]} == {PROD, DEV}
    prod = state_table.item("prod")
    assert prod["metricsWatermark"] == backlog_start + 2 * INTERVAL
    assert "metricsClaimedBy" not in prod, "taken over, then released when acked"


def test_wrong_control_plane_credentials_fail_fast_with_unauthorized(clean):
    stack = clean
    seed(stack)
    stack.apicp.set_credentials("agent", "rotated-elsewhere")
    try:
        run = stack.run()
    finally:
        stack.apicp.set_credentials("agent", "local-secret")
    assert not run.succeeded
    assert run.error == "Unauthorized"
    assert run.count("EnsureRuntime", "RETRIED") == 0, "a refused credential is not retried"
