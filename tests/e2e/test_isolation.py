"""End to end: nothing lost, nothing stuck. One API the control plane refuses, one stage whose full
sync would empty its runtime, one chunk that keeps failing: the others are published and committed;
the failure is named, counted and retried. A new API's first requests are reported although
ListMetrics does not list it yet; overlapping executions keep the account's API Gateway pace together;
a full sync never undoes a change applied after its listing; runtimes of stages gone are cleaned up;
a change deletes only where the API was published; a CloudTrail record that names nothing makes a
full sync; a metrics read slower than its invocation goes on in the next."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from seed import create_rest_api, put_traffic, recent_minutes
from stack import METRICS_INTERVAL as INTERVAL, StateTable, boto, due_window_end, latest_window_end

from conftest import wait_for_a_new_window
from test_reliability import apicp_view, assert_each_window_once_up_to_the_watermark, aws_view
from test_workflow import DEV, PROD, TRAFFIC, published, seed

# The agent's share of API Gateway's quota in the test stack (APIGATEWAY_REQUESTS_PER_SECOND's default).
PACE = 5


def emf(stack, metric: str) -> list[dict]:
    """The agent's own metrics named `metric` (CloudWatch embedded metric format lines of the functions)."""
    lines = (stack.log_dir / "functions.log").read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{") and f'"{metric}"' in line]
    return [r for r in records if metric in r]


def test_an_api_the_control_plane_refuses_leaves_every_other_api_and_stage_published_and_is_retried(clean):
    stack = clean
    apis = seed(stack)
    refused = f"{apis['pets'].id}_prod"
    stack.apicp.refuse_apis([refused])

    run = stack.run()

    assert run.succeeded, run.printed
    assets = run.output["assets"]
    assert assets["refusedCount"] == 1
    assert assets["refused"][0]["stage"] == "prod" and assets["refused"][0]["id"] == refused
    assert assets["refused"][0]["error"] == "InvalidInput" and "refused by this tenant" in assets["refused"][0]["message"]
    assert set(published(stack)[PROD]) == {f"{apis['orders'].id}_prod"}, "the other API of the stage"
    assert set(published(stack)[DEV]) == {f"{apis['pets'].id}_dev", f"{apis['inventory'].id}_dev"}, "the other stage"
    assert all(w["advanced"] for w in assets["watermarks"]), "both stages committed"
    assert [r["RefusedApis"] for r in emf(stack, "RefusedApis")][-1] == 1, "counted for the alarm"
    assert any("the control plane refused an API" in line and refused in line
               for line in (stack.log_dir / "functions.log").read_text().splitlines()), "named in the logs"

    # The next run tries it again (no CloudTrail event needed), then publishes it once it is accepted.
    wait_for_a_new_window()
    posts = lambda: sum(1 for r in stack.apicp.requests() if r["method"] == "POST" and r["path"].endswith("/apis"))  # noqa: E731
    before = posts()
    still = stack.run()
    assert still.succeeded and still.output["assets"]["refusedCount"] == 1, still.printed
    assert posts() == before + 1, "retried"
    stack.apicp.refuse_apis([])
    wait_for_a_new_window()
    healed = stack.run()
    assert healed.succeeded and healed.output["assets"]["refusedCount"] == 0, healed.printed
    assert apicp_view(stack, PROD) == aws_view(stack, "prod")
    assert StateTable(stack.moto_url).item("prod").get("assetsRefused") is None


def test_a_stage_whose_full_sync_would_empty_its_runtime_is_held_back_and_the_others_go_on(clean, state_table):
    stack = clean
    apis = seed(stack)
    assert stack.run().succeeded
    dev_before = state_table.item("dev")["assetsWatermark"]
    # Nothing is deployed to dev any more; prod gets a new API.
    apigw = boto("apigateway", stack.moto_url)
    for name in ("pets", "inventory"):
        apigw.delete_stage(restApiId=apis[name].id, stageName="dev")
    fresh = create_rest_api(stack.moto_url, "fresh", {}, {"prod": {}})
    wait_for_a_new_window()

    run = stack.run({"mode": "full", "stages": ["prod", "dev"]})

    assert not run.succeeded and run.error == "UnsafeDeletion", run.printed
    assert "refusing to delete 2 API(s) from runtime" in run.cause and DEV in run.cause, run.cause
    assert f"{fresh.id}_prod" in published(stack)[PROD], "prod was published and committed"
    assert state_table.item("prod")["assetsWatermark"] > dev_before
    assert state_table.item("dev")["assetsWatermark"] == dev_before, "dev keeps its watermark"
    assert len(published(stack)[DEV]) == 2, "nothing deleted on an empty listing"
    # The lag the alarm reads is dev's, the worst stage, not prod's.
    lag = [r["SyncLagSeconds"] for r in emf(stack, "SyncLagSeconds") if r["Kind"] == "assets"][-1]
    assert lag >= int(time.time()) - dev_before - 5, lag


def test_a_chunk_that_keeps_failing_holds_back_its_stage_and_names_the_error(clean, state_table):
    stack = clean
    apis = seed(stack)
    # Every request for dev's APIs fails, run after run, the task's and the workflow's retries included.
    stack.apicp.add_fault(rf"/runtimes/{DEV}/apis$", method="POST", status=503, count=1000)

    run = stack.run()

    stack.apicp.clear_faults()
    assert not run.succeeded and run.error == "ControlPlaneUnavailable", run.printed
    assert "stage dev" in run.cause, run.cause
    assert set(published(stack)[PROD]) == {f"{apis['pets'].id}_prod", f"{apis['orders'].id}_prod"}
    assert "assetsWatermark" in state_table.item("prod")
    assert "assetsWatermark" not in state_table.item("dev"), "dev's watermark stays"
    healed = stack.run()
    assert healed.succeeded, healed.printed
    assert apicp_view(stack, DEV) == aws_view(stack, "dev")


def test_a_new_api_s_first_requests_are_reported_while_list_metrics_does_not_list_it(clean, state_table):
    stack = clean
    seed(stack)
    # An API whose metrics went quiet three weeks ago: CloudWatch stops listing a metric after two weeks without data.
    dormant = create_rest_api(stack.moto_url, "dormant", {}, {"prod": {}})
    put_traffic(stack.moto_url, "dormant", "prod", [int(time.time()) // 60 * 60 - 21 * 86400], (7, 0, 0, 10.0, 5.0))
    assert stack.run().succeeded  # the stages' catalogs: the metrics branch reads stages once synced
    for stage in ("prod", "dev"):  # no window due until the one this test reads
        state_table.put_metrics_watermark(stage, latest_window_end(time.time()))
    # An API created now: ListMetrics lists its metrics fifteen minutes after their first datapoint (moto's, as
    # CloudWatch's).
    fresh = create_rest_api(stack.moto_url, "fresh", {}, {"prod": {}})
    stack.cloudtrail.add_event("CreateRestApi", eventTime=time.time() - 420, requestParameters={"name": "fresh"},
                               responseElements={"id": fresh.id})
    wait_for_a_new_window()
    assert stack.run().succeeded  # the incremental run that adds `fresh` to the catalog
    end = due_window_end(time.time(), state_table.item("prod")["assetsWatermark"])
    minutes = [end - 300 + 60 * i for i in range(5)]
    put_traffic(stack.moto_url, "fresh", "prod", minutes, (20, 0, 0, 10.0, 5.0))
    put_traffic(stack.moto_url, "dormant", "prod", minutes, (3, 0, 0, 10.0, 5.0))
    for stage in ("prod", "dev"):
        state_table.put_metrics_watermark(stage, end - INTERVAL)

    run = stack.run()

    assert run.succeeded, run.printed
    reports = [m["body"] for m in stack.apicp.state()["metrics"] if m["runtimeId"] == PROD and
               m["body"]["timestamp"] == end * 1000]
    assert len(reports) == 1, reports
    per_api = {a["apiId"]: a["apiMetrics"]["transactionCount"] for a in reports[0]["apiTransactionMetricsList"]}
    assert per_api.get(f"{fresh.id}_prod") == 100, per_api
    assert per_api.get(f"{dormant.id}_prod") == 15, per_api
    seeded = 5 * (TRAFFIC["pets"][0] + TRAFFIC["orders"][0])
    assert reports[0]["runtimeTransactionMetrics"]["apiMetrics"]["transactionCount"] == seeded + 115


def most_calls_in_a_second(times: list[float]) -> int:
    """The most calls that arrived within one second of the clock."""
    return max(Counter(int(t) for t in times).values(), default=0)


def test_three_executions_started_together_on_a_first_deploy_list_the_account_once_at_the_pace(clean):
    stack = clean
    apis = [create_rest_api(stack.moto_url, f"api-{i}", {}, {"prod": {}, "dev": {}}) for i in range(12)]
    for api in apis[:3]:
        put_traffic(stack.moto_url, api.name, "prod", recent_minutes(30), (5, 0, 0, 10.0, 5.0))
    stack.aws_proxy.reset()

    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda _: stack.run(), range(3)))

    assert all(run.succeeded for run in runs), [run.printed for run in runs if not run.succeeded]
    calls = stack.aws_proxy.counts()
    assert calls[("apigateway", "GetStages")] == len(apis), "each API's stages read once, by one execution"
    assert calls[("apigateway", "GetRestApis")] == 1
    waiting = [run for run in runs if run.output["discoveryInProgress"]]
    assert len(waiting) == 2, [run.output for run in runs]
    times = [c.at for c in stack.aws_proxy.received() if c.service == "apigateway"]
    assert most_calls_in_a_second(times) <= PACE, sorted(times)
    assert set(published(stack)) == {PROD, DEV}
    assert all(len(published(stack)[r]) == len(apis) for r in (PROD, DEV))


def test_two_full_syncs_of_different_stages_at_once_list_the_account_once_and_the_second_waits(clean):
    stack = clean
    apis = [create_rest_api(stack.moto_url, f"api-{i}", {}, {"prod": {}, "dev": {}}) for i in range(8)]
    stack.aws_proxy.reset()
    # A listing of some seconds, as an account's takes minutes: the executions' list-changes meet during it.
    stack.aws_proxy.add_delay("apigateway", "GetStages", 0.5)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda stage: stack.run({"mode": "full", "stages": [stage]}), ("prod", "dev"))

    assert first.succeeded and second.succeeded, (first.printed, second.printed)
    # Each execution claims its own stage, so only the account's listing is contended: one execution lists it, the
    # other finds it claimed by a running execution and leaves its stage's full sync to a later run.
    assert stack.aws_proxy.counts()[("apigateway", "GetStages")] == len(apis)
    skipped = {stage for run in (first, second) for stage in run.output["assets"]["skipped"]}
    synced = {"prod", "dev"} - skipped
    assert len(skipped) == 1 and len(synced) == 1, (first.output, second.output)
    [waited] = skipped
    assert not published(stack).get({"prod": PROD, "dev": DEV}[waited]), "the waiting stage published nothing"

    wait_for_a_new_window()
    assert stack.run({"mode": "full", "stages": [waited]}).succeeded
    assert all(len(published(stack)[runtime]) == len(apis) for runtime in (PROD, DEV))


