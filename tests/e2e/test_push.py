"""End-to-end: push mode. An API Gateway call logged by a trail reaches EventBridge (moto) a moment later, the rule
puts it on the queue, the event source mapping hands batches to the push starter (the `targets` binary), which starts
one execution of the workflow per batch and target with the events; the local stack runs it as Step Functions would.
CloudTrail is still polled (every PUSH_POLL_MINUTES) as the safety net, and skips what push applied, by eventID.

The stack of this module runs with PUSH_MODE=true and a short EventBridge delay (1-3 s): these tests are about what
arrives and what is applied, `make bench` measures the latency with a realistic delay."""

from __future__ import annotations

import json
import time

import pytest
from conftest import FUNCTION_SETTINGS, wait_for_a_new_window
from seed import create_rest_api
from stack import HOME_ACCOUNT, EmbeddedStack, StateTable, boto

# One stack for the module: its tests run on one pytest worker (`--dist loadgroup`).
pytestmark = pytest.mark.xdist_group("push")

REGION = "us-east-1"
PROD = f"{HOME_ACCOUNT}_{REGION}_prod"
# CloudTrail's event times, far enough back for the next poll's window (which ends CHANGE_BUFFER_SECONDS before its
# run) to hold them without waiting; push applies them whatever their time.
EARLIER = 400


@pytest.fixture(scope="module")
def push_stack():
    stack = EmbeddedStack(push_delay=(1, 3)).start({**FUNCTION_SETTINGS, "PUSH_MODE": "true", "PUSH_POLL_MINUTES": "15"})
    # The visibility timeout outlasts a batch (its 2 s window and the invocation), as the deployment's does.
    stack.enable_push(visibility_timeout=5, batch_window=2)
    yield stack
    stack.stop()


@pytest.fixture
def push(push_stack):
    push_stack.reset_account()
    return push_stack


def update_description(stack, api_id: str, description: str, at: float) -> dict:
    """The call and CloudTrail's record of it (which the trail, if any, hands to EventBridge)."""
    boto("apigateway", stack.moto_url).update_rest_api(
        restApiId=api_id, patchOperations=[{"op": "replace", "path": "/description", "value": description}])
    return stack.cloudtrail.add_event("UpdateRestApi", eventTime=at, requestParameters={
        "restApiId": api_id, "patchOperations": [{"op": "replace", "path": "/description", "value": description}]})


def published(stack, api_id: str) -> dict:
    return stack.apicp.state()["apis"][PROD][f"{api_id}_prod"]


def writes_of(stack, api_id: str) -> int:
    """The control plane requests that wrote the API's document."""
    return sum(1 for r in stack.apicp.requests()
               if r["method"] in ("PUT", "POST") and r["path"].endswith(f"/apis/{api_id}_prod") and r["processed"])


def poll_now(stack) -> None:
    """Makes the next run read CloudTrail: as if PUSH_POLL_MINUTES had passed since the last read."""
    StateTable(stack.moto_url).put_number("prod", "assetsReadAt", int(time.time()) - 3600)
    wait_for_a_new_window()


def test_a_pushed_change_is_applied_within_seconds_and_once_when_the_poll_reads_it_too(push):
    stack = push
    stack.cloudtrail.add_trail("management-events")
    pets = create_rest_api(stack.moto_url, "pets", {"team": "core"}, {"prod": {}})
    first = stack.run({})
    assert first.succeeded, first.cause
    assert first.output["push"]["available"] is True, first.output["push"]
    assert first.output["push"]["reason"] == "trail management-events"

    event = update_description(stack, pets.id, "pushed", time.time() - EARLIER)
    stack.push.wait_for(lambda p: any(e.ended for e in p.executions()), timeout=60, what="a push execution")

    [execution] = stack.push.executions()
    assert execution.status == "SUCCEEDED", execution.error or execution.report.cause
    assert execution.name.startswith(f"push-{HOME_ACCOUNT}-{REGION}-")
    assert [e["id"] for e in execution.input["pushed"]] == [event["EventId"]]
    assert execution.report.output["assets"]["summary"]["pushedEvents"] == 1
    assert published(stack, pets.id)["description"] == "pushed", "applied without waiting for CloudTrail's window"
    writes = writes_of(stack, pets.id)

    # The safety net reads the same call from CloudTrail later: it skips it (same eventID).
    poll_now(stack)
    poll = stack.run({})
    assert poll.succeeded, poll.cause
    assert poll.output["assets"]["summary"]["incrementalRuntimes"] == 1
    assert poll.output["assets"]["summary"]["upserts"] == 0, "applied once"
    assert writes_of(stack, pets.id) == writes


