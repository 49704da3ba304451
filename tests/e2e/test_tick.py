"""End-to-end: the schedule's tick. A quiet minute is served in-process by the tick function (heartbeats, the
quiet window's commit, the periodic metrics read, a small account's discovery) and starts no execution; a target
with more to do is handed to one execution of the workflow, which the local stack then runs under the ARN the tick
started in Step Functions (moto)."""

from __future__ import annotations

import time

from conftest import wait_for_a_new_window
from seed import create_rest_api
from stack import METRICS_INTERVAL, METRICS_BUFFER, boto

ACCOUNT, REGION = "123456789012", "us-east-1"
PROD = f"{ACCOUNT}_{REGION}_prod"


def clear_of_a_metrics_window(margin: float = 45) -> None:
    """Until the next metrics window is at least `margin` seconds from coming due: the idle minute below must not
    meet a window that came due in the meantime."""
    since_boundary = (time.time() - METRICS_BUFFER) % METRICS_INTERVAL
    if METRICS_INTERVAL - since_boundary < margin:
        time.sleep(METRICS_INTERVAL - since_boundary + 1)


def heartbeats(stack) -> int:
    return len(stack.apicp.state()["heartbeats"])


def metrics(stack) -> int:
    return len(stack.apicp.state()["metrics"])


def executions(stack) -> list[str]:
    sfn = boto("stepfunctions", stack.moto_url)
    machine = stack.function_env["SYNC_STATE_MACHINE_ARN"]
    return sorted(e["name"] for e in sfn.list_executions(stateMachineArn=machine)["executions"])


def test_an_idle_minute_starts_no_execution_and_work_is_handed_to_one(clean, state_table):
    stack = clean
    clear_of_a_metrics_window()
    pets = create_rest_api(stack.moto_url, "pets", {"team": "core"}, {"prod": {}})

    # The first tick: the account's stages are unknown, so the workflow discovers and syncs them.
    first = stack.tick("2027-01-15T08:00:00Z")
    assert first.report["handedOver"] == [{"target": {"account": ACCOUNT, "region": REGION},
                                           "reason": "the account's stages are due for discovery"}]
    assert first.execution and first.execution.succeeded, first.execution
    assert set(stack.apicp.state()["apis"][PROD]) == {f"{pets.id}_prod"}
    # Then the metrics' first windows (they wait for a stage's first sync), read and sent by the tick itself.
    wait_for_a_new_window()
    started = executions(stack)
    sent = len(stack.apicp.state()["metrics"])
    second = stack.tick("2027-01-15T08:01:00Z")
    assert second.report["idle"] == 1 and second.execution is None and executions(stack) == started, second.report
    assert len(stack.apicp.state()["metrics"]) > sent, "the due windows, sent in-process"
    assert state_table.item("prod")["metricsWatermark"] > 0

    wait_for_a_new_window()
    watermark, beats, sent = state_table.item("prod")["assetsWatermark"], heartbeats(stack), metrics(stack)
    idle = stack.tick("2027-01-15T08:02:00Z")
    assert idle.report == {"targets": 1, "idle": 1, "handedOver": [], "handedOverCount": 0}
    assert idle.execution is None and executions(stack) == started, "an idle minute starts nothing"
    assert heartbeats(stack) == beats + 1, "the runtime's heartbeat, sent by the tick itself"
    assert state_table.item("prod")["assetsWatermark"] > watermark, "the quiet window is committed"
    assert metrics(stack) == sent, "no window sent twice"

    # The hourly discovery of a small account: made by the tick too.
    discovered = state_table.item("#discovery")["discoveredAt"]
    state_table.put_number("#discovery", "discoveredAt", discovered - 3700)
    wait_for_a_new_window()
    rediscovered = stack.tick("2027-01-15T08:02:30Z")
    assert rediscovered.report["idle"] == 1 and executions(stack) == started, rediscovered.report
    assert state_table.item("#discovery")["discoveredAt"] > discovered
    assert state_table.item("#discovery")["discoveredBy"] == "tick-20270115T080230Z"

    # A change in CloudTrail: handed over, applied by the execution.
    orders = create_rest_api(stack.moto_url, "orders", {"team": "shop"}, {"prod": {}})
    stack.cloudtrail.add_event("CreateDeployment", eventTime=state_table.item("prod")["assetsWatermark"] + 1,
                               requestParameters={"restApiId": orders.id, "stageName": "prod"})
    wait_for_a_new_window()
    changed = stack.tick("2027-01-15T08:03:00Z")
    assert [h["reason"] for h in changed.report["handedOver"]] == ["stage prod: changes in CloudTrail"]
    assert changed.execution and changed.execution.succeeded
    assert set(stack.apicp.state()["apis"][PROD]) == {f"{pets.id}_prod", f"{orders.id}_prod"}
    assert changed.execution.output["assets"]["summary"]["incrementalRuntimes"] == 1

    # The same tick invoked again (a retried invocation) while work waits starts no second execution; the next
    # tick's does the work.
    boto("apigateway", stack.moto_url).delete_rest_api(restApiId=orders.id)
    stack.cloudtrail.add_event("DeleteRestApi", eventTime=state_table.item("prod")["assetsWatermark"] + 1,
                               requestParameters={"restApiId": orders.id})
    wait_for_a_new_window()
    again = stack.tick("2027-01-15T08:03:00Z")
    assert again.report["handedOverCount"] == 1 and again.execution is None, again.report
    assert executions(stack) == sorted([*started, "tick-20270115T080300Z"])
    following = stack.tick("2027-01-15T08:04:00Z")
    assert following.execution and following.execution.succeeded
    assert set(stack.apicp.state()["apis"][PROD]) == {f"{pets.id}_prod"}