def test_a_full_sync_never_undoes_a_change_applied_after_its_listing(clean, state_table):
    stack = clean
    seed(stack)
    assert stack.run().succeeded  # a full sync from the listing ensure-runtime stored (STAGES=*)
    created = create_rest_api(stack.moto_url, "created", {}, {"prod": {}})
    stack.cloudtrail.add_event("CreateRestApi", eventTime=time.time() - 420, requestParameters={"name": "created"},
                               responseElements={"id": created.id})
    wait_for_a_new_window()
    assert stack.run().succeeded  # applied incrementally, after that listing was made
    assert f"{created.id}_prod" in published(stack)[PROD]
    # The reconcile interval has elapsed: the next scheduled run is a full sync, within the discovery interval and
    # within 15 minutes of the stored listing, which predates `created`.
    state_table.put_number("prod", "assetsFullSyncAt", int(time.time()) - 2 * 86400)
    wait_for_a_new_window()

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.output["assets"]["summary"]["fullRuntimes"] == 1
    assert f"{created.id}_prod" in published(stack)[PROD], "the listing older than the change was not applied"
    assert apicp_view(stack, PROD) == aws_view(stack, "prod")


def test_the_runtime_of_a_stage_no_longer_deployed_is_deleted_with_its_apis(fresh_stack):
    stack = fresh_stack({"ORPHAN_GRACE_SECONDS": "0"})
    apis = seed(stack)
    assert stack.run().succeeded
    apigw = boto("apigateway", stack.moto_url)
    for name in ("pets", "inventory"):
        apigw.delete_stage(restApiId=apis[name].id, stageName="dev")

    run = stack.run({"mode": "full"})  # rediscovers the account's stages

    assert run.succeeded, run.printed
    assert run.output["orphaned"] == [{"runtimeId": DEV, "stage": "dev", "since": run.output["orphaned"][0]["since"],
                                       "deleted": True}]
    assert DEV not in stack.apicp.state()["runtimes"], "the runtime is gone from the control plane"
    assert DEV not in published(stack), "with its APIs"
    assert stack.run().output["orphaned"] == [], "forgotten once deleted"


