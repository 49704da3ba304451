"""Tests of the push path's emulation (push.py) and the trails of the fake CloudTrail, without the Rust functions: a
stand-in answers the Lambda Invoke API as the starter would.

They pin down what a push test on the local stack relies on: an API Gateway call reaches EventBridge only through a
trail that logs it, and only after its delay; the event source mapping batches, deletes and redelivers as Lambda's
does; moto's SQS moves a message to the dead-letter queue after five receives; the starter's executions are run.
"""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

import stack
from fake_cloudtrail import FakeCloudTrail
from local_server import LocalServer, send_json
from push import (DEAD_LETTER_QUEUE_NAME, QUEUE_NAME, EventBridgeDelivery, MotoClients, PushPipeline, failed_items,
                  new_execution_name)

HOME, MEMBER = "123456789012", "111111111111"
MEMBER_KEY = "ASIAMEMBER"
STACK = Path(__file__).resolve().parent


def sigv4(region="us-east-1", key="AKIDEXAMPLE"):
    return f"AWS4-HMAC-SHA256 Credential={key}/20240101/{region}/cloudtrail/aws4_request"


def call(fake, operation, body, region="us-east-1", key="AKIDEXAMPLE", app=None):
    headers = {"X-Amz-Target": f"com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{operation}",
               "Content-Type": "application/x-amz-json-1.1", "Authorization": sigv4(region, key)}
    if app:
        headers["User-Agent"] = f"aws-sdk-rust/1.3 os/linux lang/rust app/{app}"
    return requests.post(fake.url + "/", data=json.dumps(body), headers=headers)


def error_type(response):
    assert response.status_code == 400, response.text
    return response.json()["__type"]


@pytest.fixture
def cloudtrail():
    keys = {MEMBER_KEY: MEMBER}
    with FakeCloudTrail(rate_per_second=1000, read_rate_per_second=1000,
                        account_of=lambda key: keys.get(key, HOME)) as fake:
        yield fake


# --- trails -----------------------------------------------------------------------------------------------------------

def names(response):
    assert response.status_code == 200, response.text
    return [(t["Name"], t["HomeRegion"]) for t in response.json()["trailList"]]


def test_describe_trails_lists_the_trails_homed_in_the_region_and_the_shadows_of_multi_region_ones(cloudtrail):
    everywhere = cloudtrail.add_trail("everywhere", region="us-east-1")
    cloudtrail.add_trail("ireland", region="eu-west-1", multi_region=False)
    cloudtrail.add_trail("theirs", account=MEMBER, region="eu-west-1")

    assert names(call(cloudtrail, "DescribeTrails", {}, "eu-west-1")) == [("ireland", "eu-west-1"),
                                                                         ("everywhere", "us-east-1")]
    assert names(call(cloudtrail, "DescribeTrails", {"includeShadowTrails": False}, "eu-west-1")) == [
        ("ireland", "eu-west-1")]
    assert names(call(cloudtrail, "DescribeTrails", {}, "us-east-1")) == [("everywhere", "us-east-1")]
    assert names(call(cloudtrail, "DescribeTrails", {}, "ap-south-1", key=MEMBER_KEY)) == [("theirs", "eu-west-1")]
    # A name reads only a trail homed here; another region's trail is read by its ARN.
    assert names(call(cloudtrail, "DescribeTrails", {"trailNameList": ["everywhere"]}, "eu-west-1")) == []
    assert names(call(cloudtrail, "DescribeTrails", {"trailNameList": [everywhere["TrailARN"]]}, "eu-west-1")) == [
        ("everywhere", "us-east-1")]
    [described] = call(cloudtrail, "DescribeTrails", {}, "us-east-1").json()["trailList"]
    assert described == {
        "Name": "everywhere", "S3BucketName": f"aws-cloudtrail-logs-{HOME}-everywhere",
        "IncludeGlobalServiceEvents": True, "IsMultiRegionTrail": True, "HomeRegion": "us-east-1",
        "TrailARN": f"arn:aws:cloudtrail:us-east-1:{HOME}:trail/everywhere", "LogFileValidationEnabled": True,
        "HasCustomEventSelectors": False, "HasInsightSelectors": False, "IsOrganizationTrail": False}
    assert error_type(call(cloudtrail, "DescribeTrails", {"trailNameList": ["-bad"]})) == "InvalidTrailNameException"
    assert error_type(call(cloudtrail, "DescribeTrails", {"includeShadowTrails": "yes"})) == "SerializationException"
    cloudtrail.reset()
    assert names(call(cloudtrail, "DescribeTrails", {})) == []
    # The same over the hook of the fake as a process.
    assert requests.post(cloudtrail.url + "/_fake/trails", json=[{"name": "hooked"}]).status_code == 201
    assert requests.post(cloudtrail.url + "/_fake/trails", json=[{"name": "x"}]).status_code == 400
    assert names(call(cloudtrail, "DescribeTrails", {})) == [("hooked", "us-east-1")]