def test_without_a_trail_push_is_reported_unavailable_and_the_poll_alone_applies_changes(push):
    stack = push
    pets = create_rest_api(stack.moto_url, "pets", {"team": "core"}, {"prod": {}})
    first = stack.run({})
    assert first.succeeded, first.cause
    assert first.output["push"] == {"available": False, "reason": "no CloudTrail trail logs this account-region",
                                    "checkedAt": first.output["push"]["checkedAt"]}

    update_description(stack, pets.id, "polled", time.time() - EARLIER)
    time.sleep(4)  # longer than any push delay of this stack
    assert stack.deliveries.deliveries() == [] and stack.push.batches() == [], "nothing reaches EventBridge"

    poll_now(stack)
    poll = stack.run({})
    assert poll.succeeded, poll.cause
    assert published(stack, pets.id)["description"] == "polled", "poll only"
    assert poll.output["push"]["available"] is False, "still said in every run's output"


def test_a_burst_of_changes_is_coalesced_into_few_executions(push):
    stack = push
    stack.cloudtrail.add_trail("management-events")
    apis = [create_rest_api(stack.moto_url, f"api-{i}", {}, {"prod": {}}) for i in range(6)]
    assert stack.run({}).succeeded

    at = time.time() - EARLIER
    for round_ in range(4):
        for api in apis:
            update_description(stack, api.id, f"round {round_}", at + round_)
    stack.deliveries.wait_delivered(timeout=30)
    stack.push.wait_for(lambda p: sum(len(e.input["pushed"]) for e in p.executions() if e.ended) == 24,
                        timeout=90, what="every pushed event applied")

    executions = stack.push.executions()
    assert all(e.status == "SUCCEEDED" for e in executions), [(e.name, e.status, e.error) for e in executions]
    assert len(executions) <= 3, f"24 changes in {len(executions)} executions"
    assert sum(b.count for b in stack.push.batches()) == 24
    for api in apis:
        assert published(stack, api.id)["description"] == "round 3", "the current state, whatever the order"


def test_malformed_and_foreign_events_are_dropped_and_logged_not_retried(push):
    stack = push
    stack.cloudtrail.add_trail("management-events")
    events = boto("events", stack.moto_url)
    detail = {"eventSource": "apigateway.amazonaws.com", "eventName": "UpdateRestApi", "eventTime": "2027-01-15T08:00:00Z",
              "awsRegion": REGION, "recipientAccountId": HOME_ACCOUNT, "requestParameters": {"restApiId": "abc"}}
    entries = [
        detail,  # no eventID
        {**detail, "eventID": "e-foreign", "recipientAccountId": "999988887777"},  # an account not federated
        {**detail, "eventID": "e-region", "awsRegion": "ap-south-1"},  # a region not federated
    ]
    answer = events.put_events(Entries=[{"Source": "aws.apigateway", "DetailType": "AWS API Call via CloudTrail",
                                         "Detail": json.dumps(d), "EventBusName": "default"}
                                        for d in entries])
    assert answer["FailedEntryCount"] == 0

    stack.push.wait_for(lambda p: sum(b.count for b in p.batches()) == 3, timeout=30, what="the three events handled")
    time.sleep(6)  # past the visibility timeout: a message kept would be received again
    batches = stack.push.batches()
    assert all(b.function_error is None and not b.failures for b in batches), batches
    assert sum(b.count for b in batches) == 3, "each received once: dropped, not retried"
    assert stack.push.executions() == []
    assert stack.push.dead_letters() == []


def test_messages_whose_execution_cannot_start_go_to_the_dead_letter_queue(push):
    stack = push
    stack.cloudtrail.add_trail("management-events")
    pets = create_rest_api(stack.moto_url, "pets", {}, {"prod": {}})
    assert stack.run({}).succeeded
    # Not retried by the SDK (a deleted workflow, a revoked grant): each delivery fails at once.
    stack.aws_proxy.add_fault("states", "StartExecution", status=400, error_code="StateMachineDoesNotExist",
                              count=1000)

    event = update_description(stack, pets.id, "lost", time.time() - EARLIER)
    letters = []
    deadline = time.monotonic() + 90
    while not letters and time.monotonic() < deadline:
        time.sleep(2)
        letters = stack.push.dead_letters()

    assert len(letters) == 1, "after maxReceiveCount (5) receives, the dead-letter queue (PushDeadLettersAlarm)"
    assert event["EventId"] in letters[0]["Body"]
    batches = stack.push.batches()
    assert sum(b.count for b in batches) == 5, [(b.count, b.receive_counts) for b in batches]
    assert all(b.failures == b.message_ids for b in batches), "reported as failed items each time"
    assert stack.push.executions() == []