def test_a_change_sends_a_delete_only_where_the_api_was_published(clean):
    stack = clean
    apis = seed(stack)
    for stage in ("qa", "staging", "perf"):
        create_rest_api(stack.moto_url, f"only-{stage}", {}, {stage: {}})
    assert stack.run().succeeded
    boto("apigateway", stack.moto_url).delete_rest_api(restApiId=apis["orders"].id)
    stack.cloudtrail.add_event("DeleteRestApi", eventTime=time.time() - 420,
                               requestParameters={"restApiId": apis["orders"].id})
    wait_for_a_new_window()
    before = len(stack.apicp.requests())

    run = stack.run()

    assert run.succeeded, run.printed
    deletes = [r for r in stack.apicp.requests()[before:] if r["method"] == "DELETE"]
    assert [r["path"].rsplit("/", 1)[-1] for r in deletes] == [f"{apis['orders'].id}_prod"], deletes
    assert f"{apis['orders'].id}_prod" not in published(stack)[PROD]


def test_a_cloudtrail_record_that_names_no_api_makes_the_window_a_full_sync(clean):
    stack = clean
    seed(stack)
    assert stack.run().succeeded
    created = create_rest_api(stack.moto_url, "created", {}, {"prod": {}})
    # The record of the creation, without the response that would name the new API.
    stack.cloudtrail.add_event("CreateRestApi", eventTime=time.time() - 420, requestParameters={"name": "created"},
                               responseElements=None)
    wait_for_a_new_window()

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.output["assets"]["summary"]["fullRuntimes"] >= 1
    assert f"{created.id}_prod" in published(stack)[PROD], "found by listing the stage"