def test_get_trail_status_reads_another_regions_trail_only_by_its_arn(cloudtrail):
    trail = cloudtrail.add_trail("everywhere", region="us-east-1")
    ireland = cloudtrail.add_trail("ireland", region="eu-west-1", multi_region=False, logging=False)

    status = call(cloudtrail, "GetTrailStatus", {"Name": "everywhere"}, "us-east-1").json()
    assert status["IsLogging"] is True and isinstance(status["StartLoggingTime"], float)
    assert error_type(call(cloudtrail, "GetTrailStatus", {"Name": "everywhere"}, "eu-west-1")) == \
        "TrailNotFoundException"
    assert call(cloudtrail, "GetTrailStatus", {"Name": trail["TrailARN"]}, "eu-west-1").json()["IsLogging"] is True
    assert call(cloudtrail, "GetTrailStatus", {"Name": "ireland"}, "eu-west-1").json()["IsLogging"] is False
    # A single-region trail has no shadow elsewhere; another account's trail is not the caller's.
    assert error_type(call(cloudtrail, "GetTrailStatus", {"Name": ireland["TrailARN"]}, "us-east-1")) == \
        "TrailNotFoundException"
    assert error_type(call(cloudtrail, "GetTrailStatus", {"Name": trail["TrailARN"]}, key=MEMBER_KEY)) == \
        "TrailNotFoundException"
    assert error_type(call(cloudtrail, "GetTrailStatus", {})) == "InvalidTrailNameException"
    assert error_type(call(cloudtrail, "GetTrailStatus", {"Name": "a"})) == "InvalidTrailNameException"
    cloudtrail.set_trail_logging("everywhere", False)
    stopped = call(cloudtrail, "GetTrailStatus", {"Name": "everywhere"}).json()
    assert stopped["IsLogging"] is False and stopped["StopLoggingTime"] >= stopped["StartLoggingTime"]


def test_get_event_selectors_answers_basic_or_advanced_selectors(cloudtrail):
    basic = cloudtrail.add_trail("basic", read_write="WriteOnly")
    advanced = cloudtrail.add_trail("advanced", read_write="WriteOnly", advanced=True)
    cloudtrail.add_trail("data", management=False, advanced=True)

    assert call(cloudtrail, "GetEventSelectors", {"TrailName": "basic"}).json() == {
        "TrailARN": basic["TrailARN"], "EventSelectors": [{
            "ReadWriteType": "WriteOnly", "IncludeManagementEvents": True, "DataResources": [],
            "ExcludeManagementEventSources": []}]}
    assert call(cloudtrail, "GetEventSelectors", {"TrailName": advanced["TrailARN"]}, "eu-west-1").json() == {
        "TrailARN": advanced["TrailARN"], "AdvancedEventSelectors": [{
            "Name": "Management events selector", "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Management"]}, {"Field": "readOnly", "Equals": ["false"]}]}]}
    data = call(cloudtrail, "GetEventSelectors", {"TrailName": "data"}).json()["AdvancedEventSelectors"]
    assert data[0]["FieldSelectors"][0] == {"Field": "eventCategory", "Equals": ["Data"]}
    assert error_type(call(cloudtrail, "GetEventSelectors", {"TrailName": "advanced"}, "eu-west-1")) == \
        "TrailNotFoundException"
    described = {t["Name"]: t["HasCustomEventSelectors"] for t in
                 call(cloudtrail, "DescribeTrails", {}).json()["trailList"]}
    assert described == {"advanced": True, "basic": True, "data": True}