def test_expired_credentials_are_retried_and_an_unauthorized_metrics_post_is_named(clean, state_table):
    stack = clean
    seed(stack)
    assert stack.run().succeeded
    # The SDK does not repeat a call whose token expired: the task fails, and the state machine retries it.
    stack.aws_proxy.add_fault("monitoring", "GetMetricData", status=400, error_code="ExpiredTokenException", count=2)
    end = due_window_end(time.time(), state_table.item("prod")["assetsWatermark"])
    for stage in ("prod", "dev"):
        state_table.put_metrics_watermark(stage, end - INTERVAL)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.count("MetricsTransform", "RETRIED") >= 1
    # The control plane refuses the agent's metrics: the execution says Unauthorized, not just "not sent".
    stack.apicp.add_fault(r"/metrics$", method="POST", status=401, count=100)
    for stage in ("prod", "dev"):
        state_table.put_metrics_watermark(stage, end - 2 * INTERVAL)
    refused = stack.run()
    stack.apicp.clear_faults()
    assert not refused.succeeded and refused.error == "Unauthorized", refused.printed
    assert "answered 401" in refused.cause, refused.cause


def test_a_metrics_read_slower_than_its_invocation_goes_on_in_the_next_and_sends_every_window_once(fresh_stack):
    # Transform may run 20 s (and knows it); CloudWatch takes 6 s per GetMetricData call.
    stack = fresh_stack({"AGENT_TIMEOUT_SECONDS_TRANSFORM": "20", "METRICS_MAX_WINDOWS_PER_RUN": "4"})
    stack.set_function_timeout("transform", 20)
    apis = [create_rest_api(stack.moto_url, f"api-{i:03}", {}, {"prod": {}, "dev": {}}) for i in range(110)]
    minutes = recent_minutes(40)
    for api in apis:
        for stage in ("prod", "dev"):
            put_traffic(stack.moto_url, api.name, stage, minutes, (2, 0, 0, 10.0, 5.0))
    assert stack.run().succeeded  # the catalogs
    table = StateTable(stack.moto_url)
    end = due_window_end(time.time(), table.item("prod")["assetsWatermark"])
    for stage in ("prod", "dev"):
        table.put_metrics_watermark(stage, end - 4 * INTERVAL)
    stack.aws_proxy.add_delay("monitoring", "GetMetricData", 6)

    run = stack.run()

    assert run.succeeded, run.printed
    assert run.count("MetricsTransform", "SUCCEEDED") >= 3, "the read went on over several invocations"
    assert run.count("MetricsTransform", "FAILED") == 0, "never cut off"
    calls = stack.aws_proxy.counts()[("monitoring", "GetMetricData")]
    assert calls == 4, f"two calls of 100 and 10 APIs per stage, none made twice: {calls}"
    for stage, runtime in (("prod", PROD), ("dev", DEV)):
        assert_each_window_once_up_to_the_watermark(stack, stage, runtime)
        assert table.item(stage)["metricsWatermark"] == end
    counts = Counter(m["body"]["runtimeTransactionMetrics"]["apiMetrics"]["transactionCount"]
                     for m in stack.apicp.state()["metrics"] if m["body"]["timestamp"] > (end - 4 * INTERVAL) * 1000)
    assert counts == Counter({110 * 2 * 5: 8}), counts