def test_trail_reads_are_recorded_as_iam_uses_and_share_a_quota_of_ten_a_second():
    with FakeCloudTrail(account_of=lambda key: {MEMBER_KEY: MEMBER}.get(key, HOME)) as fake:
        trail = fake.add_trail("everywhere")
        assert call(fake, "DescribeTrails", {}, app="targets").status_code == 200
        assert call(fake, "GetTrailStatus", {"Name": "everywhere"}, "us-east-1", app="targets").status_code == 200
        assert call(fake, "GetEventSelectors", {"TrailName": "missing"}, "eu-west-1", app="targets").status_code == 400
        assert call(fake, "GetTrailStatus", {"Name": trail["TrailARN"]}, "eu-west-1", MEMBER_KEY,
                    app="targets").status_code == 400
        assert call(fake, "LookupEvents", {}, app="list-changes").status_code == 200
        assert {(u.function, u.action, u.resource) for u in fake.uses()} == {
            ("targets", "cloudtrail:DescribeTrails", "*"),
            ("targets", "cloudtrail:GetTrailStatus", trail["TrailARN"]),
            ("targets", "cloudtrail:GetEventSelectors", f"arn:aws:cloudtrail:eu-west-1:{HOME}:trail/missing"),
            ("member-role", "cloudtrail:GetTrailStatus", trail["TrailARN"]),
            ("list-changes", "cloudtrail:LookupEvents", "*")}
        assert fake.callers() == {"list-changes"}, "LookupEvents' callers, as before"
        assert fake.requests() == [{}] and fake.requests("GetTrailStatus") == [{"Name": "everywhere"},
                                                                              {"Name": trail["TrailARN"]}]
        fake.reset()
        assert len(fake.uses()) == 5, "kept across reset(), as the proxy's"
        # Ten reads a second in each account-region, apart from LookupEvents' two.
        statuses = [call(fake, "DescribeTrails", {}).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [400]
        assert call(fake, "DescribeTrails", {}, "eu-west-1").status_code == 200
        assert call(fake, "LookupEvents", {}).status_code == 200


def test_add_trail_refuses_what_cloudtrail_refuses(cloudtrail):
    cloudtrail.add_trail("everywhere", region="us-east-1")
    with pytest.raises(ValueError, match="TrailAlreadyExists"):
        cloudtrail.add_trail("everywhere", region="eu-west-1", multi_region=False)  # its shadow has the name there
    cloudtrail.add_trail("everywhere", account=MEMBER)
    with pytest.raises(ValueError, match="InvalidTrailName"):
        cloudtrail.add_trail("no spaces")
    with pytest.raises(ValueError, match="InvalidEventSelectors"):
        cloudtrail.add_trail("writes", read_write="Writes")
    for number in range(4):
        cloudtrail.add_trail(f"local-{number}", region="eu-west-1", multi_region=False)
    with pytest.raises(ValueError, match="MaximumNumberOfTrailsExceeded"):
        cloudtrail.add_trail("sixth", region="eu-west-1", multi_region=False)  # five apply there, a shadow included
    cloudtrail.add_trail("elsewhere", region="ap-south-1", multi_region=False)


# --- CloudTrail -> EventBridge ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("trail, delivered", [
    (None, False),
    ({}, True),
    ({"read_write": "WriteOnly"}, True),
    ({"read_write": "ReadOnly"}, False),
    ({"logging": False}, False),
    ({"management": False}, False),
    ({"advanced": True}, True),
    ({"advanced": True, "read_write": "WriteOnly"}, True),
    ({"advanced": True, "read_write": "ReadOnly"}, False),
    ({"advanced": True, "management": False}, False),
    ({"advanced": [{"Name": "not API Gateway", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Management"]},
        {"Field": "eventSource", "NotEquals": ["apigateway.amazonaws.com"]}]}]}, False),
    ({"advanced": [{"Name": "writes", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Management"]}, {"Field": "readOnly", "NotEquals": ["true"]}]}]}, True),
    ({"region": "eu-west-1"}, True),  # a multi-region trail homed elsewhere
    ({"region": "eu-west-1", "multi_region": False}, False),
    ({"account": MEMBER}, False),
])
def test_events_reach_eventbridge_only_through_a_trail_logging_management_writes(cloudtrail, trail, delivered):
    handed = []
    cloudtrail.on_event = lambda account, region, record: handed.append((account, region, record))
    if trail is not None:
        cloudtrail.add_trail("agent-trail", **trail)
    event = cloudtrail.add_event("CreateDeployment", requestParameters={"restApiId": "r1"})
    cloudtrail.add_event("GetRestApis", readOnly=True)
    cloudtrail.add_event("PutObject", eventSource="s3.amazonaws.com")
    if not delivered:
        assert handed == []
        return
    [(account, region, record)] = handed
    assert (account, region) == (HOME, "us-east-1")
    assert record == json.loads(event["CloudTrailEvent"])
    assert record["eventCategory"] == "Management" and record["requestParameters"] == {"restApiId": "r1"}


def test_a_stopped_trail_hands_over_nothing_until_it_logs_again(cloudtrail):
    handed = []
    cloudtrail.on_event = lambda account, region, record: handed.append(record["eventName"])
    cloudtrail.add_trail("agent-trail")
    cloudtrail.set_trail_logging("agent-trail", False)
    cloudtrail.add_event("CreateDeployment")
    cloudtrail.set_trail_logging("agent-trail", True)
    cloudtrail.add_event("DeleteRestApi")
    cloudtrail.add_event("UpdateStage", requestParameters={"blob": "x" * 270_000})  # over EventBridge's 256 KB
    assert handed == ["DeleteRestApi"]


# --- with moto --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_url():
    port = stack.free_port()
    process = subprocess.Popen([sys.executable, str(STACK / "moto_indexed.py"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stack.wait_until(lambda: stack.port_open(port), "moto server", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def clients(moto_url):
    requests.post(f"{moto_url}/moto-api/reset").raise_for_status()
    stack._ACCOUNT_CREDENTIALS.clear()
    return MotoClients(lambda service, account, region: stack.boto(service, moto_url, account, region,
                                                                   own_session=True))


class StandIn(LocalServer):
    """Answers the Lambda Invoke API as Lambda does for a function whose handler is `handler(event) -> (answer,
    failed)`: HTTP 200, and `X-Amz-Function-Error: Unhandled` when it failed. Records each event."""

    def __init__(self, handler=None):
        self.handler = handler or (lambda event: ({"batchItemFailures": []}, False))
        self.events = []
        self._serve("127.0.0.1", 0)

    def _dispatch(self, request):
        event = json.loads(request.rfile.read(int(request.headers.get("Content-Length") or 0)))
        self.events.append(event)
        answer, failed = self.handler(event)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if failed:
            headers["X-Amz-Function-Error"] = "Unhandled"
        send_json(request, 200, answer, headers)


@pytest.fixture
def stand_in():
    with StandIn() as server:
        yield server


@pytest.fixture
def pipelines():
    made = []
    yield made
    for pipeline in made:
        pipeline.stop()


def pipeline_of(pipelines, clients, stand_in, account=HOME, region="us-east-1", run=None, start=True, **settings):
    pipeline = PushPipeline(clients, stand_in.url, run, {"test-sync": False}, **settings).setup(account, region)
    pipelines.append(pipeline)
    return pipeline.start() if start else pipeline


def queue_counts(clients, pipeline, url=None):
    attributes = clients("sqs", pipeline.account, pipeline.region).get_queue_attributes(
        QueueUrl=url or pipeline.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def send(clients, pipeline, bodies):
    sqs = clients("sqs", pipeline.account, pipeline.region)
    for start in range(0, len(bodies), 10):
        sqs.send_message_batch(QueueUrl=pipeline.queue_url, Entries=[
            {"Id": str(n), "MessageBody": body} for n, body in enumerate(bodies[start:start + 10])])


@pytest.mark.parametrize("account, region", [(HOME, "us-east-1"), (MEMBER, "eu-west-1")])
def test_an_event_is_put_on_the_bus_after_its_delay_and_the_rule_queues_the_whole_event(
        clients, stand_in, pipelines, account, region):
    pipeline = pipeline_of(pipelines, clients, stand_in, account, region, start=False)
    delivery = EventBridgeDelivery(clients, lambda: (0.6, 0.9))
    try:
        with FakeCloudTrail() as cloudtrail:
            cloudtrail.on_event = delivery
            cloudtrail.add_trail("agent-trail", account=account, region=region)
            event = cloudtrail.add_event("CreateDeployment", eventTime=1_800_000_000, account=account, region=region,
                                         requestParameters={"restApiId": "r1", "note": "<id> and <time>"})
            time.sleep(0.4)
            assert queue_counts(clients, pipeline) == (0, 0), "not before its delay"
            delivery.wait_delivered(timeout=5)
            [done] = delivery.deliveries()
            assert done.event_id == event["EventId"] and done.error is None
            assert 0.6 <= done.delivered - done.logged <= 0.9 + 0.5

            [message] = clients("sqs", account, region).receive_message(
                QueueUrl=pipeline.queue_url, WaitTimeSeconds=1)["Messages"]
            assert json.loads(message["Body"]) == {
                "version": "0", "id": done.eventbridge_id, "detail-type": "AWS API Call via CloudTrail",
                "source": "aws.apigateway", "account": account, "time": "2027-01-15T08:00:00Z", "region": region,
                "resources": [], "detail": json.loads(event["CloudTrailEvent"])}

            # A pending delivery dies with a reset.
            cloudtrail.add_event("DeleteRestApi", account=account, region=region)
            delivery.reset()
            time.sleep(1.1)
            assert delivery.deliveries() == [] and queue_counts(clients, pipeline) == (0, 1)
    finally:
        delivery.stop()


def test_thirty_messages_sent_at_once_are_one_batch_when_the_window_is_five_seconds(clients, stand_in, pipelines):
    pipeline = pipeline_of(pipelines, clients, stand_in, batch_window=5)
    sent = time.monotonic()
    send(clients, pipeline, [json.dumps({"n": n}) for n in range(30)])
    pipeline.wait_for(lambda p: p.batches(), timeout=10, what="one batch")
    waited = time.monotonic() - sent
    time.sleep(1)

    [batch] = pipeline.batches()
    assert batch.count == 30 and 5 <= waited < 9
    [event] = stand_in.events
    assert sorted(json.loads(r["body"])["n"] for r in event["Records"]) == list(range(30))
    record = event["Records"][0]
    assert list(record) == ["messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
                            "eventSource", "eventSourceARN", "awsRegion"]
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == (
        "aws:sqs", f"arn:aws:sqs:us-east-1:{HOME}:{QUEUE_NAME}", "us-east-1")
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"]) and record["attributes"]["ApproximateReceiveCount"] == "1"
    assert queue_counts(clients, pipeline) == (0, 0), "all deleted"


def test_a_full_batch_does_not_wait_for_the_window(clients, stand_in, pipelines):
    pipeline = pipeline_of(pipelines, clients, stand_in, batch_window=4)
    sent = time.monotonic()
    send(clients, pipeline, [str(n) for n in range(110)])
    pipeline.wait_for(lambda p: p.batches(), timeout=10, what="the first batch")
    assert time.monotonic() - sent < 3.5
    pipeline.wait_for(lambda p: len(p.batches()) == 2, timeout=10, what="the second batch")
    assert [b.count for b in pipeline.batches()] == [100, 10]


def test_reported_failures_alone_come_back_and_go_to_the_dead_letter_queue_after_five_receives(
        clients, pipelines):
    def handler(event):
        return {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in event["Records"]
                                      if r["body"] == "poison"]}, False

    with StandIn(handler) as stand_in:
        pipeline = pipeline_of(pipelines, clients, stand_in, visibility_timeout=1, batch_window=0, batch_size=10)
        send(clients, pipeline, ["a", "poison", "b", "c"])
        pipeline.wait_for(lambda p: queue_counts(clients, p, p.dead_letter_url)[0] == 1, timeout=20,
                          what="the dead letter")
        time.sleep(1.5)

    batches = pipeline.batches()
    received = [(r["body"], r["attributes"]["ApproximateReceiveCount"]) for e in stand_in.events for r in e["Records"]]
    assert sorted(received) == [("a", "1"), ("b", "1"), ("c", "1")] + [("poison", str(n)) for n in range(1, 6)]
    assert all(len(b.failures) == 1 for b in batches) and len(batches) == 5
    assert queue_counts(clients, pipeline) == (0, 0)
    [letter] = pipeline.dead_letters()
    assert letter["Body"] == "poison" and letter["Attributes"]["ApproximateReceiveCount"] == "6"


def test_a_function_error_fails_the_whole_batch(clients, pipelines):
    answers = iter([({"errorType": "Panic", "errorMessage": "boom"}, True)])

    with StandIn(lambda event: next(answers, ({"batchItemFailures": []}, False))) as stand_in:
        pipeline = pipeline_of(pipelines, clients, stand_in, visibility_timeout=1, batch_window=1, batch_size=10)
        send(clients, pipeline, ["a", "b", "c"])
        pipeline.wait_for(lambda p: len(p.batches()) == 2, timeout=10, what="the second batch")

    first, second = pipeline.batches()
    assert first.function_error == "Unhandled" and sorted(first.failures) == sorted(first.message_ids)
    assert sorted(second.message_ids) == sorted(first.message_ids) and second.receive_counts == [2, 2, 2]
    assert second.failures == [] and queue_counts(clients, pipeline) == (0, 0)


@pytest.mark.parametrize("answer, failed", [
    (None, []),
    ({}, []),
    ({"batchItemFailures": None}, []),
    ({"batchItemFailures": []}, []),
    ({"started": ["push-1"]}, []),
    ({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m2"}]}, ["m2"]),
    ({"batchItemFailures": [{"itemIdentifier": ""}]}, None),
    ({"batchItemFailures": [{"itemIdentifier": None}]}, None),
    ({"batchItemFailures": [{"itemidentifier": "m1"}]}, None),
    ({"batchItemFailures": [{"itemIdentifier": "m9"}]}, None),
    ({"batchItemFailures": ["m1"]}, None),
    ({"batchItemFailures": "m1"}, None),
    (["m1"], None),
    ("ok", None),
])
def test_the_answer_is_read_as_lambda_reads_a_partial_batch_response(answer, failed):
    assert failed_items(answer, ["m1", "m2"]) == failed


def test_the_executions_the_starter_started_are_run_once(clients, pipelines):
    sfn = clients("stepfunctions", HOME, "us-east-1")
    machine = sfn.create_state_machine(name="test-sync", roleArn=f"arn:aws:iam::{HOME}:role/r", definition=json.dumps(
        {"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}}))["stateMachineArn"]
    sfn.start_execution(stateMachineArn=machine, name="local-1")  # not the starter's

    def starter(event):
        pushed = [json.loads(r["body"]) for r in event["Records"]]
        sfn.start_execution(stateMachineArn=machine, name=new_execution_name(), input=json.dumps({"pushed": pushed}))
        return {}, False

    ran = []

    def run(execution_input, arn, fan_out):
        ran.append(arn)
        sfn.stop_execution(executionArn=arn)  # as the stack's run ends it
        return SimpleNamespace(status="SUCCEEDED")

    with StandIn(starter) as stand_in:
        pipeline = pipeline_of(pipelines, clients, stand_in, run=run, batch_window=0, batch_size=10)
        send(clients, pipeline, [json.dumps({"n": 1})])
        pipeline.wait_for(lambda p: p.executions() and p.executions()[0].ended, timeout=10, what="the run")
        send(clients, pipeline, [json.dumps({"n": 2})])
        pipeline.wait_for(lambda p: len(p.executions()) == 2 and p.executions()[1].ended, timeout=10, what="the run")

    first, second = pipeline.executions()
    assert first.name.startswith("push-") and first.input == {"pushed": [{"n": 1}]} and second.input == {
        "pushed": [{"n": 2}]}
    assert (first.status, first.fan_out, first.ended >= first.started) == ("SUCCEEDED", False, True)
    assert ran == [first.arn, second.arn] and [b.executions for b in pipeline.batches()] == [[first.arn], [second.arn]]


def test_a_reset_after_motos_empties_the_queues_and_forgets_the_records(clients, pipelines, moto_url):
    failing = threading.Event()
    failing.set()
    with StandIn(lambda event: ({}, failing.is_set())) as stand_in:
        pipeline = pipeline_of(pipelines, clients, stand_in, visibility_timeout=30, batch_window=0, batch_size=10)
        send(clients, pipeline, ["stuck"])
        pipeline.wait_for(lambda p: p.batches(), timeout=10, what="the failed batch")
        pipeline.pause()
        requests.post(f"{moto_url}/moto-api/reset").raise_for_status()
        stack._ACCOUNT_CREDENTIALS.clear()
        clients.forget()
        pipeline.reset()
        failing.clear()
        assert pipeline.batches() == [] and queue_counts(clients, pipeline) == (0, 0)
        assert queue_counts(clients, pipeline, pipeline.dead_letter_url) == (0, 0)
        send(clients, pipeline, ["fresh"])
        pipeline.wait_for(lambda p: p.batches(), timeout=10, what="a batch after the reset")
    [batch] = pipeline.batches()
    assert batch.failures == [] and stand_in.events[-1]["Records"][0]["body"] == "fresh"
    assert clients("sqs", HOME, "us-east-1").get_queue_url(QueueName=DEAD_LETTER_QUEUE_NAME)


@pytest.mark.parametrize("settings, refusal", [
    ({"visibility_timeout": 2, "function_timeout": 100}, "less than Function timeout: 100 seconds"),
    ({"batch_size": 11, "batch_window": 0}, "greater than 0"),
    ({"batch_window": 0.5}, "whole number"),
    ({"visibility_timeout": 43_201}, "VisibilityTimeout"),
])
def test_settings_aws_refuses_are_refused(settings, refusal):
    with pytest.raises(ValueError, match=refusal):
        PushPipeline(lambda *args: None, "http://127.0.0.1:9", None, {}, **settings)


def test_a_batch_held_past_the_visibility_timeout_is_noted(clients, pipelines):
    def slow(event):
        time.sleep(1.3)
        return {}, False

    with StandIn(slow) as stand_in:
        pipeline = pipeline_of(pipelines, clients, stand_in, visibility_timeout=1, batch_window=0, batch_size=10)
        send(clients, pipeline, ["slow"])
        pipeline.wait_for(lambda p: p.batches(), timeout=10, what="the batch")
    assert "longer than the visibility timeout (1 s)" in pipeline.errors()[0]
